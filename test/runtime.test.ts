// The library's runtime (`load`, `infer`, `Tensor`, `TensorPool`) over the onnxruntime plugin:
// resolution through Axon, signature checks, parity with onnxruntime-node on the demo models and
// on real models from npm packages, zero copy proven by native addresses, sharing and disposal,
// run modes, cancellation and timeouts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { ADDRESSES, Axon, InputError, MlosError, Runtime, Tensor, TensorPool, seedDemoModels, type Model, type NativeAddresses } from "mlos";
import { loadNative, ortLoadError, tryLoadOrt } from "../bindings/native.js";
import { EMBEDDER, mulberry32 } from "../src/tools/make-demo-models.js";
import { OnnxModelBuilder } from "../src/tools/onnx-builder.js";

const fetchScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "scripts", "fetch-test-models.js");
const { fetchTestModels } = (await import(pathToFileURL(fetchScript).href)) as { fetchTestModels: () => { files: Record<string, string> } };

const skip = tryLoadOrt() ? false : `ONNX Runtime is unavailable: ${ortLoadError()?.message}`;
const THREADS = { intraOpThreads: 1, interOpThreads: 1 } as const;

function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

const isCode = (code: string) => (e: unknown) => e instanceof MlosError && e.code === code;

const bytesOf = (v: ArrayBufferView) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

