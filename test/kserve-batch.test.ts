// The batched KServe v2 JSON fast path, end to end on the demo MLP (x float32 [batch,4] ->
// y float32 [batch,3]): requests that arrive in one event-loop turn are stacked into one ONNX
// Runtime run by the native codec (KserveFastPath.join -> the plugin's kserve-v2-json codec,
// runBatchSync -> runKserveJsonBatch), and each gets its own rows back, byte-for-byte what the general JS path
// answers for the same request (forced here by adding `"parameters":{}` to the request).
// In-process serve() for the table-level checks, an `axon serve` child for HTTP under load.
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Axon, Tensor, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import type { Model } from "../src/core/model.js";
import type { ReadyEntry } from "../src/core/model-table.js";
import { KSERVE_JSON_CODEC, LATER, type KserveNativeCodec } from "../src/protocol/kserve.js";
import { KserveFastPath } from "../src/server/kserve-fast-path.js";
import { BATCH_MAX_US } from "../src/core/run-policy.js";
import type { Scheduler } from "../src/core/scheduler.js";
import { serve, type RunningServer } from "../src/server/serve.js";
import { MLP, mlpWeights, mulberry32 } from "../src/tools/make-demo-models.js";
import { startServer, stop, type Served } from "./helpers/axon-serve.js";
import { freePort } from "./helpers/registry.js";

const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";

const MAX_ROWS = 8;

// ---- requests and their expected answers ---------------------------------------------------------------

interface Req {
  id?: string;
  rows: number;
  data: number[];
  text: string;
}

function makeReq(rows: number, data: number[], id?: string): Req {
  const body: Record<string, unknown> = {};
  if (id !== undefined) body.id = id;
  body.inputs = [{ name: "x", shape: [rows, MLP.inFeatures], datatype: "FP32", data }];
  return { id, rows, data, text: JSON.stringify(body) };
}

function randomReq(r: () => number, rows: number, id?: string): Req {
  return makeReq(rows, Array.from({ length: rows * MLP.inFeatures }, () => r() * 4 - 2), id);
}

/** The same request with `"parameters":{}` first: the fast path declines it, the general JS path answers. */
function generalText(text: string): string {
  assert.ok(text.startsWith("{") && text.length > 2);
  return `{"parameters":{},${text.slice(1)}`;
}

const W = mlpWeights();

/** The MLP's forward pass in float64 over the float32-rounded inputs: one row of softmax probabilities per row. */
function referenceMlp(data: readonly number[], rows: number): number[][] {
  const { inFeatures: n, hidden: h, classes: c } = MLP;
  const out: number[][] = [];
  for (let row = 0; row < rows; row++) {
    const x = data.slice(row * n, row * n + n).map(Math.fround);
    const hid = Array.from({ length: h }, (_, j) => {
      let s = W.b1[j]!;
      for (let k = 0; k < n; k++) s += W.w1[j * n + k]! * x[k]!;
      return Math.max(0, s);
    });
    const logits = Array.from({ length: c }, (_, j) => {
      let s = W.b2[j]!;
      for (let k = 0; k < h; k++) s += W.w2[j * h + k]! * hid[k]!;
      return s;
    });
    const m = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - m));
    const sum = e.reduce((a, b) => a + b, 0);
    out.push(e.map((v) => v / sum));
  }
  return out;
}

interface InferResponse {
  id?: string;
  model_name: string;
  model_version: string;
  outputs: Array<{ name: string; datatype: string; shape: number[]; data: number[] }>;
}

/** Asserts a parsed response is the request's own answer: its id (or none), y [rows,3] FP32, values within `tol` of the reference. */
function assertAnswers(res: InferResponse, req: Req, tol: number, what: string): void {
  if (req.id === undefined) assert.ok(!("id" in res), `${what}: a request without an id gets none back, got ${JSON.stringify(res.id)}`);
  else assert.equal(res.id, req.id, `${what}: its own id`);
  assert.equal(res.model_name, "mlp", what);
  assert.equal(res.outputs.length, 1, what);
  const y = res.outputs[0]!;
  assert.equal(y.name, "y", what);
  assert.equal(y.datatype, "FP32", what);
  assert.deepEqual(y.shape, [req.rows, MLP.classes], what);
  assert.equal(y.data.length, req.rows * MLP.classes, what);
  const ref = referenceMlp(req.data, req.rows).flat();
  for (let i = 0; i < ref.length; i++) {
    assert.ok(Math.abs(y.data[i]! - ref[i]!) <= tol, `${what}: y[${i}] = ${y.data[i]}, reference ${ref[i]} (rows ${req.rows}, data ${JSON.stringify(req.data)})`);
  }
}

