import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as ort from "onnxruntime-node";
import { parse as parseYaml } from "yaml";
import {
  EMBEDDER,
  MLP,
  TINY_CNN,
  buildDemoModels,
  embedderWeights,
  mlpWeights,
  mulberry32,
  tinyCnnWeights,
  writeDemoModels,
} from "../src/tools/make-demo-models.js";
import { OnnxModelBuilder, attr, decodeModel } from "../src/tools/onnx-builder.js";

const run = promisify(execFile);
const CLI = fileURLToPath(new URL("../src/tools/make-demo-models.js", import.meta.url));
const MODELS = ["mlp", "tiny-cnn", "embedder"];

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "mlos-demo-models-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file under `dir` (subfolders too: tiny-gpt and tiny-embed keep their ONNX files in onnx/), by relative path, sorted. */
async function snapshot(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const files = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort();
  for (const f of files) out.set(f, await readFile(path.join(dir, f)));
  return out;
}

/** The files tiny-gpt, the bundled language model, is made of. */
const TINY_GPT_FILES = ["axon.yaml", "config.json", "generation_config.json", "onnx/model.onnx", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"].map((f) => `tiny-gpt/${f}`);
/** The files of tiny-embed, the bundled embeddings encoder. */
const TINY_EMBED_FILES = ["axon.yaml", "config.json", "onnx/model.onnx", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"].map((f) => `tiny-embed/${f}`);
const FILE_COUNT = MODELS.length * 2 + TINY_GPT_FILES.length + TINY_EMBED_FILES.length;

// One generated tree shared by the ORT tests below.
let shared: Promise<string> | undefined;
function generated(): Promise<string> {
  shared ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "mlos-demo-models-ort-"));
    await writeDemoModels(dir);
    return dir;
  })();
  return shared;
}
after(async () => {
  if (shared) await rm(await shared, { recursive: true, force: true });
});

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    assert.ok(d <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]} (|diff| ${d} > ${tol})`);
  }
}

test("CLI output is byte-identical across runs and directories, and reruns write nothing", async (t) => {
  const a = await tempDir(t);
  const b = await tempDir(t);
  const t0 = performance.now();
  const { stdout } = await run(process.execPath, [CLI, a]);
  const cliMs = performance.now() - t0;
  assert.equal(stdout.trim().split("\n").filter((l) => l.startsWith("wrote")).length, FILE_COUNT);

  const first = await snapshot(a);
  assert.deepEqual([...first.keys()], [...MODELS.flatMap((m) => [`${m}/axon.yaml`, `${m}/model.onnx`]), ...TINY_GPT_FILES, ...TINY_EMBED_FILES].sort());

  const mtimes = new Map<string, number>();
  for (const k of first.keys()) mtimes.set(k, (await stat(path.join(a, k))).mtimeMs);
  const again = await run(process.execPath, [CLI, a]);
  assert.equal(again.stdout.trim().split("\n").filter((l) => l.startsWith("unchanged")).length, FILE_COUNT);
  for (const k of first.keys()) assert.equal((await stat(path.join(a, k))).mtimeMs, mtimes.get(k), `${k} rewritten`);
  const second = await snapshot(a);
  for (const [k, v] of first) assert.ok(v.equals(second.get(k)!), `${k} changed on rerun`);

  const t1 = performance.now();
  const res = await writeDemoModels(b);
  const inProcMs = performance.now() - t1;
  assert.ok(res.every((f) => f.written));
  const other = await snapshot(b);
  for (const [k, v] of first) assert.ok(v.equals(other.get(k)!), `${k} differs between directories`);

  // A damaged file is restored, the others are left alone.
  await writeFile(path.join(b, "mlp/model.onnx"), "garbage");
  const res2 = await writeDemoModels(b);
  assert.deepEqual(res2.filter((f) => f.written).map((f) => path.relative(b, f.path)), [path.join("mlp", "model.onnx")]);
  assert.ok((await readFile(path.join(b, "mlp/model.onnx"))).equals(first.get("mlp/model.onnx")!));

  t.diagnostic(`cli ${cliMs.toFixed(0)} ms (incl. node start), in-process ${inProcMs.toFixed(0)} ms`);
  for (const [k, v] of first) t.diagnostic(`${k}: ${v.length} bytes`);
});

test("manifests parse and describe the models", async () => {
  for (const model of buildDemoModels()) {
    const yamlFile = model.files.find((f) => f.path === "axon.yaml")!;
    const doc = parseYaml(new TextDecoder().decode(yamlFile.bytes)) as Record<string, any>;
    assert.equal(doc.apiVersion, "axon.mlos.io/v1");
    assert.equal(doc.kind, "Model");
    assert.deepEqual(
      { ns: doc.metadata.namespace, name: doc.metadata.name, version: doc.metadata.version, license: doc.metadata.license, authors: doc.metadata.authors },
      { ns: "demo", name: model.name, version: "1.0.0", license: "Apache-2.0", authors: ["mlos"] },
    );
    assert.equal(typeof doc.metadata.description, "string");
    assert.ok(doc.metadata.tags.includes("demo") && doc.metadata.tags.includes("onnx"));
    assert.deepEqual(doc.spec.framework, { name: "onnx", version: "17" });
    assert.deepEqual(doc.spec.format, { type: "onnx", entrypoint: "model.onnx", files: [{ path: "model.onnx" }] });
    assert.deepEqual(doc.spec.io, { inputs: model.inputs, outputs: model.outputs });
    assert.deepEqual(doc.spec.serving, { batching: { max_batch_size: 64, max_queue_delay_us: 500 } });

    const onnx = decodeModel(model.files.find((f) => f.path === "model.onnx")!.bytes) as Record<string, any>;
    assert.equal(onnx.ir_version, 8);
    assert.deepEqual(onnx.opset_import, [{ domain: "", version: 17 }]);
  }
  const sizes = Object.fromEntries(buildDemoModels().map((m) => [m.name, m.files[0]!.bytes.length]));
  assert.ok(sizes.mlp! < 1024, `mlp is ${sizes.mlp} bytes`);
  assert.ok(sizes["tiny-cnn"]! < 4096);
  assert.ok(sizes.embedder! > 1_000_000 && sizes.embedder! < 2_000_000);
});

test("builder: symbolic dims, attribute typing and validation", () => {
  const m = new OnnxModelBuilder({ graphName: "g", metadata: { b: "2", a: "1" } });
  m.input("x", "float32", ["batch", 2]);
  m.initializer("k", new Uint8Array([1, 0]), [2], "bool");
  m.int64Initializer("shape", [-1, 2]);
  m.node("Reshape", ["x", "shape"], ["r"], { allowzero: 0 });
  m.node("LeakyRelu", ["r"], ["y"], { alpha: attr.float(1) });
  m.output("y", "float32", ["batch", 2]);
  const o = decodeModel(m.toBytes()) as Record<string, any>;
  assert.deepEqual(o.graph.input[0].type.tensor_type.shape.dim, [{ dim_param: "batch" }, { dim_value: 2 }]);
  assert.deepEqual(o.metadata_props, [{ key: "a", value: "1" }, { key: "b", value: "2" }]);
  const leaky = o.graph.node[1].attribute[0];
  assert.equal(leaky.type, 1);
  assert.equal(leaky.f, 1);
  assert.equal(o.graph.node[0].attribute[0].type, 2);
  assert.equal(o.graph.initializer[0].data_type, 9);
  assert.deepEqual([...new BigInt64Array(new Uint8Array(o.graph.initializer[1].raw_data).buffer)], [-1n, 2n]);

  assert.throws(() => m.initializer("bad", new Float32Array(3), [2, 2]), /hold 4 elements/);
  assert.throws(() => m.input("x", "float32", [1]), /already defined/);
  const n = new OnnxModelBuilder();
  n.input("a", "float32", [1]);
  n.node("Relu", ["nope"], ["b"]);
  n.output("b", "float32", [1]);
  assert.throws(() => n.toBytes(), /nothing defines/);
});

test("mlp: ORT matches a JS forward pass; rows sum to 1", async () => {
  const dir = await generated();
  const s = await ort.InferenceSession.create(path.join(dir, "mlp", "model.onnx"));
  assert.deepEqual(s.inputNames, ["x"]);
  assert.deepEqual(s.outputNames, ["y"]);
  const batch = 2;
  const x = Float32Array.from([0.5, -1.25, 2, 0.1, -0.3, 0.7, -2.2, 1.4]);
  const out = await s.run({ x: new ort.Tensor("float32", x, [batch, MLP.inFeatures]) });
  const y = out.y!;
  assert.deepEqual(y.dims, [batch, MLP.classes]);
  const got = y.data as Float32Array;

  const w = mlpWeights();
  const expected: number[] = [];
  for (let b = 0; b < batch; b++) {
    const h = new Array<number>(MLP.hidden);
    for (let j = 0; j < MLP.hidden; j++) {
      let acc = w.b1[j]!;
      for (let i = 0; i < MLP.inFeatures; i++) acc += x[b * MLP.inFeatures + i]! * w.w1[j * MLP.inFeatures + i]!;
      h[j] = Math.max(0, acc);
    }
    const logits = new Array<number>(MLP.classes);
    for (let c = 0; c < MLP.classes; c++) {
      let acc = w.b2[c]!;
      for (let j = 0; j < MLP.hidden; j++) acc += h[j]! * w.w2[c * MLP.hidden + j]!;
      logits[c] = acc;
    }
    const max = Math.max(...logits);
    const e = logits.map((l) => Math.exp(l - max));
    const sum = e.reduce((a, v) => a + v, 0);
    expected.push(...e.map((v) => v / sum));
  }
  assertClose(got, expected, 1e-5, "y");
  for (let b = 0; b < batch; b++) {
    const sum = got[b * 3]! + got[b * 3 + 1]! + got[b * 3 + 2]!;
    assert.ok(Math.abs(sum - 1) < 1e-5, `row ${b} sums to ${sum}`);
  }
  // Not degenerate: the rows differ and no class takes everything.
  assert.ok(Math.abs(got[0]! - got[3]!) > 1e-3);
});

test("tiny-cnn: ORT matches a JS conv+relu+gap+gemm reference", async () => {
  const dir = await generated();
  const s = await ort.InferenceSession.create(path.join(dir, "tiny-cnn", "model.onnx"));
  assert.deepEqual(s.inputNames, ["image"]);
  assert.deepEqual(s.outputNames, ["logits"]);
  const { channels: C, height: H, width: W, filters: F, kernel: K, stride: S, pad: P, classes: N } = TINY_CNN;
  const batch = 2;
  const rand = mulberry32(12345);
  const img = new Float32Array(batch * C * H * W);
  for (let i = 0; i < img.length; i++) img[i] = rand() * 2 - 1;

  const out = await s.run({ image: new ort.Tensor("float32", img, [batch, C, H, W]) });
  const logits = out.logits!;
  assert.deepEqual(logits.dims, [batch, N]);

  const w = tinyCnnWeights();
  const OH = Math.floor((H + 2 * P - K) / S) + 1;
  const OW = Math.floor((W + 2 * P - K) / S) + 1;
  const expected: number[] = [];
  for (let b = 0; b < batch; b++) {
    const feat = new Array<number>(F).fill(0);
    for (let f = 0; f < F; f++) {
      let total = 0;
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          let acc = w.convB[f]!;
          for (let c = 0; c < C; c++) {
            for (let ky = 0; ky < K; ky++) {
              const iy = oy * S - P + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < K; kx++) {
                const ix = ox * S - P + kx;
                if (ix < 0 || ix >= W) continue;
                acc += img[((b * C + c) * H + iy) * W + ix]! * w.convW[((f * C + c) * K + ky) * K + kx]!;
              }
            }
          }
          total += Math.max(0, acc);
        }
      }
      feat[f] = total / (OH * OW);
    }
    for (let n = 0; n < N; n++) {
      let acc = w.fcB[n]!;
      for (let f = 0; f < F; f++) acc += feat[f]! * w.fcW[n * F + f]!;
      expected.push(acc);
    }
  }
  assertClose(logits.data as Float32Array, expected, 1e-4, "logits");
});

test("embedder: ORT matches a JS mean of the gathered rows", async () => {
  const dir = await generated();
  const s = await ort.InferenceSession.create(path.join(dir, "embedder", "model.onnx"));
  assert.deepEqual(s.inputNames, ["input_ids"]);
  assert.deepEqual(s.outputNames, ["embedding"]);
  const batch = 2;
  const seq = 5;
  const ids = BigInt64Array.from([0, 1, 1999, 42, 7, 1000, 3, 3, 3, 1998].map(BigInt));
  const out = await s.run({ input_ids: new ort.Tensor("int64", ids, [batch, seq]) });
  const e = out.embedding!;
  assert.deepEqual(e.dims, [batch, EMBEDDER.dim]);

  const { table } = embedderWeights();
  const D = EMBEDDER.dim;
  const expected: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let i = 0; i < seq; i++) acc += table[Number(ids[b * seq + i]!) * D + d]!;
      expected.push(acc / seq);
    }
  }
  assertClose(e.data as Float32Array, expected, 1e-6, "embedding");

  // A different sequence length works too (the seq dimension is symbolic).
  const one = await s.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from([5n]), [1, 1]) });
  assertClose(one.embedding!.data as Float32Array, table.subarray(5 * D, 6 * D), 0, "single token");
});
