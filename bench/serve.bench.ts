/**
 * Serving benchmarks (issue: MLOS Core, "Speed"), with wrk (autocannon where wrk is missing),
 * against a reference server written the way a Node user would (node:http + JSON +
 * onnxruntime-node, one session.run per request: bench/reference-server.ts), on the demo MLP and
 * the PaddleOCR classifier (x f32[1,3,48,192]).
 *
 *   node dist/bench/serve.bench.js [throughput|latency|batching|binary|rss|all]
 *
 * Method (see bench/measure.ts): each server runs in a process of its own pinned to CPU 0
 * (`taskset -c 0`), wrk runs with one thread pinned to CPU 1 (`taskset -c 1 wrk -t1`), and so does
 * this script. The servers alternate within each repetition (the order rotates from one
 * repetition to the next) and each is started afresh for its measurement, warmed for 1 s, then
 * measured for BENCH_SECONDS. Beside wrk's req/s and latency, each measurement reads the server's
 * CPU time (utime + stime of all its threads, /proc/PID/stat) at the start and the end of the
 * window and divides it by the requests wrk completed: CPU µs per request, the figure that moves
 * least with the noise of a shared machine. It also reports how busy the server's core was (a
 * server under 90 % is not the bottleneck: the load generator or the machine is), what else ran on
 * the server's CPU (other processes, and the hypervisor's steal: /proc/stat) and how busy wrk's
 * CPU was. A measurement where others and steal took more than BENCH_DISTURBED (10 %) of the
 * server's CPU is redone, up to BENCH_RETRIES (2) times; the report says how many were. Every figure is the median over the repetitions with its min..max; ratios are taken
 * per repetition (mlos over the reference of the same repetition), then their median and min..max.
 *
 * 1. throughput: 64 connections; ours with batching on and off; two calibration lines: mlos's HTTP
 *    server (bench/door-fixed.ts) and uWebSockets.js (bench/uws-fixed.ts) answering a fixed body
 *    from JS, the floor of the CPU per request on the machine.
 * 2. latency: the same at 1 connection (p50 is the figure).
 * 3. batching: batching on vs off on the classifier with binary bodies (no JSON in the way).
 * 4. binary: the binary tensor extension vs JSON for a 1x3x224x224 float32 input (demo/tiny-cnn).
 * 5. rss: the server's RSS with 10 demo models loaded, and after they are unloaded.
 *
 * BENCH_REPS (default 5), BENCH_SECONDS per measurement (default 5), BENCH_MODELS (comma list of
 * mlp,ppocr-cls; default both), BENCH_PIN=0 to run unpinned.
 */
import { execFileSync, fork, spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { Axon, seedDemoModels } from "../src/index.js";
import { freePort } from "../test/helpers/registry.js";
import { LOAD_CPU, PIN, SERVER_CPU, TASKSET, allowedCpus, cpuSeconds, cpuTimes, foreignShare, machineLine, median, pinned, spread } from "./measure.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const MODELS = (process.env.BENCH_MODELS ?? "mlp,ppocr-cls").split(",");
/** A measurement is redone (up to BENCH_RETRIES times, default 2) when other processes and steal took more than this share of the server's CPU (BENCH_DISTURBED, default 0.1). */
const RETRIES = Number(process.env.BENCH_RETRIES ?? 2);
const DISTURBED = Number(process.env.BENCH_DISTURBED ?? 0.1);
const which = process.argv[2] ?? "all";
const WRK = ["/usr/bin/wrk", "/usr/local/bin/wrk"].find((p) => existsSync(p));
const TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;

const f = (x: number, d = 2) => x.toFixed(d);

// This script (and autocannon, where it stands in for wrk) stays off the server's CPU.
if (PIN) execFileSync(TASKSET!, ["-a", "-p", "-c", LOAD_CPU, String(process.pid)], { stdio: "ignore" });

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
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** Forks a server script, pinned to SERVER_CPU (taskset execs node, so the pid is node's), and waits for its "ready". */
async function start(script: string, args: (port: number) => string[]): Promise<Server> {
  const port = await freePort();
  const child = fork(path.join(HERE, script), args(port), {
    stdio: ["ignore", "ignore", "inherit", "ipc"],
    ...(PIN ? { execPath: TASKSET!, execArgv: ["-c", SERVER_CPU, process.execPath] } : { execArgv: [] }),
  });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  if (PIN) {
    const cpus = allowedCpus(child.pid!);
    if (cpus.length !== 1 || cpus[0] !== SERVER_CPU) throw new Error(`${script} is not pinned to CPU ${SERVER_CPU}: its threads may run on ${cpus.join(" / ")}`);
  }
  return {
    child,
    pid: child.pid!,
    port,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    }),
  };
}

