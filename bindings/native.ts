// The typed loader for the native addon (build/Release/mlos_native.node).
//
// `NativeAddon` is the one TS type for the whole native surface: it mirrors the C++ classes
// registered in native/src/addon.cc. Public library classes keep the handle private; only this
// module knows where the addon lives and how it failed to load.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Stable `code` values of errors thrown by the addon. */
export type NativeErrorCode = "SHM_EXHAUSTED" | "SHM_FAIL" | "BAD_ARGUMENT" | "CLOSED";

/**
 * The class of coded errors thrown by the addon (handed to it at load). Argument errors are
 * plain `TypeError`/`RangeError` objects with `code: "BAD_ARGUMENT"`, the way Node's own are;
 * every other failure is a `NativeError`.
 */
export class NativeError extends Error {
  readonly code: NativeErrorCode | string;
  constructor(message: string, code: NativeErrorCode | string) {
    super(message);
    this.name = "NativeError";
    this.code = code;
  }
}

/** Thrown by {@link loadNative} when the addon is missing or cannot be loaded. */
export class NativeLoadError extends Error {
  readonly code = "NATIVE_UNAVAILABLE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NativeLoadError";
  }
}

/** ShmPool statistics (all sizes in bytes); see native/src/shm_pool.h. */
export interface NativeShmPoolStats {
  /** Segment size: the requested size rounded up to whole pages. */
  capacity: number;
  /** Bytes reserved by live slices (their size classes / whole pages). */
  used: number;
  /** Bytes asked for by live slices. */
  requested: number;
  /** Largest `used` seen. */
  highWater: number;
  /** Live slices. */
  live: number;
  /** Allocations since creation. */
  allocCount: number;
  /** Frees since creation (explicit or by finalisers). */
  freeCount: number;
  /** capacity - used. */
  freeBytes: number;
  /** Free bytes held in per-size-class free lists. */
  cachedBytes: number;
  /** Largest contiguous free range outside the class free lists. */
  largestFree: number;
  /** 1 - largestFree / freeBytes (0 when nothing is free or all free memory is one run). */
  fragmentation: number;
}

export interface NativeShmPoolOptions {
  /** Bytes; rounded up to whole pages. */
  size: number;
  /** Segment name; default "/mlos-<pid>-<n>". A leading "/" is added when missing. */
  name?: string;
  /** Reserve the memory at creation (posix_fallocate), default true. */
  reserve?: boolean;
}

/** A pool of tensor memory in a named POSIX shared-memory segment. */
export interface NativeShmPool {
  /** The segment name, e.g. "/mlos-1234-0". */
  readonly name: string;
  /** Capacity in bytes. */
  readonly size: number;
  /** True for a pool opened with ShmPool.attach (a view: it cannot allocate). */
  readonly attached: boolean;
  /** An ArrayBuffer of `bytes` over a new slice, 64-byte aligned, zero copy. Its finaliser returns the slice. */
  alloc(bytes: number): ArrayBuffer;
  /** Returns the slice behind an ArrayBuffer from alloc() now, and detaches the buffer. */
  free(buffer: ArrayBuffer | ArrayBufferView): void;
  /** Byte offset of the buffer's (or view's) data within the segment. */
  offsetOf(buffer: ArrayBuffer | ArrayBufferView): number;
  /** An ArrayBuffer over [offset, offset + length) of the segment (no ownership). */
  view(offset: number, length: number): ArrayBuffer;
  stats(): NativeShmPoolStats;
  /** Unlinks the segment (creating pool) and stops allocation; memory stays mapped until its last ArrayBuffer is collected. */
  close(): void;
  isClosed(): boolean;
}

export interface NativeShmPoolConstructor {
  new (options: NativeShmPoolOptions): NativeShmPool;
  readonly prototype: NativeShmPool;
  /** Maps an existing segment by name. */
  attach(name: string): NativeShmPool;
  /** Unlinks /dev/shm/mlos-<pid>-* of processes that no longer exist; returns how many. */
  cleanupStale(): number;
}

/** The whole native surface (native/src/addon.cc). */
export interface NativeAddon {
  ShmPool: NativeShmPoolConstructor;
  /** The data pointer of an ArrayBuffer or view (byteOffset applied). */
  addressOf(buffer: ArrayBuffer | ArrayBufferView): bigint;
  /** Sets the class of coded errors; the loader calls it with NativeError. */
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  readonly napiVersion: number;
  readonly pageSize: number;
}

/** The package root: the nearest directory above this file with mlos's package.json. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, "package.json");
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "mlos") return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
    dir = up;
  }
}

/** Where the loader looks, in order: $MLOS_NATIVE_PATH, then build/Release, then build/Debug. */
export function nativeCandidates(): string[] {
  const root = packageRoot();
  const list = [path.join(root, "build", "Release", "mlos_native.node"), path.join(root, "build", "Debug", "mlos_native.node")];
  const env = process.env.MLOS_NATIVE_PATH;
  return env ? [path.resolve(env), ...list] : list;
}

let cached: NativeAddon | undefined;
let cachedError: NativeLoadError | undefined;

/** Loads the addon once; throws a {@link NativeLoadError} that says what to run when it cannot. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (cachedError) throw cachedError;
  const candidates = nativeCandidates();
  const file = candidates.find((c) => existsSync(c));
  if (!file) {
    cachedError = new NativeLoadError(
      `The mlos native addon is not built: none of ${candidates.join(", ")} exists. ` +
        "Build it with `npm run build:native` (it needs cmake >= 3.15 and a C++17 compiler), " +
        "or reinstall without MLOS_SKIP_NATIVE=1.",
    );
    throw cachedError;
  }
  try {
    const addon = createRequire(import.meta.url)(file) as NativeAddon;
    if (typeof addon?.ShmPool !== "function" || typeof addon.setErrorClass !== "function") {
      throw new Error("it does not export the expected surface (ShmPool, setErrorClass)");
    }
    addon.setErrorClass(NativeError);
    cached = addon;
    return addon;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    cachedError = new NativeLoadError(
      `The mlos native addon at ${file} failed to load: ${why}. ` +
        "Rebuild it for this Node (" + process.version + ", " + process.platform + "-" + process.arch + ") " +
        "with `npm run build:native`.",
      { cause: e },
    );
    throw cachedError;
  }
}

/** The addon, or null when it cannot be loaded (the reason is in {@link nativeLoadError}). */
export function tryLoadNative(): NativeAddon | null {
  try {
    return loadNative();
  } catch {
    return null;
  }
}

/** Why the addon failed to load, when it did. */
export function nativeLoadError(): NativeLoadError | undefined {
  return cachedError;
}
