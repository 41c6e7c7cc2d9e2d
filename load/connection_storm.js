// Connection storm: VUs open Socket.IO connections as fast as the stages ramp them, hold each
// for HOLD_SECS (answering pings), then close. Measures the handshake time (websocket open to
// Socket.IO connect) and the share of refused or dropped connections.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3001,http://127.0.0.1:3002 -e JWT_SECRET=... load/connection_storm.js
//
// Env: STAGES (default "10s:200,20s:200,5s:0"), HOLD_SECS (10), thresholds CONNECT_P95_MS (500),
// CONNECT_OK_RATE (0.99). The node's connection throttle is per client address
// (RATE_LIMIT_CONNECTS): raise it on the nodes, or all VUs from one k6 host get `rate_limited`.
import { Counter } from 'k6/metrics';
import { baseFor, num, stages, userAt } from './lib/config.js';
import { connect } from './lib/socketio.js';

const refused = new Counter('sio_connect_refused');
const HOLD_SECS = num('HOLD_SECS', 10);

export const options = {
  scenarios: {
    storm: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: stages('10s:200,20s:200,5s:0'),
      gracefulRampDown: `${HOLD_SECS + 15}s`,
      gracefulStop: `${HOLD_SECS + 15}s`,
    },
  },
  thresholds: {
    sio_connect_ms: [`p(95)<${num('CONNECT_P95_MS', 500)}`],
    sio_connect_ok: [`rate>=${num('CONNECT_OK_RATE', 0.99)}`],
    sio_unexpected_close: ['count==0'],
  },
};

export default function () {
  const user = userAt(__VU - 1);
  let sock = null;
  const safety = setTimeout(() => sock && sock.close(), (HOLD_SECS + 15) * 1000);
  sock = connect(baseFor(__VU + __ITER), user.token, {
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
