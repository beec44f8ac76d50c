// MLOS Core's HTTP door, end to end: `axon serve` in a child process, driven with curl and fetch
// on the demo models. The MLOS v1 three-step flow (install, register, infer), KServe v2 JSON and binary tensors, parity with
// the library, errors with their codes, auth, a queue limit, 1000 malformed requests, and a client
// that disconnects mid-request.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Axon, Runtime, Tensor, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";
import { freePort } from "./helpers/registry.js";
import { torchModelFolder } from "./helpers/torch-models.js";
import { poolUsed, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { writeGraphMlp, graphMlpReference } from "./helpers/tfjs-models.js";
import { torchTestModelTool, tryLoadTorch } from "../bindings/torch.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";


function curl(args: string[]): { status: number; body: string; headers: string } {
  const r = spawnSync("curl", ["-s", "-S", "-D", "-", ...args], { encoding: "latin1" });
  assert.equal(r.status, 0, `curl failed: ${r.stderr}`);
  const split = r.stdout.indexOf("\r\n\r\n");
  const headers = r.stdout.slice(0, split);
  return { status: Number(/^HTTP\/\S+ (\d+)/.exec(headers)![1]), headers, body: r.stdout.slice(split + 4) };
}

describe("axon serve over HTTP", { skip }, () => {
  let home: string;
  let server: Served;

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-serve-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--model", "demo/mlp@1", "--max-queue", "64"]);
  });
  after(async () => {
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly on SIGTERM: ${server.stderr()}`);
  });

  it("serves the MLOS v1 flow: install, register, infer, with curl", () => {
    const install = spawnSync(process.execPath, [CLI, "install", "demo/tiny-cnn@1"], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.equal(install.status, 0, install.stderr);
    const reg = curl(["-X", "POST", `${server.base}/api/v1/models/register`, "-H", "Content-Type: application/json", "-d", JSON.stringify({ model_id: "demo/tiny-cnn@1" })]);
    assert.equal(reg.status, 201, reg.body);
    assert.equal(JSON.parse(reg.body).model_id, "tiny-cnn");
    assert.match(reg.headers, /^content-type: application\/json\r?$/im, "a JSON answer says so");
    assert.match(reg.headers, /^date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r?$/im, "an HTTP/1.1 origin server sends Date");
    const byPath = curl(["-X", "POST", `${server.base}/api/v1/models/register`, "-d", JSON.stringify({ model_id: "cnn-by-path", path: path.join(home, "models", "demo", "tiny-cnn", "1.0.0"), plugin_id: "onnxruntime", framework: "onnx" })]);
    assert.equal(byPath.status, 201, byPath.body);
    const inf = curl(["-X", "POST", `${server.base}/api/v1/inference`, "-d", JSON.stringify({ model_id: "mlp", inputs: { x: [[1, 2, 3, 4]] } })]);
    assert.equal(inf.status, 200, inf.body);
    const out = JSON.parse(inf.body) as { outputs: { y: { shape: number[]; data: number[] } } };
    assert.deepEqual(out.outputs.y.shape, [1, 3]);
    const list = JSON.parse(curl([`${server.base}/api/v1/models`]).body) as { models: Array<{ name: string; state: string }> };
    assert.deepEqual(list.models.map((m) => `${m.name}:${m.state}`).sort(), ["cnn-by-path:ready", "mlp:ready", "tiny-cnn:ready"]);
    const del = curl(["-X", "DELETE", `${server.base}/api/v1/models/cnn-by-path`]);
    assert.equal(del.status, 200, del.body);
    assert.equal(curl([`${server.base}/api/v1/models/cnn-by-path`]).status, 404);
  });

  it("answers KServe v2 JSON requests with the library's outputs", async () => {
    const runtime = new Runtime({ axon: new Axon({ home }) });
    const model = await runtime.load("demo/mlp@1.0.0");
    const r = mulberry32(3);
    const data = Array.from({ length: 8 }, () => r() * 2 - 1);
    const direct = await model.infer({ x: Tensor.float32([2, 4], data) });
    const res = await fetch(`${server.base}/v2/models/mlp/infer`, { method: "POST", body: JSON.stringify({ id: "req-1", inputs: [{ name: "x", shape: [2, 4], datatype: "FP32", data }] }) });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { id: string; model_name: string; outputs: Array<{ name: string; shape: number[]; datatype: string; data: number[] }> };
    assert.equal(body.id, "req-1");
    assert.equal(body.model_name, "mlp");
    assert.deepEqual(body.outputs[0]!.shape, [2, 3]);
    assert.equal(body.outputs[0]!.datatype, "FP32");
    assert.deepEqual(body.outputs[0]!.data, [...(direct.y!.data as Float32Array)]);
    const meta = (await (await fetch(`${server.base}/v2/models/mlp`)).json()) as { inputs: unknown[]; platform: string };
    assert.deepEqual(meta.inputs, [{ name: "x", datatype: "FP32", shape: [-1, 4] }]);
    assert.equal(meta.platform, "onnxruntime_onnx");
    assert.equal((await fetch(`${server.base}/v2/models/mlp/versions/1.0.0/ready`)).status, 200);
    assert.equal((await fetch(`${server.base}/v2/health/ready`)).status, 200);
    assert.equal((await fetch(`${server.base}/v2/health/live`)).status, 200);
    await model.dispose();
  });

  it("takes and gives the binary tensor extension", () => {
    const x = new Float32Array([0.5, -1, 2, 0.25, 1, 1, 1, 1]);
    const header = Buffer.from(JSON.stringify({ inputs: [{ name: "x", shape: [2, 4], datatype: "FP32", parameters: { binary_data_size: 32 } }], outputs: [{ name: "y", parameters: { binary_data: true } }] }));
    const file = path.join(mkdtempSync(path.join(tmpdir(), "mlos-bin-")), "req.bin");
    writeFileSync(file, Buffer.concat([header, Buffer.from(x.buffer)]));
    const r = curl(["-X", "POST", `${server.base}/v2/models/mlp/infer`, "-H", `Inference-Header-Content-Length: ${header.byteLength}`, "-H", "Content-Type: application/octet-stream", "--data-binary", `@${file}`]);
    assert.equal(r.status, 200, r.body);
    const n = Number(/inference-header-content-length: (\d+)/i.exec(r.headers)![1]);
    const raw = Buffer.from(r.body, "latin1");
    const json = JSON.parse(raw.subarray(0, n).toString()) as { outputs: Array<{ parameters: { binary_data_size: number }; shape: number[] }> };
    assert.equal(json.outputs[0]!.parameters.binary_data_size, 24);
    const y = new Float32Array(raw.subarray(n).buffer.slice(raw.byteOffset + n, raw.byteOffset + n + 24));
    const jsonRes = JSON.parse(curl(["-X", "POST", `${server.base}/v2/models/mlp/infer`, "-d", JSON.stringify({ inputs: [{ name: "x", shape: [2, 4], datatype: "FP32", data: [...x] }] })]).body) as { outputs: Array<{ data: number[] }> };
    assert.deepEqual([...y], jsonRes.outputs[0]!.data);
  });

  it("answers bad requests with a status, a code and a one-line error", async () => {
    const post = async (p: string, body: string, headers: Record<string, string> = {}) => {
      const res = await fetch(`${server.base}${p}`, { method: "POST", body, headers });
      return { status: res.status, body: (await res.json()) as { error: string; code: string } };
    };
    const cases: Array<[string, string, number, string, RegExp?, Record<string, string>?]> = [
      ["/v2/models/mlp/infer", "{bad", 400, "BAD_JSON"],
      ["/v2/models/mlp/infer", "[]", 400, "BAD_REQUEST"],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 5], datatype: "FP32", data: [1, 2, 3, 4, 5] }] }), 400, "INPUT_SHAPE", /dimension 1 must be 4/],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "INT32", data: [1, 2, 3, 4] }] }), 400, "INPUT_DTYPE", /expected dtype float32, received int32/],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3] }] }), 400, "BAD_DATA", /needs 4 elements, data has 3/],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP99", data: [1, 2, 3, 4] }] }), 400, "BAD_DATATYPE"],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "z", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }), 400, "INPUT_UNKNOWN"],
      ["/v2/models/nope/infer", JSON.stringify({ inputs: [] }), 404, "MODEL_NOT_FOUND"],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", parameters: { binary_data_size: 16 } }] }), 400, "BAD_REQUEST", /no Inference-Header-Content-Length/],
      ["/v2/models/mlp/infer", "{}", 400, "BAD_REQUEST", /Inference-Header-Content-Length 99 does not fit the 2-byte body/, { "Inference-Header-Content-Length": "99" }],
      ["/api/v1/inference", JSON.stringify({ model_id: "mlp" }), 400, "BAD_REQUEST"],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }], parameters: { priority: "high" } }), 400, "BAD_REQUEST", /parameters.priority must be an integer/],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }], parameters: { timeout: 1e-9 } }), 504, "RUN_TIMEOUT"],
      ["/api/v1/models/register", JSON.stringify({ model_id: "demo/nope@1" }), 404, "NOT_FOUND"],
      // A shape that disagrees with its data is the client's mistake, found before any memory is reserved.
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [100000000000, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }), 400, "BAD_DATA", /^input "x": shape \[100000000000, 4\] needs 400000000000 elements, data has 4$/],
      ["/v2/models/mlp/infer", JSON.stringify({ inputs: [{ name: "x", shape: [100000000000, 4], datatype: "FP32", data: [1, 2, 3, 4] }], parameters: {} }), 400, "BAD_DATA", /^input "x": shape \[100000000000, 4\] needs/],
      ["/api/v1/inference", JSON.stringify({ model_id: "mlp", inputs: { x: { shape: [100000000000, 4], data: [1, 2, 3, 4] } } }), 400, "BAD_DATA", /^input "x": shape \[100000000000, 4\] needs 400000000000 elements, data has 4$/],
    ];
    for (const [p, body, status, code, message, headers] of cases) {
      const r = await post(p, body, headers);
      assert.equal(r.status, status, `${p} ${body.slice(0, 60)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, code, `${p} ${body.slice(0, 60)}`);
      assert.ok(!r.body.error.includes("\n"), "one line");
      if (message) assert.match(r.body.error, message);
    }
    const big = await fetch(`${server.base}/v2/models/mlp/infer`, { method: "POST", body: Buffer.alloc(65 * 1024 * 1024) }).catch((e: Error) => e);
    if (!(big instanceof Error)) assert.equal(big.status, 413);
    assert.equal((await fetch(`${server.base}/no/such/route`)).status, 404);
  });

  it("stays up through 1000 malformed requests", async () => {
    const r = mulberry32(99);
    const garbage = (): string | Buffer => {
      const k = Math.floor(r() * 8);
      if (k === 0) return Buffer.from(Array.from({ length: Math.floor(r() * 200) }, () => Math.floor(r() * 256)));
      if (k === 1) return JSON.stringify({ inputs: [{ name: "x", shape: [Math.floor(r() * 1e6), 4], datatype: "FP32", data: [1] }] });
      if (k === 2) return JSON.stringify({ inputs: [{ name: "x", shape: "nope", datatype: "FP32" }] });
      if (k === 3) return JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [[[["deep"]]]] }] });
      if (k === 4) return JSON.stringify({ inputs: [null, 1, "x"] });
      if (k === 5) return `{"inputs": [${"[".repeat(5000)}`;
      if (k === 6) return JSON.stringify({ inputs: [{ name: "x", shape: [2 ** 40, 2 ** 20], datatype: "FP32", data: [] }] });
      return JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, "4"] }] });
    };
    const baseline = await poolUsed(server.base);
    let answered = 0;
    for (let batch = 0; batch < 20; batch++) {
      await Promise.all(Array.from({ length: 50 }, async () => {
        const res = await fetch(`${server.base}/v2/models/mlp/infer`, { method: "POST", body: garbage() });
        assert.ok(res.status >= 400 && res.status < 500, `a client error, got ${res.status}: ${await res.text()}`);
        await res.arrayBuffer().catch(() => undefined);
        answered++;
      }));
    }
    // Huge headers, and a truncated binary body on a raw socket.
    const longHeader = await fetch(`${server.base}/health`, { headers: { "X-Big": "a".repeat(60_000) } }).then((res) => res.status, () => 0);
    assert.ok(longHeader === 200 || longHeader === 431 || longHeader === 0);
    await rawRequest(server.port, `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nInference-Header-Content-Length: 10\r\n\r\n{"inputs":`);
    assert.equal(answered, 1000);
    const ok = await fetch(`${server.base}/v2/models/mlp/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) });
    assert.equal(ok.status, 200, "still serving");
    assert.equal(await poolUsed(server.base), baseline, "every request's pool memory was returned");
  });

  it("a client that disconnects mid-request leaks nothing", async () => {
    const baseline = await poolUsed(server.base);
    const body = JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] });
    for (let i = 0; i < 20; i++) {
      // Half a body, then gone; and a whole request whose client leaves before the answer.
      await rawRequest(server.port, `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 20)}`);
      await rawRequest(server.port, `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await poolUsed(server.base), baseline);
    assert.equal((await fetch(`${server.base}/health`)).status, 200);
  });

  it("exports Prometheus metrics and lists models with axon ps", async () => {
    const text = await (await fetch(`${server.base}/metrics`)).text();
    assert.match(text, /^mlos_requests_total\{model="mlp@1\.0\.0",route="kserve",outcome="ok"\} \d+/m);
    assert.match(text, /^mlos_request_duration_seconds_bucket\{le="[^"]+",model="mlp@1\.0\.0",phase="compute"\} \d+/m);
    assert.match(text, /^mlos_models_loaded \d+/m);
    const ps = spawnSync(process.execPath, [CLI, "ps", "--endpoint", server.base, "--json"], { encoding: "utf8" });
    assert.equal(ps.status, 0, ps.stderr);
    assert.ok((JSON.parse(ps.stdout) as { models: Array<{ name: string }> }).models.some((m) => m.name === "mlp"));
    const input = path.join(mkdtempSync(path.join(tmpdir(), "mlos-in-")), "x.json");
    writeFileSync(input, JSON.stringify({ input: [[1, 2, 3, 4]] }));
    const remote = spawnSync(process.execPath, [CLI, "infer", "mlp", "--input", input, "--endpoint", server.base, "--json"], { encoding: "utf8" });
    assert.equal(remote.status, 0, remote.stderr);
    const local = spawnSync(process.execPath, [CLI, "infer", "demo/mlp@1", "--input", input, "--json"], { encoding: "utf8", env: { ...process.env, AXON_HOME: home } });
    assert.equal(local.status, 0, local.stderr);
    assert.deepEqual(JSON.parse(local.stdout), JSON.parse(remote.stdout), "in-process and remote agree");
    const missing = spawnSync(process.execPath, [CLI, "ps", "--endpoint", "http://127.0.0.1:1"], { encoding: "utf8" });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^error\[NETWORK\]: cannot reach the server/);
  });
});

