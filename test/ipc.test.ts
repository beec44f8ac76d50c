// The shared-memory IPC door end to end: `axon serve --ipc-name PATH` in a child process, and
// its clients as users run them: the Node client (mlos/ipc) in this process and in 32 child
// processes, and the C example client (examples/ipc-client.c, built by npm install) as a program.
// ONNX Runtime models run on the door's native threads; a plugin's JS model goes through
// JavaScript. Faults: bad requests of every kind, a model unloaded under its clients, a client
// killed -9 mid-request, one that corrupts a ring slot's header, one that never reads its
// responses (dropped after the lease), another user's client (refused by its credentials), and a
// server killed and restarted (clients reconnect). After each, the server answers and its IPC
// segments and pool return to their baseline.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { Axon, Tensor, seedDemoModels } from "mlos";
import { loadNative, tryLoadOrt } from "../bindings/native.js";
import { torchTestModelTool, tryLoadTorch } from "../bindings/torch.js";
import { serve } from "../src/server/serve.js";
import { connect, IpcError, type IpcClient } from "../src/ipc/client.js";
import { decodeResponse, encodeRequest, REQUEST, RESPONSE } from "../src/protocol/ipc.js";
import { poolUsed, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { torchModelFolder } from "./helpers/torch-models.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.join(HERE, "..", "..");
const CHILD = path.join(HERE, "fixtures", "ipc-child.js");
const C_CLIENT = path.join(ROOT, "build", "bin", "ipc_example_client");
const skip = !tryLoadOrt() ? "ONNX Runtime is unavailable" : false;

/** A JS plugin (served through JavaScript over IPC): y = 3x. */
function scalePlugin(): string {
  const dir = path.join(ROOT, "dist", "test-plugins");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "ipc-scale.mjs");
  writeFileSync(file, `import { Tensor } from "mlos";
export default {
  id: "ipc-scale", version: "1.0.0", frameworks: ["other"], formats: ["ipc-scale"],
  availability() { return { available: true }; },
  async load(source) {
    const io = source.manifest.spec.io;
    return {
      signature: { inputs: io.inputs, outputs: io.outputs }, memoryBytes: 64,
      async run(req) { const x = req.inputs.x; return { y: Tensor.float32(x.shape, Float32Array.from(x.data, (v) => v * 3)) }; },
      async unload() {}, describe() { return {}; },
    };
  },
};
`);
  return file;
}

function scaleModel(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-ipc-scale-"));
  writeFileSync(path.join(dir, "scale.json"), "{}");
  writeFileSync(path.join(dir, "axon.yaml"), [
    "apiVersion: axon.mlos.io/v1", "kind: Model", "metadata: { namespace: test, name: scaler, version: 1.0.0 }",
    "spec:", "  framework: { name: other }", "  format: { type: ipc-scale, entrypoint: scale.json, files: [{ path: scale.json }] }",
    "  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 4] }]", "    outputs: [{ name: \"y\", dtype: float32, shape: [batch, 4] }]",
    "  serving: { plugin: ipc-scale }", "",
  ].join("\n"));
  return dir;
}

