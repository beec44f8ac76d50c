/**
 * `mlos/ipc`: the client of MLOS Core's shared-memory IPC door, for Node processes on the same
 * machine as the server.
 *
 * ```ts
 * import { connect } from "mlos/ipc";
 * const c = await connect("mlos");                 // axon serve's --ipc-name
 * const x = c.tensor("float32", [1, 4]);           // memory the server reads in place
 * x.data.set([0.1, 0.2, 0.3, 0.4]);
 * const out = await c.infer("mlp", { x });         // outputs are views over the arena too
 * console.log(out.y.data);
 * out.y.dispose();                                 // gives its window back at once
 * ```
 *
 * The client and the server share one segment: the client writes inputs into its arena, the
 * server runs the model on them where they are and writes the outputs into a window of the same
 * arena. Requests and responses travel through two rings in that segment, woken by futexes; after
 * sending, the client spins briefly (`spinMicros`) for a fast model's answer before it waits on a
 * worker thread. A server that restarts is noticed at the next request, which reconnects.
 */
import { loadNative, type NativeIpcClient } from "../../bindings/native.js";
import { byteSize, dtypeInfo, isDType, type DType, type NumericDType } from "../tensor/dtype.js";
import { Tensor } from "../tensor/tensor.js";
import { ArenaAllocator } from "./arena.js";
import { decodeResponse, encodeRequest, IpcError, IPC_ALIGN, REQUEST, RESPONSE, type IpcTensorDesc } from "../protocol/ipc.js";

export { IpcError } from "../protocol/ipc.js";

export interface ConnectOptions {
  /** The arena: all the tensor memory this client can have in flight (default 64 MiB; the server may cap it). */
  arenaBytes?: number;
  /** How long infer waits for a response before failing with IPC_TIMEOUT (default 60 s). */
  timeoutMs?: number;
  /** How long infer spins for the response before it waits on a worker thread (default 50 µs). */
  spinMicros?: number;
  /** Reconnect at the next request when the server went away (default true). */
  reconnect?: boolean;
}

export interface InferOptions {
  /** Output names (default: every output). */
  outputs?: string[];
  /** The window for the outputs, in bytes (default: what this model's last answer needed, at least the inputs' size). */
  outputBytes?: number;
  timeoutMs?: number;
}

interface Pending {
  resolve: (outputs: Record<string, Tensor>) => void;
  reject: (e: Error) => void;
  window: number;
  /** Arena blocks holding copies of inputs that were not in the arena. */
  temps: number[];
  timer: NodeJS.Timeout | undefined;
  model: string;
  retry: (() => void) | undefined;
}

const DEFAULT_ARENA = 64 * 1024 * 1024;
/** Answers younger than this vouch for the connection (no liveness check before the next request). */
const LIVENESS_MS = 100;

/** Connects to the server named `name` (its `--ipc-name`; a name with a '/' is a socket path). */
export async function connect(name = "mlos", options: ConnectOptions = {}): Promise<IpcClient> {
  return new IpcClient(name, options);
}

export class IpcClient {
  readonly name: string;
  readonly #options: Required<ConnectOptions>;
  #native!: NativeIpcClient;
  #arena!: ArrayBuffer;
  #alloc!: ArenaAllocator;
  #instance = 0n;
  #reconnects = 0;
  #closed = false;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #receiving = false;
  #pumping = false;
  /** A receive failed: the connection is gone (the next request reconnects). */
  #failed = false;
  /** When the last response arrived (performance.now()). */
  #lastAnswer = -Infinity;
  readonly #requestBuf = new Uint8Array(REQUEST.size);
  readonly #responseBuf = new Uint8Array(RESPONSE.size);
  /** The window each model's last answer needed. */
  readonly #windowFor = new Map<string, number>();
  readonly #finalizer = new FinalizationRegistry<() => void>((release) => release());

  /** @internal use {@link connect}. */
  constructor(name: string, options: ConnectOptions = {}) {
    this.name = name;
    this.#options = { arenaBytes: options.arenaBytes ?? DEFAULT_ARENA, timeoutMs: options.timeoutMs ?? 60_000, spinMicros: options.spinMicros ?? 50, reconnect: options.reconnect ?? true };
    const layout = loadNative().ipcLayout;
    if (layout.requestBytes !== REQUEST.size || layout.responseBytes !== RESPONSE.size || layout.requestInputs !== REQUEST.inputs || layout.responseOutputs !== RESPONSE.outputs) {
      throw new IpcError("IPC_VERSION", "the addon's IPC wire layout differs from this client's (rebuild the addon)");
    }
    this.#open();
  }

