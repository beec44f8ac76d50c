/**
 * Who may use the admin routes (register, unregister, load, unload, plugin registration): with an
 * admin key, whoever presents it; without one, clients on this machine only. The server listens on
 * loopback unless told otherwise, so that a fresh `axon serve` cannot be told by another host to
 * load a file from this one.
 */
import { HttpError } from "./http-error.js";

/** Where the server listens unless told otherwise: this machine only. */
export const DEFAULT_HOST = "127.0.0.1";

/** The routes the policy covers, for messages. */
export const ADMIN_ROUTES = "register, unregister, load, unload, plugins/register";

/** The line the server prints at start to say what it does. */
export function adminPolicy(host: string, hasAdminKey: boolean): string {
  if (hasAdminKey) return `admin routes (${ADMIN_ROUTES}) need the admin key`;
  if (isLoopback(host)) return `listening on this machine only; admin routes (${ADMIN_ROUTES}) are open to its clients (set --host to listen elsewhere)`;
  return `listening beyond this machine: admin routes (${ADMIN_ROUTES}) answer clients on this machine only (set --admin-key to allow others with the key)`;
}

/**
 * Whether an address is this machine's loopback: dotted IPv4 (127/8), IPv6 `::1` in any spelling
 * (compressed or with eight full groups), an IPv4-mapped `::ffff:127.x.y.z`, or `localhost`.
 */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  if (a.startsWith("127.") || a === "localhost") return true;
  if (!a.includes(":")) return false;
  const g = ipv6Groups(a);
  if (!g) return false;
  const zeros = (n: number) => g.slice(0, n).every((x) => x === 0);
  return (zeros(7) && g[7] === 1) || (zeros(5) && g[5] === 0xffff && g[6]! >> 8 === 127);
}

/** The eight 16-bit groups of an IPv6 address (with `::` and a dotted IPv4 tail), or undefined. */
function ipv6Groups(text: string): number[] | undefined {
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) text = `${text.slice(0, v4.index)}${((+v4[1]! << 8) | +v4[2]!).toString(16)}:${((+v4[3]! << 8) | +v4[4]!).toString(16)}`;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  if (fill < 0 || (halves.length === 1 && head.length !== 8)) return undefined;
  const groups = [...head, ...Array<string>(fill).fill("0"), ...tail].map((x) => (/^[0-9a-f]{1,4}$/.test(x) ? parseInt(x, 16) : NaN));
  return groups.length === 8 && groups.every((x) => Number.isInteger(x)) ? groups : undefined;
}

/** Who may call: `open` (anyone), `api` (the API key, when set), `admin` (see the module's comment). */
export type Access = "open" | "api" | "admin";

/** One request as the policy sees it, whichever door it came through. */
export interface CallerInfo {
  /** What was called, for messages: `POST /v2/repository/models/m/unload`, `inference.GRPCInferenceService/RepositoryModelUnload`. */
  what: string;
  /** "route" or "call", for messages. */
  kind: "route" | "call";
  /** The `authorization` header or metadata value as sent. */
  authorization: string | undefined;
  /** Where the caller's credentials go, for the message when they are missing. */
  credentialHint: string;
  /** The peer's address (asked only for an admin request without an admin key). */
  peerAddress: () => string;
}

/**
 * The one authorization check every door runs: throws the 401/403 HttpError a caller without the
 * right key (or, for admin requests without an admin key, from another host) gets.
 */
export function authorize(access: Access, keys: { apiKey?: string; adminKey?: string }, caller: CallerInfo): void {
  if (access === "open") return;
  const admin = access === "admin";
  const { apiKey, adminKey } = keys;
  if (admin && adminKey === undefined && !isLoopback(caller.peerAddress())) {
    throw new HttpError(403, "ADMIN_LOCAL_ONLY", `${caller.what} is an admin ${caller.kind} (${ADMIN_ROUTES}): without an admin key (--admin-key) the server answers it for clients on this machine only`);
  }
  const key = admin ? (adminKey ?? apiKey) : apiKey;
  if (!key) return;
  const auth = caller.authorization ?? "";
  const given = auth.startsWith("Bearer ") ? auth.slice(7) : undefined;
  if (given === undefined) throw new HttpError(401, "UNAUTHORIZED", `this ${caller.kind} needs ${caller.credentialHint}`, { "WWW-Authenticate": 'Bearer realm="mlos"' });
  const ok = given === key || (!admin && adminKey !== undefined && given === adminKey);
  if (!ok) throw new HttpError(admin ? 403 : 401, admin ? "FORBIDDEN" : "UNAUTHORIZED", admin ? `this ${caller.kind} needs the admin key` : "the API key is not valid");
}
