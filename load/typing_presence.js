// Typing and presence fan-out between pairs on different nodes.
//
// Each VU is a pair (alice on node slot v, bob on slot v+1) sharing a conversation:
// 1. alice connects and joins the conversation; bob connects: alice must get `user_status`
//    {userId: bob, online: true} (presence_online_ms, from the start of bob's connect);
// 2. bob joins; every TYPING_INTERVAL_MS alice emits typing_start, then typing_stop
//    TYPING_HOLD_MS later: bob must get `user_typing` true / false (typing_fanout_ms);
// 3. after SESSION_SECS bob disconnects: alice must get `user_status` online: false
//    (presence_offline_ms, from bob's close).
//
// Env: STAGES (default "5s:10,30s:10,5s:0"), SESSION_SECS (20), TYPING_INTERVAL_MS (1000),
// TYPING_HOLD_MS (300), STATUS_WAIT_MS (5000), thresholds TYPING_P95_MS (100),
// PRESENCE_P95_MS (500), DELIVERED_RATE (0.99).
import { sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import { baseFor, latency, newJar, num, stages, userAt } from './lib/config.js';
import { conversation } from './lib/rest.js';
import { connect } from './lib/socketio.js';
import { summaryFor } from './lib/summary.js';

const typingMs = new Trend('typing_fanout_ms', true);
const typingDelivered = new Rate('typing_delivered');
const onlineMs = new Trend('presence_online_ms', true);
const offlineMs = new Trend('presence_offline_ms', true);
const presenceDelivered = new Rate('presence_delivered');

const SESSION_SECS = num('SESSION_SECS', 20);
const TYPING_INTERVAL_MS = num('TYPING_INTERVAL_MS', 1000);
const TYPING_HOLD_MS = num('TYPING_HOLD_MS', 300);
const STATUS_WAIT_MS = num('STATUS_WAIT_MS', 5000);

export const options = {
  scenarios: {
    typing: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: stages('5s:10,30s:10,5s:0'),
      gracefulRampDown: `${SESSION_SECS + 20}s`,
      gracefulStop: `${SESSION_SECS + 20}s`,
    },
  },
  thresholds: {
    typing_fanout_ms: latency([`p(95)<${num('TYPING_P95_MS', 100)}`]),
    typing_delivered: [`rate>=${num('DELIVERED_RATE', 0.99)}`],
    presence_online_ms: latency([`p(95)<${num('PRESENCE_P95_MS', 500)}`]),
    presence_offline_ms: latency([`p(95)<${num('PRESENCE_P95_MS', 500)}`]),
    presence_delivered: [`rate>=${num('DELIVERED_RATE', 0.99)}`],
    sio_connect_ok: ['rate>=0.99'],
    sio_ack_timeouts: ['count==0'],
  },
};

export const handleSummary = summaryFor('typing_presence.js');

export default function () {
  const v = __VU - 1;
  const alice = userAt(2 * v);
  const bob = userAt(2 * v + 1);
  const conv = conversation(baseFor(v), alice, bob.id);
  if (!conv) {
    presenceDelivered.add(false);
    sleep(1);
    return;
  }
  let bobSock = null;
  let bobConnectedAt = 0;
  let bobClosedAt = 0;
  let sawOnline = false;
  let sawOffline = false;
  let typingSentAt = 0;
  let typingExpect = null; // true / false while a user_typing is awaited
  let ticker = null;
  const closeAll = () => {
    if (ticker !== null) clearInterval(ticker);
    ticker = null;
    if (bobSock) bobSock.close();
    alice_.close();
    clearTimeout(safety);
  };
  const safety = setTimeout(closeAll, (SESSION_SECS + 15) * 1000 + 2 * STATUS_WAIT_MS);

  const alice_ = connect(baseFor(v), alice.token, {
    jar: newJar(),
    onConnectError: (m) => console.error(`alice ${alice.id}: ${m}`),
    onConnect: (a) => {
      a.emit('join_conversation', { conversationId: conv }, () => {
        // Measured from bob's connect attempt: alice may hear of it before bob's own client does.
        bobConnectedAt = Date.now();
        bobSock = connect(baseFor(v + 1), bob.token, {
          jar: newJar(),
          onConnectError: (m) => console.error(`bob ${bob.id}: ${m}`),
          onConnect: (b) => {
            setTimeout(() => {
              if (!sawOnline) presenceDelivered.add(false);
            }, STATUS_WAIT_MS);
            b.emit('join_conversation', { conversationId: conv }, () => startTyping(a, b));
          },
        });
        bobSock.on('user_typing', (e) => {
          if (!e || e.conversationId !== conv || e.userId !== alice.id || typingExpect === null) return;
          if (e.isTyping === typingExpect) {
            typingMs.add(Date.now() - typingSentAt);
            typingDelivered.add(true);
            typingExpect = null;
          }
        });
      });
    },
  });
  alice_.on('user_status', (s) => {
    if (!s || s.userId !== bob.id) return;
    if (s.online && bobConnectedAt && !sawOnline) {
      sawOnline = true;
      onlineMs.add(Date.now() - bobConnectedAt);
      presenceDelivered.add(true);
    } else if (!s.online && bobClosedAt && !sawOffline) {
      sawOffline = true;
      offlineMs.add(Date.now() - bobClosedAt);
      presenceDelivered.add(true);
      closeAll();
    }
  });

  function send(a, isTyping) {
    if (typingExpect !== null) typingDelivered.add(false); // the previous one never arrived
    typingExpect = isTyping;
    typingSentAt = Date.now();
    a.emit(isTyping ? 'typing_start' : 'typing_stop', { conversationId: conv });
  }

  function startTyping(a, b) {
    ticker = setInterval(() => {
      send(a, true);
      setTimeout(() => send(a, false), TYPING_HOLD_MS);
    }, TYPING_INTERVAL_MS);
    setTimeout(() => {
      clearInterval(ticker);
      ticker = null;
      setTimeout(() => {
        if (typingExpect !== null) typingDelivered.add(false);
        typingExpect = null;
        bobClosedAt = Date.now();
        b.close();
        setTimeout(() => {
          if (!sawOffline) {
            presenceDelivered.add(false);
            closeAll();
          }
        }, STATUS_WAIT_MS);
      }, TYPING_HOLD_MS + 200);
    }, SESSION_SECS * 1000);
  }
}
