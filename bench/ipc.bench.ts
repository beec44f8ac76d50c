/**
 * The shared-memory IPC door against the model's in-process run and against HTTP, in one run, on
 * one `axon serve` (pinned to CPU 0; this process and the clients it starts to CPU 1):
 *
 *   1. overhead, one client at a time, N round trips (default 10,000) per client per repetition:
 *      the Node client (mlos/ipc), the C example client (examples/ipc-client.c, which also
 *      reports the server's Session::Run time per request) and HTTP with JSON tensors, each minus
 *      the model's own compute time: Session::Run on the same model file and input, measured in
 *      this process in the same repetition (a bound run, as the native side times it; the
 *      library's `model.infer` adds its JavaScript around that and is shown for reference);
 *   2. a 64 MiB float32 tensor through an identity model over IPC, against memcpy of 64 MiB in
 *      this process (Buffer.set), as bandwidth;
 *   3. throughput of 8 concurrent IPC client processes against one in-process `model.infer` loop,
 *      with the server's CPU time per request.
 *
 *   node dist/bench/ipc.bench.js      BENCH_REPS (default 3), BENCH_N (default 10000), BENCH_SECONDS (default 3)
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "undici";
import { loadOrt } from "../bindings/native.js";
import { Axon, Tensor, load, seedDemoModels } from "../src/index.js";
import { connect } from "../src/ipc/client.js";
import { OnnxModelBuilder } from "../src/tools/onnx-builder.js";
import { freePort } from "../test/helpers/registry.js";
import { cpuSeconds, LOAD_CPU, machineLine, median, percentile, PIN, pinned, pinThisProcess, roundTrips, SERVER_CPU, spread } from "./measure.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 3);
const N = Number(process.env.BENCH_N ?? 10_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const WARMUP = Math.min(2000, N);
const X = [5.1, 3.5, 1.4, 0.2];
const BIG = 16 * 1024 * 1024; // float32 elements: 64 MiB

pinThisProcess(import.meta.url);


const home = mkdtempSync(path.join(tmpdir(), "mlos-ipc-bench-"));
await seedDemoModels(new Axon({ home }));
// The identity model: y = x, float32 [n].
const identity = path.join(home, "identity.onnx");
writeFileSync(identity, new OnnxModelBuilder({ graphName: "identity" }).input("x", "float32", ["n"]).node("Identity", ["x"], ["y"]).output("y", "float32", ["n"]).toBytes());

const model = await load("demo/mlp@1", { axon: new Axon({ home }) });
const x = new Tensor("float32", [1, 4], new Float32Array(X));
const computeOnce = async () => {
  const out = await model.infer({ x });
  for (const t of Object.values(out)) t.dispose();
};
// The model's own compute: Session::Run on a bound run (OrtValues made once), one intra-op thread as the server's.
const session = await loadOrt().OrtSession.open(model.path, { intraOpThreads: 1, interOpThreads: 1 });
const bound = session.bind({ x: { dtype: "float32", shape: [1, 4], data: new Float32Array(X) } }, ["y"], { y: { dtype: "float32", shape: [1, 3], data: new Float32Array(3) } });
function sessionRuns(n: number): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = session.runBound(bound);
  return out.sort((a, b) => a - b);
}

const socket = path.join(home, "ipc.sock");
const httpPort = await freePort();
const [cmd, args] = pinned(SERVER_CPU, process.execPath, [path.join(ROOT, "bin", "run.js"), "serve", "--http-port", String(httpPort), "--grpc-port", "0", "--ipc-name", socket, "--model", "demo/mlp@1", "--model", `identity=${identity}`, "--json"]);
const server: ChildProcess = spawn(cmd, args, { env: { ...process.env, AXON_HOME: home }, stdio: ["ignore", "pipe", "inherit"] });
await new Promise<void>((resolve, reject) => {
  server.stdout!.once("data", () => resolve());
  server.once("exit", (code) => reject(new Error(`axon serve exited with ${code}`)));
});

const http = new Client(`http://127.0.0.1:${httpPort}`, { pipelining: 1 });
const jsonBody = JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: X }] });
const postJson = async () => {
  const res = await http.request({ method: "POST", path: "/v2/models/mlp/infer", body: jsonBody, headers: { "content-type": "application/json" } });
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
  await res.body.arrayBuffer();
};
const ipc = await connect(socket, { arenaBytes: 3 * BIG * 4 });
const ipcX = ipc.tensor("float32", [1, 4], X);
const ipcOnce = async () => {
  (await ipc.infer("mlp", { x: ipcX })).y!.dispose();
};
const C_CLIENT = path.join(ROOT, "build", "bin", "ipc_example_client");
/** N round trips of the C client (one process): its p50, p99 and the server-reported compute p50. */
function cClient(n: number): { p50: number; p99: number; compute: number } {
  const r = spawnSync(C_CLIENT, [socket, "mlp", "x", "1", "4", String(n)], { encoding: "utf8" });
  const m = /round trip p50 ([\d.]+) us p99 ([\d.]+) us; model compute p50 ([\d.]+) us/.exec(r.stdout);
  if (r.status !== 0 || !m) throw new Error(`the C client failed: ${r.stderr}${r.stdout}`);
  return { p50: Number(m[1]), p99: Number(m[2]), compute: Number(m[3]) };
}

