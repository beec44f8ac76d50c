// The per-model scheduler: dynamic batching gives every caller its own rows, requests that cannot
// share a batch are kept apart, the queue has a limit, and queued requests can be cancelled, time
// out and be overtaken by higher priorities. Pool memory returns once outputs are disposed.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { Axon, MlosError, Runtime, Tensor, TensorPool, seedDemoModels, type Model } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { Scheduler, batchDimension } from "../src/core/scheduler.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";

const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";
const isCode = (code: string) => (e: unknown) => e instanceof MlosError && e.code === code;

function floats(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => r() * 2 - 1);
}

describe("Scheduler", { skip }, () => {
  let runtime: Runtime;
  let mlp: Model;
  let cnn: Model;
  let embedder: Model;

  before(async () => {
    const axon = new Axon({ home: mkdtempSync(path.join(tmpdir(), "mlos-sched-")) });
    await seedDemoModels(axon);
    runtime = new Runtime({ axon });
    mlp = await runtime.load("demo/mlp@1", { intraOpThreads: 1, runMode: "async" });
    cnn = await runtime.load("demo/tiny-cnn@1", { intraOpThreads: 1 });
    embedder = await runtime.load("demo/embedder@1", { intraOpThreads: 1 });
  });

  it("finds the batch dimension", () => {
    assert.equal(batchDimension(mlp), "batch");
    assert.equal(batchDimension(cnn), "batch");
  });

  it("batches concurrent requests and gives each caller its own rows", async () => {
    const pool = new TensorPool({ size: 8 << 20 });
    const s = new Scheduler(mlp, { maxQueueDepth: 100, instances: 1, batching: { maxBatchSize: 16, maxQueueDelayUs: 5000 }, pool });
    const xs = Array.from({ length: 40 }, (_, i) => Tensor.float32([1 + (i % 3), 4], floats(4 * (1 + (i % 3)), i)));
    const expected = await Promise.all(xs.map((x) => mlp.infer({ x })));
    const before = pool.stats().live;
    const got = await Promise.all(xs.map((x) => s.submit({ x })));
    got.forEach((g, i) => {
      assert.deepEqual(g.y!.shape, expected[i]!.y!.shape, `request ${i}: its own number of rows`);
      assert.deepEqual([...(g.y!.data as Float32Array)], [...(expected[i]!.y!.data as Float32Array)], `request ${i}: its own rows`);
    });
    assert.ok(s.stats.batches < 40, `fewer runs than requests (${s.stats.batches})`);
    assert.ok(Math.max(...Object.keys(s.stats.batchSizes).map(Number)) > 1, `some batches hold several requests: ${JSON.stringify(s.stats.batchSizes)}`);
    for (const g of got) g.y!.dispose();
    assert.equal(pool.stats().live, before, "the stacked inputs and batched outputs went back to the pool");
    pool.close();
  });

  it("keeps requests whose other dimensions differ in separate batches", async () => {
    const s = new Scheduler(embedder, { maxQueueDepth: 100, instances: 1, batching: { maxBatchSize: 8, maxQueueDelayUs: 5000 }, pool: new TensorPool({ size: 8 << 20 }) });
    const reqs = Array.from({ length: 12 }, (_, i) => Tensor.int64([1, 3 + (i % 2) * 4], Array.from({ length: 3 + (i % 2) * 4 }, (_, j) => (i * 7 + j) % 50)));
    const expected = await Promise.all(reqs.map((input_ids) => embedder.infer({ input_ids })));
    const got = await Promise.all(reqs.map((input_ids) => s.submit({ input_ids })));
    // A batch may take another vectorised path through the kernels: equal within float rounding.
    got.forEach((g, i) => {
      const a = g.embedding!.data as Float32Array;
      const b = expected[i]!.embedding!.data as Float32Array;
      assert.equal(a.length, b.length);
      a.forEach((v, j) => assert.ok(Math.abs(v - b[j]!) <= 1e-6 * Math.max(1, Math.abs(b[j]!)), `request ${i}[${j}]: ${v} vs ${b[j]}`));
    });
  });

  it("refuses requests past its queue depth with QUEUE_FULL", async () => {
    const s = new Scheduler(cnn, { maxQueueDepth: 3, instances: 1, pool: new TensorPool({ size: 32 << 20 }) });
    const image = Tensor.float32([4, 3, 224, 224], floats(4 * 3 * 224 * 224, 1));
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => s.submit({ image })));
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 3);
    for (const r of results.filter((r) => r.status === "rejected")) assert.ok(isCode("QUEUE_FULL")((r as PromiseRejectedResult).reason));
  });

  it("cancels, times out and reorders queued requests", async () => {
    const s = new Scheduler(cnn, { maxQueueDepth: 100, instances: 1, pool: new TensorPool({ size: 64 << 20 }) });
    const image = Tensor.float32([8, 3, 224, 224], floats(8 * 3 * 224 * 224, 2));
    const order: string[] = [];
    const busy = s.submit({ image }).then(() => order.push("busy"));
    const ac = new AbortController();
    const cancelled = s.submit({ image }, { signal: ac.signal });
    const timedOut = s.submit({ image }, { timeoutMs: 1 });
    const low = s.submit({ image }, { priority: 0 }).then(() => order.push("low"));
    const high = s.submit({ image }, { priority: 5 }).then(() => order.push("high"));
    ac.abort();
    await assert.rejects(cancelled, isCode("RUN_ABORTED"));
    await assert.rejects(timedOut, isCode("RUN_TIMEOUT"));
    await Promise.all([busy, low, high]);
    assert.deepEqual(order, ["busy", "high", "low"]);
    assert.equal(s.pending, 0);
  });
});
