/**
 * A client for the OCI Distribution spec on undici: one keep-alive Agent per client (many
 * connections, for parallel blob transfers), retries with backoff and jitter on transient
 * failures, Basic and Bearer auth (see auth.ts), redirects for blobs (without the registry's
 * Authorization header when they leave its origin), ranged blob reads, and blob uploads
 * (cross-repository mount, POST + PUT, or chunked PATCH).
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { Agent, request, type Dispatcher } from "undici";
import { AxonError } from "../errors.js";
import { RegistryAuth, repoScope } from "./auth.js";
import type { CredentialProvider } from "./credentials.js";
import type { DirectFetcher, DirectFetchRequest, DirectFetchResult } from "../store/blob-store.js";
import { FILE_ERROR_CODES, nativeBlobFetch, nativeGet } from "./native-blob-fetch.js";
import {
  backoffDelay,
  describeNetworkError,
  header,
  isTransientNetworkError,
  parseLinkNext,
  parseRetryAfter,
  readBody,
  sleep,
  type Headers,
} from "./http.js";

export const MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const MEDIA_TYPE_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

const MANIFEST_ACCEPT = [MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_LIST].join(", ");
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024; // the limit distribution and most registries enforce
const MAX_JSON_BYTES = 16 * 1024 * 1024;
const DEFAULT_CHUNK = 64 * 1024 * 1024;
const DIGEST_RE = /^(sha256|sha512):([a-f0-9]+)$/;

export interface OciRegistryClientOptions {
  /** `http://127.0.0.1:5000`, `https://ghcr.io`, or a bare `host[:port]`. */
  url: string;
  credentials?: CredentialProvider;
  userAgent?: string;
  /** Retries after the first attempt for retryable failures (default 4). */
  retries?: number;
  /** Base of the exponential backoff (default 250 ms). */
  retryBaseMs?: number;
  /** Cap on any one wait, including a server's `Retry-After` (default 30 s). */
  maxRetryDelayMs?: number;
  /** Max parallel connections per origin (default 32). */
  connections?: number;
  /** Time to wait for response headers and between body chunks (default 60 s). */
  timeoutMs?: number;
  /** `n` for catalog and tag list pages (default 1000). */
  pageSize?: number;
  /** Use another dispatcher instead of the client's own Agent (then `close()` leaves it open). */
  dispatcher?: Dispatcher;
}

export interface ManifestResult {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface BlobStream {
  /** The undici response body (a Readable); iterate it for the bytes. */
  body: Readable & AsyncIterable<Uint8Array>;
  /** Where the body really starts: 0 when the server ignored the Range. */
  offset: number;
  /** The blob's total size when the server said it. */
  size: number | undefined;
}

export type BlobSource = AsyncIterable<Uint8Array> | NodeJS.ReadableStream;

export interface PushBlobOptions {
  /** Another repository of the same registry that may hold the blob (cross-repository mount). */
  mountFrom?: string;
  /** Blobs larger than this go up in PATCH chunks of this size (default 64 MiB). */
  chunkSize?: number;
  signal?: AbortSignal;
}

export type PushBlobResult = "exists" | "mounted" | "uploaded";

interface SendOptions {
  method: Dispatcher.HttpMethod;
  /** A path (`/v2/...`) on the registry, or an absolute URL (an upload Location). */
  target: string;
  scopes: string[];
  headers?: Record<string, string>;
  /** Called for each attempt, so a streamed body can be reopened. */
  body?: () => Dispatcher.DispatchOptions["body"];
  /** Retry transient failures here (idempotent requests only). */
  retry: boolean;
  /** Statuses handed back to the caller with their body unread. */
  ok: number[];
  followRedirects?: boolean;
  signal?: AbortSignal;
  /** What was asked for, for NOT_FOUND messages: `manifest org/name:1.0`. */
  what: string;
}

function sanitizePath(u: URL): string {
  return u.pathname; // never the query: upload URLs carry opaque state
}

function sameOrigin(a: URL, b: URL): boolean {
  return a.protocol === b.protocol && a.host === b.host;
}

function toBody(src: BlobSource | AsyncGenerator<Uint8Array>): Readable {
  if (src instanceof Readable) return src;
  const it = src as AsyncIterable<Uint8Array | string>;
  return Readable.from(
    (async function* () {
      for await (const c of it) yield typeof c === "string" ? Buffer.from(c) : c;
    })(),
    { objectMode: false },
  );
}

/** Pulls exact-length slices out of a byte stream, one PATCH chunk at a time. */
class ChunkReader {
  private readonly it: AsyncIterator<Uint8Array | string>;
  private pending: Uint8Array | undefined;

