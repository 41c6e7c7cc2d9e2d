// REST calls (same origin: the node serves this page, or the dev server proxies /api).

import type { Conversation, ErrorCode, Message, User } from "./types";

/** An error answer of the API, with its stable code (and the wait, for rate limits). */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly status: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

async function call<T>(method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError("unavailable", "The chat service cannot be reached.", 0);
  }
  const json = await res.json().catch(() => null);
  if (!res.ok || json?.status !== "success") {
    const retry = Number(res.headers.get("retry-after"));
    throw new ApiError(
      json?.code ?? (res.status === 401 ? "unauthorized" : "unavailable"),
      json?.message ?? `HTTP ${res.status}`,
      res.status,
      Number.isFinite(retry) && retry > 0 ? retry * 1000 : undefined,
    );
  }
  return json.data as T;
}

export const api = {
  devSignInEnabled: () => call<{ enabled: boolean }>("GET", "/api/dev/sign-in", null).then((d) => d.enabled),
  devSignIn: (userId: string, name: string, role: string) =>
    call<{ token: string; expiresInSecs: number; user: User }>("POST", "/api/dev/sign-in", null, { userId, name, role }),
  conversations: (token: string) =>
    call<{ conversations: Conversation[]; nextCursor: string | null }>("GET", "/api/chat/conversations?limit=50", token),
  openConversation: (token: string, participantId: string, jobId?: string) =>
    call<Conversation>("POST", "/api/chat/conversations", token, jobId ? { participantId, jobId } : { participantId }),
  history: (token: string, conversationId: string, beforeSeq?: number, limit = 30) =>
    call<{ messages: Message[]; hasMore: boolean }>(
      "GET",
      `/api/chat/conversations/${encodeURIComponent(conversationId)}/messages?limit=${limit}` +
        (beforeSeq ? `&before=${beforeSeq}` : ""),
      token,
    ),
};
