/**
 * One side of the text generation benchmark (bench/generate.bench.ts), in a process of its own:
 *
 *   node dist/bench/generate-side.js mlos|transformers|ort      (forked by the benchmark; commands over IPC)
 *
 * - mlos: the demo model loaded with `new Runtime().load(folder)`, requests through
 *   `model.stream()` (continuous batching when they are concurrent).
 * - transformers: transformers.js on the same files (AutoTokenizer, AutoModelForCausalLM,
 *   `generate()`), as its documentation shows.
 * - ort: onnxruntime-node on the same ONNX file, for the bare batched decode step.
 *
 * Each side runs in its own process so that neither disturbs the other's measurements through a
 * shared V8 heap (garbage collection, its helper threads) or leaves it in another state: after a
 * single batched transformers.js `generate()` (whose prompt step alone allocates 32 x 30 x 50257
 * floats of logits), the same process's one-request-at-a-time generation was measured at 500-700
 * tokens/s instead of ~880, with 1.3 cores busy instead of 1.0 (V8's GC threads). The benchmark
 * therefore also runs each transformers.js mode (one at a time, batched, concurrent) in a process
 * of its own.
 *
 * Every measurement is taken here, in the side's process: wall time, the process's CPU time
 * (process.cpuUsage: every thread, ORT's and mlos's worker threads included), what other processes
 * used of the machine meanwhile (/proc/stat), token arrival times, and on request the event loop's
 * delay histogram and its thread's scheduler counters.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { AutoModelForCausalLM, AutoTokenizer, TextStreamer, env as hfEnv, type PreTrainedModel, type PreTrainedTokenizer, type Tensor as HfTensor } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { Runtime, type GenerationEngine, type GenerationOptions, type Model } from "../src/index.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";
import { cpuTimes, median } from "./measure.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const MODEL_DIR = path.join(ROOT, "dist", "demo-models", "tiny-gpt");
export const STREAMS = 32;
export const NEW_TOKENS = 64;
/** The past of the bare decode step (about a prompt of 20 tokens plus 20 generated). */
export const BARE_PAST = 40;
const THREADS = { intraOpThreads: 1, interOpThreads: 1 };

/** mlos: greedy, exactly NEW_TOKENS tokens. */
const MLOS_GEN: GenerationOptions = { maxTokens: NEW_TOKENS, temperature: 0, ignoreEos: true };
/** transformers.js: greedy, exactly NEW_TOKENS tokens (the end-of-text token is suppressed until then). */
const HF_GEN = { max_new_tokens: NEW_TOKENS, min_new_tokens: NEW_TOKENS, do_sample: false };

export type SideName = "mlos" | "transformers" | "ort";
/** How the prompts are served: one request at a time, all concurrently, or (transformers.js) in one padded batch. */
export type Mode = "sequential" | "concurrent" | "batched";

/** What one timed piece of work cost: wall ms, the process's CPU ms (all threads), and the CPU ms that other processes and the hypervisor (steal) took meanwhile. */
export interface Cost {
  ms: number;
  cpuMs: number;
  othersMs: number;
}

/** The event loop while the work ran: delay p99 and max (ms), and its thread's ms on a CPU and waiting for one. */
export interface Delay {
  p99: number;
  max: number;
  loopCpuMs: number;
  loopWaitMs: number;
}

/** One request: when it was made and when its tokens arrived (performance.now() ms; none for a batched call), and the tokens. */
export interface Trace {
  start: number;
  arrivals: number[];
  tokens: number[];
}

export interface Measurement {
  traces: Trace[];
  cost: Cost;
  /** mlos: the engine steps the work took, and the prompt tokens its prefix cache supplied. */
  steps?: number;
  prefixHits?: number;
  delay?: Delay;
}

export interface RunArgs {
  mode: Mode;
  prompts: string[];
  /** transformers.js one at a time: with a TextStreamer, for token arrival times. */
  stream?: boolean;
  /** Also measure the event loop. */
  loop?: boolean;
}

/** Messages: the benchmark asks, the side answers with the same id. */
export type Request =
  | { id: number; op: "prompts"; seed: number }
  | { id: number; op: "encode"; prompts: string[] }
  | { id: number; op: "run"; args: RunArgs }
  | { id: number; op: "idle"; ms: number }
  | { id: number; op: "bare"; steps: number }
  | { id: number; op: "exit" };
export type Reply = { id: number; value: unknown } | { id: number; error: string };

/** The event loop thread's scheduler counters (/proc/self/task/PID/schedstat): ns on a CPU, ns waiting on the run queue, time slices. */
function schedstat(): number[] {
  try {
    return readFileSync(`/proc/self/task/${process.pid}/schedstat`, "utf8").trim().split(/\s+/).map(Number);
  } catch {
    return [NaN, NaN, NaN];
  }
}

/**
 * Runs `work` and measures it: wall time, CPU time of this process and of the others (and the
 * hypervisor's steal); with `loop`, the event loop's delay histogram (1 ms timer: an idle loop
 * reads about 1 ms) and the kernel's account of the loop's thread (its time on a CPU is the work
 * done on it; its wait on the run queue is the part of the delay that is the scheduler's, not the
 * loop's work).
 */
