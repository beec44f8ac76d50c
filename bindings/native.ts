// The typed loader for the native addon (build/Release/mlos_native.node).
//
// `NativeAddon` is the one TS type for the whole native surface: it mirrors the C++ classes
// registered in native/src/common/addon.cc. Public library classes keep the handle private; only this
// module knows where the addon lives and how it failed to load.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Stable `code` values of errors thrown by the addon. */
export type NativeErrorCode =
  | "SHM_EXHAUSTED"
  | "SHM_FAIL"
  | "BAD_ARGUMENT"
  | "CLOSED"
  | "ORT_FAIL"
  | "ORT_UNAVAILABLE"
  | "ORT_TERMINATED"
  | "ORT_TIMEOUT"
  | "CUDA_UNAVAILABLE"
  | "CUDA_FAIL"
  | "CUDA_OOM"
  | "BAD_STATE"
  | "BLOB_FETCH_FAIL";

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

/** ShmPool statistics (all sizes in bytes); see native/src/pool/shm_pool.h. */
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

// ---- CUDA allocators (native/src/cuda/cuda_alloc.h, cuda_alloc_binding.h) ------------------------------

/** One CUDA device, as cudaInfo() reports it. */
export interface NativeCudaDeviceInfo {
  index: number;
  /** cudaDeviceProp.name, e.g. "NVIDIA H200". */
  name: string;
  /** Bytes. */
  totalMemory: number;
  /** Bytes free now (cudaMemGetInfo, read on every cudaInfo() call); null when that query failed. */
  freeMemory: number | null;
  /** "major.minor", e.g. "9.0". */
  computeCapability: string;
}

/** What cudaInfo() returns. Detection runs once per process, on the first call. */
export interface NativeCudaInfo {
  /** True when the addon was compiled against the CUDA runtime (a toolkit was found at build time). */
  compiled: boolean;
  /** True when compiled, a driver is loaded and at least one device is visible. */
  available: boolean;
  /**
   * Why not available, e.g. "no GPU: cudaGetDeviceCount failed: cudaErrorInsufficientDriver (35): ..."
   * or "compiled without CUDA: ..."; absent when available. Callers then use the CPU ShmPool.
   */
  reason?: string;
  deviceCount: number;
  devices: NativeCudaDeviceInfo[];
  /** cudaRuntimeGetVersion (13000 = 13.0); 0 when not compiled. */
  runtimeVersion: number;
  /** cudaDriverGetVersion; 0 when no driver is loaded. */
  driverVersion: number;
  /** The CUDA error that made it unavailable (cudaGetErrorName), when there was one. */
  errorName?: string;
  errorNumber?: number;
}

/** Statistics of a caching allocator (all sizes in bytes); see CudaAllocatorStats in cuda_alloc.h. */
export interface NativeCudaAllocatorStats {
  /** Size classes of live blocks. */
  allocatedBytes: number;
  /** Bytes asked for by live blocks. */
  requestedBytes: number;
  /** Free blocks held in the cache. */
  cachedBytes: number;
  /** allocatedBytes + cachedBytes: what the allocator holds from CUDA. */
  reservedBytes: number;
  peakAllocatedBytes: number;
  peakReservedBytes: number;
  liveBlocks: number;
  cachedBlocks: number;
  allocCount: number;
  freeCount: number;
  /** Allocations served from the cache / that went to cudaMalloc (cudaHostAlloc). */
  cacheHits: number;
  cacheMisses: number;
  /** Successful cudaMalloc / cudaFree (cudaHostAlloc / cudaFreeHost) calls. */
  backendAllocs: number;
  backendFrees: number;
  /** Allocations that failed with CUDA_OOM. */
  oomCount: number;
  /** The limit; 0 = none. */
  limitBytes: number;
}

export interface NativeCudaAllocatorOptions {
  /** Most bytes the allocator holds from CUDA (live + cached); past it alloc() throws CUDA_OOM. Default 0: no limit. */
  limitBytes?: number;
}

/**
 * A block of device memory from CudaDeviceAllocator.alloc(): a frozen, type-tagged object (not
 * constructible from JS). When it is collected without free() its block returns to the cache.
 */
export interface NativeCudaDeviceBuffer {
  /** The device pointer. */
  readonly address: bigint;
  /** Bytes asked for. */
  readonly byteLength: number;
  /** Bytes reserved: the size class (512 B steps up to 1 MiB, then 2 MiB steps). */
  readonly size: number;
  readonly device: number;
}