type Kind = "ref" | "on" | "off" | "door" | "uws";
const LABEL: Record<Kind, string> = {
  ref: "reference (node:http + onnxruntime-node)",
  on: "mlos, batching on",
  off: "mlos, batching off",
  door: "calibration: mlos's HTTP server, fixed body",
  uws: "calibration: uWS.js, fixed body",
};

function startKind(kind: Kind, m: { file: string; name: string; target: string }): Promise<Server> {
  switch (kind) {
    case "ref": return start("reference-server.js", (port) => [m.file, m.name, String(port), "1"]);
    case "door": return start("door-fixed.js", (port) => [String(port)]);
    case "uws": return start("uws-fixed.js", (port) => [String(port)]);
    default: return start("serve-child.js", (port) => [home, String(port), kind === "on" ? "1" : "0", m.target]);
  }
}

interface Load {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  requests: number;
  /** The server's CPU time per completed request, µs. */
  cpuUs: number;
  /** Share of one core the server used over the window (0..1). */
  serverBusy: number;
  /** Share of one core the load generator used (0..1; NaN when unknown). */
  loadBusy: number;
  /** Share of the server's CPU that other processes (and interrupts) used over the window, and the hypervisor's steal there. */
  others: number;
  steal: number;
  /** Measurements of this one that were thrown away as disturbed. */
  retried: number;
}

