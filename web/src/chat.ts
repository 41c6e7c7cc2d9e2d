// The chat client: one Socket.IO connection plus the REST calls, and the state the page shows.
//
// What it shows a client developer (docs/client-guide.md explains each point):
// - messages are kept per conversation by `seq`, so a message that arrives twice (live and
//   again from `sync` or history) is stored once, and the list is always in order;
// - every send carries a `clientMessageId` and is retried with the same id (after a timeout, a
//   reconnect or a rate limit), so the server never stores it twice;
// - after a reconnect the client asks `sync` for everything after the last `seq` it holds, and
//   a gap in `seq` on a live message triggers the same catch-up;
// - receipts: `mark_as_delivered` when a message reaches this tab, `mark_as_read` when the
//   conversation is on screen; the sender's ticks follow `messages_delivered` / `messages_read`;
// - `unauthorized` at connect means the token expired: refresh it and connect again;
//   `session_expired` says the same of a connected socket just before the server closes its
//   transport: refresh now, so the automatic reconnect carries the fresh token.

import { io, type Socket } from "socket.io-client";

import { api, ApiError } from "./api";
import * as session from "./session";
import type { Ack, Conversation, Message, MessageStatus, SyncedConversation, UserStatus } from "./types";

export type Connection = "connecting" | "online" | "reconnecting" | "offline";

export interface Thread {
  bySeq: Map<number, Message>;
  /** Whether older messages exist before the oldest one held. */
  hasMore: boolean;
  /** The newest page has been fetched. */
  loaded: boolean;
  loading: boolean;
}

export interface Pending {
  clientMessageId: string;
  conversationId: string;
  content: string;
  createdAt: number;
  state: "sending" | "waiting" | "failed";
  error?: string;
}

export interface Notice {
  kind: "info" | "warn" | "error";
  text: string;
  /** For rate limits: when sending works again (ms since epoch). */
  until?: number;
}

export type Change = "list" | "thread" | "older" | "connection" | "typing" | "notice" | "session";

const ACK_TIMEOUT_MS = 10_000;
const TYPING_IDLE_MS = 3_000;
const TYPING_SHOWN_MS = 6_000;
const SYNC_ROUNDS = 20;

const rank: Record<MessageStatus, number> = { sent: 0, delivered: 1, read: 2 };

