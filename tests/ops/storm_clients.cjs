// Clients of tests/ops/storm.sh: several hundred official socket.io-clients (default
// reconnection, websocket transport) from one address through nginx, across a rolling restart.
//
//   node storm_clients.cjs --lb URL --metrics M1,M2,M3 --tokens tokens.json --gates DIR \
//        --clients 300 [--pace-ms 25] [--settle-secs 30]
//
// tokens.json: {"users": {"u0": id, ...}, "tokens": {"u0": jwt, ...}}; client i is user
// u(i mod users). Sends the token in the Socket.IO `auth` payload only, so every handshake is
// keyed by the (shared) client address, the worst case for the connection throttle.
//
// Protocol with the caller (stdout lines `gate NAME`, files DIR/NAME):
//   `gate ready`       all clients connected, a message went both ways between u0 and u1;
//   DIR/rolled-K       the caller restarted node K (SIGTERM, exit, start again, ready);
//   `gate settled-K`   every client connected again by itself, the sockets node K held are the
//                      ones that reconnected, and a message went both ways again.
//   DIR/done           after the last roll: close the sockets and exit.
// Prints `ok` / `FAIL` / `info` lines (see sio.cjs); exit 1 on any failure.
"use strict";

const fs = require("fs");
const path = require("path");
const sio = require("./sio.cjs");
const { expect, info, ack, rest, count, waitFor, sleep, sample, metricsText } = sio;

const a = sio.args();
const LB = a.lb;
const metrics = a.metrics.split(",");
const { users, tokens } = JSON.parse(fs.readFileSync(a.tokens, "utf8"));
const gates = a.gates;
const N = Number(a.clients || 300);
const PACE_MS = Number(a["pace-ms"] || 25);
const SETTLE_MS = Number(a["settle-secs"] || 30) * 1000;
const RUN = Date.now().toString(36);
const names = Object.keys(tokens).sort((x, y) => Number(x.slice(1)) - Number(y.slice(1)));
const isOk = (r) => r && r.status === "success";

const gateOpen = (name) => fs.existsSync(path.join(gates, name));

async function gauges() {
  return Promise.all(metrics.map(async (m) => sample(await metricsText(m), "chat_socket_connections")));
}

const clients = []; // {i, user, s}
const connectErrors = (c) => c.s.events.filter(([n]) => n === "connect_error").map(([, m]) => m);

function stuckOnes() {
  return clients.filter((c) => !c.s.connected).map((c) => ({
    client: c.i, user: c.user, active: c.s.active, disconnects: c.s.disconnects, connectErrors: connectErrors(c).slice(-3),
  }));
}

// One message each way between u0 and u1: every socket of both users gets it exactly once
// (the sender's other sockets included), whichever nodes they are on.
async function exchange(label, conv) {
  const ofUser = (u) => clients.filter((c) => c.user === u);
  for (const [from, to] of [["u0", "u1"], ["u1", "u0"]]) {
    const sender = ofUser(from).find((c) => c.s.connected);
    const r = sender
      ? await ack(sender.s, "send_message", { conversationId: conv, content: `${label} from ${from}`, clientMessageId: `storm-${RUN}-${label.replace(/ /g, "-")}-${from}` })
      : { status: "no connected socket" };
    if (!expect(`${label}: ${from} sends through nginx (acked)`, isOk(r), r)) continue;
    const id = r.data.message._id;
    const targets = [...ofUser(to), ...ofUser(from).filter((c) => c !== sender)];
    const got = (c) => count(c.s, "new_message", (p) => p.message._id === id);
    const good = await waitFor(() => targets.every((c) => got(c) === 1), 15000);
    expect(`${label}: the message from ${from} reached every socket of ${to} (${ofUser(to).length}) and the sender's other sockets, exactly once`,
      good, targets.filter((c) => got(c) !== 1).map((c) => [c.i, c.user, got(c)]));
  }
}

