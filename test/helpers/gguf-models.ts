/**
 * The tiny GGUF models of the llamacpp plugin's tests (src/tools/make-gguf-models.ts), written
 * once into dist/test-models/gguf and reused while their inputs do not change.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GGUF_MODELS, llamaCppSourceBundle, makeGgufModels, TOKENIZER_TESTS } from "../../src/tools/make-gguf-models.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const OUT = path.join(ROOT, "dist", "test-models", "gguf");

function numpyMissing(): boolean {
  try {
    execFileSync("python3", ["-c", "import numpy"], { stdio: "ignore" });
    return false;
  } catch {
    return true;
  }
}

/**
 * Why the GGUF tests cannot run here, or false. In CI nothing may be missing: the tests run and
 * fail instead of skipping.
 */
export const ggufSkip: string | false = (() => {
  if (process.env.CI) return false;
  if (!llamaCppSourceBundle()) return "node-llama-cpp (a devDependency) is not installed";
  if (numpyMissing()) return "python3-numpy is not installed (it writes the test models)";
  return false;
})();

/** Absolute paths of the test models (generated on first use). */
export function ggufModels(): { [K in keyof typeof GGUF_MODELS]: string } & { dir: string } {
  makeGgufModels(OUT);
  const out = { dir: OUT } as { [K in keyof typeof GGUF_MODELS]: string } & { dir: string };
  for (const [k, v] of Object.entries(GGUF_MODELS)) (out as Record<string, string>)[k] = path.join(OUT, v);
  return out;
}

/** llama.cpp's tokenizer cases for a model's vocabulary: each text and the ids it must give. */
export function tokenizerCases(model: keyof typeof TOKENIZER_TESTS): Array<{ text: string; ids: number[] }> {
  makeGgufModels(OUT);
  const base = path.join(OUT, TOKENIZER_TESTS[model]);
  const texts = readFileSync(base + ".inp", "utf8").split("\n__ggml_vocab_test__\n");
  const lines = readFileSync(base + ".out", "utf8").split("\n");
  // The .inp file ends with a separator line and a last empty entry; .out has one line per text.
  if (texts.length > 0 && texts[texts.length - 1] === "") texts.pop();
  return texts.map((text, i) => ({ text, ids: lines[i]!.trim() === "" ? [] : lines[i]!.trim().split(/\s+/).map(Number) }));
}
