/**
 * The shared-memory IPC door of `axon serve` (`--ipc-name`): the addon's IpcHost listening on a
 * Unix socket, kept in step with the model table.
 *
 * Every registered model is served under its name. A ready model whose plugin offers its native
 * session (ONNX Runtime: IPC_NATIVE_SESSION) or a native runner (libtorch: IPC_NATIVE_RUNNER) is
 * run by the host's native client threads with no JavaScript per request. Any other model (another plugin, or one evicted or unloading) is served
 * through JavaScript: the request's arena views become tensors, the model table runs them (loading
 * an evicted model first, as the other doors do) and the outputs are copied into the request's
 * window. The table's watch() is synchronous, so a model leaves the native path before its session
 * is disposed; a run already in flight keeps the session alive until it ends.
 *
 * Native requests are counted by the host; before each scrape their counts go into
 * mlos_requests_total (route "ipc"), and a model used over IPC is marked used for the keep-alive.
 */
import client from "prom-client";
import { loadNative, type NativeIpcHost, type NativeIpcJsRequest, type NativeIpcJsResult, type NativeOrtSession } from "../../../bindings/native.js";
import type { ModelEntry } from "../../core/model-table.js";
import { IPC_ALIGN, IPC_NATIVE_RUNNER, IPC_NATIVE_SESSION, ipcSocketPath } from "../../protocol/ipc.js";
import { dtypeInfo, dtypeOfOnnx } from "../../tensor/dtype.js";
import { Tensor } from "../../tensor/tensor.js";
import { disposeAll, type Serving } from "../serving.js";

export interface IpcDoorOptions {
  serving: Serving;
  /** The server's IPC name (a socket under $XDG_RUNTIME_DIR/mlos or /tmp/mlos-UID), or a socket path. */
  name: string;
  /** The largest arena a client gets (default 1 GiB). */
  maxArenaBytes?: number;
  /** Clients at once (default 64). */
  maxClients?: number;
  /** A client that leaves its responses unread this long is disconnected (default 5000 ms). */
  leaseMs?: number;
}

export class IpcDoor {
  readonly path: string;
  readonly #host: NativeIpcHost;
  readonly #serving: Serving;
  readonly #unwatch: () => void;
  /** Native counts already added to the metrics, per model. */
  readonly #counted = new Map<string, { requests: number; failures: number }>();
  readonly #touch: NodeJS.Timeout;
  #closed = false;

  private constructor(options: IpcDoorOptions) {
    this.#serving = options.serving;
    this.path = ipcSocketPath(options.name);
    const { IpcHost } = loadNative();
    this.#host = new IpcHost(this.path, { maxArenaBytes: options.maxArenaBytes, maxClients: options.maxClients, leaseMs: options.leaseMs });
    const table = this.#serving.table;
    this.#unwatch = table.watch((e) => this.#refresh(e.name));
    for (const e of table.list()) this.#refresh(e.name);
    this.#serving.metrics.beforeScrape.push(() => this.#syncCounts());
    const host = this.#host;
    const registers = [this.#serving.metrics.registry];
    const live = () => !this.#closed;
    new client.Gauge({
      name: "mlos_ipc_clients",
      help: "Shared-memory IPC clients connected, and the bytes of their segments (rings and arenas)",
      labelNames: ["kind"],
      registers,
      collect() {
        if (!live()) return;
        const s = host.stats();
        this.set({ kind: "clients" }, s.clients);
        this.set({ kind: "segment_bytes" }, s.segmentBytes);
      },
    });
    new client.Counter({
      name: "mlos_ipc_connections_total",
      help: "Shared-memory IPC connections: accepted, refused at the handshake (credentials, too many, bad hello), dropped by the server (corrupt ring, responses unread past the lease)",
      labelNames: ["outcome"],
      registers,
      collect() {
        if (!live()) return;
        const s = host.stats();
        this.reset();
        this.inc({ outcome: "accepted" }, s.connections);
        this.inc({ outcome: "refused" }, s.refused);
        this.inc({ outcome: "dropped" }, s.dropped);
      },
    });
    // Models used over the native path count as used for the keep-alive. The timer also keeps
    // the process alive while the door is open, as a listening socket would (the native threads
    // do not hold Node's event loop).
    this.#touch = setInterval(() => this.#syncCounts(), 1000);
  }

  /** Listens on the name's socket; IPC_LISTEN_FAILED (with the reason) when it cannot. */
  static start(options: IpcDoorOptions): IpcDoor {
    return new IpcDoor(options);
  }

  /** Clients connected now, their segments' bytes, and connection counts. */
  stats(): ReturnType<NativeIpcHost["stats"]> {
    return this.#host.stats();
  }

  /** Serves `name` natively when its model offers a native session, else through JavaScript. */
  #refresh(name: string): void {
    if (this.#closed) return;
    let e: ModelEntry | undefined;
    try {
      e = this.#serving.table.get(name);
    } catch {
      e = undefined;
    }
    if (!e) return this.#host.removeModel(name);
    const ready = e.state === "ready" ? e.model : undefined;
    const session = ready?.capability<NativeOrtSession>(IPC_NATIVE_SESSION);
    const runner = ready?.capability<() => object>(IPC_NATIVE_RUNNER);
    if (session) this.#host.setOrtModel(name, session);
    else if (runner) this.#host.setRunnerModel(name, runner());
    else this.#host.setJsModel(name, (req) => this.#runInJs(name, req));
  }

  /**
   * A request for a model served through JavaScript: the arena slices become tensors (in place),
   * and the request takes the same way as the other doors' (Serving: at once on this thread when
   * the scheduler can, else queued; metrics under route "ipc"); the outputs are copied into the
   * request's window.
   */
  async #runInJs(name: string, req: NativeIpcJsRequest): Promise<NativeIpcJsResult> {
    const inputs: Record<string, Tensor> = {};
    let outputs: Record<string, Tensor> | undefined;
    try {
      const entry = await this.#serving.table.acquire(name);
      for (const i of req.inputs) {
        const dtype = dtypeOfOnnx(i.dtype);
        if (!dtype || dtype === "string") return { code: "IPC_BAD_TENSOR", message: `input '${i.name}': element type ${i.dtype} is not carried over IPC` };
        inputs[i.name] = Tensor.fromBytes(dtype, i.shape, i.data);
      }
      const names = req.outputs.length > 0 ? req.outputs : undefined;
      outputs = this.#serving.inferSync(entry, inputs, "ipc", names) ?? (await this.#serving.infer(entry, inputs, "ipc", undefined, names));
      return placeOutputs(outputs, req.window);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      return { code: err.code ?? "IPC_RUN_FAILED", message: err.message ?? String(e) };
    } finally {
      disposeAll(Object.values(inputs));
      if (outputs) disposeAll(Object.values(outputs));
    }
  }

