// Settings shared by the k6 scripts, all from environment variables (k6 -e NAME=value or the
// process environment). See load/README.md.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';

/** Comma-separated node (or load balancer) URLs: http://127.0.0.1:3000,http://127.0.0.1:3001 */
export const BASE_URLS = (__ENV.BASE_URLS || __ENV.BASE_URL || 'http://127.0.0.1:3000')
  .split(',')
  .map((s) => s.trim().replace(/\/+$/, ''))
  .filter((s) => s.length > 0);

/** Node URL for slot `i` (pairs put their two users on consecutive slots = different nodes). */
export function baseFor(i) {
  return BASE_URLS[((i % BASE_URLS.length) + BASE_URLS.length) % BASE_URLS.length];
}

export function num(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (Number.isNaN(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function str(name, dflt) {
  const v = __ENV[name];
  return v === undefined || v === '' ? dflt : v;
}

/** STAGES="10s:5,1m:50,10s:0" -> [{duration:'10s', target:5}, ...] */
export function stages(dflt) {
  const s = str('STAGES', dflt);
  return s.split(',').map((part) => {
    const [duration, target] = part.trim().split(':');
    if (!duration || target === undefined) throw new Error(`bad STAGES entry ${part}`);
    return { duration, target: Number(target) };
  });
}

// Tokens: TOKENS_FILE (JSON: [{"id": "...", "token": "..."}], e.g. minted with
// `jobsphere-chat token --user ID`) or JWT_SECRET (HS256, signed here, users made up).
const TOKENS = __ENV.TOKENS_FILE ? JSON.parse(open(__ENV.TOKENS_FILE)) : null;
const PREFIX = str('USER_PREFIX', 'k6');

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

export function sign(userId, ttlSecs = 6 * 3600) {
  const secret = __ENV.JWT_SECRET;
  if (!secret) throw new Error('set TOKENS_FILE or JWT_SECRET');
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(
    JSON.stringify({ userId, name: `k6 ${userId}`, role: 'customer', iat: now, exp: now + ttlSecs }),
  );
  const sig = crypto.hmac('sha256', secret, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${sig}`;
}

/** User number `i` (0-based): {id, token}. With TOKENS_FILE, users are reused modulo its length. */
export function userAt(i) {
  if (TOKENS) {
    if (TOKENS.length === 0) throw new Error('TOKENS_FILE holds no users');
    return TOKENS[i % TOKENS.length];
  }
  const id = `${PREFIX}-${i}`;
  return { id, token: sign(id) };
}

export function authHeaders(user) {
  return { headers: { Authorization: `Bearer ${user.token}`, 'Content-Type': 'application/json' } };
}

/**
 * Latency thresholds, or none when LATENCY_THRESHOLDS=off: the smoke run in the test command
 * checks that the scripts run and speak the protocol (checks, errors, losses), while latency is
 * measured by the benchmarks and by real load runs.
 */
export function latency(list) {
  return str('LATENCY_THRESHOLDS', 'on') === 'off' ? [] : list;
}

/**
 * A fresh cookie jar for one simulated user. Behind a load balancer with cookie stickiness,
 * the VU's default jar would carry the first cookie it got into every later request of that
 * VU, and both users of a pair would land on the same node; each user needs its own.
 */
export function newJar() {
  return new http.CookieJar();
}
