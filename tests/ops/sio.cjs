// Helpers shared by the tests/ops client scripts: the official socket.io-client (v4, from npm,
// found through NODE_PATH, see lib.sh), REST with fetch, and the `ok` / `FAIL` report lines
// that tests/ops/lib.sh tallies.
"use strict";

const { io } = require("socket.io-client");

let failures = 0;

function ok(name) {
  console.log(`ok   ${name}`);
}

function fail(name, detail) {
  failures += 1;
  console.log(`FAIL ${name}`);
  if (detail !== undefined) {
    const text = typeof detail === "string" ? detail : JSON.stringify(detail);
    for (const line of text.split("\n").slice(0, 30)) console.log(`     ${line.slice(0, 400)}`);
  }
}

function info(text) {
  console.log(`info ${text}`);
}

// expect(name, cond, detail): one check.
function expect(name, cond, detail) {
  if (cond) ok(name);
  else fail(name, detail);
  return !!cond;
}

function failed() {
  return failures;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// waitFor(fn, ms): polls fn() (sync or async) until truthy; returns its last value.
async function waitFor(fn, ms = 15000, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(every);
  }
}

// A socket that records every event it receives: s.events = [[name, payload], ...].
// opts: { transports, reconnection, query, auth } (socket.io-client options).
function socket(base, token, opts = {}) {
  const s = io(base, {
    auth: token === undefined ? undefined : { token },
    transports: opts.transports || ["websocket"],
    reconnection: opts.reconnection !== undefined ? opts.reconnection : false,
    forceNew: true,
    timeout: 10000,
    ...(opts.extra || {}),
  });
  s.events = [];
  s.connects = 0;
  s.disconnects = [];
  s.onAny((name, payload) => s.events.push([name, payload]));
  s.on("connect", () => {
    s.connects += 1;
  });
  s.on("disconnect", (reason) => s.disconnects.push(reason));
  // Reserved events are not seen by onAny: keep connect errors with the others.
  s.on("connect_error", (e) => s.events.push(["connect_error", e && e.message]));
  return s;
}

// connect(base, token, opts): resolves with the connected socket, rejects with the
// connect_error message.
function connect(base, token, opts = {}) {
  const s = socket(base, token, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      s.close();
      reject(new Error("connect timeout"));
    }, 15000);
    s.once("connect", () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once("connect_error", (e) => {
      if (opts.reconnection) return; // the manager retries by itself
      clearTimeout(timer);
      s.close();
      reject(e);
    });
  });
}

// ack(s, event, payload, ms): the ack payload, or {status:"timeout"} when none came in time.
async function ack(s, event, payload, ms = 10000) {
  try {
    return await s.timeout(ms).emitWithAck(event, payload);
  } catch (e) {
    return { status: "timeout", message: String(e && e.message) };
  }
}

// count(s, name, pred): events `name` received by s (matching pred).
function count(s, name, pred = () => true) {
  return s.events.filter(([n, p]) => n === name && pred(p)).length;
}

// rest(base, method, path, {token, body, raw, headers}) -> {status, body, headers}
async function rest(base, method, path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body;
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers["content-type"] = headers["content-type"] || "application/json";
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] = "application/json";
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), opts.timeout || 15000);
  try {
    const r = await fetch(base + path, { method, headers, body, signal: ctl.signal });
    const text = await r.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    return { status: r.status, body: parsed, headers: r.headers };
  } catch (e) {
    return { status: 0, body: String(e && (e.cause || e.message || e)), headers: new Headers() };
  } finally {
    clearTimeout(timer);
  }
}

// history(base, token, conv): every message of the conversation, ascending by seq
// (pages of `before=SEQ`, newest page first).
async function history(base, token, conv) {
  const all = [];
  let before = null;
  for (let guard = 0; guard < 1000; guard++) {
    const q = before === null ? "limit=100" : `limit=100&before=${before}`;
    const r = await rest(base, "GET", `/api/chat/conversations/${conv}/messages?${q}`, { token });
    if (r.status !== 200) throw new Error(`history: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    const { messages, hasMore } = r.body.data;
    all.unshift(...messages);
    if (!hasMore || messages.length === 0) break;
    before = messages[0].seq;
  }
  return all;
}

// metricsOf(url) -> text of a node's /metrics
async function metricsText(url) {
  const r = await rest(url, "GET", "/metrics");
  return r.status === 200 ? r.body : "";
}

// gauge(text, name): sum of the samples of an unlabelled-or-labelled gauge in exposition text.
function sample(text, name) {
  let sum = 0;
  let seen = false;
  for (const line of String(text).split("\n")) {
    if (line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) {
      sum += Number(m[3]);
      seen = true;
    }
  }
  return seen ? sum : null;
}

function args(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith("--")) {
      const key = argv[i].slice(2);
      const val = argv[i + 1] && !argv[i + 1].startsWith("--") ? argv[++i] : "1";
      out[key] = val;
    }
  }
  return out;
}

module.exports = {
  io,
  ok,
  fail,
  info,
  expect,
  failed,
  sleep,
  waitFor,
  socket,
  connect,
  ack,
  count,
  rest,
  history,
  metricsText,
  sample,
  args,
};
