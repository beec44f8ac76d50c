/**
 * Native core benchmarks (issue: native core, "Speed"), against onnxruntime-node on the same model
 * file with the same thread settings, in the same run, alternating, several repetitions; each
 * figure is the median of the per-repetition ratios, printed with its min..max over the repetitions.
 * Everything runs in this one process (no second process competes, so nothing is pinned).
 *
 *   node dist/bench/infer.bench.js [tiny|large|loop|load|all|load-instructions]     (after `npm run build`)
 *
 * 1. tiny:  the demo MLP (x: float32 [1, 4], 16 bytes): per-call latency of `model.infer` vs
 *           `session.run`, both with pool/reused inputs; ours also with outputs written into a
 *           caller's pool tensor (no per-call allocation) and in the default form.
 * 2. large: the PaddleOCR detector at 1x3x960x960 (11 MB in): latency, and bytes the library copied
 *           per call (zero for a pool input and a known-shape output, which the manifest declares),
 *           with the native pointers checked against the pool slices.
 * 3. loop:  the event loop's p99 delay while 4 `infer` calls run concurrently on the detector, and
 *           the same with onnxruntime-node (whose run holds the event loop).
 * 4. load:  `runtime.load(reference)` (Axon resolve + session create on a worker thread) vs
 *           `InferenceSession.create` on the same file, with the addon's OrtSession.open alone and
 *           runtime.load(file) between them to place a gap; wall and CPU time.
 * load-instructions (not in `all`; needs valgrind, about 2 minutes): the same comparison in
 *           instructions counted by callgrind, which the machine's noise does not move.
 *
 * Environment: BENCH_REPS (default 7), BENCH_THREADS (intra-op threads for the large model,
 * default 2).
 */
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as ort from "onnxruntime-node";
import { loadNative, loadOrt } from "../bindings/native.js";
import { ADDRESSES, Axon, Runtime, Tensor, TensorPool, seedDemoModels, type NativeAddresses } from "../src/index.js";
import { copyCounter } from "../src/tensor/pool.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";
import { machineLine, median, spread } from "./measure.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 7);
const LARGE_THREADS = Number(process.env.BENCH_THREADS ?? 2);
const which = process.argv[2] ?? "all";

const fmt = (x: number, d = 2) => x.toFixed(d);

function randomFloats(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
  return a;
}

/** Median per-call latency (µs) of `calls` sequential awaits of `fn`. */
async function latency(fn: () => Promise<unknown>, calls: number): Promise<number> {
  const t: number[] = new Array(calls);
  for (let i = 0; i < calls; i++) {
    const s = performance.now();
    await fn();
    t[i] = (performance.now() - s) * 1000;
  }
  return median(t);
}

const { fetchTestModels } = (await import(pathToFileURL(path.join(ROOT, "scripts", "fetch-test-models.js")).href)) as { fetchTestModels: () => { files: Record<string, string> } };

const home = mkdtempSync(path.join(tmpdir(), "mlos-bench-"));
const axon = new Axon({ home });
await seedDemoModels(axon);
const detectorFile = fetchTestModels().files["ch_PP-OCRv4_det_infer.onnx"]!;

/** The detector packed as an Axon model whose manifest names its dimensions, so the output shape is known from the input's. */
async function packDetector(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-bench-det-"));
  copyFileSync(detectorFile, path.join(dir, "model.onnx"));
  writeFileSync(
    path.join(dir, "axon.yaml"),
    [
      "apiVersion: axon.mlos.io/v1",
      "kind: Model",
      "metadata: { namespace: bench, name: ppocr-det, version: 4.0.0, description: PaddleOCR v4 text detector }",
      "spec:",
      "  framework: { name: onnx }",
      "  format: { type: onnx, files: [{ path: model.onnx }] }",
      "  io:",
      "    inputs: [{ name: x, dtype: float32, shape: [batch, 3, height, width] }]",
      "    outputs: [{ name: sigmoid_0.tmp_0, dtype: float32, shape: [batch, 1, height, width] }]",
      "",
    ].join("\n"),
  );
  return (await axon.pack(dir)).reference;
}