function wrkScript(body: string | Buffer, headers: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-wrk-"));
  const bodyFile = path.join(dir, "body");
  writeFileSync(bodyFile, body);
  const script = path.join(dir, "post.lua");
  writeFileSync(script, [
    "wrk.method = \"POST\"",
    `local f = io.open(${JSON.stringify(bodyFile)}, "rb"); wrk.body = f:read("*all"); f:close()`,
    ...Object.entries(headers).map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`),
    // Non-2xx answers count as errors.
    "local bad = 0; response = function(status) if status >= 300 then bad = bad + 1 end end",
    "done = function(summary, latency, requests) io.write(string.format(\"MLOS %f %d %f %f %d %d\\n\", summary.requests / (summary.duration / 1e6), summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status, bad)) end",
  ].join("\n"));
  return script;
}

function run(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    c.on("close", (code) => resolve({ stdout, stderr, code }));
  });
}

/**
 * One measurement: wrk with one thread on LOAD_CPU (autocannon in this process where wrk is
 * missing); the server's CPU time, and its CPU's counters, read just before the load starts and
 * just after it ends. Redone when the machine took too much of the server's CPU.
 */
async function load(server: Server, name: string, body: string | Buffer, connections: number, headers: Record<string, string> = {}, seconds = SECONDS): Promise<Load> {
  let retried = 0;
  for (;;) {
    const r = await loadOnce(server, name, body, connections, headers, seconds);
    if (!PIN || seconds < SECONDS || r.others + r.steal <= DISTURBED || retried >= RETRIES) return { ...r, retried };
    retried++;
  }
}

async function loadOnce(server: Server, name: string, body: string | Buffer, connections: number, headers: Record<string, string>, seconds: number): Promise<Omit<Load, "retried">> {
  const url = `http://127.0.0.1:${server.port}/v2/models/${name}/infer`;
  const allHeaders = { "content-type": "application/json", ...headers };
  const window = async (go: () => Promise<{ requests: number }>) => {
    const core0 = cpuTimes(PIN ? SERVER_CPU : undefined);
    const cpu0 = cpuSeconds(server.pid);
    const t0 = performance.now();
    const r = await go();
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(server.pid) - cpu0;
    const foreign = PIN ? foreignShare(core0, cpuTimes(SERVER_CPU), cpu, wall) : { others: NaN, steal: NaN };
    return { cpuUs: (cpu / r.requests) * 1e6, serverBusy: cpu / wall, ...foreign };
  };
  if (WRK) {
    const script = wrkScript(body, allHeaders);
    const [cmd, args] = pinned(LOAD_CPU, WRK, ["-t", "1", "-c", String(connections), "-d", `${seconds}s`, "--timeout", "10s", "-s", script, url]);
    const timed: [string, string[]] = TIME ? [TIME, ["-f", "MLOSTIME %e %U %S", cmd, ...args]] : [cmd, args];
    let out = { stdout: "", stderr: "" };
    const w = await window(async () => {
      out = await run(...timed);
      const m = /MLOS \S+ (\d+) /.exec(out.stdout);
      return { requests: m ? Number(m[1]) : NaN };
    });
    const m = /MLOS (\S+) (\d+) (\S+) (\S+) (\d+) (\d+)/.exec(out.stdout);
    if (!m) throw new Error(`wrk failed: ${out.stdout} ${out.stderr}`);
    const t = /MLOSTIME (\S+) (\S+) (\S+)/.exec(out.stderr);
    return {
      rps: Number(m[1]), requests: Number(m[2]), p50: Number(m[3]), p99: Number(m[4]), errors: Number(m[5]) + Number(m[6]), ...w,
      loadBusy: t ? (Number(t[2]) + Number(t[3])) / Number(t[1]) : NaN,
    };
  }
  let ac: autocannon.Result | undefined;
  const w = await window(async () => {
    ac = await autocannon({ url, method: "POST", body, headers: allHeaders, connections, duration: seconds });
    return { requests: ac.requests.total };
  });
  return { rps: ac!.requests.average, requests: ac!.requests.total, p50: ac!.latency.p50, p99: ac!.latency.p99, errors: ac!.errors + ac!.non2xx, ...w, loadBusy: NaN };
}

const loadTool = () => (WRK ? `wrk -t1${PIN ? ` on CPU ${LOAD_CPU}` : ""}` : "autocannon");

function jsonBody(shape: number[], seed = 1): string {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Array.from({ length: n }, (_, i) => Math.round(Math.sin(i * 12.9898 + seed) * 1000) / 1000);
  return JSON.stringify({ inputs: [{ name: "x", shape, datatype: "FP32", data }] });
}

/** One line per server: req/s, CPU µs/request, cores busy, latency, each as median (min..max). */
function kindLine(label: string, rows: Load[]): string {
  const col = (k: keyof Load) => rows.map((r) => r[k]);
  const errors = col("errors").reduce((a, b) => a + b, 0);
  const retried = col("retried").reduce((a, b) => a + b, 0);
  const pct = (k: keyof Load) => `${f(median(col(k)) * 100, 0)} %`;
  const disturbed = PIN ? `, others ${pct("others")}, steal ${pct("steal")}` : "";
  return `  ${label.padEnd(42)} ${spread(col("rps"), 0)} req/s | ${spread(col("cpuUs"), 1)} CPU µs/req | server's core: server ${pct("serverBusy")}${disturbed}; wrk's core: wrk ${pct("loadBusy")} | p50 ${spread(col("p50"), 3)} ms | p99 ${f(median(col("p99")), 3)} ms${retried ? ` | ${retried} disturbed measurement(s) redone` : ""}${errors ? ` | ERRORS ${errors}` : ""}`;
}

function ratioLine(rows: Array<Partial<Record<Kind, Load>>>, k: Kind): { line: string; rps: number; cpu: number; p50: number } {
  const r = (field: keyof Load) => rows.map((x) => x[k]![field] / x.ref![field]);
  const rps = r("rps");
  const cpu = r("cpuUs");
  const p50 = r("p50");
  return {
    line: `    vs reference: throughput ${spread(rps, 2, "x")}, CPU/request ${spread(cpu, 2, "x")}, p50 ${spread(p50, 2, "x")}, p99 ${f(median(r("p99")))}x`,
    rps: median(rps), cpu: median(cpu), p50: median(p50),
  };
}

const verdict = (ok: boolean) => (ok ? "MET" : "NOT MET");

async function throughputAndLatency(models: Array<{ name: string; target: string; file: string; shape: number[] }>, connections: number): Promise<void> {
  for (const m of models) {
    const body = jsonBody(m.shape);
    const kinds: Kind[] = m.name === "mlp" ? ["ref", "on", "off", "door", "uws"] : ["ref", "on", "off"];
    const rows: Array<Partial<Record<Kind, Load>>> = [];
    for (let rep = 0; rep < REPS; rep++) {
      const row: Partial<Record<Kind, Load>> = {};
      // Interleaved, and the order rotates: no server always goes first or follows the same one.
      for (let i = 0; i < kinds.length; i++) {
        const kind = kinds[(i + rep) % kinds.length]!;
        const s = await startKind(kind, m);
        await load(s, m.name, body, connections, {}, 1).catch(() => undefined); // warm-up
        row[kind] = await load(s, m.name, body, connections);
        await s.stop();
      }
      rows.push(row);
    }
    console.log(`${m.name} (x f32[${m.shape.join(",")}], JSON), ${connections} connection${connections > 1 ? "s" : ""}, ${REPS} reps x ${SECONDS} s, ${loadTool()}; median (min..max) over reps:`);
    for (const k of kinds) {
      console.log(kindLine(LABEL[k], rows.map((r) => r[k]!)));
      if (k === "on" || k === "off") {
        const ratio = ratioLine(rows, k);
        console.log(ratio.line);
        if (k === "on" && m.name === "mlp" && connections > 1) console.log(`    targets: throughput >= 3x ${verdict(ratio.rps >= 3)}, CPU/request <= 0.33x ${verdict(ratio.cpu <= 0.33)}`);
        if (k === "on" && m.name === "mlp" && connections === 1) console.log(`    target: p50 <= 0.7x ${verdict(ratio.p50 <= 0.7)}`);
      }
    }
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
    for (const kind of rep % 2 ? (["off", "on"] as const) : (["on", "off"] as const)) {
      const s = await startKind(kind, { file: "", name: "ppocr-cls", target });
      await load(s, "ppocr-cls", body, 64, headers, 1).catch(() => undefined);
      row[kind] = await load(s, "ppocr-cls", body, 64, headers);
      await s.stop();
    }
    rows.push(row as { on: Load; off: Load });
  }
  console.log(`batching on vs off, ppocr-cls with binary bodies (x f32[1,3,48,192]), 64 connections, ${REPS} reps x ${SECONDS} s, ${loadTool()}; median (min..max):`);
  console.log(kindLine("on", rows.map((r) => r.on)));
  console.log(kindLine("off", rows.map((r) => r.off)));
  console.log(`  on/off throughput ${spread(rows.map((r) => r.on.rps / r.off.rps), 2, "x")}, CPU/request ${spread(rows.map((r) => r.on.cpuUs / r.off.cpuUs), 2, "x")}`);
}

async function binaryVsJson(): Promise<void> {
  const shape = [1, 3, 224, 224];
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const json = JSON.stringify({ inputs: [{ name: "image", shape, datatype: "FP32", data: Array.from(data, (v) => Math.round(v * 1e4) / 1e4) }] });
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: "image", shape, datatype: "FP32", parameters: { binary_data_size: data.byteLength } }], parameters: { binary_data_output: true } }));
  const binary = Buffer.concat([header, Buffer.from(data.buffer)]);
  const binHeaders = { "content-type": "application/octet-stream", "inference-header-content-length": String(header.byteLength) };
  const rows: Array<{ json: Load; bin: Load }> = [];
  const s = await startKind("off", { file: "", name: "tiny-cnn", target: "demo/tiny-cnn@1.0.0" });
  await load(s, "tiny-cnn", binary, 8, binHeaders, 1);
  for (let rep = 0; rep < REPS; rep++) {
    const j = await load(s, "tiny-cnn", json, 8);
    const b = await load(s, "tiny-cnn", binary, 8, binHeaders);
    rows.push({ json: j, bin: b });
  }
  await s.stop();
  console.log(`binary tensor extension vs JSON, tiny-cnn x f32[1,3,224,224] (${(json.length / 1e6).toFixed(2)} MB JSON vs ${(binary.length / 1e6).toFixed(2)} MB binary), 8 connections, ${REPS} reps x ${SECONDS} s, ${loadTool()}; median (min..max):`);
  console.log(kindLine("JSON", rows.map((r) => r.json)));
  console.log(kindLine("binary", rows.map((r) => r.bin)));
  console.log(`  binary/JSON throughput ${spread(rows.map((r) => r.bin.rps / r.json.rps), 1, "x")}, CPU/request ${spread(rows.map((r) => r.bin.cpuUs / r.json.cpuUs), 3, "x")}, p50 ${spread(rows.map((r) => r.bin.p50 / r.json.p50), 3, "x")}`);
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
  const idle = rssOf(s.pid);
  for (const t of targets) {
    const res = await fetch(`http://127.0.0.1:${s.port}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: t }) });
    if (res.status !== 201) throw new Error(`register ${t}: ${res.status} ${await res.text()}`);
  }
  await new Promise((r) => setTimeout(r, 300));
  const loaded = rssOf(s.pid);
  for (const t of targets) {
    const name = t.split("/")[1]!.split("@")[0]!;
    await fetch(`http://127.0.0.1:${s.port}/v2/repository/models/${name}/unload`, { method: "POST" });
  }
  await new Promise((r) => setTimeout(r, 500));
  const unloaded = rssOf(s.pid);
  await s.stop();
  const mb = (b: number) => `${(b / 1048576).toFixed(0)} MB`;
  console.log(`RSS of the server: ${mb(idle)} with no model, ${mb(loaded)} with 10 demo models loaded, ${mb(unloaded)} after they were unloaded`);
}

console.log(`serve.bench ${which}: ${machineLine()}`);
const [mlpRecord] = await axon.findInstalled("demo/mlp@1.0.0");
const models: Array<{ name: string; target: string; file: string; shape: number[] }> = [];
if (MODELS.includes("mlp")) models.push({ name: "mlp", target: "demo/mlp@1.0.0", file: path.join(mlpRecord!.path, "model.onnx"), shape: [1, 4] });
let cls: string | undefined;
if ((which === "all" || which === "throughput" || which === "latency") && MODELS.includes("ppocr-cls")) {
  cls = await packClassifier();
  const [clsRecord] = await axon.findInstalled(cls);
  models.push({ name: "ppocr-cls", target: cls, file: path.join(clsRecord!.path, "model.onnx"), shape: [1, 3, 48, 192] });
}
if (which === "all" || which === "throughput") await throughputAndLatency(models, 64);
if (which === "all" || which === "latency") await throughputAndLatency(models, 1);
if (which === "all" || which === "batching") await batchingGain(cls ?? (await packClassifier()));
if (which === "all" || which === "binary") await binaryVsJson();
if (which === "all" || which === "rss") await rss();
console.log(`done; load average now ${machineLine().split("load average ")[1]!.split(",")[0]}`);
await axon.close();
