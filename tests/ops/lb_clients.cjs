// Clients of tests/ops/lb_cluster.sh: the official socket.io-client through nginx in front of
// three chat nodes.
//
//   node lb_clients.cjs --lb URL --nodes URL1,URL2,URL3 --metrics M1,M2,M3 --tokens tokens.json \
//        --gates DIR
//
// (a) websocket clients through nginx: spread over the nodes (the node of every socket is found
//     from the per-node chat_socket_connections gauge), messages with acks, each socket gets every
//     new_message exactly once, across nodes (plus sockets connected straight to node 1 and 3);
// (b) long-polling clients through nginx (needs stickiness: every poll of a session must reach
//     the node holding it) and a polling->websocket upgrade: no disconnects, exactly once;
// (c) `gate roll`: the caller restarts the three nodes one after the other (SIGTERM, wait,
//     start on the same ports) and creates DIR/roll when done, while a sender streams messages
//     with clientMessageId retries through nginx. During node 2's drain the caller creates
//     DIR/probe: fresh clients connect then (2 straight to node 2, 12 through nginx). Afterwards: every acked message is in
//     the history (REST through nginx) with its seq, seq is 1..N without gaps or duplicates, no
//     socket got a message twice, every socket reconnected by itself and receives new messages,
//     and `sync` fills what a socket missed while it was away.
// Prints `ok` / `FAIL` / `info` lines (see sio.cjs); exit 1 on any failure.
"use strict";

const fs = require("fs");
const path = require("path");
const sio = require("./sio.cjs");
const { expect, info, ack, rest, count, waitFor, sleep, sample, metricsText } = sio;

const a = sio.args();
const LB = a.lb;
const nodes = a.nodes.split(",");
const metrics = a.metrics.split(",");
const { users, tokens } = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const gates = a.gates;
const RUN = Date.now().toString(36);
const isOk = (r) => r && r.status === "success";

function gateOpen(name) {
  return fs.existsSync(path.join(gates, name));
}

async function gauges() {
  return Promise.all(metrics.map(async (m) => sample(await metricsText(m), "chat_socket_connections") || 0));
}

// Connects with the default socket.io-client behaviour (reconnection on) and finds the node that
// took the socket: the one whose chat_socket_connections went up by one.
async function placed(name, user, base, transports) {
  const before = await gauges();
  const s = sio.socket(base, tokens[user], { transports, reconnection: true });
  const connected = await waitFor(() => s.connected, 15000);
  if (!connected) {
    s.close();
    throw new Error(`${name}: not connected through ${base} (${JSON.stringify(s.events.slice(-3))})`);
  }
  let node = null;
  await waitFor(async () => {
    const after = await gauges();
    const up = after.map((v, i) => v - before[i]);
    const i = up.findIndex((d) => d >= 1);
    if (i >= 0 && up.filter((d) => d !== 0).length === 1) node = i + 1;
    return node !== null;
  }, 5000, 50);
  return { name, user, s, node, transports, via: base === LB ? "lb" : "direct" };
}

// Messages received more than once by s, leaving out those whose clientMessageId was sent
// again (a retry is delivered again, in case its first attempt failed after it was stored).
function dupes(s, retried = new Set()) {
  const seen = new Map();
  for (const [n, p] of s.events) {
    if (n !== "new_message" || retried.has(p.message.clientMessageId)) continue;
    seen.set(p.message._id, (seen.get(p.message._id) || 0) + 1);
  }
  return [...seen.entries()].filter(([, c]) => c > 1);
}

