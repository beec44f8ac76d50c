/**
 * Per-model scheduling: a bounded queue (overflow is QUEUE_FULL, which the server answers 429 with
 * Retry-After), request priorities and timeouts, cancellation when the caller goes away, a limit
 * on runs in flight (the model's instances), and dynamic batching.
 *
 * Dynamic batching stacks the rows of queued requests into one pool tensor per input along the
 * batch dimension (the first dimension, when every input and output starts with the same named
 * one), runs the model once, and hands each caller its own rows of every output as views of the
 * batched output (no copy on the way back; the batched slice returns to the pool when the last
 * view is disposed). A batch goes when it reaches `maxBatchSize` (or a preferred size), when the
 * oldest request has waited `maxQueueDelayUs`, or at once when the model is idle and nothing else
 * is queued — so batching costs nothing at low load, and grows while the model is busy.
 */
import { MlosError } from "./errors.js";
import type { InferOptions, Model } from "./model.js";
import type { RunResult } from "./plugin.js";
import { dtypeInfo, type NumericDType } from "../tensor/dtype.js";
import { copyCounter, type TensorPool } from "../tensor/pool.js";
import { Tensor } from "../tensor/tensor.js";

export interface BatchingOptions {
  maxBatchSize: number;
  /** How long the oldest queued request may wait for others, in microseconds. */
  maxQueueDelayUs: number;
  /** Batch sizes to dispatch at as soon as they are reached. */
  preferredBatchSizes?: number[];
}

export interface SchedulerOptions {
  /** Requests admitted (queued + running) before QUEUE_FULL. */
  maxQueueDepth: number;
  /** Runs in flight at once (the model's instances). */
  instances: number;
  /** Dynamic batching, when the model's signature allows it. */
  batching?: BatchingOptions;
  /** Pool for stacked inputs. */
  pool: TensorPool;
}

export interface SubmitOptions {
  signal?: AbortSignal;
  /** Fails with RUN_TIMEOUT when not answered within this many ms (queue time included). */
  timeoutMs?: number;
  /** Higher runs first (default 0). */
  priority?: number;
  outputs?: string[];
}

interface Pending {
  inputs: Record<string, Tensor>;
  rows: number;
  options: SubmitOptions;
  enqueued: number;
  resolve: (r: RunResult) => void;
  reject: (e: unknown) => void;
  done: boolean;
  cleanup: () => void;
}

export interface SchedulerStats {
  batches: number;
  batchedRequests: number;
  /** Histogram of batch sizes run: size -> count. */
  batchSizes: Record<number, number>;
}

export class Scheduler {
  readonly #model: Model;
  readonly #options: SchedulerOptions;
  readonly #batchDim: string | undefined;
  readonly #queue: Pending[] = [];
  #running = 0;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** Requests a door holds for this model outside the queue (see `hold`). */
  #held = 0;
  readonly stats: SchedulerStats = { batches: 0, batchedRequests: 0, batchSizes: {} };
  /** Called with each finished request's queue and compute time (seconds). */
  onTimings?: (queueSeconds: number, computeSeconds: number, batchSize: number) => void;

  constructor(model: Model, options: SchedulerOptions) {
    this.#model = model;
    this.#options = options;
    this.#batchDim = options.batching && options.batching.maxBatchSize > 1 ? batchDimension(model) : undefined;
  }

  /** True when requests to this model are batched. */
  get batching(): boolean {
    return this.#batchDim !== undefined;
  }

  /** Requests admitted and not answered. */
  get pending(): number {
    return this.#queue.length + this.#running + this.#held;
  }

  /** The most rows one batch takes (1 when the model is not batched). */
  get maxBatchSize(): number {
    return this.#batchDim ? this.#options.batching!.maxBatchSize : 1;
  }