/** A caching allocator of one GPU's memory (cudaMalloc/cudaFree). */
export interface NativeCudaDeviceAllocator {
  readonly device: number;
  readonly limitBytes: number;
  /** A cached block of the request's size class, or a new one; throws CUDA_OOM. */
  alloc(bytes: number): NativeCudaDeviceBuffer;
  /** Returns the block to the cache now; RangeError BAD_ARGUMENT when it was freed already. */
  free(buffer: NativeCudaDeviceBuffer): void;
  /** Synchronous cudaMemcpy of all of `src` into the block at `offset` (default 0). */
  copyToDevice(buffer: NativeCudaDeviceBuffer, src: ArrayBuffer | ArrayBufferView, offset?: number): void;
  /** Synchronous cudaMemcpy from the block at `offset` (default 0) filling all of `dst`. */
  copyFromDevice(buffer: NativeCudaDeviceBuffer, dst: ArrayBuffer | ArrayBufferView, offset?: number): void;
  /** cudaFree of every cached block; returns the bytes given back. */
  emptyCache(): number;
  stats(): NativeCudaAllocatorStats;
}

export interface NativeCudaDeviceAllocatorConstructor {
  /** Throws NativeError CUDA_UNAVAILABLE (the message says why) where there is no GPU. */
  new (device?: number, options?: NativeCudaAllocatorOptions): NativeCudaDeviceAllocator;
  readonly prototype: NativeCudaDeviceAllocator;
  /** The size class of a request (0 for 0); works without a GPU. */
  roundSize(bytes: number): number;
}

/** A caching allocator of pinned (page-locked, cudaHostAlloc) host memory. */
export interface NativePinnedHostAllocator {
  readonly limitBytes: number;
  /** An ArrayBuffer of `bytes` over pinned memory (zero copy); its finaliser returns the block to the cache. */
  alloc(bytes: number): ArrayBuffer;
  /** Returns the block behind an ArrayBuffer from alloc() now, and detaches the buffer. */
  free(buffer: ArrayBuffer | ArrayBufferView): void;
  /** cudaFreeHost of every cached block; returns the bytes given back. */
  emptyCache(): number;
  stats(): NativeCudaAllocatorStats;
}

export interface NativePinnedHostAllocatorConstructor {
  /** Throws NativeError CUDA_UNAVAILABLE where there is no GPU: use a ShmPool (CPU memory) instead. */
  new (options?: NativeCudaAllocatorOptions): NativePinnedHostAllocator;
  readonly prototype: NativePinnedHostAllocator;
}
// ---- end of CUDA allocators ------------------------------------------------------------------------

/** ONNX element type names (ONNX's TensorProto types, as onnxruntime-node spells them). */
export type NativeOrtDtype =
  | "float32" | "uint8" | "int8" | "uint16" | "int16" | "int32" | "int64" | "string" | "bool"
  | "float16" | "float64" | "uint32" | "uint64" | "complex64" | "complex128" | "bfloat16"
  | "float8e4m3fn" | "float8e4m3fnuz" | "float8e5m2" | "float8e5m2fnuz" | "uint4" | "int4";

/** One input or output of a model (native/src/ort/ort_session.cc). */
export interface NativeOrtIoInfo {
  readonly name: string;
  /** ONNX value kind; only "tensor" values can be fed or fetched. */
  readonly type: "tensor" | "sequence" | "map" | "opaque" | "sparse_tensor" | "optional" | "unknown";
  /** Element type of a tensor; undefined for other kinds. */
  readonly dtype: NativeOrtDtype | undefined;
  /** Dimensions; -1 where the model leaves one dynamic. */
  readonly shape: readonly number[];
  /** Per dimension: its symbolic name ("batch"), or null. */
  readonly symbolicShape: readonly (string | null)[];
}

/**
 * A tensor handed to a run. `data` is used in place (no copy): its byte length must be exactly
 * what dtype x shape needs (sub-byte types packed), or the call throws a TypeError with code
 * BAD_ARGUMENT. String tensors are not supported.
 */
export interface NativeOrtTensorArg {
  dtype: NativeOrtDtype;
  shape: readonly number[];
  data: ArrayBuffer | ArrayBufferView;
}

