/**
 * GGUF serving benchmark: mlos (`axon serve`, the llamacpp plugin) against llama.cpp's own
 * `llama-server` (continuous batching, 32 slots, built from the same llama.cpp source that
 * node-llama-cpp bundles: bench/build-llama-server.ts) and against node-llama-cpp served one
 * request at a time as a Node user would (bench/gguf-reference-server.ts), in the same run.
 *
 *   node dist/bench/gguf.bench.js            (after `npx tsc -p tsconfig.json`; the first run builds llama-server)
 *
 * Workload: 32 concurrent streaming `/v1/completions` requests (32 different prompts of 10..30
 * tokens), 64 new tokens each (`ignore_eos`), greedy, on a generated GGUF model
 * (bench-llama-Q8_0.gguf, written by scripts/make-gguf-models.py --bench: a Llama with Llama 2's
 * 32000-token vocabulary, 4 blocks of width 512, about 40M parameters in Q8_0; BENCH_MODEL=tiny
 * runs the tests' 2 x 64 model instead, where per-token overheads are all there is). Every server runs llama.cpp with 1 thread, pinned to CPU 0;
 * the load generator (this process, a Node HTTP client parsing the event streams) is pinned to CPU
 * 1. Figures per side: aggregate generated tokens per second (all tokens / wall time from the
 * first request to the last token), time to first token p50 (from sending a request to its first
 * token event), and the server's CPU time per generated token (/proc/PID/stat, all threads).
 *
 * Each repetition measures every side once, in an order that rotates between repetitions; ratios
 * are taken per repetition, then their median (min..max). BENCH_REPS (default 3).
 *
 * Targets: mlos >= 0.9x llama-server's tokens/s and <= 1.2x its TTFT p50; >= 3x the
 * one-request-at-a-time node-llama-cpp server's tokens/s.
 */
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_GGUF_MODEL, GGUF_MODELS, makeGgufModels } from "../src/tools/make-gguf-models.js";
import { freePort } from "../test/helpers/registry.js";
import { llamaServerBinary } from "./build-llama-server.js";
import { cpuSeconds, machineLine, median, pinned, pinThisProcess, SERVER_CPU, spread } from "./measure.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 3);
const STREAMS = 32;
const NEW_TOKENS = 64;

// The load generator runs on its own CPU: re-run this script pinned there.
pinThisProcess(import.meta.url);

/** BENCH_MODEL=tiny: the test models' tiny Llama instead (width 64: per-token overheads dominate). */
const TINY = process.env.BENCH_MODEL === "tiny";
const modelDir = path.join(ROOT, "dist", "test-models", "gguf");
/** BENCH_GGUF_FILE=PATH: another GGUF file instead (e.g. the benchmark's shape in another weight type). */
const OTHER = process.env.BENCH_GGUF_FILE;
const modelFile = OTHER ? path.resolve(OTHER) : TINY ? path.join(makeGgufModels(modelDir), GGUF_MODELS.tinyLlama) : path.join(makeGgufModels(modelDir, { bench: true }), BENCH_GGUF_MODEL);

interface Server {
  name: string;
  /** OpenAI's /v1/completions, or llama-server's own /completion (see startLlamaServer). */
  api: "openai" | "llama-server";
  child: ChildProcess;
  port: number;
  model: string;
}