  constructor(src: BlobSource) {
    this.it = (src as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
  }

  async *take(n: number): AsyncGenerator<Uint8Array> {
    let left = n;
    while (left > 0) {
      let chunk = this.pending;
      this.pending = undefined;
      if (!chunk) {
        const r = await this.it.next();
        if (r.done) throw new AxonError("SIZE_MISMATCH", `blob source ended ${left} bytes early`, {});
        chunk = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
      }
      if (chunk.byteLength > left) {
        this.pending = chunk.subarray(left);
        chunk = chunk.subarray(0, left);
      }
      left -= chunk.byteLength;
      if (chunk.byteLength > 0) yield chunk;
    }
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

interface RegistryErrorJson {
  code?: string;
  message?: string;
}

function parseErrors(body: Buffer): RegistryErrorJson | undefined {
  try {
    const j = JSON.parse(body.toString("utf8")) as { errors?: RegistryErrorJson[] };
    const e = j?.errors?.[0];
    if (e && typeof e === "object") return { code: typeof e.code === "string" ? e.code : undefined, message: typeof e.message === "string" ? e.message : undefined };
  } catch {
    /* not JSON */
  }
  return undefined;
}

function oneLine(s: string, max = 300): string {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > max ? t.slice(0, max) + "…" : t;
}

export class OciRegistryClient {
  /** `http://host:port` or `https://host`, no trailing slash. */
  readonly baseUrl: string;
  /** `host[:port]`, as credentials are keyed. */
  readonly host: string;
  private readonly base: URL;
  private readonly dispatcher: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly auth: RegistryAuth;
  private readonly userAgent: string;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly maxDelayMs: number;
  private readonly pageSize: number;
  private readonly timeoutMs: number;
  /** Set when the registry redirected a blob: the native fetcher does not follow redirects. */
  private nativeOff = false;

  constructor(opts: OciRegistryClientOptions) {
    let raw = opts.url.trim().replace(/\/+$/, "");
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
      const hostname = raw.split("/")[0]!.replace(/:\d+$/, "").toLowerCase();
      const local = hostname === "localhost" || hostname === "127.0.0.1" || hostname === "[::1]" || hostname.endsWith(".localhost");
      raw = (local ? "http://" : "https://") + raw;
    }
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new AxonError("BAD_ARGUMENT", `invalid registry URL: ${opts.url}`, { url: opts.url });
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new AxonError("BAD_ARGUMENT", `registry URL must be http or https: ${opts.url}`, { url: opts.url });
    }
    this.base = new URL(u.origin);
    this.baseUrl = u.origin;
    this.host = u.host;
    this.userAgent = opts.userAgent ?? "axon/0.1 (mlos)";
    this.retries = Math.max(0, opts.retries ?? 4);
    this.retryBaseMs = Math.max(0, opts.retryBaseMs ?? 250);
    this.maxDelayMs = opts.maxRetryDelayMs ?? 30_000;
    this.pageSize = Math.max(1, Math.floor(opts.pageSize ?? 1000));
    const timeout = opts.timeoutMs ?? 60_000;
    this.timeoutMs = timeout;
    if (opts.dispatcher) {
      this.dispatcher = opts.dispatcher;
      this.ownsDispatcher = false;
    } else {
      this.dispatcher = new Agent({
        connections: opts.connections ?? 32,
        pipelining: 1,
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 10 * 60_000,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        connect: { timeout: Math.min(timeout, 30_000) },
      });
      this.ownsDispatcher = true;
    }
    this.auth = new RegistryAuth({
      host: this.host,
      credentials: opts.credentials,
      dispatcher: this.dispatcher,
      userAgent: this.userAgent,
      retries: this.retries,
      retryBaseMs: this.retryBaseMs,
    });
  }

  /** Closes the client's connections. */
  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  // ---------------------------------------------------------------- reads

  async ping(): Promise<void> {
    const res = await this.send({ method: "GET", target: "/v2/", scopes: [], retry: true, ok: [200], what: "registry API /v2/" });
    await res.body.dump();
  }

  async catalog(): Promise<string[]> {
    return this.paginate(`/v2/_catalog?n=${this.pageSize}`, ["registry:catalog:*"], "repositories", `catalog of ${this.host}`);
  }

  async listTags(repo: string): Promise<string[]> {
    return this.paginate(`/v2/${repo}/tags/list?n=${this.pageSize}`, [repoScope(repo)], "tags", `repository ${repo}`);
  }

  private async paginate(first: string, scopes: string[], field: "repositories" | "tags", what: string): Promise<string[]> {
    const out: string[] = [];
    let target: string | undefined = first;
    for (let page = 0; target && page < 10_000; page++) {
      const res = await this.send({ method: "GET", target, scopes, retry: true, ok: [200], what });
      const buf = await this.readOrRetryable(res, MAX_JSON_BYTES, target);
      let json: Record<string, unknown>;
      try {
        json = JSON.parse(buf.toString("utf8"));
      } catch {
        throw new AxonError("REGISTRY_ERROR", `registry ${this.host} sent invalid JSON for ${what}`, { host: this.host, what });
      }
      const list = json[field];
      if (Array.isArray(list)) for (const x of list) if (typeof x === "string") out.push(x);
      const next = parseLinkNext(header(res.headers, "link"));
      target = next ? new URL(next, this.base).toString() : undefined;
      if (next && (!Array.isArray(list) || list.length === 0)) break; // guard against a server looping
    }
    return out;
  }

  async getManifest(repo: string, reference: string): Promise<ManifestResult> {
    const byDigest = DIGEST_RE.test(reference);
    const what = `manifest ${repo}${byDigest ? "@" : ":"}${reference}`;
    const path = `/v2/${repo}/manifests/${reference}`;
    for (let attempt = 0; ; attempt++) {
      const res = await this.send({
        method: "GET",
        target: path,
        scopes: [repoScope(repo)],
        headers: { accept: MANIFEST_ACCEPT },
        retry: true,
        ok: [200],
        what,
      });
      let bytes: Buffer;
      try {
        bytes = await readBody(res.body, MAX_MANIFEST_BYTES);
      } catch (e) {
        if (e instanceof RangeError) {
          throw new AxonError("REGISTRY_ERROR", `${what} on ${this.host} is larger than ${MAX_MANIFEST_BYTES} bytes`, { host: this.host });
        }
        if (isTransientNetworkError(e) && attempt < this.retries) {
          await sleep(backoffDelay(attempt, this.retryBaseMs, this.maxDelayMs));
          continue;
        }
        throw this.networkError(e, path);
      }
      const headerDigest = header(res.headers, "docker-content-digest")?.trim();
      const expected = byDigest ? reference : headerDigest && DIGEST_RE.test(headerDigest) ? headerDigest : undefined;
      const algo = expected ? expected.split(":")[0]! : "sha256";
      const digest = `${algo}:${createHash(algo).update(bytes).digest("hex")}`;
      if (expected && expected !== digest) {
        throw new AxonError("DIGEST_MISMATCH", `${what} from ${this.host} hashes to ${digest}, not ${expected}`, {
          host: this.host,
          expected,
          actual: digest,
        });
      }
      let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
      try {
        json = JSON.parse(bytes.toString("utf8"));
      } catch {
        throw new AxonError("REGISTRY_ERROR", `${what} from ${this.host} is not valid JSON`, { host: this.host });
      }
      const ct = header(res.headers, "content-type")?.split(";")[0]?.trim();
      const mediaType =
        typeof json?.mediaType === "string" && json.mediaType ? json.mediaType : ct && ct !== "application/json" && ct !== "text/plain" ? ct : MEDIA_TYPE_OCI_MANIFEST;
      return { bytes, digest, mediaType, json };
    }
  }

  async headBlob(repo: string, digest: string, scopes: string[] = [repoScope(repo)]): Promise<{ size: number } | null> {
    const res = await this.send({
      method: "HEAD",
      target: `/v2/${repo}/blobs/${digest}`,
      scopes,
      retry: true,
      ok: [200, 404],
      followRedirects: true,
      what: `blob ${repo}@${digest}`,
    });
    await res.body.dump();
    if (res.statusCode === 404) return null;
    const len = Number(header(res.headers, "content-length"));
    return { size: Number.isFinite(len) ? len : -1 };
  }

  async openBlob(repo: string, digest: string, offset = 0, signal?: AbortSignal): Promise<BlobStream> {
    const headers: Record<string, string> = {};
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.send({
      method: "GET",
      target: `/v2/${repo}/blobs/${digest}`,
      scopes: [repoScope(repo)],
      headers,
      retry: true,
      ok: [200, 206, 416],
      followRedirects: true,
      signal,
      what: `blob ${repo}@${digest}`,
    });
    const len = header(res.headers, "content-length");
    const body = res.body as unknown as Readable & AsyncIterable<Uint8Array>;
    if (res.statusCode === 200) {
      return { body, offset: 0, size: len !== undefined && /^\d+$/.test(len) ? Number(len) : undefined };
    }
    const cr = header(res.headers, "content-range");
    if (res.statusCode === 416) {
      // Nothing past `offset`: the blob is exactly that long (or shorter, which the caller's size check catches).
      // distribution 2.8 sends `Content-Length: <blob size>` with an empty 416 body: never wait for it.
      res.body.destroy();
      const total = cr ? /\/(\d+)\s*$/.exec(cr)?.[1] : undefined;
      return { body: Readable.from([]) as Readable & AsyncIterable<Uint8Array>, offset, size: total ? Number(total) : undefined };
    }
    const m = cr ? /^bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(cr) : null;
    if (!m) {
      res.body.destroy();
      throw new AxonError("REGISTRY_ERROR", `registry ${this.host} sent a partial response without a valid Content-Range for blob ${repo}@${digest}`, {
        host: this.host,
      });
    }
    return { body, offset: Number(m[1]), size: m[3] === "*" ? undefined : Number(m[3]) };
  }

  /**
   * A {@link DirectFetcher} for one blob: the native fetcher (native-blob-fetch.ts) GETs it
   * straight into the partial file, with this client's auth (a 401 runs the usual challenge flow
   * and the request is repeated with the header it yields), retries of 5xx and 429 and the same
   * errors as openBlob. Undefined when it does not apply: an https registry, a dispatcher of the
   * caller's, no native fetcher, or `MLOS_NATIVE_FETCH=0`. On a redirect it steps aside (resolves
   * undefined, and is not offered again by this client): the JS path follows redirects.
   */
  directBlobFetcher(repo: string, digest: string): DirectFetcher | undefined {
    if (this.base.protocol !== "http:" || !this.ownsDispatcher || this.nativeOff || !nativeBlobFetch()) return undefined;
    return (req) => this.fetchBlobNative(repo, digest, req);
  }

  private async fetchBlobNative(repo: string, digest: string, req: DirectFetchRequest): Promise<DirectFetchResult | undefined> {
    const scopes = [repoScope(repo)];
    const path = `/v2/${repo}/blobs/${digest}`;
    const what = `blob ${repo}@${digest}`;
    let authHeader = await this.auth.headerFor(scopes);
    let fresh = false;
    let authRounds = 0;
    for (let attempt = 0; ; ) {
      const headers: Record<string, string> = { "user-agent": this.userAgent };
      if (authHeader) headers.authorization = authHeader;
      const r = await nativeGet({
        host: this.base.hostname.replace(/^\[(.*)\]$/, "$1"),
        port: Number(this.base.port || 80),
        path,
        headers,
        file: req.file,
        offset: req.offset,
        expectedSize: req.size,
        stallTimeoutMs: this.timeoutMs,
        connectTimeoutMs: Math.min(this.timeoutMs, 30_000),
        signal: req.signal,
        onLength: req.onLength,
      });
      const st = r.status;
      if (r.complete && (st === 200 || st === 206 || st === 416)) return { size: r.bytes, digest: `sha256:${r.sha256}`, transferred: r.received };
      if (r.code) {
        if (r.code === "ECANCELED") throw req.signal?.reason ?? Object.assign(new Error("the download was aborted"), { name: "AbortError" });
        if (r.code === "ETOOLONG") {
          throw new AxonError("SIZE_MISMATCH", `received more than the expected ${req.size} bytes for ${digest}`, { digest, expected: req.size });
        }
        if (r.code === "EPROTO") throw new AxonError("REGISTRY_ERROR", `registry ${this.host} sent an invalid response for ${what}: ${r.message}`, { host: this.host, path });
        // The blob store retries the rest (resets, truncations, stalls) from what reached the file,
        // and turns a full disk into DISK_FULL; `transferred` counts what did arrive.
        const e = Object.assign(new Error(`${r.message ?? r.code} (${this.host}, ${path})`), { code: r.code, errno: r.errno, transferred: r.received });
        if (st === 0 && !FILE_ERROR_CODES.has(r.code)) {
          // No answer at all: retried here like any request (send), then a NETWORK error.
          const transient = isTransientNetworkError(e);
          if (transient && attempt < this.retries) {
            await sleep(this.delayFor(attempt++), req.signal);
            continue;
          }
          throw this.networkError(e, path, transient);
        }
        throw e;
      }
      if (st >= 300 && st < 400) {
        this.nativeOff = true;
        return undefined;
      }
      if (st === 401 && authRounds < 2 && !fresh) {
        if (authHeader) this.auth.invalidate(scopes);
        authHeader = await this.auth.respond(r.headers["www-authenticate"], scopes);
        fresh = true;
        authRounds++;
        continue;
      }
      if ((st === 429 || st >= 500) && attempt < this.retries) {
        await sleep(this.delayFor(attempt++, parseRetryAfter(header(r.headers, "retry-after"))), req.signal);
        continue;
      }
      if (st === 200 || st === 206 || st === 416) {
        throw new AxonError("REGISTRY_ERROR", `registry ${this.host} sent an incomplete answer for ${what}`, { host: this.host, path });
      }
      throw await this.statusError({ what, method: "GET" }, st, r.headers, r.errorBody, path);
    }
  }

  // ---------------------------------------------------------------- writes

  async pushBlob(repo: string, digest: string, size: number, open: () => BlobSource, opts: PushBlobOptions = {}): Promise<PushBlobResult> {
    if (!DIGEST_RE.test(digest)) throw new AxonError("BAD_ARGUMENT", `invalid blob digest: ${digest}`, { digest });
    const pushScopes = [repoScope(repo, true)];
    if (await this.headBlob(repo, digest, pushScopes)) return "exists";
    const chunkSize = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.uploadOnce(repo, digest, size, open, opts.mountFrom, chunkSize, opts.signal);
      } catch (e) {
        // Upload sessions cannot be resumed reliably across registries: start over with a new one.
        if (e instanceof AxonError && e.details.retryable === true && attempt < this.retries) {
          await sleep(this.delayFor(attempt, e.details.retryAfterMs as number | undefined), opts.signal);
          continue;
        }
        throw e;
      }
    }
  }