console.log(`ipc.bench: ${machineLine()}; BENCH_REPS ${REPS}${PIN ? `; server on CPU ${SERVER_CPU}, clients on CPU ${LOAD_CPU}` : ""}`);
try {
  // ---- 1. overhead, one client at a time ----
  for (const f of [computeOnce, ipcOnce, postJson]) await roundTrips(f, WARMUP);
  cClient(WARMUP);
  sessionRuns(WARMUP);
  type Row = { run: { p50: number; p99: number }; compute: { p50: number; p99: number }; node: { p50: number; p99: number; cpu: number }; c: { p50: number; p99: number; compute: number; cpu: number }; json: { p50: number; p99: number; cpu: number } };
  const rows: Row[] = [];
  for (let r = 0; r < REPS; r++) {
    const measure = async (f: () => Promise<void>) => {
      const cpu0 = cpuSeconds(server.pid!);
      const lat = await roundTrips(f, N);
      return { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), cpu: ((cpuSeconds(server.pid!) - cpu0) * 1e6) / N };
    };
    const runs = sessionRuns(N);
    const run = { p50: percentile(runs, 0.5), p99: percentile(runs, 0.99) };
    const compute = await measure(computeOnce);
    const node = await measure(ipcOnce);
    const cpu0 = cpuSeconds(server.pid!);
    const c = { ...cClient(N), cpu: ((cpuSeconds(server.pid!) - cpu0) * 1e6) / N };
    const json = await measure(postJson);
    rows.push({ run, compute, node, c, json });
  }
  const over = (get: (r: Row) => number) => rows.map((r) => get(r));
  const line = (name: string, get: (r: Row) => { p50: number; p99: number; cpu?: number }) =>
    console.log(`  ${name.padEnd(36)} round trip p50 ${spread(over((r) => get(r).p50), 1, " µs")}, p99 ${spread(over((r) => get(r).p99), 1, " µs")}; overhead p50 ${spread(over((r) => get(r).p50 - r.run.p50), 1, " µs")}, p99 ${spread(over((r) => get(r).p99 - r.run.p99), 1, " µs")}; server CPU ${spread(over((r) => get(r).cpu ?? 0), 1, " µs/request")}`);
  console.log(`  the model's compute (Session::Run)   p50 ${spread(over((r) => r.run.p50), 1, " µs")}, p99 ${spread(over((r) => r.run.p99), 1, " µs")} (in this process; the library's model.infer: p50 ${spread(over((r) => r.compute.p50), 1, " µs")}, p99 ${spread(over((r) => r.compute.p99), 1, " µs")})`);
  line("IPC, Node client (mlos/ipc)", (r) => r.node);
  line("IPC, C client (libmlos_ipc_client)", (r) => r.c);
  console.log(`    (the C client's round trip minus the server-reported Session::Run of each request, p50: ${spread(over((r) => r.c.p50 - r.c.compute), 1, " µs")})`);
  line("HTTP, JSON tensors", (r) => r.json);
  const ratio = (get: (r: Row) => number) => spread(rows.map((r) => (r.json.p50 - r.run.p50) / (get(r) - r.run.p50)), 1, "x");
  console.log(`  HTTP/JSON overhead over IPC overhead (p50): Node client ${ratio((r) => r.node.p50)}, C client ${ratio((r) => r.c.p50)}`);

  // ---- 2. 64 MiB through an identity model, against memcpy ----
  // memcpy is measured twice: here (the client's CPU) and on the server's CPU, where the door's
  // one copy (ONNX Runtime's Identity writing into the output window) runs.
  const big = ipc.tensor("float32", [BIG]);
  (big.data as Float32Array).fill(1.5);
  const src = Buffer.alloc(BIG * 4, 7);
  const dst = Buffer.alloc(BIG * 4);
  const [mcCmd, mcArgs] = pinned(SERVER_CPU, process.execPath, [path.join(HERE, "memcpy-child.js"), String(BIG * 4)]);
  const memcpyChild = spawn(mcCmd, mcArgs, { stdio: ["pipe", "pipe", "inherit"] });
  const serverCpuCopy = () => new Promise<number>((resolve) => {
    memcpyChild.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim().split("\n")[0])));
    memcpyChild.stdin!.write("copy\n");
  });
  const ipcTimes: number[] = [];
  const copyTimes: number[] = [];
  const serverCopyTimes: number[] = [];
  for (let i = 0; i < 3; i++) {
    (await ipc.infer("identity", { x: big })).y!.dispose();
    dst.set(src);
    await serverCpuCopy();
  }
  for (let r = 0; r < 5 * REPS; r++) {
    let t0 = performance.now();
    const out = await ipc.infer("identity", { x: big });
    ipcTimes.push(performance.now() - t0);
    if ((out.y!.data as Float32Array)[BIG - 1] !== 1.5) throw new Error("the identity model's output differs from its input");
    out.y!.dispose();
    t0 = performance.now();
    dst.set(src);
    copyTimes.push(performance.now() - t0);
    serverCopyTimes.push(await serverCpuCopy());
  }
  memcpyChild.kill();
  const gbps = (ms: number) => (BIG * 4) / (ms / 1000) / 1e9;
  console.log(`  64 MiB float32 through an identity model over IPC: ${spread(ipcTimes.map(gbps), 2, " GB/s")} (${spread(ipcTimes, 2, " ms")})`);
  console.log(`    memcpy of 64 MiB on the server's CPU: ${spread(serverCopyTimes.map(gbps), 2, " GB/s")}; IPC / memcpy ${spread(ipcTimes.map((t, i) => serverCopyTimes[i]! / t), 2, "x")}`);
  console.log(`    memcpy of 64 MiB on the client's CPU: ${spread(copyTimes.map(gbps), 2, " GB/s")}; IPC / memcpy ${spread(ipcTimes.map((t, i) => copyTimes[i]! / t), 2, "x")}`);
  big.dispose();

  // ---- 3. 8 concurrent IPC clients against the in-process loop ----
  const inProcess: number[] = [];
  const ipc8: number[] = [];
  const cpu8: number[] = [];
  for (let r = 0; r < REPS; r++) {
    let n = 0;
    const end = Date.now() + SECONDS * 1000;
    while (Date.now() < end) {
      for (let i = 0; i < 64; i++) await computeOnce();
      n += 64;
    }
    inProcess.push(n / SECONDS);
    const until = Date.now() + 1500 + SECONDS * 1000;
    const clients = Array.from({ length: 8 }, () => spawn(process.execPath, [path.join(HERE, "ipc-client-loop.js"), socket, String(until)], { stdio: ["pipe", "pipe", "inherit"] }));
    await new Promise((res) => setTimeout(res, until - SECONDS * 1000 - Date.now()));
    const cpu0 = cpuSeconds(server.pid!);
    for (const c of clients) c.stdin!.write("go\n");
    const counts = await Promise.all(clients.map((c) => new Promise<number>((resolve, reject) => {
      let out = "";
      c.stdout!.on("data", (d: Buffer) => (out += d.toString()));
      c.once("exit", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`an IPC client exited with ${code}`))));
    })));
    const total = counts.reduce((a, b) => a + b, 0);
    ipc8.push(total / SECONDS);
    cpu8.push(((cpuSeconds(server.pid!) - cpu0) * 1e6) / total);
  }
  console.log(`  8 IPC client processes: ${spread(ipc8, 0, " req/s")} (server CPU ${spread(cpu8, 1, " µs/request")}); in-process model.infer loop: ${spread(inProcess, 0, " req/s")}; ratio ${spread(ipc8.map((v, i) => v / inProcess[i]!), 2, "x")}`);
} finally {
  ipc.close();
  await http.close();
  await model.dispose?.();
  session.release();
  server.kill("SIGTERM");
  await new Promise((r) => server.once("exit", r));
  rmSync(home, { recursive: true, force: true });
}