/**
 * A tensor a run returns. ORT-allocated outputs: `data` is an ArrayBuffer over ORT's own memory
 * (released when the buffer is collected). Preallocated outputs: `data` is the very object the
 * caller passed, written in place.
 */
export interface NativeOrtTensor {
  dtype: NativeOrtDtype;
  shape: number[];
  data: ArrayBuffer | ArrayBufferView;
  /** With `debugAddresses`: the data pointer of the OrtValue ORT wrote, read after the run. */
  address?: bigint;
}

/**
 * What run/runSync resolve to. With `debugAddresses`, a non-enumerable `inputAddresses` holds
 * the data pointer of each input OrtValue ORT read.
 */
export type NativeOrtResult = Record<string, NativeOrtTensor> & {
  readonly inputAddresses?: Record<string, bigint>;
  /** Non-enumerable: how long Session::Run itself took, in microseconds (no hand-off included). */
  readonly runMicros: number;
};

export interface NativeOrtSessionOptions {
  /** Threads of the intra-op pool; 0 or absent: ORT's default (one per physical core). */
  intraOpThreads?: number;
  /** Threads of the inter-op pool (used in "parallel" execution mode). */
  interOpThreads?: number;
  /** Default "all" (ORT's default). */
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Default "sequential". */
  executionMode?: "sequential" | "parallel";
  /**
   * The model's bytes, used instead of reading the file (a graph rewritten in memory); external
   * data is still read from the folder of the model path.
   */
  modelBytes?: Uint8Array;
}

export interface NativeOrtRunOptions {
  /** Terminate the run when it has been executing this long; it rejects with code ORT_TIMEOUT. */
  timeoutMs?: number;
  /** Debugging: report native data pointers (`address` on outputs, `inputAddresses` on the result). */
  debugAddresses?: boolean;
  /** A label for terminate(tag): stops only the runs that carry it. */
  tag?: string;
  /**
   * After the run, on its worker thread: the index of the largest value of each
   * [offset, offset + width) slice of the float32 output `output`, written into `into`.
   */
  argmax?: ArgmaxRequest;
}

/** Greedy decoding's next tokens, computed where the logits were written (see NativeOrtRunOptions.argmax). */
export interface ArgmaxRequest {
  output: string;
  /** Element offsets of the slices (a row of logits each). */
  offsets: Float64Array;
  width: number;
  /** Receives one index per offset (relative to its slice). */
  into: Int32Array;
}

/** An opaque run prepared by NativeOrtSession.bind (a type-tagged napi External). */
export interface NativeOrtBoundRun {
  readonly __brand: "NativeOrtBoundRun";
}