  /** Brings the native path's counts into mlos_requests_total, and marks models used. */
  #syncCounts(): void {
    if (this.#closed) return;
    const counts = this.#host.modelCounts();
    for (const [name, c] of Object.entries(counts)) {
      const before = this.#counted.get(name) ?? { requests: 0, failures: 0 };
      if (c.requests === before.requests) continue;
      let entry: ModelEntry | undefined;
      try {
        entry = this.#serving.table.get(name);
        entry.lastUsed = new Date();
      } catch {
        // unregistered meanwhile
      }
      const label = entry ? `${name}@${entry.version}` : name;
      const ok = c.requests - c.failures - (before.requests - before.failures);
      const failed = c.failures - before.failures;
      if (ok > 0) this.#serving.metrics.requests.inc({ model: label, route: "ipc", outcome: "ok" }, ok);
      if (failed > 0) this.#serving.metrics.requests.inc({ model: label, route: "ipc", outcome: "client_error" }, failed);
      this.#counted.set(name, { requests: c.requests, failures: c.failures });
    }
  }

  /** Stops listening and disconnects every client (their requests waiting on JS are answered IPC_SHUTTING_DOWN). */
  close(): void {
    if (this.#closed) return;
    this.#syncCounts();
    this.#closed = true;
    clearInterval(this.#touch);
    this.#unwatch();
    this.#host.close();
  }
}

/** Copies `outputs` into `window`, each at the next IPC_ALIGN boundary; IPC_OUTPUT_TOO_SMALL (with the size needed) when they do not fit. */
function placeOutputs(outputs: Record<string, Tensor>, window: Buffer): NativeIpcJsResult {
  const placed: Array<{ name: string; dtype: number; shape: number[]; offset: number; bytes: number }> = [];
  let cursor = 0;
  for (const [name, t] of Object.entries(outputs)) {
    if (t.dtype === "string") return { code: "IPC_RUN_FAILED", message: `output '${name}' is a string tensor, which the IPC door does not carry` };
    const data = t.data as ArrayBufferView;
    placed.push({ name, dtype: dtypeInfo(t.dtype).onnx, shape: [...t.shape], offset: cursor, bytes: data.byteLength });
    if (cursor + data.byteLength <= window.byteLength) window.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), cursor);
    cursor = Math.ceil((cursor + data.byteLength) / IPC_ALIGN) * IPC_ALIGN;
  }
  const needed = placed.reduce((end, o) => Math.max(end, o.offset + o.bytes), 0);
  if (needed > window.byteLength) return { code: "IPC_OUTPUT_TOO_SMALL", message: `the outputs need a window of ${needed} bytes, the request gave ${window.byteLength}`, neededBytes: needed };
  return { outputs: placed };
}