  private async uploadOnce(
    repo: string,
    digest: string,
    size: number,
    open: () => BlobSource,
    mountFrom: string | undefined,
    chunkSize: number,
    signal: AbortSignal | undefined,
  ): Promise<PushBlobResult> {
    const what = `blob upload ${repo}@${digest}`;
    let location: string;
    if (mountFrom && mountFrom !== repo) {
      const q = new URLSearchParams({ mount: digest, from: mountFrom });
      const res = await this.send({
        method: "POST",
        target: `/v2/${repo}/blobs/uploads/?${q}`,
        scopes: [repoScope(repo, true), repoScope(mountFrom)],
        headers: { "content-length": "0" },
        retry: false,
        ok: [201, 202],
        signal,
        what,
      });
      await res.body.dump();
      if (res.statusCode === 201) return "mounted";
      location = this.location(res, what);
    } else {
      const res = await this.send({
        method: "POST",
        target: `/v2/${repo}/blobs/uploads/`,
        scopes: [repoScope(repo, true)],
        headers: { "content-length": "0" },
        retry: false,
        ok: [202],
        signal,
        what,
      });
      await res.body.dump();
      location = this.location(res, what);
    }

    if (size <= chunkSize) {
      const url = new URL(location);
      url.searchParams.set("digest", digest);
      const res = await this.send({
        method: "PUT",
        target: url.toString(),
        scopes: [repoScope(repo, true)],
        headers: { "content-type": "application/octet-stream", "content-length": String(size) },
        body: () => toBody(open()),
        retry: false,
        ok: [201],
        signal,
        what,
      });
      await res.body.dump();
      return "uploaded";
    }

    const reader = new ChunkReader(open());
    try {
      let offset = 0;
      while (offset < size) {
        const len = Math.min(chunkSize, size - offset);
        let used = false;
        const res = await this.send({
          method: "PATCH",
          target: location,
          scopes: [repoScope(repo, true)],
          headers: {
            "content-type": "application/octet-stream",
            "content-length": String(len),
            "content-range": `${offset}-${offset + len - 1}`,
          },
          body: () => {
            if (used) throw new AxonError("REGISTRY_ERROR", `${what}: a chunk cannot be sent twice`, { retryable: true });
            used = true;
            return toBody(reader.take(len));
          },
          retry: false,
          ok: [202, 204],
          signal,
          what,
        });
        await res.body.dump();
        location = this.location(res, what);
        offset += len;
      }
    } finally {
      await reader.close().catch(() => undefined);
    }
    const url = new URL(location);
    url.searchParams.set("digest", digest);
    const res = await this.send({
      method: "PUT",
      target: url.toString(),
      scopes: [repoScope(repo, true)],
      headers: { "content-length": "0" },
      retry: false,
      ok: [201],
      signal,
      what,
    });
    await res.body.dump();
    return "uploaded";
  }

