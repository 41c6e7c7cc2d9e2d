// The page: a sign-in card, then the conversation list and the open conversation.
// Plain DOM; every piece of state lives in `Chat` (chat.ts) and is re-rendered on its changes.

import "./style.css";

import { ApiError, api } from "./api";
import { Chat, type Change, type Pending } from "./chat";
import * as session from "./session";
import type { Conversation, Message, Participant, Role } from "./types";

const app = document.querySelector<HTMLDivElement>("#app")!;

// ------------------------------------------------------------------ helpers

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") el.className = String(v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const palette = ["#4f46e5", "#0891b2", "#db2777", "#ea580c", "#16a34a", "#7c3aed", "#0d9488", "#c026d3"];

function avatar(p: { _id: string; name: string }, online?: boolean, size = "md"): HTMLElement {
  let hash = 0;
  for (const ch of p._id) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  const initials =
    p.name
      .split(/\s+/)
      .filter(Boolean)
      .slice(0, 2)
      .map((w) => w[0]!.toUpperCase())
      .join("") || "?";
  const el = h("span", { class: `avatar avatar-${size}`, style: `background:${palette[hash % palette.length]}` }, initials);
  if (online !== undefined) {
    el.append(h("span", { class: `dot ${online ? "dot-on" : "dot-off"}`, "data-testid": "presence", "data-online": String(online) }));
  }
  return el;
}

