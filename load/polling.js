// Socket.IO over HTTP long-polling (clients behind proxies that break websockets, and every
// socket.io-client before its upgrade). Each VU is a user with a conversation: it connects with
// the polling transport only, joins the conversation, sends a message and waits for its own
// `new_message` fan-out, asks for its own presence, then keeps polling (answering pings) for
// HOLD_SECS and closes. Every request of a session must reach the same node: through a load
// balancer this checks its stickiness (eio_session_unknown must stay 0).
//
//   k6 run -e BASE_URLS=http://127.0.0.1:8080 -e JWT_SECRET=... load/polling.js
//
// Env: STAGES (default "5s:10,30s:10,5s:0"), HOLD_SECS (5), ACK_WAIT_MS (5000), thresholds
// POLL_CONNECT_P95_MS (500), ACK_P95_MS (250) (latency; LATENCY_THRESHOLDS=off drops them).
import { check, sleep } from 'k6';
import { Trend } from 'k6/metrics';
import { baseFor, latency, newJar, num, stages, userAt } from './lib/config.js';
import { connectPolling } from './lib/polling.js';
import { conversation } from './lib/rest.js';
import { summaryFor } from './lib/summary.js';

const ackMs = new Trend('polling_ack_ms', true);
const HOLD_SECS = num('HOLD_SECS', 5);
const ACK_WAIT_MS = num('ACK_WAIT_MS', 5000);

export const options = {
  scenarios: {
    polling: { executor: 'ramping-vus', startVUs: 0, stages: stages('5s:10,30s:10,5s:0'), gracefulRampDown: `${HOLD_SECS + 30}s` },
  },
  thresholds: {
    polling_connect_ok: ['rate>=0.99'],
    eio_session_unknown: ['count==0'],
    polling_errors: ['count==0'],
    checks: ['rate==1'],
    polling_connect_ms: latency([`p(95)<${num('POLL_CONNECT_P95_MS', 500)}`]),
    polling_ack_ms: latency([`p(95)<${num('ACK_P95_MS', 250)}`]),
  },
};

export const handleSummary = summaryFor('polling.js');

export default function () {
  const v = __VU - 1;
  const me = userAt(2 * v);
  const other = userAt(2 * v + 1);
  const jar = newJar();
  const base = baseFor(v);
  const conv = conversation(base, me, other.id, undefined, jar);
  if (!check(conv, { 'conversation created': (c) => !!c })) {
    sleep(1);
    return;
  }
  const s = connectPolling(base, me.token, { jar });
  if (!check(s, { 'polling connected': (c) => !!c && c.connected })) {
    if (s && s.error) console.error(`polling connect ${me.id}: ${s.error}`);
    sleep(1);
    return;
  }
  const timed = (event, data) => {
    const t0 = Date.now();
    const ack = s.waitAck(s.emit(event, data, true), ACK_WAIT_MS);
    if (ack) ackMs.add(Date.now() - t0);
    return ack;
  };
  const ok = (a) => !!a && a.status === 'success';
  check(timed('join_conversation', { conversationId: conv }), { 'join_conversation acked': ok });
  const clientMessageId = `k6-poll-${__VU}-${__ITER}`;
  const sent = timed('send_message', { conversationId: conv, content: `polling k6 ${Date.now()}`, clientMessageId });
  check(sent, { 'send_message acked': ok });
  const echo = s.waitEvent('new_message', (d) => d && d.message && d.message.clientMessageId === clientMessageId, ACK_WAIT_MS);
  check(echo, { 'own new_message received over polling': (e) => !!e });
  const status = timed('get_online_status', { userIds: [me.id] });
  check(status, {
    'get_online_status says online': (a) => ok(a) && a.data.statuses.length === 1 && a.data.statuses[0].online === true,
  });
  const until = Date.now() + HOLD_SECS * 1000;
  while (Date.now() < until && !s.closed) s.poll();
  check(s, { 'session alive until the end': (c) => !c.closed });
  s.close();
}