const decode = (b: Uint8Array): InferResponse => JSON.parse(Buffer.from(b).toString("utf8")) as InferResponse;

// ---- HTTP ----------------------------------------------------------------------------------------------

async function post(base: string, text: string, model = "mlp"): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${base}/v2/models/${model}/infer`, { method: "POST", body: text, headers: { "Content-Type": "application/json" } });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** The general path's answer to a request (200 expected). */
async function general(base: string, text: string): Promise<Buffer> {
  const r = await post(base, generalText(text));
  assert.equal(r.status, 200, `general path: ${r.bytes.toString()}`);
  return r.bytes;
}

/** Runs `n` jobs with `concurrency` workers. */
async function pooled(n: number, concurrency: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await job(next++);
  }));
}

interface Metrics {
  batchCount: number;
  batchLe1: number;
  ok: number;
  clientErrors: number;
  serverErrors: number;
}

async function readMetrics(base: string, label: string): Promise<Metrics> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const esc = label.replace(/[.@]/g, (c) => `\\${c}`);
  const num = (re: RegExp): number => {
    const m = re.exec(text);
    return m ? Number(m[1]) : 0;
  };
  return {
    batchCount: num(new RegExp(`^mlos_batch_size_count\\{model="${esc}"\\} (\\d+)`, "m")),
    batchLe1: num(new RegExp(`^mlos_batch_size_bucket\\{(?:le="1",model="${esc}"|model="${esc}",le="1")\\} (\\d+)`, "m")),
    ok: num(new RegExp(`^mlos_requests_total\\{model="${esc}",route="kserve",outcome="ok"\\} (\\d+)`, "m")),
    clientErrors: num(new RegExp(`^mlos_requests_total\\{model="${esc}",route="kserve",outcome="client_error"\\} (\\d+)`, "m")),
    serverErrors: num(new RegExp(`^mlos_requests_total\\{model="${esc}",route="kserve",outcome="server_error"\\} (\\d+)`, "m")),
  };
}

/** A copy of the demo MLP's package whose manifest batches up to `maxRows` rows (the manifest's setting wins over the server's). */
function mlpPackage(home: string, maxRows: number): string {
  const src = path.join(home, "models", "demo", "mlp", "1.0.0");
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-mlp-"));
  cpSync(src, dir, { recursive: true });
  const manifest = path.join(dir, "axon.yaml");
  const text = readFileSync(manifest, "utf8");
  assert.match(text, /max_batch_size: 64/);
  writeFileSync(manifest, text.replace(/max_batch_size: 64/, `max_batch_size: ${maxRows}`));
  return dir;
}

/**
 * Sequential requests until the ONNX Runtime plugin's run policy has measured the model as one
 * that runs inline (the batched fast path waits for that). 16-row inputs, so that the requests
 * the tests send (a few rows, up to 20) are within the sizes it measured.
 */
async function warmUp(base: string, inline: () => boolean): Promise<void> {
  const r = mulberry32(7);
  for (let i = 0; i < 200 && !inline(); i++) {
    const res = await post(base, randomReq(r, 16).text);
    assert.equal(res.status, 200, res.bytes.toString());
  }
  assert.ok(inline(), "the run policy measures the demo MLP as an inline model");
}

// ---- a spy on the model's batched runs -------------------------------------------------------------------

interface BatchCall {
  bodies: string[];
  out: Array<Uint8Array | typeof LATER | undefined> | undefined;
  maxRows: number;
}

/** Records each batched call the fast path makes to the model's codec (the real method runs). */
function spyBatches(model: Model): { calls: BatchCall[]; restore: () => void } {
  const calls: BatchCall[] = [];
  const codec = model.capability<KserveNativeCodec>(KSERVE_JSON_CODEC)!;
  const real = codec.runBatchSync;
  codec.runBatchSync = (bodies, name, version, maxRows) => {
    const out = real(bodies, name, version, maxRows);
    calls.push({ bodies: bodies.map((b) => Buffer.from(b).toString("utf8")), out, maxRows });
    return out;
  };
  return { calls, restore: () => void (codec.runBatchSync = real) };
}

/** First fit in order over `waiting` (request indices), up to `cap` rows: the indices one batch takes. */
function firstFit(waiting: number[], rows: number[], cap: number): number[] {
  let used = 0;
  const taken: number[] = [];
  for (const i of waiting) {
    if (used + rows[i]! <= cap) {
      taken.push(i);
      used += rows[i]!;
    }
  }
  return taken;
}

/**
 * Checks that `batches` (request indices per batch, in run order) is what the native packing makes
 * of valid, same-shape requests: each batch the first fit, in arrival order, of the requests still
 * waiting, at some row cap of at most `maxRows`. The cap is the run policy's (rows that fit its time
 * budget at the measured time per row), which a loaded machine can lower between two batches, so
 * each batch may have its own.
 */
function assertFirstFitPacking(batches: number[][], rows: number[], maxRows: number): void {
  let waiting = rows.map((_, i) => i);
  for (const [k, batch] of batches.entries()) {
    let fits = false;
    for (let cap = 1; cap <= maxRows && !fits; cap++) fits = JSON.stringify(firstFit(waiting, rows, cap)) === JSON.stringify(batch);
    assert.ok(fits, `batch ${k} ${JSON.stringify(batch.map((i) => rows[i]))} is the first fit in arrival order of the waiting ${JSON.stringify(waiting.map((i) => rows[i]))} at no cap up to ${maxRows}`);
    waiting = waiting.filter((i) => !batch.includes(i));
  }
  assert.deepEqual(waiting, [], "every request ran");
}

// ---- the in-process server --------------------------------------------------------------------------------

describe("batched KServe JSON fast path (in-process serve)", { skip }, () => {
  let home: string;
  let server: RunningServer;
  let base: string;
  let model: Model;
  let scheduler: Scheduler;
  let version: string;

  /**
   * Right before a burst: the run policy can send the model back to measuring (one inline run
   * preempted past 20 ms on a busy machine does it), and until it measures again the batch path
   * declines everything. Nothing the batch path does changes the policy, so this holds for the burst.
   */
  const ensureInline = () => warmUp(base, () => model.describe().inline === true);
  /** Joins this turn's batch, as the HTTP door does for the requests after the turn's first. */
  const fastPath = new KserveFastPath(KSERVE_JSON_CODEC);
  const join = (text: string) => fastPath.join(server.table.get("mlp") as ReadyEntry, Buffer.from(text));

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-kbatch-"));
    await seedDemoModels(new Axon({ home }));
    const port = await freePort();
    server = await serve({
      axon: new Axon({ home }),
      httpPort: port,
      host: "127.0.0.1",
      models: [`mlp=${mlpPackage(home, MAX_ROWS)}`],
      batching: { maxBatchSize: MAX_ROWS, maxQueueDelayUs: 500 },
    });
    base = `http://127.0.0.1:${port}`;
    const e = server.table.get("mlp");
    assert.equal(e.state, "ready");
    model = e.model!;
    scheduler = e.scheduler!;
    version = e.version;
    assert.equal(scheduler.batching, true, "the MLP is batched");
    assert.ok(model.capability(KSERVE_JSON_CODEC), "the ONNX Runtime plugin offers its native codec");
    await warmUp(base, () => model.describe().inline === true);
  });
  after(async () => {
    await server?.close();
  });

  it("stacks one turn's requests into batches of at most max_batch_size rows, each answered as the general path would", async () => {
    const r = mulberry32(11);
    const reqs = Array.from({ length: 20 }, (_, i) => randomReq(r, 1 + Math.floor(r() * 3), i % 3 === 0 ? `req-${i}` : undefined));
    const totalRows = reqs.reduce((a, q) => a + q.rows, 0);
    const expected: Buffer[] = [];
    for (const q of reqs) expected.push(await general(base, q.text));

    await ensureInline();
    // The run policy's row cap for the first batch (rows that fit its time budget at the measured
    // time per row); a slow batch on a loaded machine may lower it for the next ones.
    const policy = model.describe() as { batchRowMicros?: number; inlineAverageMicros?: number };
    const perRow = policy.batchRowMicros ?? policy.inlineAverageMicros ?? 0;
    const firstCap = perRow > 0 ? Math.max(1, Math.min(MAX_ROWS, Math.floor(BATCH_MAX_US / perRow))) : MAX_ROWS;
    const before = structuredClone(scheduler.stats);
    const spy = spyBatches(model);
    let results: Array<Uint8Array | undefined>;
    try {
      // All in this turn: they run together at setImmediate.
      const pending = reqs.map((q) => join(q.text));
      pending.forEach((p, i) => assert.ok(p instanceof Promise, `request ${i} takes the batched path`));
      assert.equal(spy.calls.length, 0, "nothing runs before the turn ends");
      results = await Promise.all(pending as Array<Promise<Uint8Array | undefined>>);
    } finally {
      spy.restore();
    }

    results.forEach((res, i) => {
      assert.ok(res instanceof Uint8Array, `request ${i} (${reqs[i]!.rows} rows) is answered by the batch path (run policy ${JSON.stringify(model.describe())})`);
      assert.equal(Buffer.from(res).toString("utf8"), expected[i]!.toString("utf8"), `request ${i}: byte-for-byte the general path's answer`);
      assertAnswers(decode(res), reqs[i]!, 1e-6, `request ${i}`);
    });

    // The batches, as the spy saw them: request indices per batch, rows per batch within max_batch_size.
    const indexOf = new Map(reqs.map((q, i) => [q.text, i]));
    assert.equal(indexOf.size, reqs.length, "the requests differ");
    const rows = reqs.map((q) => q.rows);
    const batches = spy.calls.map((c) => {
      assert.equal(c.maxRows, MAX_ROWS);
      assert.ok(c.out, "the plugin batches this model");
      const taken = c.bodies.filter((_, j) => c.out![j] instanceof Uint8Array);
      c.out!.forEach((o, j) => assert.ok(o instanceof Uint8Array || o === LATER, `call request ${j}: answered or left for the next batch, got ${String(o)}`));
      return taken.map((b) => indexOf.get(b)!);
    });
    for (const b of batches) assert.ok(b.reduce((a, i) => a + rows[i]!, 0) <= MAX_ROWS, `batch rows ${JSON.stringify(b.map((i) => rows[i]))} within ${MAX_ROWS}`);
    assert.equal(batches.flat().length, reqs.length, "every request ran exactly once");
    assert.ok(batches.length >= Math.ceil(totalRows / MAX_ROWS), `${totalRows} rows need at least ${Math.ceil(totalRows / MAX_ROWS)} batches, got ${batches.length}`);
    assert.deepEqual(batches[0], firstFit(rows.map((_, i) => i), rows, firstCap), `the first batch is the first fit in arrival order at the policy's cap of ${firstCap} rows`);
    if (firstCap >= 3) assert.ok(batches[0]!.length > 1, `requests of at most 3 rows share the first batch: ${JSON.stringify(batches)}`);
    assertFirstFitPacking(batches, rows, MAX_ROWS);

    // The scheduler's stats count the same batches.
    assert.equal(scheduler.stats.batches - before.batches, batches.length);
    assert.equal(scheduler.stats.batchedRequests - before.batchedRequests, reqs.length);
    const sizes: Record<number, number> = {};
    for (const b of batches) sizes[b.length] = (sizes[b.length] ?? 0) + 1;
    for (const [size, count] of Object.entries(sizes)) assert.equal((scheduler.stats.batchSizes[Number(size)] ?? 0) - (before.batchSizes[Number(size)] ?? 0), count, `batches of ${size} requests`);
  });

  it("declines exactly the requests it does not handle in a mixed batch, and answers the valid ones", async () => {
    const r = mulberry32(12);
    const valid = Array.from({ length: 8 }, (_, i) => randomReq(r, 1 + (i % 3), `ok-${i}`));
    const row = [0.5, -1, 2, 0.25];
    const invalid: Array<[string, string]> = [
      ["bad JSON", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}`],
      ["not JSON at all", "hello"],
      ["dimension 1 is 5", JSON.stringify({ id: "bad-1", inputs: [{ name: "x", shape: [1, 5], datatype: "FP32", data: [...row, 1] }] })],
      ["rank 3", JSON.stringify({ id: "bad-2", inputs: [{ name: "x", shape: [1, 1, 4], datatype: "FP32", data: row }] })],
      ["rank 1", JSON.stringify({ id: "bad-3", inputs: [{ name: "x", shape: [4], datatype: "FP32", data: row }] })],
      ["datatype INT32", JSON.stringify({ id: "bad-4", inputs: [{ name: "x", shape: [1, 4], datatype: "INT32", data: [1, 2, 3, 4] }] })],
      ["datatype FP64", JSON.stringify({ id: "bad-5", inputs: [{ name: "x", shape: [1, 4], datatype: "FP64", data: row }] })],
      ["unknown input", JSON.stringify({ id: "bad-6", inputs: [{ name: "z", shape: [1, 4], datatype: "FP32", data: row }] })],
      ["too few values", JSON.stringify({ id: "bad-7", inputs: [{ name: "x", shape: [2, 4], datatype: "FP32", data: row }] })],
      ["no inputs", JSON.stringify({ id: "bad-8" })],
      ["outputs key", JSON.stringify({ id: "bad-9", inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: row }], outputs: [{ name: "y" }] })],
      ["parameters key", JSON.stringify({ id: "bad-10", inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: row }], parameters: { priority: 1 } })],
      ["a string value", JSON.stringify({ id: "bad-11", inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, "4"] }] })],
    ];
    // Invalid ones first (the first one the native side takes sets the batch's shape), then interleaved.
    const order: Array<{ kind: "valid"; q: Req } | { kind: "invalid"; what: string; text: string }> = [];
    invalid.slice(0, 4).forEach(([what, text]) => order.push({ kind: "invalid", what, text }));
    valid.forEach((q, i) => {
      order.push({ kind: "valid", q });
      const bad = invalid[4 + i];
      if (bad) order.push({ kind: "invalid", what: bad[0], text: bad[1] });
    });
    invalid.slice(4 + valid.length).forEach(([what, text]) => order.push({ kind: "invalid", what, text }));
    assert.equal(order.length, valid.length + invalid.length);

    const expected = new Map<string, Buffer>();
    for (const q of valid) expected.set(q.text, await general(base, q.text));
    await ensureInline();
    // The run policy's row cap for the first batch (rows that fit its time budget at the measured
    // time per row); a slow batch on a loaded machine may lower it for the next ones.
    const policy = model.describe() as { batchRowMicros?: number; inlineAverageMicros?: number };
    const perRow = policy.batchRowMicros ?? policy.inlineAverageMicros ?? 0;
    const firstCap = perRow > 0 ? Math.max(1, Math.min(MAX_ROWS, Math.floor(BATCH_MAX_US / perRow))) : MAX_ROWS;
    const before = structuredClone(scheduler.stats);
    const pending = order.map((o) => join(o.kind === "valid" ? o.q.text : o.text));
    pending.forEach((p, i) => assert.ok(p instanceof Promise, `entry ${i} takes the batched path`));
    const results = await Promise.all(pending as Array<Promise<Uint8Array | undefined>>);
    order.forEach((o, i) => {
      const res = results[i];
      if (o.kind === "invalid") {
        assert.equal(res, undefined, `${o.what}: declined`);
      } else {
        assert.ok(res instanceof Uint8Array, `valid ${o.q.id}: answered`);
        assert.equal(Buffer.from(res).toString("utf8"), expected.get(o.q.text)!.toString("utf8"), `valid ${o.q.id}: the general path's bytes`);
        assertAnswers(decode(res), o.q, 1e-6, `valid ${o.q.id}`);
      }
    });
    assert.equal(scheduler.stats.batchedRequests - before.batchedRequests, valid.length, "only the valid requests ran batched");
    // 15 rows in all: two batches at least.
    assert.ok(scheduler.stats.batches - before.batches >= Math.ceil(valid.reduce((a, q) => a + q.rows, 0) / MAX_ROWS));

    // Over HTTP, in one burst: the declined ones get the general path's error, the same as when sent alone.
    const alone = new Map<string, { status: number; body: string }>();
    for (const [, text] of invalid) {
      const a = await post(base, text);
      alone.set(text, { status: a.status, body: a.bytes.toString() });
    }
    const burst = await Promise.all(order.map((o) => post(base, o.kind === "valid" ? o.q.text : o.text)));
    order.forEach((o, i) => {
      const got = burst[i]!;
      if (o.kind === "valid") {
        assert.equal(got.status, 200, got.bytes.toString());
        assert.equal(got.bytes.toString(), expected.get(o.q.text)!.toString(), `HTTP valid ${o.q.id}`);
      } else {
        const a = alone.get(o.text)!;
        // "outputs" and "parameters" are valid requests the fast path leaves to the general one;
        // every other declined request here is a client error.
        const valid = o.what === "outputs key" || o.what === "parameters key";
        assert.ok(valid ? a.status === 200 : a.status >= 400 && a.status < 500, `${o.what}: ${valid ? "answered" : "a client error"} when sent alone (${a.status} ${a.body})`);
        assert.deepEqual({ status: got.status, body: got.bytes.toString() }, a, `${o.what}: the same answer inside a burst`);
      }
    });
  });

  it("answers a request of more rows than max_batch_size, alone or among others", async () => {
    const r = mulberry32(13);
    const big = randomReq(r, 20, "big");
    const expectedBig = await general(base, big.text);
    assertAnswers(decode(expectedBig), big, 1e-6, "general path, 20 rows");

    const alone = await post(base, big.text);
    assert.equal(alone.status, 200, alone.bytes.toString());
    assert.equal(alone.bytes.toString(), expectedBig.toString(), "20 rows alone over HTTP");

    // Exactly max_batch_size rows fits a batch; more does not, and goes the general way.
    const full = randomReq(r, MAX_ROWS, "full");
    const small = [randomReq(r, 1, "s0"), randomReq(r, 2, "s1"), randomReq(r, 3, "s2")];
    const mixed = [small[0]!, big, small[1]!, full, small[2]!];
    const expected = new Map<string, Buffer>();
    for (const q of mixed) expected.set(q.text, await general(base, q.text));
    await ensureInline();
    const results = await Promise.all(mixed.map((q) => join(q.text)!));
    mixed.forEach((q, i) => {
      const res = results[i];
      if (q === big) {
        // Declined (the general path answers it) or run on its own: never a wrong answer.
        if (res !== undefined) assert.equal(Buffer.from(res).toString(), expectedBig.toString(), "20 rows in the batch path");
        return;
      }
      assert.ok(res instanceof Uint8Array, `${q.id} (${q.rows} rows): answered by the batch path`);
      assert.equal(Buffer.from(res).toString(), expected.get(q.text)!.toString(), `${q.id}: the general path's bytes`);
    });

    const burst = await Promise.all(mixed.map((q) => post(base, q.text)));
    mixed.forEach((q, i) => {
      assert.equal(burst[i]!.status, 200, burst[i]!.bytes.toString());
      assert.equal(burst[i]!.bytes.toString(), expected.get(q.text)!.toString(), `HTTP ${q.id} (${q.rows} rows)`);
      assertAnswers(JSON.parse(burst[i]!.bytes.toString()) as InferResponse, q, 1e-6, `HTTP ${q.id}`);
    });
  });

  it("echoes each request's own id, and none to a request without one", async () => {
    const r = mulberry32(14);
    const ids = ["a", "b-2", "x".repeat(300), "", "8", "/slash", "with spaces", "req-9"];
    // First a batch where every request has an id, then one at the same positions without ids
    // (the native side reuses its decoded requests from batch to batch), then every other one.
    const withIds = ids.map((id) => randomReq(r, 1 + (id.length % 2), id));
    const withoutIds = ids.map(() => randomReq(r, 1));
    const mixedIds = ids.map((id, i) => randomReq(r, 1, i % 2 === 0 ? undefined : `${id}-m`));
    for (const [name, round] of [["ids", withIds], ["no ids", withoutIds], ["mixed", mixedIds], ["ids again", withIds]] as const) {
      const expected: Buffer[] = [];
      for (const q of round) expected.push(await general(base, q.text));
      await ensureInline();
      const before = scheduler.stats.batchedRequests;
      const results = await Promise.all(round.map((q) => join(q.text)!));
      assert.equal(scheduler.stats.batchedRequests - before, round.length, `${name}: all ran batched`);
      results.forEach((res, i) => {
        assert.ok(res instanceof Uint8Array);
        assertAnswers(decode(res), round[i]!, 1e-6, `${name}: request ${i} (id ${JSON.stringify(round[i]!.id)})`);
        assert.equal(Buffer.from(res).toString(), expected[i]!.toString(), `${name}: request ${i}, the general path's bytes`);
      });
    }

    // Ids with escapes or beyond ASCII, and ids that are not strings: declined, or the general path's bytes.
    const odd: unknown[] = ['q"uote', "back\\slash", "uni\u00e9\u4e16", "tab\tnew\nline", "\u0001", "\ud83d\ude00", 8, null, true, { a: 1 }, ["x"]];
    const texts = odd.map((id) => JSON.stringify({ id, inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [r(), r(), r(), r()] }] }));
    const expected: Buffer[] = [];
    for (const t of texts) expected.push(await general(base, t));
    const results = await Promise.all(texts.map((t) => join(t)!));
    results.forEach((res, i) => {
      if (res !== undefined) assert.equal(Buffer.from(res).toString(), expected[i]!.toString(), `id ${JSON.stringify(odd[i])}: the general path's bytes`);
    });
    const burst = await Promise.all(texts.map((t) => post(base, t)));
    burst.forEach((b, i) => {
      assert.equal(b.status, 200);
      assert.equal(b.bytes.toString(), expected[i]!.toString(), `HTTP id ${JSON.stringify(odd[i])}`);
      const got = JSON.parse(b.bytes.toString()) as InferResponse;
      if (typeof odd[i] === "string") assert.equal(got.id, odd[i]);
      else assert.ok(!("id" in got), `a ${typeof odd[i]} id is not echoed`);
    });
  });

  it("the general path answers each request the batch path declined in one turn, when they queue together", async () => {
    // What the server does with the requests of one turn that the batch path declined: they all
    // reach the scheduler's general (JS) batching in the same tick. Each must get its own answer:
    // a wrong datatype is INPUT_DTYPE for that request only, never another request's failure.
    const row = [0.5, -1, 2, 0.25];
    const alone = (await server.table.submit(server.table.get("mlp"), { x: Tensor.float32([1, 4], row) })).y!;
    const want = [...(alone.data as Float32Array)];
    alone.dispose();
    const f32 = (): [string, () => Tensor] => ["float32", () => Tensor.float32([1, 4], row)];
    const rounds: Array<Array<[string, () => Tensor]>> = [
      // The first runs at once; the others queue behind it and are batched together.
      [f32(), f32(), ["int32", () => Tensor.int32([1, 4], [1, 2, 3, 4])], f32(), ["float64", () => Tensor.float64([1, 4], row)], f32()],
      [f32(), f32(), ["int32", () => Tensor.int32([1, 4], [1, 2, 3, 4])]],
      [f32(), ["int32", () => Tensor.int32([1, 4], [1, 2, 3, 4])], f32()],
    ];
    const wrong: string[] = [];
    for (const [round, cases] of rounds.entries()) {
      const settled = await Promise.allSettled(cases.map(([, make]) => server.table.submit(server.table.get("mlp"), { x: make() })));
      const got = settled.map((s, i) => {
        const kind = cases[i]![0];
        if (s.status === "fulfilled") {
          const y = s.value.y!;
          const v = [...(y.data as Float32Array)];
          y.dispose();
          return { kind, ok: v };
        }
        const e = s.reason as { code?: string; message?: string };
        return { kind, error: `${e.code}: ${e.message}` };
      });
      const expected = cases.map(([kind]) => (kind === "float32" ? { kind, ok: want } : { kind, error: `INPUT_DTYPE: input "x": expected dtype float32, received ${kind}` }));
      got.forEach((g, i) => {
        const text = JSON.stringify(g);
        if (text !== JSON.stringify(expected[i])) wrong.push(`round ${round} [${cases.map(([k]) => k).join(", ")}], request ${i}: got ${text}, expected ${JSON.stringify(expected[i])}`);
      });
    }
    // One assertion over every round, so that a failure lists them all.
    assert.deepEqual(wrong, [], "each request queued together with others gets its own answer");
  });
});

