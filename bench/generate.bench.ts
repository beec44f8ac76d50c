/**
 * Text generation benchmarks (issue: language models, "Speed"): mlos's generation engine
 * (continuous batching) against transformers.js `generate()` on the same files (the demo model
 * dist/demo-models/tiny-gpt: a GPT-2-shaped decoder, 2 layers, 64 wide, GPT-2's 50257-token
 * vocabulary), in the same run, with the same thread settings (1 intra-op and 1 inter-op thread
 * on both sides), greedy, 64 new tokens per request and no early stop (mlos: `ignoreEos`;
 * transformers.js: `min_new_tokens: 64`; every request is checked to give exactly 64 tokens).
 *
 *   node dist/bench/generate.bench.js [throughput|latency|loop|all]     (after `npx tsc -p tsconfig.json`)
 *
 * The workload: 32 different prompts of 10 to 30 tokens, made from a word list by a seeded
 * generator; the same text on both sides (their token ids are checked to be the same). Every
 * measurement of mlos gets a set of its own (another seed: other words, the same lengths), which
 * transformers.js's measurements of the same repetition share, so that mlos's prefix cache never
 * serves a prompt it has seen before (the tokens it supplied are reported: they should be 0).
 *
 * 1. throughput: aggregate generated tokens per second (32 x 64 tokens / wall time) of
 *    - mlos: 32 concurrent `model.stream()` calls on one loaded model (continuous batching);
 *    - the reference: transformers.js serving the 32 requests one at a time, as a Node user would
 *      (tokenize, `generate()`, the next request);
 *    - transformers.js's own batched call: the 32 prompts left-padded (pad = eos, as GPT-2 does)
 *      in one `generate()`;
 *    - for scale, the ceiling of one thread: one bare decode step of the same ONNX file at batch
 *      32 with a past of 40 tokens through onnxruntime-node directly (32 tokens per `session.run`;
 *      mlos may pass it, as it runs two batches at once on two threads).
 *    Beside tokens/s, the side's CPU time per generated token (process.cpuUsage: all its threads,
 *    ORT's, mlos's worker threads and V8's GC threads included: mlos runs up to two model runs at
 *    once on two threads, transformers.js one), and what other processes used of the machine
 *    meanwhile (/proc/stat; this machine is shared). transformers.js's process sometimes settles
 *    into a state with about one major GC per request, its V8 GC threads busy (~1.4-1.5 cores
 *    instead of 1.0, and usually slower): its "cores" figure shows which state a run was in.
 *    Targets: mlos >= 5x the reference, >= 2.5x transformers.js batched.
 * 2. latency: time to first token (from the call, tokenizing included, to the first token's
 *    arrival) and inter-token latency (between consecutive tokens of one request), at 1 stream:
 *    mlos `model.stream()` vs transformers.js `generate()` with a TextStreamer (arrival times from
 *    its token callback), the 32 prompts one at a time; and mlos at 32 concurrent streams.
 *    Target: mlos's TTFT p50 <= 1.1x the reference's.
 * 3. loop: the event loop's delay (monitorEventLoopDelay, 1 ms resolution: an idle loop reads about
 *    1 ms, see the calibration line) while mlos serves 32 concurrent streams, while transformers.js
 *    serves 32 concurrent `generate()` calls on one model, and during its one batched call: max (the
 *    longest the loop was blocked) and p99; with the loop thread's time on a CPU per token and how
 *    long it waited for a CPU (the scheduler's part of the delay).
 *
 * Method: each side runs in a child process of its own (bench/generate-side.ts: mlos; transformers.js
 * one at a time; transformers.js batched; transformers.js concurrent; onnxruntime-node), loaded and
 * warmed up once, and measures itself when this script asks; only one measures at a time, the
 * others wait idle. Separate processes keep one side's V8 heap, garbage collection and threads from
 * disturbing the other's figures (see generate-side.ts for what a shared process did). Each
 * repetition alternates mlos and transformers.js (the order flips from one repetition to the
 * next). Figures are the median (min..max) over repetitions; ratios are taken per repetition (mlos
 * over transformers.js of the same repetition), then their median (min..max). Nothing is pinned.
 *
 * The machine is shared: when other processes (or the hypervisor's steal) took more than
 * BENCH_DISTURBED (default 0.1) of a CPU during any measurement of a repetition, the repetition is
 * redone with fresh prompts, up to BENCH_RETRIES (default 2) times; the report says how many were
 * redone and how many stayed disturbed. mlos uses both CPUs when it can, transformers.js one: a
 * busy machine costs mlos more, so its tokens/s ratios are only meaningful undisturbed, while CPU
 * time per token moves least.
 *
 * Environment: BENCH_REPS (default 3), BENCH_DISTURBED, BENCH_RETRIES, BENCH_VERBOSE=1 (each repetition's figures); BENCH_CPU_PROF=DIR writes a
 * V8 CPU profile of the mlos side's main thread into DIR (node --cpu-prof).
 */