/** An ONNX Runtime inference session (native/src/ort/ort_session.h). */
export interface NativeOrtSession {
  readonly path: string;
  readonly inputs: readonly NativeOrtIoInfo[];
  readonly outputs: readonly NativeOrtIoInfo[];
  /** Initializers that are also graph inputs: a run may feed them (replacing their default); not in `inputs`. */
  readonly overridable: readonly NativeOrtIoInfo[];
  /**
   * Runs the model on a libuv worker thread (never on the event loop); many runs may be in flight
   * on one session. `outputNames` default: every output. `preallocatedOutputs` are written in
   * place (and fetched even when `outputNames` leaves them out). Rejects with ORT_FAIL (naming the
   * failing call), ORT_TERMINATED or ORT_TIMEOUT; argument errors throw synchronously.
   */
  run(
    feeds: Record<string, NativeOrtTensorArg>,
    outputNames?: readonly string[] | null,
    preallocatedOutputs?: Record<string, NativeOrtTensorArg> | null,
    options?: NativeOrtRunOptions,
  ): Promise<NativeOrtResult>;
  /** The same on the calling thread (for models whose whole run is cheaper than a thread hop). */
  runSync(
    feeds: Record<string, NativeOrtTensorArg>,
    outputNames?: readonly string[] | null,
    preallocatedOutputs?: Record<string, NativeOrtTensorArg> | null,
    options?: NativeOrtRunOptions,
  ): NativeOrtResult;
  /**
   * Prepares a run once: OrtValues over the feeds' and the preallocated outputs' buffers (every
   * output in `outputNames` must be preallocated; no string inputs). The buffers stay referenced
   * while the bound run lives. The caller must not reuse it once a buffer was freed.
   */
  bind(
    feeds: Record<string, NativeOrtTensorArg>,
    outputNames: readonly string[],
    preallocatedOutputs: Record<string, NativeOrtTensorArg>,
  ): NativeOrtBoundRun;
  /** Session::Run on a bound run's buffers, on this thread; returns how long it took (µs). */
  runBound(bound: NativeOrtBoundRun): number;
  /**
   * Sets up the KServe v2 JSON fast path (native/src/ort/ort_kserve_json.cc) for requests to the
   * model `modelName` version `modelVersion`, whose inputs `inputs` are checked as checkInputs
   * checks them and whose response lists `outputs` in that order (those whose shape the inputs'
   * dimensions fix are preallocated, in buffers reused from run to run). `stats[0]` receives each fast
   * run's Session::Run time (µs), and `stats[1]` (when present) a batched run's rows. `usable` is false when a dtype is outside the fast path (then
   * every run declines); `batchable` when every input and output starts with the same named
   * dimension (runKserveJsonBatch can stack requests).
   */
  prepareKserveJson(options: {
    modelName: string;
    modelVersion: string;
    inputs: ReadonlyArray<{ name: string; dtype: string; shape: ReadonlyArray<number | string> }>;
    outputs: ReadonlyArray<{ name: string; shape: ReadonlyArray<number | string> }>;
    stats: Float64Array;
  }): { usable: boolean; batchable: boolean };
  /**
   * Decodes a KServe v2 JSON infer request, runs it on this thread and encodes the response body,
   * byte-for-byte as the JS path writes it; returns its length, having written it into `out` when
   * it fits (else {@link readKserveResponse} copies it). -1, having run nothing, for any request
   * it does not fully handle (an invalid one included) and for a failed run.
   */
  runKserveJson(body: Uint8Array | ArrayBuffer, out: Uint8Array): number;
  /**
   * Several KServe v2 JSON requests as one run, stacked along the batch dimension (up to `maxRows`
   * rows; requests whose other dimensions differ from the first one taken are left out): each
   * request's own rows of the outputs are encoded in turn into `out` (when they all fit; else
   * {@link readKserveResponse}). `lengths[j]`: request j's response length, -1 where it was
   * declined (nothing ran for it), or -2 for a valid request left for another batch (past maxRows,
   * or other dimensions than the first request taken). Returns the total length.
   */
  runKserveJsonBatch(bodies: ReadonlyArray<Uint8Array>, out: Uint8Array, lengths: Int32Array, maxRows: number): number;
  /**
   * {@link runKserveJson} for the gRPC door: `body` is an `inference.ModelInferRequest` message and
   * the response an `inference.ModelInferResponse` (native/src/ort/kserve_grpc.h), on the same
   * prepared path. It takes requests whose inputs all come in `raw_input_contents` and carry no
   * parameters, typed contents or outputs selection; it declines (-1) the rest.
   */
  runKserveGrpc(body: Uint8Array | ArrayBuffer, out: Uint8Array): number;
  /** {@link runKserveJsonBatch} for ModelInferRequest messages. */
  runKserveGrpcBatch(bodies: ReadonlyArray<Uint8Array>, out: Uint8Array, lengths: Int32Array, maxRows: number): number;
  /** Copies the last fast-path response into `out` (which must hold it); returns its length. */
  readKserveResponse(out: Uint8Array): number;
  /** Asks every run created and not finished (queued ones too), or those tagged `tag`, to stop; returns how many. */
  terminate(tag?: string): number;
  /** Releases the session once the runs in flight are done; later calls throw CLOSED. */
  release(): void;
  isReleased(): boolean;
}

export interface NativeOrtSessionConstructor {
  /** Loads the model (synchronously). Needs {@link loadOrt} (ortInit) first, else ORT_UNAVAILABLE. */
  new (modelPath: string, options?: NativeOrtSessionOptions): NativeOrtSession;
  readonly prototype: NativeOrtSession;
  /** Loads the model on a libuv worker thread (the event loop stays free); rejects with ORT_FAIL. */
  open(modelPath: string, options?: NativeOrtSessionOptions): Promise<NativeOrtSession>;
}

/** What ortInit loaded. */
export interface NativeOrtInfo {
  /** > 0: every session shares the environment's pool of this many intra-op threads. */
  globalThreads: number;
  /** The library's version, e.g. "1.30.0". */
  version: string;
  /** The OrtApi version in use (the headers' ORT_API_VERSION, or lower for an older library). */
  apiVersion: number;
  /** The library file that was opened. */
  path: string;
}

