import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "proto", "grpc_service.proto");

test("the KServe v2 proto parses, has every rpc, and round-trips an inference request with raw inputs", async () => {
  const root = await new protobuf.Root().load(PROTO, { keepCase: true });
  const svc = root.lookupService("inference.GRPCInferenceService");
  assert.deepEqual(Object.keys(svc.methods).sort(), [
    "ModelInfer", "ModelMetadata", "ModelReady", "ModelStreamInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    "ServerLive", "ServerMetadata", "ServerReady", "SystemSharedMemoryRegister", "SystemSharedMemoryStatus", "SystemSharedMemoryUnregister",
  ]);
  assert.equal(svc.methods.ModelStreamInfer!.requestStream, true);
  assert.equal(svc.methods.ModelStreamInfer!.responseStream, true);
  const Req = root.lookupType("inference.ModelInferRequest");
  assert.equal(Req.fields.raw_input_contents!.id, 7);
  const raw = Buffer.from(new Float32Array([1, 2, 3, 4]).buffer);
  const msg = { model_name: "mlp", model_version: "1", id: "r1", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4] }], outputs: [{ name: "y" }], raw_input_contents: [raw] };
  const back = Req.toObject(Req.decode(Req.encode(Req.fromObject(msg)).finish()), { longs: Number, bytes: Buffer }) as typeof msg;
  assert.equal(back.model_name, "mlp");
  assert.deepEqual(back.inputs[0]!.shape, [1, 4]);
  assert.ok(Buffer.from(back.raw_input_contents[0]!).equals(raw));
});
