/**
 * What the doors (HTTP, gRPC) and their API modules share to run requests: the model table, the
 * tensor pool, the metrics, and the two ways a request reaches a model (at once on the calling
 * thread, or through its scheduler), each counted under its route. One per server: a request
 * counts in the same metrics whichever door it came through.
 */
import type { GenerationEngine } from "../core/generation/engine.js";
import type { ModelEntry, ModelTable, ReadyEntry } from "../core/model-table.js";
import type { Runtime } from "../core/runtime.js";
import type { Scheduler } from "../core/scheduler.js";
import type { TensorPool } from "../tensor/pool.js";
import type { Tensor } from "../tensor/tensor.js";
import { HttpError, toHttpError } from "./http-error.js";
import type { ServerMetrics } from "./metrics.js";
import { SystemSharedMemory } from "./shm/system-shared-memory.js";

/** A request's `priority` (higher first) and `timeout` (ms). */
export interface RequestParameters {
  priority?: number;
  timeoutMs?: number;
}

/** A model's bound metric children for one route: label lookups hash their label objects on every call. */
export interface ModelMetrics {
  ok: { inc(): void };
  total: { observe(v: number): void };
}

export class Serving {
  /** Per scheduler (a model version as loaded now), per route: found without building a string. */
  readonly #modelMetrics = new WeakMap<Scheduler, Map<string, ModelMetrics>>();

  constructor(
    readonly table: ModelTable,
    readonly runtime: Runtime,
    readonly pool: TensorPool,
    readonly metrics: ServerMetrics,
    /** Clients' registered shared-memory regions (KServe inputs and outputs may name one); off unless allowed. */
    readonly shm: SystemSharedMemory = new SystemSharedMemory(false),
  ) {}

  /** A language model's generation engine, its metrics hooked on first use. */
  async languageEngine(entry: ReadyEntry): Promise<GenerationEngine> {
    const engine = await entry.model.generationEngine();
    this.metrics.observeEngine(`${entry.name}@${entry.version}`, engine);
    return engine;
  }

  /**
   * The metric children of `entry`'s model for `route`, made once per loaded model and route.
   * The first call also hooks the scheduler's timings (queue, compute, batch size): call it before
   * the model runs the request.
   */
  metricsFor(entry: ReadyEntry, route: string): ModelMetrics {
    let byRoute = this.#modelMetrics.get(entry.scheduler);
    if (!byRoute) this.#modelMetrics.set(entry.scheduler, (byRoute = new Map()));
    const found = byRoute.get(route);
    if (found) return found;
    const label = `${entry.name}@${entry.version}`;
    if (!entry.scheduler.onTimings) {
      const queueHist = this.metrics.latency.labels({ model: label, phase: "queue" });
      const computeHist = this.metrics.latency.labels({ model: label, phase: "compute" });
      const batchHist = this.metrics.batchSize.labels({ model: label });
      entry.scheduler.onTimings = (queue, compute, batch) => {
        queueHist.observe(queue);
        computeHist.observe(compute);
        batchHist.observe(batch);
      };
    }
    const m = { ok: this.metrics.requests.labels({ model: label, route, outcome: "ok" }), total: this.metrics.latency.labels({ model: label, phase: "total" }) };
    byRoute.set(route, m);
    return m;
  }

  /** Counts a failed request by its outcome, and rethrows it. */
  countFailure(entry: ModelEntry, route: string, e: unknown): never {
    const h = toHttpError(e);
    this.metrics.requests.inc({ model: `${entry.name}@${entry.version}`, route, outcome: h.code === "QUEUE_FULL" ? "rejected" : h.status >= 500 ? "server_error" : "client_error" });
    throw e;
  }

  /** Runs the request on the calling thread when the model's scheduler can do so at once; else undefined (nothing ran). */
  inferSync(entry: ReadyEntry, inputs: Record<string, Tensor>, route: string, outputs?: string[], params: RequestParameters = {}): Record<string, Tensor> | undefined {
    if (params.timeoutMs !== undefined) return undefined;
    const m = this.metricsFor(entry, route);
    let out: Record<string, Tensor> | undefined;
    try {
      // No signal: nothing can abort a run that holds the thread, and the client was there when it started.
      out = this.table.trySubmitSync(entry, inputs, outputs ? { outputs } : {});
    } catch (e) {
      this.countFailure(entry, route, e);
    }
    if (out) m.ok.inc();
    return out;
  }

  /** Runs the request through the model's scheduler (queue limit, priorities, batching); `signal` stops it (the client went away). */
  async infer(entry: ReadyEntry, inputs: Record<string, Tensor>, route: string, signal: AbortSignal | undefined, outputs?: string[], params: RequestParameters = {}): Promise<Record<string, Tensor>> {
    const m = this.metricsFor(entry, route);
    let out: Record<string, Tensor>;
    try {
      out = await this.table.submit(entry, inputs, { ...(signal ? { signal } : {}), ...(outputs ? { outputs } : {}), ...params });
    } catch (e) {
      this.countFailure(entry, route, e);
    }
    m.ok.inc();
    return out;
  }
}

/** A request's `priority` and `timeout` from KServe-style `parameters` (or the MLOS v1 body's). */
export function requestParameters(p: unknown): RequestParameters {
  if (p === undefined || p === null) return {};
  if (typeof p !== "object" || Array.isArray(p)) throw new HttpError(400, "BAD_REQUEST", '"parameters" must be an object');
  const { priority, timeout } = p as { priority?: unknown; timeout?: unknown };
  if (priority !== undefined && !Number.isSafeInteger(priority)) throw new HttpError(400, "BAD_REQUEST", `parameters.priority must be an integer, got ${JSON.stringify(priority)}`);
  if (timeout !== undefined && !(typeof timeout === "number" && timeout > 0 && Number.isFinite(timeout))) throw new HttpError(400, "BAD_REQUEST", `parameters.timeout must be a positive number of milliseconds, got ${JSON.stringify(timeout)}`);
  return { ...(priority !== undefined ? { priority: priority as number } : {}), ...(timeout !== undefined ? { timeoutMs: timeout as number } : {}) };
}

/** Disposes every tensor (request inputs and outputs once answered). */
export function disposeAll(ts: Iterable<Tensor>): void {
  for (const t of ts) t.dispose();
}
