// System shared-memory regions (KServe v2 / Triton extension), end to end: `axon serve
// --allow-shared-memory` in a child process; this test process creates POSIX shared-memory
// objects (/dev/shm), registers them with curl and over gRPC, and names them in inference
// requests; the server reads inputs from them and writes outputs into them. Faults: windows out
// of range, an unknown region, an object unlinked or shrunk after registration; the server keeps
// answering and the pool returns to its baseline.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Axon, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { poolUsed, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { errorCode, kserveClient, type KserveGrpcClient } from "./helpers/grpc-client.js";
import { freePort } from "./helpers/registry.js";

const skip = !tryLoadOrt() ? "ONNX Runtime is unavailable" : !existsSync("/dev/shm") ? "no /dev/shm" : false;
const X = [0.5, -1, 2, 0.25, 1, 2, 3, 4];
const f32 = (xs: number[]) => Buffer.from(new Float32Array(xs).buffer);
const tag = `mlos-test-${process.pid}`;

function curl(method: string, url: string, body?: unknown): { status: number; json: Record<string, unknown> & { error?: string; code?: string } } {
  const args = ["-s", "-S", "-o", "-", "-w", "\n%{http_code}", "-X", method, url];
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "-d", JSON.stringify(body));
  const r = spawnSync("curl", args, { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const nl = r.stdout.lastIndexOf("\n");
  const text = r.stdout.slice(0, nl);
  return { status: Number(r.stdout.slice(nl + 1)), json: text ? JSON.parse(text) : {} };
}

describe("system shared-memory regions over HTTP and gRPC", { skip }, () => {
  let home: string;
  let server: Served;
  let client: KserveGrpcClient;
  let reference: Buffer;
  const objects: string[] = [];
  /** A shared-memory object of `bytes`, as shm_open + ftruncate make one; its key. */
  const object = (name: string, bytes: Buffer): string => {
    const file = `/dev/shm/${tag}-${name}`;
    writeFileSync(file, bytes, { mode: 0o600 });
    objects.push(file);
    return `/${tag}-${name}`;
  };
  const input = (region: string, offset: number, byteSize = 32) => ({ name: "x", datatype: "FP32", shape: [2, 4], parameters: { shared_memory_region: region, shared_memory_offset: offset, shared_memory_byte_size: byteSize } });

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-shm-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--grpc-port", String(await freePort()), "--allow-shared-memory", "--model", "demo/mlp@1"]);
    client = kserveClient(`127.0.0.1:${server.info.grpc}`);
    const r = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], data: X }] });
    assert.equal(r.status, 200);
    reference = f32((r.json.outputs as Array<{ data: number[] }>)[0]!.data);
  });
  after(async () => {
    client?.close();
    for (const f of objects) rmSync(f, { force: true });
    if (server) assert.equal(await stop(server), 0, server.stderr());
  });

  it("reads inputs from a region and writes outputs into one, over HTTP (curl)", async () => {
    const baseline = await poolUsed(server.base);
    const inKey = object("in", Buffer.concat([Buffer.alloc(16, 0xee), f32(X), Buffer.alloc(16, 0xee)]));
    const outKey = object("out", Buffer.alloc(128));
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/in/register`, { key: inKey, offset: 0, byte_size: 64 }).status, 200);
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/out/register`, { key: outKey, offset: 64, byte_size: 64 }).status, 200);
    const st = curl("GET", `${server.base}/v2/systemsharedmemory/status`);
    assert.deepEqual(st.json, [
      { name: "in", key: inKey, offset: 0, byte_size: 64 },
      { name: "out", key: outKey, offset: 64, byte_size: 64 },
    ]);
    assert.deepEqual(curl("GET", `${server.base}/v2/systemsharedmemory/region/out/status`).json, [{ name: "out", key: outKey, offset: 64, byte_size: 64 }]);

    const r = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [input("in", 16)], outputs: [{ name: "y", parameters: { shared_memory_region: "out", shared_memory_offset: 8, shared_memory_byte_size: 56 } }] });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const y = (r.json.outputs as Array<{ name: string; shape: number[]; data?: unknown; parameters: Record<string, unknown> }>)[0]!;
    assert.equal(y.data, undefined, "the output's bytes went to the region, not the body");
    assert.deepEqual(y.parameters, { shared_memory_region: "out", shared_memory_offset: 8, shared_memory_byte_size: reference.byteLength });
    const written = readFileSync(`/dev/shm/${tag}-out`);
    assert.ok(written.subarray(64 + 8, 64 + 8 + reference.byteLength).equals(reference), "the output is in the window: region offset 64 + request offset 8");
    assert.ok(written.subarray(0, 72).equals(Buffer.alloc(72)) && written.subarray(72 + reference.byteLength).every((b) => b === 0), "nothing outside the window changed");
    assert.equal(await poolUsed(server.base), baseline);
  });

  it("does the same over gRPC: SystemSharedMemory calls and region parameters", async () => {
    const key = object("grpc", Buffer.concat([f32(X), Buffer.alloc(32)]));
    await client.call("SystemSharedMemoryRegister", { name: "g", key, offset: 0, byte_size: 64 });
    const st = await client.call<{ regions: Record<string, { key: string; byte_size: number }> }>("SystemSharedMemoryStatus", { name: "g" });
    assert.equal(st.regions.g!.key, key);
    assert.equal(st.regions.g!.byte_size, 64);
    const res = await client.call<{ outputs: Array<{ name: string; parameters: Record<string, Record<string, unknown>> }>; raw_output_contents: Buffer[] }>("ModelInfer", {
      model_name: "mlp",
      inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], parameters: { shared_memory_region: { string_param: "g" }, shared_memory_byte_size: { int64_param: 32 } } }],
      outputs: [{ name: "y", parameters: { shared_memory_region: { string_param: "g" }, shared_memory_offset: { int64_param: 32 }, shared_memory_byte_size: { int64_param: 32 } } }],
    });
    assert.equal(res.raw_output_contents[0]!.byteLength, 0, "no bytes in the message for an output written to shared memory");
    assert.equal(res.outputs[0]!.parameters.shared_memory_byte_size!.uint64_param, reference.byteLength);
    assert.ok(readFileSync(`/dev/shm/${tag}-grpc`).subarray(32, 32 + reference.byteLength).equals(reference));
    await client.call("SystemSharedMemoryUnregister", { name: "g" });
    await assert.rejects(client.call("SystemSharedMemoryStatus", { name: "g" }), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && errorCode(e) === "SHM_REGION_NOT_FOUND");
  });

  it("refuses bad registrations and windows with a code, and frees the request's tensors", async () => {
    const baseline = await poolUsed(server.base);
    const key = object("bad", Buffer.alloc(64));
    const reg = (name: string, body: unknown) => curl("POST", `${server.base}/v2/systemsharedmemory/region/${name}/register`, body);
    assert.equal(reg("b", { key, offset: 0, byte_size: 64 }).status, 200);
    const twice = reg("b", { key, offset: 0, byte_size: 64 });
    assert.deepEqual([twice.status, twice.json.code], [409, "SHM_REGION_EXISTS"]);
    const missing = reg("m", { key: `/${tag}-none`, offset: 0, byte_size: 8 });
    assert.deepEqual([missing.status, missing.json.code], [404, "SHM_KEY_NOT_FOUND"]);
    const escape = reg("e", { key: "/../etc/passwd", offset: 0, byte_size: 8 });
    assert.deepEqual([escape.status, escape.json.code], [400, "SHM_INVALID"]);
    const past = reg("p", { key, offset: 32, byte_size: 64 });
    assert.deepEqual([past.status, past.json.code], [400, "SHM_OUT_OF_RANGE"]);
    assert.match(past.json.error!, /offset 32 \+ byte_size 64 runs past the 64 bytes/);

    const infer = (body: unknown) => curl("POST", `${server.base}/v2/models/mlp/infer`, body);
    const cases: Array<[unknown, number, string]> = [
      [{ inputs: [input("nope", 0)] }, 400, "SHM_REGION_NOT_FOUND"],
      [{ inputs: [input("b", 40)] }, 400, "SHM_OUT_OF_RANGE"],
      [{ inputs: [input("b", 0, 16)] }, 400, "BAD_DATA"],
      [{ inputs: [{ ...input("b", 0), data: X }] }, 400, "BAD_DATA"],
      [{ inputs: [input("b", 0)], outputs: [{ name: "y", parameters: { shared_memory_region: "b", shared_memory_byte_size: 8 } }] }, 400, "SHM_OUT_OF_RANGE"],
      [{ inputs: [input("b", 0)], outputs: [{ name: "y", parameters: { shared_memory_region: "b" } }] }, 400, "SHM_INVALID"],
    ];
    for (const [body, status, code] of cases) {
      const r = infer(body);
      assert.deepEqual([r.status, r.json.code], [status, code], `${JSON.stringify(body)}: ${r.json.error}`);
      assert.doesNotMatch(r.json.error!, /\n/);
    }
    assert.equal(await poolUsed(server.base), baseline, "every refused request's tensors went back to the pool");
  });

  it("serves 32 clients on their own regions at once while another keeps shrinking and regrowing its object", async () => {
    const baseline = await poolUsed(server.base);
    const clients = 32;
    for (let c = 0; c < clients; c++) {
      const key = object(`c${c}`, Buffer.concat([f32(X.map((v) => v + c)), Buffer.alloc(32)]));
      assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/c${c}/register`, { key, offset: 0, byte_size: 64 }).status, 200);
    }
    const flaky = object("flaky", Buffer.concat([f32(X), Buffer.alloc(32)]));
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/flaky/register`, { key: flaky, offset: 0, byte_size: 64 }).status, 200);
    // The expected answer of each client, from plain JSON requests.
    const expected: Buffer[] = [];
    for (let c = 0; c < clients; c++) {
      const r = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], data: X.map((v) => v + c) }] });
      expected.push(f32((r.json.outputs as Array<{ data: number[] }>)[0]!.data));
    }
    const infer = async (region: string) => {
      const res = await fetch(`${server.base}/v2/models/mlp/infer`, { method: "POST", body: JSON.stringify({ inputs: [input(region, 0)], outputs: [{ name: "y", parameters: { shared_memory_region: region, shared_memory_offset: 32, shared_memory_byte_size: 32 } }] }) });
      return { status: res.status, body: (await res.json()) as { code?: string } };
    };
    let stop = false;
    const misbehaving = (async () => {
      let refused = 0;
      for (let i = 0; !stop; i++) {
        truncateSync(`/dev/shm/${tag}-flaky`, i % 2 === 0 ? 8 : 64);
        const r = await infer("flaky");
        if (r.status !== 200) {
          assert.deepEqual([r.status, r.body.code], [400, "SHM_REGION_CHANGED"]);
          refused++;
        }
      }
      return refused;
    })();
    const wrong: string[] = [];
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        for (let i = 0; i < 20; i++) {
          const r = await infer(`c${c}`);
          const got = readFileSync(`/dev/shm/${tag}-c${c}`).subarray(32, 32 + expected[c]!.byteLength);
          if (r.status !== 200 || !got.equals(expected[c]!)) wrong.push(`client ${c} request ${i}: ${r.status} ${JSON.stringify(r.body)}`);
        }
      }),
    );
    stop = true;
    assert.ok((await misbehaving) > 0, "the misbehaving client was refused");
    assert.deepEqual(wrong, [], "every well-behaved client got its own answer in its own region");
    for (let c = 0; c < clients; c++) curl("POST", `${server.base}/v2/systemsharedmemory/region/c${c}/unregister`);
    curl("POST", `${server.base}/v2/systemsharedmemory/region/flaky/unregister`);
    assert.equal(await poolUsed(server.base), baseline);
  });

  it("survives its owner unlinking or shrinking an object after registration", async () => {
    const key = object("gone", Buffer.concat([f32(X), Buffer.alloc(32)]));
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/gone/register`, { key, offset: 0, byte_size: 64 }).status, 200);
    unlinkSync(`/dev/shm/${tag}-gone`);
    const still = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [input("gone", 0)] });
    assert.equal(still.status, 200, "an unlinked object stays valid while registered");
    assert.ok(f32((still.json.outputs as Array<{ data: number[] }>)[0]!.data).equals(reference));

    const key2 = object("shrink", Buffer.concat([f32(X), Buffer.alloc(32)]));
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/shrink/register`, { key: key2, offset: 0, byte_size: 64 }).status, 200);
    truncateSync(`/dev/shm/${tag}-shrink`, 8);
    const shrunk = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [input("shrink", 0)] });
    assert.deepEqual([shrunk.status, shrunk.json.code], [400, "SHM_REGION_CHANGED"]);
    assert.match(shrunk.json.error!, /now holds 8/);
    const out = curl("POST", `${server.base}/v2/models/mlp/infer`, { inputs: [{ name: "x", datatype: "FP32", shape: [2, 4], data: X }], outputs: [{ name: "y", parameters: { shared_memory_region: "shrink", shared_memory_offset: 32, shared_memory_byte_size: 32 } }] });
    assert.deepEqual([out.status, out.json.code], [400, "SHM_REGION_CHANGED"], "an output is not written past the end of a shrunk object");
    assert.equal(readFileSync(`/dev/shm/${tag}-shrink`).byteLength, 8, "the object was not grown back");
    assert.equal(curl("GET", `${server.base}/v2/health/live`).status, 200);

    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/shrink/unregister`).status, 200);
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/region/shrink/unregister`).status, 200, "unregistering twice is not an error");
    assert.equal(curl("POST", `${server.base}/v2/systemsharedmemory/unregister`).status, 200);
    assert.deepEqual(curl("GET", `${server.base}/v2/systemsharedmemory/status`).json, []);
    assert.deepEqual(curl("GET", `${server.base}/v2/systemsharedmemory/region/in/status`).json.code, "SHM_REGION_NOT_FOUND");
  });
});
