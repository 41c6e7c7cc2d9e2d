// Client of tests/ops/otlp_trace.sh: one message over Socket.IO (official socket.io-client) and
// one over REST with a W3C traceparent, against one node. Prints one JSON line:
// {"conversationId", "socketMessage", "restMessage", "traceparentTraceId"} (or {"error"}).
//
//   node otlp_client.cjs --node URL --alice JWT --bob-id ID --trace-id 32HEX --parent-id 16HEX
"use strict";

const sio = require("./sio.cjs");

async function main() {
  const a = sio.args();
  const c = await sio.rest(a.node, "POST", "/api/chat/conversations", { token: a.alice, body: { participantId: a["bob-id"] } });
  if (![200, 201].includes(c.status)) throw new Error(`conversation: ${c.status} ${JSON.stringify(c.body)}`);
  const conv = c.body.data._id;
  const s = await sio.connect(a.node, a.alice);
  const r = await sio.ack(s, "send_message", { conversationId: conv, content: "traced over socket", clientMessageId: `otlp-${Date.now()}` });
  s.close();
  if (r.status !== "success") throw new Error(`send_message: ${JSON.stringify(r)}`);
  const rest = await sio.rest(a.node, "POST", `/api/chat/conversations/${conv}/messages`, {
    token: a.alice,
    body: { content: "traced over REST" },
    headers: { traceparent: `00-${a["trace-id"]}-${a["parent-id"]}-01` },
  });
  if (rest.status !== 201) throw new Error(`REST send: ${rest.status} ${JSON.stringify(rest.body)}`);
  console.log(JSON.stringify({
    conversationId: conv,
    socketMessage: r.data.message._id,
    restMessage: rest.body.data.message._id,
    traceparentTraceId: a["trace-id"],
    traceparentParentId: a["parent-id"],
  }));
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
});
