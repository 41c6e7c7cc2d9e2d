// A minimal Socket.IO v4 client over Engine.IO v4 HTTP long-polling, on k6/http (synchronous:
// each poll blocks the VU until the server has packets or pings). Load-generator use only.
//
// Requests of one session must all reach the node that holds it: through a load balancer that
// needs stickiness (a cookie, kept in the user's own jar, or the client address). A poll that
// lands elsewhere gets HTTP 400 {"code":"1","message":"Session ID unknown"}, counted in
// eio_session_unknown.
//
// Payloads hold several packets separated by the record separator \x1e. Packets as in
// socketio.js: "0{open}", "2" ping / "3" pong, "4" + Socket.IO packet ("40", "42", "43", "44").
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';

export const pollConnectMs = new Trend('polling_connect_ms', true);
export const pollConnectOk = new Rate('polling_connect_ok');
export const sessionUnknown = new Counter('eio_session_unknown');
export const pollErrors = new Counter('polling_errors');

const SEP = '\x1e';

function url(base, sid) {
  const t = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  return `${base.replace(/\/+$/, '')}/socket.io/?EIO=4&transport=polling&t=${t}${sid ? `&sid=${sid}` : ''}`;
}

function checkStatus(r, what) {
  if (r.status === 200) return true;
  if (r.status === 400 && String(r.body).includes('Session ID unknown')) sessionUnknown.add(1);
  pollErrors.add(1, { what });
  console.warn(`polling ${what}: HTTP ${r.status} ${String(r.body).slice(0, 120)}`);
  return false;
}

/**
 * Handshake + namespace connect. Returns a client, or null when the server refused (the reason
 * is in client.error of the returned object when non-null... null means transport failure).
 */
export function connectPolling(base, token, { jar, tags } = {}) {
  const started = Date.now();
  const params = { jar, tags: Object.assign({ name: 'socket.io polling' }, tags || {}), timeout: '60s' };
  const open = http.get(url(base), params);
  if (!checkStatus(open, 'handshake') || String(open.body)[0] !== '0') {
    pollConnectOk.add(false);
    return null;
  }
  const handshake = JSON.parse(String(open.body).slice(1));
  const client = {
    sid: handshake.sid,
    pingInterval: handshake.pingInterval,
    connected: false,
    error: null,
    events: [],
    acks: {},
    nextAck: 0,
    closed: false,
    post(body) {
      const r = http.post(url(base, client.sid), body, Object.assign({}, params, { headers: { 'Content-Type': 'text/plain;charset=UTF-8' } }));
      return checkStatus(r, 'post');
    },
    /** One poll: answers pings, collects events and acks. False when the session is gone. */
    poll() {
      const r = http.get(url(base, client.sid), params);
      if (!checkStatus(r, 'poll')) {
        client.closed = true;
        return false;
      }
      for (const pkt of String(r.body).split(SEP)) {
        if (pkt === '2') client.post('3');
        else if (pkt === '1' || pkt === '6') {
          if (pkt === '1') client.closed = true;
        } else if (pkt.startsWith('40')) client.connected = true;
        else if (pkt.startsWith('44')) {
          try {
            client.error = JSON.parse(pkt.slice(2)).message;
          } catch (_) {
            client.error = pkt.slice(2);
          }
        } else if (pkt.startsWith('42') || pkt.startsWith('43')) {
          const body = pkt.slice(2);
          const bracket = body.indexOf('[');
          if (bracket < 0) continue;
          let args;
          try {
            args = JSON.parse(body.slice(bracket));
          } catch (_) {
            continue;
          }
          if (pkt[1] === '2') client.events.push({ name: args[0], data: args[1] });
          else client.acks[body.slice(0, bracket)] = args[0];
        }
      }
      return true;
    },
    /** Emits; with `ack`, returns the ack id to wait for with waitAck. */
    emit(event, data, ack) {
      const id = ack ? String(client.nextAck++) : '';
      client.post(`42${id}${JSON.stringify(data === undefined ? [event] : [event, data])}`);
      return id;
    },
    /** Polls until the ack arrives (its first argument) or `ms` pass (null). */
    waitAck(id, ms) {
      const deadline = Date.now() + ms;
      while (!(id in client.acks) && !client.closed && Date.now() < deadline) client.poll();
      const v = client.acks[id];
      delete client.acks[id];
      return v === undefined ? null : v;
    },
    /** Polls until an event named `name` matching `pred` arrives, or `ms` pass (null). */
    waitEvent(name, pred, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        const i = client.events.findIndex((e) => e.name === name && (!pred || pred(e.data)));
        if (i >= 0) return client.events.splice(i, 1)[0].data;
        if (client.closed || Date.now() >= deadline) return null;
        client.poll();
      }
    },
    close() {
      if (!client.closed) client.post('1');
      client.closed = true;
    },
  };
  if (!client.post(`40${JSON.stringify({ token })}`)) {
    pollConnectOk.add(false);
    return null;
  }
  const deadline = Date.now() + 10000;
  while (!client.connected && !client.error && !client.closed && Date.now() < deadline) client.poll();
  pollConnectOk.add(client.connected);
  if (client.connected) pollConnectMs.add(Date.now() - started);
  return client;
}
