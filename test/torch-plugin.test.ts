// The torch plugin: TorchScript models through libtorch (native/torch, build/Release/mlos_torch.node).
// The models are made at test time by build/torch/bin/make_test_model (libtorch alone, no Python):
// linear.pt, forward(x) = relu(x @ w + b), and pair.pt, forward(x) = (relu(h), h.sum(1)), with the
// weights below. Runs go through `new Runtime().load(folder with axon.yaml)`; zero copy is proven by
// native addresses and by a method that writes into its input. Without the addon, the plugin
// reports why and the rest is skipped.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { ADDRESSES, MlosError, Runtime, Tensor, TensorPool, type Model, type NativeAddresses } from "mlos";
import { tryLoadNative } from "../bindings/native.js";
import { loadTorch, TORCH_DTYPES, torchLoadError, torchTestModelTool, tryLoadTorch } from "../bindings/torch.js";
import { TorchPlugin } from "../src/plugins/torch/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const pluginModule = pathToFileURL(path.join(here, "..", "src", "plugins", "torch", "index.js")).href;
const libraryModule = pathToFileURL(path.join(here, "..", "src", "index.js")).href;

const availability = new TorchPlugin().availability();
const tool = torchTestModelTool();
const skip = !availability.available
  ? `the torch plugin is unavailable: ${availability.reason}`
  : !tryLoadTorch()
    ? `the torch addon does not load: ${torchLoadError()?.message}`
    : !tool
      ? "build/torch/bin/make_test_model was not built (npm run build:native with libtorch)"
      : false;

const isCode = (code: string, message?: RegExp) => (e: unknown) => e instanceof MlosError && e.code === code && (!message || message.test(e.message));

// The weights make_test_model gives both models (native/torch/make_test_model.cc).
const W = Array.from({ length: 4 }, (_, i) => Array.from({ length: 3 }, (_, j) => (((3 * i + 5 * j) % 7) - 3) / 4));
const B = [-0.5, 0, 0.5];

/** x @ w + b for x [batch, 4], in float64 (exact here: the values are quarters and halves). */
function affine(x: Float32Array, batch: number): number[][] {
  return Array.from({ length: batch }, (_, r) => B.map((b, j) => b + W.reduce((s, row, i) => s + x[r * 4 + i]! * row[j]!, 0)));
}

function inputs(batch: number, seed = 1): Float32Array {
  const x = new Float32Array(batch * 4);
  for (let i = 0; i < x.length; i++) x[i] = (((i * 7 + seed * 3) % 11) - 5) / 2;
  return x;
}

function manifest(entry: string, io: string[], extra: string[] = []): string {
  return [
    "apiVersion: axon.mlos.io/v1", "kind: Model", "metadata: { namespace: test, name: torch-model, version: 1.0.0 }",
    "spec:", "  framework: { name: pytorch }", `  format: { type: torchscript, entrypoint: ${entry}, files: [{ path: ${entry} }] }`,
    ...io, ...extra, "",
  ].join("\n");
}

const LINEAR_IO = ["  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 4] }]", "    outputs: [{ name: y, dtype: float32, shape: [batch, 3] }]"];
const PAIR_IO = ["  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 4] }]", "    outputs: [{ name: y, dtype: float32, shape: [batch, 3] }, { name: s, dtype: float32, shape: [batch] }]"];