import { fork, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BARE_PAST, NEW_TOKENS, STREAMS, type Cost, type Delay, type Measurement, type Reply, type Request, type RunArgs, type SideName, type Trace } from "./generate-side.js";
import { machineLine, median, spread } from "./measure.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPS = Number(process.env.BENCH_REPS ?? 3);
const DISTURBED = Number(process.env.BENCH_DISTURBED ?? 0.1);
const RETRIES = Number(process.env.BENCH_RETRIES ?? 2);
/** BENCH_VERBOSE=1: also print each repetition's figures. */
const VERBOSE = process.env.BENCH_VERBOSE === "1";
/** Bare decode steps timed per repetition. */
const BARE_STEPS = 30;
const TOTAL = STREAMS * NEW_TOKENS;
const which = process.argv[2] ?? "all";
if (!["throughput", "latency", "loop", "all"].includes(which)) throw new Error(`usage: generate.bench.js [throughput|latency|loop|all], got ${which}`);

// ---- the side processes ---------------------------------------------------------------------

type Body<R> = R extends { id: number } ? Omit<R, "id"> : never;

/** A side in its own process (bench/generate-side.ts), asked over IPC. */
class SideProcess {
  #next = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.on("message", (m: Reply | "ready") => {
      if (m === "ready") return;
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if ("error" in m) p?.reject(new Error(`${label}: ${m.error}`));
      else p?.resolve(m.value);
    });
    child.on("exit", (code) => {
      for (const p of this.#pending.values()) p.reject(new Error(`${label} exited with ${code}`));
      this.#pending.clear();
    });
  }

  static start(side: SideName, label: string, execArgv: string[] = []): Promise<SideProcess> {
    const child = fork(path.join(HERE, "generate-side.js"), [side], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv });
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`${label} exited with ${code} before it was ready`)));
      child.once("message", (m) => {
        if (m === "ready") resolve(new SideProcess(label, child));
      });
    });
  }

  ask<T>(req: Body<Request>): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ ...req, id });
    });
  }

  run(args: RunArgs): Promise<Measurement> {
    return this.ask<Measurement>({ op: "run", args });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    await this.ask({ op: "exit" }).catch(() => {});
    await exited;
  }
}

// ---- figures --------------------------------------------------------------------------------

/** The q-th percentile (0..100) of a series, nearest rank. */
function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((q / 100) * s.length) - 1))]!;
}

const ttft = (t: Trace): number => t.arrivals[0]! - t.start;
const gaps = (t: Trace): number[] => t.arrivals.slice(1).map((a, i) => a - t.arrivals[i]!);

/** Throws unless every request generated exactly NEW_TOKENS tokens (and, when streamed, saw each arrive). */
function check(label: string, m: Measurement, streamed: boolean): Measurement {
  const bad = m.traces.filter((t) => t.tokens.length !== NEW_TOKENS || (streamed && t.arrivals.length !== NEW_TOKENS));
  if (m.traces.length !== STREAMS || bad.length > 0) {
    throw new Error(`${label}: ${m.traces.length} requests, ${bad.length} of them without exactly ${NEW_TOKENS} tokens (${bad.map((t) => `${t.tokens.length} tokens, ${t.arrivals.length} arrivals`).join("; ")})`);
  }
  return m;
}

const tps = (c: Cost) => TOTAL / (c.ms / 1000);
const cpuUsPerToken = (c: Cost) => (c.cpuMs * 1000) / TOTAL;
/** "X tok/s, CPU Y µs/token (Z cores)" over repetitions. */
const rate = (cs: Cost[]) => `${spread(cs.map(tps), 0, " tok/s")}, CPU ${spread(cs.map(cpuUsPerToken), 0, " µs/token")} (${spread(cs.map((c) => c.cpuMs / c.ms), 2, " cores")})`;

const disturbed = (c: Cost) => c.othersMs / c.ms > DISTURBED;

/**
 * REPS repetitions of `one(r)`; a repetition during which another process or the hypervisor took
 * more than DISTURBED of a CPU in any of its measurements (`costs`) is redone, up to RETRIES times.
 * Returns the rows and a note on what was redone.
 */