  async pushManifest(repo: string, reference: string, bytes: Buffer | Uint8Array, mediaType: string): Promise<string> {
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const byDigest = DIGEST_RE.test(reference);
    const algo = byDigest ? reference.split(":")[0]! : "sha256";
    const digest = `${algo}:${createHash(algo).update(buf).digest("hex")}`;
    if (byDigest && digest !== reference) {
      throw new AxonError("DIGEST_MISMATCH", `manifest bytes hash to ${digest}, not ${reference}`, { expected: reference, actual: digest });
    }
    const res = await this.send({
      method: "PUT",
      target: `/v2/${repo}/manifests/${reference}`,
      scopes: [repoScope(repo, true)],
      headers: { "content-type": mediaType, "content-length": String(buf.byteLength) },
      body: () => buf,
      retry: true,
      ok: [200, 201, 202],
      what: `manifest ${repo}${byDigest ? "@" : ":"}${reference}`,
    });
    await res.body.dump();
    return digest;
  }

  // ---------------------------------------------------------------- plumbing

  private location(res: Dispatcher.ResponseData, what: string): string {
    const loc = header(res.headers, "location");
    if (!loc) throw new AxonError("REGISTRY_ERROR", `registry ${this.host} sent no Location for ${what}`, { host: this.host });
    return new URL(loc, this.base).toString();
  }