function time(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function shortTime(iso: string): string {
  const d = new Date(iso);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time(iso);
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

function dayLabel(iso: string): string {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86_400_000);
  if (d.toDateString() === today.toDateString()) return "Today";
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", month: "long", day: "numeric" });
}

const roleLabel: Record<Role, string> = { customer: "Customer", contractor: "Contractor", admin: "Admin" };

// Ticks: one grey for sent, two grey for delivered, two blue for read; a clock while pending.
const icons = {
  sent: `<svg viewBox="0 0 16 16" width="16" height="16"><path d="M3.5 8.5l3 3 6-7" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>`,
  double: `<svg viewBox="0 0 20 16" width="20" height="16"><path d="M1.5 8.5l3 3 6-7M8 11.5l1 .5 6-7.5" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>`,
  clock: `<svg viewBox="0 0 16 16" width="14" height="14"><circle cx="8" cy="8" r="6" fill="none" stroke="currentColor" stroke-width="1.4"/><path d="M8 4.5V8l2.5 1.5" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linecap="round"/></svg>`,
  alert: `<svg viewBox="0 0 16 16" width="14" height="14"><circle cx="8" cy="8" r="7" fill="currentColor"/><path d="M8 4.5v4.2M8 11v.3" stroke="#fff" stroke-width="1.6" stroke-linecap="round"/></svg>`,
  send: `<svg viewBox="0 0 24 24" width="20" height="20"><path d="M3.4 20.4l17.5-7.5a1 1 0 000-1.8L3.4 3.6a1 1 0 00-1.4 1.2L4.5 12l-2.5 7.2a1 1 0 001.4 1.2z" fill="currentColor"/></svg>`,
  chat: `<svg viewBox="0 0 64 64" width="72" height="72"><rect x="6" y="10" width="40" height="28" rx="8" fill="#e0e7ff"/><path d="M14 38l-4 10 12-10z" fill="#e0e7ff"/><rect x="20" y="22" width="38" height="26" rx="8" fill="#c7d2fe"/><path d="M50 48l4 9-12-9z" fill="#c7d2fe"/><circle cx="31" cy="35" r="2.5" fill="#4f46e5"/><circle cx="39" cy="35" r="2.5" fill="#4f46e5"/><circle cx="47" cy="35" r="2.5" fill="#4f46e5"/></svg>`,
};

function iconEl(svg: string, cls: string, label: string): HTMLElement {
  const el = h("span", { class: cls, title: label, "aria-label": label });
  el.innerHTML = svg;
  return el;
}

// ------------------------------------------------------------------ sign-in

async function showSignIn(reason?: string): Promise<void> {
  const devEnabled = await api.devSignInEnabled().catch(() => false);
  const error = h("p", { class: "form-error", role: "alert", "data-testid": "signin-error" });
  if (reason) error.textContent = reason;

  const userId = h("input", { id: "user-id", name: "userId", required: true, placeholder: "e.g. alice", autocomplete: "username", pattern: "[A-Za-z0-9_.:@|\\-]{1,128}", "data-testid": "signin-user" });
  const name = h("input", { id: "user-name", name: "name", placeholder: "e.g. Alice Martin", maxlength: "100", "data-testid": "signin-name" });
  const roleInputs = (["customer", "contractor"] as Role[]).map((r, i) =>
    h("label", { class: "segment" }, h("input", { type: "radio", name: "role", value: r, checked: i === 0 }), h("span", {}, roleLabel[r])),
  );
  const devForm = h(
    "form",
    { class: "stack", "data-testid": "signin-form" },
    h("label", { for: "user-id" }, "User id"),
    userId,
    h("label", { for: "user-name" }, "Display name"),
    name,
    h("span", { class: "label" }, "Role"),
    h("div", { class: "segments" }, ...roleInputs),
    h("button", { class: "btn btn-primary", type: "submit", "data-testid": "signin-submit" }, "Sign in"),
  );
  devForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const role = (devForm.querySelector<HTMLInputElement>("input[name=role]:checked")?.value ?? "customer") as Role;
    try {
      const s = await session.devSignIn(userId.value.trim(), name.value.trim(), role);
      startChat(s);
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : String(e);
    }
  });

  const tokenArea = h("textarea", { id: "token", rows: "4", placeholder: "eyJhbGciOi…", spellcheck: "false", "data-testid": "signin-token" });
  const tokenForm = h(
    "form",
    { class: "stack" },
    h("label", { for: "token" }, "Access token"),
    tokenArea,
    h("button", { class: `btn ${devEnabled ? "btn-ghost" : "btn-primary"}`, type: "submit" }, "Use this token"),
  );
  tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = session.fromToken(tokenArea.value);
    if (!s) {
      error.textContent = "That does not look like a JWT.";
      return;
    }
    session.save(s);
    startChat(s);
  });

  const details = h("details", { class: "token-details", open: !devEnabled }, h("summary", {}, "Sign in with a token instead"), tokenForm);
  app.replaceChildren(
    h(
      "div",
      { class: "signin-page" },
      h(
        "div",
        { class: "signin-card" },
        h("div", { class: "brand" }, h("span", { class: "brand-mark" }), h("span", {}, "JobSphere ", h("b", {}, "Chat"))),
        h("h1", {}, devEnabled ? "Sign in to try the chat" : "Sign in"),
        h(
          "p",
          { class: "muted" },
          devEnabled
            ? "This node runs the embedded default, so it can sign you in as any user. Open a second tab as another user to chat with yourself."
            : "This node verifies tokens from your JobSphere auth service. Paste one below.",
        ),
        devEnabled ? devForm : null,
        devEnabled ? details : tokenForm,
        error,
      ),
    ),
  );
  (devEnabled ? userId : tokenArea).focus();
}

// ------------------------------------------------------------------ the chat

function startChat(s: session.Session): void {
  const chat = new Chat(s);
  const ui = new ChatView(chat);
  app.replaceChildren(ui.root);
  void chat.loadConversations();
}

class ChatView {
  readonly root: HTMLElement;
  private list = h("ul", { class: "conv-list", "data-testid": "conversations" });
  private connPill = h("span", { class: "pill", "data-testid": "connection" });
  private threadPane = h("section", { class: "thread" });
  private messagesEl = h("div", { class: "messages", "data-testid": "messages" });
  private typingEl = h("div", { class: "typing", "data-testid": "typing", "aria-live": "polite" });
  private noticeEl = h("div", { class: "notice", "data-testid": "notice", role: "status" });
  private bannerEl = h("div", { class: "banner", "data-testid": "banner" });
  private headerEl = h("header", { class: "thread-header" });
  private input = h("textarea", { rows: "1", placeholder: "Write a message…", maxlength: "4000", "data-testid": "composer" });
  private noticeTicker: number | undefined;
  private renderedThread: string | null = null;