// ---- native blob fetch (native/src/fetch/blob_fetch.h, blob_fetch_binding.h) -----------------------------

export interface NativeBlobFetchOptions {
  /** Host name or IP address (IPv6 without brackets) of a plain-HTTP server. */
  host: string;
  port: number;
  /** Request target, e.g. "/v2/ns/name/blobs/sha256:...". */
  path: string;
  /** The destination file. With offset > 0 it must hold at least `offset` bytes. */
  file: string;
  /** Extra request headers (User-Agent, Authorization, Accept); Host, Range, Connection and Accept-Encoding are the fetcher's. */
  headers?: Record<string, string>;
  /** Bytes of `file` to keep: hashed first, and asked for with `Range: bytes=<offset>-`. A 200 answer restarts the file from 0. */
  offset?: number;
  /** The blob's total size: a longer body fails with code ETOOLONG and nothing past it is written. */
  expectedSize?: number | null;
  /** Fail with ETIMEDOUT when no byte arrives for this long (default 60000). */
  stallTimeoutMs?: number;
  /** Default 30000. */
  connectTimeoutMs?: number;
  /** Size of each buffer of the ring (default 1 MiB) and how many (default 4). */
  bufferBytes?: number;
  buffers?: number;
}

/** What a transfer did; transport failures are results too (`code`), never rejections. */
export interface NativeBlobFetchResult {
  /** HTTP status; 0 when no response arrived. */
  status: number;
  /** Response headers, names lower-cased; a repeated header is an array. */
  headers: Record<string, string | string[]>;
  /** Up to 1 KiB of a 4xx/5xx body (empty for 3xx and 416). */
  errorBody: Buffer;
  /** For 200/206: where the body went in the file (offset, or 0 when a 200 answered a range request). */
  bodyOffset: number;
  /** Body bytes written by this transfer. */
  received: number;
  /** Length of the file's content now (every byte that arrived is written, failures included). */
  bytes: number;
  /** The whole body arrived and was written (or a 416): `sha256` is then the digest of the file's first `bytes` bytes. */
  complete: boolean;
  /** Lower-case hex, when complete. */
  sha256?: string;
  /** On failure: ECONNREFUSED, ENOTFOUND, ETIMEDOUT, ECONNRESET, EPIPE, EPROTO, ETOOLONG, ENOSPC, EDQUOT, EIO, ENOENT, EACCES, ECANCELED, EINVAL. */
  code?: string;
  errno?: number;
  message?: string;
}

/** One download on two native threads (receive; hash and write); see native/src/fetch/blob_fetch_binding.h. */
export interface NativeBlobFetch {
  /** Starts the transfer (once). `onProgress(bytesInFile)` runs on the JS thread, coalesced. */
  start(onProgress?: (bytes: number) => void): Promise<NativeBlobFetchResult>;
  /** Stops it soon; the result then has code ECANCELED. */
  abort(): void;
  isRunning(): boolean;
}

export interface NativeBlobFetchConstructor {
  new (options: NativeBlobFetchOptions): NativeBlobFetch;
  readonly prototype: NativeBlobFetch;
}

/** Options of the HTTP/1.1 server (native/src/http/http_server_binding.h). */
export interface NativeHttpServerOptions {
  /**
   * One complete request, in arrival order per connection: `headers` is "name: value\n" per
   * header with lower-case names; `body` is absent when the request has none.
   */
  onRequest(id: number, method: string, target: string, headers: string, body: Buffer | undefined): void;
  /** The client of request `id` went away before it was answered. */
  onAbort(id: number): void;
  /** Larger bodies get 413 BODY_TOO_LARGE (default 64 MiB). */
  maxBodyBytes?: number;
  /** A connection idle this long, or whose request head is not complete after this long, is closed (default 10000). */
  idleTimeoutMs?: number;
  /** Requests in flight per connection before it stops being read (default 64). */
  maxPipelined?: number;
  /** Response bytes waiting for a slow reader before its connection stops being read (default 4 MiB). */
  maxWriteQueueBytes?: number;
  tls?: { certFile: string; keyFile: string; passphrase?: string };
}