async function tiny(): Promise<void> {
  const [record] = await axon.findInstalled("demo/mlp@1.0.0");
  const file = path.join(record!.path, "model.onnx");
  const runtime = new Runtime({ axon });
  const model = await runtime.load("demo/mlp@1.0.0", { intraOpThreads: 1, interOpThreads: 1 });
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const pool = new TensorPool({ size: 1 << 20 });
  const x = pool.tensor("float32", [1, 4]);
  (x.data as Float32Array).set([0.1, 0.2, 0.3, 0.4]);
  const y = pool.tensor("float32", [1, 3]);
  const ortX = new ort.Tensor("float32", new Float32Array([0.1, 0.2, 0.3, 0.4]), [1, 4]);
  const calls = 3000;
  // Warm up both (and let the run policy take its measurements).
  for (let i = 0; i < 200; i++) {
    await model.infer({ x }, { outputs: { y } });
    await session.run({ x: ortX });
  }
  const rows: Array<{ ortUs: number; preUs: number; defUs: number }> = [];
  for (let r = 0; r < REPS; r++) {
    const ortUs = await latency(() => session.run({ x: ortX }), calls);
    const preUs = await latency(() => model.infer({ x }, { outputs: { y } }), calls);
    const defUs = await latency(() => model.infer({ x }), calls);
    rows.push({ ortUs, preUs, defUs });
  }
  const ratioPre = median(rows.map((r) => r.preUs / r.ortUs));
  console.log(`tiny (demo/mlp, x f32[1,4]), ${REPS} reps x ${calls} calls, median per-call latency:`);
  console.log(`  onnxruntime-node session.run        ${spread(rows.map((r) => r.ortUs), 2, " µs")}`);
  console.log(`  model.infer, outputs into a pool tensor  ${spread(rows.map((r) => r.preUs), 2, " µs")}  ratio ${spread(rows.map((r) => r.preUs / r.ortUs), 2, "x")}`);
  console.log(`  model.infer, default (new output)   ${spread(rows.map((r) => r.defUs), 2, " µs")}  ratio ${spread(rows.map((r) => r.defUs / r.ortUs), 2, "x")}`);
  console.log(`  run policy: ${JSON.stringify(model.describe())}`);
  console.log(`  target: <= 0.80x ${ratioPre <= 0.8 ? "MET" : "NOT MET"}`);
  await model.dispose();
  await session.release();
  pool.close();
}

async function large(reference: string): Promise<void> {
  const runtime = new Runtime({ axon });
  const pool = new TensorPool({ size: 64 << 20 });
  const model = await runtime.load(reference, { intraOpThreads: LARGE_THREADS, interOpThreads: 1, pool });
  const session = await ort.InferenceSession.create(model.path, { intraOpNumThreads: LARGE_THREADS, interOpNumThreads: 1 });
  const shape = [1, 3, 960, 960];
  const data = randomFloats(3 * 960 * 960, 1);
  const x = pool.tensor("float32", shape);
  (x.data as Float32Array).set(data);
  const ortX = new ort.Tensor("float32", data, shape);
  // Zero copy, checked: the pointers ORT read and wrote are the pool slices'.
  const probe = await model.infer({ x }, { debugAddresses: true });
  const out = Object.values(probe)[0]!;
  const addr = (probe as unknown as Record<symbol, NativeAddresses>)[ADDRESSES]!;
  const native = loadNative();
  const inPlace = addr.inputs.x === native.addressOf(x.data as Float32Array) && Object.values(addr.outputs)[0] === native.addressOf(out.data as Float32Array) && pool.owns(out.data as Float32Array);
  out.dispose();
  await session.run({ x: ortX });
  const calls = 3;
  const rows: Array<{ ortMs: number; oursMs: number }> = [];
  let copied = 0;
  let ourCalls = 0;
  for (let r = 0; r < REPS; r++) {
    const ortMs = (await latency(() => session.run({ x: ortX }), calls)) / 1000;
    const before = copyCounter.bytes;
    const oursMs = (await latency(async () => {
      const o = await model.infer({ x });
      for (const t of Object.values(o)) t.dispose();
    }, calls)) / 1000;
    copied += copyCounter.bytes - before;
    ourCalls += calls;
    rows.push({ ortMs, oursMs });
  }
  const ratio = median(rows.map((r) => r.oursMs / r.ortMs));
  console.log(`large (PaddleOCR det, x f32[1,3,960,960], ${LARGE_THREADS} intra-op threads), ${REPS} reps x ${calls} calls, median latency:`);
  console.log(`  onnxruntime-node session.run  ${spread(rows.map((r) => r.ortMs), 1, " ms")}`);
  console.log(`  model.infer (pool input, output in the pool)  ${spread(rows.map((r) => r.oursMs), 1, " ms")}  ratio ${spread(rows.map((r) => r.oursMs / r.ortMs), 2, "x")}`);
  console.log(`  bytes copied by the library per call: ${copied / ourCalls}; ORT read/wrote the pool slices in place: ${inPlace}`);
  console.log(`  target: <= 1.00x ${ratio <= 1.0 ? "MET" : "NOT MET"}, zero copy ${copied === 0 && inPlace ? "MET" : "NOT MET"}`);
  await model.dispose();
  await session.release();
  pool.close();
}