describe("torch plugin availability", () => {
  it("reports whether it can run, and why not", () => {
    const p = new TorchPlugin();
    assert.equal(p.id, "torch");
    assert.deepEqual([...p.frameworks], ["pytorch", "torch"]);
    assert.deepEqual([...p.formats], ["torchscript", "pt"]);
    if (!availability.available) assert.match(availability.reason, /apt-get install libtorch-dev && npm run build:native/);
    assert.ok(new Runtime().plugins().some((x) => x.id === "torch"), "the runtime registers it");
  });

  it("without the addon, says what to install and run", () => {
    const script = [
      `const { TorchPlugin } = await import(${JSON.stringify(pluginModule)});`,
      "const p = new TorchPlugin();",
      "const a = p.availability();",
      "let code; try { await p.load({ dir: undefined, entrypoint: '/x.pt', format: 'torchscript', manifest: { spec: { io: { inputs: [{ name: 'x', dtype: 'float32', shape: [1] }], outputs: [{ name: 'y', dtype: 'float32', shape: [1] }] } } } }, {}); } catch (e) { code = e.code; }",
      "console.log(JSON.stringify({ a, code, version: p.version }));",
    ].join("\n");
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, MLOS_TORCH_PATH: path.join(tmpdir(), "no-such-dir", "mlos_torch.node") } });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { a: { available: boolean; reason?: string }; code: string; version: string };
    assert.equal(out.a.available, false);
    assert.match(out.a.reason!, /torch addon is not built.*no-such-dir.*apt-get install libtorch-dev && npm run build:native/);
    assert.equal(out.code, "PLUGIN_UNAVAILABLE");
    assert.equal(out.version, "unavailable");
  });

  it("with an addon that does not load, fails the load with PLUGIN_UNAVAILABLE and reports why from then on", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-torch-broken-"));
    const file = path.join(dir, "mlos_torch.node");
    writeFileSync(file, "not a shared library");
    const script = [
      `const { TorchPlugin } = await import(${JSON.stringify(pluginModule)});`,
      "const p = new TorchPlugin();",
      "const before = p.availability();",
      "let error; try { await p.load({ dir: undefined, entrypoint: '/x.pt', format: 'torchscript', manifest: { spec: { io: { inputs: [{ name: 'x', dtype: 'float32', shape: [1] }], outputs: [{ name: 'y', dtype: 'float32', shape: [1] }] } } } }, {}); } catch (e) { error = { code: e.code, message: e.message }; }",
      "console.log(JSON.stringify({ before, error, afterwards: p.availability() }));",
    ].join("\n");
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, MLOS_TORCH_PATH: file } });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { before: { available: boolean }; error: { code: string; message: string }; afterwards: { available: boolean; reason: string } };
    assert.equal(out.before.available, true, "the file is there: it may load");
    assert.equal(out.error.code, "PLUGIN_UNAVAILABLE");
    assert.match(out.error.message, /failed to load.*npm run build:native/);
    assert.equal(out.afterwards.available, false);
    assert.match(out.afterwards.reason, /failed to load/);
  });

  it("loading the library and asking every plugin about itself maps no libtorch", () => {
    const script = [
      `const { Runtime } = await import(${JSON.stringify(libraryModule)});`,
      "const r = new Runtime();",
      "const seen = r.plugins().map((p) => [p.id, p.version, p.availability().available]);",
      "const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8');",
      "console.log(JSON.stringify({ seen, libtorch: /libtorch|libc10/.test(maps) }));",
    ].join("\n");
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { seen: Array<[string, string, boolean]>; libtorch: boolean };
    assert.ok(out.seen.some(([id]) => id === "torch"));
    assert.equal(out.libtorch, false, "libtorch is mapped only by a torch model's load()");
  });
});

