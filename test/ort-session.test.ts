// ONNX Runtime sessions through the native addon's C API binding (native/src/ort/ort_session.cc),
// against onnxruntime-node on the demo models that `npm run build` writes to dist/demo-models.
import assert from "node:assert/strict";
import { pbkdf2 } from "node:crypto";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import {
  loadNative,
  ortLoadError,
  tryLoadOrt,
  type NativeOrtSession,
  type NativeOrtTensor,
  type NativeOrtTensorArg,
} from "../bindings/native.js";
import { EMBEDDER, MLP, TINY_CNN, mulberry32 } from "../src/tools/make-demo-models.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const modelPath = (name: string): string => path.join(here, "..", "demo-models", name, "model.onnx");
const THREADS = { intraOpThreads: 1, interOpThreads: 1 } as const;

const native = loadNative();
const addon = tryLoadOrt();
const skip = addon ? false : `ONNX Runtime is unavailable: ${ortLoadError()?.message ?? "unknown reason"}`;

function randomFloats(n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
  return a;
}

function randomIds(n: number, seed: number): BigInt64Array {
  const r = mulberry32(seed);
  const a = new BigInt64Array(n);
  for (let i = 0; i < n; i++) a[i] = BigInt(Math.floor(r() * EMBEDDER.vocabSize));
  return a;
}