/** Same bytes, or every element within 1e-6 relative. */
function assertClose(actual: ArrayBufferView, expected: ArrayBufferView, what: string): void {
  if (bytesOf(actual).equals(bytesOf(expected))) return;
  const a = actual as Float32Array;
  const b = expected as Float32Array;
  assert.equal(a.length, b.length, `${what}: lengths differ`);
  for (let i = 0; i < a.length; i++) {
    const tol = 1e-6 * Math.max(Math.abs(a[i]!), Math.abs(b[i]!));
    assert.ok(Math.abs(a[i]! - b[i]!) <= tol, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

describe("Tensor", () => {
  it("makes tensors of every dtype, in place over typed arrays and copied from values", () => {
    const f = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = Tensor.float32([2, 3], f);
    assert.equal(t.data, f, "a Float32Array is used in place");
    assert.deepEqual(t.shape, [2, 3]);
    assert.equal(t.size, 6);
    assert.equal(t.byteLength, 24);
    assert.deepEqual(Tensor.int64([3], [1, 2, 3]).toArray(), [1n, 2n, 3n]);
    assert.deepEqual(Tensor.bool([3], [true, false, true]).toArray(), [true, false, true]);
    assert.deepEqual(Tensor.string([2], ["a", "b"]).data, ["a", "b"]);
    assert.equal(Tensor.float16([2, 2]).data.constructor, Uint16Array);
    assert.equal(new Tensor("complex64", [2], new Float32Array(4)).byteLength, 16);
    assert.equal(new Tensor("int4", [3], new Uint8Array(2)).byteLength, 2);
    assert.equal(Tensor.float32([]).size, 1, "a scalar has one element");
    const fromBuffer = new Tensor("int32", [2], new ArrayBuffer(8));
    assert.equal(fromBuffer.data.constructor, Int32Array);
    for (const dt of ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "string", "complex64", "complex128", "float8e4m3fn", "float8e5m2", "int4", "uint4"] as const) {
      assert.equal(Tensor.zeros(dt, [2, 2]).dtype, dt);
    }
  });

  it("rejects bad dtypes, shapes and data with TENSOR_INVALID", () => {
    assert.throws(() => Tensor.float32([2, 3], new Float32Array(5)), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.float32([2, -1]), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.float32([1.5]), isCode("TENSOR_INVALID"));
    assert.throws(() => new Tensor("float33" as "float32", [1], [1]), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.float32([2], new Int32Array(2) as unknown as Float32Array), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.float32([2], ["a", "b"] as unknown as number[]), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.int64([1], [1.5]), isCode("TENSOR_INVALID"));
    assert.throws(() => new Tensor("int32", [2], new ArrayBuffer(7)), isCode("TENSOR_INVALID"));
    assert.throws(() => Tensor.float32([2 ** 30, 2 ** 30]), isCode("TENSOR_INVALID"));
  });

  it("fromBytes views aligned bytes in place and copies misaligned ones", () => {
    const buf = Buffer.alloc(20);
    new Float32Array(buf.buffer, buf.byteOffset, 4).set([1, 2, 3, 4]);
    const t = Tensor.fromBytes("float32", [4], buf.subarray(0, 16));
    assert.deepEqual([...t.data], [1, 2, 3, 4]);
    const odd = Buffer.alloc(17);
    const t2 = Tensor.fromBytes("float32", [4], odd.subarray(1));
    assert.equal(t2.data.length, 4);
  });

  it("dispose() releases and makes the data unreadable; `using` disposes", () => {
    let released = 0;
    const t = new Tensor("float32", [1], new Float32Array(1), () => released++);
    {
      using u = t;
      assert.equal(u.disposed, false);
    }
    assert.equal(t.disposed, true);
    t.dispose();
    assert.equal(released, 1, "released exactly once");
    assert.throws(() => t.data, isCode("TENSOR_DISPOSED"));
  });
});

describe("TensorPool", { skip: loadNative() ? false : "no native addon" }, () => {
  it("hands out 64-byte aligned pool tensors whose slices return on dispose", () => {
    const pool = new TensorPool({ size: 1 << 20 });
    const base = pool.stats().live;
    const t = pool.tensor("float32", [3, 5]);
    assert.equal(Number(loadNative().addressOf(t.data) % 64n), 0);
    assert.ok(pool.owns(t.data));
    assert.equal(pool.stats().live, base + 1);
    t.dispose();
    assert.equal(pool.stats().live, base);
    assert.throws(() => pool.tensor("float32", [1 << 20]), isCode("POOL_EXHAUSTED"));
    const copy = pool.copyOf(Tensor.int64([2], [7n, 8n]));
    assert.deepEqual(copy.toArray(), [7n, 8n]);
    pool.close();
  });
});

describe("load and infer", { skip }, () => {
  let home: string;
  let axon: Axon;
  let runtime: Runtime;
  let models: Record<string, string>;

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-runtime-"));
    axon = new Axon({ home });
    await seedDemoModels(axon);
    runtime = new Runtime({ axon });
    models = fetchTestModels().files;
  });
  after(async () => {
    await runtime.close();
  });

  it("loads a reference through Axon with the manifest's signature", async () => {
    await using model = await runtime.load("demo/mlp@^1", THREADS);
    assert.equal(model.name, "mlp");
    assert.equal(model.reference, "demo/mlp@1.0.0");
    assert.equal(model.plugin, "onnxruntime");
    assert.deepEqual(model.inputs, [{ name: "x", dtype: "float32", shape: ["batch", 4] }]);
    assert.deepEqual(model.outputs, [{ name: "y", dtype: "float32", shape: ["batch", 3] }]);
    assert.ok(model.path.startsWith(path.join(home, "models")));
    const { y } = await model.infer({ x: Tensor.float32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]) });
    assert.deepEqual(y!.shape, [2, 3]);
    const row = [...y!.data as Float32Array].slice(0, 3);
    assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, "softmax rows sum to 1");
  });

  it("loads a folder with an axon.yaml and a bare model file by path", async () => {
    const [record] = await axon.findInstalled("demo/tiny-cnn@1.0.0");
    await using byDir = await runtime.load(record!.path);
    assert.equal(byDir.name, "tiny-cnn");
    assert.equal(byDir.reference, undefined);
    await using byFile = await runtime.load(path.join(record!.path, "model.onnx"));
    assert.equal(byFile.name, "model");
    assert.deepEqual(byFile.inputs.map((i) => i.name), ["image"]);
  });

  it("says what is wrong with models it cannot load", async () => {
    await assert.rejects(runtime.load("/no/such/model.onnx"), isCode("MODEL_NOT_FOUND"));
    await assert.rejects(runtime.load("demo/nope@1"), (e: unknown) => (e as { code?: string }).code === "NOT_FOUND");
    await assert.rejects(runtime.load("demo/nope@1", { install: false }), isCode("MODEL_NOT_FOUND"));
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-bad-"));
    writeFileSync(path.join(dir, "model.onnx"), "this is not an onnx file");
    await assert.rejects(runtime.load(path.join(dir, "model.onnx")), (e: unknown) => isCode("MODEL_INVALID")(e) && /ONNX Runtime cannot load it/.test((e as Error).message));
    writeFileSync(path.join(dir, "weights.pt"), "x");
    // A bare .pt goes to the torch plugin: no spec.io to run it by (or no libtorch here).
    await assert.rejects(runtime.load(path.join(dir, "weights.pt")), (e: unknown) => isCode("MODEL_INVALID")(e) || isCode("PLUGIN_UNAVAILABLE")(e));
    writeFileSync(path.join(dir, "weights.bin"), "x");
    await assert.rejects(runtime.load(path.join(dir, "weights.bin")), isCode("PLUGIN_NOT_FOUND"));
    await assert.rejects(runtime.load(dir), (e: unknown) => isCode("MODEL_INVALID")(e) && /several model files/.test((e as Error).message));
    await assert.rejects(runtime.load(path.join(dir, "model.onnx"), { plugin: "nope" }), isCode("PLUGIN_NOT_FOUND"));
  });

  it("rejects a manifest that disagrees with the model file", async () => {
    const [record] = await axon.findInstalled("demo/mlp@1.0.0");
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-mismatch-"));
    copyFileSync(path.join(record!.path, "model.onnx"), path.join(dir, "model.onnx"));
    writeFileSync(path.join(dir, "axon.yaml"), [
      "apiVersion: axon.mlos.io/v1", "kind: Model", "metadata: { namespace: t, name: m, version: 1.0.0 }",
      "spec:", "  framework: { name: onnx }", "  format: { type: onnx, files: [{ path: model.onnx, size: 1, sha256: \"sha256:" + "0".repeat(64) + "\" }] }",
      "  io:", "    inputs: [{ name: x, dtype: int32, shape: [batch, 4] }]", "    outputs: [{ name: \"y\", dtype: float32, shape: [batch, 3] }]", "",
    ].join("\n"));
    await assert.rejects(runtime.load(dir), (e: unknown) => isCode("MODEL_INVALID")(e) && /input "x" is int32, the model file says float32/.test((e as Error).message));
  });

  it("checks every input against the signature before running, naming the input, the expected and the received", async () => {
    await using model = await runtime.load("demo/embedder@1", THREADS);
    await using mlp = await runtime.load("demo/mlp@1", THREADS);
    const ids = Tensor.int64([2, 5]);
    const cases: Array<[unknown, string, RegExp]> = [
      [{}, "INPUT_MISSING", /input "input_ids" is missing: the model expects int64 \[batch, seq\]/],
      [{ input_ids: ids, extra: ids }, "INPUT_UNKNOWN", /unknown input "extra"; the model's inputs are: input_ids/],
      [{ input_ids: Tensor.int32([2, 5]) }, "INPUT_DTYPE", /input "input_ids": expected dtype int64, received int32/],
      [{ input_ids: Tensor.int64([10]) }, "INPUT_RANK", /expected rank 2 \[batch, seq\], received rank 1 \[10\]/],
      [{ input_ids: { dtype: "int64", shape: [2, 5], data: new BigInt64Array(10) } }, "INPUT_INVALID", /must be a Tensor/],
      [null, "INPUT_INVALID", /inputs must be an object/],
      [[ids], "INPUT_INVALID", /inputs must be an object/],
      [ids, "INPUT_INVALID", /inputs must be an object/],
    ];
    for (const [inputs, code, message] of cases) {
      await assert.rejects(model.infer(inputs as Record<string, Tensor>), (e: unknown) => isCode(code)(e) && message.test((e as Error).message), `${code}: ${message}`);
    }
    const err = await mlp.infer({ x: Tensor.float32([2, 5]) }).catch((e: unknown) => e);
    assert.ok(err instanceof InputError);
    assert.equal(err.code, "INPUT_SHAPE");
    assert.equal(err.input, "x");
    assert.equal(err.expected, "[batch, 4]");
    assert.equal(err.received, "[2, 5]");
    const disposed = Tensor.float32([1, 4]);
    disposed.dispose();
    await assert.rejects(mlp.infer({ x: disposed }), isCode("INPUT_INVALID"));
  });

  it("never crashes on garbage: 500 random inputs each give an MlosError", async () => {
    await using model = await runtime.load("demo/mlp@1", THREADS);
    const r = mulberry32(7);
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
    const values = (): unknown => pick([
      undefined, null, 0, "x", [], {}, Symbol("s"), () => 1, new Float32Array(8), new ArrayBuffer(32),
      Tensor.float32([2, 4]), Tensor.float32([4]), Tensor.float64([2, 4]), Tensor.float32([2, 4, 1]), Tensor.string([2, 4]),
      Tensor.int64([2, 4]), Tensor.float32([0, 4]), Tensor.float32([2, 3]), { dtype: "float32", shape: [2, 4], data: new Float32Array(8) },
    ]);
    let failures = 0;
    for (let i = 0; i < 500; i++) {
      const inputs = pick<unknown>([values(), { x: values() }, { x: values(), y: values() }, { [pick(["x", "X", "", "__proto__"])]: values() }]);
      const opts = pick<unknown>([undefined, {}, { outputs: pick([["y"], ["nope"], "y", { y: values() }, null]) }, { timeoutMs: pick([-1, 0, 1e9]) }]);
      try {
        const out = await model.infer(inputs as Record<string, Tensor>, opts as never);
        assert.ok(out.y instanceof Tensor);
      } catch (e) {
        assert.ok(e instanceof MlosError, `iteration ${i}: not an MlosError: ${e}`);
        failures++;
      }
    }
    assert.ok(failures > 100, `most garbage is rejected (${failures})`);
    const { y } = await model.infer({ x: Tensor.float32([1, 4]) });
    assert.deepEqual(y!.shape, [1, 3], "the model still works");
  });

  it("selects outputs, writes into preallocated ones and rejects ones that do not fit", async () => {
    await using model = await runtime.load("demo/mlp@1", THREADS);
    const x = Tensor.float32([2, 4], randomFloats(8, 3));
    const all = await model.infer({ x });
    const named = await model.infer({ x }, { outputs: ["y"] });
    assert.deepEqual([...named.y!.data as Float32Array], [...all.y!.data as Float32Array]);
    await assert.rejects(model.infer({ x }, { outputs: ["nope"] }), isCode("OUTPUT_UNKNOWN"));
    await assert.rejects(model.infer({ x }, { outputs: ["y", "y"] }), isCode("OUTPUT_INVALID"));
    const y = Tensor.float32([2, 3]);
    const out = await model.infer({ x }, { outputs: { y } });
    assert.equal(out.y, y, "the caller's tensor is returned, written in place");
    assert.deepEqual([...y.data], [...all.y!.data as Float32Array]);
    await assert.rejects(model.infer({ x }, { outputs: { y: Tensor.float32([3, 3]) } }), (e: unknown) => isCode("OUTPUT_INVALID")(e) && /writes \[2, 3\]/.test((e as Error).message));
    await assert.rejects(model.infer({ x }, { outputs: { y: Tensor.float64([2, 3]) } }), isCode("OUTPUT_INVALID"));
  });

  it("reads pool inputs and writes pool outputs in place: the native pointers are the slices'", async () => {
    const native = loadNative();
    const pool = new TensorPool({ size: 8 << 20 });
    await using model = await runtime.load("demo/tiny-cnn@1", { ...THREADS, pool });
    const image = pool.tensor("float32", [2, 3, 224, 224]);
    (image.data as Float32Array).set(randomFloats(image.size, 11));
    const logits = pool.tensor("float32", [2, 10]);
    const explicit = await model.infer({ image }, { outputs: { logits }, debugAddresses: true });
    const a = (explicit as unknown as Record<symbol, NativeAddresses>)[ADDRESSES]!;
    assert.equal(a.inputs.image, native.addressOf(image.data), "ORT read the input's pool slice");
    assert.equal(a.outputs.logits, native.addressOf(logits.data), "ORT wrote the output's pool slice");
    // Without an output given, a known-shape output is allocated from the model's pool.
    const auto = await model.infer({ image }, { debugAddresses: true });
    const b = (auto as unknown as Record<symbol, NativeAddresses>)[ADDRESSES]!;
    assert.ok(pool.owns(auto.logits!.data as Float32Array), "the output lives in the pool");
    assert.equal(b.outputs.logits, native.addressOf(auto.logits!.data as Float32Array));
    assert.deepEqual([...auto.logits!.data as Float32Array], [...logits.data]);
    const before = pool.stats().live;
    auto.logits!.dispose();
    assert.equal(pool.stats().live, before - 1, "disposing the output returns its slice");
  });

  it("reruns the same pool tensors through a bound run with the same results as fresh calls", async () => {
    const pool = new TensorPool({ size: 1 << 20 });
    await using bound = await runtime.load("demo/mlp@1", { ...THREADS, runMode: "inline", pool });
    await using fresh = await runtime.load("demo/mlp@1", { ...THREADS, runMode: "async" });
    const x = pool.tensor("float32", [2, 4]);
    const y = pool.tensor("float32", [2, 3]);
    for (let i = 0; i < 20; i++) {
      (x.data as Float32Array).set(randomFloats(8, 500 + i)); // new data in the same slice
      const out = await bound.infer({ x }, { outputs: { y } });
      assert.equal(out.y, y);
      const expected = await fresh.infer({ x: Tensor.float32([2, 4], Float32Array.from(x.data as Float32Array)) });
      assert.deepEqual([...y.data], [...expected.y!.data as Float32Array], `call ${i}`);
    }
    // A disposed tensor's slice is never run over again: the call is rejected, not executed.
    x.dispose();
    await assert.rejects(bound.infer({ x }, { outputs: { y } }), isCode("INPUT_INVALID"));
    const x2 = pool.tensor("float32", [2, 4]);
    (x2.data as Float32Array).set(randomFloats(8, 9));
    const again = await bound.infer({ x: x2 }, { outputs: { y } });
    const expected = await fresh.infer({ x: Tensor.float32([2, 4], Float32Array.from(x2.data as Float32Array)) });
    assert.deepEqual([...again.y!.data as Float32Array], [...expected.y!.data as Float32Array]);
  });

  it("shares one loaded model between handles and unloads it with the last", async () => {
    const rt = new Runtime({ axon });
    const a = await rt.load("demo/mlp@1.0.0", THREADS);
    const b = await rt.load("demo/mlp@1.0.0", THREADS);
    assert.equal(rt.loaded().length, 1);
    assert.equal(rt.loaded()[0]!.refs, 2);
    await a.dispose();
    await a.dispose();
    assert.equal(rt.loaded()[0]!.refs, 1, "dispose is idempotent");
    await assert.rejects(a.infer({ x: Tensor.float32([1, 4]) }), isCode("MODEL_DISPOSED"));
    const { y } = await b.infer({ x: Tensor.float32([1, 4]) });
    assert.deepEqual(y!.shape, [1, 3]);
    {
      await using c = await rt.load("demo/mlp@1.0.0", THREADS);
      assert.equal(rt.loaded()[0]!.refs, 2);
      void c;
    }
    await b.dispose();
    assert.equal(rt.loaded().length, 0, "unloaded with the last handle");
    const other = await rt.load("demo/mlp@1.0.0", { intraOpThreads: 2 });
    assert.equal(rt.loaded().length, 1, "other options: another load");
    await other.dispose();
  });

  it("one-shot infer keeps the model loaded in the runtime", async () => {
    const rt = new Runtime({ axon });
    const x = Tensor.float32([1, 4], [1, 2, 3, 4]);
    const first = await rt.infer("demo/mlp@1", { x });
    const second = await rt.infer("demo/mlp@1", { x });
    assert.deepEqual([...second.y!.data as Float32Array], [...first.y!.data as Float32Array]);
    assert.equal(rt.loaded().length, 1);
    await rt.close();
    assert.equal(rt.loaded().length, 0);
  });

  it("runs a microsecond model inline once measured, and keeps async mode when asked", async () => {
    const rt = new Runtime({ axon });
    const auto = await rt.load("demo/mlp@1", THREADS);
    const x = Tensor.float32([1, 4]);
    for (let i = 0; i < 40; i++) await auto.infer({ x });
    const d = auto.describe() as { inline: boolean; decisions: number; measured: { runMicros: number; hopMicros: number } };
    assert.equal(d.decisions, 1);
    assert.equal(d.inline, d.measured.runMicros < d.measured.hopMicros, `decided from the measurement ${JSON.stringify(d.measured)}`);
    const forced = await rt.load("demo/mlp@1", { ...THREADS, runMode: "async" });
    for (let i = 0; i < 40; i++) await forced.infer({ x });
    assert.equal((forced.describe() as { inline: boolean }).inline, false);
    await auto.dispose();
    await forced.dispose();
  });

  it("serves many concurrent calls, each with its own answer", async () => {
    await using model = await runtime.load("demo/mlp@1", { ...THREADS, runMode: "async" });
    const xs = Array.from({ length: 32 }, (_, i) => Tensor.float32([1, 4], randomFloats(4, 100 + i)));
    const expected: number[][] = [];
    for (const x of xs) expected.push([...((await model.infer({ x })).y!.data as Float32Array)]);
    const got = await Promise.all(xs.map((x) => model.infer({ x })));
    got.forEach((g, i) => assert.deepEqual([...g.y!.data as Float32Array], expected[i]));
  });

  it("parity with onnxruntime-node on the demo models and real models from npm packages", async () => {
    const cases: Array<{ file: string; feeds: Record<string, Tensor> }> = [
      { file: (await axon.findInstalled("demo/mlp@1.0.0"))[0]!.path, feeds: { x: Tensor.float32([3, 4], randomFloats(12, 1)) } },
      { file: (await axon.findInstalled("demo/tiny-cnn@1.0.0"))[0]!.path, feeds: { image: Tensor.float32([1, 3, 224, 224], randomFloats(3 * 224 * 224, 2)) } },
      {
        file: (await axon.findInstalled("demo/embedder@1.0.0"))[0]!.path,
        feeds: { input_ids: Tensor.int64([2, 7], Array.from({ length: 14 }, (_, i) => BigInt((i * 37) % EMBEDDER.vocabSize))) },
      },
      {
        file: models["silero_vad.onnx"]!,
        feeds: { input: Tensor.float32([1, 512], randomFloats(512, 3, 0.5)), state: Tensor.float32([2, 1, 128], randomFloats(256, 4, 0.1)), sr: Tensor.int64([], [16000n]) },
      },
      { file: models["ch_PP-OCRv4_det_infer.onnx"]!, feeds: { x: Tensor.float32([1, 3, 96, 128], randomFloats(3 * 96 * 128, 5)) } },
      { file: models["ch_PP-OCRv4_rec_infer.onnx"]!, feeds: { x: Tensor.float32([1, 3, 48, 160], randomFloats(3 * 48 * 160, 6)) } },
      { file: models["ch_ppocr_mobile_v2.0_cls_infer.onnx"]!, feeds: { x: Tensor.float32([2, 3, 48, 192], randomFloats(2 * 3 * 48 * 192, 7)) } },
    ];
    for (const c of cases) {
      await using model = await runtime.load(c.file, THREADS);
      const ours = await model.infer(c.feeds);
      const onnxFile = model.path;
      const session = await ort.InferenceSession.create(onnxFile, { intraOpNumThreads: 1, interOpNumThreads: 1 });
      const feeds: Record<string, ort.Tensor> = {};
      for (const [k, t] of Object.entries(c.feeds)) feeds[k] = new ort.Tensor(t.dtype as "float32", t.data as Float32Array, [...t.shape]);
      const theirs = await session.run(feeds);
      assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort(), `${onnxFile}: output names`);
      for (const [k, t] of Object.entries(theirs)) {
        assert.deepEqual(ours[k]!.shape, t.dims, `${onnxFile} ${k}: shape`);
        assertClose(ours[k]!.data as ArrayBufferView, t.data as ArrayBufferView, `${path.basename(onnxFile)} ${k}`);
      }
      await session.release();
    }
  });

  it("stops a run on abort or timeout, and keeps the event loop free while a big model runs", async () => {
    await using det = await runtime.load(models["ch_PP-OCRv4_det_infer.onnx"]!, THREADS);
    const x = Tensor.float32([1, 3, 640, 640], randomFloats(3 * 640 * 640, 9));
    await assert.rejects(det.infer({ x }, { timeoutMs: 5 }), isCode("RUN_TIMEOUT"));
    const ac = new AbortController();
    const running = det.infer({ x }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 5);
    await assert.rejects(running, isCode("RUN_ABORTED"));
    const pre = new AbortController();
    pre.abort();
    await assert.rejects(det.infer({ x }, { signal: pre.signal }), isCode("RUN_ABORTED"));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = performance.now();
    await det.infer({ x });
    const ms = performance.now() - started;
    clearInterval(timer);
    assert.ok(ticks >= Math.min(5, ms / 10), `the event loop ticked ${ticks} times during a ${ms.toFixed(0)} ms run`);
  });

  it("feeds and fetches string tensors", async () => {
    const m = new OnnxModelBuilder({ opset: 17 });
    m.input("text", "string", ["n"]);
    m.node("Identity", ["text"], ["same"]);
    m.node("StringNormalizer", ["text"], ["upper"], { case_change_action: "UPPER", locale: "C" });
    m.output("same", "string", ["n"]);
    m.output("upper", "string", ["n"]);
    const file = path.join(mkdtempSync(path.join(tmpdir(), "mlos-strings-")), "strings.onnx");
    writeFileSync(file, m.toBytes());
    await using model = await runtime.load(file, THREADS);
    assert.deepEqual(model.inputs, [{ name: "text", dtype: "string", shape: ["n"] }]);
    const words = ["zero-copy", "", "ünïcode ✓", "mlos"];
    const out = await model.infer({ text: Tensor.string([4], words) });
    assert.deepEqual(out.same!.data, words);
    assert.deepEqual(out.upper!.data, ["ZERO-COPY", "", "üNïCODE ✓", "MLOS"], "the C locale upper-cases ASCII only");
    assert.deepEqual(out.upper!.shape, [4]);
    await assert.rejects(model.infer({ text: Tensor.float32([4]) }), isCode("INPUT_DTYPE"));
  });

  it("leaves no shared-memory segment behind when the process exits, normally or by an uncaught error", () => {
    const mlp = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "demo-models", "mlp");
    for (const ending of ["normally", "uncaught"]) {
      const code = [
        'import { load, Tensor, getDefaultPool } from "mlos";',
        `const model = await load(${JSON.stringify(mlp)});`,
        "const { y } = await model.infer({ x: Tensor.float32([2, 4]) });",
        "const pool = getDefaultPool();",
        'if (!pool.owns(y.data)) throw new Error("the output is not in the default pool");',
        "console.log(pool.name);",
        ending === "uncaught" ? 'setTimeout(() => { throw new Error("boom"); });' : "",
      ].join("\n");
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { cwd: path.join(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), encoding: "utf8" });
      const name = r.stdout.trim();
      assert.match(name, /^\/mlos-\d+-\d+$/, `the child printed its pool (${r.stderr})`);
      assert.equal(r.status, ending === "uncaught" ? 1 : 0, r.stderr);
      if (ending === "uncaught") assert.match(r.stderr, /boom/);
      assert.equal(existsSync(path.join("/dev/shm", name)), false, `${name} is gone after the child exited ${ending}`);
    }
  });

  it("loads models by the library's own entry points", async () => {
    const { load, infer } = await import("mlos");
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-entry-"));
    mkdirSync(path.join(dir, "m"));
    const [record] = await axon.findInstalled("demo/mlp@1.0.0");
    copyFileSync(path.join(record!.path, "model.onnx"), path.join(dir, "m", "model.onnx"));
    const model: Model = await load(path.join(dir, "m"));
    assert.deepEqual(model.inputs.map((i) => i.shape), [["batch", 4]], "the session's symbolic dims");
    const out = await infer(path.join(dir, "m"), { x: Tensor.float32([1, 4]) });
    assert.deepEqual(out.y!.shape, [1, 3]);
    await model.dispose();
  });
});