  submit(inputs: Record<string, Tensor>, options: SubmitOptions = {}): Promise<RunResult> {
    if (this.pending >= this.#options.maxQueueDepth) {
      return Promise.reject(new MlosError("QUEUE_FULL", `model ${this.#model.name} has ${this.pending} requests pending (the limit is ${this.#options.maxQueueDepth}); retry later`, { pending: this.pending }));
    }
    if (options.signal?.aborted) return Promise.reject(new MlosError("RUN_ABORTED", "the request was cancelled before it ran"));
    return new Promise<RunResult>((resolve, reject) => {
      const p: Pending = { inputs, rows: this.#rowsOf(inputs), options, enqueued: performance.now(), resolve, reject, done: false, cleanup: noop };
      if (!this.#batchDim && this.#queue.length === 0 && this.#running < this.#options.instances) {
        // Runs now: nothing to wait for, so no queue-time listeners or timers to set up.
        this.#start([p]);
        return;
      }
      const finish = (e: unknown) => {
        if (p.done) return;
        const i = this.#queue.indexOf(p);
        if (i >= 0) {
          this.#queue.splice(i, 1); // still queued: it never runs
          p.done = true;
          p.cleanup();
          reject(e);
        }
      };
      const onAbort = () => finish(new MlosError("RUN_ABORTED", "the request was cancelled while queued"));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const timer = options.timeoutMs !== undefined ? setTimeout(() => finish(new MlosError("RUN_TIMEOUT", `the request waited longer than its ${options.timeoutMs} ms timeout`, { timeoutMs: options.timeoutMs })), options.timeoutMs) : undefined;
      p.cleanup = () => {
        options.signal?.removeEventListener("abort", onAbort);
        if (timer) clearTimeout(timer);
      };
      // Priority order; FIFO within a priority.
      const prio = options.priority ?? 0;
      let at = this.#queue.length;
      while (at > 0 && (this.#queue[at - 1]!.options.priority ?? 0) < prio) at--;
      this.#queue.splice(at, 0, p);
      this.#pump();
    });
  }

  /**
   * Runs a request at once on the calling thread when nothing is queued, an instance is free, the
   * model is not batched and its plugin runs it inline anyway; undefined otherwise (nothing ran).
   */
  trySubmitSync(inputs: Record<string, Tensor>, options: SubmitOptions = {}): RunResult | undefined {
    if (this.#batchDim || this.#queue.length > 0 || this.#running >= this.#options.instances || options.timeoutMs !== undefined) return undefined;
    if (options.signal?.aborted) throw new MlosError("RUN_ABORTED", "the request was cancelled before it ran");
    const started = performance.now();
    this.#running++;
    try {
      const out = this.#model.inferSync(inputs, this.#inferOptions(options));
      if (out) this.onTimings?.(0, (performance.now() - started) / 1000, 1);
      return out;
    } finally {
      this.#running--;
    }
  }

  /**
   * Runs `fn` on the calling thread now, as one of the model's runs, when the model could start a
   * run at once (nothing queued, an instance free); returns undefined without calling it otherwise.
   * This is how a door runs a plugin's capability (a native codec that decodes, runs and encodes
   * in one call): it counts against the model's instances like any run, and never overtakes a
   * queued request.
   */
  runInline<R>(fn: () => R): R | undefined {
    if (this.#queue.length > 0 || this.#running >= this.#options.instances) return undefined;
    this.#running++;
    try {
      return fn();
    } finally {
      this.#running--;
    }
  }

  /**
   * Counts `n` requests that a door holds for this model before it runs them (for instance until
   * the end of an event-loop turn, to batch them): they are pending (the queue limit counts them,
   * and the model is not evicted under them) until the returned function is called. Undefined when
   * the queue limit would be passed.
   */
  hold(n = 1): (() => void) | undefined {
    if (this.pending + n > this.#options.maxQueueDepth) return undefined;
    this.#held += n;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#held -= n;
    };
  }

  /** Counts a batch of `requests` run outside the queue (by a door, through `runInline`) in the stats. */
  recordBatch(requests: number): void {
    if (requests <= 0) return;
    this.stats.batches++;
    this.stats.batchedRequests += requests;
    this.stats.batchSizes[requests] = (this.stats.batchSizes[requests] ?? 0) + 1;
  }

  /** The rows a request adds to a batch (its inputs' first dimension), or 0 when it cannot be batched. */
  #rowsOf(inputs: Record<string, Tensor>): number {
    if (!this.#batchDim) return 0;
    let rows = -1;
    for (const spec of this.#model.inputs) {
      const t = inputs[spec.name];
      // A request that does not fit the signature runs alone, where the model's checks answer it:
      // stacked, its bytes would be read as another dtype (or past the batch's buffer).
      if (!(t instanceof Tensor) || t.disposed || t.dtype === "string" || t.dtype !== spec.dtype || t.shape.length === 0 || t.shape.length !== spec.shape.length) return 0;
      if (rows === -1) rows = t.shape[0]!;
      else if (t.shape[0] !== rows) return 0;
    }
    return rows > 0 ? rows : 0;
  }

  #pump(): void {
    while (this.#running < this.#options.instances && this.#queue.length > 0) {
      const head = this.#queue[0]!;
      if (!this.#batchDim || head.rows === 0) {
        this.#queue.shift();
        this.#start([head]);
        continue;
      }
      const batch = this.#takeBatch(false);
      if (!batch) break;
      this.#start(batch);
    }
    this.#arm();
  }

  /**
   * The requests that make the next batch: compatible with the head (same non-batch dims), up to
   * maxBatchSize rows. Returns undefined when it should wait for more (only when `force` is false).
   */
  #takeBatch(force: boolean): Pending[] | undefined {
    const b = this.#options.batching!;
    const head = this.#queue[0]!;
    const group: Pending[] = [];
    let rows = 0;
    for (const p of this.#queue) {
      if (p.rows === 0 || !sameTail(p.inputs, head.inputs, this.#model)) continue;
      if (rows + p.rows > b.maxBatchSize && group.length > 0) break;
      group.push(p);
      rows += p.rows;
      if (rows >= b.maxBatchSize) break;
    }
    const waited = (performance.now() - head.enqueued) * 1000;
    const full = rows >= b.maxBatchSize || (b.preferredBatchSizes?.includes(rows) ?? false);
    // Idle model, nothing else queued: waiting would only add latency.
    const alone = this.#running === 0 && group.length === this.#queue.length && !this.#arrivingSoon;
    if (!force && !full && waited < b.maxQueueDelayUs && !alone) return undefined;
    for (const p of group) this.#queue.splice(this.#queue.indexOf(p), 1);
    return group;
  }

  /** Set for one turn of the event loop after a request arrived, so that a burst is batched together. */
  #arrivingSoon = false;

  #arm(): void {
    if (!this.#batchDim || this.#queue.length === 0 || this.#running >= this.#options.instances) return;
    // Give requests that arrive in this turn of the event loop a chance to join the batch.
    if (!this.#immediate) {
      this.#arrivingSoon = true;
      this.#immediate = setImmediate(() => {
        this.#immediate = undefined;
        this.#arrivingSoon = false;
        this.#pump();
      });
    }
    if (!this.#timer) {
      const head = this.#queue[0]!;
      const delayMs = Math.max(0, this.#options.batching!.maxQueueDelayUs / 1000 - (performance.now() - head.enqueued));
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (this.#queue.length > 0 && this.#running < this.#options.instances) {
          const batch = this.#takeBatch(true);
          if (batch && batch.length > 0) this.#start(batch);
        }
        this.#pump();
      }, delayMs);
    }
  }

  #start(group: Pending[]): void {
    for (const p of group) {
      p.done = true;
      p.cleanup();
    }
    this.#running++;
    const started = performance.now();
    const run = this.#batchDim && group[0]!.rows > 0 ? this.#runBatch(group) : this.#runOne(group[0]!);
    run.finally(() => {
      const compute = (performance.now() - started) / 1000;
      for (const p of group) this.onTimings?.((started - p.enqueued) / 1000, compute, group.length);
      this.#running--;
      this.#pump();
    });
  }

  async #runOne(p: Pending): Promise<void> {
    try {
      const o = this.#inferOptions(p.options);
      if (p.options.timeoutMs !== undefined) {
        // What is left of the request's timeout once it leaves the queue bounds the run itself.
        const left = p.options.timeoutMs - (performance.now() - p.enqueued);
        if (left <= 0) throw new MlosError("RUN_TIMEOUT", `the request waited longer than its ${p.options.timeoutMs} ms timeout`, { timeoutMs: p.options.timeoutMs });
        o.timeoutMs = left;
      }
      p.resolve(await this.#model.infer(p.inputs, o));
    } catch (e) {
      p.reject(e);
    }
  }

  #inferOptions(o: SubmitOptions): InferOptions {
    return { ...(o.outputs ? { outputs: o.outputs } : {}), ...(o.signal ? { signal: o.signal } : {}) };
  }

