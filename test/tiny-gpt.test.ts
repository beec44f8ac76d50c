// tiny-gpt, the bundled demo language model (src/tools/make-tiny-gpt.ts): deterministic bytes, a
// valid manifest, the KV cache and left padding under onnxruntime-node, and a tokenizer.json that
// tokenizes as GPT-2 does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { parseManifest } from "../src/axon/manifest/parse.js";
import { completeManifest } from "../src/axon/manifest/files.js";
import { writeDemoModels } from "../src/tools/make-demo-models.js";
import { TINY_GPT, buildTinyGpt, tinyGptWeights } from "../src/tools/make-tiny-gpt.js";
import { decodeModel } from "../src/tools/onnx-builder.js";
import { encoderDir, generatedDemoModel, refLayerNorm, refLinear, sha256 } from "./helpers/demo-language-models.js";

const gpt3Encoder = createRequire(import.meta.url)("gpt-3-encoder") as typeof import("gpt-3-encoder");
const { vocabSize: V, heads: NH, headDim: D, layers: L } = TINY_GPT;


// One generated folder shared by the tests below.
const { generated, session: model } = generatedDemoModel(TINY_GPT.name);

type Feeds = Record<string, ort.Tensor>;
const int64 = (rows: number[][]): ort.Tensor =>
  new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