async function eventLoop(reference: string): Promise<void> {
  const runtime = new Runtime({ axon });
  const model = await runtime.load(reference, { intraOpThreads: 1, interOpThreads: 1 });
  const session = await ort.InferenceSession.create(model.path, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const shape = [1, 3, 640, 640];
  const data = randomFloats(3 * 640 * 640, 2);
  const x = Tensor.float32(shape, data);
  const ortX = new ort.Tensor("float32", data, shape);
  const RUNS_EACH = 4;
  interface Delay { p99: number; p50: number; max: number; ms: number; cpuMs: number; waitMs: number; slices: number }
  /** The event loop thread's scheduler counters (/proc/PID/task/PID/schedstat): ns on the CPU, ns waiting on the run queue, slices. */
  const schedstat = (): number[] => {
    try {
      return readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, "utf8").trim().split(/\s+/).map(Number);
    } catch {
      return [NaN, NaN, NaN];
    }
  };
  /**
   * The loop's delay histogram (1 ms timer: an idle loop reads about 1 ms) while `work` runs, and
   * how long the loop's thread waited on the run queue for a CPU (the kernel's own account of the
   * part of the delay that is the scheduler's, not the loop's work).
   */
  async function measure(work: () => Promise<unknown>): Promise<Delay> {
    await new Promise((r) => setTimeout(r, 50));
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const t = performance.now();
    const c = process.cpuUsage();
    const s0 = schedstat();
    await work();
    const s1 = schedstat();
    const cpu = process.cpuUsage(c);
    const ms = performance.now() - t;
    h.disable();
    return { p99: h.percentile(99) / 1e6, p50: h.percentile(50) / 1e6, max: h.max / 1e6, ms, cpuMs: (cpu.user + cpu.system) / 1000, waitMs: (s1[1]! - s0[1]!) / 1e6, slices: s1[2]! - s0[2]! };
  }
  const concurrently = (run: () => Promise<unknown>) => () => Promise.all(Array.from({ length: 4 }, async () => {
    for (let i = 0; i < RUNS_EACH; i++) await run();
  }));
  await model.infer({ x });
  await session.run({ x: ortX });
  const ours: Delay[] = [];
  const theirs: Delay[] = [];
  const idle: Delay[] = [];
  for (let r = 0; r < Math.max(5, REPS); r++) {
    ours.push(await measure(concurrently(() => model.infer({ x }))));
    // The calibration: the same histogram over an idle loop for as long, on this machine now.
    idle.push(await measure(() => new Promise((res) => setTimeout(res, ours.at(-1)!.ms))));
    theirs.push(await measure(concurrently(() => session.run({ x: ortX }))));
  }
  const p99 = median(ours.map((d) => d.p99));
  const line = (ds: Delay[]) => `p99 ${spread(ds.map((d) => d.p99), 2, " ms")}, p50 ${spread(ds.map((d) => d.p50), 2, " ms")}, max ${spread(ds.map((d) => d.max), 1, " ms")}; ${spread(ds.map((d) => d.ms), 0, " ms")} wall, process CPU ${spread(ds.map((d) => d.cpuMs / d.ms), 2, " cores")}; the loop's thread waited for a CPU ${spread(ds.map((d) => d.waitMs), 1, " ms")} in all, ${spread(ds.map((d) => (d.waitMs * 1000) / d.slices), 0, " µs")} per wakeup`;
  console.log(`event loop (4 concurrent loops of ${RUNS_EACH} runs on PaddleOCR det at 1x3x640x640, 1 intra-op thread each), delay between 1 ms timer ticks, ${ours.length} reps, median (min..max):`);
  console.log(`  model.infer:                  ${line(ours)}`);
  console.log(`  idle loop (calibration):      ${line(idle)}`);
  console.log(`  onnxruntime-node session.run: ${line(theirs)}`);
  console.log(`  target: p99 < 2 ms ${p99 < 2 ? "MET" : "NOT MET"}`);
  await model.dispose();
  await session.release();
}

/**
 * Model load, decomposed so that a gap can be placed: onnxruntime-node's create; the native
 * addon's OrtSession.open alone (what ONNX Runtime itself costs through our binding); runtime.load
 * of the file by path (plus the plugin: signature, manifest-less); runtime.load by reference (plus
 * Axon's resolve and the manifest). Interleaved in an order that rotates each repetition; wall
 * time and the process's CPU time (all threads) of each.
 */