describe("torch plugin: TorchScript models", { skip }, () => {
  let dir: string;
  let runtime: Runtime;
  let linear: string;
  let pair: string;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "mlos-torch-"));
    const models = path.join(dir, "models");
    mkdirSync(models);
    const r = spawnSync(tool!, [models], { encoding: "utf8" });
    assert.equal(r.status, 0, `make_test_model failed: ${r.stderr}`);
    linear = path.join(dir, "linear");
    pair = path.join(dir, "pair");
    for (const [folder, file, io] of [[linear, "linear.pt", LINEAR_IO], [pair, "pair.pt", PAIR_IO]] as const) {
      mkdirSync(folder);
      copyFileSync(path.join(models, file), path.join(folder, "model.pt"));
      writeFileSync(path.join(folder, "axon.yaml"), manifest("model.pt", [...io]));
    }
    runtime = new Runtime();
  });

  after(async () => {
    await runtime?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function folder(name: string, yaml: string, model?: string | Buffer): string {
    const d = path.join(dir, name);
    mkdirSync(d);
    if (model === undefined) copyFileSync(path.join(linear, "model.pt"), path.join(d, "model.pt"));
    else writeFileSync(path.join(d, "model.pt"), model);
    writeFileSync(path.join(d, "axon.yaml"), yaml);
    return d;
  }

  it("loads a TorchScript model folder and infers what the weights compute", async () => {
    await using model = await runtime.load(linear, { intraOpThreads: 1 });
    assert.equal(runtime.loaded().find((m) => m.path.endsWith(path.join("linear", "model.pt")))?.plugin, "torch");
    assert.deepEqual(model.inputs, [{ name: "x", dtype: "float32", shape: ["batch", 4] }]);
    assert.deepEqual(model.outputs, [{ name: "y", dtype: "float32", shape: ["batch", 3] }]);
    assert.ok(model.memoryBytes >= (12 + 3) * 4, "the parameters' bytes");
    for (const batch of [1, 3, 8]) {
      const x = inputs(batch, batch);
      const { y } = await model.infer({ x: Tensor.float32([batch, 4], x) });
      assert.equal(y!.dtype, "float32");
      assert.deepEqual(y!.shape, [batch, 3]);
      const expected = affine(x, batch).flat().map((v) => Math.max(0, v));
      assert.deepEqual(Array.from(y!.data as Float32Array), expected, `batch ${batch}`);
    }
    assert.equal(typeof (model.describe().methods as string[])[0], "string");
  });

  it("runs inline and on worker threads alike, many at once", async () => {
    await using inline = await runtime.load(linear, { runMode: "inline" });
    await using async = await runtime.load(linear, { runMode: "async" });
    const x = inputs(4, 9);
    const expected = affine(x, 4).flat().map((v) => Math.max(0, v));
    const a = await inline.infer({ x: Tensor.float32([4, 4], x) });
    assert.deepEqual(Array.from(a.y!.data as Float32Array), expected);
    const runs = await Promise.all(Array.from({ length: 16 }, (_, k) => async.infer({ x: Tensor.float32([4, 4], inputs(4, k)) })));
    runs.forEach((r, k) => assert.deepEqual(Array.from(r.y!.data as Float32Array), affine(inputs(4, k), 4).flat().map((v) => Math.max(0, v)), `run ${k}`));
    assert.equal(async.describe().runMode, "async");
  });

  it("hands libtorch the inputs' own memory and returns outputs over libtorch's (zero copy)", async (t) => {
    const native = tryLoadNative();
    if (!native) return t.skip("no mlos_native addon for addressOf");
    const pool = new TensorPool({ size: 1 << 20 });
    try {
      await using model = await runtime.load(linear, { runMode: "async" });
      using x = pool.tensor("float32", [2, 4]);
      (x.data as Float32Array).set(inputs(2));
      const out = await model.infer({ x }, { debugAddresses: true });
      const a = (out as unknown as Record<symbol, NativeAddresses>)[ADDRESSES]!;
      assert.equal(a.inputs.x, native.addressOf(x.data), "torch::from_blob over the pool slice");
      assert.equal(a.outputs.y, native.addressOf(out.y!.data as Float32Array), "the output's buffer is the torch tensor's memory");
      assert.deepEqual(Array.from(out.y!.data as Float32Array), affine(inputs(2), 2).flat().map((v) => Math.max(0, v)));
      // Inline too.
      await using inline = await runtime.load(linear, { runMode: "inline" });
      const b = (await inline.infer({ x }, { debugAddresses: true })) as unknown as Record<symbol, NativeAddresses>;
      assert.equal(b[ADDRESSES]!.inputs.x, native.addressOf(x.data));
    } finally {
      pool.close();
    }
  });

  it("a method that writes into its input writes into the caller's buffer", async () => {
    const addon = loadTorch();
    const m = await addon.TorchModule.open(path.join(linear, "model.pt"));
    try {
      assert.deepEqual(m.methods.map((x) => x.name).sort(), ["add_one_", "echo", "forward"]);
      const x = new Float32Array([1, 2, 3]);
      const r = m.forwardSync([{ dtype: "float32", shape: [3], data: x }], { method: "add_one_", debugAddresses: true });
      assert.deepEqual(Array.from(x), [2, 3, 4], "the caller's Float32Array was changed in place");
      assert.deepEqual(Array.from(new Float32Array(r[0]!.data)), [2, 3, 4]);
      assert.notEqual(r[0]!.address, r.inputAddresses![0], "an output that is the input is copied: each buffer owns its bytes");
      const y = new Float32Array([5]);
      await m.forward([{ dtype: "float32", shape: [1], data: y }], { method: "add_one_" });
      assert.deepEqual(Array.from(y), [6], "on a worker thread too");
      assert.throws(() => m.forwardSync([{ dtype: "float32", shape: [3], data: x }], { method: "nope" }), (e: unknown) => (e as { code?: string }).code === "BAD_ARGUMENT" && /no method "nope"/.test((e as Error).message));
      assert.throws(() => m.forwardSync([{ dtype: "float32", shape: [2], data: x }]), (e: unknown) => e instanceof TypeError && /12 bytes, float32 \[2\] needs 8/.test(e.message));
      assert.throws(() => m.forwardSync([{ dtype: "float32", shape: [1], data: new Uint8Array(x.buffer, 1, 4) }]), /not aligned/);
      assert.throws(() => m.forwardSync([]), (e: unknown) => e instanceof RangeError && /takes 1 input/.test(e.message));
      assert.throws(() => addon.TorchModule.prototype.forwardSync.call({}, []), (e: unknown) => e instanceof TypeError && /not a TorchModule/.test(e.message));
    } finally {
      m.release();
    }
    assert.throws(() => m.forwardSync([]), (e: unknown) => (e as { code?: string }).code === "CLOSED");
    assert.match(addon.torchInfo().version, /^\d+\.\d+/);
  });

  it("takes and returns every dtype it supports, bytes unchanged", async () => {
    const m = await loadTorch().TorchModule.open(path.join(linear, "model.pt"));
    try {
      const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0x3f);
      for (const dtype of TORCH_DTYPES) {
        const t = dtype === "bool" ? Tensor.bool([2, 3], [true, false, true, true, false, false]) : Tensor.fromBytes(dtype, [2, 3], bytes(6 * Tensor.zeros(dtype, [1]).byteLength));
        const src = t.data as ArrayBufferView;
        const [r] = await m.forward([{ dtype, shape: t.shape, data: src }], { method: "echo" });
        assert.equal(r!.dtype, dtype);
        assert.deepEqual(r!.shape, [2, 3]);
        assert.ok(Buffer.from(r!.data).equals(Buffer.from(src.buffer, src.byteOffset, src.byteLength)), `${dtype} round trip`);
      }
    } finally {
      m.release();
    }
  });

  it("maps a tuple result to the manifest's outputs in order", async () => {
    await using model = await runtime.load(pair);
    const x = inputs(3, 5);
    const h = affine(x, 3);
    const out = await model.infer({ x: Tensor.float32([3, 4], x) });
    assert.deepEqual(Array.from(out.y!.data as Float32Array), h.flat().map((v) => Math.max(0, v)));
    assert.deepEqual(out.s!.shape, [3]);
    assert.deepEqual(Array.from(out.s!.data as Float32Array), h.map((row) => row.reduce((a, b) => a + b, 0)));
    const only = await model.infer({ x: Tensor.float32([3, 4], x) }, { outputs: ["s"] });
    assert.deepEqual(Object.keys(only), ["s"]);
    // Into a tensor the caller gives (the one copy: libtorch cannot write into given memory).
    const s = Tensor.float32([3]);
    const pre = await model.infer({ x: Tensor.float32([3, 4], x) }, { outputs: { s } });
    assert.equal(pre.s, s);
    assert.deepEqual(Array.from(s.data), Array.from(out.s!.data as Float32Array));
  });

  it("rejects inputs that do not fit the declared signature before anything runs", async () => {
    await using model: Model = await runtime.load(linear);
    await assert.rejects(model.infer({ x: Tensor.float32([2, 5]) }), isCode("INPUT_SHAPE", /dimension 1 must be 4, received 5/));
    await assert.rejects(model.infer({ x: Tensor.float64([2, 4]) }), isCode("INPUT_DTYPE"));
    await assert.rejects(model.infer({ x: Tensor.float32([8]) }), isCode("INPUT_RANK"));
    await assert.rejects(model.infer({}), isCode("INPUT_MISSING"));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(model.infer({ x: Tensor.float32([1, 4]) }, { signal: ac.signal }), isCode("RUN_ABORTED"));
  });

  it("reports a manifest that does not match the model when it runs", async () => {
    const wrongIn = folder("wrong-in", manifest("model.pt", ["  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 5] }]", "    outputs: [{ name: y, dtype: float32, shape: [batch, 3] }]"]));
    await using a = await runtime.load(wrongIn);
    await assert.rejects(a.infer({ x: Tensor.float32([2, 5]) }), isCode("RUN_FAILED", /libtorch: .*shapes cannot be multiplied \(2x5 and 4x3\)/));
    const wrongOut = folder("wrong-out", manifest("model.pt", ["  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 4] }]", "    outputs: [{ name: y, dtype: float32, shape: [batch, 2] }]"]));
    await using b = await runtime.load(wrongOut);
    await assert.rejects(b.infer({ x: Tensor.float32([2, 4]) }), isCode("RUN_FAILED", /output 0 \("y"\): spec.io declares float32 \[batch, 2\], the model returned float32 \[2, 3\]/));
    const twoOut = folder("two-out", manifest("model.pt", PAIR_IO));
    await using c = await runtime.load(twoOut);
    await assert.rejects(c.infer({ x: Tensor.float32([2, 4]) }), isCode("RUN_FAILED", /returned 1 output, spec.io declares 2/));
    const twoIn = folder("two-in", manifest("model.pt", ["  io:", "    inputs: [{ name: x, dtype: float32, shape: [1, 4] }, { name: z, dtype: float32, shape: [1] }]", "    outputs: [{ name: y, dtype: float32, shape: [1, 3] }]"]));
    await assert.rejects(runtime.load(twoIn), isCode("MODEL_INVALID", /declares 2 inputs, the module's forward takes 1 \(forward\(.*Tensor x\) -> Tensor\)/));
  });

  it("says what is wrong with models it cannot load", async () => {
    const notTorch = folder("not-torchscript", manifest("model.pt", LINEAR_IO), "this is not a TorchScript archive");
    await assert.rejects(runtime.load(notTorch), isCode("MODEL_INVALID", /libtorch cannot load it as TorchScript: .*(zip|archive)/i));
    const noIo = folder("no-io", manifest("model.pt", []));
    await assert.rejects(runtime.load(noIo), isCode("MODEL_INVALID", /declare spec.io/));
    await assert.rejects(runtime.load(path.join(linear, "model.pt")), isCode("MODEL_INVALID", /declare spec.io/), "a bare .pt file has no manifest");
    const badDtype = folder("bad-dtype", manifest("model.pt", ["  io:", "    inputs: [{ name: x, dtype: string, shape: [1] }]", "    outputs: [{ name: y, dtype: float32, shape: [1] }]"]));
    await assert.rejects(runtime.load(badDtype), isCode("MODEL_INVALID", /input "x" is string; the torch plugin takes float32/));
  });
});
