// Who is signed in in this tab. Kept in sessionStorage, so two tabs can be two different users.
//
// Two ways in: the development sign-in (a node in the embedded default mints a token for any
// user id), or a token from elsewhere (your auth service, or `jobsphere-chat token`), pasted
// or handed over in the address as `#token=...`. Only the first can be refreshed here.

import { api } from "./api";
import type { Role } from "./types";

export interface Session {
  token: string;
  userId: string;
  name: string;
  role: Role;
  /** "dev": minted by the development sign-in, refreshable; "token": given to us. */
  source: "dev" | "token";
}

const KEY = "jobsphere-chat.session";

export function load(): Session | null {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    history.replaceState(null, "", location.pathname + location.search);
    const s = fromToken(fromHash);
    if (s) save(s);
    return s;
  }
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

export function save(s: Session): void {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clear(): void {
  sessionStorage.removeItem(KEY);
}

/** A session from a JWT's claims (read only for display: the server verifies the token). */
export function fromToken(token: string): Session | null {
  const part = token.trim().split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(decodeURIComponent(escape(json)));
    const userId = claims.userId ?? claims.sub;
    if (typeof userId !== "string") return null;
    return { token: token.trim(), userId, name: claims.name ?? userId, role: claims.role ?? "customer", source: "token" };
  } catch {
    return null;
  }
}

export async function devSignIn(userId: string, name: string, role: Role): Promise<Session> {
  const d = await api.devSignIn(userId, name, role);
  const s: Session = { token: d.token, userId: d.user._id, name: d.user.name, role: d.user.role, source: "dev" };
  save(s);
  return s;
}

/** A fresh token after the server said `unauthorized`; null when this session cannot refresh. */
export async function refresh(s: Session): Promise<Session | null> {
  if (s.source !== "dev") return null;
  try {
    return await devSignIn(s.userId, s.name, s.role);
  } catch {
    return null;
  }
}
