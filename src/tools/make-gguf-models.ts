/**
 * Generates the tiny GGUF models that tests and benchmarks of the llamacpp plugin use (random
 * weights, real tokenizers; see scripts/make-gguf-models.py for what each model is).
 *
 *   node dist/src/tools/make-gguf-models.js OUTDIR
 *
 * llama.cpp's source comes from node-llama-cpp's npm package, which carries it as a git bundle
 * (`llama/gitRelease.bundle`): only the paths the script reads are checked out, into a temporary
 * folder. Needs git, python3 and Debian's python3-numpy. The output is the same on every machine;
 * a stamp file (the script's and the bundle's digests) makes a second run with the same inputs
 * return at once.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { optionalPackageDir } from "../plugins/optional-import.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const SCRIPT = path.join(ROOT, "scripts", "make-gguf-models.py");
/** What the script reads from llama.cpp's source. */
const VOCABULARIES = ["ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf"];
const NEEDED = ["gguf-py", "models/templates", ...VOCABULARIES.flatMap((v) => [`models/${v}`, `models/${v}.inp`, `models/${v}.out`])];

/**
 * llama.cpp's tokenizer test cases for the models' vocabularies, copied beside them: texts
 * (`.inp`, separated by a line `__ggml_vocab_test__`) and the token ids each must give (`.out`,
 * one line per text), tokenized without special tokens added or parsed.
 */
export const TOKENIZER_TESTS = {
  tinyLlama: "tokenizer-tests/ggml-vocab-llama-spm.gguf",
  tinyLlama3: "tokenizer-tests/ggml-vocab-llama-bpe.gguf",
} as const;

/** The GGUF files the script writes, relative to OUTDIR. */
export const GGUF_MODELS = {
  /** Llama 2's SentencePiece vocabulary (32000 tokens), F32; a [INST] chat template. */
  tinyLlama: "tiny-llama/tiny-llama-F32.gguf",
  /** The same model in Q8_0, beside it (a folder with two quantisations). */
  tinyLlamaQ8: "tiny-llama/tiny-llama-Q8_0.gguf",
  /** Llama 3's BPE vocabulary (128256 tokens), F16; Llama 3.1's chat template. */
  tinyLlama3: "tiny-llama3/tiny-llama3.gguf",
} as const;

/** The llama.cpp source bundle inside node-llama-cpp's package, or undefined when it is not installed. */
export function llamaCppSourceBundle(): string | undefined {
  const dir = optionalPackageDir("node-llama-cpp");
  const bundle = dir && path.join(dir, "llama", "gitRelease.bundle");
  return bundle && existsSync(bundle) ? bundle : undefined;
}

const digest = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** The benchmark's model (bench/gguf.bench.ts), relative to OUTDIR: 4 blocks of width 512, Q8_0. */
export const BENCH_GGUF_MODEL = "bench-llama/bench-llama-Q8_0.gguf";

/**
 * Writes the test models into `out` (with `bench`: the benchmark's model only), unless the stamp
 * says they are there from the same inputs; returns `out`.
 */
export function makeGgufModels(out: string, opts: { bench?: boolean } = {}): string {
  const bundle = llamaCppSourceBundle();
  if (!bundle) throw new Error("make-gguf-models: node-llama-cpp is not installed (its package carries llama.cpp's source): npm install node-llama-cpp@3.21.1");
  const stampFile = path.join(out, opts.bench ? ".stamp-bench" : ".stamp");
  const stamp = `${digest(SCRIPT)} ${digest(bundle)}\n`;
  const expected = opts.bench ? [BENCH_GGUF_MODEL] : [...Object.values(GGUF_MODELS), ...Object.values(TOKENIZER_TESTS).map((t) => t + ".out")];
  const complete = expected.every((f) => existsSync(path.join(out, f)));
  if (complete && existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) return out;
  const src = mkdtempSync(path.join(tmpdir(), "mlos-llama-src-"));
  try {
    execFileSync("git", ["clone", "--quiet", "--no-checkout", bundle, src], { stdio: ["ignore", "ignore", "pipe"] });
    execFileSync("git", ["-c", "advice.detachedHead=false", "checkout", "--quiet", "HEAD", "--", ...NEEDED], { cwd: src, stdio: ["ignore", "ignore", "pipe"] });
    execFileSync("python3", [SCRIPT, "--llama-src", src, "--out", out, ...(opts.bench ? ["--bench"] : [])], { stdio: ["ignore", "inherit", "inherit"] });
    if (!opts.bench) mkdirSync(path.join(out, "tokenizer-tests"), { recursive: true });
    if (!opts.bench) for (const v of VOCABULARIES) for (const ext of [".inp", ".out"]) copyFileSync(path.join(src, "models", v + ext), path.join(out, "tokenizer-tests", v + ext));
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
  writeFileSync(stampFile, stamp);
  return out;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2];
  if (!out) {
    console.error("usage: node dist/src/tools/make-gguf-models.js OUTDIR");
    process.exit(2);
  }
  makeGgufModels(path.resolve(out));
  for (const f of Object.values(GGUF_MODELS)) console.log(path.join(out, f));
}