async function measured<T>(loop: boolean, work: () => Promise<T>): Promise<{ value: T; cost: Cost; delay?: Delay }> {
  const h = loop ? monitorEventLoopDelay({ resolution: 1 }) : undefined;
  if (h) {
    await new Promise((r) => setTimeout(r, 50));
    h.enable();
  }
  const s0 = schedstat();
  const sys0 = cpuTimes();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await work();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const sys1 = cpuTimes();
  const s1 = schedstat();
  h?.disable();
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const cost = { ms, cpuMs, othersMs: Math.max(0, (sys1.busy - sys0.busy) * 1000 - cpuMs) + Math.max(0, sys1.steal - sys0.steal) * 1000 };
  const delay = h ? { p99: h.percentile(99) / 1e6, max: h.max / 1e6, loopCpuMs: (s1[0]! - s0[0]!) / 1e6, loopWaitMs: (s1[1]! - s0[1]!) / 1e6 } : undefined;
  return { value, cost, delay };
}

async function sequential(prompts: readonly string[], one: (p: string) => Promise<Trace>): Promise<Trace[]> {
  const out: Trace[] = [];
  for (const p of prompts) out.push(await one(p));
  return out;
}

/**
 * 32 prompts of 10..30 tokens (evenly spread), made of plain words by a generator seeded with
 * `seed`: every seed gives other words at the same lengths.
 */
function makePrompts(seed: number, countTokens: (text: string) => number): string[] {
  const words = (
    "the a of and to in is was for on with as by at from that this it he she they we you his her their our " +
    "old new small large red green blue quiet bright early late long short happy dark cold warm " +
    "city river house garden market school window road forest mountain village station letter story song " +
    "walked found opened carried watched remembered built painted wrote heard followed crossed " +
    "morning evening winter summer night day year week friend teacher doctor farmer child dog cat bird"
  ).split(" ");
  const rand = mulberry32(20240611 + seed);
  const prompts: string[] = [];
  for (let i = 0; i < STREAMS; i++) {
    const target = 10 + Math.round((i * 20) / (STREAMS - 1));
    let text = "Once upon a time";
    while (countTokens(text) < target) text += " " + words[Math.floor(rand() * words.length)]!;
    prompts.push(text);
  }
  return prompts;
}

/** A side: the operations the benchmark asks of it. */
interface Side {
  prompts?(seed: number): string[];
  encode?(prompts: readonly string[]): number[][];
  run?(args: RunArgs): Promise<Measurement>;
  bare?(steps: number): Promise<number>;
}

/** mlos: one loaded model; requests as a Node user makes them. */
async function mlosSide(): Promise<Side> {
  const model: Model = await new Runtime().load(MODEL_DIR, THREADS);
  const engine: GenerationEngine = await model.generationEngine();
  const stream = async (prompt: string): Promise<Trace> => {
    const start = performance.now();
    const arrivals: number[] = [];
    const tokens: number[] = [];
    for await (const chunk of model.stream(prompt, MLOS_GEN)) {
      const now = performance.now();
      for (const t of chunk.tokenIds) {
        arrivals.push(now);
        tokens.push(t);
      }
    }
    return { start, arrivals, tokens };
  };
  return {
    prompts: (seed) => makePrompts(seed, (t) => engine.text.encode(t).length),
    encode: (prompts) => prompts.map((p) => engine.text.encode(p)),
    async run({ mode, prompts, loop }) {
      if (mode === "batched") throw new Error("mlos batches concurrent requests itself: use concurrent");
      const s0 = engine.stats();
      const { value, cost, delay } = await measured(loop === true, () => (mode === "sequential" ? sequential(prompts, stream) : Promise.all(prompts.map(stream))));
      const s1 = engine.stats();
      return { traces: value, cost, delay, steps: s1.steps - s0.steps, prefixHits: s1.prefixHitTokens - s0.prefixHitTokens };
    },
  };
}

