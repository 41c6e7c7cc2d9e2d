// Drives the web client in headless Chromium (Debian's `chromium`, through puppeteer-core) the way
// two people would use it, and saves a screenshot after every step.
//
//   node tests/browser/chat.mjs      (run by tests/browser/check.sh, which starts everything)
//
// Environment (set by check.sh):
//   SOLO_URL       an embedded-default node (development sign-in on)
//   LB_URL         nginx in front of the cluster nodes (development sign-in off)
//   NODE_METRICS   comma-separated metrics base URLs of the cluster nodes, to see where each
//                  browser's websocket landed
//   ALICE_TOKEN, BOB_TOKEN, ALICE_ID, BOB_ID   tokens minted with `jobsphere-chat token`
//   ARTIFACTS      where the screenshots go
//   CHROMIUM       the browser binary (default /usr/bin/chromium)
//
// Output: one `ok   NAME` / `FAIL NAME` line per step, then `N passed, M failed`.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import puppeteer from "puppeteer-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const SOLO = env("SOLO_URL");
const LB = env("LB_URL");
const METRICS = env("NODE_METRICS").split(",");
const ARTIFACTS = env("ARTIFACTS");
const ALICE = { id: env("ALICE_ID"), token: env("ALICE_TOKEN") };
const BOB = { id: env("BOB_ID"), token: env("BOB_TOKEN") };
const STEP_TIMEOUT = 15_000;

fs.mkdirSync(ARTIFACTS, { recursive: true });
let passed = 0;
let failed = 0;
let shot = 0;

async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}`);
    console.log(`     | ${String(e?.stack ?? e).split("\n").slice(0, 6).join("\n     | ")}`);
  }
}

async function screenshot(page, name) {
  shot++;
  const file = path.join(ARTIFACTS, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file });
  console.log(`info screenshot ${file}`);
}

/** Waits for a predicate in the page; the message says what was awaited. */
async function until(page, what, fn, ...args) {
  try {
    await page.waitForFunction(fn, { timeout: STEP_TIMEOUT, polling: 50 }, ...args);
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message}`);
  }
}

/** [{seq, text, status, mine}] of the open conversation, in page order. */
const messagesOf = (page) =>
  page.$$eval("[data-testid=message]", (els) =>
    els.map((e) => ({
      seq: Number(e.dataset.seq),
      id: e.dataset.id,
      text: e.querySelector(".text").textContent,
      status: e.dataset.status,
      mine: e.dataset.mine === "true",
    })),
  );

const hasMessage = (text) => [...document.querySelectorAll("[data-testid=message] .text")].some((e) => e.textContent === text);

async function send(page, text) {
  await page.click("[data-testid=composer]");
  await page.type("[data-testid=composer]", text);
  await page.keyboard.press("Enter");
}

/** chat_socket_connections of each cluster node. */
async function socketsPerNode() {
  const counts = [];
  for (const base of METRICS) {
    const text = await (await fetch(`${base}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith("chat_socket_connections"));
    counts.push(line ? Number(line.trim().split(/\s+/).pop()) : 0);
  }
  return counts;
}

async function waitSockets(predicate, what) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let last = [];
  while (Date.now() < deadline) {
    last = await socketsPerNode();
    if (predicate(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; sockets per node ${JSON.stringify(last)}`);
}

const sum = (xs) => xs.reduce((a, b) => a + b, 0);

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  userDataDir: fs.mkdtempSync(path.join(os.tmpdir(), "jobsphere-chromium-")),
  args: [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-US",
  ],
  defaultViewport: { width: 1200, height: 760 },
});