  #open(): void {
    const { IpcClient: Native } = loadNative();
    this.#native = new Native(this.name, this.#options.arenaBytes);
    this.#arena = this.#native.arena;
    this.#alloc = new ArenaAllocator(this.#arena.byteLength);
    this.#instance = this.#native.serverInstance;
  }

  /** The server's instance number: it changes when the server restarts (and this client reconnected). */
  get serverInstance(): bigint {
    return this.#instance;
  }

  /** How many times this client reconnected after losing the server. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** Whether the connection is up (false after close, or once the server is gone). */
  get connected(): boolean {
    return !this.#closed && this.#native.connected();
  }

  /** Arena bytes in use by tensors and output windows, and the arena's size. */
  get arenaUsage(): { used: number; bytes: number } {
    return { used: this.#alloc.used, bytes: this.#alloc.bytes };
  }

  /**
   * A tensor in the arena: the server reads it where it is. Filled with `data` when given (copied
   * once), else uninitialised. dispose() (or `using`) gives its memory back at once; otherwise it
   * goes back at garbage collection.
   */
  tensor<D extends NumericDType>(dtype: D, shape: readonly number[], data?: ArrayLike<number> | ArrayLike<bigint>): Tensor<D> {
    if (!isDType(dtype) || (dtype as DType) === "string") throw new IpcError("IPC_BAD_TENSOR", `the IPC door carries numeric tensors; got dtype ${JSON.stringify(dtype)}`);
    const elements = shape.reduce((a, d) => a * d, 1);
    if (!shape.every((d) => Number.isInteger(d) && d >= 0)) throw new IpcError("IPC_BAD_TENSOR", `shape [${shape.join(", ")}] must hold non-negative integers`);
    const bytes = byteSize(dtype, elements);
    const { offset, arena, alloc } = this.#allocate(bytes, `a ${dtype} [${shape.join(", ")}] tensor`);
    const array = dtypeInfo(dtype).array!;
    const view = new array(arena, offset, bytes / array.BYTES_PER_ELEMENT) as unknown as Tensor<D>["data"];
    const release = once(() => alloc.free(offset));
    const t = new Tensor(dtype, shape, view as never, release);
    this.#finalizer.register(t, release, t);
    if (data !== undefined) (view as unknown as { set(a: ArrayLike<number | bigint>): void }).set(data);
    return t;
  }

  /**
   * Runs `model` on `inputs` in the server. Inputs made by {@link tensor} are read in place; other
   * tensors are copied into the arena for the request. The outputs are tensors over the arena:
   * dispose() them when done (their window goes back when all of a response's are disposed or
   * collected). Rejects with an {@link IpcError}: the server's code for a bad request or a model
   * error, IPC_DISCONNECTED when the server went away (the next call reconnects), IPC_TIMEOUT.
   */
  infer(model: string, inputs: Record<string, Tensor>, options: InferOptions = {}): Promise<Record<string, Tensor>> {
    // Not an async function: one promise per call, settled straight from the response.
    return new Promise((resolve, reject) => {
      try {
        if (this.#closed) throw new IpcError("IPC_CLOSED", "this IPC client is closed");
        if (this.#pending.size === 0 && this.#lost()) {
          if (!this.#options.reconnect) throw new IpcError("IPC_DISCONNECTED", "the server is gone (this client does not reconnect)");
          this.#reconnect();
        }
      } catch (e) {
        return reject(e as Error);
      }
      this.#submit(model, inputs, options, resolve, reject, false);
    });
  }

  /**
   * Whether the server is gone, as far as this client can tell cheaply: a receive that failed
   * says so; otherwise the socket is looked at (a system call) only when the last answer is
   * older than LIVENESS_MS, so that back-to-back requests make no extra call, and a server that
   * restarted while the client was idle is found before its next request is sent.
   */
  #lost(): boolean {
    if (this.#failed) return true;
    if (performance.now() - this.#lastAnswer < LIVENESS_MS) return false;
    return !this.#native.connected();
  }

  #reconnect(): void {
    try {
      this.#native.close();
    } catch {
      // already gone
    }
    this.#open();
    this.#failed = false;
    this.#reconnects++;
  }

  #submit(model: string, inputs: Record<string, Tensor>, options: InferOptions, resolve: Pending["resolve"], reject: Pending["reject"], retried: boolean): void {
    const temps: number[] = [];
    let window = -1;
    const cleanup = () => {
      for (const t of temps) this.#alloc.free(t);
      if (window >= 0) this.#alloc.free(window);
    };
    try {
      const descs: IpcTensorDesc[] = [];
      let inputBytes = 0;
      for (const [name, t] of Object.entries(inputs)) {
        if (!(t instanceof Tensor)) throw new IpcError("IPC_BAD_TENSOR", `input '${name}' is not a Tensor`);
        if (t.dtype === "string") throw new IpcError("IPC_BAD_TENSOR", `input '${name}' is a string tensor; the IPC door carries numeric tensors`);
        const data = t.data as ArrayBufferView;
        let offset: number;
        if (data.buffer === this.#arena) offset = data.byteOffset;
        else {
          // Not in this connection's arena (a plain tensor, or one from before a reconnect): copied in.
          offset = this.#alloc.alloc(data.byteLength);
          if (offset < 0) throw this.#full(data.byteLength, `input '${name}'`);
          temps.push(offset);
          new Uint8Array(this.#arena, offset, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        }
        descs.push({ name, dtype: t.dtype, shape: [...t.shape], offset, bytes: data.byteLength });
        inputBytes += data.byteLength;
      }
      const want = options.outputBytes ?? Math.max(this.#windowFor.get(model) ?? 0, inputBytes, 4096);
      window = this.#alloc.alloc(want);
      if (window < 0) throw this.#full(want, "the output window");
      const id = this.#nextId++;
      encodeRequest(this.#requestBuf, { id, model, inputs: descs, outputs: options.outputs ?? [], outOffset: window, outBytes: want });
      if (!this.#native.send(this.#requestBuf)) {
        throw this.#native.connected() ? new IpcError("IPC_BUSY", "the request ring is full (more than 64 requests in flight on this client)") : new IpcError("IPC_DISCONNECTED", "the server is gone; the next request reconnects");
      }
      const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
      const p: Pending = {
        resolve,
        reject,
        window,
        temps,
        model,
        timer: undefined,
        retry: retried ? undefined : () => this.#submit(model, inputs, { ...options, outputBytes: this.#windowFor.get(model) }, resolve, reject, true),
      };
      p.timer = setTimeout(() => {
        // The server may still write into the window: it is not freed (a leak bounded by timeouts).
        this.#pending.delete(id);
        reject(new IpcError("IPC_TIMEOUT", `no response from the server within ${timeoutMs} ms`));
      }, timeoutMs);
      p.timer.unref?.();
      this.#pending.set(id, p);
      this.#pump();
    } catch (e) {
      cleanup();
      reject(e as Error);
    }
  }

  #full(bytes: number, what: string): IpcError {
    return new IpcError("IPC_ARENA_FULL", `${what} needs ${bytes} bytes; the arena has ${this.#alloc.largestFree} free in one piece of ${this.#alloc.bytes} (dispose() outputs and tensors when done, or connect with a larger arenaBytes)`);
  }

  #allocate(bytes: number, what: string): { offset: number; arena: ArrayBuffer; alloc: ArenaAllocator } {
    if (this.#pending.size === 0 && this.#options.reconnect && !this.#closed && this.#lost()) this.#reconnect();
    const offset = this.#alloc.alloc(bytes);
    if (offset < 0) throw this.#full(bytes, what);
    return { offset, arena: this.#arena, alloc: this.#alloc };
  }

  /** Takes every response there is; waits on a worker thread while requests remain. */
  #pump(): void {
    // Not re-entered: a response's dispatch may submit again (a retry), and this loop then takes its answer.
    if (this.#receiving || this.#pumping) return;
    this.#pumping = true;
    let r: 1 | 0 | -1;
    try {
      r = this.#native.receive(this.#responseBuf, this.#options.spinMicros);
      while (r === 1) {
        this.#dispatch();
        if (this.#pending.size === 0) return;
        r = this.#native.receive(this.#responseBuf, 0);
      }
    } finally {
      this.#pumping = false;
    }
    if (r === -1) return this.#failAll(this.#native.lastError);
    if (this.#pending.size === 0) return;
    this.#receiving = true;
    void this.#native.receiveAsync(this.#responseBuf, 1000).then((got) => {
      this.#receiving = false;
      if (got === 1) this.#dispatch();
      if (got === -1) return this.#failAll(this.#native.lastError);
      if (this.#pending.size > 0) this.#pump();
    });
  }

  #failAll(why: string): void {
    this.#failed = true;
    const code = why.split(":")[0] || "IPC_DISCONNECTED";
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new IpcError(code, why || "the server is gone"));
    }
  }

  #dispatch(): void {
    this.#lastAnswer = performance.now();
    const r = decodeResponse(this.#responseBuf);
    const p = this.#pending.get(r.id);
    if (!p) return; // timed out already
    this.#pending.delete(r.id);
    clearTimeout(p.timer);
    for (const t of p.temps) this.#alloc.free(t);
    if (!r.ok) {
      this.#alloc.free(p.window);
      if (r.code === "IPC_OUTPUT_TOO_SMALL" && r.neededBytes > 0) {
        this.#windowFor.set(p.model, r.neededBytes);
        if (p.retry) return p.retry();
      }
      return p.reject(new IpcError(r.code, r.message));
    }
    const arena = this.#arena;
    const alloc = this.#alloc;
    const ref = { arena, alloc, live: r.outputs.length };
    const window = p.window;
    let used = 0;
    const outputs: Record<string, Tensor> = {};
    for (const o of r.outputs) {
      used = Math.max(used, o.offset + o.bytes - window);
      const array = dtypeInfo(o.dtype).array!;
      const view = new array(arena, o.offset, o.bytes / array.BYTES_PER_ELEMENT);
      const release = once(() => {
        if (--ref.live === 0) alloc.free(window);
      });
      const t = new Tensor(o.dtype, o.shape, view as never, release);
      this.#finalizer.register(t, release, t);
      outputs[o.name] = t;
    }
    this.#windowFor.set(p.model, Math.max(IPC_ALIGN, Math.ceil(used / IPC_ALIGN) * IPC_ALIGN));
    if (r.outputs.length === 0) alloc.free(window);
    p.resolve(outputs);
  }

  /** Disconnects. Requests in flight fail with IPC_CLOSED; tensors stay readable until collected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    this.#failAll("IPC_CLOSED: the client was closed");
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    f();
  };
}
