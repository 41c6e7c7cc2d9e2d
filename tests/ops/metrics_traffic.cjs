// Traffic for tests/ops/metrics_cluster.sh: every kind of thing the dashboard and the alert rules
// look at, spread over three nodes, with the official socket.io-client.
//
//   node metrics_traffic.cjs --nodes URL1,URL2,URL3 --tokens tokens.json --gates DIR
//
// tokens.json: {"users": {"alice": "<user id>", ...}, "tokens": {"alice": "<jwt>", ...}}
// Phases:
//   1. normal traffic (REST incl. 4xx, sockets on websocket/polling/upgrade, messages with acks,
//      typing, reads, deliveries, presence, sync, bad events, a refused handshake, a
//      rate-limited burst, client disconnects);
//   2. `gate db-locked`: the caller holds the SQLite write lock (another process) past the
//      nodes' busy timeout and creates DIR/db-locked; writes answer `unavailable` (this is what
//      makes chat_db_errors_total exist); `gate db-unlocked`: the caller releases it;
//   3. `gate redis-down`: the caller kills Redis and creates DIR/redis-down; the nodes must answer
//      `unavailable` quickly (events, REST 503, /readyz 503), which also produces the
//      failure-only series (chat_redis_errors_total, code="unavailable", 5xx);
//   4. `gate redis-up`: the caller restarts Redis, waits for /readyz and creates DIR/redis-up;
//      messages cross nodes again on the old sockets and on new ones.
// Prints `ok` / `FAIL` / `info` lines (see sio.cjs); exit 1 on any failure.
"use strict";

const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const sio = require("./sio.cjs");
const { expect, info, ack, rest, connect, count, waitFor, sleep } = sio;

const a = sio.args();
const nodes = a.nodes.split(",");
const { users, tokens } = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const gates = a.gates;
const RATE_LIMIT = Number(a["rate-limit"] || 20);
const hex24 = () => crypto.randomBytes(12).toString("hex");
const [n1, n2, n3] = nodes;

async function gate(name) {
  console.log(`gate ${name}`);
  const file = path.join(gates, name);
  const okd = await waitFor(() => fs.existsSync(file), 120000, 100);
  if (!okd) throw new Error(`gate ${name} never opened`);
}

const isOk = (r) => r && r.status === "success";

async function conversation(base, who, other, expectStatus, jobId = "job-ops") {
  const r = await rest(base, "POST", "/api/chat/conversations", {
    token: tokens[who],
    body: { participantId: users[other], jobId },
  });
  if (expectStatus) expect(`POST conversations ${who}->${other} answers ${expectStatus}`, r.status === expectStatus, r);
  return r.body && r.body.data && r.body.data._id;
}