describe("a shared ONNX Runtime thread budget", { skip }, () => {
  it("runs every session on one pool of MLOS_ORT_THREADS threads, with the same results", () => {
    const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
    const mlp = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "demo-models", "mlp");
    const cnn = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "demo-models", "tiny-cnn");
    const code = [
      'import { load, Tensor } from "mlos";',
      'import { loadOrt } from "./dist/bindings/native.js";',
      `const a = await load(${JSON.stringify(mlp)}, { intraOpThreads: 7 });`,
      `const b = await load(${JSON.stringify(cnn)});`,
      "const { y } = await a.infer({ x: Tensor.float32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]) });",
      "const { logits } = await b.infer({ image: Tensor.float32([1, 3, 224, 224]) });",
      "console.log(JSON.stringify({ threads: loadOrt().ort.globalThreads, y: [...y.data], logits: logits.shape }));",
    ].join("\n");
    const run = (env: Record<string, string>) => {
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { cwd: root, encoding: "utf8", env: { ...process.env, ...env } });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { threads: number; y: number[]; logits: number[] };
    };
    const shared = run({ MLOS_ORT_THREADS: "2" });
    const own = run({ MLOS_ORT_THREADS: "" });
    assert.equal(shared.threads, 2);
    assert.equal(own.threads, 0);
    assert.deepEqual(shared.y, own.y);
    assert.deepEqual(shared.logits, [1, 10]);
  });
});