/** transformers.js on the same files. */
async function transformersSide(): Promise<Side> {
  hfEnv.allowRemoteModels = false;
  hfEnv.localModelPath = path.dirname(MODEL_DIR) + path.sep;
  const name = path.basename(MODEL_DIR);
  const tokenizer: PreTrainedTokenizer = await AutoTokenizer.from_pretrained(name);
  const model: PreTrainedModel = await AutoModelForCausalLM.from_pretrained(name, { dtype: "fp32", session_options: { intraOpNumThreads: THREADS.intraOpThreads, interOpNumThreads: THREADS.interOpThreads } });
  /** One request; with `stream`, its tokens' arrival times from a TextStreamer's token callback. */
  const generate = async (prompt: string, stream: boolean): Promise<Trace> => {
    const start = performance.now();
    const arrivals: number[] = [];
    const inputs = tokenizer(prompt);
    const streamer = stream ? new TextStreamer(tokenizer, { skip_prompt: true, callback_function: () => {}, token_callback_function: () => void arrivals.push(performance.now()) }) : undefined;
    const out = (await model.generate({ ...inputs, ...HF_GEN, ...(streamer ? { streamer } : {}) })) as HfTensor;
    const promptLength = (inputs.input_ids as HfTensor).dims[1]!;
    return { start, arrivals, tokens: Array.from(out.data as BigInt64Array, Number).slice(promptLength) };
  };
  /** All prompts in one `generate()`, left-padded with the end-of-text token (GPT-2's pad token): each row's new tokens. */
  const batched = async (prompts: string[]): Promise<Trace[]> => {
    const start = performance.now();
    tokenizer.padding_side = "left"; // decoder-only: the new tokens follow every prompt directly
    const inputs = tokenizer(prompts, { padding: true });
    const out = (await model.generate({ ...inputs, ...HF_GEN })) as HfTensor;
    const [rows, cols] = out.dims as [number, number];
    const promptLength = (inputs.input_ids as HfTensor).dims[1]!;
    const ids = Array.from(out.data as BigInt64Array, Number);
    return Array.from({ length: rows }, (_, r) => ({ start, arrivals: [], tokens: ids.slice(r * cols + promptLength, (r + 1) * cols) }));
  };
  return {
    encode: (prompts) => prompts.map((p) => Array.from((tokenizer(p).input_ids as HfTensor).data as BigInt64Array, Number)),
    async run({ mode, prompts, stream, loop }) {
      const work = mode === "batched" ? () => batched(prompts) : mode === "sequential" ? () => sequential(prompts, (p) => generate(p, stream === true)) : () => Promise.all(prompts.map((p) => generate(p, false)));
      const { value, cost, delay } = await measured(loop === true, work);
      return { traces: value, cost, delay };
    },
  };
}

/**
 * onnxruntime-node on the same file: one decode step at batch STREAMS with a past of BARE_PAST
 * tokens, inputs built once (random keys and values), outputs allocated by onnxruntime-node.
 */
async function ortSide(): Promise<Side> {
  const session = await ort.InferenceSession.create(path.join(MODEL_DIR, "onnx", "model.onnx"), { intraOpNumThreads: THREADS.intraOpThreads, interOpNumThreads: THREADS.interOpThreads });
  const config = JSON.parse(readFileSync(path.join(MODEL_DIR, "config.json"), "utf8")) as { n_layer: number; n_head: number; n_embd: number; vocab_size: number };
  const [B, P, H, D] = [STREAMS, BARE_PAST, config.n_head, config.n_embd / config.n_head];
  const rand = mulberry32(7);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from({ length: B }, () => BigInt(Math.floor(rand() * config.vocab_size))), [B, 1]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(B * (P + 1)).fill(1n), [B, P + 1]),
  };
  if (session.inputNames.includes("position_ids")) feeds.position_ids = new ort.Tensor("int64", new BigInt64Array(B).fill(BigInt(P)), [B, 1]);
  for (let l = 0; l < config.n_layer; l++) {
    for (const kv of ["key", "value"]) feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor("float32", Float32Array.from({ length: B * H * P * D }, () => rand() * 2 - 1), [B, H, P, D]);
  }
  return {
    async bare(steps) {
      const t: number[] = [];
      for (let i = 0; i < steps; i++) {
        const s = performance.now();
        await session.run(feeds);
        t.push(performance.now() - s);
      }
      return median(t);
    },
  };
}

/** Serves the benchmark's requests over IPC until it says exit. */
async function serveSide(name: SideName): Promise<void> {
  const side = name === "mlos" ? await mlosSide() : name === "transformers" ? await transformersSide() : await ortSide();
  const handle = async (req: Request): Promise<unknown> => {
    const missing = () => new Error(`the ${name} side does not do ${req.op}`);
    switch (req.op) {
      case "prompts":
        if (!side.prompts) throw missing();
        return side.prompts(req.seed);
      case "encode":
        if (!side.encode) throw missing();
        return side.encode(req.prompts);
      case "run":
        if (!side.run) throw missing();
        return side.run(req.args);
      case "idle":
        // The calibration: the same measurement over an idle loop.
        return (await measured(true, () => new Promise((r) => setTimeout(r, req.ms)))).delay;
      case "bare":
        if (!side.bare) throw missing();
        return side.bare(req.steps);
      case "exit":
        setImmediate(() => process.exit(0));
        return null;
    }
  };
  process.on("message", (req: Request) => {
    handle(req).then(
      (value) => process.send!({ id: req.id, value } satisfies Reply),
      (e: unknown) => process.send!({ id: req.id, error: e instanceof Error ? (e.stack ?? e.message) : String(e) } satisfies Reply),
    );
  });
  process.send!("ready");
}

if (process.send && process.argv[1] === fileURLToPath(import.meta.url)) {
  const name = process.argv[2] as SideName;
  if (!["mlos", "transformers", "ort"].includes(name)) throw new Error(`unknown side ${name}`);
  await serveSide(name);
}
