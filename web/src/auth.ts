// Sessions. The access token (a JWT) lives in this module's memory only: never in storage, never in a
// cookie the page can read. How the refresh token is kept depends on where accounts are:
// - local accounts (the edge's /auth/v1): in an httpOnly, SameSite=Strict cookie `zx_refresh` scoped to
//   /auth/v1/ that the edge sets when a request carries `X-Zx-Session: cookie` (the custom header is the
//   CSRF guard with SameSite; the edge sends no CORS headers). Script cannot read it; a reload gets a new
//   access token from it.
// - Supabase Auth (another origin, its cookies are not ours): Supabase's refresh token in sessionStorage
//   (this tab only, gone when it closes). A trade-off: script on this origin could read it, which the CSP
//   (no inline or foreign script) and text-only rendering guard against.

export interface AuthConfig {
  mode: "local" | "supabase";
  url: string;
  anonKey: string;
}

interface SessionJson {
  access_token?: string;
  expires_in?: number;
  refresh_token?: string;
  user?: { id?: string; email?: string };
}

export class AuthError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly network = false,
  ) {
    super(message);
  }
}

const SUPABASE_REFRESH = "zx.supabase.refresh";
let config: AuthConfig = { mode: "local", url: "/auth/v1", anonKey: "" };
let accessToken: string | null = null;
let userEmail = "";
let refreshTimer: number | undefined;
let refreshing: Promise<boolean> | null = null;

export function authMode(): "local" | "supabase" {
  return config.mode;
}

export function token(): string | null {
  return accessToken;
}

export function email(): string {
  return userEmail;
}

export async function loadConfig(): Promise<void> {
  let res: Response;
  try {
    res = await fetch("/config.json", { cache: "no-store" });
  } catch {
    throw new AuthError("the gateway is not reachable", 0, true);
  }
  if (!res.ok) throw new AuthError(`the gateway answered ${res.status} for /config.json`, res.status);
  const body = (await res.json()) as { auth?: AuthConfig };
  if (body.auth) config = body.auth;
}

async function post(path: string, body: unknown, bearer?: string): Promise<SessionJson | null> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (config.mode === "local") headers["x-zx-session"] = "cookie";
  else headers["apikey"] = config.anonKey;
  if (bearer) headers["authorization"] = `Bearer ${bearer}`;
  let res: Response;
  try {
    res = await fetch(config.url + path, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      credentials: config.mode === "local" ? "same-origin" : "omit",
      cache: "no-store",
    });
  } catch {
    throw new AuthError("the gateway is not reachable", 0, true);
  }
  if (res.status === 204) return null;
  let data: Record<string, unknown> = {};
  try {
    data = (await res.json()) as Record<string, unknown>;
  } catch {
    // an empty or non-JSON answer: the status says enough
  }
  if (!res.ok) {
    const msg = data["msg"] ?? data["error_description"] ?? data["message"] ?? `sign-in failed (${res.status})`;
    throw new AuthError(String(msg), res.status);
  }
  return data as SessionJson;
}

/** What this tab keeps for its user (the typed prompt, job event caches) belongs to one user: when a
 * different user signs in here (a session expired and someone else signed in), drop it first. */
const TAB_OWNER = "zx.owner";
function claimTab(userId: string): void {
  const previous = sessionStorage.getItem(TAB_OWNER);
  if (previous !== null && previous !== userId) {
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith("zx.") && key !== SUPABASE_REFRESH) sessionStorage.removeItem(key);
    }
  }
  sessionStorage.setItem(TAB_OWNER, userId);
}

function adopt(session: SessionJson | null): boolean {
  if (!session || !session.access_token) return false;
  claimTab(session.user?.id ?? "");
  accessToken = session.access_token;
  userEmail = session.user?.email ?? userEmail;
  if (config.mode === "supabase" && session.refresh_token) {
    sessionStorage.setItem(SUPABASE_REFRESH, session.refresh_token);
  }
  window.clearTimeout(refreshTimer);
  const lifetime = session.expires_in ?? 900;
  // Renew a minute before the token expires (at least 10 s from now).
  refreshTimer = window.setTimeout(() => void refresh(), Math.max(10, lifetime - 60) * 1000);
  return true;
}

export async function signIn(emailAddress: string, password: string): Promise<void> {
  const session = await post("/token?grant_type=password", { email: emailAddress, password });
  if (!adopt(session)) throw new AuthError("the sign-in answer carried no session", 500);
}

/** Signs up; false when the account needs confirming first (Supabase with email confirmation). */
export async function signUp(emailAddress: string, password: string): Promise<boolean> {
  const session = await post("/signup", { email: emailAddress, password });
  return adopt(session);
}

/** Gets a new access token from the refresh token; false when there is no valid session. */
export function refresh(): Promise<boolean> {
  if (!refreshing) {
    refreshing = (async () => {
      try {
        if (config.mode === "local") {
          return adopt(await post("/token?grant_type=refresh_token", {}));
        }
        const stored = sessionStorage.getItem(SUPABASE_REFRESH);
        if (!stored) return false;
        return adopt(await post("/token?grant_type=refresh_token", { refresh_token: stored }));
      } catch (err) {
        if (err instanceof AuthError && err.network) throw err;
        forget();
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

function forget(): void {
  accessToken = null;
  window.clearTimeout(refreshTimer);
  if (config.mode === "supabase") sessionStorage.removeItem(SUPABASE_REFRESH);
}

export async function signOut(): Promise<void> {
  const bearer = accessToken;
  forget();
  if (bearer) {
    try {
      await post("/logout", {}, bearer);
    } catch {
      // signed out here either way; the cookie expires by itself
    }
  }
}