try {
  // ---------------------------------------------------------------- development sign-in
  const solo = await (await browser.createBrowserContext()).newPage();
  await step("embedded node: the sign-in page offers the development sign-in", async () => {
    await solo.goto(SOLO, { waitUntil: "networkidle0" });
    await solo.waitForSelector("[data-testid=signin-form]", { timeout: STEP_TIMEOUT });
    await solo.type("[data-testid=signin-user]", "carol");
    await solo.type("[data-testid=signin-name]", "Carol Díaz");
    await screenshot(solo, "dev-sign-in");
  });
  await step("embedded node: signing in mints a token and connects", async () => {
    await solo.click("[data-testid=signin-submit]");
    await until(solo, "the connection pill to say online", () => document.querySelector("[data-testid=connection]")?.dataset.state === "online");
    const me = await solo.$eval("[data-testid=me]", (e) => e.textContent);
    if (me !== "Carol Díaz") throw new Error(`signed in as ${me}`);
    await screenshot(solo, "signed-in-empty");
  });
  await solo.browserContext().close();

  // ---------------------------------------------------------------- the cluster
  await step("cluster: the sign-in page offers no development sign-in", async () => {
    const page = await (await browser.createBrowserContext()).newPage();
    await page.goto(LB, { waitUntil: "networkidle0" });
    await page.waitForSelector("[data-testid=signin-token]", { timeout: STEP_TIMEOUT });
    if (await page.$("[data-testid=signin-form]")) throw new Error("the development form is shown in cluster mode");
    await screenshot(page, "cluster-sign-in");
    await page.browserContext().close();
  });

  const alice = await (await browser.createBrowserContext()).newPage();
  const bobContext = await browser.createBrowserContext();
  let bob;
  const online = () => document.querySelector("[data-testid=connection]")?.dataset.state === "online";
  let aliceNode = -1;
  let bobNode = -1;

  await step("Alice and Bob sign in through nginx, their websockets on different nodes", async () => {
    const base = await socketsPerNode();
    await alice.goto(`${LB}/#token=${ALICE.token}`, { waitUntil: "domcontentloaded" });
    await until(alice, "Alice online", online);
    const a = await waitSockets((c) => sum(c) === sum(base) + 1, "Alice's socket");
    aliceNode = a.findIndex((n, i) => n > base[i]);
    // nginx spreads fresh websockets over the nodes at random: open Bob's tab until his lands
    // on another node than Alice's (2/3 per try; 16 tries fail with probability ~1e-8).
    for (let attempt = 0; attempt < 16 && (bobNode < 0 || bobNode === aliceNode); attempt++) {
      if (bob) {
        await bob.close();
        await waitSockets((c) => c.every((n, i) => n === a[i]), "Bob's previous socket to close");
      }
      bob = await bobContext.newPage();
      await bob.goto(`${LB}/#token=${BOB.token}`, { waitUntil: "domcontentloaded" });
      await until(bob, "Bob online", online);
      const after = await waitSockets((c) => sum(c) === sum(a) + 1, "Bob's socket");
      bobNode = after.findIndex((n, i) => n > a[i]);
    }
    if (bobNode === aliceNode) throw new Error(`both sockets on node ${aliceNode + 1}`);
    console.log(`info Alice's socket on node ${aliceNode + 1}, Bob's on node ${bobNode + 1}`);
  });

  await step("Alice starts a conversation with Bob about a job", async () => {
    await alice.type("[data-testid=new-peer]", BOB.id);
    await alice.type("[data-testid=new-job]", "job-42");
    await alice.click("[data-testid=new-conversation] button");
    await until(alice, "the conversation header", (name) => document.querySelector("[data-testid=peer-name]")?.textContent === name, "Bob Builder");
    await until(alice, "Bob's presence dot to be green", () => document.querySelector("[data-testid=conversation] [data-testid=presence]")?.dataset.online === "true");
  });

  const first = "Hi Bob! Could you come on Tuesday to look at the kitchen sink?";
  await step("Alice sends; it arrives on Bob's node: unread badge and presence dot", async () => {
    await send(alice, first);
    await until(alice, "Alice's own message", hasMessage, first);
    await until(bob, "Bob's unread badge", () => document.querySelector("[data-testid=conversation] [data-testid=unread]")?.textContent === "1");
    const dot = await bob.$eval("[data-testid=conversation] [data-testid=presence]", (e) => e.dataset.online);
    if (dot !== "true") throw new Error("Alice is not shown online to Bob");
    await until(alice, "the delivered tick", () => document.querySelector("[data-testid=message][data-mine=true]")?.dataset.status === "delivered");
    await screenshot(alice, "alice-sent-delivered");
    await screenshot(bob, "bob-unread-badge");
  });

  await step("Bob opens the conversation: he sees the message, Alice sees the read tick", async () => {
    await bob.click("[data-testid=conversation]");
    await until(bob, "the message in Bob's thread", hasMessage, first);
    await until(bob, "the badge to clear", () => !document.querySelector("[data-testid=unread]"));
    await until(alice, "the read tick", () => document.querySelector("[data-testid=message][data-mine=true]")?.dataset.status === "read");
    await screenshot(alice, "alice-read-tick");
  });

  await step("Bob types: Alice sees the typing indicator, then his answer", async () => {
    await bob.type("[data-testid=composer]", "Sure, Tuesday at 9 works");
    await until(alice, "the typing indicator", () => document.querySelector("[data-testid=typing]")?.classList.contains("shown"));
    await screenshot(alice, "alice-sees-typing");
    await bob.type("[data-testid=composer]", " for me.");
    await bob.keyboard.press("Enter");
    await until(alice, "Bob's answer", hasMessage, "Sure, Tuesday at 9 works for me.");
    await until(alice, "the typing indicator to go", () => !document.querySelector("[data-testid=typing]")?.classList.contains("shown"));
    await screenshot(bob, "bob-answered");
  });

  const missed = ["I'll bring the spare parts.", "Parking is behind the house.", "The code for the gate is 4711."];
  await step("Bob goes offline; Alice sends three messages meanwhile", async () => {
    await bob.setOfflineMode(true);
    await until(bob, "Bob's offline banner", () => document.querySelector("[data-testid=banner]")?.dataset.state === "offline");
    for (const m of missed) {
      await send(alice, m);
      await until(alice, `"${m}" acknowledged`, hasMessage, m);
    }
    for (const m of missed) {
      if (await bob.evaluate(hasMessage, m)) throw new Error(`"${m}" reached Bob while he was offline`);
    }
    await bob.type("[data-testid=composer]", "Written while offline, sent when back");
    await bob.keyboard.press("Enter");
    await until(bob, "the pending bubble", () => document.querySelector("[data-testid=pending]"));
    await screenshot(bob, "bob-offline");
  });

  await step("Bob comes back: the missed messages in order, nothing twice, his own sent once", async () => {
    await bob.setOfflineMode(false);
    await until(bob, "Bob online again", online);
    for (const m of missed) await until(bob, `"${m}" after the reconnect`, hasMessage, m);
    await until(bob, "Bob's offline message to be sent", () => !document.querySelector("[data-testid=pending]") && [...document.querySelectorAll("[data-testid=message] .text")].some((e) => e.textContent === "Written while offline, sent when back"));
    const msgs = await messagesOf(bob);
    const seqs = msgs.map((m) => m.seq);
    const expected = seqs.map((_, i) => i + 1);
    if (JSON.stringify(seqs) !== JSON.stringify(expected)) throw new Error(`seqs on Bob's screen: ${seqs}`);
    const texts = msgs.map((m) => m.text);
    const at = missed.map((m) => texts.indexOf(m));
    if (at.some((i) => i < 0) || at[0] > at[1] || at[1] > at[2]) throw new Error(`order: ${texts.join(" | ")}`);
    if (new Set(msgs.map((m) => m.id)).size !== msgs.length) throw new Error("a message is shown twice");
    await until(alice, "Bob's offline message on Alice's side", hasMessage, "Written while offline, sent when back");
    const onAlice = (await messagesOf(alice)).filter((m) => m.text === "Written while offline, sent when back");
    if (onAlice.length !== 1) throw new Error(`Alice sees it ${onAlice.length} times`);
    await until(alice, "the read tick on the missed messages", () => [...document.querySelectorAll("[data-testid=message][data-mine=true]")].every((e) => e.dataset.status === "read"));
    await screenshot(bob, "bob-back-in-order");
    await screenshot(alice, "alice-all-read");
  });

  await step("A burst over the rate limit: a clear notice, then every message goes out once", async () => {
    const burst = Array.from({ length: 10 }, (_, i) => `Quick note ${i + 1}`);
    const notice = until(alice, "the rate-limit notice", () => document.querySelector("[data-testid=notice]")?.classList.contains("notice-warn"));
    await alice.focus("[data-testid=composer]");
    for (const m of burst) {
      // Faster than typing: the point is the burst.
      await alice.$eval("[data-testid=composer]", (e, text) => (e.value = text), m);
      await alice.keyboard.press("Enter");
    }
    await notice;
    await screenshot(alice, "alice-rate-limited");
    for (const m of burst) await until(alice, `"${m}" sent`, hasMessage, m);
    const mine = (await messagesOf(alice)).filter((m) => m.text.startsWith("Quick note")).map((m) => m.text);
    if (JSON.stringify(mine) !== JSON.stringify(burst)) throw new Error(`sent out of order: ${mine.join(", ")}`);
    for (const m of burst) await until(bob, `"${m}" at Bob`, hasMessage, m);
    const msgs = await messagesOf(bob);
    if (new Set(msgs.map((m) => m.seq)).size !== msgs.length) throw new Error("duplicate seq on Bob's screen");
    const count = msgs.filter((m) => m.text.startsWith("Quick note")).length;
    if (count !== burst.length) throw new Error(`Bob sees ${count} of ${burst.length} quick notes`);
  });

  await step("History scrolls back page by page (before=SEQ)", async () => {
    // Bob reloads: only the newest page is fetched, the rest as he scrolls up.
    await bob.reload({ waitUntil: "domcontentloaded" });
    await until(bob, "Bob online", online);
    await bob.click("[data-testid=conversation]");
    await until(bob, "the newest message", hasMessage, "Quick note 8");
    await bob.evaluate(() => {
      document.querySelector("[data-testid=messages]").scrollTop = 0;
    });
    await until(bob, "the first message after scrolling up", hasMessage, first);
    const seqs = (await messagesOf(bob)).map((m) => m.seq);
    if (seqs.some((s, i) => s !== i + 1)) throw new Error(`seqs after scrolling: ${seqs}`);
  });
} finally {
  await browser.close();
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