/** mlos's HTTP/1.1 server on the JS thread's event loop; responses go out in request order. */
export interface NativeHttpServer {
  /** Listens; returns the port (useful with 0). Throws LISTEN_FAILED or TLS_INVALID. */
  listen(host: string, port: number): number;
  /**
   * Answers request `id`: "HTTP/1.1 <statusLine>", `headerLines` ("Name: value\r\n" each),
   * Content-Length, then `body`. The bytes are copied or written before it returns. False when
   * the client is gone or `id` was answered already.
   */
  respond(id: number, statusLine: string, headerLines: string, body?: string | Uint8Array): boolean;
  /** Starts a streamed (chunked) response: the status line and headers; false when the request is gone. */
  respondStart(id: number, statusLine: string, headerLines: string): boolean;
  /** One chunk of a streamed response. */
  respondChunk(id: number, data: string | Uint8Array): boolean;
  /** Ends a streamed response. */
  respondEnd(id: number): boolean;
  /** The client's address for request `id` ("" once gone). */
  peerAddress(id: number): string;
  /** Closes the listener and every connection (unanswered requests go to onAbort). */
  close(): Promise<void>;
  openConnections(): number;
}

export interface NativeHttpServerConstructor {
  new (options: NativeHttpServerOptions): NativeHttpServer;
  readonly prototype: NativeHttpServer;
}

/** The whole native surface (native/src/common/addon.cc). */
// ---- the shared-memory IPC door (native/src/ipc/ipc_binding.h) ------------------------------------

/** A request a model served through JavaScript receives from the IPC door (views over the client's arena). */
export interface NativeIpcJsRequest {
  model: string;
  /** dtype: the ONNX element type number. data: a Buffer over the client's arena (no copy). */
  inputs: Array<{ name: string; dtype: number; shape: number[]; data: Buffer }>;
  /** Output names asked for (empty: all). */
  outputs: string[];
  /** The window of the arena the outputs go into. */
  window: Buffer;
}

/** What a JS model's handler resolves to: outputs written into the window (offsets within it), or an error. */
export type NativeIpcJsResult =
  | { outputs: Array<{ name: string; dtype: number; shape: number[]; offset: number; bytes: number }> }
  | { code: string; message: string; neededBytes?: number };

export interface NativeIpcHostStats {
  clients: number;
  segmentBytes: number;
  connections: number;
  refused: number;
  dropped: number;
  unknownModel: number;
}

export interface NativeIpcHost {
  readonly instance: bigint;
  readonly path: string;
  /** Serves an ONNX Runtime session on the door's native threads (no JavaScript per request). */
  setOrtModel(name: string, session: NativeOrtSession): void;
  /** Serves a model through JavaScript: the door's thread waits for the handler's promise. */
  /** Serves a model another addon runs natively: an External over an mlos_ipc_runner (the torch plugin's ipcRunner). */
  setRunnerModel(name: string, runner: object): void;
  setJsModel(name: string, handler: (request: NativeIpcJsRequest) => Promise<NativeIpcJsResult> | NativeIpcJsResult): void;
  removeModel(name: string): void;
  stats(): NativeIpcHostStats;
  modelCounts(): Record<string, { requests: number; failures: number; computeNs: number }>;
  close(): void;
}

export interface NativeIpcHostConstructor {
  new (socketPath: string, options?: { maxArenaBytes?: number; maxClients?: number; leaseMs?: number }): NativeIpcHost;
}

export interface NativeIpcClient {
  /** The arena shared with the server (stays mapped while this ArrayBuffer lives). */
  readonly arena: ArrayBuffer;
  readonly serverInstance: bigint;
  readonly clientId: number;
  /** Why the last receive returned -1. */
  readonly lastError: string;
  /** Pushes one encoded request; false when the ring is full or the connection is gone. */
  send(request: Uint8Array): boolean;
  /** 1: a response was written into `out`; 0: none within spinMicros; -1: the connection failed. */
  receive(out: Uint8Array, spinMicros: number): 1 | 0 | -1;
  /** The same, waiting up to timeoutMs on a worker thread. */
  receiveAsync(out: Uint8Array, timeoutMs: number): Promise<1 | 0 | -1>;
  connected(): boolean;
  close(): void;
  /** The whole shared segment (header, rings, arena), for inspection tools and fault tests. */
  segment(): ArrayBuffer;
}

export interface NativeIpcClientConstructor {
  new (name: string, arenaBytes: number): NativeIpcClient;
}

/** The sizes of the IPC wire structs (include/mlos_ipc.h), for checking src/protocol/ipc.ts against. */
export interface NativeIpcLayout {
  requestBytes: number;
  responseBytes: number;
  requestInputs: number;
  responseOutputs: number;
  tensorBytes: number;
}

