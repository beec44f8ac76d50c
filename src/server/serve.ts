/**
 * `axon serve`: MLOS Core as a server. Builds the runtime and the model table, registers the
 * models it is given, and opens the HTTP and gRPC doors on one request side (serving.ts): the
 * same models, scheduler, pool and metrics whichever door a request comes through.
 */
import { setOrtThreadBudget } from "../../bindings/native.js";
import { Axon } from "../axon/axon.js";
import { MlosError } from "../core/errors.js";
import { ModelTable, type ModelEntry } from "../core/model-table.js";
import type { EngineOptions } from "../core/generation/engine.js";
import type { BatchingOptions } from "../core/scheduler.js";
import { importPlugin, Runtime } from "../core/runtime.js";
import "../plugins/index.js"; // the built-in plugins, as every Runtime's defaults
import { LlamaCppPlugin, type GpuChoice } from "../plugins/llamacpp/index.js";
import { TensorPool } from "../tensor/pool.js";
import { startGrpcServer, type GrpcServer } from "./grpc/grpc-server.js";
import { IpcDoor } from "./ipc/ipc-door.js";
import { startHttpServer, type HttpServer } from "./http-server.js";
import { ServerMetrics } from "./metrics.js";
import { Serving } from "./serving.js";
import { SystemSharedMemory } from "./shm/system-shared-memory.js";

export interface ServeOptions {
  /** HTTP port (default 8080; 0 disables the HTTP door). */
  httpPort?: number;
  /**
   * gRPC port (KServe v2 `inference.GRPCInferenceService` and `grpc.health.v1`); undefined or 0:
   * no gRPC door (`axon serve` asks for 8081 unless told otherwise).
   */
  grpcPort?: number;
  /**
   * The shared-memory IPC door (`mlos/ipc` clients, include/mlos_ipc.h): its name (a socket under
   * $XDG_RUNTIME_DIR/mlos or /tmp/mlos-UID, or a path) and limits; undefined: no IPC door.
   */
  ipc?: { name: string; maxArenaBytes?: number; maxClients?: number; leaseMs?: number };
  /**
   * Let clients register system shared-memory regions (KServe v2 / Triton extension, HTTP and
   * gRPC) and name them in inference requests instead of sending tensor bytes. Off by default.
   */
  allowSharedMemory?: boolean;
  host?: string;
  /**
   * Where GGUF models run (the llamacpp plugin): `off` (the CPU, the default), `cuda`, `vulkan`,
   * or `auto`. A GPU that cannot be used stops the start with the reason.
   */
  gpu?: GpuChoice;
  /** Third-party plugins to load before the models: module paths or npm package names. */
  plugins?: string[];
  /** Models to register at start: Axon references or paths (`name=target` to choose the served name). */
  models?: string[];
  /** Bytes of the request tensor pool (default 256 MiB). */
  poolBytes?: number;
  maxBodyBytes?: number;
  maxQueueDepth?: number;
  /** Runs in flight per model (default: the manifest's instances, else 4). */
  instances?: number;
  /**
   * Threads inside one run (ONNX Runtime's intra-op pool), per model; default 1. A server gets its
   * parallelism from concurrent runs (instances, batching); ORT's default of one spinning thread
   * per core would fight the event loop and the other models for the CPU.
   */
  intraOpThreads?: number;
  /**
   * One ONNX Runtime thread pool of this many threads shared by every loaded model (instead of
   * `intraOpThreads` per model): the thread budget is divided among the models by their load.
   */
  threads?: number;
  /** Default batching for models whose manifest sets none; false turns batching off for all. */
  batching?: BatchingOptions | false;
  /** Memory budget for loaded models (bytes): idle models are unloaded LRU to make room. */
  maxMemoryBytes?: number;
  /** Unload models unused for this long (ms). */
  keepAliveMs?: number;
  /** Language models' engines: batch size, token budget per step, KV cache memory. */
  generation?: EngineOptions;
  apiKey?: string;
  adminKey?: string;
  tls?: { certFile: string; keyFile: string };
  axon?: Axon;
  /** Called for each model registered at start (for logging). */
  onModel?: (e: ModelEntry) => void;
}

