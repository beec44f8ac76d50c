/**
 * The native download path for plain-HTTP registries: one GET whose body goes straight from the
 * socket into the partial file, hashed with SHA-256 and written on two native threads
 * (native/src/fetch/blob_fetch.h), so the bytes never pass through JavaScript. Receiving 1 GiB in Node
 * alone costs about as much CPU as the whole transfer should take; this leaves the JS thread idle.
 *
 * It is used when the addon was built with the fetcher, the process's OpenSSL offers SHA-256, and
 * `MLOS_NATIVE_FETCH` is not `0`. Everything it does not do (HTTPS, redirects, proxies, a caller's
 * own undici dispatcher) stays on the JS path; see OciRegistryClient.directBlobFetcher.
 */
import { tryLoadNative, type NativeBlobFetchConstructor, type NativeBlobFetchResult } from "../../../bindings/native.js";

let ctor: NativeBlobFetchConstructor | null | undefined;

/** The native fetcher, or undefined when it is off or missing. */
export function nativeBlobFetch(): NativeBlobFetchConstructor | undefined {
  if (process.env.MLOS_NATIVE_FETCH === "0") return undefined;
  if (ctor === undefined) ctor = tryLoadNative()?.BlobFetch ?? null;
  return ctor ?? undefined;
}

export interface NativeGetRequest {
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  file: string;
  offset: number;
  expectedSize?: number;
  stallTimeoutMs: number;
  connectTimeoutMs: number;
  signal?: AbortSignal;
  /** The file's length as bytes are written. */
  onLength?: (bytes: number) => void;
}

/** Runs one native GET into `file`; resolves with what happened (it never rejects for HTTP or network failures). */
export async function nativeGet(req: NativeGetRequest): Promise<NativeBlobFetchResult> {
  const BlobFetch = nativeBlobFetch();
  if (!BlobFetch) throw new Error("the native blob fetcher is not available");
  const fetch = new BlobFetch({
    host: req.host,
    port: req.port,
    path: req.path,
    headers: req.headers,
    file: req.file,
    offset: req.offset,
    expectedSize: req.expectedSize,
    stallTimeoutMs: req.stallTimeoutMs,
    connectTimeoutMs: req.connectTimeoutMs,
  });
  const onAbort = (): void => fetch.abort();
  if (req.signal?.aborted) fetch.abort();
  req.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return await fetch.start(req.onLength);
  } finally {
    req.signal?.removeEventListener("abort", onAbort);
  }
}

/** Result codes that mean the file could not be written (fsError turns ENOSPC/EDQUOT into DISK_FULL). */
export const FILE_ERROR_CODES = new Set(["ENOSPC", "EDQUOT", "EIO", "ENOENT", "EACCES", "EROFS", "EISDIR"]);
