/**
 * The server's Prometheus metrics (`GET /metrics`, text format), with prom-client: requests by
 * model and outcome, latency split into queue, compute and total, queue depth, loaded models and
 * their memory, and the tensor pool's use. Each server has its own registry. The families that
 * every request records into are request-metrics.ts's (prom-client's cost a microsecond a call).
 */
import client from "prom-client";
import type { GenerationEngine } from "../core/generation/engine.js";
import type { ModelTable } from "../core/model-table.js";
import type { TensorPool } from "../tensor/pool.js";
import { CounterFamily, HistogramFamily } from "./request-metrics.js";

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ServerMetrics {
  readonly registry = new client.Registry();
  readonly requests: CounterFamily<"model" | "route" | "outcome">;
  readonly latency: HistogramFamily<"model" | "phase">;
  readonly batchSize: HistogramFamily<"model">;
  readonly evictions: CounterFamily<"reason">;
  /** Run before each scrape: doors whose counts live elsewhere (the IPC door's native ones) bring them in. */
  readonly beforeScrape: Array<() => void> = [];
  /** Language models' engines by model label, for the gauges read at scrape time. */
  readonly #engines = new Map<string, GenerationEngine>();
  readonly #llm: {
    ttft: HistogramFamily<"model">;
    itl: HistogramFamily<"model">;
    promptTokens: CounterFamily<"model">;
    generatedTokens: CounterFamily<"model">;
    preemptions: CounterFamily<"model">;
    requests: CounterFamily<"model" | "finish">;
  };

  /** The registry's text exposition, after the beforeScrape hooks ran. */
  async text(): Promise<string> {
    for (const f of this.beforeScrape) f();
    return this.registry.metrics();
  }

  constructor(table: ModelTable, pool: TensorPool) {
    const registers = [this.registry];
    this.requests = new CounterFamily("mlos_requests_total", "Inference requests by model, route and outcome (ok, client_error, server_error, rejected)", ["model", "route", "outcome"], registers);
    this.latency = new HistogramFamily("mlos_request_duration_seconds", "Inference latency by phase: queue (admitted to started), compute (the model's run), total (request received to response written)", ["model", "phase"], LATENCY_BUCKETS, registers);
    this.evictions = new CounterFamily("mlos_evictions_total", "Models unloaded to make room in the memory budget (memory) or after the keep-alive (idle)", ["reason"], registers);
    this.batchSize = new HistogramFamily("mlos_batch_size", "Requests per model run (1 without batching)", ["model"], [1, 2, 4, 8, 16, 32, 64, 128], registers);
    new client.Gauge({
      name: "mlos_queue_depth",
      help: "Requests admitted and not answered yet, per model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const e of table.list()) this.set({ model: `${e.name}@${e.version}` }, e.scheduler?.pending ?? 0);
      },
    });
    new client.Gauge({
      name: "mlos_models_loaded",
      help: "Registered models that are loaded and ready",
      registers,
      collect() {
        this.set(table.list().filter((e) => e.state === "ready").length);
      },
    });
    new client.Gauge({
      name: "mlos_model_memory_bytes",
      help: "Estimated memory of each loaded model",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const e of table.list()) if (e.model) this.set({ model: `${e.name}@${e.version}` }, e.model.memoryBytes);
      },
    });
    new client.Gauge({
      name: "mlos_pool_bytes",
      help: "The request tensor pool: capacity, used, high-water mark",
      labelNames: ["kind"],
      registers,
      collect() {
        if (pool.closed) return;
        const s = pool.stats();
        this.set({ kind: "capacity" }, s.capacity);
        this.set({ kind: "used" }, s.used);
        this.set({ kind: "high_water" }, s.highWater);
      },
    });
    const engines = this.#engines;
    this.#llm = {
      ttft: new HistogramFamily("mlos_llm_time_to_first_token_seconds", "Language models: from a request's arrival to its first generated token", ["model"], LATENCY_BUCKETS, registers),
      itl: new HistogramFamily("mlos_llm_inter_token_latency_seconds", "Language models: time between two tokens of one sequence", ["model"], LATENCY_BUCKETS, registers),
      promptTokens: new CounterFamily("mlos_llm_prompt_tokens_total", "Language models: prompt tokens of the requests (times n)", ["model"], registers),
      generatedTokens: new CounterFamily("mlos_llm_generation_tokens_total", "Language models: tokens generated", ["model"], registers),
      preemptions: new CounterFamily("mlos_llm_preemptions_total", "Language models: sequences preempted (their KV blocks freed, recomputed later) for lack of KV cache", ["model"], registers),
      requests: new CounterFamily("mlos_llm_requests_total", "Language models: generation requests finished, by reason (stop, length, abort)", ["model", "finish"], registers),
    };
    new client.Gauge({
      name: "mlos_llm_sequences",
      help: "Language models: sequences running (in the batch) and waiting",
      labelNames: ["model", "state"],
      registers,
      collect() {
        this.reset();
        for (const [model, e] of engines) {
          const st = e.stats();
          this.set({ model, state: "running" }, st.running);
          this.set({ model, state: "waiting" }, st.waiting);
        }
      },
    });
    new client.Gauge({
      name: "mlos_llm_kv_cache_usage_ratio",
      help: "Language models: share of the KV cache's blocks in use by sequences",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const [model, e] of engines) this.set({ model }, e.stats().kvUsage);
      },
    });
    new client.Gauge({
      name: "mlos_llm_prefix_cache_tokens",
      help: "Language models: prompt tokens looked up in the prefix cache (queried) and found there (hit)",
      labelNames: ["model", "kind"],
      registers,
      collect() {
        this.reset();
        for (const [model, e] of engines) {
          const st = e.stats();
          this.set({ model, kind: "queried" }, st.prefixQueriedTokens);
          this.set({ model, kind: "hit" }, st.prefixHitTokens);
        }
      },
    });
    client.collectDefaultMetrics({ register: this.registry, prefix: "mlos_process_" });
  }

  /** Records a language model's engine (once per engine): its timings and token counts, and its gauges. */
  observeEngine(model: string, engine: GenerationEngine): void {
    if (this.#engines.get(model) === engine) return;
    this.#engines.set(model, engine);
    const m = this.#llm;
    const ttft = m.ttft.labels({ model });
    const itl = m.itl.labels({ model });
    const prompt = m.promptTokens.labels({ model });
    const generated = m.generatedTokens.labels({ model });
    const preempted = m.preemptions.labels({ model });
    engine.observer = {
      firstToken: (s) => ttft.observe(s),
      interToken: (s) => itl.observe(s),
      promptTokens: (n) => prompt.inc(n),
      generatedTokens: (n) => generated.inc(n),
      preempted: () => preempted.inc(),
      requestDone: (finish) => m.requests.inc({ model, finish }),
    };
  }
}