async function main() {
  // ------------------------------------------------------------------ REST: conversations
  const AB = await conversation(n1, "alice", "bob", 201);
  const AB2 = await conversation(n2, "bob", "alice", 200);
  expect("the same conversation from the other side on another node", AB && AB === AB2, { AB, AB2 });
  const AC = await conversation(n2, "alice", "carol", 201);
  const CD = await conversation(n3, "carol", "dave", 201);
  const SD = await conversation(n1, "spammer", "dave", 201);

  // ------------------------------------------------------------------ sockets on all nodes
  const sock = {};
  sock.alice = await connect(n1, tokens.alice);
  sock.bob = await connect(n2, tokens.bob);
  sock.bob2 = await connect(n3, tokens.bob, { transports: ["polling"] });
  sock.carol = await connect(n3, tokens.carol);
  sock.dave = await connect(n1, tokens.dave, { transports: ["polling", "websocket"] }); // upgrades
  sock.spammer = await connect(n2, tokens.spammer);
  expect("6 sockets connected (websocket, polling, polling+upgrade) on 3 nodes", Object.values(sock).every((s) => s.connected));

  for (const [name, base, tok] of [
    ["a wrongly signed token", n2, tokens.forged],
    ["no token", n3, undefined],
  ]) {
    let err = null;
    try {
      const s = await connect(base, tok);
      s.close();
    } catch (e) {
      err = e.message;
    }
    expect(`handshake with ${name} refused with connect_error "unauthorized"`, err === "unauthorized", err);
  }

  const joins = [
    ["alice", AB], ["alice", AC], ["bob", AB], ["bob2", AB], ["carol", AC], ["carol", CD],
    ["dave", CD], ["dave", SD], ["spammer", SD],
  ];
  const joinAcks = await Promise.all(joins.map(([s, c]) => ack(sock[s], "join_conversation", { conversationId: c })));
  expect("join_conversation acks success", joinAcks.every(isOk), joinAcks);

  // ------------------------------------------------------------------ typing
  await ack(sock.alice, "typing_start", { conversationId: AB });
  const typing = await waitFor(() => count(sock.bob, "user_typing", (p) => p.isTyping) && count(sock.bob2, "user_typing", (p) => p.isTyping));
  expect("typing_start on n1 reaches bob's sockets on n2 and n3", typing);
  await ack(sock.alice, "typing_stop", { conversationId: AB });
  await ack(sock.carol, "typing_start", { conversationId: CD });
  await ack(sock.carol, "typing_stop", { conversationId: CD });

  // ------------------------------------------------------------------ messages with acks
  const sends = [];
  for (let i = 0; i < 4; i++) sends.push(["alice", AB, "text"]);
  sends.push(["alice", AB, "image"]);
  for (let i = 0; i < 2; i++) sends.push(["bob", AB, "text"]);
  for (let i = 0; i < 3; i++) sends.push(["carol", CD, "text"]);
  for (let i = 0; i < 2; i++) sends.push(["alice", AC, "file"]);
  const sent = [];
  for (const [who, conv, type] of sends) {
    const r = await ack(sock[who], "send_message", {
      conversationId: conv,
      content: type === "text" ? `hello from ${who} ${sent.length}` : `https://files.example/${sent.length}`,
      messageType: type,
      clientMessageId: `ops-${who}-${sent.length}`,
    });
    sent.push([who, conv, r]);
  }
  expect(`send_message x${sent.length} acked with the message`, sent.every(([, , r]) => isOk(r) && r.data.message.seq >= 1), sent.filter(([, , r]) => !isOk(r)));
  const abIds = sent.filter(([, c, r]) => c === AB && isOk(r)).map(([, , r]) => r.data.message._id);
  const exactlyOnce = async () =>
    ["alice", "bob", "bob2"].every((s) =>
      abIds.every((id) => count(sock[s], "new_message", (p) => p.message._id === id) === 1));
  expect("every AB message reaches alice (n1), bob (n2) and bob2 (n3, polling) exactly once", await waitFor(exactlyOnce), {
    alice: count(sock.alice, "new_message"), bob: count(sock.bob, "new_message"), bob2: count(sock.bob2, "new_message"),
  });
  expect("message_delivered to the sending socket", count(sock.alice, "message_delivered") >= 5);

  // REST send + idempotent retry
  const body = { content: "over REST", clientMessageId: `ops-rest-${hex24()}` };
  const r1 = await rest(n3, "POST", `/api/chat/conversations/${AB}/messages`, { token: tokens.bob, body });
  const r2 = await rest(n1, "POST", `/api/chat/conversations/${AB}/messages`, { token: tokens.bob, body });
  expect("REST send 201, retry with the same clientMessageId returns the same message", r1.status === 201 && [200, 201].includes(r2.status) &&
    r1.body.data.message._id === r2.body.data.message._id, { r1: r1.body, r2: r2.body });

  // ------------------------------------------------------------------ reads, deliveries, presence, sync
  const lastSeq = Math.max(...sent.filter(([, c, r]) => c === AB && isOk(r)).map(([, , r]) => r.data.message.seq));
  const del = await ack(sock.bob, "mark_as_delivered", { conversationId: AB, upToSeq: lastSeq });
  expect("mark_as_delivered acked", isOk(del), del);
  const read = await ack(sock.bob, "mark_as_read", { conversationId: AB });
  expect("mark_as_read acked", isOk(read), read);
  expect("messages_read reaches alice on n1", await waitFor(() => count(sock.alice, "messages_read") > 0));
  const st = await ack(sock.alice, "get_online_status", { userIds: [users.bob, users.carol, "nobody-here"] });
  const online = isOk(st) && Object.fromEntries(st.data.statuses.map((x) => [x.userId, x.online]));
  expect("get_online_status: bob and carol online, an unknown user offline", online && online[users.bob] && online[users.carol] && !online["nobody-here"], st);
  const sy = await ack(sock.bob2, "sync", { conversations: [{ conversationId: AB, afterSeq: 0 }] });
  expect("sync returns the AB messages", isOk(sy) && JSON.stringify(sy.data).includes(abIds[0]), sy);
  expect("leave_conversation acked", isOk(await ack(sock.bob2, "leave_conversation", { conversationId: AB })));

  // ------------------------------------------------------------------ bad events (event errors)
  const bad = [
    ["send_message without fields", sock.alice, "send_message", {}, "validation"],
    ["send_message with blank content", sock.alice, "send_message", { conversationId: AB, content: "   " }, "validation"],
    ["send_message with a string payload", sock.alice, "send_message", "just a string", "validation"],
    ["join_conversation of an unknown conversation", sock.alice, "join_conversation", { conversationId: hex24() }, "not_found"],
    ["join_conversation of someone else's conversation", sock.carol, "join_conversation", { conversationId: AB }, "forbidden"],
    ["typing_start with a malformed id", sock.carol, "typing_start", { conversationId: "not-an-id" }, "validation"],
    // An event named after a user id: its metrics label must not carry the name (cardinality).
    ["an unknown event", sock.alice, `bogus_${users.alice}`, { x: 1 }, "validation"],
  ];
  for (const [name, s, ev, payload, code] of bad) {
    const r = await ack(s, ev, payload);
    expect(`${name}: ack error ${code}`, r.status === "error" && r.code === code, r);
  }
  sock.alice.emit("send_message", { conversationId: "nope" }); // no ack: an `error` event
  expect("a failing event without ack gets an `error` event", await waitFor(() => count(sock.alice, "error", (p) => p.event === "send_message")));

  // ------------------------------------------------------------------ rate-limited burst
  const burst = await Promise.all(
    Array.from({ length: RATE_LIMIT + 10 }, (_, i) =>
      ack(sock.spammer, "send_message", { conversationId: SD, content: `burst ${i}`, clientMessageId: `burst-${i}` })));
  const limited = burst.filter((r) => r.code === "rate_limited");
  const accepted = burst.filter(isOk);
  expect(`a burst of ${burst.length} sends: 1 to ${RATE_LIMIT} accepted, the rest rate_limited with retryAfterMs`,
    accepted.length >= 1 && accepted.length <= RATE_LIMIT && limited.length >= 10 && limited.every((r) => r.retryAfterMs > 0) && accepted.length + limited.length === burst.length,
    { accepted: accepted.length, limited: limited.length, other: burst.filter((r) => !isOk(r) && r.code !== "rate_limited") });
  const r429 = await rest(n3, "POST", `/api/chat/conversations/${SD}/messages`, { token: tokens.spammer, body: { content: "more" } });
  expect("REST send over the shared limit on another node: 429 with Retry-After", r429.status === 429 && r429.headers.get("retry-after"), r429);

  // ------------------------------------------------------------------ REST reads and 4xx
  for (const who of ["alice", "bob", "carol", "dave"]) {
    for (const base of [n1, n2]) {
      await rest(base, "GET", "/api/chat/conversations?limit=20", { token: tokens[who] });
      await rest(base, "GET", "/api/chat/unread", { token: tokens[who] });
    }
  }
  const conv = await rest(n3, "GET", "/api/chat/conversations", { token: tokens.alice });
  expect("GET conversations lists alice's 2 conversations", conv.status === 200 && conv.body.data.conversations.length === 2, conv.body);
  const unread = await rest(n2, "GET", "/api/chat/unread", { token: tokens.dave });
  expect("GET unread 200", unread.status === 200, unread);
  const status = await rest(n1, "GET", `/api/chat/users/status?ids=${users.bob},${users.carol}`, { token: tokens.alice });
  expect("GET users/status 200", status.status === 200, status);
  const hist = await rest(n2, "GET", `/api/chat/conversations/${AB}/messages?limit=50`, { token: tokens.alice });
  expect("GET history 200", hist.status === 200 && hist.body.data.messages.length >= 8, hist.body);
  const rd = await rest(n3, "POST", `/api/chat/conversations/${CD}/read`, { token: tokens.dave, body: {} });
  expect("POST read 200", rd.status === 200, rd);
  const codes = [
    ["no token", 401, n1, "GET", "/api/chat/conversations", {}],
    ["a forged token", 401, n2, "GET", "/api/chat/unread", { token: tokens.forged }],
    ["an unknown conversation", 404, n3, "GET", `/api/chat/conversations/${hex24()}/messages`, { token: tokens.alice }],
    ["a malformed id", 400, n1, "GET", "/api/chat/conversations/nope/messages", { token: tokens.alice }],
    ["someone else's conversation", 403, n2, "GET", `/api/chat/conversations/${AB}/messages`, { token: tokens.carol }],
    ["blank content", 400, n3, "POST", `/api/chat/conversations/${AB}/messages`, { token: tokens.alice, body: { content: " " } }],
    ["a body over 64 KiB", 413, n1, "POST", `/api/chat/conversations/${AB}/messages`, { token: tokens.alice, raw: JSON.stringify({ content: "x".repeat(70000) }) }],
    ["a missing participantId", 400, n2, "POST", "/api/chat/conversations", { token: tokens.alice, body: {} }],
    ["an unknown route with a user id in it", 404, n3, "GET", `/api/chat/nope/${users.alice}/${hex24()}`, { token: tokens.alice }],
  ];
  for (const [name, want, base, method, p, opts] of codes) {
    const r = await rest(base, method, p, opts);
    expect(`REST ${name}: ${want}`, r.status === want && (want === 404 && p.startsWith("/api/chat/nope") ? true : r.body.status === "error"), r);
  }

  // ------------------------------------------------------------------ client disconnects
  sock.bob2.close();
  sock.dave.close();
  delete sock.bob2;
  delete sock.dave;

  // ------------------------------------------------------------------ store locked
  // Another process holds the SQLite write lock longer than the nodes' busy timeout: writes
  // must fail with `unavailable` (and count chat_db_errors_total), not hang or 500.
  await gate("db-locked");
  const tl = Date.now();
  const [lockedRest, lockedSock] = await Promise.all([
    rest(n1, "POST", `/api/chat/conversations/${AB}/messages`, {
      token: tokens.alice, body: { content: "store locked", clientMessageId: `ops-locked-${hex24()}` }, timeout: 30000,
    }),
    ack(sock.carol, "send_message", { conversationId: CD, content: "store locked", clientMessageId: `ops-locked-${hex24()}` }, 30000),
  ]);
  const lockedMs = Date.now() - tl;
  expect(`REST send while the store is locked: 503 unavailable (${lockedMs} ms)`, lockedRest.status === 503 && lockedRest.body.code === "unavailable", lockedRest);
  expect("send_message while the store is locked: ack error unavailable", lockedSock.status === "error" && lockedSock.code === "unavailable", lockedSock);
  await gate("db-unlocked");
  const unlocked = await ack(sock.carol, "send_message", { conversationId: CD, content: "store back", clientMessageId: `ops-unlocked-${hex24()}` });
  expect("after the lock is released, sends succeed again", isOk(unlocked), unlocked);

  // ------------------------------------------------------------------ Redis outage
  await gate("redis-down");
  const t0 = Date.now();
  const down = await ack(sock.alice, "send_message", { conversationId: AB, content: "during the outage", clientMessageId: `ops-outage-${hex24()}` }, 15000);
  expect(`send_message while Redis is down: ack error unavailable (${Date.now() - t0} ms)`, down.status === "error" && down.code === "unavailable", down);
  const t1 = Date.now();
  const rdown = await rest(n2, "POST", `/api/chat/conversations/${AB}/messages`, { token: tokens.bob, body: { content: "during the outage" } });
  expect(`REST send while Redis is down: 503 unavailable (${Date.now() - t1} ms)`, rdown.status === 503 && rdown.body.code === "unavailable", rdown);
  const t2 = Date.now();
  const ready = await rest(n3, "GET", "/readyz");
  expect(`/readyz while Redis is down: 503 within 1 s (${Date.now() - t2} ms)`, ready.status === 503 && Date.now() - t2 <= 1500, ready);
  for (const [name, s, ev, payload] of [
    ["mark_as_read", sock.bob, "mark_as_read", { conversationId: AB }],
    ["typing_start", sock.carol, "typing_start", { conversationId: CD }],
    ["get_online_status", sock.alice, "get_online_status", { userIds: [users.bob] }],
  ]) {
    const r = await ack(s, ev, payload, 15000);
    // The contract: an answer (no hang), and a failure only as `unavailable`.
    expect(`${name} while Redis is down: success or error unavailable (no hang, no other error)`,
      r.status === "success" || (r.status === "error" && r.code === "unavailable"), r);
  }
  // A default client (reconnection on) connecting now: reported, checked after the recovery.
  const late = sio.socket(n1, tokens.carol, { reconnection: true });
  await waitFor(() => late.connected || late.events.some(([n]) => n === "connect_error"), 15000);
  const lateErr = late.events.filter(([n]) => n === "connect_error").map(([, m]) => m);
  info(`a new socket while Redis is down: ${late.connected ? "accepted" : `refused (connect_error ${lateErr.join(", ")}, socket.active=${late.active})`}`);

  // ------------------------------------------------------------------ recovery
  await gate("redis-up");
  // Old sockets: a message from alice (n1) must reach bob (n2) again through the new Redis.
  const before = count(sock.bob, "new_message");
  let again = null;
  await waitFor(async () => {
    again = await ack(sock.alice, "send_message", { conversationId: AB, content: "after the outage", clientMessageId: `ops-after-${hex24()}` });
    return isOk(again);
  }, 20000, 500);
  expect("after Redis is back, old sockets send again", isOk(again), again);
  expect("after Redis is back, cross-node fan-out works on the old sockets (n1 -> n2)",
    await waitFor(() => count(sock.bob, "new_message") > before, 15000), { again });
  const fresh1 = await connect(n3, tokens.carol).catch((e) => e);
  const fresh2 = await connect(n2, tokens.dave).catch((e) => e);
  const freshOk = fresh1.connected && fresh2.connected;
  expect("after Redis is back, new sockets connect", freshOk, { fresh1: String(fresh1.message || ""), fresh2: String(fresh2.message || "") });
  if (freshOk) {
    const m = await ack(fresh1, "send_message", { conversationId: CD, content: "new sockets", clientMessageId: `ops-fresh-${hex24()}` });
    expect("after Redis is back, a message from a new socket on n3 reaches new (n2) and old (n3) sockets",
      isOk(m) && await waitFor(() => count(fresh2, "new_message", (p) => p.message._id === m.data.message._id) === 1 &&
        count(sock.carol, "new_message", (p) => p.message._id === m.data.message._id) === 1, 15000), m);
    fresh1.close();
    fresh2.close();
  }
  // A client that tried during the outage must end up connected: a namespace-level
  // connect_error is final for socket.io-client, so a refusal there would strand it forever.
  expect("the client that connected during the outage is connected after the recovery",
    await waitFor(() => late.connected, 15000),
    { active: late.active, connectErrors: late.events.filter(([n]) => n === "connect_error").map(([, m]) => m) });
  late.close();
  // A few more normal calls so that every rate() has fresh samples after the outage.
  for (const who of ["alice", "bob"]) await rest(n1, "GET", "/api/chat/conversations", { token: tokens[who] });
  for (const s of Object.values(sock)) s.close();
}

main()
  .catch((e) => sio.fail("traffic script crashed", e.stack || String(e)))
  .finally(() => {
    setTimeout(() => process.exit(sio.failed() ? 1 : 0), 200);
  });