describe("axon serve with the tensorflow and torch plugins", { skip }, () => {
  it("registers and serves a TF.js graph model and a TorchScript model over HTTP", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-plugins-http-"));
    const tfDir = mkdtempSync(path.join(tmpdir(), "mlos-tf-http-"));
    const graph = writeGraphMlp(tfDir);
    const s = await startServer(home, []);
    try {
      const reg = await fetch(`${s.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: "tf-graph", path: tfDir }) });
      assert.equal(reg.status, 201, await reg.clone().text());
      assert.equal(((await reg.json()) as { plugin: string }).plugin, "tensorflow");
      const x = [0.5, -1, 2, 0.25];
      const res = await fetch(`${s.base}/v2/models/tf-graph/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: x }] }) });
      assert.equal(res.status, 200, await res.clone().text());
      const out = ((await res.json()) as { outputs: Array<{ name: string; data: number[] }> }).outputs.find((o) => o.name === "y")!.data;
      const expected = graphMlpReference(graph, Float32Array.from(x), 1).y;
      out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-5, `tf output ${i}: ${v} vs ${expected[i]}`));

      const tool = torchTestModelTool();
      if (tryLoadTorch() && tool) {
        const tdir = mkdtempSync(path.join(tmpdir(), "mlos-torch-http-"));
        const made = spawnSync(tool, [tdir], { encoding: "utf8" });
        assert.equal(made.status, 0, made.stderr);
        const folder = torchModelFolder(path.join(tdir, "linear.pt"), path.join(tdir, "served"), "torch-linear", {
          inputs: "[{ name: x, dtype: float32, shape: [batch, 4] }]",
          outputs: "[{ name: y, dtype: float32, shape: [batch, 3] }]",
        });
        const treg = await fetch(`${s.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: "torch-linear", path: folder }) });
        assert.equal(treg.status, 201, await treg.clone().text());
        const tres = await fetch(`${s.base}/api/v1/inference`, { method: "POST", body: JSON.stringify({ model_id: "torch-linear", inputs: { x: [[1, 0, 0, 0]] } }) });
        assert.equal(tres.status, 200, await tres.clone().text());
        const y = ((await tres.json()) as { outputs: { y: { shape: number[]; data: number[] } } }).outputs.y;
        assert.deepEqual(y.shape, [1, 3]);
        // make_test_model's linear: relu(x @ W + b) with W[i][j] = (((3i + 5j) % 7) - 3) / 4, b = [-0.5, 0, 0.5].
        const W0 = [0, 1, 2].map((j) => ((((5 * j) % 7) - 3) / 4));
        assert.deepEqual(y.data, W0.map((w, j) => Math.max(0, w + [-0.5, 0, 0.5][j]!)));
      }
    } finally {
      await stop(s);
    }
  });
});

describe("axon serve security and limits", { skip }, () => {
  /** This machine's first address other than loopback (the tests reach the server through it, as another host would). */
  const outsideAddress = Object.values(networkInterfaces()).flat().find((a) => a && a.family === "IPv4" && !a.internal)?.address;

  it("listens on loopback by default, and says so", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-host-"));
    await seedDemoModels(new Axon({ home }));
    const s = await startServer(home, ["--model", "demo/mlp@1"]);
    try {
      assert.equal(s.info.host, "127.0.0.1");
      assert.match(s.info.admin, /listening on this machine only/);
      assert.equal((await fetch(`${s.base}/health`)).status, 200);
      if (outsideAddress) {
        const refused = await fetch(`http://${outsideAddress}:${s.port}/health`).catch((e: Error & { cause?: { code?: string } }) => e.cause?.code ?? e.message);
        assert.equal(refused, "ECONNREFUSED", `not reachable through ${outsideAddress}`);
      }
    } finally {
      await stop(s);
    }
  });

  it("listening beyond loopback, refuses admin routes from other hosts unless an admin key is set", { skip: outsideAddress ? false : "this machine has no address but loopback" }, async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-remote-"));
    await seedDemoModels(new Axon({ home }));
    const folder = path.join(home, "models", "demo", "tiny-cnn", "1.0.0");
    const open = await startServer(home, ["--model", "demo/mlp@1", "--host", "0.0.0.0"]);
    const outside = `http://${outsideAddress}:${open.port}`;
    const register = (base: string, id: string, key?: string) =>
      fetch(`${base}/api/v1/models/register`, { method: "POST", headers: key ? { Authorization: `Bearer ${key}` } : {}, body: JSON.stringify({ model_id: id, path: folder }) }).then(async (r) => ({ status: r.status, body: (await r.json()) as { code?: string; error?: string } }));
    try {
      assert.equal(open.info.host, "0.0.0.0");
      assert.match(open.info.admin, /admin routes .* answer clients on this machine only/);
      const inferred = await fetch(`${outside}/v2/models/mlp/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) });
      assert.equal(inferred.status, 200, "other hosts may infer");
      const remote = await register(outside, "from-outside");
      assert.equal(remote.status, 403, JSON.stringify(remote.body));
      assert.equal(remote.body.code, "ADMIN_LOCAL_ONLY");
      assert.match(remote.body.error!, /admin route .* clients on this machine only/);
      for (const [method, route] of [["DELETE", "/api/v1/models/mlp"], ["POST", "/v2/repository/models/mlp/unload"], ["POST", "/v2/repository/models/mlp/load"], ["POST", "/api/v1/plugins/register"]] as const) {
        const r = await fetch(`${outside}${route}`, { method, body: method === "POST" ? "{}" : undefined });
        assert.equal(r.status, 403, `${method} ${route}`);
      }
      assert.equal((await fetch(`${outside}/api/v1/models/mlp`)).status, 200, "reading stays open");
      assert.equal((await register(open.base, "from-here")).status, 201, "loopback clients may register");
    } finally {
      await stop(open);
    }
    const keyed = await startServer(home, ["--model", "demo/mlp@1", "--host", "0.0.0.0", "--admin-key", "admin-key"]);
    try {
      assert.match(keyed.info.admin, /admin routes .* need the admin key/);
      const base = `http://${outsideAddress}:${keyed.port}`;
      assert.equal((await register(base, "no-key")).status, 401);
      assert.equal((await register(base, "with-key", "admin-key")).status, 201, "with the admin key, other hosts may register");
    } finally {
      await stop(keyed);
    }
  });

  it("takes the plugin and framework names people use", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-names-"));
    await seedDemoModels(new Axon({ home }));
    const s = await startServer(home, []);
    const folder = path.join(home, "models", "demo", "mlp", "1.0.0");
    try {
      for (const [i, names] of [{ plugin_id: "onnx" }, { plugin_id: "ONNXRuntime" }, { plugin_id: "ort" }, { framework: "onnx" }, { framework: "onnxruntime" }].entries()) {
        const r = await fetch(`${s.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: `m${i}`, path: folder, ...names }) });
        assert.equal(r.status, 201, `${JSON.stringify(names)}: ${await r.text()}`);
        assert.equal(((await (await fetch(`${s.base}/api/v1/models/m${i}`)).json()) as { plugin: string }).plugin, "onnxruntime");
      }
      // pytorch / torch name the torch plugin: an ONNX file is then not a TorchScript archive (or
      // libtorch is missing), but the plugin is found.
      for (const plugin of ["pytorch", "torch", "PyTorch", "tensorflow", "tfjs"]) {
        const r = await fetch(`${s.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: `p-${plugin}`, path: folder, plugin_id: plugin }) });
        const body = (await r.json()) as { code: string; error: string };
        assert.notEqual(body.code, "PLUGIN_NOT_FOUND", `${plugin}: ${body.error}`);
      }
      const unknown = await fetch(`${s.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: "caffe", path: folder, plugin_id: "caffe" }) });
      const body = (await unknown.json()) as { code: string; error: string };
      assert.equal(body.code, "PLUGIN_NOT_FOUND");
      assert.match(body.error, /no plugin "caffe" is registered \(registered: onnxruntime \(onnx, ort\), torch \(pytorch, libtorch, torchscript\)/);
    } finally {
      await stop(s);
    }
  });

  it("needs the API key, and the admin key for registration", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-auth-"));
    await seedDemoModels(new Axon({ home }));
    const s = await startServer(home, ["--model", "demo/mlp@1", "--api-key", "user-key", "--admin-key", "admin-key"]);
    try {
      const infer = (key?: string) => fetch(`${s.base}/v2/models/mlp/infer`, { method: "POST", headers: key ? { Authorization: `Bearer ${key}` } : {}, body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) });
      assert.equal((await infer()).status, 401);
      assert.equal((await infer("wrong")).status, 401);
      assert.equal((await infer("user-key")).status, 200);
      assert.equal((await infer("admin-key")).status, 200);
      assert.equal((await fetch(`${s.base}/health`)).status, 200, "health needs no key");
      const reg = (key: string) => fetch(`${s.base}/api/v1/models/register`, { method: "POST", headers: { Authorization: `Bearer ${key}` }, body: JSON.stringify({ model_id: "demo/tiny-cnn@1" }) });
      assert.equal((await reg("user-key")).status, 403);
      assert.equal((await reg("admin-key")).status, 201);
      const cli = spawnSync(process.execPath, [CLI, "unregister", "tiny-cnn", "--endpoint", s.base, "--admin-key", "admin-key"], { encoding: "utf8" });
      assert.equal(cli.status, 0, cli.stderr);
    } finally {
      await stop(s);
    }
  });

  it("answers 429 with Retry-After when a model's queue is full", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-queue-"));
    await seedDemoModels(new Axon({ home }));
    const s = await startServer(home, ["--model", "demo/tiny-cnn@1", "--max-queue", "2"]);
    try {
      const data = Array.from({ length: 8 * 3 * 224 * 224 }, (_, i) => (i % 7) / 7);
      const body = JSON.stringify({ inputs: [{ name: "image", shape: [8, 3, 224, 224], datatype: "FP32", data }] });
      const results = await Promise.all(Array.from({ length: 12 }, () => fetch(`${s.base}/v2/models/tiny-cnn/infer`, { method: "POST", body }).then(async (r) => ({ status: r.status, retry: r.headers.get("retry-after"), body: await r.text() }))));
      const rejected = results.filter((r) => r.status === 429);
      assert.ok(results.some((r) => r.status === 200), "some are served");
      assert.ok(rejected.length > 0, `some are turned away: ${results.map((r) => r.status).join(" ")}`);
      assert.equal(rejected[0]!.retry, "1");
      assert.equal(JSON.parse(rejected[0]!.body).code, "QUEUE_FULL");
    } finally {
      await stop(s);
    }
  });

  it("reads a YAML configuration that flags override, and says where a bad one is wrong", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-config-"));
    await seedDemoModels(new Axon({ home }));
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-config-file-"));
    const file = path.join(dir, "mlos.yaml");
    writeFileSync(file, ["http:", "  port: 1", "security:", "  api_key: from-the-file", "scheduling:", "  max_queue: 8", "models:", "  - target: demo/mlp@1", "    id: classifier", ""].join("\n"));
    const s = await startServer(home, ["--config", file]); // --http-port from startServer wins over port 1
    try {
      const r = await fetch(`${s.base}/v2/models/classifier/ready`, { headers: { Authorization: "Bearer from-the-file" } });
      assert.equal(r.status, 200, "the file's model under its id, behind the file's key");
      assert.equal((await fetch(`${s.base}/v2/models/classifier/ready`)).status, 401);
    } finally {
      await stop(s);
    }
    writeFileSync(file, ["http:", "  port: 8080", "  colour: blue", ""].join("\n"));
    const bad = spawnSync(process.execPath, [CLI, "serve", "--config", file], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error\[CONFIG_INVALID\]: .*mlos\.yaml:3:3 http\.colour: unknown field "colour"$/m);
    writeFileSync(file, ["http:", "  port: 99999", ""].join("\n"));
    const range = spawnSync(process.execPath, [CLI, "serve", "--config", file], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.match(range.stderr, /^error\[CONFIG_INVALID\]: .*mlos\.yaml:2:9 http\.port: must be <= 65535$/m);
  });

  it("serves HTTPS with a certificate and key", { skip: existsSync("/usr/bin/openssl") ? false : "no openssl to make a certificate" }, async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-tls-"));
    await seedDemoModels(new Axon({ home }));
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-cert-"));
    const made = spawnSync("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1"], { encoding: "utf8" });
    assert.equal(made.status, 0, made.stderr);
    const s = await startServer(home, ["--model", "demo/mlp@1", "--tls-cert", path.join(dir, "cert.pem"), "--tls-key", path.join(dir, "key.pem")]);
    try {
      const r = spawnSync("curl", ["-s", "-k", `https://127.0.0.1:${s.port}/v2/models/mlp/infer`, "-d", JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] })], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).outputs[0].shape, [1, 3]);
      const plain = spawnSync("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${s.port}/health`], { encoding: "utf8" });
      assert.notEqual(plain.stdout, "200", "plain HTTP is not answered on the TLS port");
    } finally {
      await stop(s);
    }
  });

  it("fails to start with a clear error when a model cannot be registered", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-fail-"));
    const r = spawnSync(process.execPath, [CLI, "serve", "--http-port", String(await freePort()), "--model", "demo/nope@1"], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^error\[NOT_FOUND\]: .*demo\/nope/m);
  });
});

/** Writes `text` on a raw connection and closes it without reading the answer. */
function rawRequest(port: number, text: string): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1", () => {
      sock.write(text, () => {
        sock.destroy();
        resolve();
      });
    });
    sock.on("error", () => resolve());
  });
}
