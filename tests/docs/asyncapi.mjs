// Validates docs/asyncapi.yaml with the AsyncAPI parser and checks that it, docs/events.md and
// the server's event names (src/realtime/events.rs) list the same events.
//
//   node tests/docs/asyncapi.mjs        (run by tests/docs/check.sh after `npm ci`)
//
// Output: `ok   NAME` / `FAIL NAME` lines (details indented), `info` lines for warnings.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const read = (p) => fs.readFileSync(path.join(root, p), "utf8");
let failed = 0;
const ok = (name) => console.log(`ok   ${name}`);
const fail = (name, details = []) => {
  failed++;
  console.log(`FAIL ${name}`);
  for (const d of details) console.log(`     | ${d}`);
};

const parser = new Parser();
const { document, diagnostics } = await parser.parse(read("docs/asyncapi.yaml"));
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning)) {
  console.log(`info asyncapi warning at ${d.path.join(".")}: ${d.message}`);
}
if (!document || errors.length) {
  fail("docs/asyncapi.yaml is a valid AsyncAPI document", errors.map((d) => `${d.path.join(".")}: ${d.message}`));
  process.exit(1);
}
if (document.version() !== "3.0.0") fail(`docs/asyncapi.yaml is AsyncAPI 3.0.0 (it says ${document.version()})`);
else ok("docs/asyncapi.yaml is a valid AsyncAPI 3.0.0 document");

// Event names: client -> server operations are `receive`, server -> client are `send`.
const names = (action) =>
  document
    .operations()
    .all()
    .filter((o) => o.action() === action)
    .flatMap((o) => o.messages().all().map((m) => m.name()))
    .sort();
const documented = { receive: names("receive"), send: names("send") };

// The server's names: client → server constants in src/realtime/events.rs, server → client
// from `ServerEvent::name` in src/coord/fanout/event.rs.
const consts = (text) => [...text.matchAll(/pub const [A-Z_]+: &str = "([a-z_]+)";/g)].map((m) => m[1]).sort();
const serverEvents = (text) => [...text.matchAll(/Self::[A-Za-z]+\(_\) => "([a-z_]+)",/g)].map((m) => m[1]).sort();
const server = {
  receive: consts(read("src/realtime/events.rs")),
  send: serverEvents(read("src/coord/fanout/event.rs")),
};

for (const [action, label] of [
  ["receive", "client → server"],
  ["send", "server → client"],
]) {
  const a = JSON.stringify(documented[action]);
  const b = JSON.stringify(server[action]);
  if (a === b) ok(`${label} events match the server's event names (${server[action].length})`);
  else fail(`${label} events match the server's event names`, [`asyncapi: ${a}`, `server:   ${b}`]);
}

const page = read("docs/events.md");
const missing = [...server.receive, ...server.send].filter((n) => !page.includes("`" + n + "`"));
if (missing.length === 0) ok("docs/events.md names every event");
else fail("docs/events.md names every event", [`missing: ${missing.join(", ")}`]);

process.exit(failed ? 1 : 0);
