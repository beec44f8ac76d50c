// The `tensorflow` plugin: TF.js layers and graph models generated here (no downloads), loaded
// through the runtime, on the wasm backend (tfjs-node is not installed here); parity with running
// the same models through TensorFlow.js directly, signature checks, errors, and no tfjs tensor left
// behind by runs or unloads.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { MlosError, Runtime, Tensor, type Model } from "mlos";
import { TensorflowPlugin } from "../src/plugins/tensorflow/index.js";
import { loadTensorflow, type TfRuntime } from "../src/plugins/tensorflow/tfjs.js";
import { buildLayersMlp, buildTwoHeaded, graphMlpReference, randomFloats, writeAxonYaml, writeGraphMlp, writeGraphWhere, writeLayersMlp, type GraphMlp } from "./helpers/tfjs-models.js";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const isCode = (code: string) => (e: unknown) => {
  assert.ok(e instanceof MlosError, `an MlosError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  return true;
};

/** Same bytes, or every element within 1e-6 relative. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rel = 1e-6): void {
  assert.equal(actual.length, expected.length, `${what}: lengths differ`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    const tol = rel * Math.max(Math.abs(a), Math.abs(b));
    assert.ok(Math.abs(a - b) <= tol, `${what}[${i}]: ${a} vs ${b}`);
  }
}

const nodeInstalled = (() => {
  try {
    statSync(path.join(root, "node_modules", "@tensorflow", "tfjs-node", "package.json"));
    return true;
  } catch {
    return false;
  }
})();

describe("tensorflow plugin", () => {
  let rt: TfRuntime;
  let work: string;
  let layersDir: string;
  let graphDir: string;
  let graphWeights: GraphMlp;
  const runtime = new Runtime();
  const realFetch = globalThis.fetch;

  before(async () => {
    // Nothing may be fetched while TensorFlow.js starts (the .wasm binaries come from node_modules).
    globalThis.fetch = (async (input: unknown) => {
      throw new Error(`unexpected fetch of ${String(input)}`);
    }) as typeof fetch;
    try {
      rt = await loadTensorflow();
    } finally {
      globalThis.fetch = realFetch;
    }
    work = mkdtempSync(path.join(tmpdir(), "mlos-tfjs-"));
    layersDir = path.join(work, "layers");
    await writeLayersMlp(layersDir, buildLayersMlp(rt.tf));
    graphDir = path.join(work, "graph");
    graphWeights = writeGraphMlp(graphDir);
  });

  after(async () => {
    await runtime.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("loads no TensorFlow.js until a model is loaded, and says which backend it will use", () => {
    const code = [
      'import { createRequire } from "node:module";',
      'const { Runtime } = await import("mlos");',
      "const r = new Runtime();",
      'const p = r.plugins().find((x) => x.id === "tensorflow");',
      "const a = p.availability();",
      "const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes(`${'@tensorflow'}`));",
      "console.log(JSON.stringify({ a, version: p.version, loaded, formats: p.formats, frameworks: p.frameworks }));",
    ].join("\n");
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { cwd: root, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout) as { a: { available: boolean; backend?: string }; version: string; loaded: string[]; formats: string[]; frameworks: string[] };
    assert.deepEqual(got.loaded, [], "no @tensorflow module was loaded by importing mlos and asking for availability");
    assert.equal(got.a.available, true);
    assert.equal(got.a.backend, nodeInstalled ? "tensorflow" : "wasm");
    assert.match(got.version, /^4\.22\./);
    assert.deepEqual(got.formats, ["tfjs-graph", "tfjs-layers", "tfjs"]);
    assert.deepEqual(got.frameworks, ["tensorflow", "tfjs"]);
  });

  it("runs on the wasm backend with the binaries from node_modules", { skip: nodeInstalled && "tfjs-node is installed: it is the backend" }, () => {
    assert.equal(rt.backend, "wasm");
    assert.equal(rt.tf.getBackend(), "wasm");
    assert.equal(rt.package, "@tensorflow/tfjs");
    assert.ok(rt.wasmDir && rt.wasmDir.includes(path.join("node_modules", "@tensorflow", "tfjs-backend-wasm")), rt.wasmDir);
    const a = new TensorflowPlugin().availability();
    assert.deepEqual({ available: a.available, backend: a.backend }, { available: true, backend: "wasm" });
  });

  it("loads a layers model through the runtime, with the manifest's dimension names, in parity with tfjs", async () => {
    await using model = await runtime.load(layersDir);
    assert.equal(model.plugin, "tensorflow");
    assert.deepEqual(model.inputs, [{ name: "x", dtype: "float32", shape: ["batch", 4] }]);
    assert.deepEqual(model.outputs, [{ name: "y", dtype: "float32", shape: ["batch", 3] }]);
    assert.equal(model.memoryBytes, statSync(path.join(layersDir, "weights.bin")).size);
    const d = model.describe();
    assert.equal(d.kind, "layers");
    assert.equal(d.backend, rt.backend);
    const tf = rt.tf;
    const json = JSON.parse(readFileSync(path.join(layersDir, "model.json"), "utf8"));
    const direct = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: tf.io.getWeightSpecs(json.weightsManifest), weightData: new Uint8Array(readFileSync(path.join(layersDir, "weights.bin"))).buffer }));
    const original = buildLayersMlp(tf); // the same seeded weights, never saved or loaded
    for (const batch of [1, 5, 64]) {
      const data = randomFloats(batch * 4, 100 + batch, 2);
      const { y } = await model.infer({ x: Tensor.float32([batch, 4], data) });
      assert.deepEqual(y!.shape, [batch, 3]);
      assert.equal(y!.dtype, "float32");
      for (const m of [direct, original]) {
        const expected = tf.tidy(() => m.predict(tf.tensor(data, [batch, 4])) as import("@tensorflow/tfjs").Tensor);
        assertClose(y!.data as Float32Array, await expected.data() as Float32Array, `batch ${batch}`);
        expected.dispose();
      }
      const sums = Array.from({ length: batch }, (_, b) => [...(y!.data as Float32Array).subarray(b * 3, b * 3 + 3)].reduce((s, v) => s + v, 0));
      for (const s of sums) assert.ok(Math.abs(s - 1) < 1e-5, `softmax rows sum to 1 (${s})`);
    }
    direct.dispose();
    original.dispose();
  });

  it("rejects inputs that do not fit the signature before anything runs", async () => {
    await using model = await runtime.load(layersDir);
    await assert.rejects(model.infer({ x: Tensor.float32([2, 3]) }), isCode("INPUT_SHAPE"));
    await assert.rejects(model.infer({ x: Tensor.float32([2, 4, 1]) }), isCode("INPUT_RANK"));
    await assert.rejects(model.infer({ x: Tensor.float32([8]) }), isCode("INPUT_RANK"));
    await assert.rejects(model.infer({ x: Tensor.float64([2, 4]) }), isCode("INPUT_DTYPE"));
    await assert.rejects(model.infer({ z: Tensor.float32([2, 4]) }), isCode("INPUT_UNKNOWN"));
    await assert.rejects(model.infer({}), isCode("INPUT_MISSING"));
    await assert.rejects(model.infer({ x: Tensor.float32([1, 4]) }, { outputs: ["nope"] }), isCode("OUTPUT_UNKNOWN"));
  });

  it("leaves no TensorFlow.js tensor behind: runs, failed runs, and unloads", async () => {
    const tf = rt.tf;
    const start = tf.memory().numTensors;
    const model = await runtime.load(layersDir);
    const graph = await runtime.load(graphDir);
    const loaded = tf.memory().numTensors;
    assert.ok(loaded > start, "the weights are tensors");
    for (let i = 0; i < 25; i++) {
      await model.infer({ x: Tensor.float32([3, 4], randomFloats(12, i)) });
      await graph.infer({ x: Tensor.float32([2, 4], randomFloats(8, i)) }, { outputs: i % 2 ? ["y"] : ["hidden", "y"] });
    }
    // Runs that fail inside the plugin: after the outputs were read (a caller's tensor that does
    // not fit an output whose size only the run knows), in TensorFlow.js (a graph whose placeholder
    // leaves the inner dimension open, so MatMul refuses [2, 5]), and an aborted one.
    const whereDir = path.join(work, "where-leak");
    writeGraphWhere(whereDir);
    const where = await runtime.load(path.join(whereDir, "model.json"), { plugin: "tensorflow" });
    const loose = path.join(work, "graph-loose");
    mkdirSync(loose, { recursive: true });
    const lj = JSON.parse(readFileSync(path.join(graphDir, "model.json"), "utf8"));
    lj.modelTopology.node[0].attr.shape = { shape: { dim: [{ size: "-1" }, { size: "-1" }] } };
    writeFileSync(path.join(loose, "model.json"), JSON.stringify(lj));
    copyFileSync(path.join(graphDir, "group1-shard1of1.bin"), path.join(loose, "group1-shard1of1.bin"));
    // (A probe on zeros [1, 1] fails too, so only spec.io can say what the outputs are.)
    writeAxonYaml(loose, {
      name: "graph-loose",
      format: "tfjs-graph",
      files: ["model.json", "group1-shard1of1.bin"],
      io: {
        inputs: [{ name: "x", dtype: "float32", shape: ["batch", -1] }],
        outputs: [
          { name: "hidden", dtype: "float32", shape: ["batch", 8] },
          { name: "y", dtype: "float32", shape: ["batch", 3] },
        ],
      },
    });
    const looseModel = await runtime.load(loose);
    assert.deepEqual(looseModel.inputs, [{ name: "x", dtype: "float32", shape: ["batch", -1] }]);
    const before = tf.memory().numTensors;
    await assert.rejects(where.infer({ x: Tensor.float32([4], [1, 0, 2, 3]) }, { outputs: { nonzero: Tensor.int32([2, 1]) } }), isCode("OUTPUT_INVALID"));
    await assert.rejects(looseModel.infer({ x: Tensor.float32([2, 5]) }), (e: unknown) => isCode("RUN_FAILED")(e) && /TensorFlow\.js \(\w+\)/.test((e as Error).message));
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(model.infer({ x: Tensor.float32([3, 4]) }, { signal: ac.signal }), isCode("RUN_ABORTED"));
    await assert.rejects(model.infer({ x: Tensor.float32([3, 4]) }, { timeoutMs: 0 }), isCode("RUN_TIMEOUT"));
    assert.equal(tf.memory().numTensors, before, "failed runs leave no tensor behind");
    await where.dispose();
    await looseModel.dispose();
    assert.equal(tf.memory().numTensors, loaded, "runs leave the tensor count where the loads left it");
    await model.dispose();
    await graph.dispose();
    assert.equal(tf.memory().numTensors, start, "unloading disposes the weights");
  });

  it("writes outputs into caller-provided tensors and returns only the outputs asked for", async () => {
    await using model = await runtime.load(graphDir);
    const x = Tensor.float32([3, 4], randomFloats(12, 5));
    const all = await model.infer({ x });
    assert.deepEqual(Object.keys(all).sort(), ["hidden", "y"]);
    const y = Tensor.float32([3, 3]);
    const out = await model.infer({ x }, { outputs: { y } });
    assert.deepEqual(Object.keys(out), ["y"]);
    assert.equal(out.y, y, "the caller's tensor comes back");
    assert.deepEqual([...y.data], [...(all.y!.data as Float32Array)]);
    const only = await model.infer({ x }, { outputs: ["hidden"] });
    assert.deepEqual(Object.keys(only), ["hidden"]);
  });

  it("loads a hand-written graph model (MatMul, BiasAdd, Relu, Softmax) in parity with tfjs and a float64 reference", async () => {
    await using model = await runtime.load(graphDir);
    assert.equal(model.plugin, "tensorflow");
    assert.deepEqual(model.inputs, [{ name: "x", dtype: "float32", shape: ["batch", 4] }]);
    assert.deepEqual(model.outputs.map((o) => o.name).sort(), ["hidden", "y"]);
    assert.deepEqual(model.outputs.find((o) => o.name === "y"), { name: "y", dtype: "float32", shape: ["batch", 3] });
    assert.equal(model.describe().execution, "execute");
    assert.equal(model.describe().kind, "graph");
    const tf = rt.tf;
    const json = JSON.parse(readFileSync(path.join(graphDir, "model.json"), "utf8"));
    const direct = await tf.loadGraphModel(tf.io.fromMemory({ modelTopology: json.modelTopology, format: json.format, weightSpecs: tf.io.getWeightSpecs(json.weightsManifest), weightData: new Uint8Array(readFileSync(path.join(graphDir, "group1-shard1of1.bin"))).buffer }));
    for (const batch of [1, 6]) {
      const data = randomFloats(batch * 4, 40 + batch, 2);
      const out = await model.infer({ x: Tensor.float32([batch, 4], data) });
      assert.deepEqual(out.y!.shape, [batch, 3]);
      assert.deepEqual(out.hidden!.shape, [batch, 8]);
      const [h, y] = direct.execute({ x: tf.tensor(data, [batch, 4]) }, ["hidden", "y"]) as import("@tensorflow/tfjs").Tensor[];
      assertClose(out.y!.data as Float32Array, (await y!.data()) as Float32Array, `y, batch ${batch}`);
      assertClose(out.hidden!.data as Float32Array, (await h!.data()) as Float32Array, `hidden, batch ${batch}`);
      tf.dispose([h!, y!]);
      const ref = graphMlpReference(graphWeights, data, batch);
      assertClose(out.y!.data as Float32Array, ref.y, `y vs float64, batch ${batch}`, 1e-5);
      assertClose(out.hidden!.data as Float32Array, ref.hidden, `hidden vs float64, batch ${batch}`, 1e-5);
    }
    direct.dispose();
  });

  it("runs a graph model with a dynamic-shape op through executeAsync, learning its outputs by a probe", async () => {
    const dir = path.join(work, "where");
    writeGraphWhere(dir);
    await using model = await runtime.load(path.join(dir, "model.json"), { plugin: "tensorflow" });
    assert.equal(model.describe().execution, "executeAsync");
    assert.deepEqual(model.inputs, [{ name: "x", dtype: "float32", shape: [-1] }]);
    assert.deepEqual(model.outputs, [{ name: "nonzero", dtype: "int32", shape: [-1, -1] }]);
    const before = rt.tf.memory().numTensors;
    const { nonzero } = await model.infer({ x: Tensor.float32([6], [0, 2, 0, -1, 0, 5]) });
    assert.equal(nonzero!.dtype, "int32");
    assert.deepEqual(nonzero!.shape, [3, 1]);
    assert.deepEqual([...(nonzero!.data as Int32Array)], [1, 3, 5]);
    const none = await model.infer({ x: Tensor.float32([3]) });
    assert.deepEqual(none.nonzero!.shape, [0, 1]);
    assert.equal(rt.tf.memory().numTensors, before);
  });

  it("loads a model.json without a manifest, named by its layers, and renames by position from spec.io", async () => {
    const dir = path.join(work, "two-headed");
    const m = buildTwoHeaded(rt.tf);
    const { fileSaveHandler } = await import("../src/plugins/tensorflow/io.js");
    await m.save(fileSaveHandler(dir));
    const x = Tensor.float32([2, 4], randomFloats(8, 77));
    const expected = rt.tf.tidy(() => m.predict(rt.tf.tensor(x.data as Float32Array, [2, 4])) as import("@tensorflow/tfjs").Tensor[]);
    {
      await using bare = await runtime.load(path.join(dir, "model.json"), { plugin: "tensorflow" });
      assert.deepEqual(bare.inputs.map((i) => i.shape), [[-1, 4]]);
      assert.deepEqual(bare.outputs.map((o) => o.shape), [[-1, 3], [-1, 2]]);
      assert.deepEqual(bare.inputs.map((i) => i.name), m.inputNames);
      assert.deepEqual(bare.outputs.map((o) => o.name), m.outputNames);
      const out = await bare.infer({ [m.inputNames[0]!]: x });
      assertClose(out[m.outputNames[0]!]!.data as Float32Array, (await expected[0]!.data()) as Float32Array, "head a");
      assertClose(out[m.outputNames[1]!]!.data as Float32Array, (await expected[1]!.data()) as Float32Array, "head b");
    }
    writeAxonYaml(dir, {
      name: "two-headed",
      format: "tfjs",
      framework: "tfjs",
      files: ["model.json", "weights.bin"],
      io: {
        inputs: [{ name: "features", dtype: "float32", shape: ["n", 4] }],
        outputs: [
          { name: "probs", dtype: "float32", shape: ["n", 3] },
          { name: "score", dtype: "float32", shape: ["n", 2] },
        ],
      },
    });
    await using named = await runtime.load(dir);
    assert.deepEqual(named.inputs, [{ name: "features", dtype: "float32", shape: ["n", 4] }]);
    assert.deepEqual(named.outputs.map((o) => `${o.name} ${o.shape.join(",")}`), ["probs n,3", "score n,2"]);
    const { score } = await named.infer({ features: x }, { outputs: ["score"] });
    assertClose(score!.data as Float32Array, (await expected[1]!.data()) as Float32Array, "score");
    rt.tf.dispose(expected);
    m.dispose();
  });

  it("reports corrupt and mismatched models as MODEL_INVALID", async () => {
    const copy = (name: string, from = layersDir): string => {
      const dir = path.join(work, name);
      mkdirSync(dir, { recursive: true });
      for (const f of ["model.json", "weights.bin", "axon.yaml"]) copyFileSync(path.join(from, f), path.join(dir, f));
      return dir;
    };
    const corrupt = copy("corrupt");
    writeFileSync(path.join(corrupt, "model.json"), '{"modelTopology": {"class_name": "Model", "config": ');
    await assert.rejects(runtime.load(corrupt), (e: unknown) => isCode("MODEL_INVALID")(e) && /model\.json: not a TF\.js model\.json/.test((e as Error).message));

    const notModel = copy("not-a-model");
    writeFileSync(path.join(notModel, "model.json"), JSON.stringify({ hello: "world" }));
    await assert.rejects(runtime.load(notModel), isCode("MODEL_INVALID"));

    const badTopology = copy("bad-topology");
    const j = JSON.parse(readFileSync(path.join(layersDir, "model.json"), "utf8"));
    j.modelTopology.config.layers[1].class_name = "NoSuchLayer";
    writeFileSync(path.join(badTopology, "model.json"), JSON.stringify(j));
    await assert.rejects(runtime.load(badTopology), (e: unknown) => isCode("MODEL_INVALID")(e) && /NoSuchLayer/.test((e as Error).message));

    const short = copy("short-weights");
    truncateSync(path.join(short, "weights.bin"), 10);
    await assert.rejects(runtime.load(short), isCode("MODEL_INVALID"));

    const missing = copy("missing-weights");
    rmSync(path.join(missing, "weights.bin"));
    await assert.rejects(runtime.load(missing), (e: unknown) => isCode("MODEL_INVALID")(e) && /weights\.bin/.test((e as Error).message));

    const escape = copy("escape");
    const k = JSON.parse(readFileSync(path.join(layersDir, "model.json"), "utf8"));
    k.weightsManifest[0].paths = ["../layers/weights.bin"];
    writeFileSync(path.join(escape, "model.json"), JSON.stringify(k));
    await assert.rejects(runtime.load(escape), (e: unknown) => isCode("MODEL_INVALID")(e) && /unsafe/.test((e as Error).message));

    const mismatch = copy("mismatch");
    writeFileSync(path.join(mismatch, "axon.yaml"), readFileSync(path.join(layersDir, "axon.yaml"), "utf8").replace("tfjs-layers", "tfjs-graph"));
    await assert.rejects(runtime.load(mismatch), (e: unknown) => isCode("MODEL_INVALID")(e) && /tfjs-graph/.test((e as Error).message));

    const wrongIo = copy("wrong-io");
    writeFileSync(path.join(wrongIo, "axon.yaml"), readFileSync(path.join(layersDir, "axon.yaml"), "utf8").replace("[batch, 3]", "[batch, 5]").replace('["batch",3]', '["batch",5]'));
    await assert.rejects(runtime.load(wrongIo), isCode("MODEL_INVALID"));

    // Nothing a failed load made stays behind.
    const n = rt.tf.memory().numTensors;
    await assert.rejects(runtime.load(badTopology), isCode("MODEL_INVALID"));
    assert.equal(rt.tf.memory().numTensors, n);
  });

  it("serves concurrent calls, each with its own answer, and unloads after the runs in flight", async () => {
    const model: Model = await runtime.load(layersDir);
    const xs = Array.from({ length: 16 }, (_, i) => Tensor.float32([2, 4], randomFloats(8, 300 + i)));
    const expected: number[][] = [];
    for (const x of xs) expected.push([...((await model.infer({ x })).y!.data as Float32Array)]);
    const got = await Promise.all(xs.map((x) => model.infer({ x })));
    got.forEach((g, i) => assert.deepEqual([...(g.y!.data as Float32Array)], expected[i]));
    const pending = model.infer({ x: xs[0]! });
    await model.dispose();
    assert.deepEqual([...((await pending).y!.data as Float32Array)], expected[0]);
    await assert.rejects(model.infer({ x: xs[0]! }), isCode("MODEL_DISPOSED"));
  });

  it("measures a demo-size run", async (t) => {
    await using model = await runtime.load(layersDir);
    const x = Tensor.float32([1, 4], [0.1, -0.2, 0.3, 0.4]);
    for (let i = 0; i < 20; i++) await model.infer({ x });
    const n = 200;
    const started = performance.now();
    for (let i = 0; i < n; i++) await model.infer({ x });
    const us = ((performance.now() - started) / n) * 1000;
    t.diagnostic(`layers mlp [1,4] on ${rt.backend}: ${us.toFixed(1)} us per infer (mean of ${n})`);
    await using graph = await runtime.load(graphDir);
    for (let i = 0; i < 20; i++) await graph.infer({ x });
    const g0 = performance.now();
    for (let i = 0; i < n; i++) await graph.infer({ x });
    t.diagnostic(`graph mlp [1,4] on ${rt.backend}: ${(((performance.now() - g0) / n) * 1000).toFixed(1)} us per infer (mean of ${n})`);
    assert.ok(us < 50_000);
  });
});
