// MLOS Core's gRPC door, end to end: `axon serve --grpc-port` in a child process, called with
// @grpc/grpc-js and the proto files mlos ships (as a Node user would), and with Python's grpcio
// on stubs generated from the same proto (an unmodified client of another ecosystem). KServe v2
// health, metadata, repository, inference with raw and typed tensors (parity with HTTP), the
// bidirectional stream, errors with their status codes and stable codes, auth, limits, metrics.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Axon, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { poolUsed, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { errorCode, kserveClient, type KserveGrpcClient } from "./helpers/grpc-client.js";
import { freePort } from "./helpers/registry.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";
const X = [0.5, -1, 2, 0.25, 1, 2, 3, 4];
const f32 = (xs: number[]) => Buffer.from(new Float32Array(xs).buffer);

/** What the HTTP door answers for the same input (binary output): the reference for parity. */
async function httpAnswer(base: string): Promise<{ shape: number[]; bytes: Buffer }> {
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: "x", shape: [2, 4], datatype: "FP32", parameters: { binary_data_size: 32 } }], outputs: [{ name: "y", parameters: { binary_data: true } }] }));
  const res = await fetch(`${base}/v2/models/mlp/infer`, { method: "POST", headers: { "Inference-Header-Content-Length": String(header.byteLength) }, body: Buffer.concat([header, f32(X)]) });
  assert.equal(res.status, 200);
  const raw = Buffer.from(await res.arrayBuffer());
  const n = Number(res.headers.get("inference-header-content-length"));
  const json = JSON.parse(raw.subarray(0, n).toString()) as { outputs: Array<{ shape: number[] }> };
  return { shape: json.outputs[0]!.shape, bytes: raw.subarray(n) };
}

async function rejects(p: Promise<unknown>, status: grpc.status, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, status, `status ${grpc.status[e.code]}: ${e.details}`);
    assert.equal(errorCode(e), code, e.details);
    if (message) assert.match(e.details, message);
    assert.doesNotMatch(e.details, /\n/, "one line");
    return true;
  });
}

interface InferResponse {
  model_name: string;
  model_version: string;
  id: string;
  outputs: Array<{ name: string; datatype: string; shape: number[] }>;
  raw_output_contents: Buffer[];
}