function bytesOf(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  return data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function floatsOf(t: NativeOrtTensor): Float32Array {
  assert.equal(t.dtype, "float32");
  const b = bytesOf(t.data);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

interface Case {
  model: string;
  input: string;
  output: string;
  feed: (seed: number) => NativeOrtTensorArg;
}

const CASES: Case[] = [
  {
    model: "mlp",
    input: "x",
    output: "y",
    feed: (seed) => ({ dtype: "float32", shape: [2, MLP.inFeatures], data: randomFloats(2 * MLP.inFeatures, seed) }),
  },
  {
    model: "tiny-cnn",
    input: "image",
    output: "logits",
    feed: (seed) => {
      const shape = [2, TINY_CNN.channels, TINY_CNN.height, TINY_CNN.width];
      return { dtype: "float32", shape, data: randomFloats(shape.reduce((a, b) => a * b, 1), seed) };
    },
  },
  {
    model: "embedder",
    input: "input_ids",
    output: "embedding",
    feed: (seed) => ({ dtype: "int64", shape: [2, 9], data: randomIds(18, seed) }),
  },
];

function toOrtTensor(t: NativeOrtTensorArg): ort.Tensor {
  const d = t.data;
  const view =
    t.dtype === "int64"
      ? new BigInt64Array(bytesOf(d).slice().buffer)
      : new Float32Array(bytesOf(d).slice().buffer);
  return new ort.Tensor(t.dtype as "float32" | "int64", view, [...t.shape]);
}

describe("OrtSession (ONNX Runtime C API)", { skip }, () => {
  const { OrtSession, ShmPool } = addon!;
  const open = (model: string): NativeOrtSession => new OrtSession(modelPath(model), THREADS);

  it("loads the ONNX Runtime library that onnxruntime-node ships", () => {
    assert.match(addon!.ort.version, /^1\.\d+\.\d+/);
    assert.ok(addon!.ort.apiVersion >= 17 && addon!.ort.apiVersion <= 29, `apiVersion ${addon!.ort.apiVersion}`);
    assert.ok(addon!.ort.path.endsWith("libonnxruntime.so.1"));
  });

  it("reports the demo models' inputs and outputs with symbolic dimensions", () => {
    const mlp = open("mlp");
    assert.deepEqual(JSON.parse(JSON.stringify(mlp.inputs)), [
      { name: "x", type: "tensor", dtype: "float32", shape: [-1, MLP.inFeatures], symbolicShape: ["batch", null] },
    ]);
    assert.deepEqual(JSON.parse(JSON.stringify(mlp.outputs)), [
      { name: "y", type: "tensor", dtype: "float32", shape: [-1, MLP.classes], symbolicShape: ["batch", null] },
    ]);
    const cnn = open("tiny-cnn");
    assert.deepEqual(cnn.inputs.map((i) => [i.name, i.dtype, [...i.shape], [...i.symbolicShape]]), [
      ["image", "float32", [-1, TINY_CNN.channels, TINY_CNN.height, TINY_CNN.width], ["batch", null, null, null]],
    ]);
    assert.deepEqual(cnn.outputs.map((o) => [o.name, o.dtype, [...o.shape]]), [["logits", "float32", [-1, TINY_CNN.classes]]]);
    const emb = open("embedder");
    assert.deepEqual(emb.inputs.map((i) => [i.name, i.dtype, [...i.shape], [...i.symbolicShape]]), [
      ["input_ids", "int64", [-1, -1], ["batch", "seq"]],
    ]);
    assert.deepEqual(emb.outputs.map((o) => [o.name, o.dtype, [...o.shape], [...o.symbolicShape]]), [
      ["embedding", "float32", [-1, EMBEDDER.dim], ["batch", null]],
    ]);
    assert.ok(Object.isFrozen(mlp.inputs) && Object.isFrozen(mlp.inputs[0]));
    for (const s of [mlp, cnn, emb]) s.release();
  });

  for (const c of CASES) {
    it(`${c.model}: bit-identical to onnxruntime-node (batch 2, intra 1, inter 1), run and runSync`, async () => {
      const ref = await ort.InferenceSession.create(modelPath(c.model), {
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        graphOptimizationLevel: "all",
      });
      const s = new OrtSession(modelPath(c.model), { ...THREADS, graphOptimizationLevel: "all" });
      try {
        for (const seed of [1, 2, 3]) {
          const feed = c.feed(seed);
          const expected = (await ref.run({ [c.input]: toOrtTensor(feed) }))[c.output]!;
          const got = (await s.run({ [c.input]: feed }))[c.output]!;
          assert.deepEqual(got.shape, [...expected.dims]);
          assert.equal(got.dtype, expected.type);
          const want = new Uint8Array((expected.data as Float32Array).buffer, (expected.data as Float32Array).byteOffset, (expected.data as Float32Array).byteLength);
          assert.ok(Buffer.from(bytesOf(got.data)).equals(Buffer.from(want)), `${c.model} seed ${seed}: run differs`);
          const sync = s.runSync({ [c.input]: feed })[c.output]!;
          assert.ok(Buffer.from(bytesOf(sync.data)).equals(Buffer.from(want)), `${c.model} seed ${seed}: runSync differs`);
        }
      } finally {
        s.release();
        await ref.release();
      }
    });
  }

  it("zero copy: input in a ShmPool slice, output written in place into a preallocated slice", async () => {
    const pool = new ShmPool({ size: 1 << 20 });
    const s = open("mlp");
    try {
      const inBuf = pool.alloc(2 * MLP.inFeatures * 4);
      new Float32Array(inBuf).set(randomFloats(2 * MLP.inFeatures, 42));
      const outBuf = pool.alloc(2 * MLP.classes * 4);
      const outAddr = native.addressOf(outBuf);
      const x: NativeOrtTensorArg = { dtype: "float32", shape: [2, MLP.inFeatures], data: inBuf };
      const expected = floatsOf(s.runSync({ x }).y!);

      const r = await s.run({ x }, null, { y: { dtype: "float32", shape: [2, MLP.classes], data: outBuf } }, { debugAddresses: true });
      // The pointers inside the OrtValues ORT read and wrote are the slices.
      assert.equal(r.inputAddresses?.x, native.addressOf(inBuf));
      assert.equal(r.y!.address, outAddr);
      assert.ok(pool.offsetOf(inBuf) >= 0 && pool.offsetOf(outBuf) >= 0); // offsetOf throws for non-pool memory
      assert.equal(r.y!.data, outBuf, "the result carries the caller's buffer");
      assert.equal(native.addressOf(r.y!.data), outAddr);
      assert.ok(native.addressOf(r.y!.data) >= native.addressOf(pool.view(0, 1)));
      assert.deepEqual(r.y!.shape, [2, MLP.classes]);
      assert.deepEqual(new Float32Array(outBuf), expected);

      // An output ORT allocates is handed over as is: the ArrayBuffer is ORT's own memory.
      const own = s.runSync({ x }, null, null, { debugAddresses: true });
      assert.equal(native.addressOf(own.y!.data), own.y!.address);
      assert.deepEqual(floatsOf(own.y!), expected);

      // The same with typed-array views at an offset inside one slice, on the inline path.
      const big = pool.alloc(4096);
      const xView = new Float32Array(big, 64, 2 * MLP.inFeatures);
      xView.set(new Float32Array(inBuf));
      const yView = new Float32Array(big, 1024, 2 * MLP.classes);
      const r2 = s.runSync({ x: { dtype: "float32", shape: [2, MLP.inFeatures], data: xView } }, ["y"], {
        y: { dtype: "float32", shape: [2, MLP.classes], data: yView },
      });
      assert.equal(r2.y!.data, yView);
      assert.equal(r2.inputAddresses, undefined);
      assert.equal(native.addressOf(r2.y!.data), native.addressOf(big) + 1024n);
      assert.deepEqual(yView, expected);

      // ORT reads the slice itself: change it in place and the result follows.
      new Float32Array(inBuf).fill(0);
      const zero = await s.run({ x }, null, { y: { dtype: "float32", shape: [2, MLP.classes], data: outBuf } });
      assert.equal(native.addressOf(zero.y!.data), outAddr);
      assert.notDeepEqual(new Float32Array(outBuf), expected);
    } finally {
      s.release();
      pool.close();
    }
  });

  it("checks arguments before wrapping memory: byte length, names, dtype", () => {
    const s = open("mlp");
    const data = new Float32Array(8);
    const bad = (fn: () => unknown, re: RegExp) =>
      assert.throws(fn, (e: unknown) => {
        assert.ok(e instanceof TypeError, String(e));
        assert.equal((e as { code?: string }).code, "BAD_ARGUMENT");
        assert.match((e as Error).message, re);
        return true;
      });
    bad(() => s.runSync({ x: { dtype: "float32", shape: [2, 3], data } }), /input "x": data has 32 bytes, float32 \[2,3\] needs 24/);
    bad(() => s.run({ x: { dtype: "float32", shape: [3, 4], data } }), /data has 32 bytes.*needs 48/);
    bad(() => s.runSync({ nope: { dtype: "float32", shape: [2, 4], data } }), /unknown input "nope".*inputs are: x/);
    bad(() => s.runSync({ x: { dtype: "float32", shape: [2, 4], data } }, ["z"]), /unknown output "z"/);
    bad(() => s.runSync({ x: { dtype: "int32", shape: [2, 4], data } }), /expects dtype float32, got int32/);
    bad(() => s.runSync({ x: { dtype: "float31" as "float32", shape: [2, 4], data } }), /unknown dtype "float31"/);
    bad(() => s.runSync({ x: { dtype: "float32", shape: [2, -4], data } }), /shape\[1\] must be a non-negative integer/);
    bad(() => s.runSync({ x: { dtype: "float32", shape: [2, 4], data: [1, 2] as unknown as ArrayBuffer } }), /data must be an ArrayBuffer/);
    bad(
      () => s.runSync({ x: { dtype: "float32", shape: [2, 4], data } }, null, { y: { dtype: "float32", shape: [2, 3], data: new Float32Array(5) } }),
      /preallocated output "y": data has 20 bytes/,
    );
    bad(() => (s.run as (...a: unknown[]) => unknown).call({}, {}), /not an OrtSession/);
    s.release();
  });

  it("reports ORT's own failures as ORT_FAIL naming the call", async () => {
    const s = open("mlp");
    await assert.rejects(s.run({ x: { dtype: "float32", shape: [8], data: new Float32Array(8) } }), (e: unknown) => {
      assert.equal((e as { code?: string }).code, "ORT_FAIL");
      assert.match((e as Error).message, /^Run failed: .*rank/);
      return true;
    });
    assert.throws(() => s.runSync({}), (e: unknown) => (e as { code?: string }).code === "ORT_FAIL" && /^Run failed/.test((e as Error).message));
    assert.throws(
      () => new OrtSession(path.join(here, "no-such-model.onnx")),
      (e: unknown) => (e as { code?: string }).code === "ORT_FAIL" && /^CreateSession failed/.test((e as Error).message),
    );
    assert.throws(() => new OrtSession(modelPath("mlp"), { graphOptimizationLevel: "max" as "all" }), /graphOptimizationLevel/);
    s.release();
  });

  it("many concurrent runs on one session all give the right answers", async () => {
    for (const c of [CASES[0]!, CASES[2]!]) {
      const s = open(c.model);
      try {
        const feeds = Array.from({ length: 64 }, (_, i) => c.feed(100 + i));
        const expected = feeds.map((f) => Buffer.from(bytesOf(s.runSync({ [c.input]: f })[c.output]!.data)));
        const results = await Promise.all(feeds.map((f) => s.run({ [c.input]: f })));
        results.forEach((r, i) => assert.ok(Buffer.from(bytesOf(r[c.output]!.data)).equals(expected[i]!), `${c.model} run ${i}`));
      } finally {
        s.release();
      }
    }
  });

  it("release(): runs in flight finish, later calls throw CLOSED", async () => {
    const s = open("mlp");
    const feed = CASES[0]!.feed(7);
    const pending = Array.from({ length: 8 }, () => s.run({ x: feed }));
    s.release();
    assert.ok(s.isReleased());
    for (const r of await Promise.all(pending)) assert.deepEqual(r.y!.shape, [2, MLP.classes]);
    assert.throws(() => s.runSync({ x: feed }), (e: unknown) => (e as { code?: string }).code === "CLOSED");
    s.release(); // twice is fine
  });

  it("terminate() stops runs that have not finished (ORT_TERMINATED); the session stays usable", async () => {
    const s = open("mlp");
    try {
      // Keep libuv's default 4 worker threads busy so that the run is still queued when terminate() comes.
      const busy = Array.from({ length: 4 }, () => new Promise<void>((res) => pbkdf2("x", "y", 300_000, 32, "sha256", () => res())));
      const run = s.run({ x: CASES[0]!.feed(1) });
      assert.equal(s.terminate(), 1);
      await assert.rejects(run, (e: unknown) => (e as { code?: string }).code === "ORT_TERMINATED");
      await Promise.all(busy);
      const ok = await s.run({ x: CASES[0]!.feed(1) });
      assert.deepEqual(ok.y!.shape, [2, MLP.classes]);
      assert.equal(s.terminate(), 0);
    } finally {
      s.release();
    }
  });

  it("a run over its timeoutMs rejects with ORT_TIMEOUT", async () => {
    const s = open("tiny-cnn");
    try {
      // A run long enough (tens of ms) that the watchdog thread gets a core before it ends, even on
      // a loaded 2-core machine (with 32 images it once finished first there).
      const shape = [128, TINY_CNN.channels, TINY_CNN.height, TINY_CNN.width];
      const image: NativeOrtTensorArg = { dtype: "float32", shape, data: randomFloats(shape.reduce((a, b) => a * b, 1), 5) };
      await assert.rejects(s.run({ image }, null, null, { timeoutMs: 0.001 }), (e: unknown) => {
        assert.equal((e as { code?: string }).code, "ORT_TIMEOUT", String(e));
        return true;
      });
      const ok = await s.run({ image }, null, null, { timeoutMs: 60_000 });
      assert.deepEqual(ok.logits!.shape, [128, TINY_CNN.classes]);
    } finally {
      s.release();
    }
  });
});