  async #runBatch(group: Pending[]): Promise<void> {
    this.recordBatch(group.length);
    if (group.length === 1) return this.#runOne(group[0]!);
    const rows = group.reduce((a, p) => a + p.rows, 0);
    const stacked: Record<string, Tensor> = {};
    try {
      for (const spec of this.#model.inputs) {
        const first = group[0]!.inputs[spec.name]!;
        const t = this.#options.pool.tensor(first.dtype as NumericDType, [rows, ...first.shape.slice(1)]);
        stacked[spec.name] = t;
        const dst = bytesOf(t.data as unknown as ArrayBufferView);
        let at = 0;
        for (const p of group) {
          const src = bytesOf(p.inputs[spec.name]!.data as unknown as ArrayBufferView);
          dst.set(src, at);
          at += src.byteLength;
        }
        copyCounter.bytes += at;
      }
    } catch (e) {
      for (const t of Object.values(stacked)) t.dispose();
      // No room to stack (or an input that cannot be): run them one by one.
      if ((e as MlosError).code === "POOL_EXHAUSTED") {
        for (const p of group) await this.#runOne(p);
        return;
      }
      for (const p of group) p.reject(e);
      return;
    }
    let out: RunResult;
    try {
      out = await this.#model.infer(stacked, this.#inferOptions(group[0]!.options.outputs ? { outputs: group[0]!.options.outputs } : {}));
    } catch (e) {
      for (const p of group) p.reject(e);
      return;
    } finally {
      for (const t of Object.values(stacked)) t.dispose();
    }
    // Each caller gets views of its rows; the batched outputs go back to the pool with the last view.
    const outputs = Object.entries(out);
    let live = group.length * outputs.length;
    const releaseOne = () => {
      if (--live === 0) for (const [, t] of outputs) t.dispose();
    };
    let row = 0;
    for (const p of group) {
      const mine: RunResult = {};
      for (const [name, t] of outputs) {
        const perRow = t.shape[0] === rows ? t.size / rows : 0;
        const view = perRow > 0 ? sliceRows(t, row, p.rows, perRow, releaseOne) : (releaseOne(), t);
        mine[name] = view;
      }
      row += p.rows;
      p.resolve(p.options.outputs ? Object.fromEntries(p.options.outputs.map((n) => [n, mine[n]!])) : mine);
    }
  }
}

