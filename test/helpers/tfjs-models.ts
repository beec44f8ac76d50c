// TF.js test models, generated on the spot (nothing downloaded): a layers MLP saved by tfjs itself
// through the plugin's file save handler, and hand-written graph models (model.json + shard).
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type * as TF from "@tensorflow/tfjs";
import { fileSaveHandler } from "../../src/plugins/tensorflow/io.js";
import { mulberry32 } from "../../src/tools/make-demo-models.js";

export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

export const MLP_IO = { inputs: 4, hidden: 8, outputs: 3 } as const;

/** Seeded weights for a model's weights, in `getWeights()` order. */
function seedWeights(tf: typeof TF, model: TF.LayersModel, seed: number): void {
  const ws = model.getWeights().map((w, i) => tf.tensor(randomFloats(w.size, seed + i, 0.8), w.shape));
  model.setWeights(ws);
  tf.dispose(ws);
}

/** dense 4 -> 8 relu -> 3 softmax; functional, input "x" and output "y" named after the layers. */
export function buildLayersMlp(tf: typeof TF, seed = 1): TF.LayersModel {
  const x = tf.input({ shape: [MLP_IO.inputs], name: "x" });
  const h = tf.layers.dense({ units: MLP_IO.hidden, activation: "relu", name: "hidden" }).apply(x) as TF.SymbolicTensor;
  const y = tf.layers.dense({ units: MLP_IO.outputs, activation: "softmax", name: "y" }).apply(h) as TF.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: y });
  seedWeights(tf, model, seed);
  return model;
}

/** The same architecture as a Sequential with tfjs's own layer names (`dense_Dense1_input` ...) and two outputs. */
export function buildTwoHeaded(tf: typeof TF, seed = 7): TF.LayersModel {
  const x = tf.input({ shape: [MLP_IO.inputs] });
  const h = tf.layers.dense({ units: MLP_IO.hidden, activation: "relu" }).apply(x) as TF.SymbolicTensor;
  const a = tf.layers.dense({ units: MLP_IO.outputs, activation: "softmax" }).apply(h) as TF.SymbolicTensor;
  const b = tf.layers.dense({ units: 2 }).apply(h) as TF.SymbolicTensor;
  const model = tf.model({ inputs: x, outputs: [a, b] });
  seedWeights(tf, model, seed);
  return model;
}

export interface IoSpec {
  name: string;
  dtype: string;
  shape: Array<number | string>;
}

export interface AxonYamlOptions {
  name: string;
  format: string;
  framework?: string;
  files: string[];
  io?: { inputs: IoSpec[]; outputs: IoSpec[] };
}

export function writeAxonYaml(dir: string, o: AxonYamlOptions): void {
  const lines = [
    "apiVersion: axon.mlos.io/v1",
    "kind: Model",
    "metadata:",
    "  namespace: test",
    `  name: ${o.name}`,
    "  version: 1.0.0",
    "spec:",
    `  framework: { name: ${o.framework ?? "tensorflow"}, version: "4.22.0" }`,
    "  format:",
    `    type: ${o.format}`,
    "    entrypoint: model.json",
    "    files:",
    ...o.files.map((f) => `      - path: ${f}`),
  ];
  if (o.io) {
    const spec = (t: IoSpec) => `      - { name: ${JSON.stringify(t.name)}, dtype: ${t.dtype}, shape: ${JSON.stringify(t.shape)} }`;
    lines.push("  io:", "    inputs:", ...o.io.inputs.map(spec), "    outputs:", ...o.io.outputs.map(spec));
  }
  writeFileSync(path.join(dir, "axon.yaml"), `${lines.join("\n")}\n`);
}

/** Saves `model` into `dir` (model.json + weights.bin) and writes an axon.yaml naming x and y. */
export async function writeLayersMlp(dir: string, model: TF.LayersModel): Promise<void> {
  await model.save(fileSaveHandler(dir));
  writeAxonYaml(dir, {
    name: "tf-mlp",
    format: "tfjs-layers",
    files: ["model.json", "weights.bin"],
    io: { inputs: [{ name: "x", dtype: "float32", shape: ["batch", 4] }], outputs: [{ name: "y", dtype: "float32", shape: ["batch", 3] }] },
  });
}

const floatAttr = { type: "DT_FLOAT" };
const shapeOf = (dims: number[]) => ({ shape: { dim: dims.map((d) => ({ size: String(d) })) } });

export interface GraphMlp {
  w1: Float32Array;
  b1: Float32Array;
  w2: Float32Array;
  b2: Float32Array;
}

/**
 * A hand-written graph model (what tfjs-converter emits for a frozen graph):
 * x[-1,4] -> MatMul(w1) -> BiasAdd(b1) -> Relu -> hidden (Identity) and
 *                                          -> MatMul(w2) -> BiasAdd(b2) -> Softmax -> y.
 */
