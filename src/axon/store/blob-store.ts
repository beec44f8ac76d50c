import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, copyFile, mkdir, open, readdir, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { AxonError, fsError } from "../errors.js";
import { AxonPaths, hexOf } from "../paths.js";
import { withLock } from "../util/locks.js";
import { randomId } from "../util/fs.js";

/** Opens the bytes of a blob from `offset`; `offset` in the result says where the body really starts (0 when Range was ignored). */
export type BlobOpener = (offset: number, signal?: AbortSignal) => Promise<{ body: AsyncIterable<Uint8Array>; offset: number }>;

/**
 * Downloads a blob straight into `file` (the partial), hashing what it writes, outside JavaScript:
 * the native fetcher for plain-HTTP registries (OciRegistryClient.directBlobFetcher). Resolves
 * undefined when it cannot serve this blob (a redirect, say); `open` is then used. It throws what
 * `open` and reading the body would: AxonErrors are final; other errors (resets, truncations,
 * stalls) are retried from what reached the file, ENOSPC/EDQUOT are DISK_FULL. A thrown error may
 * carry `transferred`, the bytes that did arrive.
 */
export type DirectFetcher = (req: DirectFetchRequest) => Promise<DirectFetchResult | undefined>;

export interface DirectFetchRequest {
  file: string;
  /** Bytes of `file` to keep (hashed by the fetcher); the rest is asked for from there. */
  offset: number;
  /** Expected total size, when known: more is an error. */
  size?: number;
  signal?: AbortSignal;
  /** The file's length as bytes are written (back to 0 when the server restarts the blob). */
  onLength: (bytes: number) => void;
}

export interface DirectFetchResult {
  /** Length of the file now, and the sha256 of all of it. */
  size: number;
  digest: string;
  /** Body bytes that came over the network. */
  transferred: number;
}

export interface FetchBlobOptions {
  /** Expected `sha256:<hex>`; when absent (a Hugging Face file without LFS metadata) the blob is hashed and named after the fact. */
  digest?: string;
  /** Expected size in bytes, when known. */
  size?: number;
  /** Names the partial file (for resume) when the digest is not known in advance, e.g. a URL. */
  key?: string;
  open: BlobOpener;
  /** Tried before `open` when present (see {@link DirectFetcher}). */
  direct?: DirectFetcher;
  /** Called with the number of new bytes each time some arrive (and with negative numbers when a restart discards some). */
  onBytes?: (delta: number) => void;
  signal?: AbortSignal;
  /** Attempts after a connection reset or truncated body before giving up. */
  retries?: number;
  retryBaseMs?: number;
}

export interface FetchBlobResult {
  digest: string;
  size: number;
  /** Bytes that came over the network in this call (0 when the blob was already cached). */
  transferred: number;
  /** Bytes taken from an earlier interrupted download. */
  resumed: number;
}

export interface BlobInfo {
  digest: string;
  size: number;
  /** Last modification (blob written) in ms since the epoch. */
  mtimeMs: number;
}

const WRITE_CHUNK = 4 << 20;

/**
 * The content-addressed cache: `store/blobs/sha256/<hex>`, shared by every model and version, so
 * identical files are stored once. Every byte that enters is hashed while it streams in (no second
 * read); a blob appears under its digest only after it verified (temp file, then rename), and is
 * made read-only because installed views hard-link to it.
 */
export class BlobStore {
  readonly #paths: AxonPaths;
  readonly #inflight = new Map<string, Promise<FetchBlobResult>>();

  constructor(paths: AxonPaths) {
    this.#paths = paths;
  }

