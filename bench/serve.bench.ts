/**
 * Serving benchmarks (issue: MLOS Core, "Speed"), with wrk (autocannon where wrk is missing), in one run, alternating with a
 * reference server written the way a Node user would (node:http + JSON + onnxruntime-node, one
 * session.run per request: bench/reference-server.ts), on the demo MLP and the PaddleOCR
 * classifier (x f32[1,3,48,192]). Each server runs in a process of its own; every figure is the
 * median over BENCH_REPS repetitions.
 *
 *   node dist/bench/serve.bench.js [throughput|latency|batching|binary|rss|all]
 *
 * 1. throughput: 64 connections, requests/s and p99 latency; ours with batching on and off.
 * 2. latency: 1 connection, p50 latency.
 * 3. batching: batching on vs off on the classifier with binary bodies (no JSON in the way).
 * 4. binary: the binary tensor extension vs JSON for a 1x3x224x224 float32 input (demo/tiny-cnn).
 * 5. rss: the server's RSS with 10 demo models loaded, and after they are unloaded.
 *
 * BENCH_REPS (default 3), BENCH_SECONDS per measurement (default 4).
 */
import { fork, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { Axon, seedDemoModels } from "../src/index.js";
import { freePort } from "../test/helpers/registry.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const which = process.argv[2] ?? "all";
const WRK = ["/usr/bin/wrk", "/usr/local/bin/wrk"].find((p) => existsSync(p));

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f = (x: number, d = 2) => x.toFixed(d);

const { fetchTestModels } = (await import(pathToFileURL(path.join(ROOT, "scripts", "fetch-test-models.js")).href)) as { fetchTestModels: () => { files: Record<string, string> } };

const home = mkdtempSync(path.join(tmpdir(), "mlos-serve-bench-"));
const axon = new Axon({ home });
await seedDemoModels(axon);

/** The classifier as an Axon model whose manifest names its batch dimension (so it can be batched). */
async function packClassifier(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-bench-cls-"));
  copyFileSync(fetchTestModels().files["ch_ppocr_mobile_v2.0_cls_infer.onnx"]!, path.join(dir, "model.onnx"));
  writeFileSync(path.join(dir, "axon.yaml"), [
    "apiVersion: axon.mlos.io/v1", "kind: Model",
    "metadata: { namespace: bench, name: ppocr-cls, version: 2.0.0, description: PaddleOCR text direction classifier }",
    "spec:", "  framework: { name: onnx }", "  format: { type: onnx, files: [{ path: model.onnx }] }",
    "  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 3, 48, 192] }]", "    outputs: [{ name: softmax_0.tmp_0, dtype: float32, shape: [batch, 2] }]",
    "  serving: { batching: { max_batch_size: 32, max_queue_delay_us: 1000 } }", "",
  ].join("\n"));
  return (await axon.pack(dir)).reference;
}

interface Server {
  child: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

async function start(script: string, args: (port: number) => string[]): Promise<Server> {
  const port = await freePort();
  const child = fork(path.join(HERE, script), args(port), { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return {
    child,
    port,
    stop: () => new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    }),
  };
}

const reference = (file: string, name: string) => start("reference-server.js", (port) => [file, name, String(port), "1"]);
const ours = (target: string, batching: boolean) => start("serve-child.js", (port) => [home, String(port), batching ? "1" : "0", target]);

interface Load {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/** One load run: wrk (C, light on the CPU it shares with the servers) when installed, else autocannon. */
async function load(port: number, name: string, body: string | Buffer, connections: number, headers: Record<string, string> = {}, seconds = SECONDS): Promise<Load> {
  const url = `http://127.0.0.1:${port}/v2/models/${name}/infer`;
  const allHeaders = { "content-type": "application/json", ...headers };
  if (WRK) {
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-wrk-"));
    const bodyFile = path.join(dir, "body");
    writeFileSync(bodyFile, body);
    const script = path.join(dir, "post.lua");
    writeFileSync(script, [
      "wrk.method = \"POST\"",
      `local f = io.open(${JSON.stringify(bodyFile)}, "rb"); wrk.body = f:read("*all"); f:close()`,
      ...Object.entries(allHeaders).map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`),
      // Non-2xx answers count as errors.
      "local bad = 0; response = function(status) if status >= 300 then bad = bad + 1 end end",
      "done = function(summary, latency, requests) io.write(string.format(\"MLOS %f %f %f %d %d\\n\", summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status, bad)) end",
    ].join("\n"));
    const r = spawnSync(WRK, ["-t", connections > 1 ? "2" : "1", "-c", String(connections), "-d", `${seconds}s`, "--timeout", "10s", "-s", script, url], { encoding: "utf8" });
    const m = /MLOS (\S+) (\S+) (\S+) (\d+) (\d+)/.exec(r.stdout);
    if (!m) throw new Error(`wrk failed: ${r.stdout} ${r.stderr}`);
    return { rps: Number(m[1]), p50: Number(m[2]), p99: Number(m[3]), errors: Number(m[4]) + Number(m[5]) };
  }
  const r = await autocannon({ url, method: "POST", body, headers: allHeaders, connections, duration: seconds });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.non2xx };
}

function jsonBody(shape: number[], seed = 1): string {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Array.from({ length: n }, (_, i) => Math.round(Math.sin(i * 12.9898 + seed) * 1000) / 1000);
  return JSON.stringify({ inputs: [{ name: "x", shape, datatype: "FP32", data }] });
}

async function throughputAndLatency(models: Array<{ name: string; target: string; file: string; shape: number[] }>, connections: number): Promise<void> {
  for (const m of models) {
    const body = jsonBody(m.shape);
    const rows: Array<{ ref: Load; on: Load; off: Load }> = [];
    for (let rep = 0; rep < REPS; rep++) {
      const row: Partial<{ ref: Load; on: Load; off: Load }> = {};
      for (const kind of ["ref", "on", "off"] as const) {
        const s = kind === "ref" ? await reference(m.file, m.name) : await ours(m.target, kind === "on");
        await load(s.port, m.name, body, connections, {}, 1).catch(() => undefined); // warm-up
        row[kind] = await load(s.port, m.name, body, connections);
        await s.stop();
      }
      rows.push(row as { ref: Load; on: Load; off: Load });
    }
    const med = (k: "ref" | "on" | "off", field: keyof Load) => median(rows.map((r) => r[k][field]));
    const ratio = (k: "on" | "off", field: "rps" | "p50" | "p99") => median(rows.map((r) => r[k][field] / r.ref[field]));
    console.log(`${m.name} (x f32[${m.shape.join(",")}], JSON, ${WRK ? "wrk" : "autocannon"}), ${connections} connection${connections > 1 ? "s" : ""}, ${REPS} reps x ${SECONDS} s:`);
    console.log(`  reference (node:http + onnxruntime-node)  ${f(med("ref", "rps"), 0)} req/s  p50 ${f(med("ref", "p50"), 3)} ms  p99 ${f(med("ref", "p99"), 3)} ms  errors ${med("ref", "errors")}`);
    console.log(`  mlos, batching on                          ${f(med("on", "rps"), 0)} req/s  p50 ${f(med("on", "p50"), 3)} ms  p99 ${f(med("on", "p99"), 3)} ms  errors ${med("on", "errors")}  throughput ${f(ratio("on", "rps"))}x  p50 ${f(ratio("on", "p50"))}x  p99 ${f(ratio("on", "p99"))}x`);
    console.log(`  mlos, batching off                         ${f(med("off", "rps"), 0)} req/s  p50 ${f(med("off", "p50"), 3)} ms  p99 ${f(med("off", "p99"), 3)} ms  errors ${med("off", "errors")}  throughput ${f(ratio("off", "rps"))}x  p50 ${f(ratio("off", "p50"))}x  p99 ${f(ratio("off", "p99"))}x`);
  }
}

/** Batching on vs off where the model, not JSON, is the cost: the classifier with binary bodies. */
async function batchingGain(target: string): Promise<void> {
  const shape = [1, 3, 48, 192];
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5);
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: "x", shape, datatype: "FP32", parameters: { binary_data_size: data.byteLength } }] }));
  const body = Buffer.concat([header, Buffer.from(data.buffer)]);
  const headers = { "content-type": "application/octet-stream", "inference-header-content-length": String(header.byteLength) };
  const rows: Array<{ on: Load; off: Load }> = [];
  for (let rep = 0; rep < REPS; rep++) {
    const row: Partial<{ on: Load; off: Load }> = {};
    for (const kind of ["on", "off"] as const) {
      const s = await ours(target, kind === "on");
      await load(s.port, "ppocr-cls", body, 64, headers, 1).catch(() => undefined);
      row[kind] = await load(s.port, "ppocr-cls", body, 64, headers);
      await s.stop();
    }
    rows.push(row as { on: Load; off: Load });
  }
  const med = (k: "on" | "off", f: keyof Load) => median(rows.map((r) => r[k][f]));
  console.log(`batching on vs off, ppocr-cls with binary bodies (x f32[1,3,48,192]), 64 connections, ${REPS} reps:`);
  console.log(`  on   ${f(med("on", "rps"), 0)} req/s  p50 ${f(med("on", "p50"), 1)} ms  p99 ${f(med("on", "p99"), 1)} ms`);
  console.log(`  off  ${f(med("off", "rps"), 0)} req/s  p50 ${f(med("off", "p50"), 1)} ms  p99 ${f(med("off", "p99"), 1)} ms`);
  console.log(`  on/off throughput ${f(median(rows.map((r) => r.on.rps / r.off.rps)))}x`);
}

async function binaryVsJson(): Promise<void> {
  const shape = [1, 3, 224, 224];
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const json = JSON.stringify({ inputs: [{ name: "image", shape, datatype: "FP32", data: Array.from(data, (v) => Math.round(v * 1e4) / 1e4) }] });
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: "image", shape, datatype: "FP32", parameters: { binary_data_size: data.byteLength } }], parameters: { binary_data_output: true } }));
  const binary = Buffer.concat([header, Buffer.from(data.buffer)]);
  const rows: Array<{ json: Load; bin: Load }> = [];
  const s = await ours("demo/tiny-cnn@1.0.0", false);
  for (let rep = 0; rep < REPS; rep++) {
    const j = await load(s.port, "tiny-cnn", json, 8);
    const b = await load(s.port, "tiny-cnn", binary, 8, { "content-type": "application/octet-stream", "inference-header-content-length": String(header.byteLength) });
    rows.push({ json: j, bin: b });
  }
  await s.stop();
  console.log(`binary tensor extension vs JSON, tiny-cnn x f32[1,3,224,224] (${(json.length / 1e6).toFixed(2)} MB JSON vs ${(binary.length / 1e6).toFixed(2)} MB binary), 8 connections, ${REPS} reps:`);
  console.log(`  JSON    ${f(median(rows.map((r) => r.json.rps)), 0)} req/s  p50 ${median(rows.map((r) => r.json.p50))} ms`);
  console.log(`  binary  ${f(median(rows.map((r) => r.bin.rps)), 0)} req/s  p50 ${median(rows.map((r) => r.bin.p50))} ms`);
  console.log(`  binary/JSON throughput ${f(median(rows.map((r) => r.bin.rps / r.json.rps)))}x, p50 latency ${f(median(rows.map((r) => r.bin.p50 / r.json.p50)))}x`);
}

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function rss(): Promise<void> {
  // Ten distinct models: the three demo models, each packed again under other names.
  const targets: string[] = [];
  for (let i = 0; i < 10; i++) {
    const base = ["mlp", "tiny-cnn", "embedder"][i % 3]!;
    const [record] = await axon.findInstalled(`demo/${base}@1.0.0`);
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-rss-"));
    copyFileSync(path.join(record!.path, "model.onnx"), path.join(dir, "model.onnx"));
    writeFileSync(path.join(dir, "axon.yaml"), readFileSync(path.join(record!.path, "axon.yaml"), "utf8").replace(`name: ${base}`, `name: ${base}-${i}`).replace(/\n\s+size: \d+|\n\s+sha256: \S+/g, ""));
    targets.push((await axon.pack(dir)).reference);
  }
  const s = await start("serve-child.js", (port) => [home, String(port), "0"]);
  await new Promise((r) => setTimeout(r, 300));
  const idle = rssOf(s.child.pid!);
  for (const t of targets) {
    const res = await fetch(`http://127.0.0.1:${s.port}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: t }) });
    if (res.status !== 201) throw new Error(`register ${t}: ${res.status} ${await res.text()}`);
  }
  await new Promise((r) => setTimeout(r, 300));
  const loaded = rssOf(s.child.pid!);
  for (const t of targets) {
    const name = t.split("/")[1]!.split("@")[0]!;
    await fetch(`http://127.0.0.1:${s.port}/v2/repository/models/${name}/unload`, { method: "POST" });
  }
  await new Promise((r) => setTimeout(r, 500));
  const unloaded = rssOf(s.child.pid!);
  await s.stop();
  const mb = (b: number) => `${(b / 1048576).toFixed(0)} MB`;
  console.log(`RSS of the server: ${mb(idle)} with no model, ${mb(loaded)} with 10 demo models loaded, ${mb(unloaded)} after they were unloaded`);
}

const [mlpRecord] = await axon.findInstalled("demo/mlp@1.0.0");
const models = [{ name: "mlp", target: "demo/mlp@1.0.0", file: path.join(mlpRecord!.path, "model.onnx"), shape: [1, 4] }];
if (which === "all" || which === "throughput" || which === "latency") {
  const cls = await packClassifier();
  const [clsRecord] = await axon.findInstalled(cls);
  models.push({ name: "ppocr-cls", target: cls, file: path.join(clsRecord!.path, "model.onnx"), shape: [1, 3, 48, 192] });
}
if (which === "all" || which === "throughput") await throughputAndLatency(models, 64);
if (which === "all" || which === "latency") await throughputAndLatency(models, 1);
if (which === "all" || which === "batching") await batchingGain(models.find((m) => m.name === "ppocr-cls")?.target ?? (await packClassifier()));
if (which === "all" || which === "binary") await binaryVsJson();
if (which === "all" || which === "rss") await rss();
await axon.close();