async function main() {
  const r = await rest(LB, "POST", "/api/chat/conversations", { token: tokens.u0, body: { participantId: users.u1, jobId: `job-storm-${RUN}` } });
  if (![200, 201].includes(r.status)) throw new Error(`conversation u0-u1: ${r.status} ${JSON.stringify(r.body)}`);
  const conv = r.body.data._id;

  // Pacing (not synchronisation): the first connects stay under the address budget, as the
  // clients of a real office would arrive over time. Whether they all get in is the check.
  const t0 = Date.now();
  for (let i = 0; i < N; i++) {
    const user = names[i % names.length];
    clients.push({ i, user, s: sio.socket(LB, tokens[user], { transports: ["websocket"], reconnection: true }) });
    await sleep(PACE_MS);
  }
  const up = await waitFor(() => clients.every((c) => c.s.connected), SETTLE_MS, 50);
  expect(`${N} clients (${names.length} users) connected through nginx from one address`, up, stuckOnes().slice(0, 10));
  if (!up) return;
  info(`${N} clients connected in ${((Date.now() - t0) / 1000).toFixed(1)} s (paced ${PACE_MS} ms apart)`);
  let before = await gauges();
  expect(`the nodes hold all ${N} sockets (chat_socket_connections ${before.join(" + ")})`,
    before.every((g) => g !== null) && before.reduce((x, y) => x + y, 0) === N, before);
  await exchange("before the roll", conv);
  console.log("gate ready");

  for (let k = 1; k <= metrics.length; k++) {
    const connectsBefore = clients.map((c) => c.s.connects);
    const errorsBefore = clients.map((c) => connectErrors(c).length);
    const rolled = await waitFor(() => gateOpen(`rolled-${k}`) || gateOpen("done"), 180000, 50);
    if (!rolled || !gateOpen(`rolled-${k}`)) {
      expect(`roll ${k}: node ${k} restarted`, false, "no gate from the caller");
      return;
    }
    const t = Date.now();
    const back = await waitFor(() => clients.every((c) => c.s.connected), SETTLE_MS, 50);
    const stuck = stuckOnes();
    expect(`roll ${k}: all ${N} clients connected again by themselves (${stuck.length} stuck)`, back, stuck.slice(0, 10));
    info(`roll ${k}: all connected ${((Date.now() - t) / 1000).toFixed(1)} s after node ${k} was ready again`);
    const moved = clients.filter((c, i) => c.s.connects > connectsBefore[i]);
    const twice = clients.filter((c, i) => c.s.connects > connectsBefore[i] + 1);
    // The sockets node k held are exactly the ones that had to reconnect.
    expect(`roll ${k}: the ${before[k - 1]} sockets node ${k} held reconnected (${moved.length} reconnected, ${twice.length} more than once)`,
      moved.length === before[k - 1] && twice.length === 0, { held: before[k - 1], moved: moved.length, twice: twice.map((c) => c.i) });
    const errs = clients.flatMap((c, i) => connectErrors(c).slice(errorsBefore[i]));
    const inactive = clients.filter((c) => !c.s.active);
    const serverDisc = clients.filter((c) => c.s.disconnects.includes("io server disconnect"));
    expect(`roll ${k}: no client gave up (socket.active) and none saw \`io server disconnect\``, inactive.length === 0 && serverDisc.length === 0,
      { inactive: inactive.map((c) => c.i), serverDisconnect: serverDisc.map((c) => c.i) });
    const after = await gauges();
    info(`roll ${k}: sockets per node ${before.join("/")} -> ${after.join("/")}; ${errs.length} transient connect_error ` +
      `(${[...new Set(errs)].join(", ") || "-"}); disconnect reasons: ${[...new Set(moved.flatMap((c) => c.s.disconnects))].join(", ") || "-"}`);
    expect(`roll ${k}: the nodes hold all ${N} sockets again (${after.join(" + ")})`,
      after.every((g) => g !== null) && after.reduce((x, y) => x + y, 0) === N, after);
    await exchange(`after roll ${k}`, conv);
    before = after;
    console.log(`gate settled-${k}`);
  }
  await waitFor(() => gateOpen("done"), 60000, 50);
}

main()
  .catch((e) => sio.fail("client script crashed", e.stack || String(e)))
  .finally(() => {
    for (const c of clients) c.s.close();
    setTimeout(() => process.exit(sio.failed() ? 1 : 0), 200);
  });