const noop = (): void => undefined;

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Rows [start, start + count) of `t` as a tensor viewing the same memory. */
function sliceRows(t: Tensor, start: number, count: number, perRow: number, release: () => void): Tensor {
  const data = t.data as unknown as { subarray(a: number, b: number): unknown };
  const lanes = dtypeInfo(t.dtype).lanes;
  const from = start * perRow * lanes;
  const view = data.subarray(from, from + count * perRow * lanes);
  return new Tensor(t.dtype, [count, ...t.shape.slice(1)], view as never, release);
}

/** Whether two requests' inputs agree on every dimension but the first. */
function sameTail(a: Record<string, Tensor>, b: Record<string, Tensor>, model: Model): boolean {
  for (const spec of model.inputs) {
    const x = a[spec.name]!.shape;
    const y = b[spec.name]!.shape;
    if (x.length !== y.length) return false;
    for (let i = 1; i < x.length; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/**
 * The batch dimension's name when the model can be batched: every input and output starts with
 * the same named (dynamic) dimension. Undefined otherwise.
 */
export function batchDimension(model: Model): string | undefined {
  const first = model.inputs[0]?.shape[0];
  if (typeof first !== "string") return undefined;
  const all = [...model.inputs, ...model.outputs];
  return all.every((t) => t.shape[0] === first && t.dtype !== "string") ? first : undefined;
}
