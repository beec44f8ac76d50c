/**
 * Who may use the admin routes (register, unregister, load, unload, plugin registration): with an
 * admin key, whoever presents it; without one, clients on this machine only. The server listens on
 * loopback unless told otherwise, so that a fresh `axon serve` cannot be told by another host to
 * load a file from this one.
 */

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