/** The server's answer over HTTP (KServe v2 JSON) for x [rows, 4]. */
async function httpAnswer(base: string, x: number[]): Promise<number[]> {
  const res = await fetch(`${base}/v2/models/mlp/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [x.length / 4, 4], data: x }] }) });
  assert.equal(res.status, 200);
  return ((await res.json()) as { outputs: Array<{ data: number[] }> }).outputs[0]!.data;
}

async function metric(base: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = pattern.exec(text);
  return m ? Number(m[1]) : 0;
}
const ipcClients = (base: string) => metric(base, /^mlos_ipc_clients\{kind="clients"\} (\d+)/m);
const ipcSegmentBytes = (base: string) => metric(base, /^mlos_ipc_clients\{kind="segment_bytes"\} (\d+)/m);

async function until(what: string, f: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs the fixture child; resolves with its JSON lines and exit code. */
function child(args: string[], onLine?: (line: Record<string, unknown>, p: ChildProcess) => void): { p: ChildProcess; done: Promise<{ lines: Array<Record<string, unknown>>; code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  const p = spawn(process.execPath, [CHILD, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: Array<Record<string, unknown>> = [];
  let out = "";
  let stderr = "";
  p.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    let nl;
    while ((nl = out.indexOf("\n")) >= 0) {
      const line = JSON.parse(out.slice(0, nl)) as Record<string, unknown>;
      out = out.slice(nl + 1);
      lines.push(line);
      onLine?.(line, p);
    }
  });
  p.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ lines: Array<Record<string, unknown>>; code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => p.once("exit", (code, signal) => resolve({ lines, code, signal, stderr })));
  return { p, done };
}

describe("the shared-memory IPC door (axon serve --ipc-name)", { skip }, () => {
  let home: string;
  let dir: string;
  let socket: string;
  let config: string;
  let server: Served;
  let client: IpcClient;
  const args = () => ["--ipc-name", socket, "--config", config, "--plugin", scalePlugin(), "--model", "demo/mlp@1", "--model", `scaler=${scaleModel()}`];

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-ipc-"));
    dir = mkdtempSync(path.join(tmpdir(), "mlos-ipc-sock-"));
    socket = path.join(dir, "door.sock");
    config = path.join(dir, "mlos.yaml");
    writeFileSync(config, "ipc:\n  lease_ms: 400\n");
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, args());
    assert.equal(server.info.ipc, socket);
    client = await connect(socket);
  });
  after(async () => {
    client?.close();
    if (server) await stop(server);
  });

  it("runs the demo MLP in place for the Node client, as the HTTP door answers it", async () => {
    const xs = [5.1, 3.5, 1.4, 0.2, 6.7, 3.1, 4.4, 1.4];
    const x = client.tensor("float32", [2, 4], xs);
    const before = client.arenaUsage.used;
    const out = await client.infer("mlp", { x });
    assert.deepEqual(Object.keys(out), ["y"]);
    assert.deepEqual(out.y!.shape, [2, 3]);
    assert.ok(client.arenaUsage.used > before, "the output lies in the arena (its window is held until disposed)");
    const expected = await httpAnswer(server.base, xs);
    assert.deepEqual([...(out.y!.data as Float32Array)].map((v) => Math.fround(v)), expected.map((v) => Math.fround(v)));
    out.y!.dispose();
    assert.equal(client.arenaUsage.used, before, "disposing the output gives its window back");
    // A plain tensor (not in the arena) is copied in for the request.
    const plain = await client.infer("mlp", { x: Tensor.float32([2, 4], xs) });
    assert.deepEqual([...(plain.y!.data as Float32Array)], [...(await client.infer("mlp", { x })).y!.data as Float32Array]);
    x.dispose();
    assert.ok(await metric(server.base, /^mlos_requests_total\{model="mlp@1\.0\.0",route="ipc",outcome="ok"\} (\d+)/m) >= 3, "native requests count in mlos_requests_total");
  });

  it("the C example client (examples/ipc-client.c) gets the same answer", async () => {
    assert.ok(existsSync(C_CLIENT), `${C_CLIENT} is built by npm install`);
    const r = spawnSync(C_CLIENT, [socket, "mlp", "x", "2", "4"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const m = /^y \[2, 3\]((?: \S+){6})$/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    const got = m[1]!.trim().split(" ").map(Number);
    const expected = await httpAnswer(server.base, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8].map((v) => Math.fround(v)));
    got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-5, `y[${i}] ${v} vs ${expected[i]}`));
    const bad = spawnSync(C_CLIENT, [socket, "nope"], { encoding: "utf8" });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^IPC_MODEL_NOT_FOUND: model 'nope'/);
  });

  it("serves a plugin's JavaScript model through JavaScript", async () => {
    const x = client.tensor("float32", [3, 4], Array.from({ length: 12 }, (_, i) => i));
    const out = await client.infer("scaler", { x });
    assert.deepEqual([...(out.y!.data as Float32Array)], Array.from({ length: 12 }, (_, i) => 3 * i));
    out.y!.dispose();
    x.dispose();
    assert.ok(await metric(server.base, /^mlos_requests_total\{model="scaler@1\.0\.0",route="ipc",outcome="ok"\} (\d+)/m) >= 1);
  });

  it("answers bad requests with one-line coded errors, and keeps serving", async () => {
    const x = client.tensor("float32", [1, 4], [1, 2, 3, 4]);
    const rejects = async (p: Promise<unknown>, code: string, pattern: RegExp) =>
      assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof IpcError, String(e));
        assert.equal(e.code, code, e.message);
        assert.match(e.message, pattern);
        assert.ok(!e.message.includes("\n"));
        return true;
      });
    await rejects(client.infer("nope", { x }), "IPC_MODEL_NOT_FOUND", /model 'nope'/);
    await rejects(client.infer("mlp", { z: x }), "IPC_BAD_TENSOR", /no input 'z'/);
    await rejects(client.infer("mlp", { x: client.tensor("int32", [1, 4]) }), "IPC_BAD_TENSOR", /'x' is float32, not int32/);
    await rejects(client.infer("mlp", { x: client.tensor("float32", [1, 5]) }), "IPC_BAD_TENSOR", /dimension 1 is 4, not 5/);
    await rejects(client.infer("mlp", { x: client.tensor("float32", [1, 4, 1]) }), "IPC_BAD_TENSOR", /rank 2, not 3/);
    await rejects(client.infer("mlp", { x }, { outputs: ["nope"] }), "IPC_BAD_TENSOR", /no output 'nope'/);
    await rejects(client.infer("scaler", { x: client.tensor("float32", [1, 5]) }), "INPUT_SHAPE", /x/);
    assert.throws(() => client.tensor("float32", [1 << 30]), (e: unknown) => e instanceof IpcError && e.code === "IPC_ARENA_FULL");
    // A window too small for the outputs: the server says what they need, and the client retries with it.
    const small = await client.infer("mlp", { x: client.tensor("float32", [64, 4]) }, { outputBytes: 64 });
    assert.deepEqual(small.y!.shape, [64, 3]);
    // Fields only a raw client can get wrong: checked by the server before any use.
    const { IpcClient } = loadNative();
    const raw = new IpcClient(socket, 1 << 16);
    const req = new Uint8Array(REQUEST.size);
    const res = new Uint8Array(RESPONSE.size);
    const send = async (offset: number, bytes: number, outOffset = 4096) => {
      encodeRequest(req, { id: 9, model: "mlp", inputs: [{ name: "x", dtype: "float32", shape: [1, 4], offset, bytes }], outputs: [], outOffset, outBytes: 4096 });
      assert.ok(raw.send(req));
      assert.equal(await raw.receiveAsync(res, 5000), 1);
      return decodeResponse(res);
    };
    const arena = raw.arena.byteLength;
    for (const [offset, bytes, outOffset, code] of [[arena - 8, 16, 4096, "IPC_OUT_OF_RANGE"], [2 ** 53, 16, 4096, "IPC_OUT_OF_RANGE"], [0, 12, 4096, "IPC_BAD_TENSOR"], [0, 16, arena, "IPC_OUT_OF_RANGE"]] as const) {
      const r = await send(offset, bytes, outOffset);
      assert.ok(!r.ok && r.code === code, `offset ${offset} bytes ${bytes} window at ${outOffset}: ${JSON.stringify(r)}`);
    }
    assert.ok((await send(0, 16)).ok);
    raw.close();
    const ok = await client.infer("mlp", { x });
    assert.deepEqual(ok.y!.shape, [1, 3]);
  });

  it("a model unloaded under its clients is refused, not run, and serves again once loaded", async () => {
    const x = client.tensor("float32", [1, 4], [1, 2, 3, 4]);
    let stopLoop = false;
    const codes = new Set<string>();
    let answered = 0;
    const loop = (async () => {
      while (!stopLoop) {
        try {
          (await client.infer("mlp", { x })).y!.dispose();
          answered++;
        } catch (e) {
          codes.add((e as IpcError).code);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    const unload = await fetch(`${server.base}/v2/repository/models/mlp/unload`, { method: "POST", body: "{}" });
    assert.equal(unload.status, 200);
    await new Promise((r) => setTimeout(r, 50));
    await assert.rejects(client.infer("mlp", { x }), (e: unknown) => (e as IpcError).code === "MODEL_NOT_READY");
    const load = await fetch(`${server.base}/v2/repository/models/mlp/load`, { method: "POST", body: "{}" });
    assert.equal(load.status, 200);
    const before = answered;
    await until("requests are answered again", () => answered > before + 10);
    stopLoop = true;
    await loop;
    assert.deepEqual([...codes].filter((c) => c !== "MODEL_NOT_READY"), [], "only MODEL_NOT_READY while unloaded");
  });

  it("32 client processes at once while one is killed -9 mid-request, one corrupts a slot header and one never reads: every well-behaved client gets its own answers, and the server's segments and pool return to their baseline", async () => {
    const poolBefore = await poolUsed(server.base);
    const base = await ipcSegmentBytes(server.base);
    // Expected outputs, from the HTTP door.
    const cases: Array<{ x: number[]; y: number[] }> = [];
    for (let k = 0; k < 16; k++) {
      const x = [k * 0.1, 1 - k * 0.05, k % 3, 0.5 + k];
      cases.push({ x: x.map((v) => Math.fround(v)), y: await httpAnswer(server.base, x.map((v) => Math.fround(v))) });
    }
    const file = path.join(dir, "cases.json");
    writeFileSync(file, JSON.stringify(cases));
    const killed = child(["loop", socket], (line, p) => {
      if (line.ready) setTimeout(() => p.kill("SIGKILL"), 100);
    });
    const corrupt = child(["corrupt-slot", socket]);
    const lazy = child(["no-read", socket]);
    const hammers = Array.from({ length: 32 }, (_, i) => child(["hammer", socket, file, "300", String(i)]));
    const results = await Promise.all(hammers.map((h) => h.done));
    results.forEach((r, i) => {
      assert.equal(r.code, 0, `client ${i}: ${r.stderr} ${JSON.stringify(r.lines)}`);
      assert.equal(r.lines.at(-1)!.ok, 300);
    });
    const k = await killed.done;
    assert.equal(k.signal, "SIGKILL");
    const c = await corrupt.done;
    assert.equal(c.lines[0]!.got, -1, JSON.stringify(c.lines));
    assert.match(String(c.lines[0]!.error), /IPC_DISCONNECTED/);
    const l = await lazy.done;
    assert.equal(l.code, 0, l.stderr);
    assert.ok(Number(l.lines[0]!.sent) > 128, `the lazy client filled both rings: ${JSON.stringify(l.lines)}`);
    assert.equal(l.lines[1]!.dropped, true);
    assert.ok(await metric(server.base, /^mlos_ipc_connections_total\{outcome="dropped"\} (\d+)/m) >= 2, "the corrupt and the lazy client were dropped");
    // Everything they held is freed; the server still answers.
    await until("the IPC segments are back to their baseline", async () => (await ipcSegmentBytes(server.base)) === base);
    assert.equal(await ipcClients(server.base), 1, "only this process's client is left");
    assert.equal(await poolUsed(server.base), poolBefore);
    const out = await client.infer("mlp", { x: client.tensor("float32", [1, 4], cases[3]!.x) });
    assert.ok(Math.abs((out.y!.data as Float32Array)[0]! - cases[3]!.y[0]!) < 1e-6);
  });

  it("refuses a client of another user by its peer credentials", { skip: process.getuid?.() !== 0 ? "needs root to run a client as another user" : false }, () => {
    // Open the socket's permissions, so that only the credential check stands in the way.
    chmodSync(dir, 0o755);
    chmodSync(socket, 0o777);
    // A copy of the client where that user can run it (the checkout may sit in a private folder).
    const program = path.join(dir, "ipc-client");
    copyFileSync(C_CLIENT, program);
    chmodSync(program, 0o755);
    try {
      const r = spawnSync(program, [socket, "mlp"], { encoding: "utf8", uid: 65534, gid: 65534 });
      assert.equal(r.error, undefined, String(r.error));
      assert.equal(r.status, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /^IPC_PERMISSION: uid 65534 is not the server's user/m);
    } finally {
      chmodSync(socket, 0o600);
      chmodSync(dir, 0o700);
    }
  });

  it("a server with only the IPC door open stays up and serves", async () => {
    const only = path.join(dir, "only.sock");
    const cli = path.join(ROOT, "bin", "run.js");
    const p = spawn(process.execPath, [cli, "serve", "--http-port", "0", "--grpc-port", "0", "--ipc-name", only, "--model", "demo/mlp@1", "--json"], { env: { ...process.env, AXON_HOME: home }, stdio: ["ignore", "pipe", "pipe"] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        p.stdout!.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
        });
        p.once("exit", (code) => reject(new Error(`axon serve exited with ${code}`)));
      });
      assert.equal((JSON.parse(line) as { ipc: string }).ipc, only);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(p.exitCode, null, "still running");
      const r = spawnSync(C_CLIENT, [only, "mlp"], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
    } finally {
      p.kill("SIGTERM");
      await new Promise((r) => (p.exitCode !== null ? r(null) : p.once("exit", r)));
    }
    assert.ok(!existsSync(only), "the socket is removed at exit");
  });

  it("a client notices a server that died and reconnects to the next one", async () => {
    const first = client.serverInstance;
    server.child.kill("SIGKILL");
    await new Promise((r) => server.child.once("exit", r));
    await assert.rejects(client.infer("mlp", { x: Tensor.float32([1, 4], [1, 2, 3, 4]) }), (e: unknown) => (e as IpcError).code === "IPC_CONNECT" || (e as IpcError).code === "IPC_DISCONNECTED");
    server = await startServer(home, args()); // replaces the dead server's socket
    const out = await client.infer("mlp", { x: Tensor.float32([1, 4], [1, 2, 3, 4]) });
    assert.deepEqual(out.y!.shape, [1, 3]);
    assert.notEqual(client.serverInstance, first);
    assert.ok(client.reconnects >= 1);
  });
});

describe("the IPC door runs TorchScript models natively (the torch plugin's runner)", { skip: skip || (!tryLoadTorch() || !torchTestModelTool() ? "the torch addon or its test-model tool is not built" : false) }, () => {
  let dir: string;
  let server: Awaited<ReturnType<typeof serve>>;
  let client: IpcClient;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "mlos-ipc-torch-"));
    const models = path.join(dir, "models");
    mkdirSync(models);
    const r = spawnSync(torchTestModelTool()!, [models], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const folder = torchModelFolder(path.join(models, "pair.pt"), path.join(dir, "pair"), "pair", {
      inputs: "[{ name: x, dtype: float32, shape: [batch, 4] }]",
      outputs: "[{ name: y, dtype: float32, shape: [batch, 3] }, { name: s, dtype: float32, shape: [batch] }]",
    });
    server = await serve({ axon: new Axon({ home: path.join(dir, "home") }), httpPort: 0, ipc: { name: path.join(dir, "ipc.sock") }, models: [`pair=${folder}`] });
    client = await connect(path.join(dir, "ipc.sock"));
  });
  after(async () => {
    client?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("answers as the model does in process, checks the declared signature natively, and picks outputs", async () => {
    const xs = [1, -2, 0.5, 3, 0, 1, -1, 2];
    const x = client.tensor("float32", [2, 4], xs);
    const out = await client.infer("pair", { x });
    assert.deepEqual(Object.keys(out).sort(), ["s", "y"]);
    const inProcess = await server.table.get("pair").model!.infer({ x: Tensor.float32([2, 4], xs) });
    const expected = [...(inProcess.y!.data as Float32Array)];
    assert.ok(expected.some((v) => v !== 0));
    assert.deepEqual(out.y!.shape, [2, 3]);
    assert.deepEqual([...(out.y!.data as Float32Array)], expected);
    assert.deepEqual(out.s!.shape, [2]);
    assert.deepEqual([...(out.s!.data as Float32Array)], [...(inProcess.s!.data as Float32Array)]);
    // Errors from the native runner (the JavaScript path would say INPUT_DTYPE / INPUT_SHAPE).
    await assert.rejects(client.infer("pair", { x: client.tensor("int32", [2, 4]) }), (e: unknown) => (e as IpcError).code === "IPC_BAD_TENSOR" && /'x' is float32, not int32/.test((e as IpcError).message));
    await assert.rejects(client.infer("pair", { x: client.tensor("float32", [2, 5]) }), (e: unknown) => (e as IpcError).code === "IPC_BAD_TENSOR" && /dimension 1 is 4, not 5/.test((e as IpcError).message));
    await assert.rejects(client.infer("pair", { x }, { outputs: ["nope"] }), (e: unknown) => (e as IpcError).code === "IPC_BAD_TENSOR");
    const onlyS = await client.infer("pair", { x }, { outputs: ["s"] });
    assert.deepEqual(Object.keys(onlyS), ["s"]);
    // Unloaded: off the native path; loaded again: back on it.
    await server.table.unload("pair");
    await assert.rejects(client.infer("pair", { x }), (e: unknown) => (e as IpcError).code === "MODEL_NOT_READY");
    await server.table.load("pair");
    assert.deepEqual([...((await client.infer("pair", { x })).y!.data as Float32Array)], expected);
  });
});