export function writeGraphMlp(dir: string, seed = 3): GraphMlp {
  mkdirSync(dir, { recursive: true });
  const { inputs: I, hidden: H, outputs: O } = MLP_IO;
  const weights: GraphMlp = { w1: randomFloats(I * H, seed, 0.8), b1: randomFloats(H, seed + 1, 0.2), w2: randomFloats(H * O, seed + 2, 0.8), b2: randomFloats(O, seed + 3, 0.2) };
  const constNode = (name: string, dims: number[]) => ({ name, op: "Const", attr: { dtype: floatAttr, value: { tensor: { dtype: "DT_FLOAT", tensorShape: shapeOf(dims).shape } } } });
  const node = [
    { name: "x", op: "Placeholder", attr: { dtype: floatAttr, shape: shapeOf([-1, I]) } },
    constNode("w1", [I, H]),
    constNode("b1", [H]),
    constNode("w2", [H, O]),
    constNode("b2", [O]),
    { name: "mm1", op: "MatMul", input: ["x", "w1"], attr: { T: floatAttr, transpose_a: { b: false }, transpose_b: { b: false } } },
    { name: "ba1", op: "BiasAdd", input: ["mm1", "b1"], attr: { T: floatAttr, data_format: { s: Buffer.from("NHWC").toString("base64") } } },
    { name: "relu", op: "Relu", input: ["ba1"], attr: { T: floatAttr } },
    { name: "hidden", op: "Identity", input: ["relu"], attr: { T: floatAttr } },
    { name: "mm2", op: "MatMul", input: ["relu", "w2"], attr: { T: floatAttr, transpose_a: { b: false }, transpose_b: { b: false } } },
    { name: "ba2", op: "BiasAdd", input: ["mm2", "b2"], attr: { T: floatAttr, data_format: { s: Buffer.from("NHWC").toString("base64") } } },
    { name: "y", op: "Softmax", input: ["ba2"], attr: { T: floatAttr } },
  ];
  const shard = Buffer.concat([weights.w1, weights.b1, weights.w2, weights.b2].map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)));
  const json = {
    format: "graph-model",
    generatedBy: "mlos test",
    convertedBy: "hand-written",
    modelTopology: { node, library: {}, versions: { producer: 1395 } },
    weightsManifest: [
      {
        paths: ["group1-shard1of1.bin"],
        weights: [
          { name: "w1", shape: [I, H], dtype: "float32" },
          { name: "b1", shape: [H], dtype: "float32" },
          { name: "w2", shape: [H, O], dtype: "float32" },
          { name: "b2", shape: [O], dtype: "float32" },
        ],
      },
    ],
  };
  writeFileSync(path.join(dir, "model.json"), JSON.stringify(json));
  writeFileSync(path.join(dir, "group1-shard1of1.bin"), shard);
  writeAxonYaml(dir, {
    name: "tf-graph-mlp",
    format: "tfjs-graph",
    files: ["model.json", "group1-shard1of1.bin"],
    io: {
      inputs: [{ name: "x", dtype: "float32", shape: ["batch", 4] }],
      outputs: [
        { name: "hidden", dtype: "float32", shape: ["batch", 8] },
        { name: "y", dtype: "float32", shape: ["batch", 3] },
      ],
    },
  });
  return weights;
}

/** A graph model with a dynamic-shape op (Where: the indices of the non-zero elements), which needs executeAsync. */
export function writeGraphWhere(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const json = {
    format: "graph-model",
    generatedBy: "mlos test",
    convertedBy: "hand-written",
    modelTopology: {
      node: [
        { name: "x", op: "Placeholder", attr: { dtype: floatAttr, shape: shapeOf([-1]) } },
        { name: "nonzero", op: "Where", input: ["x"], attr: { T: floatAttr } },
      ],
      library: {},
      versions: { producer: 1395 },
    },
    weightsManifest: [],
  };
  writeFileSync(path.join(dir, "model.json"), JSON.stringify(json));
}

/** float64 reference of the graph MLP, row by row. */
export function graphMlpReference(w: GraphMlp, x: Float32Array, batch: number): { hidden: Float64Array; y: Float64Array } {
  const { inputs: I, hidden: H, outputs: O } = MLP_IO;
  const hidden = new Float64Array(batch * H);
  const y = new Float64Array(batch * O);
  for (let b = 0; b < batch; b++) {
    for (let j = 0; j < H; j++) {
      let s = w.b1[j]!;
      for (let i = 0; i < I; i++) s += x[b * I + i]! * w.w1[i * H + j]!;
      hidden[b * H + j] = Math.max(0, s);
    }
    const logits = new Float64Array(O);
    for (let k = 0; k < O; k++) {
      let s = w.b2[k]!;
      for (let j = 0; j < H; j++) s += hidden[b * H + j]! * w.w2[j * O + k]!;
      logits[k] = s;
    }
    const m = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - m));
    const sum = e.reduce((a, v) => a + v, 0);
    for (let k = 0; k < O; k++) y[b * O + k] = e[k]! / sum;
  }
  return { hidden, y };
}