// ---- `axon serve` over HTTP under load -------------------------------------------------------------------

describe("batched KServe JSON fast path (axon serve, concurrent HTTP)", { skip }, () => {
  let server: Served | undefined;

  before(async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-kbatch-srv-"));
    await seedDemoModels(new Axon({ home }));
    // The demo MLP's own manifest: batching up to 64 rows.
    server = await startServer(home, ["--host", "127.0.0.1", "--model", "demo/mlp@1"]);
    const details = async () => ((await (await fetch(`${server!.base}/api/v1/models/mlp`)).json()) as { batching?: boolean; details?: { inline?: boolean } });
    assert.equal((await details()).batching, true);
    let inline = false;
    const r = mulberry32(21);
    for (let i = 0; i < 200 && !inline; i++) {
      const res = await post(server.base, randomReq(r, 16).text);
      assert.equal(res.status, 200);
      if (i % 8 === 7) inline = (await details()).details?.inline === true;
    }
    assert.ok(inline, "the run policy measures the demo MLP as an inline model");
  });
  after(async () => {
    if (!server) return;
    const code = await stop(server);
    assert.equal(code, 0, `serve exits cleanly: ${server.stderr()}`);
  });

  it("answers 2000 requests from 64 concurrent clients correctly, in batches", async (t) => {
    const base = server!.base;
    const N = 2000;
    const r = mulberry32(22);
    const reqs = Array.from({ length: N }, (_, i) => randomReq(r, 1 + Math.floor(r() * 4), `c-${i}`));
    const got: Buffer[] = new Array(N);
    const m0 = await readMetrics(base, "mlp@1.0.0");
    await pooled(N, 64, async (i) => {
      const res = await post(base, reqs[i]!.text);
      assert.equal(res.status, 200, res.bytes.toString());
      got[i] = res.bytes;
    });
    const m1 = await readMetrics(base, "mlp@1.0.0");
    for (let i = 0; i < N; i++) assertAnswers(JSON.parse(got[i]!.toString()) as InferResponse, reqs[i]!, 1e-6, `request ${i}`);
    assert.equal(m1.ok - m0.ok, N, "every request counted ok");
    assert.equal(m1.clientErrors - m0.clientErrors, 0);
    assert.equal(m1.serverErrors - m0.serverErrors, 0);
    assert.equal(m1.batchCount - m0.batchCount, N, "each request's batch size observed once");
    const alone = m1.batchLe1 - m0.batchLe1;
    t.diagnostic(`${N - alone} of ${N} requests ran in batches of more than one`);
    assert.ok(alone < N, `some requests ran in batches of more than one (${N - alone} of ${N} did)`);

    // The same requests through the general path: the same bytes.
    const ref: Buffer[] = new Array(N);
    await pooled(N, 64, async (i) => {
      const res = await post(base, generalText(reqs[i]!.text));
      assert.equal(res.status, 200, res.bytes.toString());
      ref[i] = res.bytes;
    });
    let differ = 0;
    let first = -1;
    for (let i = 0; i < N; i++) {
      if (!got[i]!.equals(ref[i]!)) {
        differ++;
        if (first < 0) first = i;
      }
    }
    assert.equal(differ, 0, first < 0 ? "" : `request ${first}: fast ${got[first]!.toString()} vs general ${ref[first]!.toString()}`);
  });
});
