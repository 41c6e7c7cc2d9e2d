// Steady-state chat between pairs of users on different nodes.
//
// Each VU is one pair: the receiver connects to node slot v+1, the sender to node slot v (with
// several BASE_URLS the two are on different nodes; through one load balancer URL each user has
// its own cookie jar, so the balancer places the two sockets independently), the sender emits
// `send_message` with an ack every MSG_INTERVAL_MS for SESSION_SECS, the receiver measures
// send→receive latency from the send time carried in the content.
//
// The receiver behaves like a mobile client: when its transport drops it reconnects with
// exponential backoff and sends `sync` with the last seq it saw, which returns what it missed.
// DROP_AFTER_SECS (0 = never) drops the receiver's transport once, mid-session, to exercise that
// path. After a grace period every acked message that neither arrived live nor came back
// through `sync` counts as lost.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3001,http://127.0.0.1:3002 -e JWT_SECRET=... load/chat_pairs.js
//
// Env: STAGES (VUs = pairs, default "10s:10,40s:10,5s:0"), SESSION_SECS (30), MSG_INTERVAL_MS
// (1000), GRACE_MS (2000), DROP_AFTER_SECS (0), BACKOFF_MIN_MS / BACKOFF_MAX_MS (200 / 5000),
// thresholds ACK_OK_RATE (0.99), MAX_LOST (0) and, unless LATENCY_THRESHOLDS=off, P95_MS (100),
// P99_MS (250), ACK_P99_MS (250).
import { sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { baseFor, latency, newJar, num, stages, userAt } from './lib/config.js';
import { conversation } from './lib/rest.js';
import { connect, reconnecting } from './lib/socketio.js';
import { summaryFor } from './lib/summary.js';

const sendToReceive = new Trend('chat_send_to_receive_ms', true);
const ackMs = new Trend('chat_ack_ms', true);
const ackOk = new Rate('chat_ack_ok');
const sent = new Counter('chat_messages_sent');
const received = new Counter('chat_messages_received');
const lost = new Counter('chat_messages_lost');
const synced = new Counter('chat_messages_synced');
const syncOk = new Rate('chat_sync_ok');

const SESSION_SECS = num('SESSION_SECS', 30);
const MSG_INTERVAL_MS = num('MSG_INTERVAL_MS', 1000);
const GRACE_MS = num('GRACE_MS', 2000);
const DROP_AFTER_SECS = num('DROP_AFTER_SECS', 0);

export const options = {
  scenarios: {
    pairs: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: stages('10s:10,40s:10,5s:0'),
      gracefulRampDown: `${SESSION_SECS + GRACE_MS / 1000 + 10}s`,
      gracefulStop: `${SESSION_SECS + GRACE_MS / 1000 + 10}s`,
    },
  },
  thresholds: {
    chat_send_to_receive_ms: latency([`p(95)<${num('P95_MS', 100)}`, `p(99)<${num('P99_MS', 250)}`]),
    chat_ack_ms: latency([`p(99)<${num('ACK_P99_MS', 250)}`]),
    chat_sync_ok: ['rate==1'],
    chat_ack_ok: [`rate>=${num('ACK_OK_RATE', 0.99)}`],
    chat_messages_lost: [`count<=${num('MAX_LOST', 0)}`],
    chat_messages_received: ['count>0'],
    sio_connect_ok: ['rate>=0.99'],
    sio_ack_timeouts: ['count==0'],
  },
};

export const handleSummary = summaryFor('chat_pairs.js');

export default function () {
  const v = __VU - 1;
  const alice = userAt(2 * v);
  const bob = userAt(2 * v + 1);
  const aliceJar = newJar();
  const bobJar = newJar();
  const conv = conversation(baseFor(v), alice, bob.id, undefined, aliceJar);
  if (!conv) {
    ackOk.add(false);
    sleep(1);
    return;
  }
  const acked = new Set();
  const got = new Set();
  let lastSeq = 0;
  let dropped = false;
  let sender = null;
  let timer = null;
  let seq = 0;

  const finish = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
    setTimeout(() => {
      let missing = 0;
      for (const id of acked) if (!got.has(id)) missing += 1;
      lost.add(missing);
      if (missing > 0) console.warn(`VU ${__VU}: ${missing} acked messages never reached the receiver`);
      if (sender) sender.close();
      receiver.stop();
      clearTimeout(safety);
    }, GRACE_MS);
  };
  // Whatever happens (a refused connect, a dead node), the iteration ends.
  const safety = setTimeout(() => {
    if (sender) sender.close();
    receiver.stop();
    if (timer !== null) clearInterval(timer);
  }, (SESSION_SECS + 30) * 1000 + GRACE_MS);

  const onMessage = (d) => {
    const m = d && d.message;
    if (!m || m.conversationId !== conv || m.senderId !== alice.id) return;
    if (m.seq > lastSeq) lastSeq = m.seq;
    if (got.has(m.clientMessageId)) return;
    const t0 = parseInt(String(m.content).split(' ')[1], 10);
    if (!Number.isNaN(t0)) sendToReceive.add(Date.now() - t0);
    received.add(1);
    got.add(m.clientMessageId);
  };
  const startSender = () => {
    sender = connect(baseFor(v), alice.token, {
      jar: aliceJar,
      onConnectError: (m) => console.error(`sender ${alice.id}: ${m}`),
      onConnect: (s) => {
        timer = setInterval(() => {
          const id = `k6-${__VU}-${__ITER}-${seq++}`;
          const t0 = Date.now();
          sent.add(1);
          s.emit('send_message', { conversationId: conv, content: `k6 ${t0} load test message`, clientMessageId: id }, (ack) => {
            const ok = !!ack && ack.status === 'success';
            ackOk.add(ok);
            if (ok) {
              ackMs.add(Date.now() - t0);
              acked.add(id);
            } else {
              console.warn(`send_message: ${JSON.stringify(ack)}`);
            }
          });
        }, MSG_INTERVAL_MS);
        setTimeout(finish, SESSION_SECS * 1000);
        if (DROP_AFTER_SECS > 0) {
          setTimeout(() => {
            const c = receiver.current();
            if (c && c.connected && !dropped) {
              dropped = true;
              c.drop();
            }
          }, DROP_AFTER_SECS * 1000);
        }
      },
    });
  };
  const receiver = reconnecting(() => baseFor(v + 1), bob.token, {
    jar: bobJar,
    handlers: { new_message: onMessage },
    onConnectError: (m) => console.error(`receiver ${bob.id}: ${m}`),
    onConnect: (c, reconnected) => {
      if (!reconnected) {
        startSender();
        return;
      }
      // Back after a drop: fetch what was sent meanwhile (what socket.io clients must do).
      c.emit('sync', { conversations: [{ conversationId: conv, afterSeq: lastSeq }] }, (ack) => {
        const ok = !!ack && ack.status === 'success';
        syncOk.add(ok);
        if (!ok) {
          console.warn(`sync: ${JSON.stringify(ack)}`);
          return;
        }
        for (const item of ack.data.conversations) {
          for (const m of item.messages) {
            if (m.senderId !== alice.id || got.has(m.clientMessageId)) continue;
            if (m.seq > lastSeq) lastSeq = m.seq;
            got.add(m.clientMessageId);
            synced.add(1);
          }
        }
      });
    },
  });
}