function newClientMessageId(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class Chat {
  readonly conversations = new Map<string, Conversation>();
  readonly threads = new Map<string, Thread>();
  readonly pending = new Map<string, Pending>();
  /** conversationId -> when the other side's typing indicator expires. */
  readonly typing = new Map<string, number>();
  connection: Connection = "connecting";
  activeId: string | null = null;
  notice: Notice | null = null;

  private socket: Socket;
  private everConnected = false;
  private typingSentAt = 0;
  private typingIdle: number | undefined;
  private readSent = new Map<string, number>();
  private noticeTimer: number | undefined;
  private inFlight = false;
  private pausedUntil = 0;
  private listeners = new Set<(c: Change) => void>();

  constructor(public me: session.Session) {
    // Websocket only: no sticky sessions needed behind a load balancer (as mobile clients do).
    this.socket = io({ auth: (cb) => cb({ token: this.me.token }), transports: ["websocket"] });
    this.wire();
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    document.addEventListener("visibilitychange", this.onVisible);
  }

  on(fn: (c: Change) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(c: Change): void {
    for (const fn of this.listeners) fn(c);
  }

  close(): void {
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    document.removeEventListener("visibilitychange", this.onVisible);
    this.socket.disconnect();
  }

  // ------------------------------------------------------------------ connection

  private wire(): void {
    const s = this.socket;
    s.on("connect", () => {
      const reconnect = this.everConnected;
      this.everConnected = true;
      this.setConnection("online");
      if (this.activeId) this.join(this.activeId);
      if (reconnect) void this.catchUp();
      this.pump();
    });
    s.on("disconnect", (reason) => {
      this.setConnection(navigator.onLine ? "reconnecting" : "offline");
      // A server-side namespace disconnect is the one case the client does not retry itself.
      if (reason === "io server disconnect") s.connect();
    });
    s.on("connect_error", async (err) => {
      if (err.message === "unauthorized") {
        const fresh = await session.refresh(this.me);
        if (!fresh) {
          this.expired();
          return;
        }
        this.me = fresh;
        s.connect();
        return;
      }
      if (err.message === "rate_limited") {
        // Too many connection attempts from this address: a refusal by middleware is not
        // retried by the client itself, so try again after a pause with jitter.
        window.setTimeout(() => s.connect(), 2000 + Math.random() * 3000);
      }
      this.setConnection(navigator.onLine ? "reconnecting" : "offline");
    });

    s.on("new_message", ({ message }: { message: Message }) => this.onNewMessage(message));
    s.on("message_delivered", ({ message }: { message: Message }) => this.addMessage(message));
    s.on("messages_delivered", (e: { conversationId: string; upToSeq: number }) =>
      this.raiseStatus(e.conversationId, e.upToSeq, "delivered"),
    );
    s.on("messages_read", (e: { conversationId: string; readerId: string; upToSeq: number }) => {
      if (e.readerId === this.me.userId) {
        // Read on another of my devices.
        const c = this.conversations.get(e.conversationId);
        if (c && (c.lastMessage?.seq ?? 0) <= e.upToSeq) c.unreadCount = 0;
        this.emit("list");
      } else {
        this.raiseStatus(e.conversationId, e.upToSeq, "read");
      }
    });
    s.on("user_typing", (e: { conversationId: string; userId: string; isTyping: boolean }) => {
      if (e.userId === this.me.userId) return;
      if (e.isTyping) this.typing.set(e.conversationId, Date.now() + TYPING_SHOWN_MS);
      else this.typing.delete(e.conversationId);
      this.emit("typing");
      window.setTimeout(() => this.expireTyping(), TYPING_SHOWN_MS + 50);
    });
    s.on("user_status", (e: UserStatus) => {
      for (const c of this.conversations.values()) {
        for (const p of c.participants) if (p._id === e.userId) p.online = e.online;
      }
      this.emit("list");
    });
    s.on("session_expired", async () => {
      // The transport closes next and the client reconnects by itself; `auth` reads `this.me`
      // then. A session that cannot refresh ends at that reconnect's `unauthorized`.
      const fresh = await session.refresh(this.me);
      if (fresh) this.me = fresh;
    });
    s.on("error", (e: { code: string; message: string; event: string }) => {
      this.showNotice({ kind: "error", text: `${e.event}: ${e.message}` });
    });
  }

  private setConnection(c: Connection): void {
    if (this.connection === c) return;
    this.connection = c;
    this.emit("connection");
  }

  /** The browser lost its network: close the transport now rather than waiting for the ping
   *  timeout; the client's own reconnection takes over. */
  private onOffline = (): void => {
    this.setConnection("offline");
    this.socket.io.engine?.close();
  };

  /** Back online: reconnect at once instead of waiting for the next backoff step. */
  private onOnline = (): void => {
    if (!this.socket.connected) {
      this.setConnection("reconnecting");
      this.socket.disconnect().connect();
    }
  };

  private onVisible = (): void => {
    if (document.visibilityState === "visible" && this.activeId) this.markRead(this.activeId);
  };

  private expired(): void {
    this.socket.disconnect();
    session.clear();
    this.emit("session");
  }

  /** An emit with an ack and a timeout; a timeout is reported as the `timeout` code. */
  private request<T>(event: string, payload: unknown): Promise<Ack<T>> {
    return new Promise((resolve) => {
      this.socket.timeout(ACK_TIMEOUT_MS).emit(event, payload, (err: Error | null, ack: Ack<T>) => {
        if (err) resolve({ status: "error", code: "timeout", message: `no answer to ${event}` });
        else resolve(ack);
      });
    });
  }

  // ------------------------------------------------------------------ conversations

  async loadConversations(): Promise<void> {
    try {
      const page = await api.conversations(this.me.token);
      for (const c of page.conversations) {
        const old = this.conversations.get(c._id);
        // The server's unread count wins, except for the one on screen (read right after).
        this.conversations.set(c._id, old && c._id === this.activeId ? { ...c, unreadCount: 0 } : c);
        const last = c.lastMessage;
        if (last && last.senderId !== this.me.userId && last.status === "sent") this.delivered(c._id, last.seq);
      }
      this.emit("list");
      if (this.activeId) this.markRead(this.activeId);
    } catch (e) {
      this.restError(e);
    }
  }

  sortedConversations(): Conversation[] {
    const at = (c: Conversation) => c.lastMessage?.createdAt ?? c.updatedAt;
    return [...this.conversations.values()].sort((a, b) => at(b).localeCompare(at(a)));
  }

  other(c: Conversation) {
    return c.participants.find((p) => p._id !== this.me.userId) ?? c.participants[0];
  }

  async start(participantId: string, jobId?: string): Promise<string | null> {
    try {
      const c = await api.openConversation(this.me.token, participantId, jobId);
      this.conversations.set(c._id, { ...(this.conversations.get(c._id) ?? {}), ...c });
      this.emit("list");
      return c._id;
    } catch (e) {
      this.restError(e);
      return null;
    }
  }

  async open(id: string): Promise<void> {
    if (this.activeId && this.activeId !== id) this.socket.emit("leave_conversation", { conversationId: this.activeId });
    this.activeId = id;
    this.stopTyping();
    this.join(id);
    const c = this.conversations.get(id);
    if (c) c.unreadCount = 0;
    this.emit("list");
    this.emit("thread");
    const t = this.thread(id);
    if (!t.loaded) await this.loadPage(id);
    this.markRead(id);
  }

  private join(id: string): void {
    void this.request("join_conversation", { conversationId: id }).then((ack) => {
      if (ack.status === "error" && ack.code !== "timeout") this.showNotice({ kind: "error", text: ack.message });
    });
  }

  thread(id: string): Thread {
    let t = this.threads.get(id);
    if (!t) {
      t = { bySeq: new Map(), hasMore: false, loaded: false, loading: false };
      this.threads.set(id, t);
    }
    return t;
  }

  /** Messages of a conversation in `seq` order. */
  messages(id: string): Message[] {
    return [...this.thread(id).bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  pendingOf(id: string): Pending[] {
    return [...this.pending.values()].filter((p) => p.conversationId === id).sort((a, b) => a.createdAt - b.createdAt);
  }

  /** The newest page, or (with `older`) the page before the oldest message held. */
  async loadPage(id: string, older = false): Promise<void> {
    const t = this.thread(id);
    if (t.loading || (older && !t.hasMore)) return;
    t.loading = true;
    const oldest = t.bySeq.size ? Math.min(...t.bySeq.keys()) : undefined;
    try {
      const page = await api.history(this.me.token, id, older ? oldest : undefined);
      for (const m of page.messages) this.store(m);
      t.hasMore = page.hasMore;
      t.loaded = true;
      this.deliveredFrom(id, page.messages);
    } catch (e) {
      this.restError(e);
    } finally {
      t.loading = false;
    }
    this.emit(older ? "older" : "thread");
  }

  // ------------------------------------------------------------------ messages

  /** Stores a message once per `seq`; a copy seen again can only raise the status. */
  private store(m: Message): boolean {
    const t = this.thread(m.conversationId);
    const have = t.bySeq.get(m.seq);
    if (m.clientMessageId && m.senderId === this.me.userId) this.pending.delete(m.clientMessageId);
    if (have) {
      if (rank[m.status] > rank[have.status]) have.status = m.status;
      return false;
    }
    t.bySeq.set(m.seq, m);
    const c = this.conversations.get(m.conversationId);
    if (c && (!c.lastMessage || c.lastMessage.seq <= m.seq)) {
      c.lastMessage = m;
      c.updatedAt = m.createdAt;
    }
    return true;
  }

  private addMessage(m: Message): boolean {
    const fresh = this.store(m);
    this.emit("list");
    if (m.conversationId === this.activeId) this.emit("thread");
    return fresh;
  }

  private newestSeq(id: string): number {
    const t = this.threads.get(id);
    return t && t.bySeq.size ? Math.max(...t.bySeq.keys()) : 0;
  }

  private onNewMessage(m: Message): void {
    const known = this.conversations.has(m.conversationId);
    const before = this.newestSeq(m.conversationId);
    const t = this.threads.get(m.conversationId);
    if (!this.addMessage(m)) return;
    if (!known) void this.loadConversations();
    // A gap: something between what we hold and this one never reached us. Fetch it.
    if (t?.loaded && before > 0 && m.seq > before + 1) void this.syncFrom([{ conversationId: m.conversationId, afterSeq: before }]);
    if (m.senderId === this.me.userId) return;
    this.typing.delete(m.conversationId);
    this.emit("typing");
    this.delivered(m.conversationId, m.seq);
    const c = this.conversations.get(m.conversationId);
    if (m.conversationId === this.activeId && document.visibilityState === "visible") this.markRead(m.conversationId);
    else if (c) c.unreadCount += 1;
    this.emit("list");
  }

  private raiseStatus(conversationId: string, upToSeq: number, status: MessageStatus): void {
    const t = this.threads.get(conversationId);
    const raise = (m: Message) => {
      if (m.senderId === this.me.userId && m.seq <= upToSeq && rank[status] > rank[m.status]) m.status = status;
    };
    t?.bySeq.forEach(raise);
    const last = this.conversations.get(conversationId)?.lastMessage;
    if (last) raise(last);
    this.emit("list");
    if (conversationId === this.activeId) this.emit("thread");
  }

  private delivered(conversationId: string, upToSeq: number): void {
    if (this.socket.connected) this.socket.emit("mark_as_delivered", { conversationId, upToSeq });
  }

  private deliveredFrom(conversationId: string, msgs: Message[]): void {
    const seqs = msgs.filter((m) => m.senderId !== this.me.userId && m.status === "sent").map((m) => m.seq);
    if (seqs.length) this.delivered(conversationId, Math.max(...seqs));
  }

  /** Marks the conversation read up to the newest message from the other side we hold. */
  markRead(id: string): void {
    const fromOther = this.messages(id).filter((m) => m.senderId !== this.me.userId);
    const upTo = fromOther.length ? fromOther[fromOther.length - 1].seq : 0;
    const c = this.conversations.get(id);
    if (upTo === 0 && !c?.unreadCount) return;
    if ((this.readSent.get(id) ?? 0) >= upTo && !c?.unreadCount) return;
    if (!this.socket.connected) return;
    this.readSent.set(id, upTo);
    void this.request<{ unreadCount: number }>("mark_as_read", { conversationId: id }).then((ack) => {
      if (ack.status === "success" && c) {
        c.unreadCount = ack.data.unreadCount;
        this.emit("list");
      } else if (ack.status === "error") {
        this.readSent.delete(id);
      }
    });
  }

  send(content: string): void {
    const id = this.activeId;
    const text = content.trim();
    if (!id || !text) return;
    this.stopTyping();
    const p: Pending = {
      clientMessageId: newClientMessageId(),
      conversationId: id,
      content: text,
      createdAt: Date.now(),
      state: "sending",
    };
    this.pending.set(p.clientMessageId, p);
    if (!this.socket.connected) p.state = "waiting";
    this.emit("thread");
    this.pump();
  }

  retry(clientMessageId: string): void {
    const p = this.pending.get(clientMessageId);
    if (!p) return;
    p.state = "waiting";
    p.error = undefined;
    this.emit("thread");
    this.pump();
  }

  discard(clientMessageId: string): void {
    this.pending.delete(clientMessageId);
    this.emit("thread");
  }

  /**
   * Sends the pending messages one at a time, oldest first, so they keep the order they were
   * written in. A retry always carries the same clientMessageId: the server answers a repeat
   * with the message it already stored, never a second copy.
   */
  private pump(): void {
    if (this.inFlight || Date.now() < this.pausedUntil || !this.socket.connected) return;
    const p = [...this.pending.values()].filter((x) => x.state !== "failed").sort((a, b) => a.createdAt - b.createdAt)[0];
    if (!p) return;
    this.inFlight = true;
    p.state = "sending";
    const payload = { conversationId: p.conversationId, content: p.content, clientMessageId: p.clientMessageId };
    void this.request<{ message: Message }>("send_message", payload).then((ack) => {
      this.inFlight = false;
      if (ack.status === "success") {
        this.addMessage(ack.data.message);
      } else if (this.pending.has(p.clientMessageId)) {
        p.state = "waiting";
        switch (ack.code) {
          case "rate_limited": {
            const wait = ack.retryAfterMs ?? 1000;
            this.pause(wait);
            this.showNotice({ kind: "warn", text: "You're sending messages quickly.", until: Date.now() + wait }, Math.max(wait + 1500, 4000));
            break;
          }
          case "timeout":
          case "unavailable":
            this.pause(2000);
            break;
          default:
            p.state = "failed";
            p.error = ack.message;
        }
        this.emit("thread");
      }
      this.pump();
    });
  }

  private pause(ms: number): void {
    this.pausedUntil = Date.now() + ms;
    window.setTimeout(() => this.pump(), ms);
  }

  // ------------------------------------------------------------------ typing

  /** Called on every keystroke in the composer. */
  typed(): void {
    const id = this.activeId;
    if (!id || !this.socket.connected) return;
    const now = Date.now();
    // The server forgets a typing state after ~5 s: repeat the start while typing goes on.
    if (now - this.typingSentAt > TYPING_IDLE_MS) {
      this.typingSentAt = now;
      this.socket.emit("typing_start", { conversationId: id });
    }
    window.clearTimeout(this.typingIdle);
    this.typingIdle = window.setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  private stopTyping(): void {
    window.clearTimeout(this.typingIdle);
    if (this.typingSentAt && this.activeId && this.socket.connected) {
      this.socket.emit("typing_stop", { conversationId: this.activeId });
    }
    this.typingSentAt = 0;
  }

  private expireTyping(): void {
    const now = Date.now();
    let changed = false;
    for (const [id, until] of this.typing) {
      if (until <= now) {
        this.typing.delete(id);
        changed = true;
      }
    }
    if (changed) this.emit("typing");
  }

  // ------------------------------------------------------------------ recovery

  /** After a reconnect: everything after the newest `seq` held, then fresh unread counts. */
  private async catchUp(): Promise<void> {
    const items = [...this.threads.entries()]
      .filter(([, t]) => t.loaded)
      .map(([conversationId]) => ({ conversationId, afterSeq: this.newestSeq(conversationId) }));
    await this.syncFrom(items);
    await this.loadConversations();
  }

  /** `sync` until no conversation reports more (bounded rounds). */
  private async syncFrom(items: { conversationId: string; afterSeq: number }[]): Promise<void> {
    for (let round = 0; items.length && round < SYNC_ROUNDS; round++) {
      const ack = await this.request<{ conversations: SyncedConversation[] }>("sync", { conversations: items });
      if (ack.status !== "success") {
        if (ack.code === "rate_limited") await new Promise((r) => setTimeout(r, ack.retryAfterMs ?? 1000));
        else return;
        continue;
      }
      const next: typeof items = [];
      for (const sc of ack.data.conversations) {
        for (const m of sc.messages) this.store(m);
        this.deliveredFrom(sc.conversationId, sc.messages);
        if (sc.hasMore && sc.messages.length) next.push({ conversationId: sc.conversationId, afterSeq: this.newestSeq(sc.conversationId) });
      }
      items = next;
      this.emit("list");
      this.emit("thread");
    }
    if (this.activeId) this.markRead(this.activeId);
  }

  // ------------------------------------------------------------------ notices

  showNotice(n: Notice, ms = 6000): void {
    this.notice = n;
    this.emit("notice");
    window.clearTimeout(this.noticeTimer);
    this.noticeTimer = window.setTimeout(() => {
      this.notice = null;
      this.emit("notice");
    }, ms);
  }

  private restError(e: unknown): void {
    if (e instanceof ApiError && e.code === "unauthorized") {
      void session.refresh(this.me).then((fresh) => {
        if (fresh) this.me = fresh;
        else this.expired();
      });
      return;
    }
    if (e instanceof ApiError && e.code === "rate_limited") {
      const wait = e.retryAfterMs ?? 1000;
      this.showNotice({ kind: "warn", text: "Too many requests.", until: Date.now() + wait }, wait);
      return;
    }
    this.showNotice({ kind: "error", text: e instanceof Error ? e.message : String(e) });
  }
}