export interface NativeAddon {
  ShmPool: NativeShmPoolConstructor;
  /** CUDA detection; present in every build (see NativeCudaInfo.compiled). */
  cudaInfo(): NativeCudaInfo;
  /** Present in every build; constructing throws CUDA_UNAVAILABLE without a GPU. */
  CudaDeviceAllocator: NativeCudaDeviceAllocatorConstructor;
  PinnedHostAllocator: NativePinnedHostAllocatorConstructor;
  /** True when the addon was built with ONNX Runtime sessions (MLOS_WITH_ORT). */
  readonly ortCompiled: boolean;
  /** Present when ortCompiled. */
  OrtSession?: NativeOrtSessionConstructor;
  /** Opens the ONNX Runtime library (once per process; later calls return the first). Present when ortCompiled. */
  ortInit?(libraryPath: string, options?: { globalThreads?: number }): NativeOrtInfo;
  /** True when the addon was built with the native blob fetcher (OpenSSL headers were found). */
  readonly blobFetchCompiled?: boolean;
  /** Present when blobFetchCompiled and the process's OpenSSL (Node's) offers SHA-256. */
  BlobFetch?: NativeBlobFetchConstructor;
  /** The HTTP/1.1 server; in every cmake-js build (the node-gyp build of the CPU core has none). */
  HttpServer?: NativeHttpServerConstructor;
  /** Why TLS cannot be served in this process ("" when it can); present with HttpServer. */
  readonly httpTlsUnavailable?: string;
  /** The shared-memory IPC door: the server's host and the client (every cmake-js and node-gyp build). */
  IpcHost: NativeIpcHostConstructor;
  IpcClient: NativeIpcClientConstructor;
  readonly ipcLayout: NativeIpcLayout;
  /** The data pointer of an ArrayBuffer or view (byteOffset applied). */
  addressOf(buffer: ArrayBuffer | ArrayBufferView): bigint;
  /** Hands the C allocator's free memory back to the OS (glibc malloc_trim); false where unsupported. */
  trimMemory(): boolean;
  /** Index (relative to start) of the largest value of values[start, start + length); NaNs never win. */
  argmax(values: Float32Array, start: number, length: number): number;
  /** The values as the KServe JSON codec writes numbers, comma-separated (for tests against JSON.stringify). */
  kserveNumberText(values: Float64Array): string;
  /** Sets the class of coded errors; the loader calls it with NativeError. */
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  readonly napiVersion: number;
  readonly pageSize: number;
}

/** The package root: the nearest directory above this file with mlos's package.json (both addons' loaders look from there). */
export function packageRoot(): string {
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

/**
 * The command that (re)builds the addons: `npm rebuild mlos` where mlos is a dependency (inside a
 * node_modules folder), `npm run build:native` in a checkout of mlos itself.
 */
export function rebuildCommand(): string {
  return packageRoot().split(path.sep).includes("node_modules") ? "npm rebuild mlos" : "npm run build:native";
}

/** Loads the addon once; throws a {@link NativeLoadError} that says what to run when it cannot. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (cachedError) throw cachedError;
  const candidates = nativeCandidates();
  const file = candidates.find((c) => existsSync(c));
  if (!file) {
    cachedError = new NativeLoadError(
      `The mlos native addon is not built: none of ${candidates.join(", ")} exists. ` +
        `Build it with \`${rebuildCommand()}\` (it needs cmake >= 3.15 and a C++17 compiler), ` +
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
        `with \`${rebuildCommand()}\`.`,
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

// ---- ONNX Runtime ----------------------------------------------------------------------------------

/**
 * Where the ONNX Runtime library is looked for, in order: $ORT_ROOT/lib (an official release),
 * then the copy onnxruntime-node ships.
 */
export function ortLibraryCandidates(): string[] {
  const list: string[] = [];
  const ortRoot = process.env.ORT_ROOT;
  if (ortRoot) {
    list.push(path.join(ortRoot, "lib", "libonnxruntime.so.1"), path.join(ortRoot, "lib", "libonnxruntime.so"));
  }
  const arch = process.arch === "arm64" ? "arm64" : "x64";
  try {
    const pj = createRequire(path.join(packageRoot(), "package.json")).resolve("onnxruntime-node/package.json");
    list.push(path.join(path.dirname(pj), "bin", "napi-v6", process.platform, arch, "libonnxruntime.so.1"));
  } catch {
    // onnxruntime-node is not installed
  }
  return list;
}

/** Thrown by {@link loadOrt} when ONNX Runtime sessions cannot be used. */
export class OrtUnavailableError extends Error {
  readonly code = "ORT_UNAVAILABLE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "OrtUnavailableError";
  }
}