  private delayFor(attempt: number, retryAfterMs?: number): number {
    const b = backoffDelay(attempt, this.retryBaseMs, this.maxDelayMs);
    return retryAfterMs !== undefined ? Math.min(this.maxDelayMs, Math.max(b, retryAfterMs)) : b;
  }

  private networkError(e: unknown, path: string, retryable = false): AxonError {
    return new AxonError("NETWORK", `network error talking to ${this.host} (${path}): ${oneLine(describeNetworkError(e), 200)}`, {
      host: this.host,
      path,
      retryable,
    }, { cause: e });
  }

  /** Reads a successful JSON response; a body cut short is a NETWORK error. */
  private async readOrRetryable(res: Dispatcher.ResponseData, limit: number, target: string): Promise<Buffer> {
    try {
      return await readBody(res.body, limit);
    } catch (e) {
      if (e instanceof RangeError) throw new AxonError("REGISTRY_ERROR", `response from ${this.host} is too large`, { host: this.host });
      throw this.networkError(e, new URL(target, this.base).pathname);
    }
  }

  /** One request with auth, redirects and retries; returns responses whose status is in `ok`. */
  private async send(o: SendOptions): Promise<Dispatcher.ResponseData> {
    const url = new URL(o.target, this.base);
    const path = sanitizePath(url);
    let authHeader = await this.auth.headerFor(o.scopes);
    let fresh = false; // authHeader came from answering a challenge just now
    let authRounds = 0;
    for (let attempt = 0; ; ) {
      let res: Dispatcher.ResponseData;
      let foreign = false;
      try {
        ({ res, foreign } = await this.dispatch(o, url, authHeader));
      } catch (e) {
        if (e instanceof AxonError) throw e;
        if (o.signal?.aborted) throw e;
        if (isTransientNetworkError(e)) {
          if (o.retry && attempt < this.retries) {
            await sleep(this.delayFor(attempt++), o.signal);
            continue;
          }
          throw this.networkError(e, path, true);
        }
        throw this.networkError(e, path, false);
      }
      const st = res.statusCode;
      if (o.ok.includes(st)) return res;

      if (st === 401 && !foreign && authRounds < 2 && !fresh) {
        await res.body.dump().catch(() => undefined);
        if (authHeader) this.auth.invalidate(o.scopes);
        authHeader = await this.auth.respond(res.headers["www-authenticate"], o.scopes);
        fresh = true;
        authRounds++;
        continue;
      }
      const body = await readBody(res.body, 64 * 1024).catch(() => Buffer.alloc(0));
      if ((st === 429 || st >= 500) && o.retry && attempt < this.retries) {
        await sleep(this.delayFor(attempt++, parseRetryAfter(header(res.headers, "retry-after"))), o.signal);
        continue;
      }
      throw await this.statusError(o, st, res.headers, body, path);
    }
  }

