/**
 * Round-trip overhead of MLOS Core's doors: one client at a time sends the demo MLP ([1, 4]
 * float32 in, [1, 3] out) to one `axon serve` over HTTP with JSON tensors, over HTTP with the
 * binary tensor extension, and over gRPC (ModelInfer, raw_input_contents), N round trips each
 * (default 10,000), after a warm-up. The model's own compute time is measured in-process in the
 * same run (the library's `model.infer` on the same input), and each door's overhead is its
 * round-trip percentile minus that compute percentile.
 *
 *   node dist/bench/doors.bench.js            (after `npx tsc -p tsconfig.json`)
 *
 * The server is pinned to CPU 0 and this process (the clients: undici over one keep-alive
 * connection, and @grpc/grpc-js over one channel) to CPU 1; the server's CPU time per request
 * (/proc/PID/stat) is reported beside each figure. Each repetition measures every door once, in
 * an order that rotates; the figures are the medians over repetitions (min..max).
 * BENCH_REPS (default 3), BENCH_N (default 10000).
 *
 * Then throughput under load: 64 calls in flight for BENCH_SECONDS (default 3) per door (HTTP over
 * 64 keep-alive connections, gRPC as 64 streams on one HTTP/2 connection, as one channel carries
 * them), with the server's CPU time per request, in rotating order per repetition. The load comes
 * from nghttp2's h2load when it is installed (apt-get install nghttp2-client): written in C, it
 * does not run out of CPU before the server does, which grpc-js's client does at about 3,300
 * calls/s here; without it, from undici and @grpc/grpc-js in this process (the figures then say so).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { Client, Pool } from "undici";
import { Axon, Tensor, load, seedDemoModels } from "../src/index.js";
import { freePort } from "../test/helpers/registry.js";
import { kserveClient } from "../test/helpers/grpc-client.js";
import { cpuSeconds, LOAD_CPU, machineLine, median, percentile, PIN, pinned, pinThisProcess, roundTrips, SERVER_CPU, spread } from "./measure.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const REPS = Number(process.env.BENCH_REPS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = 64;
const N = Number(process.env.BENCH_N ?? 10_000);
const WARMUP = Math.min(2000, N);
const X = [5.1, 3.5, 1.4, 0.2];

pinThisProcess(import.meta.url);



const home = mkdtempSync(path.join(tmpdir(), "mlos-doors-bench-"));
await seedDemoModels(new Axon({ home }));

// The model's own compute time, in this process (what every door adds its overhead to).
const model = await load("demo/mlp@1", { axon: new Axon({ home }) });
const x = new Tensor("float32", [1, 4], new Float32Array(X));
const computeOnce = async () => {
  const out = await model.infer({ x });
  for (const t of Object.values(out)) t.dispose();
};

const httpPort = await freePort();
const grpcPort = await freePort();
const [cmd, args] = pinned(SERVER_CPU, process.execPath, [path.join(ROOT, "bin", "run.js"), "serve", "--http-port", String(httpPort), "--grpc-port", String(grpcPort), "--model", "demo/mlp@1", "--json"]);
const child: ChildProcess = spawn(cmd, args, { env: { ...process.env, AXON_HOME: home }, stdio: ["ignore", "pipe", "inherit"] });
await new Promise<void>((resolve, reject) => {
  child.stdout!.once("data", () => resolve());
  child.once("exit", (code) => reject(new Error(`axon serve exited with ${code}`)));
});

const http = new Client(`http://127.0.0.1:${httpPort}`, { pipelining: 1 });
const jsonBody = JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: X }] });
const header = Buffer.from(JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", parameters: { binary_data_size: 16 } }], outputs: [{ name: "y", parameters: { binary_data: true } }] }));
const binaryBody = Buffer.concat([header, Buffer.from(new Float32Array(X).buffer)]);
const post = async (body: string | Buffer, headers: Record<string, string>) => {
  const res = await http.request({ method: "POST", path: "/v2/models/mlp/infer", body, headers });
  if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
  await res.body.arrayBuffer();
};
const grpcClient = kserveClient(`127.0.0.1:${grpcPort}`);
const grpcRequest = { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4] }], raw_input_contents: [Buffer.from(new Float32Array(X).buffer)] };

/** A ModelInfer request as a gRPC message frame on the wire (uncompressed flag, big-endian length, protobuf). */
function grpcBodyFrame(request: object): Buffer {
  const root = new protobuf.Root().loadSync(path.join(ROOT, "proto", "grpc_service.proto"), { keepCase: true });
  const type = root.lookupType("inference.ModelInferRequest");
  const message = type.encode(type.fromObject(request)).finish();
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

function writeBody(dir: string, name: string, bytes: Buffer): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

interface Door {
  name: string;
  once: () => Promise<void>;
  inServer: boolean;
}
const doors: Door[] = [
  { name: "in-process model.infer (compute)", once: computeOnce, inServer: false },
  { name: "HTTP, JSON tensors", once: () => post(jsonBody, { "content-type": "application/json" }), inServer: true },
  { name: "HTTP, binary tensors", once: () => post(binaryBody, { "inference-header-content-length": String(header.byteLength), "content-type": "application/octet-stream" }), inServer: true },
  { name: "gRPC ModelInfer (raw contents)", once: () => grpcClient.call("ModelInfer", grpcRequest).then(() => undefined), inServer: true },
];

interface Row {
  p50: number;
  p99: number;
  serverCpuUs: number;
}

console.log(`doors.bench: ${machineLine()}; BENCH_REPS ${REPS}, ${N} round trips per door per repetition, one client at a time${PIN ? `; server on CPU ${SERVER_CPU}, client on CPU ${LOAD_CPU}` : ""}`);
try {
  for (const d of doors) await roundTrips(d.once, WARMUP);
  const rows: Row[][] = [];
  for (let r = 0; r < REPS; r++) {
    const row: Row[] = [];
    for (let k = 0; k < doors.length; k++) {
      const i = (k + r) % doors.length;
      const d = doors[i]!;
      const cpu0 = d.inServer ? cpuSeconds(child.pid!) : 0;
      const lat = await roundTrips(d.once, N);
      const cpu = d.inServer ? cpuSeconds(child.pid!) - cpu0 : 0;
      row[i] = { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), serverCpuUs: (cpu * 1e6) / N };
    }
    rows.push(row);
  }
  const col = (i: number) => rows.map((r) => r[i]!);
  const compute = col(0);
  for (const [i, d] of doors.entries()) {
    const c = col(i);
    const overhead = i === 0 ? "" : `; overhead p50 ${spread(c.map((x, r) => x.p50 - compute[r]!.p50), 1, " µs")}, p99 ${spread(c.map((x, r) => x.p99 - compute[r]!.p99), 1, " µs")}; server CPU ${spread(c.map((x) => x.serverCpuUs), 1, " µs/request")}`;
    console.log(`  ${d.name.padEnd(34)} round trip p50 ${spread(c.map((x) => x.p50), 1, " µs")}, p99 ${spread(c.map((x) => x.p99), 1, " µs")}${overhead}`);
  }
  const jsonOverhead = median(col(1).map((x, r) => x.p50 - compute[r]!.p50));
  const grpcOverhead = median(col(3).map((x, r) => x.p50 - compute[r]!.p50));
  console.log(`  gRPC overhead vs HTTP/JSON overhead (p50): ${(grpcOverhead / jsonOverhead).toFixed(2)}x`);

  // ---- throughput with 64 calls in flight ----
  const pool = new Pool(`http://127.0.0.1:${httpPort}`, { connections: CONCURRENCY, pipelining: 1 });
  const postPool = async (body: string | Buffer, headers: Record<string, string>) => {
    const res = await pool.request({ method: "POST", path: "/v2/models/mlp/infer", body, headers });
    if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}: ${await res.body.text()}`);
    await res.body.arrayBuffer();
  };
  const loaded: Door[] = [
    { name: "HTTP, JSON tensors", once: () => postPool(jsonBody, { "content-type": "application/json" }), inServer: true },
    { name: "HTTP, binary tensors", once: () => postPool(binaryBody, { "inference-header-content-length": String(header.byteLength), "content-type": "application/octet-stream" }), inServer: true },
    { name: "gRPC ModelInfer (raw contents)", once: () => grpcClient.call("ModelInfer", grpcRequest).then(() => undefined), inServer: true },
  ];
  const H2LOAD = ["/usr/bin/h2load", "/usr/local/bin/h2load"].find((p) => existsSync(p));
  const bodies = mkdtempSync(path.join(tmpdir(), "mlos-doors-bodies-"));
  const grpcFrame = grpcBodyFrame(grpcRequest);
  const h2args: string[][] = [
    ["--h1", "-c", String(CONCURRENCY), "-d", writeBody(bodies, "json", Buffer.from(jsonBody)), "-H", "content-type: application/json", `http://127.0.0.1:${httpPort}/v2/models/mlp/infer`],
    ["--h1", "-c", String(CONCURRENCY), "-d", writeBody(bodies, "binary", binaryBody), "-H", `inference-header-content-length: ${header.byteLength}`, "-H", "content-type: application/octet-stream", `http://127.0.0.1:${httpPort}/v2/models/mlp/infer`],
    ["-c", "1", "-m", String(CONCURRENCY), "-d", writeBody(bodies, "grpc", grpcFrame), "-H", "content-type: application/grpc", "-H", "te: trailers", `http://127.0.0.1:${grpcPort}/inference.GRPCInferenceService/ModelInfer`],
  ];
  const underLoad = async (once: () => Promise<void>, door: number): Promise<{ rps: number; cpuUs: number }> => {
    if (H2LOAD) {
      const cpu0 = cpuSeconds(child.pid!);
      const r = spawnSync(H2LOAD, ["-D", String(SECONDS), ...h2args[door]!], { encoding: "utf8" });
      const done = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(r.stdout);
      const rate = /finished in [\d.]+s, ([\d.]+) req\/s/.exec(r.stdout);
      if (r.status !== 0 || !done || !rate || done[3] !== "0" || !/status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx/.test(r.stdout)) throw new Error(`h2load failed on ${loaded[door]!.name}: ${r.stdout}${r.stderr}`);
      return { rps: Number(rate[1]), cpuUs: ((cpuSeconds(child.pid!) - cpu0) * 1e6) / Number(done[2]) };
    }
    let n = 0;
    const cpu0 = cpuSeconds(child.pid!);
    const t0 = performance.now();
    const end = t0 + SECONDS * 1000;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        await once();
        n++;
      }
    }));
    const wall = (performance.now() - t0) / 1000;
    return { rps: n / wall, cpuUs: ((cpuSeconds(child.pid!) - cpu0) * 1e6) / n };
  };
  for (const [i, d] of loaded.entries()) await underLoad(d.once, i); // warm-up (connections, JIT)
  const tput: Array<Array<{ rps: number; cpuUs: number }>> = loaded.map(() => []);
  for (let r = 0; r < REPS; r++) {
    for (let k = 0; k < loaded.length; k++) {
      const i = (k + r) % loaded.length;
      tput[i]!.push(await underLoad(loaded[i]!.once, i));
    }
  }
  console.log(`  ${CONCURRENCY} calls in flight, ${SECONDS} s per door per repetition, load from ${H2LOAD ? "h2load" : "undici and @grpc/grpc-js in this process (install nghttp2-client for h2load)"}:`);
  for (const [i, d] of loaded.entries()) console.log(`    ${d.name.padEnd(32)} ${spread(tput[i]!.map((t) => t.rps), 0, " req/s")}; server CPU ${spread(tput[i]!.map((t) => t.cpuUs), 1, " µs/request")}`);
  const ratio = (a: number, b: number) => spread(tput[a]!.map((t, r) => t.rps / tput[b]![r]!.rps), 2, "x");
  console.log(`    gRPC / HTTP binary ${ratio(2, 1)}; gRPC / HTTP JSON ${ratio(2, 0)}`);
  await pool.close();
  rmSync(bodies, { recursive: true, force: true });
} finally {
  grpcClient.close();
  await http.close();
  await model.dispose?.();
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  rmSync(home, { recursive: true, force: true });
}