async function loading(reference: string): Promise<void> {
  const file = (await new Runtime({ axon }).load(reference)).path;
  const addon = loadOrt();
  const opts = { intraOpThreads: 1, interOpThreads: 1 };
  const kinds = {
    ort: async () => (await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1 })).release(),
    native: async () => (await addon.OrtSession.open(file, opts)).release(),
    path: async () => (await new Runtime({ axon }).load(file, opts)).dispose(),
    ref: async () => (await new Runtime({ axon }).load(reference, opts)).dispose(),
  };
  type K = keyof typeof kinds;
  const names = Object.keys(kinds) as K[];
  for (const k of names) await kinds[k](); // warm: code loaded, file in the page cache
  const rows: Array<Record<K, { ms: number; cpuMs: number }>> = [];
  const reps = Math.max(3 * REPS, 21); // ~0.1 s each: the spread on these machines is wide (the same create takes 66-129 ms)
  for (let r = 0; r < reps; r++) {
    const row = {} as Record<K, { ms: number; cpuMs: number }>;
    for (let i = 0; i < names.length; i++) {
      const k = names[(i + r) % names.length]!;
      const c = process.cpuUsage();
      const t = performance.now();
      await kinds[k]();
      const ms = performance.now() - t;
      const cpu = process.cpuUsage(c);
      row[k] = { ms, cpuMs: (cpu.user + cpu.system) / 1000 };
    }
    rows.push(row);
  }
  const ratio = median(rows.map((r) => r.ref.ms / r.ort.ms));
  const label: Record<K, string> = {
    ort: "InferenceSession.create(file)",
    native: "OrtSession.open(file) (our addon alone)",
    path: "runtime.load(file)",
    ref: `runtime.load("${reference}")`,
  };
  console.log(`load (PaddleOCR det, 4.7 MB, 1 intra-op thread; create and release), ${reps} reps, median (min..max); CPU = the process's user + sys, all threads:`);
  for (const k of names) {
    console.log(`  ${label[k].padEnd(42)} ${spread(rows.map((r) => r[k].ms), 1, " ms")}, CPU ${spread(rows.map((r) => r[k].cpuMs), 1, " ms")}${k === "ort" ? "" : `; vs create: ${spread(rows.map((r) => r[k].ms / r.ort.ms), 2, "x")}, CPU ${spread(rows.map((r) => r[k].cpuMs / r.ort.cpuMs), 2, "x")}`}`);
  }
  console.log(`  target: runtime.load by reference <= 1.10x create: ${ratio <= 1.1 ? "MET" : "NOT MET"}`);
}

/**
 * The load comparison in instructions (callgrind, user space), which the machine's noise does not
 * move: (4 loads - 1 load) / 3 of each way, in processes of their own, two at a time.
 */
async function loadInstructions(reference: string): Promise<void> {
  const file = (await new Runtime({ axon }).load(reference)).path;
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-bench-cg-"));
  const count = (kind: string, n: number) => new Promise<number>((resolve, reject) => {
    const out = path.join(dir, `${kind}-${n}.out`);
    const child = spawn("valgrind", ["--tool=callgrind", `--callgrind-out-file=${out}`, process.execPath, path.join(ROOT, "dist", "bench", "load-count.js"), kind, String(n), home, reference, file], { stdio: "ignore" });
    child.on("error", reject);
    child.on("exit", (code) => {
      const m = code === 0 ? /^(?:summary|totals): (\d+)/m.exec(readFileSync(out, "utf8")) : null;
      if (m) resolve(Number(m[1]));
      else reject(new Error(`callgrind ${kind} ${n} exited with ${code}`));
    });
  });
  const t = performance.now();
  const [ort1, ort4] = await Promise.all([count("ort", 1), count("ort", 4)]);
  const [ref1, ref4] = await Promise.all([count("ref", 1), count("ref", 4)]);
  const ortPer = (ort4 - ort1) / 3;
  const refPer = (ref4 - ref1) / 3;
  console.log(`load in instructions (callgrind, user space; (4 loads - 1 load) / 3; ${((performance.now() - t) / 1000).toFixed(0)} s):`);
  console.log(`  InferenceSession.create(file)           ${(ortPer / 1e6).toFixed(1)} M instructions per load`);
  console.log(`  runtime.load("${reference}")  ${(refPer / 1e6).toFixed(1)} M instructions per load: ${(refPer / ortPer).toFixed(3)}x (target <= 1.10x: ${refPer / ortPer <= 1.1 ? "MET" : "NOT MET"})`);
}

console.log(`infer.bench ${which}: ${machineLine().replace(/, pinned.*|, not pinned/, "")}; UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}`);
const reference = which === "tiny" ? "" : await packDetector();
if (which === "all" || which === "tiny") await tiny();
if (which === "all" || which === "large") await large(reference);
if (which === "all" || which === "loop") await eventLoop(reference);
if (which === "all" || which === "load") await loading(reference);
if (which === "load-instructions") await loadInstructions(reference);
await axon.close();