async function conversation(who, other, jobId) {
  const r = await rest(LB, "POST", "/api/chat/conversations", { token: tokens[who], body: { participantId: users[other], jobId } });
  if (![200, 201].includes(r.status)) throw new Error(`conversation ${who}-${other}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.data._id;
}

// send(c, conv, text, cmid): one message, acked (or {status: "timeout"} as sio.ack answers).
// The ack is also recorded among the socket's events, as "(ack)": socket.io-client calls ack
// callbacks and event listeners in the order the packets arrived.
function send(c, conv, text, cmid) {
  return new Promise((resolve) => {
    c.s.timeout(10000).emit("send_message", { conversationId: conv, content: text, clientMessageId: cmid }, (err, r) => {
      if (err) return resolve({ status: "timeout", message: String(err.message) });
      c.s.events.push(["(ack)", r]);
      resolve(r);
    });
  });
}

// Where the sending socket saw its own message: its ack, then message_delivered, then new_message.
function senderOrder(c, id) {
  const of = (name) => c.s.events.findIndex(([n, p]) => n === name && p && p.message && p.message._id === id);
  const acked = c.s.events.findIndex(([n, p]) => n === "(ack)" && p && p.data && p.data.message._id === id);
  const delivered = of("message_delivered");
  const own = of("new_message");
  return { ok: acked >= 0 && delivered > acked && own > delivered, acked, delivered, own };
}

async function exchange(label, senders, receivers, conv, n) {
  const ids = [];
  const acks = [];
  const sent = [];
  for (let i = 0; i < n; i++) {
    const c = senders[i % senders.length];
    const r = await send(c, conv, `${label} ${i} from ${c.name}`, `${label}-${RUN}-${i}`);
    acks.push(r);
    if (isOk(r)) {
      ids.push(r.data.message._id);
      sent.push([c, r.data.message._id]);
    }
  }
  expect(`${label}: ${n} sends through nginx acked`, acks.every(isOk) && ids.length === n, acks.filter((r) => !isOk(r)));
  const once = () => receivers.every((c) => ids.every((id) => count(c.s, "new_message", (p) => p.message._id === id) === 1));
  const good = await waitFor(once, 15000);
  expect(`${label}: each of ${receivers.length} sockets (${receivers.map((c) => `${c.name}@n${c.node || "?"}`).join(", ")}) got every new_message exactly once`,
    good, receivers.map((c) => [c.name, ids.map((id) => count(c.s, "new_message", (p) => p.message._id === id)).join("")]));
  const orders = sent.map(([c, id]) => [c.name, senderOrder(c, id)]);
  expect(`${label}: each sending socket saw its ack, then message_delivered, then its own new_message`,
    orders.every(([, o]) => o.ok), orders.filter(([, o]) => !o.ok));
  return ids;
}

async function main() {
  const AB = await conversation("alice", "bob", "job-lb");
  const CD = await conversation("carol", "dave", "job-lb");
  const all = [];

  // ------------------------------------------------------------------ (a) websocket via nginx
  const ws = [];
  for (const [name, user] of [["alice1", "alice"], ["alice2", "alice"], ["bob1", "bob"], ["bob2", "bob"],
    ["carol1", "carol"], ["carol2", "carol"], ["dave1", "dave"], ["dave2", "dave"]]) {
    ws.push(await placed(name, user, LB, ["websocket"]));
  }
  all.push(...ws);
  const spread = new Set(ws.map((c) => c.node));
  info(`websocket clients through nginx: ${ws.map((c) => `${c.name}@n${c.node || "?"}`).join(" ")}`);
  expect(`8 websocket clients through nginx, every one located on a node, spread over ${spread.size} nodes`,
    ws.every((c) => c.node) && spread.size >= 2, ws.map((c) => [c.name, c.node]));
  // Sockets straight on node 1 and node 3: whatever nginx chose, some pairs are cross-node.
  const d1 = await placed("alice-direct-n1", "alice", nodes[0], ["websocket"]);
  const d3 = await placed("bob-direct-n3", "bob", nodes[2], ["websocket"]);
  all.push(d1, d3);
  const abSockets = [...ws.filter((c) => ["alice", "bob"].includes(c.user)), d1, d3];
  const crossPairs = abSockets.filter((x) => x.user === "alice").flatMap((x) =>
    abSockets.filter((y) => y.user === "bob" && y.node !== x.node).map((y) => `${x.name}@n${x.node}->${y.name}@n${y.node}`));
  expect(`alice and bob have sockets on different nodes (${crossPairs.length} cross-node pairs)`, crossPairs.length > 0);
  await exchange("ws-AB", abSockets.filter((c) => c.via === "lb"), abSockets, AB, 8);
  await exchange("ws-CD", ws.filter((c) => ["carol", "dave"].includes(c.user)), ws.filter((c) => ["carol", "dave"].includes(c.user)), CD, 6);

  // ------------------------------------------------------------------ (b) polling via nginx
  const poll = [];
  for (const [name, user] of [["carol-poll", "carol"], ["dave-poll", "dave"], ["alice-poll", "alice"]]) {
    poll.push(await placed(name, user, LB, ["polling"]));
  }
  const up = await placed("bob-upgrade", "bob", LB, ["polling", "websocket"]);
  all.push(...poll, up);
  info(`polling clients through nginx: ${[...poll, up].map((c) => `${c.name}@n${c.node || "?"}`).join(" ")} (hashed on the client address)`);
  expect("polling clients through nginx connected and located", poll.every((c) => c.s.connected && c.node));
  const upgraded = await waitFor(() => up.s.io.engine && up.s.io.engine.transport.name === "websocket", 10000);
  expect("a default client (polling first) upgrades to websocket through nginx", upgraded, up.s.io.engine && up.s.io.engine.transport.name);
  const cd = [...ws, ...poll].filter((c) => ["carol", "dave"].includes(c.user));
  await exchange("poll-CD", poll.filter((c) => c.user !== "alice"), cd, CD, 20);
  await exchange("poll-AB", [poll.find((c) => c.user === "alice"), up], [...abSockets, poll.find((c) => c.user === "alice"), up], AB, 10);
  const pollDrops = [...poll, up].filter((c) => c.s.disconnects.length > 0 || c.s.connects !== 1);
  expect("no polling session was dropped (every poll reached the node holding the session)", pollDrops.length === 0,
    pollDrops.map((c) => [c.name, c.s.disconnects]));
  expect("polling clients are still on long-polling", poll.every((c) => c.s.io.engine.transport.name === "polling"));

  // ------------------------------------------------------------------ (c) rolling restart
  const RS = await conversation("alice", "bob", `job-roll-${RUN}`);
  const streamer = sio.socket(LB, tokens.alice, { transports: ["websocket"], reconnection: true });
  await waitFor(() => streamer.connected, 15000);
  const acked = new Map(); // cmid -> message
  const attempts = { sent: 0, retries: 0, errors: {} };
  const retried = new Set(); // clientMessageIds sent more than once
  let stop = false;
  const probe = [];

  const stream = (async () => {
    for (let i = 0; !stop; i++) {
      const cmid = `roll-${RUN}-${i}`;
      for (let attempt = 0; ; attempt++) {
        if (attempt > 200) throw new Error(`${cmid}: no ack after 200 attempts`);
        if (!streamer.connected) await waitFor(() => streamer.connected, 60000, 50);
        attempts.sent += 1;
        if (attempt > 0) {
          attempts.retries += 1;
          retried.add(cmid);
        }
        const r = await ack(streamer, "send_message", { conversationId: RS, content: `rolling ${i}`, clientMessageId: cmid }, 5000);
        if (isOk(r)) {
          acked.set(cmid, r.data.message);
          break;
        }
        const code = r.code || r.status;
        attempts.errors[code] = (attempts.errors[code] || 0) + 1;
        // Backoff before the retry (pacing, not synchronisation: the retry is the check).
        await sleep(r.code === "rate_limited" ? r.retryAfterMs || 200 : 200);
      }
      await sleep(50); // pacing: about 20 messages a second through the roll
    }
  })();

  // Fresh clients through nginx while node 2 drains (DIR/probe): default client options.
  const probeTask = (async () => {
    if (!(await waitFor(() => gateOpen("probe") || gateOpen("roll"), 180000, 20)) || !gateOpen("probe")) return;
    // Two straight to the draining node 2 (deterministic), the others through nginx (which
    // still routes to node 2 while it drains: open-source nginx has no readiness checks).
    for (let i = 0; i < 14; i++) {
      const base = i < 2 ? nodes[1] : LB;
      const s = sio.socket(base, tokens.carol, { transports: ["websocket"], reconnection: true });
      s.probeVia = base === LB ? "nginx" : "direct";
      probe.push(s);
      await sleep(60); // pacing: the fresh clients spread over the drain delay
    }
  })();

  // The roll starts once the stream runs (its first acks), and the stream stops once it has
  // been acked again after the roll (through the restarted nodes).
  expect("the stream runs before the roll (10 messages acked through nginx)", await waitFor(() => acked.size >= 10, 30000), acked.size);
  console.log("gate roll");
  const rolled = await waitFor(() => gateOpen("roll"), 240000, 100);
  expect("the rolling restart finished", rolled);
  const atRoll = acked.size;
  expect("the stream is acked again after the roll (10 more messages)", await waitFor(() => acked.size >= atRoll + 10, 30000), acked.size - atRoll);
  stop = true;
  try {
    await stream;
  } catch (e) {
    expect("the sender got an ack for every message (retrying with the same clientMessageId)", false, e.message);
  }
  await probeTask;
  info(`streamed ${acked.size} messages through the roll: ${attempts.sent} sends, ${attempts.retries} retries, errors ${JSON.stringify(attempts.errors)}`);
  expect("messages were acked during the roll", acked.size > 20, acked.size);

  // Every socket reconnects by itself (transport closed by the draining node, default client).
  const sockets = [...all.map((c) => [c.name, c.s]), ["streamer", streamer]];
  const back = await waitFor(() => sockets.every(([, s]) => s.connected), 30000, 100);
  const stuck = sockets.filter(([, s]) => !s.connected).map(([n, s]) => ({
    socket: n, disconnects: s.disconnects, connectErrors: s.events.filter(([e]) => e === "connect_error").map(([, m]) => m), active: s.active,
  }));
  expect(`all ${sockets.length} sockets are connected again after the roll, by themselves`, back, stuck);
  const lb = sockets.filter(([n]) => !n.includes("direct"));
  info(`reconnects during the roll: ${sockets.map(([n, s]) => `${n}:${s.connects - 1}`).join(" ")}; disconnect reasons: ${[...new Set(sockets.flatMap(([, s]) => s.disconnects))].join(", ")}`);
  expect("every socket was disconnected by the roll and reconnected (connect count > 1)",
    lb.every(([, s]) => s.connects > 1), lb.filter(([, s]) => s.connects <= 1).map(([n]) => n));
  const serverDisc = sockets.filter(([, s]) => s.disconnects.includes("io server disconnect"));
  expect("no socket saw `io server disconnect` (clients would not reconnect after it)", serverDisc.length === 0, serverDisc.map(([n]) => n));

  // Probe: fresh clients that connected while node 2 was draining.
  if (probe.length) {
    await waitFor(() => probe.every((s) => s.connected), 10000, 100);
    const errs = (s) => s.events.filter(([n]) => n === "connect_error").map(([, m]) => m);
    for (const via of ["direct", "nginx"]) {
      const group = probe.filter((s) => s.probeVia === via);
      const stuck = group.filter((s) => !s.connected);
      const refused = group.filter((s) => errs(s).length > 0);
      const what = via === "direct" ? "straight to node 2" : "through nginx";
      info(`probe ${what} during node 2's drain delay: ${group.length} fresh clients, ${refused.length} got connect_error ` +
        `(${[...new Set(group.flatMap(errs))].join(", ") || "-"}), ${stuck.length} still disconnected 40 s after the roll (socket.active=${stuck.map((s) => s.active).join(",") || "-"})`);
      expect(via === "direct"
        ? "a default client connecting to a draining node gets connected by itself (to the restarted node)"
        : "fresh clients connecting through nginx while a node drains end up connected by themselves",
      stuck.length === 0,
      `${stuck.length} of ${group.length} gave up: the draining node refused the handshake at the namespace level ` +
        `(connect_error "${[...new Set(stuck.flatMap(errs))].join(", ")}"), after which socket.io-client never retries (socket.active=false)`);
    }
    for (const s of probe) s.close();
  } else {
    expect("the drain probe ran", false, "no probe gate");
  }

  // New messages reach every socket again.
  const finals = [];
  const senderOf = (user) => all.find((x) => x.user === user && x.via === "lb" && x.s.connected) || all.find((x) => x.user === user);
  for (const [who, c] of [["alice", senderOf("alice")], ["bob", senderOf("bob")]]) {
    const r = await ack(c.s, "send_message", { conversationId: AB, content: `after the roll from ${who}`, clientMessageId: `final-${RUN}-${who}` });
    expect(`after the roll, ${who} sends through nginx`, isOk(r), r);
    if (isOk(r)) finals.push(r.data.message._id);
  }
  const abAll = all.filter((c) => ["alice", "bob"].includes(c.user) && c.s.connected); // stuck ones are reported above
  const gotFinal = await waitFor(() => abAll.every((c) => finals.every((id) => count(c.s, "new_message", (p) => p.message._id === id) === 1)), 15000);
  expect(`after the roll, every connected alice/bob socket (${abAll.length}) receives new messages exactly once`, gotFinal,
    abAll.map((c) => [c.name, finals.map((id) => count(c.s, "new_message", (p) => p.message._id === id)).join("")]));
  const cdAll = all.filter((c) => ["carol", "dave"].includes(c.user) && c.s.connected); // stuck ones are reported above
  const r = await ack(cdAll[0].s, "send_message", { conversationId: CD, content: "after the roll", clientMessageId: `final-${RUN}-cd` });
  const gotCd = isOk(r) && await waitFor(() => cdAll.every((c) => count(c.s, "new_message", (p) => p.message._id === r.data.message._id) === 1), 15000);
  expect(`after the roll, every connected carol/dave socket (${cdAll.length}) receives new messages exactly once`, gotCd,
    cdAll.map((c) => [c.name, isOk(r) ? count(c.s, "new_message", (p) => p.message._id === r.data.message._id) : r]));

  // History through nginx: every acked message, gap-free seq, no duplicate clientMessageId.
  const hist = await sio.history(LB, tokens.bob, RS);
  const seqs = hist.map((m) => m.seq);
  const gapFree = seqs.every((s, i) => s === i + 1);
  expect(`history through nginx: ${hist.length} messages, seq 1..${hist.length} without gaps or duplicates`, gapFree && hist.length > 0,
    seqs.filter((s, i) => s !== i + 1).slice(0, 10));
  const byCmid = new Map();
  for (const m of hist) byCmid.set(m.clientMessageId, (byCmid.get(m.clientMessageId) || []).concat([m]));
  const dupCmid = [...byCmid.entries()].filter(([, v]) => v.length > 1);
  expect("no clientMessageId is stored twice (retries were idempotent)", dupCmid.length === 0, dupCmid.slice(0, 5).map(([k]) => k));
  const lost = [...acked.entries()].filter(([cmid, m]) => {
    const h = byCmid.get(cmid);
    return !h || h[0]._id !== m._id || h[0].seq !== m.seq;
  });
  expect(`every acknowledged message (${acked.size}) is in the history with the acked _id and seq`, lost.length === 0,
    lost.slice(0, 10).map(([k, m]) => [k, m.seq]));
  const unacked = hist.filter((m) => !acked.has(m.clientMessageId));
  info(`${unacked.length} stored messages of the stream had no ack (sender stopped before retrying)`);

  // Per socket: never the same message twice, even across reconnects, unless it was sent twice.
  const twice = sockets.filter(([, s]) => dupes(s, retried).length > 0);
  expect(`no socket received any new_message twice, reconnects included (${retried.size} retried sends left out: ` +
    "a retry is delivered again)", twice.length === 0, twice.map(([n, s]) => [n, dupes(s, retried).slice(0, 3)]));

  // Recovery with sync: what bob's sockets missed while away is returned by `sync`.
  for (const c of all.filter((x) => x.user === "bob" && x.s.connected)) {
    const live = new Set(c.s.events.filter(([n, p]) => n === "new_message" && p.message.conversationId === RS).map(([, p]) => p.message.seq));
    let sy;
    const synced = [];
    for (let after = 0; ;) {
      sy = await ack(c.s, "sync", { conversations: [{ conversationId: RS, afterSeq: after }] });
      if (!isOk(sy)) break;
      const page = sy.data.conversations[0] || { messages: [], hasMore: false };
      synced.push(...page.messages.map((m) => m.seq));
      if (!page.hasMore || page.messages.length === 0) break;
      after = page.messages[page.messages.length - 1].seq;
    }
    const union = new Set([...live, ...synced]);
    const missing = seqs.filter((s) => !union.has(s));
    expect(`${c.name}: live new_message (${live.size}) + sync cover the whole stream (${seqs.length})`, isOk(sy) && missing.length === 0,
      isOk(sy) ? { missing: missing.slice(0, 10) } : sy);
  }
  for (const [, s] of sockets) s.close();
}

main()
  .catch((e) => sio.fail("client script crashed", e.stack || String(e)))
  .finally(() => {
    setTimeout(() => process.exit(sio.failed() ? 1 : 0), 200);
  });