async function repetitions<T>(one: (r: number) => Promise<T>, costs: (row: T) => Cost[]): Promise<{ rows: T[]; note: string }> {
  const rows: T[] = [];
  let redone = 0;
  let still = 0;
  for (let r = 0; r < REPS; r++) {
    for (let attempt = 0; ; attempt++) {
      const row = await one(r);
      const bad = costs(row).some(disturbed);
      if (!bad || attempt >= RETRIES) {
        if (bad) still++;
        rows.push(row);
        break;
      }
      redone++;
    }
  }
  const all = rows.flatMap(costs);
  const note = `  other processes and steal took ${spread(all.map((c) => c.othersMs / c.ms), 2, " CPUs")} during these measurements; ${redone} repetition(s) redone for taking more than ${DISTURBED}, ${still} still disturbed`;
  return { rows, note };
}

/** The order of a repetition's two sides: mlos first in even repetitions, transformers.js first in odd ones. */
async function alternate(r: number, ours: () => Promise<void>, theirs: () => Promise<void>): Promise<void> {
  if (r % 2 === 0) {
    await ours();
    await theirs();
  } else {
    await theirs();
    await ours();
  }
}

// ---- setup ----------------------------------------------------------------------------------

console.log(`generate.bench ${which}: ${machineLine().replace(/, pinned.*|, not pinned/, "")}; BENCH_REPS ${REPS}`);
const profDir = process.env.BENCH_CPU_PROF;
const needs = {
  batch: which === "all" || which === "throughput" || which === "loop",
  conc: which === "all" || which === "loop",
  bare: which === "all" || which === "throughput",
};
// One at a time, so that the loads do not compete.
const mlos = await SideProcess.start("mlos", "mlos", profDir ? ["--cpu-prof", "--cpu-prof-dir", profDir] : []);
const refSeq = await SideProcess.start("transformers", "transformers.js one at a time");
const refBatch = needs.batch ? await SideProcess.start("transformers", "transformers.js batched") : undefined;
const refConc = needs.conc ? await SideProcess.start("transformers", "transformers.js concurrent") : undefined;
const bare = needs.bare ? await SideProcess.start("ort", "onnxruntime-node") : undefined;

/** A fresh set of prompts (see the header): other words, the same lengths. */
let promptSets = 0;
const freshPrompts = () => mlos.ask<string[]>({ op: "prompts", seed: promptSets++ });
const warmPrompts = await freshPrompts();
const mlosIds = await mlos.ask<number[][]>({ op: "encode", prompts: warmPrompts });
const refIds = await refSeq.ask<number[][]>({ op: "encode", prompts: warmPrompts });
const lengths = mlosIds.map((ids) => ids.length);
console.log(
  `model tiny-gpt (GPT-2-shaped: 2 layers, 4 heads x 16, vocabulary 50257); ${STREAMS} prompts of ${Math.min(...lengths)}..${Math.max(...lengths)} tokens ` +
    `(mean ${(lengths.reduce((a, b) => a + b, 0) / STREAMS).toFixed(1)}), ${NEW_TOKENS} new tokens each, greedy, no early stop; 1 intra-op + 1 inter-op thread on both sides; each side in a process of its own`,
);

// Warm up every side with the workload it will run (code compiled, first runs done, mlos's
// engine built), and check that they agree: the same prompt ids, the same greedy tokens.
const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const agree = (m: Measurement, ref: Measurement) => m.traces.filter((t, i) => same(t.tokens, ref.traces[i]!.tokens)).length;
const warmRef = check("transformers.js one at a time", await refSeq.run({ mode: "sequential", prompts: warmPrompts }), false);
await refSeq.run({ mode: "sequential", prompts: warmPrompts, stream: true });
const warmMlos1 = check("mlos one at a time", await mlos.run({ mode: "sequential", prompts: warmPrompts }), true);
const warmMlos32 = check("mlos concurrent", await mlos.run({ mode: "concurrent", prompts: warmPrompts }), true);
const warmBatch = refBatch ? check("transformers.js batched", await refBatch.run({ mode: "batched", prompts: warmPrompts }), false) : undefined;
if (refConc) check("transformers.js concurrent", await refConc.run({ mode: "concurrent", prompts: warmPrompts }), false);
await mlos.run({ mode: "concurrent", prompts: await freshPrompts() }); // once more, without prefix cache hits
await bare?.ask({ op: "bare", steps: 5 });
console.log(
  `checks: prompt token ids the same on both sides: ${mlosIds.every((ids, i) => same(ids, refIds[i]!)) ? "yes" : "NO"}; of ${STREAMS} requests, greedy tokens the same as transformers.js one at a time: ` +
    `mlos one at a time ${agree(warmMlos1, warmRef)}, mlos concurrent ${agree(warmMlos32, warmRef)}${warmBatch ? `, transformers.js batched ${agree(warmBatch, warmRef)}` : ""}; every request generated ${NEW_TOKENS} tokens`,
);