export interface RunningServer {
  readonly table: ModelTable;
  readonly runtime: Runtime;
  readonly http: HttpServer | undefined;
  readonly grpc: GrpcServer | undefined;
  /** The shared-memory IPC door, when `ipc` was given. */
  readonly ipc: IpcDoor | undefined;
  readonly pool: TensorPool;
  /** The metrics every door counts in. */
  readonly metrics: ServerMetrics;
  close(): Promise<void>;
}

/** Starts MLOS Core. A model that fails to register at start stops the start with its error. */
export async function serve(options: ServeOptions = {}): Promise<RunningServer> {
  const axon = options.axon ?? new Axon();
  const runtime = new Runtime({ axon });
  if (options.gpu !== undefined && options.gpu !== "off") {
    const llamacpp = new LlamaCppPlugin({ gpu: options.gpu });
    const a = llamacpp.availability();
    if (!a.available) throw new MlosError("PLUGIN_UNAVAILABLE", a.reason, { plugin: "llamacpp", gpu: options.gpu });
    runtime.registerPlugin(llamacpp);
  }
  const pool = new TensorPool({ size: options.poolBytes ?? 256 * 1024 * 1024 });
  let onEvict: ((why: "memory" | "idle") => void) | undefined;
  const table = new ModelTable(runtime, {
    maxQueueDepth: options.maxQueueDepth,
    instances: options.instances,
    batching: options.batching,
    pool,
    load: { pool, intraOpThreads: options.intraOpThreads ?? 1, interOpThreads: 1, generation: { maxWaiting: options.maxQueueDepth, ...options.generation } },
    maxMemoryBytes: options.maxMemoryBytes,
    keepAliveMs: options.keepAliveMs,
    onEvict: (_e, why) => onEvict?.(why),
  });
  const metrics = new ServerMetrics(table, pool);
  const shm = new SystemSharedMemory(options.allowSharedMemory === true);
  const serving = new Serving(table, runtime, pool, metrics, shm);
  onEvict = (why) => metrics.evictions.inc({ reason: why });
  let http: HttpServer | undefined;
  let grpc: GrpcServer | undefined;
  let ipc: IpcDoor | undefined;
  const close = async (): Promise<void> => {
    ipc?.close();
    await Promise.all([http?.close(), grpc?.close()]);
    shm.close();
    await table.close();
    await runtime.close();
    pool.close();
  };
  try {
    if (options.threads) setOrtThreadBudget(options.threads);
    for (const spec of options.plugins ?? []) runtime.registerPlugin(await importPlugin(spec));
    for (const m of options.models ?? []) {
      const eq = m.indexOf("=");
      const spec = eq > 0 && !m.slice(0, eq).includes("/") ? { id: m.slice(0, eq), target: m.slice(eq + 1) } : { target: m };
      const e = await table.register({ ...spec, load: { pool, intraOpThreads: options.intraOpThreads ?? 1, interOpThreads: 1, generation: { maxWaiting: options.maxQueueDepth, ...options.generation } } });
      options.onModel?.(e);
    }
  } catch (e) {
    await close();
    throw e;
  }
  try {
    if (options.httpPort !== 0) {
      http = await startHttpServer({
        table,
        runtime,
        pool,
        serving,
        port: options.httpPort ?? 8080,
        host: options.host,
        maxBodyBytes: options.maxBodyBytes,
        apiKey: options.apiKey,
        adminKey: options.adminKey,
        tls: options.tls,
      });
    }
    if (options.grpcPort) {
      grpc = await startGrpcServer({ serving, port: options.grpcPort, host: options.host, maxMessageBytes: options.maxBodyBytes, apiKey: options.apiKey, adminKey: options.adminKey, tls: options.tls });
    }
    if (options.ipc) ipc = IpcDoor.start({ serving, ...options.ipc });
  } catch (e) {
    await close();
    throw e;
  }
  return { table, runtime, http, grpc, ipc, pool, metrics, close };
}