const emptyPast = (batch: number): Feeds => {
  const out: Feeds = {};
  for (let l = 0; l < L; l++) {
    out[`past_key_values.${l}.key`] = new ort.Tensor("float32", new Float32Array(0), [batch, NH, 0, D]);
    out[`past_key_values.${l}.value`] = new ort.Tensor("float32", new Float32Array(0), [batch, NH, 0, D]);
  }
  return out;
};
const pastFrom = (out: ort.InferenceSession.OnnxValueMapType): Feeds => {
  const feeds: Feeds = {};
  for (let l = 0; l < L; l++) {
    feeds[`past_key_values.${l}.key`] = out[`present.${l}.key`] as ort.Tensor;
    feeds[`past_key_values.${l}.value`] = out[`present.${l}.value`] as ort.Tensor;
  }
  return feeds;
};
/** Runs the model on one batch: token rows, mask rows, position rows and a past. */
async function forward(ids: number[][], mask: number[][], positions: number[][], past: Feeds = emptyPast(ids.length)) {
  return (await model()).run({ input_ids: int64(ids), attention_mask: int64(mask), position_ids: int64(positions), ...past });
}
/** The logits of row `b`, position `s`, of a [B, S, V] tensor. */
function logitsAt(t: ort.Tensor, b: number, s: number): Float32Array {
  const [, S] = t.dims as number[];
  const data = t.data as Float32Array;
  return data.subarray((b * S! + s) * V, (b * S! + s + 1) * V);
}
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max |diff| ${worst} > ${tol}`);
}
const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);

/**
 * GPT-2's forward pass in plain JS (float64) over the same weights: the logits of every position
 * of one unpadded sequence starting at position 0.
 */
function referenceLogits(ids: number[]): Float64Array[] {
  const w = tinyGptWeights();
  const { hidden: H, inner: I, layerNormEpsilon: eps } = TINY_GPT;
  const S = ids.length;
  const linear = refLinear;
  const layerNorm = (x: Float64Array[], g: Float32Array, b: Float32Array): Float64Array[] => refLayerNorm(x, g, b, eps);
  const gelu = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

  let h = ids.map((id, s) => Float64Array.from({ length: H }, (_, i) => w.wte[id * H + i]! + w.wpe[s * H + i]!));
  for (const l of w.layers) {
    const qkv = linear(layerNorm(h, l.ln1Weight, l.ln1Bias), l.attnQkvWeight, l.attnQkvBias, 3 * H);
    const ctx = h.map(() => new Float64Array(H));
    for (let head = 0; head < NH; head++) {
      for (let i = 0; i < S; i++) {
        const scores = range(i + 1).map((j) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qkv[i]![head * D + d]! * qkv[j]![H + head * D + d]!;
          return dot / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const e = scores.map((v) => Math.exp(v - max));
        const sum = e.reduce((a, v) => a + v, 0);
        for (let j = 0; j <= i; j++) for (let d = 0; d < D; d++) ctx[i]![head * D + d]! += (e[j]! / sum) * qkv[j]![2 * H + head * D + d]!;
      }
    }
    const attn = linear(ctx, l.attnProjWeight, l.attnProjBias, H);
    h = h.map((row, s) => row.map((v, i) => v + attn[s]![i]!));
    const act = linear(layerNorm(h, l.ln2Weight, l.ln2Bias), l.mlpFcWeight, l.mlpFcBias, I).map((row) => row.map(gelu));
    const mlp = linear(act, l.mlpProjWeight, l.mlpProjBias, H);
    h = h.map((row, s) => row.map((v, i) => v + mlp[s]![i]!));
  }
  return layerNorm(h, w.lnFWeight, w.lnFBias).map((row) => {
    const logits = new Float64Array(V);
    for (let t = 0; t < V; t++) {
      let dot = 0;
      for (let i = 0; i < H; i++) dot += row[i]! * w.wte[t * H + i]!;
      logits[t] = dot;
    }
    return logits;
  });
}

const PROMPT = [15496, 995, 11, 428, 318]; // "Hello world, this is"
const NEXT = 257; // " a"

test("generation is deterministic and the folder is what make-demo-models writes", async (t) => {
  const t0 = performance.now();
  const a = buildTinyGpt(encoderDir());
  const ms = performance.now() - t0;
  const b = buildTinyGpt(encoderDir());
  assert.deepEqual(a.files.map((f) => f.path), [
    "onnx/model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "axon.yaml",
  ]);
  assert.deepEqual(a.files.map((f) => sha256(f.bytes)), b.files.map((f) => sha256(f.bytes)));

  const dir = await generated();
  for (const f of a.files) {
    const disk = await readFile(path.join(dir, f.path));
    assert.equal(sha256(disk), sha256(f.bytes), `${f.path} on disk`);
  }
  // A second write leaves tiny-gpt's files alone.
  const mtimes = await Promise.all(a.files.map(async (f) => (await stat(path.join(dir, f.path))).mtimeMs));
  const again = await writeDemoModels(path.dirname(dir));
  assert.deepEqual(again.filter((f) => f.written).map((f) => f.path), []);
  assert.deepEqual(await Promise.all(a.files.map(async (f) => (await stat(path.join(dir, f.path))).mtimeMs)), mtimes);

  const onnx = a.files[0]!.bytes;
  t.diagnostic(`build ${ms.toFixed(0)} ms; ${a.files.map((f) => `${f.path} ${f.bytes.length} B`).join(", ")}`);
  t.diagnostic(`onnx/model.onnx sha256:${sha256(onnx)}`);
  const m = decodeModel(onnx) as Record<string, any>;
  assert.equal(m.ir_version, 8);
  assert.deepEqual(m.opset_import, [{ domain: "", version: 17 }]);
  // The LM head is tied: wte is the only [V, H] tensor stored; logits come from a MatMul of the
  // hidden states by wte transposed, as PyTorch exports a tied head.
  const big = (m.graph.initializer as Array<{ name: string; dims: number[] }>).filter((i) => i.dims.includes(V));
  assert.deepEqual(big.map((i) => [i.name, i.dims]), [["transformer.wte.weight", [V, TINY_GPT.hidden]]]);
  const nodes = m.graph.node as Array<{ op_type: string; input: string[]; output: string[] }>;
  const head = nodes.find((n) => n.output.includes("logits"))!;
  assert.equal(head.op_type, "MatMul");
  const transpose = nodes.find((n) => n.output.includes(head.input[1]!))!;
  assert.deepEqual([transpose.op_type, transpose.input], ["Transpose", ["transformer.wte.weight"]]);
});

test("config files and the manifest", async () => {
  const dir = await generated();
  const read = async (f: string): Promise<any> => JSON.parse(await readFile(path.join(dir, f), "utf8"));
  const config = await read("config.json");
  assert.equal(config.model_type, "gpt2");
  assert.deepEqual(
    [config.vocab_size, config.n_positions, config.n_ctx, config.n_embd, config.n_layer, config.n_head, config.n_inner],
    [V, 256, 256, 64, 2, 4, 256],
  );
  assert.deepEqual(await read("generation_config.json"), { bos_token_id: 50256, eos_token_id: 50256 });
  assert.deepEqual(await read("special_tokens_map.json"), { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>" });

  const text = await readFile(path.join(dir, "axon.yaml"), "utf8");
  const draft = parseManifest(text, "axon.yaml", { draft: true });
  assert.equal(draft.spec.io, undefined);
  assert.deepEqual(draft.spec.llm, {
    task: "text-generation", config: "config.json", tokenizer: "tokenizer.json", generation_config: "generation_config.json", context_length: 256,
  });
  // As `axon pack` does: sizes and digests filled in, strictly valid.
  const full = await completeManifest(dir, draft);
  assert.equal(full.spec.format.entrypoint, "onnx/model.onnx");
  assert.equal(full.spec.format.files.length, 6);

  // The chat template renders, and rejects an unknown role.
  const { chat_template: template } = await read("tokenizer_config.json");
  // (@huggingface/jinja defines raise_exception itself, and refuses a second definition.)
  const render = (messages: unknown[]): string => new Template(template).render({ messages, add_generation_prompt: true });
  assert.equal(
    render([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }]),
    "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n",
  );
  assert.throws(() => render([{ role: "robot", content: "beep" }]), /Unknown role: robot/);
});

test("ORT: signature, and the KV cache gives the logits of a full run", async () => {
  const s = await model();
  const pastNames = range(L).flatMap((l) => [`past_key_values.${l}.key`, `past_key_values.${l}.value`]);
  assert.deepEqual(s.inputNames, ["input_ids", "attention_mask", "position_ids", ...pastNames]);
  assert.deepEqual(s.outputNames, ["logits", ...range(L).flatMap((l) => [`present.${l}.key`, `present.${l}.value`])]);

  // The prompt with an empty past (the first step of generation).
  const first = await forward([PROMPT], [PROMPT.map(() => 1)], [range(5)]);
  assert.deepEqual(first.logits!.dims, [1, 5, V]);
  for (let l = 0; l < L; l++) {
    assert.deepEqual(first[`present.${l}.key`]!.dims, [1, NH, 5, D]);
    assert.deepEqual(first[`present.${l}.value`]!.dims, [1, NH, 5, D]);
  }
  // One more token on top of that past.
  const step = await forward([[NEXT]], [range(6).map(() => 1)], [[5]], pastFrom(first));
  assert.deepEqual(step.logits!.dims, [1, 1, V]);
  assert.deepEqual(step["present.0.key"]!.dims, [1, NH, 6, D]);

  // All six at once, no past.
  const full = await forward([[...PROMPT, NEXT]], [range(6).map(() => 1)], [range(6)]);
  assertClose(logitsAt(step.logits!, 0, 0), logitsAt(full.logits!, 0, 5), 1e-4, "cached step vs full run");
  for (let l = 0; l < L; l++) {
    assertClose(step[`present.${l}.key`]!.data as Float32Array, full[`present.${l}.key`]!.data as Float32Array, 1e-5, `present.${l}.key`);
  }
  // The graph computes GPT-2: a plain JS forward pass agrees (float32 against float64: ~1e-6;
  // the tolerance is tight because with weights this small a wrong GELU constant moves ~1e-4).
  const reference = referenceLogits([...PROMPT, NEXT]);
  for (let i = 0; i < 6; i++) assertClose(logitsAt(full.logits!, 0, i), reference[i]!, 2e-5, `reference, position ${i}`);
  // Causal: the prompt's logits do not see the sixth token.
  for (let i = 0; i < 5; i++) assertClose(logitsAt(first.logits!, 0, i), logitsAt(full.logits!, 0, i), 1e-4, `position ${i}`);

  // The logits are spread out, so greedy decoding has a clear winner.
  const last = logitsAt(full.logits!, 0, 5);
  const sorted = Float32Array.from(last).sort().reverse();
  let mean = 0;
  for (const x of last) mean += x / V;
  let variance = 0;
  for (const x of last) variance += (x - mean) ** 2 / V;
  assert.ok(Math.sqrt(variance) > 0.1, `logits std ${Math.sqrt(variance)}`);
  assert.ok(sorted[0]! - sorted[1]! > 1e-3, `top-2 gap ${sorted[0]! - sorted[1]!}`);
});

test("ORT: a left-padded row gives the logits of the row alone, prompt and decode step", async () => {
  const PAD = TINY_GPT.eosTokenId;
  const short = [15496, 995, 11];
  const batch = await forward(
    [PROMPT, [PAD, PAD, ...short]],
    [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]],
    [range(5), [0, 0, 0, 1, 2]],
  );
  assert.deepEqual(batch.logits!.dims, [2, 5, V]);
  for (const x of batch.logits!.data as Float32Array) assert.ok(Number.isFinite(x), "no NaN from fully masked padding rows");

  const long = await forward([PROMPT], [PROMPT.map(() => 1)], [range(5)]);
  const alone = await forward([short], [[1, 1, 1]], [range(3)]);
  assertClose(logitsAt(batch.logits!, 0, 4), logitsAt(long.logits!, 0, 4), 1e-4, "row 0");
  assertClose(logitsAt(batch.logits!, 1, 4), logitsAt(alone.logits!, 0, 2), 1e-4, "row 1 (left-padded)");

  // A decode step for both rows on the batch's cache.
  const step = await forward([[NEXT], [NEXT]], [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]], [[5], [3]], pastFrom(batch));
  const longFull = await forward([[...PROMPT, NEXT]], [range(6).map(() => 1)], [range(6)]);
  const shortFull = await forward([[...short, NEXT]], [[1, 1, 1, 1]], [range(4)]);
  assertClose(logitsAt(step.logits!, 0, 0), logitsAt(longFull.logits!, 0, 5), 1e-4, "row 0 step");
  assertClose(logitsAt(step.logits!, 1, 0), logitsAt(shortFull.logits!, 0, 3), 1e-4, "row 1 step");
});

test("tokenizer.json tokenizes as GPT-2", async () => {
  const dir = await generated();
  const tokenizer = new Tokenizer(
    JSON.parse(await readFile(path.join(dir, "tokenizer.json"), "utf8")),
    JSON.parse(await readFile(path.join(dir, "tokenizer_config.json"), "utf8")),
  );
  assert.deepEqual(tokenizer.encode("Hello world").ids, [15496, 995]);
  for (const s of [" Hello, world!", "Hello world, this is a"]) assert.equal(tokenizer.decode(tokenizer.encode(s).ids), s);
  assert.deepEqual(tokenizer.encode("Hello world, this is a").ids, [...PROMPT, NEXT]);
  assert.deepEqual(tokenizer.encode("<|endoftext|>").ids, [TINY_GPT.eosTokenId]);

  const samples = [
    "Hello world",
    " Hello, world!",
    "naïve café, Zürich and 北京 🤖✨",
    "In 2024, π ≈ 3.14159 and 1,234,567 + 89 = 1234656",
    "  leading, trailing   and\tmixed \n\n whitespace  ",
    "I'm sure they've said we'll go; it's JSON: {\"a\": [1, 2]}",
    "Привет, мир! مرحبا こんにちは",
  ];
  for (const s of samples) {
    const ids = tokenizer.encode(s).ids;
    assert.deepEqual(ids, gpt3Encoder.encode(s), `encode ${JSON.stringify(s)}`);
    assert.equal(tokenizer.decode(ids), s, `round trip ${JSON.stringify(s)}`);
  }
});