  constructor(private chat: Chat) {
    const me = chat.me;
    const signOut = h("button", { class: "btn btn-icon", title: "Sign out", "data-testid": "signout" }, "Sign out");
    signOut.addEventListener("click", () => {
      chat.close();
      session.clear();
      void showSignIn();
    });

    const peer = h("input", { placeholder: "User id", required: true, "aria-label": "User id to chat with", "data-testid": "new-peer" });
    const job = h("input", { placeholder: "Job id", "aria-label": "Job id", class: "job-input", "data-testid": "new-job" });
    const startForm = h("form", { class: "new-conv", "data-testid": "new-conversation" }, peer, job, h("button", { class: "btn btn-primary btn-sm", type: "submit" }, "Start"));
    startForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const id = await chat.start(peer.value.trim(), job.value.trim() || undefined);
      if (id) {
        peer.value = "";
        job.value = "";
        void chat.open(id);
      }
    });

    const sidebar = h(
      "aside",
      { class: "sidebar" },
      h(
        "header",
        { class: "me" },
        avatar({ _id: me.userId, name: me.name }),
        h("div", { class: "me-text" }, h("div", { class: "me-name", "data-testid": "me" }, me.name), h("div", { class: "me-role" }, roleLabel[me.role] ?? me.role, " · ", this.connPill)),
        signOut,
      ),
      h("div", { class: "section-title" }, "New conversation"),
      startForm,
      h("div", { class: "section-title" }, "Conversations"),
      this.list,
    );

    const composer = h("form", { class: "composer" }, this.input, h("button", { class: "btn btn-send", type: "submit", title: "Send", "aria-label": "Send", "data-testid": "send" }));
    composer.querySelector("button")!.innerHTML = icons.send;
    composer.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.chat.send(this.input.value);
      this.input.value = "";
      this.autosize();
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) {
        ev.preventDefault();
        composer.requestSubmit();
      }
    });
    this.input.addEventListener("input", () => {
      this.autosize();
      if (this.input.value.trim()) this.chat.typed();
    });
    this.messagesEl.addEventListener("scroll", () => {
      if (this.messagesEl.scrollTop < 80 && this.chat.activeId) void this.chat.loadPage(this.chat.activeId, true);
    });
    this.messagesEl.addEventListener("click", (ev) => {
      const t = ev.target as HTMLElement;
      const id = t.closest<HTMLElement>("[data-cmid]")?.dataset.cmid;
      if (!id) return;
      if (t.closest(".retry")) this.chat.retry(id);
      if (t.closest(".discard")) this.chat.discard(id);
    });

    this.threadPane.append(this.headerEl, this.bannerEl, this.messagesEl, this.typingEl, this.noticeEl, composer);
    this.root = h("div", { class: "shell" }, sidebar, this.threadPane);
    chat.on((c) => this.update(c));
    this.update("list");
    this.update("connection");
    this.update("thread");
    this.update("notice");
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight, 160) + "px";
  }

  private update(c: Change): void {
    switch (c) {
      case "list":
        this.renderList();
        this.renderHeader();
        break;
      case "connection":
        this.renderConnection();
        break;
      case "thread":
        this.renderThread(false);
        break;
      case "older":
        this.renderThread(true);
        break;
      case "typing":
        this.renderTyping();
        this.renderHeader();
        break;
      case "notice":
        this.renderNotice();
        break;
      case "session":
        void showSignIn("Your session has expired. Sign in again.");
        break;
    }
  }

  private renderConnection(): void {
    const labels = { connecting: "connecting…", online: "online", reconnecting: "reconnecting…", offline: "offline" };
    const st = this.chat.connection;
    this.connPill.textContent = labels[st];
    this.connPill.className = `pill pill-${st}`;
    this.connPill.dataset.state = st;
    const banner =
      st === "offline"
        ? "You're offline. Messages you write are sent when the connection is back."
        : st === "reconnecting"
          ? "Connection lost. Reconnecting…"
          : "";
    this.bannerEl.textContent = banner;
    this.bannerEl.classList.toggle("shown", banner !== "");
    this.bannerEl.dataset.state = st;
  }

  private renderList(): void {
    const convs = this.chat.sortedConversations();
    if (convs.length === 0) {
      this.list.replaceChildren(h("li", { class: "empty-list" }, "No conversations yet. Start one with another user's id above."));
      return;
    }
    this.list.replaceChildren(...convs.map((c) => this.convItem(c)));
  }

  private convItem(c: Conversation): HTMLElement {
    const other = this.chat.other(c);
    const last = c.lastMessage;
    const mine = last?.senderId === this.chat.me.userId;
    const typing = this.chat.typing.has(c._id);
    const preview = typing
      ? h("span", { class: "preview typing-text" }, "typing…")
      : h("span", { class: "preview" }, last ? (mine ? "You: " : "") + last.content : c.jobId ? `About job ${c.jobId}` : "No messages yet");
    const li = h(
      "li",
      { class: `conv ${c._id === this.chat.activeId ? "active" : ""} ${c.unreadCount > 0 ? "unread" : ""}`, "data-testid": "conversation", "data-conv-id": c._id, "data-peer": other._id },
      avatar(other, other.online),
      h(
        "div",
        { class: "conv-main" },
        h("div", { class: "conv-top" }, h("span", { class: "conv-name" }, other.name), h("span", { class: "conv-time" }, last ? shortTime(last.createdAt) : "")),
        h(
          "div",
          { class: "conv-bottom" },
          preview,
          c.unreadCount > 0 ? h("span", { class: "badge", "data-testid": "unread" }, c.unreadCount > 99 ? "99+" : String(c.unreadCount)) : null,
        ),
      ),
    );
    li.addEventListener("click", () => void this.chat.open(c._id));
    return li;
  }

  private renderHeader(): void {
    const id = this.chat.activeId;
    const c = id ? this.chat.conversations.get(id) : undefined;
    this.threadPane.classList.toggle("no-thread", !c);
    if (!c) {
      this.headerEl.replaceChildren();
      return;
    }
    const other: Participant = this.chat.other(c);
    const typing = this.chat.typing.has(c._id);
    this.headerEl.replaceChildren(
      avatar(other, other.online, "lg"),
      h(
        "div",
        { class: "peer" },
        h("div", { class: "peer-name", "data-testid": "peer-name" }, other.name),
        h(
          "div",
          { class: `peer-status ${typing ? "is-typing" : other.online ? "is-online" : ""}`, "data-testid": "peer-status" },
          typing ? "typing…" : other.online ? "Online" : "Offline",
          other.role ? ` · ${roleLabel[other.role]}` : "",
        ),
      ),
    );
    if (c.jobId) this.headerEl.append(h("span", { class: "chip", title: "The job this conversation is about" }, `Job ${c.jobId}`));
  }

  private renderTyping(): void {
    const id = this.chat.activeId;
    const c = id ? this.chat.conversations.get(id) : undefined;
    const on = !!id && this.chat.typing.has(id);
    this.typingEl.replaceChildren();
    if (on && c) this.typingEl.append(h("span", { class: "dots" }, h("i"), h("i"), h("i")), `${this.chat.other(c).name} is typing`);
    this.typingEl.classList.toggle("shown", on);
    this.renderList();
  }

  private renderNotice(): void {
    window.clearInterval(this.noticeTicker);
    const n = this.chat.notice;
    this.noticeEl.className = `notice ${n ? `shown notice-${n.kind}` : ""}`;
    if (!n) {
      this.noticeEl.textContent = "";
      return;
    }
    const paint = () => {
      const left = n.until ? Math.max(0, Math.ceil((n.until - Date.now()) / 1000)) : 0;
      this.noticeEl.textContent = !n.until
        ? n.text
        : left > 0
          ? `${n.text} Sending again in ${left} s — nothing is lost, your messages go out by themselves.`
          : `${n.text} Sending again now.`;
    };
    paint();
    if (n.until) this.noticeTicker = window.setInterval(paint, 250);
  }

  private renderThread(prepended: boolean): void {
    const id = this.chat.activeId;
    this.renderHeader();
    this.renderTyping();
    if (!id) {
      this.messagesEl.replaceChildren(
        h("div", { class: "empty-thread" }, iconEl(icons.chat, "empty-art", ""), h("h2", {}, "Your messages"), h("p", { class: "muted" }, "Pick a conversation on the left, or start one with another user's id.")),
      );
      this.renderedThread = null;
      return;
    }
    const el = this.messagesEl;
    const switched = this.renderedThread !== id;
    const fromBottom = el.scrollHeight - el.scrollTop;
    const atBottom = fromBottom - el.clientHeight < 60;
    const keepTop = el.scrollTop;

    const t = this.chat.thread(id);
    const msgs = this.chat.messages(id);
    const nodes: HTMLElement[] = [];
    if (t.loading && t.loaded) nodes.push(h("div", { class: "loader" }, "Loading earlier messages…"));
    else if (t.loaded && !t.hasMore && msgs.length) nodes.push(h("div", { class: "start-of" }, "This is the beginning of the conversation."));
    let day = "";
    let prev: Message | undefined;
    for (const m of msgs) {
      const d = new Date(m.createdAt).toDateString();
      if (d !== day) {
        day = d;
        nodes.push(h("div", { class: "day" }, h("span", {}, dayLabel(m.createdAt))));
        prev = undefined;
      }
      const grouped = prev && prev.senderId === m.senderId && Date.parse(m.createdAt) - Date.parse(prev.createdAt) < 120_000;
      nodes.push(this.bubble(m, !!grouped));
      prev = m;
    }
    for (const p of this.chat.pendingOf(id)) nodes.push(this.pendingBubble(p));
    if (t.loaded && msgs.length === 0 && this.chat.pendingOf(id).length === 0) {
      nodes.push(h("div", { class: "empty-thread small" }, h("p", { class: "muted" }, "No messages yet. Say hello 👋")));
    }
    el.replaceChildren(...nodes);

    if (switched || atBottom) el.scrollTop = el.scrollHeight;
    else if (prepended) el.scrollTop = el.scrollHeight - fromBottom;
    else el.scrollTop = keepTop;
    this.renderedThread = id;
    if (switched) this.input.focus();
    // A short first page on a tall screen: keep loading until it scrolls.
    if (t.loaded && t.hasMore && !t.loading && el.scrollHeight <= el.clientHeight) void this.chat.loadPage(id, true);
  }

  private bubble(m: Message, grouped: boolean): HTMLElement {
    const mine = m.senderId === this.chat.me.userId;
    const meta = h("span", { class: "meta" }, time(m.createdAt));
    if (mine) {
      const label = { sent: "Sent", delivered: "Delivered", read: "Read" }[m.status];
      meta.append(iconEl(m.status === "sent" ? icons.sent : icons.double, `tick tick-${m.status}`, label));
    }
    return h(
      "div",
      { class: `msg ${mine ? "mine" : "theirs"} ${grouped ? "grouped" : ""}`, "data-testid": "message", "data-seq": String(m.seq), "data-id": m._id, "data-status": m.status, "data-mine": String(mine) },
      h("div", { class: "bubble" }, h("span", { class: "text" }, m.content), meta),
    );
  }

  private pendingBubble(p: Pending): HTMLElement {
    const meta = h("span", { class: "meta" });
    if (p.state === "failed") {
      meta.append(iconEl(icons.alert, "tick tick-failed", "Not sent"), h("span", { class: "failed-text" }, p.error ?? "Not sent"));
      meta.append(h("button", { class: "link retry", type: "button" }, "Retry"), h("button", { class: "link discard", type: "button" }, "Discard"));
    } else {
      meta.append(iconEl(icons.clock, "tick tick-pending", p.state === "waiting" ? "Waiting to send" : "Sending"));
    }
    return h(
      "div",
      { class: `msg mine grouped pending ${p.state}`, "data-testid": "pending", "data-cmid": p.clientMessageId },
      h("div", { class: "bubble" }, h("span", { class: "text" }, p.content), meta),
    );
  }
}

// ------------------------------------------------------------------ start

const s = session.load();
if (s) startChat(s);
else void showSignIn();
