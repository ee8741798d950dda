// The GatewayService client (Connect protocol, same origin) with the session's bearer token, and the
// rules every page follows: a network failure shows the "not reachable" banner; UNAUTHENTICATED gets one
// refresh of the session and one retry, then sends the user to sign in (their draft prompt is kept).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { GatewayService } from "./gen/zehanx/gateway/v1/gateway_service_pb.js";
import { AuthError, refresh, token } from "./auth.js";

const withBearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

export const api = createClient(
  GatewayService,
  createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [withBearer] }),
);

let onSessionLost: () => void = () => {};
export function whenSessionLost(handler: () => void): void {
  onSessionLost = handler;
}
/** Sends the user to sign in (their draft prompt stays in sessionStorage). */
export function signalSessionLost(): void {
  onSessionLost();
}

/** Whether an error means the gateway could not be reached at all (not an answer from it). */
export function isNetworkError(err: unknown): boolean {
  if (err instanceof AuthError) return err.network;
  if (!(err instanceof ConnectError)) return err instanceof TypeError;
  if (err.cause instanceof TypeError) return true;
  return (
    (err.code === Code.Unknown || err.code === Code.Unavailable) &&
    /failed to fetch|networkerror|load failed|network error/i.test(err.rawMessage)
  );
}

export function setReachable(ok: boolean): void {
  const banner = document.getElementById("banner");
  if (banner) banner.hidden = ok;
}

export class SessionLost extends Error {}

/** Runs an API call with the banner and session rules above. */
export async function call<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await fn();
      setReachable(true);
      return result;
    } catch (err) {
      if (isNetworkError(err)) setReachable(false);
      else setReachable(true);
      if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
        if (attempt === 0 && (await refresh())) continue;
        onSessionLost();
        throw new SessionLost("your session ended: sign in again");
      }
      throw err;
    }
  }
}

/** The message to show for a failed call. */
export function errorText(err: unknown): string {
  if (isNetworkError(err)) return "The gateway is not reachable.";
  if (err instanceof ConnectError) {
    const code = Code[err.code] ?? String(err.code);
    const name = code.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
    return `${name}: ${err.rawMessage}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