  /** The error for a final answer that is not OK (after any retries), from its status and body. */
  private async statusError(o: Pick<SendOptions, "what" | "method">, st: number, headers: Headers, body: Buffer, path: string): Promise<AxonError> {
    const err = parseErrors(body);
    const detail = err?.message ? `: ${oneLine(err.message, 200)}` : "";
    const details: Record<string, unknown> = { host: this.host, status: st, path, registryCode: err?.code };
    if (st === 401 || st === 403) {
      const why = st === 403 ? "denied access" : (await this.auth.hasCredentials()) ? "rejected the credentials" : "requires authentication";
      return new AxonError("REGISTRY_AUTH", `registry ${this.host} ${why} for ${o.what} (HTTP ${st}); run \`axon registry login ${this.host}\``, details);
    }
    if (st === 404) {
      return new AxonError("NOT_FOUND", `${o.what} not found on ${this.host}`, details);
    }
    if (st === 429 || st >= 500) {
      details.retryable = true;
      details.retryAfterMs = parseRetryAfter(header(headers, "retry-after"));
      if (st === 429) {
        return new AxonError("REGISTRY_RATE_LIMIT", `registry ${this.host} is rate-limiting requests (HTTP 429 on ${o.method} ${path})${detail}`, details);
      }
      return new AxonError("REGISTRY_ERROR", `registry ${this.host} failed with HTTP ${st} on ${o.method} ${path}${detail}`, details);
    }
    if (st === 400 && err?.code === "DIGEST_INVALID") {
      return new AxonError("DIGEST_MISMATCH", `registry ${this.host} says the uploaded bytes do not match for ${o.what}${detail}`, details);
    }
    if (st === 400 && err?.code === "SIZE_INVALID") {
      return new AxonError("SIZE_MISMATCH", `registry ${this.host} says the uploaded size is wrong for ${o.what}${detail}`, details);
    }
    if (st === 400 && (err?.code === "MANIFEST_BLOB_UNKNOWN" || err?.code === "BLOB_UNKNOWN")) {
      return new AxonError("NOT_FOUND", `registry ${this.host} does not have a blob that ${o.what} references${detail}`, details);
    }
    return new AxonError("REGISTRY_ERROR", `registry ${this.host} answered HTTP ${st} on ${o.method} ${path}${detail}`, details);
  }

