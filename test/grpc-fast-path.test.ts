// The gRPC door's native fast path (native/src/ort/kserve_grpc.cc through the onnxruntime plugin's
// kserve-v2-grpc codec), end to end: `axon serve --grpc-port` in a child process, called by a
// @grpc/grpc-js client that sends ModelInferRequest bytes written by protobufjs (the encoder every
// grpc-js user has) and reads the response bytes as they come. Its contract: whenever the codec
// answers, the response is byte-for-byte what the general path (decode in JS, tensors, the
// scheduler, protobufjs) writes; whatever it declines, the general path answers as before.
//
// "fast" is a request's bytes B; "general" is B followed by an unknown field (protobuf decoders
// skip it, the codec declines it). The same codec runs in this process too (the model loaded with
// runMode "inline"), which says whether it takes a request and what it answers.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Axon, Runtime, seedDemoModels, type Model } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { KSERVE_GRPC_CODEC, type KserveNativeCodec } from "../src/protocol/kserve.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";
import { poolUsed, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { errorCode } from "./helpers/grpc-client.js";
import { freePort } from "./helpers/registry.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";

const proto = protoLoader.loadSync(path.join(ROOT, "proto", "grpc_service.proto"), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const inferMethod = (proto["inference.GRPCInferenceService"] as grpc.ServiceDefinition).ModelInfer!;
const encodeRequest = (req: Record<string, unknown>): Buffer => inferMethod.requestSerialize(req);
const decodeResponse = (bytes: Buffer) => inferMethod.responseDeserialize(bytes) as { model_name: string; model_version: string; id: string; outputs: Array<{ name: string; datatype: string; shape: number[] }>; raw_output_contents: Buffer[] };
/** An unknown field (number 99, a varint) after the message: skipped by protobuf decoders, declined by the codec. */
const general = (bytes: Buffer) => Buffer.concat([bytes, Buffer.from([0x98, 0x06, 0x01])]);

const identity = (b: Buffer) => b;

describe("the KServe v2 gRPC fast path", { skip }, () => {
  let home: string;
  let server: Served;
  let client: grpc.Client;
  let runtime: Runtime;
  let mlp: Model; // in this process, runMode "inline": the same codec, run directly
  let embedder: Model;

  /** ModelInfer with `bytes` as the request message; resolves with the response message's bytes. */
  const call = (bytes: Buffer): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      client.makeUnaryRequest("/inference.GRPCInferenceService/ModelInfer", identity, identity, bytes, (e: grpc.ServiceError | null, r?: Buffer) => (e ? reject(e) : resolve(r!)));
    });
  /** The codec's answer to `bytes` in this process (copied), or undefined when it declines. */
  const mine = (model: Model, name: string, bytes: Buffer): Buffer | undefined => {
    const out = model.capability<KserveNativeCodec>(KSERVE_GRPC_CODEC)!.runSync(bytes, name, "1.0.0");
    return out === undefined ? undefined : Buffer.from(out);
  };
  const details = async (name: string) => ((await (await fetch(`${server.base}/api/v1/models/${name}`)).json()) as { details: { inline?: boolean } }).details;

  const mlpRequest = (r: () => number, rows: number, extra: Record<string, unknown> = {}) =>
    encodeRequest({ model_name: "mlp", ...extra, inputs: [{ name: "x", datatype: "FP32", shape: [rows, 4] }], raw_input_contents: [Buffer.from(Float32Array.from({ length: rows * 4 }, () => r() * 8 - 4).buffer)] });

  /** Calls until the server's run policy keeps `name` on the calling thread, where the fast path is taken. */
  async function ensureInline(name: string, bytes: Buffer): Promise<void> {
    for (let i = 0; i < 400; i++) {
      if (i % 4 === 0 && (await details(name)).inline === true) return;
      await call(bytes);
    }
    assert.fail(`model ${name} never went inline: ${JSON.stringify(await details(name))}`);
  }

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-grpc-fast-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--grpc-port", String(await freePort()), "--model", "demo/mlp@1", "--model", "demo/embedder@1"]);
    client = new grpc.Client(`127.0.0.1:${server.info.grpc}`, grpc.credentials.createInsecure());
    runtime = new Runtime({ axon: new Axon({ home }) });
    mlp = await runtime.load("demo/mlp@1.0.0", { runMode: "inline" });
    embedder = await runtime.load("demo/embedder@1.0.0", { runMode: "inline" });
    const r = mulberry32(1);
    await ensureInline("mlp", mlpRequest(r, 1));
    await ensureInline("embedder", encodeRequest({ model_name: "embedder", inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, 3] }], raw_input_contents: [Buffer.from(BigInt64Array.from([1n, 2n, 3n]).buffer)] }));
  });
  after(async () => {
    client?.close();
    await mlp?.dispose();
    await embedder?.dispose();
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly on SIGTERM: ${server.stderr()}`);
  });

  it("answers 200 random MLP requests byte for byte as the general path, ids and versions included", async () => {
    const r = mulberry32(7);
    const ids = ["", "r-1", "a long request id with spaces 0123456789", "ünïcode"];
    for (let i = 0; i < 200; i++) {
      const extra: Record<string, unknown> = { id: ids[i % ids.length] };
      if (i % 3 === 0) extra.model_version = "1.0.0";
      const bytes = mlpRequest(r, Math.floor(r() * 9), extra); // 0 to 8 rows
      const local = mine(mlp, "mlp", bytes);
      if (i % ids.length === 3) assert.equal(local, undefined, "a non-ASCII id is left to the general path");
      else assert.ok(local, `the codec takes request ${i}`);
      const [fast, gen] = await Promise.all([call(bytes), call(general(bytes))]);
      assert.ok(fast.equals(gen), `request ${i}: the fast answer is the general path's`);
      if (local) assert.ok(local.equals(gen), `request ${i}: the codec's bytes are the general path's`);
      const res = decodeResponse(fast);
      assert.equal(res.model_name, "mlp");
      assert.equal(res.model_version, "1.0.0");
      assert.equal(res.id, extra.id);
      assert.equal(res.outputs[0]!.name, "y");
      assert.equal(res.raw_output_contents[0]!.byteLength, res.outputs[0]!.shape[0]! * 3 * 4);
    }
  });

  it("answers random embedder requests (INT64 inputs, two dynamic dimensions) byte for byte as the general path", async () => {
    const r = mulberry32(11);
    for (let i = 0; i < 60; i++) {
      const rows = 1 + Math.floor(r() * 3);
      const length = 1 + Math.floor(r() * 12);
      const ids = BigInt64Array.from({ length: rows * length }, () => BigInt(Math.floor(r() * 1000)));
      const bytes = encodeRequest({ model_name: "embedder", id: `e${i}`, inputs: [{ name: "input_ids", datatype: "INT64", shape: [rows, length] }], raw_input_contents: [Buffer.from(ids.buffer)] });
      const local = mine(embedder, "embedder", bytes);
      assert.ok(local, `the codec takes request ${i}`);
      const [fast, gen] = await Promise.all([call(bytes), call(general(bytes))]);
      assert.ok(fast.equals(gen), `request ${i}`);
      assert.ok(local.equals(gen), `request ${i}: the codec's bytes`);
      assert.deepEqual(decodeResponse(fast).outputs[0]!.shape, [rows, 128]);
    }
  });

  it("leaves typed contents, parameters and output selections to the general path, which answers them", async () => {
    const r = mulberry32(3);
    const x = Float32Array.from({ length: 8 }, () => r());
    const raw = encodeRequest({ model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [Buffer.from(x.buffer)] });
    const expected = decodeResponse(await call(raw)).raw_output_contents[0]!;
    const variants = [
      encodeRequest({ model_name: "mlp", inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], contents: { fp32_contents: Array.from(x) } }] }),
      encodeRequest({ model_name: "mlp", parameters: { priority: { int64_param: 1 } }, inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [Buffer.from(x.buffer)] }),
      encodeRequest({ model_name: "mlp", outputs: [{ name: "y" }], inputs: [{ name: "x", datatype: "FP32", shape: [2, 4] }], raw_input_contents: [Buffer.from(x.buffer)] }),
    ];
    for (const [i, bytes] of variants.entries()) {
      assert.equal(mine(mlp, "mlp", bytes), undefined, `variant ${i} is declined`);
      const res = decodeResponse(await call(bytes));
      assert.ok(res.raw_output_contents[0]!.equals(expected), `variant ${i}: the general path's answer is the same`);
    }
  });

  it("batches concurrent calls natively, each getting its own rows, equal to its answer alone", async () => {
    const r = mulberry32(5);
    const metrics = async () => {
      const text = await (await fetch(`${server.base}/metrics`)).text();
      const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
      return {
        count: num(/^mlos_batch_size_count\{model="mlp@1\.0\.0"\} (\d+)/m),
        le1: num(/^mlos_batch_size_bucket\{(?:le="1",model="mlp@1\.0\.0"|model="mlp@1\.0\.0",le="1")\} (\d+)/m),
      };
    };
    const before = await metrics();
    const baseline = await poolUsed(server.base);
    const requests = Array.from({ length: 512 }, (_, i) => mlpRequest(r, 1 + Math.floor(r() * 4), { id: `c${i}` }));
    const answers = await Promise.all(requests.map((b) => call(b)));
    answers.forEach((bytes, i) => {
      const res = decodeResponse(bytes);
      assert.equal(res.id, `c${i}`);
      const alone = decodeResponse(mine(mlp, "mlp", requests[i]!)!);
      assert.deepEqual(res.outputs, alone.outputs, `request ${i}: its own rows`);
      const got = new Float32Array(new Uint8Array(res.raw_output_contents[0]!).buffer);
      const want = new Float32Array(new Uint8Array(alone.raw_output_contents[0]!).buffer);
      got.forEach((v, k) => assert.ok(Math.abs(v - want[k]!) <= 1e-6, `request ${i} element ${k}: ${v} vs ${want[k]} alone`));
    });
    // (mlos_batch_size observes each request's batch: those past le="1" shared a run.)
    const after = await metrics();
    assert.equal(after.count - before.count, 512);
    assert.ok(after.count - after.le1 > before.count - before.le1, "requests were stacked into shared runs");
    assert.equal(await poolUsed(server.base), baseline, "no pool memory held");
  });

  it("answers on ModelStreamInfer too, each answer byte for byte the general path's", async () => {
    const stream = client.makeBidiStreamRequest("/inference.GRPCInferenceService/ModelStreamInfer", identity, identity) as grpc.ClientDuplexStream<Buffer, Buffer>;
    const answers: Buffer[] = [];
    let wake: (() => void) | undefined;
    stream.on("data", (b: Buffer) => {
      answers.push(b);
      wake?.();
    });
    const next = async (): Promise<Buffer> => {
      while (answers.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return answers.shift()!;
    };
    const streamMethod = (proto["inference.GRPCInferenceService"] as grpc.ServiceDefinition).ModelStreamInfer!;
    const r = mulberry32(13);
    for (let i = 0; i < 40; i++) {
      const bytes = mlpRequest(r, 1 + Math.floor(r() * 4), { id: `s${i}` });
      stream.write(bytes);
      const fast = await next();
      stream.write(general(bytes));
      const gen = await next();
      assert.ok(fast.equals(gen), `stream request ${i}: the fast answer is the general path's`);
      const decoded = streamMethod.responseDeserialize(fast) as { error_message: string; infer_response: { id: string; raw_output_contents: Buffer[] } };
      assert.equal(decoded.error_message, "");
      assert.equal(decoded.infer_response.id, `s${i}`);
      assert.ok(decoded.infer_response.raw_output_contents[0]!.equals(decodeResponse(mine(mlp, "mlp", bytes)!).raw_output_contents[0]!));
    }
    // A message that is not protobuf answers error_message, and the stream goes on.
    stream.write(Buffer.from([0x0f]));
    const bad = streamMethod.responseDeserialize(await next()) as { error_message: string };
    assert.match(bad.error_message, /^BAD_REQUEST: ModelInferRequest: not a valid message/);
    stream.end();
    await new Promise<void>((resolve, reject) => stream.on("status", (st: grpc.StatusObject) => (st.code === grpc.status.OK ? resolve() : reject(new Error(st.details)))));
  });

  it("answers a message that is not valid protobuf with INVALID_ARGUMENT and BAD_REQUEST, and goes on serving", async () => {
    const good = mlpRequest(mulberry32(9), 2);
    for (const bad of [good.subarray(0, good.byteLength - 3), Buffer.from([0x0f]), Buffer.from([0xff, 0xff, 0xff])]) {
      await assert.rejects(call(bad), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT, e.details);
        assert.equal(errorCode(e), "BAD_REQUEST");
        assert.match(e.details, /^ModelInferRequest: not a valid message/);
        return true;
      });
    }
    await assert.rejects(call(encodeRequest({ model_name: "nope", inputs: [] })), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && errorCode(e) === "MODEL_NOT_FOUND");
    assert.equal(decodeResponse(await call(good)).outputs[0]!.shape[0], 2);
  });
});
