/**
 * The server's Prometheus metrics (`GET /metrics`, text format), with prom-client: requests by
 * model and outcome, latency split into queue, compute and total, queue depth, loaded models and
 * their memory, and the tensor pool's use. Each server has its own registry. The families that
 * every request records into are request-metrics.ts's (prom-client's cost a microsecond a call).
 */
import client from "prom-client";
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
    client.collectDefaultMetrics({ register: this.registry, prefix: "mlos_process_" });
  }
}