  /** Sends once, following redirects (up to 5) when asked; drops Authorization off-origin. */
  private async dispatch(o: SendOptions, start: URL, authHeader: string | undefined): Promise<{ res: Dispatcher.ResponseData; foreign: boolean }> {
    let url = start;
    let method = o.method;
    for (let hop = 0; ; hop++) {
      const foreign = !sameOrigin(url, this.base);
      const headers: Record<string, string> = { "user-agent": this.userAgent, ...o.headers };
      if (authHeader && !foreign) headers.authorization = authHeader;
      const res = await request(url, {
        method,
        headers,
        body: hop === 0 ? (o.body ? o.body() : undefined) : undefined,
        dispatcher: this.dispatcher,
        signal: o.signal,
      });
      const st = res.statusCode;
      const loc = header(res.headers, "location");
      const isRedirect = st === 301 || st === 302 || st === 303 || st === 307 || st === 308;
      if (!o.followRedirects || !isRedirect || !loc) return { res, foreign };
      await res.body.dump().catch(() => undefined);
      if (hop >= 5) {
        throw new AxonError("REGISTRY_ERROR", `too many redirects from ${this.host} for ${o.what}`, { host: this.host });
      }
      if (o.body && method !== "GET" && method !== "HEAD") {
        throw new AxonError("REGISTRY_ERROR", `registry ${this.host} redirected an upload for ${o.what}`, { host: this.host });
      }
      const next = new URL(loc, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new AxonError("REGISTRY_ERROR", `registry ${this.host} redirected to an unsupported URL for ${o.what}`, { host: this.host });
      }
      if (st === 303 && method !== "HEAD") method = "GET";
      url = next;
    }
  }
}