let threadBudget: number | undefined;

/**
 * One intra-op thread pool of `threads` for every ONNX Runtime session of this process (instead
 * of one pool per session): the thread budget is shared by all loaded models, and idle threads do
 * not spin. Must be set before ONNX Runtime is first used; `MLOS_ORT_THREADS` sets it too.
 * Throws when ONNX Runtime is already running with another setting.
 */
export function setOrtThreadBudget(threads: number): void {
  if (!Number.isSafeInteger(threads) || threads < 0) throw new RangeError(`the ONNX Runtime thread budget must be a non-negative integer, got ${threads}`);
  if (ortInfo && ortInfo.globalThreads !== threads) {
    throw new OrtUnavailableError(`ONNX Runtime is already running with ${ortInfo.globalThreads ? `a shared pool of ${ortInfo.globalThreads} threads` : "per-session threads"}; set the thread budget before the first model loads`);
  }
  threadBudget = threads;
}

function ortThreadBudget(): number {
  if (threadBudget !== undefined) return threadBudget;
  const env = Number(process.env.MLOS_ORT_THREADS);
  return Number.isSafeInteger(env) && env > 0 ? env : 0;
}

let ortInfo: NativeOrtInfo | undefined;
let ortError: OrtUnavailableError | undefined;

/** The addon with ONNX Runtime loaded (`OrtSession` and `ortInit` present), and what was loaded. */
export type NativeAddonWithOrt = NativeAddon & Required<Pick<NativeAddon, "OrtSession" | "ortInit">> & { ort: NativeOrtInfo };

/**
 * Loads the addon and opens the ONNX Runtime library (once). Throws an {@link OrtUnavailableError}
 * that says why and what to do when the addon was built without ORT or no library opens.
 */
export function loadOrt(): NativeAddonWithOrt {
  const addon = loadNative();
  if (ortInfo) return Object.assign(addon, { ort: ortInfo }) as NativeAddonWithOrt;
  if (ortError) throw ortError;
  if (!addon.ortCompiled || !addon.OrtSession || !addon.ortInit) {
    ortError = new OrtUnavailableError(
      "The mlos native addon was built without ONNX Runtime sessions (its C headers could not be fetched " +
        "at build time; the build printed why). Set ORT_ROOT to an ONNX Runtime release, or make " +
        `\`npm pack com.github.asus4.onnxruntime@0.4.9\` work, and run \`${rebuildCommand()}\`.`,
    );
    throw ortError;
  }
  const candidates = ortLibraryCandidates();
  const reasons: string[] = [];
  for (const file of candidates) {
    if (!existsSync(file)) {
      reasons.push(`${file}: not found`);
      continue;
    }
    try {
      ortInfo = addon.ortInit(file, { globalThreads: ortThreadBudget() });
      return Object.assign(addon, { ort: ortInfo }) as NativeAddonWithOrt;
    } catch (e) {
      reasons.push(e instanceof Error ? e.message : String(e));
    }
  }
  ortError = new OrtUnavailableError(
    "No ONNX Runtime library could be opened" + (reasons.length ? ` (${reasons.join("; ")})` : "") + ". " +
      "Install onnxruntime-node (`npm install onnxruntime-node`, with ONNXRUNTIME_NODE_INSTALL=skip where " +
      "its CUDA download cannot work) or set ORT_ROOT to an ONNX Runtime release directory.",
  );
  throw ortError;
}

/** What ortInit loaded, when ONNX Runtime was loaded already (never loads it). */
export function loadedOrtInfo(): NativeOrtInfo | undefined {
  return ortInfo;
}

/** The addon with ONNX Runtime, or null (the reason is in {@link ortLoadError}). */
export function tryLoadOrt(): NativeAddonWithOrt | null {
  try {
    return loadOrt();
  } catch {
    return null;
  }
}

/** Why ONNX Runtime could not be loaded, when it could not. */
export function ortLoadError(): OrtUnavailableError | undefined {
  return ortError;
}