// ---- 1. throughput --------------------------------------------------------------------------

async function throughput(): Promise<void> {
  const { rows, note } = await repetitions(async (r) => {
    const prompts = await freshPrompts();
    let m!: Measurement;
    let seq!: Cost;
    let batch!: Cost;
    await alternate(
      r,
      async () => {
        m = check("mlos concurrent", await mlos.run({ mode: "concurrent", prompts }), true);
      },
      async () => {
        seq = check("transformers.js one at a time", await refSeq.run({ mode: "sequential", prompts }), false).cost;
        batch = check("transformers.js batched", await refBatch!.run({ mode: "batched", prompts }), false).cost;
      },
    );
    return { mlos: m, seq, batch, bareMs: await bare!.ask<number>({ op: "bare", steps: BARE_STEPS }) };
  }, (x) => [x.mlos.cost, x.seq, x.batch]);
  if (VERBOSE) rows.forEach((x, r) => console.log(`  rep ${r}: mlos ${rate([x.mlos.cost])}; one at a time ${rate([x.seq])}; batched ${rate([x.batch])}`));
  const vsSeq = rows.map((x) => tps(x.mlos.cost) / tps(x.seq));
  const vsBatch = rows.map((x) => tps(x.mlos.cost) / tps(x.batch));
  console.log(`throughput (${STREAMS} requests x ${NEW_TOKENS} new tokens = ${TOTAL} tokens), ${REPS} reps, median (min..max); CPU = the side's process, user + sys, all threads, per generated token:`);
  console.log(`  mlos, ${STREAMS} concurrent model.stream()                 ${rate(rows.map((x) => x.mlos.cost))}; ${spread(rows.map((x) => x.mlos.steps!), 0)} engine steps, ${spread(rows.map((x) => TOTAL / x.mlos.steps!), 1)} tokens per step, prefix cache hits ${Math.max(...rows.map((x) => x.mlos.prefixHits!))} tokens`);
  console.log(`  transformers.js, one request at a time (reference) ${rate(rows.map((x) => x.seq))}`);
  console.log(`  transformers.js, one batched generate() (padded)   ${rate(rows.map((x) => x.batch))}`);
  console.log(`  ceiling of one thread: bare decode step at batch ${STREAMS}, past ${BARE_PAST} (onnxruntime-node session.run, median of ${BARE_STEPS}): ${spread(rows.map((x) => x.bareMs), 2, " ms")} = ${spread(rows.map((x) => STREAMS / (x.bareMs / 1000)), 0, " tok/s")}`);
  console.log(note);
  console.log(`  mlos vs one at a time: ${spread(vsSeq, 2, "x")} tokens/s, CPU per token ${spread(rows.map((x) => x.mlos.cost.cpuMs / x.seq.cpuMs), 2, "x")}`);
  console.log(`  mlos vs batched:       ${spread(vsBatch, 2, "x")} tokens/s, CPU per token ${spread(rows.map((x) => x.mlos.cost.cpuMs / x.batch.cpuMs), 2, "x")}`);
  console.log(`  target: >= 5x transformers.js one request at a time ${median(vsSeq) >= 5 ? "MET" : "NOT MET"}`);
  console.log(`  target: >= 2.5x transformers.js batched ${median(vsBatch) >= 2.5 ? "MET" : "NOT MET"}`);
}

// ---- 2. latency -----------------------------------------------------------------------------

interface Latency {
  ttft50: number;
  itl50: number;
  itl99: number;
}

const latencyOf = (m: Measurement): Latency => {
  const g = m.traces.flatMap(gaps);
  return { ttft50: percentile(m.traces.map(ttft), 50), itl50: percentile(g, 50), itl99: percentile(g, 99) };
};