async function waitReady(port: number, pathName: string, child: ChildProcess, name: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get({ host: "127.0.0.1", port, path: pathName }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not become ready`);
}

async function startMlos(): Promise<Server> {
  const port = await freePort();
  const home = mkdtempSync(path.join(tmpdir(), "mlos-gguf-bench-"));
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, [path.join(ROOT, "bin", "run.js"), "serve", "--http-port", String(port), "--grpc-port", "0", "--max-num-seqs", String(STREAMS), "--max-batched-tokens", "512", "--intra-op-threads", "1"]);
  const child = spawn(cmd, args, { env: { ...process.env, AXON_HOME: home }, stdio: ["ignore", "ignore", "inherit"] });
  child.on("exit", () => rmSync(home, { recursive: true, force: true }));
  await waitReady(port, "/health", child, "mlos");
  const r = await post(port, "/api/v1/models/register", { model_id: "tiny-llama", path: modelFile, plugin_id: "llamacpp" });
  if (r.status !== 201) throw new Error(`mlos: register failed: ${r.status} ${r.body}`);
  return { name: "mlos (axon serve, llamacpp plugin)", api: "openai", child, port, model: "tiny-llama" };
}

async function startLlamaServer(): Promise<Server> {
  const port = await freePort();
  const bin = llamaServerBinary();
  // 32 slots of 1024 tokens each (the model's context), continuous batching, 1 thread.
  const [cmd, args] = pinned(SERVER_CPU, bin, ["-m", modelFile, "--host", "127.0.0.1", "--port", String(port), "-np", String(STREAMS), "-c", String(STREAMS * 1024), "-t", "1", "-tb", "1", "-b", "512", "-ub", "512", "--cont-batching", "--log-disable"]);
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "ignore"] });
  await waitReady(port, "/health", child, "llama-server");
  // Its own /completion route: its /v1/completions answered some streams of this random-weight
  // model with "500 The model produced output that does not match the expected Content-only
  // format" (it parses the output for reasoning and tool calls).
  return { name: "llama-server (continuous batching, 32 slots)", api: "llama-server", child, port, model: "tiny-llama" };
}

async function startReference(): Promise<Server> {
  const port = await freePort();
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, [path.join(HERE, "gguf-reference-server.js"), modelFile, String(port), "1"]);
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });
  await waitReady(port, "/health", child, "node-llama-cpp one at a time");
  return { name: "node-llama-cpp, one request at a time", api: "openai", child, port, model: "tiny-llama" };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function post(port: number, pathName: string, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ host: "127.0.0.1", port, path: pathName, method: "POST", agent, headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) } }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(data);
  });
}

interface Trace {
  /** The last event, for the report of a request that came short. */
  last: string;
  start: number;
  first: number;
  end: number;
  tokens: number;
}

/** One streaming completion: the time of its first token event and how many token events came. */
function stream(s: Server, prompt: string): Promise<Trace> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(
      s.api === "openai"
        ? { model: s.model, prompt, max_tokens: NEW_TOKENS, temperature: 0, stream: true, ignore_eos: true, stream_options: { include_usage: true } }
        : { prompt, n_predict: NEW_TOKENS, temperature: 0, stream: true, ignore_eos: true },
    );
    const start = performance.now();
    let first = 0;
    let tokens = 0;
    let buf = "";
    let last = "";
    const req = http.request({ host: "127.0.0.1", port: s.port, path: s.api === "openai" ? "/v1/completions" : "/completion", method: "POST", agent, headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new Error(`${s.name}: HTTP ${res.statusCode}`));
      }
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, nl);
          buf = buf.slice(nl + 2);
          if (event !== "data: [DONE]") last = event;
          if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
          const chunk = JSON.parse(event.slice(6)) as { choices?: Array<{ text?: string; finish_reason?: string | null }>; usage?: { completion_tokens: number }; content?: string; stop?: boolean; tokens_predicted?: number };
          // The token count is the usage's (a server may send several tokens in one event: the
          // bytes of one character split over tokens); the first event with text is the first token.
          if (chunk.usage) tokens = chunk.usage.completion_tokens;
          if (chunk.stop === true && chunk.tokens_predicted !== undefined) tokens = chunk.tokens_predicted;
          const c = chunk.choices?.[0];
          const isToken = s.api === "openai" ? c !== undefined && (c.text !== "" || !c.finish_reason) : chunk.stop === false;
          if (first === 0 && isToken) first = performance.now();
        }
      });
      res.on("end", () => resolve({ last: last + buf, start, first, end: performance.now(), tokens }));
    });
    req.on("error", reject);
    req.end(data);
  });
}

const WORDS = "the old river ran past a quiet village where a young girl found a small green bird near the stone bridge one cold winter morning".split(" ");
/**
 * 32 prompts of about 10..30 tokens, different words in each; every measurement gets a set of its
 * own (`round`), so that no server's prompt cache serves a prompt it has seen before.
 */
const promptsFor = (round: number) =>
  Array.from({ length: STREAMS }, (_, i) => {
    const n = 8 + Math.round((i * 20) / (STREAMS - 1));
    return [`Round ${round}: once upon a time`, ...Array.from({ length: n }, (_, j) => WORDS[(i * 7 + j * 3 + round * 5) % WORDS.length])].join(" ");
  });
let rounds = 0;

interface Result {
  tps: number;
  ttft50: number;
  cpuUsPerToken: number;
  tokens: number;
}

async function measure(s: Server): Promise<Result> {
  const pid = s.child.pid!;
  const cpu0 = cpuSeconds(pid);
  const t0 = performance.now();
  const traces = await Promise.all(promptsFor(rounds++).map((p) => stream(s, p)));
  const wall = (Math.max(...traces.map((t) => t.end)) - t0) / 1000;
  const cpu = cpuSeconds(pid) - cpu0;
  const tokens = traces.reduce((n, t) => n + t.tokens, 0);
  const short = traces.filter((t) => t.tokens !== NEW_TOKENS);
  if (short.length > 0) throw new Error(`${s.name}: ${short.length} requests did not stream ${NEW_TOKENS} tokens (${short.map((t) => `${t.tokens}, last event ${JSON.stringify(t.last.slice(0, 300))}`).join("; ")})`);
  return { tps: tokens / wall, ttft50: median(traces.map((t) => t.first - t.start)), cpuUsPerToken: (cpu * 1e6) / tokens, tokens };
}

console.log(`gguf.bench: ${machineLine()}; BENCH_REPS ${REPS}`);
console.log(`model ${path.relative(ROOT, modelFile)} (${OTHER ? "given by BENCH_GGUF_FILE" : TINY ? "Llama, 2 blocks x 64, vocabulary 32000, F32" : "Llama, 4 blocks x 512, vocabulary 32000, Q8_0"}); ${STREAMS} concurrent streams x ${NEW_TOKENS} new tokens, greedy, ignore_eos; llama.cpp with 1 thread in every server`);
const servers: Server[] = [];
try {
  // One at a time, so that the starts do not compete.
  servers.push(await startMlos());
  servers.push(await startLlamaServer());
  servers.push(await startReference());
  for (const s of servers) await measure(s); // warm-up: code paths, allocations, caches
  const rows: Result[][] = [];
  for (let r = 0; r < REPS; r++) {
    const order = servers.map((_, i) => (i + r) % servers.length);
    const row: Result[] = [];
    for (const i of order) row[i] = await measure(servers[i]!);
    rows.push(row);
  }
  const col = (i: number) => rows.map((r) => r[i]!);
  for (const [i, s] of servers.entries()) {
    const c = col(i);
    console.log(`  ${s.name.padEnd(46)} ${spread(c.map((x) => x.tps), 0, " tok/s")}; TTFT p50 ${spread(c.map((x) => x.ttft50), 1, " ms")}; server CPU ${spread(c.map((x) => x.cpuUsPerToken), 0, " µs/token")}`);
  }
  const vsServer = rows.map((r) => r[0]!.tps / r[1]!.tps);
  const ttftVsServer = rows.map((r) => r[0]!.ttft50 / r[1]!.ttft50);
  const vsRef = rows.map((r) => r[0]!.tps / r[2]!.tps);
  console.log(`  mlos vs llama-server: ${spread(vsServer, 2, "x")} tokens/s, TTFT p50 ${spread(ttftVsServer, 2, "x")}, CPU per token ${spread(rows.map((r) => r[0]!.cpuUsPerToken / r[1]!.cpuUsPerToken), 2, "x")}`);
  console.log(`  mlos vs node-llama-cpp one at a time: ${spread(vsRef, 2, "x")} tokens/s`);
  console.log(`  target: >= 0.9x llama-server tokens/s ${median(vsServer) >= 0.9 ? "MET" : "NOT MET"}; TTFT p50 <= 1.2x ${median(ttftVsServer) <= 1.2 ? "MET" : "NOT MET"}; >= 3x one at a time ${median(vsRef) >= 3 ? "MET" : "NOT MET"}`);
} finally {
  for (const s of servers) s.child.kill("SIGTERM");
  agent.destroy();
}