  path(digest: string): string {
    return this.#paths.blob(digest);
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.#paths.blob(digest))).size;
    } catch {
      return undefined;
    }
  }

  async has(digest: string, size?: number): Promise<boolean> {
    const s = await this.size(digest);
    return s !== undefined && (size === undefined || s === size);
  }

  /**
   * Downloads a blob into the cache unless it is there already. Concurrent calls for one digest in
   * this process share one transfer; other processes wait on a lock and then find it cached. An
   * interrupted transfer leaves `tmp/<hex>.partial`, which the next attempt (this call's retry or a
   * later process) resumes with an HTTP Range after re-hashing what it holds.
   */
  fetch(opts: FetchBlobOptions): Promise<FetchBlobResult> {
    const key = opts.digest ?? `key:${opts.key ?? randomId()}`;
    const running = this.#inflight.get(key);
    if (running) return running.then((r) => ({ ...r, transferred: 0, resumed: 0 }));
    const p = this.#fetchLocked(opts).finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  async #fetchLocked(opts: FetchBlobOptions): Promise<FetchBlobResult> {
    if (opts.digest) {
      hexOf(opts.digest);
      if (await this.has(opts.digest, opts.size)) return { digest: opts.digest, size: (await this.size(opts.digest))!, transferred: 0, resumed: 0 };
    }
    const partialName = opts.digest ? this.#paths.partial(opts.digest) : this.#paths.partial(`sha256:${createHash("sha256").update(opts.key ?? randomId()).digest("hex")}`);
    const lockName = `blob-${partialName.slice(-72)}`;
    return withLock(this.#paths.locks, lockName, async () => {
      if (opts.digest && (await this.has(opts.digest, opts.size))) {
        return { digest: opts.digest, size: (await this.size(opts.digest))!, transferred: 0, resumed: 0 };
      }
      await mkdir(this.#paths.tmp, { recursive: true });
      return this.#download(opts, partialName);
    });
  }

  async #download(opts: FetchBlobOptions, partial: string): Promise<FetchBlobResult> {
    const result = await downloadToPartial(opts, partial);
    await this.#commit(partial, result.digest);
    return result;
  }

  async #commit(tmpFile: string, digest: string): Promise<void> {
    const dest = this.#paths.blob(digest);
    await mkdir(this.#paths.blobs, { recursive: true });
    await chmod(tmpFile, 0o444);
    await rename(tmpFile, dest);
  }

  /** Stores bytes already in memory (manifests, configs, axon.yaml). */
  async putBytes(bytes: Uint8Array): Promise<{ digest: string; size: number }> {
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (!(await this.has(digest, bytes.byteLength))) {
      await mkdir(this.#paths.tmp, { recursive: true });
      const tmp = `${this.#paths.tmp}/put-${randomId()}`;
      try {
        await writeFile(tmp, bytes);
        await this.#commit(tmp, digest);
      } catch (e) {
        await rm(tmp, { force: true });
        throw fsError(e, tmp);
      }
    }
    return { digest, size: bytes.byteLength };
  }

  /**
   * Copies a file into the cache under its known digest, checking it while copying (the file may
   * have changed since it was hashed). A copy, not a link: the author's folder stays theirs.
   */
  async putFile(file: string, digest: string, size: number): Promise<void> {
    if (await this.has(digest, size)) return;
    await mkdir(this.#paths.tmp, { recursive: true });
    const tmp = `${this.#paths.tmp}/put-${randomId()}`;
    try {
      await copyFile(file, tmp);
      const actual = await hashFile(tmp);
      if (actual.digest !== digest || actual.size !== size) {
        throw new AxonError("MANIFEST_FILE", `${file} changed while packing: expected ${digest} (${size} bytes), found ${actual.digest} (${actual.size} bytes)`, { path: file });
      }
      await this.#commit(tmp, digest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw fsError(e, tmp);
    }
  }

  /** Re-hashes a cached blob. */
  async verify(digest: string): Promise<{ ok: boolean; actual?: string; size?: number }> {
    try {
      const r = await hashFile(this.#paths.blob(digest));
      return { ok: r.digest === digest, actual: r.digest, size: r.size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { ok: false };
      throw e;
    }
  }

  async list(): Promise<BlobInfo[]> {
    const names = await readdir(this.#paths.blobs).catch(() => [] as string[]);
    const out: BlobInfo[] = [];
    for (const n of names) {
      if (!/^[a-f0-9]{64}$/.test(n)) continue;
      const s = await stat(`${this.#paths.blobs}/${n}`).catch(() => undefined);
      if (s) out.push({ digest: `sha256:${n}`, size: s.size, mtimeMs: s.mtimeMs });
    }
    return out;
  }

  async remove(digest: string): Promise<void> {
    await rm(this.#paths.blob(digest), { force: true });
  }

  /** Partial downloads left by interrupted transfers. */
  async partials(): Promise<Array<{ file: string; size: number }>> {
    const names = await readdir(this.#paths.tmp).catch(() => [] as string[]);
    const out = [];
    for (const n of names) {
      if (!n.endsWith(".partial")) continue;
      const s = await stat(`${this.#paths.tmp}/${n}`).catch(() => undefined);
      if (s) out.push({ file: `${this.#paths.tmp}/${n}`, size: s.size });
    }
    return out;
  }
}

/**
 * Downloads into `partial` (resuming what it holds), hashing while streaming, retrying resets and
 * truncations from where they stopped, and verifies size and digest (on a mismatch the partial is
 * removed). It does not move the file into the store: the caller does, under its lock. With
 * `opts.direct` (the native fetcher) the bytes go from the socket to the file without passing
 * through JavaScript; the JS stream takes over where it steps aside. Both run the same loop
 * ({@link resumeAndRetry}); only the transport differs.
 */
export async function downloadToPartial(opts: FetchBlobOptions, partial: string): Promise<FetchBlobResult> {
  if (opts.direct) {
    const r = await resumeAndRetry(opts, partial, directTransport(opts, opts.direct, partial));
    if (r) return r;
  }
  const r = await resumeAndRetry(opts, partial, streamTransport(opts, partial));
  if (!r) throw new Error("the stream transport never steps aside"); // (unreachable)
  return r;
}

/** What one attempt may say besides its result: the file's length so far, and bytes received. */
interface AttemptSink {
  /** The partial's length now (progress is reported as the change; back to 0 on a restart). */
  length(bytes: number): void;
  /** Body bytes that came over the network. */
  transferred(bytes: number): void;
}

/** How bytes reach the partial: the JS stream ({@link BlobOpener}) or a {@link DirectFetcher}. */
interface Transport {
  /** The partial's first `bytes` are kept (at the start, and after a failed attempt). */
  keep(bytes: number): Promise<void>;
  /** Appends to the partial from byte `from`; resolves its length after, or undefined to step aside. */
  attempt(from: number, sink: AttemptSink): Promise<number | undefined>;
  /** The sha256 of the whole partial, `length` bytes long, once the attempts are done. */
  digest(length: number): Promise<string>;
}

/**
 * The resume, retry and verify loop of every download: resumes from the partial an earlier
 * attempt left, runs attempts until the file is whole, and retries failures other than AxonErrors
 * (resets, truncations, stalls) up to `opts.retries` times with jittered exponential backoff from
 * what reached the file; DISK_FULL removes the partial; an aborted signal stops the retries.
 * Progress goes to `opts.onBytes` as changes of the file's length. Undefined when the transport
 * steps aside (its progress taken back first).
 */
async function resumeAndRetry(opts: FetchBlobOptions, partial: string, transport: Transport): Promise<FetchBlobResult | undefined> {
  const retries = opts.retries ?? 5;
  const base = opts.retryBaseMs ?? 200;
  let reported = 0;
  let transferred = 0;
  const sink: AttemptSink = {
    length: (n) => {
      if (n !== reported) opts.onBytes?.(n - reported);
      reported = n;
    },
    transferred: (n) => void (transferred += n),
  };
  let have = 0;
  let resumed = 0;
  const existing = await stat(partial).catch(() => undefined);
  if (existing && existing.size > 0 && (opts.size === undefined || existing.size <= opts.size)) {
    have = resumed = existing.size;
    await transport.keep(have);
    sink.length(have);
  } else if (existing) {
    await rm(partial, { force: true });
  }

  for (let attempt = 0; ; attempt++) {
    try {
      if (opts.size !== undefined && have === opts.size) {
        // All of it is there (an earlier run got it but did not commit it, say).
        if (have === 0) await writeFile(partial, new Uint8Array(0));
        break;
      }
      const length = await transport.attempt(have, sink);
      if (length === undefined) {
        sink.length(0);
        return undefined;
      }
      sink.length(length);
      have = length;
      if (opts.size !== undefined && have < opts.size) {
        throw Object.assign(new Error(`body ended after ${have} of ${opts.size} bytes`), { code: "ETRUNCATED" });
      }
      break;
    } catch (e) {
      const err = fsError(e, partial);
      if (err instanceof AxonError && err.code === "DISK_FULL") {
        await rm(partial, { force: true });
        throw err;
      }
      if (err instanceof AxonError || attempt >= retries || opts.signal?.aborted) throw err;
      // Resume after whatever reached the file (a failed write may have kept less than arrived).
      have = (await stat(partial).catch(() => undefined))?.size ?? 0;
      sink.length(have);
      await transport.keep(have);
      await new Promise((r) => setTimeout(r, base * 2 ** attempt * (0.5 + Math.random())));
    }
  }
  return verified(opts, partial, { digest: await transport.digest(have), size: have, transferred, resumed });
}

/**
 * The JS transport: `opts.open` gives the body, hashed here chunk by chunk as it arrives (the hash
 * state cannot be persisted, so a kept prefix is re-hashed from the file first) and written in
 * large staged writes.
 */
function streamTransport(opts: FetchBlobOptions, partial: string): Transport {
  let hash: Hash = createHash("sha256");
  let hashed = 0;
  return {
    async keep(bytes) {
      if (bytes === hashed) return;
      hash = createHash("sha256");
      if (bytes > 0) for await (const chunk of createReadStream(partial, { highWaterMark: WRITE_CHUNK })) hash.update(chunk as Buffer);
      hashed = bytes;
    },
    async attempt(from, sink) {
      let have = from;
      let fh: FileHandle | undefined;
      let writer: StagedWriter | undefined;
      try {
        const { body, offset } = await opts.open(have, opts.signal);
        if (offset !== have) {
          // The server ignored Range (or answered from elsewhere): start over.
          if (offset !== 0) throw new AxonError("REGISTRY_ERROR", `server answered a range request from byte ${offset} instead of ${have}`);
          sink.length(0);
          hash = createHash("sha256");
          have = hashed = 0;
          await rm(partial, { force: true });
        }
        fh = await open(partial, have === 0 ? "w" : "a", 0o644);
        // Hash each chunk as it arrives; copy chunks into a large staging buffer and write that
        // (network chunks are ~64 KiB, and one write per chunk costs 3x more than 2 MiB writes).
        // Two staging buffers alternate, so the write of one overlaps filling the other.
        const staged = (writer = new StagedWriter(fh));
        await consume(body, (buf) => {
          if (opts.size !== undefined && have + buf.byteLength > opts.size) {
            throw new AxonError("SIZE_MISMATCH", `received more than the expected ${opts.size} bytes${opts.digest ? ` for ${opts.digest}` : ""}`, { digest: opts.digest, expected: opts.size });
          }
          hash.update(buf);
          have = hashed += buf.byteLength;
          sink.transferred(buf.byteLength);
          sink.length(have);
          return staged.push(buf);
        });
        await writer.flush();
        await fh.close();
        fh = undefined;
        return have;
      } catch (e) {
        // Keep what arrived before the failure on disk, so that the retry resumes after it.
        await writer?.flush().catch(() => {});
        await fh?.close().catch(() => {});
        throw e;
      }
    },
    async digest() {
      return `sha256:${hash.digest("hex")}`;
    },
  };
}

/**
 * The native transport: a {@link DirectFetcher} writes and hashes the bytes itself (re-hashing the
 * kept prefix on each attempt, so no hash state is carried here). It steps aside (undefined) for a
 * blob it cannot serve; the JS stream then resumes from what the file holds.
 */
function directTransport(opts: FetchBlobOptions, direct: DirectFetcher, partial: string): Transport {
  let digest: string | undefined;
  return {
    async keep() {},
    async attempt(from, sink) {
      try {
        const r = await direct({ file: partial, offset: from, size: opts.size, signal: opts.signal, onLength: sink.length });
        if (!r) return undefined;
        sink.transferred(r.transferred);
        digest = r.digest;
        return r.size;
      } catch (e) {
        const got = (e as { transferred?: unknown } | undefined)?.transferred;
        if (typeof got === "number") sink.transferred(got);
        throw e;
      }
    },
    async digest() {
      // No attempt ran when the partial was already whole.
      return digest ?? (await hashFile(partial)).digest;
    },
  };
}

/** Checks a finished partial's size and digest; on a mismatch the partial is removed. */
async function verified(opts: FetchBlobOptions, partial: string, r: FetchBlobResult): Promise<FetchBlobResult> {
  if (opts.size !== undefined && r.size !== opts.size) {
    await rm(partial, { force: true });
    throw new AxonError("SIZE_MISMATCH", `expected ${opts.size} bytes, received ${r.size}${opts.digest ? ` for ${opts.digest}` : ""}`);
  }
  if (opts.digest && r.digest !== opts.digest) {
    await rm(partial, { force: true });
    throw new AxonError("DIGEST_MISMATCH", `downloaded bytes hash to ${r.digest}, expected ${opts.digest}; nothing was installed`, { expected: opts.digest, actual: r.digest });
  }
  return r;
}

/** Streams a file through sha256. */
export async function hashFile(file: string): Promise<{ digest: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: WRITE_CHUNK })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).byteLength;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

const STAGE_BYTES = 2 << 20;

/**
 * Gathers network chunks (~64 KiB each) and writes them with one `writev` per 2 MiB: one write
 * per chunk costs about 3x more CPU. At most one write is in flight while the next batch gathers;
 * the caller waits (backpressure) only when a second batch is full before the first is written.
 */
class StagedWriter {
  readonly #fh: FileHandle;
  #batch: Uint8Array[] = [];
  #batchBytes = 0;
  #inflight: Promise<unknown> = Promise.resolve();
  #busy = false;
  #error: unknown;

  constructor(fh: FileHandle) {
    this.#fh = fh;
  }

  /** Returns a promise only when the caller must wait. */
  push(chunk: Uint8Array): Promise<void> | undefined {
    if (this.#error) throw this.#error;
    this.#batch.push(chunk);
    this.#batchBytes += chunk.byteLength;
    if (this.#batchBytes < STAGE_BYTES) return undefined;
    if (!this.#busy) {
      this.#start();
      return undefined;
    }
    return this.#inflight.then(() => {
      if (this.#error) throw this.#error;
      if (this.#batchBytes >= STAGE_BYTES && !this.#busy) this.#start();
    });
  }

  #start(): void {
    const batch = this.#batch;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#busy = true;
    // A failed write (ENOSPC) is kept and rethrown by the next push or flush, never left unhandled.
    this.#inflight = this.#writeAll(batch)
      .catch((e: unknown) => {
        this.#error ??= e;
      })
      .finally(() => {
        this.#busy = false;
      });
  }

  async #writeAll(batch: Uint8Array[]): Promise<void> {
    // writev may write fewer bytes than asked; continue from where it stopped.
    let rest = batch;
    while (rest.length) {
      const total = rest.reduce((n, b) => n + b.byteLength, 0);
      const { bytesWritten } = await this.#fh.writev(rest as NodeJS.ArrayBufferView[] as Buffer[]);
      if (bytesWritten === total) return;
      let skip = bytesWritten;
      const next: Uint8Array[] = [];
      for (const b of rest) {
        if (skip >= b.byteLength) skip -= b.byteLength;
        else {
          next.push(skip ? b.subarray(skip) : b);
          skip = 0;
        }
      }
      rest = next;
    }
  }

  async flush(): Promise<void> {
    await this.#inflight;
    if (this.#batchBytes > 0 && !this.#error) {
      this.#start();
      await this.#inflight;
    }
    if (this.#error) throw this.#error;
  }
}

/**
 * Feeds a body to `onChunk`, honouring the promise it returns as backpressure. A Node Readable is
 * read through 'data' events (its async iterator concatenates buffered chunks, an extra copy).
 */
async function consume(body: AsyncIterable<Uint8Array>, onChunk: (b: Uint8Array) => Promise<void> | undefined): Promise<void> {
  const stream = body as unknown as NodeJS.ReadableStream & { destroy?: (e?: Error) => void; readableEnded?: boolean };
  if (typeof stream.on !== "function" || typeof stream.pause !== "function") {
    for await (const chunk of body) await onChunk(chunk);
    return;
  }
  await new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (e: unknown) => {
      if (failed) return;
      failed = true;
      stream.removeListener("data", onData);
      stream.destroy?.(e instanceof Error ? e : undefined);
      reject(e);
    };
    const onData = (chunk: Uint8Array) => {
      try {
        const p = onChunk(chunk);
        if (p) {
          stream.pause();
          p.then(() => !failed && stream.resume(), fail);
        }
      } catch (e) {
        fail(e);
      }
    };
    stream.on("data", onData);
    stream.once("error", fail);
    stream.once("end", () => {
      if (!failed) resolve();
    });
    stream.once("close", () => {
      if (!failed && !stream.readableEnded) fail(Object.assign(new Error("body closed before its end"), { code: "ECONNRESET" }));
    });
  });
}