async function latency(): Promise<void> {
  const { rows, note } = await repetitions(async (r) => {
    const prompts = await freshPrompts();
    let mlos1!: Measurement;
    let ref1!: Measurement;
    await alternate(
      r,
      async () => {
        mlos1 = check("mlos one at a time", await mlos.run({ mode: "sequential", prompts }), true);
      },
      async () => {
        ref1 = check("transformers.js with a TextStreamer", await refSeq.run({ mode: "sequential", prompts, stream: true }), true);
      },
    );
    const mlos32 = check("mlos concurrent", await mlos.run({ mode: "concurrent", prompts: await freshPrompts() }), true);
    return { mlos1: latencyOf(mlos1), ref1: latencyOf(ref1), mlos32: latencyOf(mlos32), costs: [mlos1.cost, ref1.cost, mlos32.cost] };
  }, (x) => x.costs);
  const ratio = rows.map((x) => x.mlos1.ttft50 / x.ref1.ttft50);
  const line = (k: "mlos1" | "ref1" | "mlos32") =>
    `TTFT p50 ${spread(rows.map((x) => x[k].ttft50), 2, " ms")}; inter-token p50 ${spread(rows.map((x) => x[k].itl50), 2, " ms")}, p99 ${spread(rows.map((x) => x[k].itl99), 2, " ms")}`;
  console.log(`latency (${STREAMS} prompts, ${NEW_TOKENS} new tokens each; TTFT from the call to the first token, inter-token between consecutive tokens of a request), ${REPS} reps, median (min..max):`);
  console.log(`  mlos, 1 stream (one request at a time)                 ${line("mlos1")}`);
  console.log(`  transformers.js, 1 stream (generate with TextStreamer) ${line("ref1")}`);
  console.log(`  mlos, ${STREAMS} concurrent streams                           ${line("mlos32")}`);
  console.log(note);
  console.log(`  mlos vs transformers.js at 1 stream: TTFT p50 ${spread(ratio, 2, "x")}, inter-token p50 ${spread(rows.map((x) => x.mlos1.itl50 / x.ref1.itl50), 2, "x")}`);
  console.log(`  target: TTFT p50 at 1 stream <= 1.1x transformers.js ${median(ratio) <= 1.1 ? "MET" : "NOT MET"}`);
}

// ---- 3. event loop --------------------------------------------------------------------------

async function loop(): Promise<void> {
  const { rows, note } = await repetitions(async (r) => {
    const prompts = await freshPrompts();
    let m!: Measurement;
    let conc!: Measurement;
    let batch!: Measurement;
    await alternate(
      r,
      async () => {
        m = check("mlos concurrent", await mlos.run({ mode: "concurrent", prompts, loop: true }), true);
      },
      async () => {
        conc = check("transformers.js concurrent", await refConc!.run({ mode: "concurrent", prompts, loop: true }), false);
        batch = check("transformers.js batched", await refBatch!.run({ mode: "batched", prompts, loop: true }), false);
      },
    );
    // The calibration: the same measurement over mlos's idle loop, for as long as its run.
    const idle = await mlos.ask<Delay>({ op: "idle", ms: m.cost.ms });
    return { mlos: m, idle, conc, batch };
  }, (x) => [x.mlos.cost, x.conc.cost, x.batch.cost]);
  const delays = (ds: Delay[]) => `max ${spread(ds.map((d) => d.max), 1, " ms")}, p99 ${spread(ds.map((d) => d.p99), 2, " ms")}`;
  const line = (ms: Measurement[]) =>
    `${delays(ms.map((m) => m.delay!))}; ${rate(ms.map((m) => m.cost))}; loop thread on a CPU ${spread(ms.map((m) => (m.delay!.loopCpuMs * 1000) / TOTAL), 0, " µs/token")}, waited for one ${spread(ms.map((m) => m.delay!.loopWaitMs), 0, " ms")} in all`;
  console.log(`event loop (delay between 1 ms timer ticks, monitorEventLoopDelay; an idle loop reads about 1 ms) while ${STREAMS} requests of ${NEW_TOKENS} tokens are served, ${REPS} reps, median (min..max):`);
  console.log(`  mlos, ${STREAMS} concurrent model.stream()        ${line(rows.map((x) => x.mlos))}`);
  console.log(`  idle loop (calibration, mlos's process) ${delays(rows.map((x) => x.idle))}`);
  console.log(`  transformers.js, ${STREAMS} concurrent generate()  ${line(rows.map((x) => x.conc))}`);
  console.log(`  transformers.js, one batched generate()   ${line(rows.map((x) => x.batch))}`);
  console.log(note);
  console.log(`  mlos vs transformers.js concurrent: longest block ${spread(rows.map((x) => x.mlos.delay!.max / x.conc.delay!.max), 3, "x")}, p99 ${spread(rows.map((x) => x.mlos.delay!.p99 / x.conc.delay!.p99), 3, "x")}`);
}

const t0 = performance.now();
try {
  if (which === "all" || which === "throughput") await throughput();
  if (which === "all" || which === "latency") await latency();
  if (which === "all" || which === "loop") await loop();
  console.log(`(${((performance.now() - t0) / 1000).toFixed(0)} s measuring)`);
} finally {
  for (const s of [mlos, refSeq, refBatch, refConc, bare]) await s?.close();
}
