// Connection storm: new Socket.IO connections arrive at a fixed, ramping rate, whatever the
// server's speed (an arrival-rate executor: a slow server does not slow the storm down, as in a
// reconnect wave after a node loss). Each connection is held for HOLD_SECS (answering pings),
// then closed. Measures the handshake time (websocket open to Socket.IO connect) and the share
// of refused or dropped connections.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3001,http://127.0.0.1:3002 -e JWT_SECRET=... load/connection_storm.js
//
// Env: RATE_STAGES (connections per second, default "10s:50,20s:200,5s:0"), START_RATE (10),
// PRE_VUS (50) and MAX_VUS (2000: about rate x (HOLD_SECS + 1)), HOLD_SECS (10), thresholds
// CONNECT_P95_MS (500, latency), CONNECT_OK_RATE (0.99). The node's connection throttle is per
// user when the token is in the handshake query, else per client address (RATE_LIMIT_CONNECTS):
// raise it on the nodes, or VUs from one k6 host get HTTP 429 at the handshake. dropped_iterations > 0 means k6 ran out of VUs (raise MAX_VUS).
import { Counter } from 'k6/metrics';
import { baseFor, latency, newJar, num, str, userAt } from './lib/config.js';
import { connect } from './lib/socketio.js';
import { summaryFor } from './lib/summary.js';

const refused = new Counter('sio_connect_refused');
const HOLD_SECS = num('HOLD_SECS', 10);

function rateStages() {
  return str('RATE_STAGES', '10s:50,20s:200,5s:0').split(',').map((part) => {
    const [duration, target] = part.trim().split(':');
    return { duration, target: Number(target) };
  });
}

export const options = {
  scenarios: {
    storm: {
      executor: 'ramping-arrival-rate',
      startRate: num('START_RATE', 10),
      timeUnit: '1s',
      preAllocatedVUs: num('PRE_VUS', 50),
      maxVUs: num('MAX_VUS', 2000),
      stages: rateStages(),
      gracefulStop: `${HOLD_SECS + 15}s`,
    },
  },
  thresholds: {
    sio_connect_ok: [`rate>=${num('CONNECT_OK_RATE', 0.99)}`],
    sio_unexpected_close: ['count==0'],
    sio_connect_refused: ['count==0'],
    sio_connect_ms: latency([`p(95)<${num('CONNECT_P95_MS', 500)}`]),
  },
};

export const handleSummary = summaryFor('connection_storm.js');

let n = 0;
export default function () {
  // Users spread over the token list; each connection with its own (empty) cookie jar.
  const user = userAt((__VU - 1) * 7919 + n++);
  let sock = null;
  const safety = setTimeout(() => sock && sock.close(), (HOLD_SECS + 15) * 1000);
  sock = connect(baseFor(__VU + __ITER), user.token, {
    jar: newJar(),
    onConnectError: (m) => {
      refused.add(1);
      console.warn(`connect ${user.id}: ${m}`);
    },
    onConnect: (s) => {
      setTimeout(() => s.close(), HOLD_SECS * 1000);
    },
    onClose: () => clearTimeout(safety),
  });
}
