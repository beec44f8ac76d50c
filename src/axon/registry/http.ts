/**
 * Small HTTP helpers shared by the registry client and the auth flow: backoff with jitter,
 * Retry-After parsing, classification of transient network errors, bounded body reads and
 * `Link` header pagination.
 */
import type { Readable } from "node:stream";

export type Headers = Record<string, string | string[] | undefined>;

/** First value of a response header (undici gives lower-cased names). */
export function header(headers: Headers, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  if (Array.isArray(v)) return v[0];
  return v ?? undefined;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason ?? new Error("aborted"));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason ?? new Error("aborted"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Exponential backoff with "equal jitter": half of the exponential step is fixed, half random, so
 * that parallel clients spread out but never retry immediately. `attempt` starts at 0.
 */
export function backoffDelay(attempt: number, baseMs: number, maxMs = 10_000): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return step / 2 + Math.random() * (step / 2);
}

/** `Retry-After` as milliseconds (seconds or an HTTP date), or undefined when absent/invalid. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (v === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}

const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
]);

/** True for errors worth retrying: resets, refusals, socket closes and timeouts. */
export function isTransientNetworkError(e: unknown): boolean {
  let cur: unknown = e;
  for (let depth = 0; cur && depth < 5; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === "string" && TRANSIENT_CODES.has(code)) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

/** A short description of a network error: its code and message, one line. */
export function describeNetworkError(e: unknown): string {
  const code = (e as { code?: unknown } | undefined)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  const cause = (e as { cause?: { code?: unknown } } | undefined)?.cause;
  const causeCode = cause && typeof cause.code === "string" ? cause.code : undefined;
  const parts = [typeof code === "string" ? code : undefined, causeCode, msg].filter(Boolean);
  return [...new Set(parts)].join(": ").replace(/\s+/g, " ");
}

/** Reads a body into memory, refusing (and destroying the stream) past `limit` bytes. */
export async function readBody(body: AsyncIterable<Uint8Array> & Partial<Pick<Readable, "destroy">>, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.byteLength;
    if (total > limit) {
      body.destroy?.();
      throw new RangeError(`response body larger than ${limit} bytes`);
    }
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  }
  return Buffer.concat(chunks, total);
}

/** The target of `rel="next"` in a `Link` header, if any. */
export function parseLinkNext(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const part of link.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*(.*)$/.exec(part);
    if (!m) continue;
    const params = m[2] ?? "";
    if (/(^|;)\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)/i.test(params)) return m[1];
  }
  return undefined;
}