describe("axon serve over gRPC (KServe v2)", { skip }, () => {
  let home: string;
  let server: Served;
  let client: KserveGrpcClient;
  let reference: { shape: number[]; bytes: Buffer };

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-grpc-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--grpc-port", String(await freePort()), "--model", "demo/mlp@1", "--model", "demo/embedder@1"]);
    assert.ok(server.info.grpc, "--json says the gRPC port");
    client = kserveClient(`127.0.0.1:${server.info.grpc}`);
    reference = await httpAnswer(server.base);
  });
  after(async () => {
    client?.close();
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly on SIGTERM: ${server.stderr()}`);
  });

  it("answers grpc.health.v1 and the KServe health and metadata calls", async () => {
    assert.deepEqual(await client.check(""), { status: "SERVING" });
    assert.deepEqual(await client.check("inference.GRPCInferenceService"), { status: "SERVING" });
    await assert.rejects(client.check("no.such.Service"), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
    const watch = client.health.Watch({ service: "" }) as grpc.ClientReadableStream<{ status: string }>;
    const first = await new Promise<{ status: string }>((resolve, reject) => watch.once("data", resolve).once("error", reject));
    assert.equal(first.status, "SERVING");
    watch.cancel();
    assert.deepEqual(await client.call("ServerLive", {}), { live: true });
    assert.deepEqual(await client.call("ServerReady", {}), { ready: true });
    const meta = await client.call<{ name: string; version: string; extensions: string[] }>("ServerMetadata", {});
    assert.equal(meta.name, "mlos");
    assert.match(meta.version, /^\d+\.\d+\.\d+/);
    assert.ok(meta.extensions.includes("model_repository"));
    assert.deepEqual(await client.call("ModelReady", { name: "mlp", version: "" }), { ready: true });
    const mm = await client.call<{ name: string; versions: string[]; platform: string; inputs: Array<{ name: string; datatype: string; shape: number[] }> }>("ModelMetadata", { name: "mlp" });
    assert.equal(mm.name, "mlp");
    assert.equal(mm.platform, "onnxruntime_onnx");
    assert.deepEqual(mm.inputs, [{ name: "x", datatype: "FP32", shape: [-1, 4] }]);
    await rejects(client.call("ModelMetadata", { name: "nope" }), grpc.status.NOT_FOUND, "MODEL_NOT_FOUND", /nope/);
  });

  it("infers with raw_input_contents, byte for byte what HTTP answers", async () => {
    const res = await client.call<InferResponse>("ModelInfer", { model_name: "mlp", id: "r-1", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] });
    assert.equal(res.model_name, "mlp");
    assert.equal(res.model_version, "1.0.0");
    assert.equal(res.id, "r-1");
    assert.deepEqual(res.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })), [{ name: "y", datatype: "FP32", shape: reference.shape }]);
    assert.ok(Buffer.from(res.raw_output_contents[0]!).equals(reference.bytes), "same bytes as the HTTP binary answer");
  });

  it("infers with typed contents (fp32_contents) and with a chosen output", async () => {
    const res = await client.call<InferResponse>("ModelInfer", { model_name: "mlp", model_version: "1.0.0", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], contents: { fp32_contents: X } }], outputs: [{ name: "y" }] });
    assert.ok(Buffer.from(res.raw_output_contents[0]!).equals(reference.bytes));
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], contents: { fp32_contents: X } }], outputs: [{ name: "nope" }] }), grpc.status.INVALID_ARGUMENT, "OUTPUT_UNKNOWN", /nope/);
  });

  it("answers bad requests with INVALID_ARGUMENT or NOT_FOUND and a stable code, and frees their tensors", async () => {
    const baseline = await poolUsed(server.base);
    const x = { name: "x", datatype: "FP32", shape: [2, 4] };
    await rejects(client.call("ModelInfer", { model_name: "nope", inputs: [x], raw_input_contents: [f32(X)] }), grpc.status.NOT_FOUND, "MODEL_NOT_FOUND");
    await rejects(client.call("ModelInfer", { model_name: "mlp", model_version: "9.9.9", inputs: [x], raw_input_contents: [f32(X)] }), grpc.status.NOT_FOUND, "MODEL_NOT_FOUND");
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [x], raw_input_contents: [f32(X.slice(0, 7))] }), grpc.status.INVALID_ARGUMENT, "BAD_DATA", /"x".*needs 32 bytes/);
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [x, { ...x, name: "z" }], raw_input_contents: [f32(X)] }), grpc.status.INVALID_ARGUMENT, "BAD_DATA", /raw_input_contents has 1 entries for 2 inputs/);
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ ...x, shape: [2, 3] }], raw_input_contents: [f32(X.slice(0, 6))] }), grpc.status.INVALID_ARGUMENT, "INPUT_SHAPE");
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ ...x, datatype: "FP64" }], raw_input_contents: [Buffer.alloc(64)] }), grpc.status.INVALID_ARGUMENT, "INPUT_DTYPE");
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ ...x, datatype: "NOPE" }], raw_input_contents: [f32(X)] }), grpc.status.INVALID_ARGUMENT, "BAD_DATATYPE");
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ ...x, contents: { fp32_contents: [1, 2, 3] } }] }), grpc.status.INVALID_ARGUMENT, "BAD_DATA", /needs 8 elements, data has 3/);
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [{ ...x, datatype: "FP16" }] }), grpc.status.INVALID_ARGUMENT, "BAD_DATA", /raw_input_contents/);
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [x, x], raw_input_contents: [f32(X), f32(X)] }), grpc.status.INVALID_ARGUMENT, "BAD_REQUEST", /given twice/);
    await rejects(client.call("ModelInfer", { model_name: "mlp", inputs: [x], raw_input_contents: [f32(X)], parameters: { priority: { string_param: "high" } } }), grpc.status.INVALID_ARGUMENT, "BAD_REQUEST", /priority/);
    await rejects(client.call("ModelInfer", { model_name: "", inputs: [] }), grpc.status.INVALID_ARGUMENT, "BAD_REQUEST");
    assert.equal(await poolUsed(server.base), baseline, "every rejected request's tensors went back to the pool");
  });

  it("streams: ModelStreamInfer answers every request with its id, and a bad one with error_message while the stream goes on", async () => {
    const stream = client.raw.ModelStreamInfer() as grpc.ClientDuplexStream<Record<string, unknown>, { error_message: string; infer_response: InferResponse | null }>;
    const answers: Array<{ error_message: string; infer_response: InferResponse | null }> = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on("data", (d) => answers.push(d));
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    for (let i = 0; i < 40; i++) {
      if (i === 17) stream.write({ model_name: "mlp", id: "bad", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32([1])] });
      stream.write({ model_name: "mlp", id: `s-${i}`, inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] });
    }
    stream.end();
    await done;
    assert.equal(answers.length, 41);
    const errors = answers.filter((a) => a.error_message !== "");
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.error_message, /^BAD_DATA: tensor "x"/);
    const ok = answers.filter((a) => a.infer_response);
    assert.deepEqual(ok.map((a) => a.infer_response!.id).sort(), Array.from({ length: 40 }, (_, i) => `s-${i}`).sort());
    for (const a of ok) assert.ok(Buffer.from(a.infer_response!.raw_output_contents[0]!).equals(reference.bytes));
  });

  it("survives a stream whose client cancels it mid-way, and frees its tensors", async () => {
    const baseline = await poolUsed(server.base);
    for (let k = 0; k < 5; k++) {
      const stream = client.raw.ModelStreamInfer() as grpc.ClientDuplexStream<Record<string, unknown>, unknown>;
      const ended = new Promise<void>((resolve) => {
        stream.on("error", () => resolve());
        stream.on("end", () => resolve());
        stream.on("data", () => {});
      });
      for (let i = 0; i < 50; i++) stream.write({ model_name: "mlp", id: `c-${i}`, inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] });
      stream.cancel();
      await ended;
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await client.call("ServerLive", {}), { live: true });
    assert.equal(await poolUsed(server.base), baseline);
  });

  it("serves the repository extension: index, unload, load", async () => {
    const index = await client.call<{ models: Array<{ name: string; version: string; state: string }> }>("RepositoryIndex", {});
    assert.deepEqual(index.models.map((m) => `${m.name}@${m.version}:${m.state}`).sort(), ["embedder@1.0.0:READY", "mlp@1.0.0:READY"]);
    await client.call("RepositoryModelUnload", { model_name: "embedder" });
    assert.deepEqual(await client.call("ModelReady", { name: "embedder" }), { ready: false });
    const ready = await client.call<{ models: Array<{ name: string }> }>("RepositoryIndex", { ready: true });
    assert.deepEqual(ready.models.map((m) => m.name), ["mlp"]);
    await client.call("RepositoryModelLoad", { model_name: "embedder" });
    assert.deepEqual(await client.call("ModelReady", { name: "embedder" }), { ready: true });
    await client.call("RepositoryModelUnload", { model_name: "mlp" });
    const req = { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] };
    await rejects(client.call("ModelInfer", req), grpc.status.UNAVAILABLE, "MODEL_NOT_READY", /unloaded/);
    await client.call("RepositoryModelLoad", { model_name: "mlp" });
    const res = await client.call<InferResponse>("ModelInfer", req);
    assert.ok(Buffer.from(res.raw_output_contents[0]!).equals(reference.bytes));
    await rejects(client.call("RepositoryModelLoad", { model_name: "nope" }), grpc.status.INVALID_ARGUMENT, "BAD_REFERENCE", /nope/);
  });

  it("drops calls whose client cancels them or whose deadline passes, and their tensors go back to the pool", async () => {
    const baseline = await poolUsed(server.base);
    const req = { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] };
    const outcomes = await Promise.allSettled(Array.from({ length: 64 }, () => client.call("ModelInfer", req, {}, { deadline: Date.now() + 1 })));
    for (const o of outcomes) if (o.status === "rejected") assert.equal((o.reason as grpc.ServiceError).code, grpc.status.DEADLINE_EXCEEDED);
    const calls = Array.from({ length: 32 }, () => {
      let call!: grpc.ClientUnaryCall;
      const p = new Promise((resolve, reject) => {
        call = client.raw.ModelInfer(req, (e: grpc.ServiceError | null, r: unknown) => (e ? reject(e) : resolve(r))) as grpc.ClientUnaryCall;
      });
      return { call, p };
    });
    for (const c of calls) c.call.cancel();
    for (const o of await Promise.allSettled(calls.map((c) => c.p))) if (o.status === "rejected") assert.equal((o.reason as grpc.ServiceError).code, grpc.status.CANCELLED);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await poolUsed(server.base), baseline);
    const res = await client.call<InferResponse>("ModelInfer", req);
    assert.ok(Buffer.from(res.raw_output_contents[0]!).equals(reference.bytes), "the server goes on answering");
  });

  it("refuses shared-memory registration unless the server allows it", async () => {
    await rejects(client.call("SystemSharedMemoryRegister", { name: "r", key: "/whatever", offset: 0, byte_size: 8 }), grpc.status.PERMISSION_DENIED, "SHM_DISABLED", /--allow-shared-memory/);
    const res = await fetch(`${server.base}/v2/systemsharedmemory/region/r/register`, { method: "POST", body: JSON.stringify({ key: "/whatever", offset: 0, byte_size: 8 }) });
    assert.equal(res.status, 403);
    assert.equal(((await res.json()) as { code: string }).code, "SHM_DISABLED");
  });

  it("counts gRPC requests in the same metrics as HTTP (route grpc)", async () => {
    const text = await (await fetch(`${server.base}/metrics`)).text();
    const ok = Number(/^mlos_requests_total\{model="mlp@1.0.0",route="grpc",outcome="ok"\} (\d+)/m.exec(text)?.[1]);
    assert.ok(ok >= 42, `gRPC requests counted: ${ok}`);
    assert.match(text, /^mlos_requests_total\{model="mlp@1.0.0",route="kserve",outcome="ok"\} \d+/m);
  });

  // Debian's Python, where python3-grpcio and python3-grpc-tools put their modules (another python3 may come first on PATH).
  const python = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const noGrpcio = spawnSync(python, ["-c", "import grpc, grpc_tools"]).status !== 0;
  it("is served to Python's grpcio with stubs generated from the same proto", { skip: noGrpcio && !process.env.CI ? "python3-grpcio / python3-grpc-tools missing" : false }, () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-grpc-py-"));
    const gen = spawnSync(python, ["-m", "grpc_tools.protoc", `-I${path.join(ROOT, "proto")}`, `--python_out=${dir}`, `--grpc_python_out=${dir}`, "grpc_service.proto", "health.proto"], { encoding: "utf8" });
    assert.equal(gen.status, 0, gen.stderr);
    writeFileSync(
      path.join(dir, "client.py"),
      [
        "import json, struct, sys, grpc",
        "import grpc_service_pb2 as pb, grpc_service_pb2_grpc as rpc, health_pb2, health_pb2_grpc",
        "ch = grpc.insecure_channel(sys.argv[1])",
        "stub = rpc.GRPCInferenceServiceStub(ch)",
        "out = {'live': stub.ServerLive(pb.ServerLiveRequest()).live}",
        "out['health'] = health_pb2.HealthCheckResponse.ServingStatus.Name(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status)",
        "meta = stub.ModelMetadata(pb.ModelMetadataRequest(name='mlp'))",
        "out['inputs'] = [[t.name, t.datatype, list(t.shape)] for t in meta.inputs]",
        "x = [float(v) for v in sys.argv[2].split(',')]",
        "req = pb.ModelInferRequest(model_name='mlp', id='py')",
        "t = req.inputs.add(); t.name = 'x'; t.datatype = 'FP32'; t.shape.extend([2, 4])",
        "req.raw_input_contents.append(struct.pack('<8f', *x))",
        "res = stub.ModelInfer(req)",
        "out['id'] = res.id",
        "out['shape'] = list(res.outputs[0].shape)",
        "out['y'] = res.raw_output_contents[0].hex()",
        "try:",
        "    stub.ModelInfer(pb.ModelInferRequest(model_name='nope'))",
        "except grpc.RpcError as e:",
        "    out['error'] = [e.code().name, dict(e.trailing_metadata()).get('mlos-error-code')]",
        "print(json.dumps(out))",
      ].join("\n"),
    );
    const r = spawnSync(python, [path.join(dir, "client.py"), `127.0.0.1:${server.info.grpc}`, X.join(",")], { cwd: dir, encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(out.live, true);
    assert.equal(out.health, "SERVING");
    assert.deepEqual(out.inputs, [["x", "FP32", [-1, 4]]]);
    assert.equal(out.id, "py");
    assert.deepEqual(out.shape, reference.shape);
    assert.equal(out.y, reference.bytes.toString("hex"));
    assert.deepEqual(out.error, ["NOT_FOUND", "MODEL_NOT_FOUND"]);
  });
});

describe("axon serve over gRPC with keys and limits", { skip }, () => {
  let home: string;
  let server: Served;
  let client: KserveGrpcClient;
  const API = "api-key-123456";
  const ADMIN = "admin-key-123456";

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-grpc-auth-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--grpc-port", String(await freePort()), "--model", "demo/mlp@1", "--api-key", API, "--admin-key", ADMIN, "--max-body", "4K"]);
    client = kserveClient(`127.0.0.1:${server.info.grpc}`);
  });
  after(async () => {
    client?.close();
    if (server) assert.equal(await stop(server), 0, server.stderr());
  });

  it("needs the API key in the authorization metadata, and the admin key for load and unload; health stays open", async () => {
    assert.deepEqual(await client.check(""), { status: "SERVING" });
    assert.deepEqual(await client.call("ServerLive", {}), { live: true });
    await rejects(client.call("ModelMetadata", { name: "mlp" }), grpc.status.UNAUTHENTICATED, "UNAUTHORIZED");
    await rejects(client.call("ModelMetadata", { name: "mlp" }, { authorization: "Bearer wrong" }), grpc.status.UNAUTHENTICATED, "UNAUTHORIZED");
    const mm = await client.call<{ name: string }>("ModelMetadata", { name: "mlp" }, { authorization: `Bearer ${API}` });
    assert.equal(mm.name, "mlp");
    await rejects(client.call("RepositoryModelUnload", { model_name: "mlp" }, { authorization: `Bearer ${API}` }), grpc.status.PERMISSION_DENIED, "FORBIDDEN");
    await client.call("RepositoryModelUnload", { model_name: "mlp" }, { authorization: `Bearer ${ADMIN}` });
    await client.call("RepositoryModelLoad", { model_name: "mlp" }, { authorization: `Bearer ${ADMIN}` });
    const stream = client.raw.ModelStreamInfer() as grpc.ClientDuplexStream<unknown, unknown>;
    const failed = await new Promise<grpc.ServiceError>((resolve) => {
      stream.on("error", resolve);
      stream.on("data", () => {});
      stream.end();
    });
    assert.equal(failed.code, grpc.status.UNAUTHENTICATED);
  });

  it("refuses a message larger than --max-body with RESOURCE_EXHAUSTED", async () => {
    const big = Buffer.alloc(8192);
    await assert.rejects(
      client.call("ModelInfer", { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [512, 4] }], raw_input_contents: [big] }, { authorization: `Bearer ${API}` }),
      (e: grpc.ServiceError) => e.code === grpc.status.RESOURCE_EXHAUSTED,
    );
    const ok = await client.call<InferResponse>("ModelInfer", { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] }, { authorization: `Bearer ${API}` });
    assert.equal(ok.outputs[0]!.name, "y");
  });
});

describe("axon serve over gRPC with TLS", { skip: skip || (existsSync("/usr/bin/openssl") ? false : "no openssl to make a certificate") }, () => {
  it("serves gRPC over TLS with the HTTP door's certificate, and not in plaintext", async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-grpc-tls-"));
    await seedDemoModels(new Axon({ home }));
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-grpc-cert-"));
    const made = spawnSync("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { encoding: "utf8" });
    assert.equal(made.status, 0, made.stderr);
    const s = await startServer(home, ["--grpc-port", String(await freePort()), "--model", "demo/mlp@1", "--tls-cert", path.join(dir, "cert.pem"), "--tls-key", path.join(dir, "key.pem")]);
    const secure = kserveClient(`127.0.0.1:${s.info.grpc}`, grpc.credentials.createSsl(readFileSync(path.join(dir, "cert.pem"))));
    const plain = kserveClient(`127.0.0.1:${s.info.grpc}`);
    try {
      const res = await secure.call<InferResponse>("ModelInfer", { model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [f32(X)] });
      assert.deepEqual(res.outputs[0]!.shape, [2, 3]);
      await assert.rejects(plain.call("ServerLive", {}, {}, { deadline: Date.now() + 3000 }), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED);
    } finally {
      secure.close();
      plain.close();
      assert.equal(await stop(s), 0, s.stderr());
    }
  });
});
