// Steady-state chat between pairs of users on different nodes.
//
// Each VU is one pair: the receiver connects to node slot v+1, the sender to node slot v (with
// several BASE_URLS the two are on different nodes), the sender emits `send_message` with an ack
// every MSG_INTERVAL_MS for SESSION_SECS, the receiver measures send→receive latency from the
// send time carried in the content. After a grace period every acked message that never arrived
// counts as lost.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3001,http://127.0.0.1:3002 -e JWT_SECRET=... load/chat_pairs.js
//
// Env: STAGES (VUs = pairs, default "10s:10,40s:10,5s:0"), SESSION_SECS (30), MSG_INTERVAL_MS
// (1000), GRACE_MS (2000), thresholds P95_MS (100), P99_MS (250), ACK_P99_MS (250),
// ACK_OK_RATE (0.99), MAX_LOST (0).
import { sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { baseFor, num, stages, userAt } from './lib/config.js';
import { conversation } from './lib/rest.js';
import { connect } from './lib/socketio.js';

const latency = new Trend('chat_send_to_receive_ms', true);
const ackMs = new Trend('chat_ack_ms', true);
const ackOk = new Rate('chat_ack_ok');
const sent = new Counter('chat_messages_sent');
const received = new Counter('chat_messages_received');
const lost = new Counter('chat_messages_lost');

const SESSION_SECS = num('SESSION_SECS', 30);
const MSG_INTERVAL_MS = num('MSG_INTERVAL_MS', 1000);
const GRACE_MS = num('GRACE_MS', 2000);

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
    chat_send_to_receive_ms: [`p(95)<${num('P95_MS', 100)}`, `p(99)<${num('P99_MS', 250)}`],
    chat_ack_ms: [`p(99)<${num('ACK_P99_MS', 250)}`],
    chat_ack_ok: [`rate>=${num('ACK_OK_RATE', 0.99)}`],
    chat_messages_lost: [`count<=${num('MAX_LOST', 0)}`],
    chat_messages_received: ['count>0'],
    sio_connect_ok: ['rate>=0.99'],
    sio_ack_timeouts: ['count==0'],
  },
};

export default function () {
  const v = __VU - 1;
  const alice = userAt(2 * v);
  const bob = userAt(2 * v + 1);
  const conv = conversation(baseFor(v), alice, bob.id);
  if (!conv) {
    ackOk.add(false);
    sleep(1);
    return;
  }
  const acked = new Set();
  const got = new Set();
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
      receiver.close();
      clearTimeout(safety);
    }, GRACE_MS);
  };
  // Whatever happens (a refused connect, a dead node), the iteration ends.
  const safety = setTimeout(() => {
    if (sender) sender.close();
    receiver.close();
    if (timer !== null) clearInterval(timer);
  }, (SESSION_SECS + 30) * 1000 + GRACE_MS);

  const receiver = connect(baseFor(v + 1), bob.token, {
    onConnectError: (m) => console.error(`receiver ${bob.id}: ${m}`),
    onConnect: () => {
      sender = connect(baseFor(v), alice.token, {
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
        },
      });
    },
  });
  receiver.on('new_message', (d) => {
    const m = d && d.message;
    if (!m || m.conversationId !== conv || m.senderId !== alice.id || got.has(m.clientMessageId)) return;
    const t0 = parseInt(String(m.content).split(' ')[1], 10);
    if (!Number.isNaN(t0)) latency.add(Date.now() - t0);
    received.add(1);
    got.add(m.clientMessageId);
  });
}
