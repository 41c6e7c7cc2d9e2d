// REST API under load: each VU is a user with one conversation; every iteration sends a
// message, lists conversations, reads a page of history, the unread summary, marks the
// conversation read (as the other side) and asks for presence.
//
//   k6 run -e BASE_URLS=http://127.0.0.1:3001 -e JWT_SECRET=... load/rest.js
//
// Env: STAGES (default "10s:20,30s:20,5s:0"), SLEEP_MS between iterations (100), thresholds
// REST_P95_MS (200), REST_P99_MS (500), FAILED_RATE (0.01). Keep RATE_LIMIT_MESSAGES on the
// nodes above the offered per-user send rate, or sends get 429 (counted as failures).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { authHeaders, baseFor, latency, num, stages, userAt } from './lib/config.js';
import { conversation } from './lib/rest.js';
import { summaryFor } from './lib/summary.js';

export const options = {
  scenarios: {
    rest: { executor: 'ramping-vus', startVUs: 0, stages: stages('10s:20,30s:20,5s:0'), gracefulRampDown: '10s' },
  },
  thresholds: {
    http_req_duration: latency([`p(95)<${num('REST_P95_MS', 200)}`, `p(99)<${num('REST_P99_MS', 500)}`]),
    'http_req_duration{name:GET /api/chat/conversations}': latency([`p(95)<${num('REST_P95_MS', 200)}`]),
    'http_req_duration{name:GET /api/chat/conversations/:id/messages}': latency([`p(95)<${num('REST_P95_MS', 200)}`]),
    http_req_failed: [`rate<${num('FAILED_RATE', 0.01)}`],
    checks: [`rate>=${1 - num('FAILED_RATE', 0.01)}`],
  },
};

const SLEEP_MS = num('SLEEP_MS', 100);
let conv = null;

export const handleSummary = summaryFor('rest.js');

export default function () {
  const v = __VU - 1;
  const me = userAt(2 * v);
  const other = userAt(2 * v + 1);
  const base = baseFor(v);
  const otherBase = baseFor(v + 1);
  if (conv === null) conv = conversation(base, me, other.id);
  if (!conv) {
    check(null, { 'conversation created': () => false });
    sleep(1);
    return;
  }
  const p = (name) => {
    const params = authHeaders(me);
    params.tags = { name };
    return params;
  };
  const body = JSON.stringify({ content: `k6 rest ${Date.now()}`, clientMessageId: `k6r-${__VU}-${__ITER}` });
  let r = http.post(`${base}/api/chat/conversations/${conv}/messages`, body, p('POST /api/chat/conversations/:id/messages'));
  check(r, { 'send 201': (x) => x.status === 201 });

  r = http.get(`${base}/api/chat/conversations?limit=20`, p('GET /api/chat/conversations'));
  check(r, {
    'list 200': (x) => x.status === 200,
    'list has the conversation': (x) => x.status === 200 && (x.json('data.conversations') || []).some((c) => c._id === conv),
  });

  r = http.get(`${base}/api/chat/conversations/${conv}/messages?limit=50`, p('GET /api/chat/conversations/:id/messages'));
  check(r, { 'history 200': (x) => x.status === 200 && Array.isArray(x.json('data.messages')) });

  const otherParams = authHeaders(other);
  otherParams.tags = { name: 'GET /api/chat/unread' };
  r = http.get(`${otherBase}/api/chat/unread`, otherParams);
  check(r, { 'unread 200': (x) => x.status === 200 });

  otherParams.tags = { name: 'POST /api/chat/conversations/:id/read' };
  r = http.post(`${otherBase}/api/chat/conversations/${conv}/read`, '{}', otherParams);
  check(r, { 'read 200': (x) => x.status === 200 });

  r = http.get(`${base}/api/chat/users/status?ids=${encodeURIComponent(other.id)}`, p('GET /api/chat/users/status'));
  check(r, { 'status 200': (x) => x.status === 200 });

  sleep(SLEEP_MS / 1000);
}
