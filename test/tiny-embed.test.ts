// tiny-embed, the bundled demo embeddings model (src/tools/make-tiny-embed.ts): deterministic bytes,
// a valid manifest, and under onnxruntime-node: the graph computes what a plain JS BERT-style
// encoder computes, the attention mask makes padded rows equal to the rows alone, and different
// texts give clearly different mean-pooled vectors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { parseManifest } from "../src/axon/manifest/parse.js";
import { completeManifest } from "../src/axon/manifest/files.js";
import { TINY_EMBED, buildTinyEmbed, buildTinyEmbedOnnx, tinyEmbedWeights } from "../src/tools/make-tiny-embed.js";
import { TINY_GPT, gpt2TokenizerJson } from "../src/tools/make-tiny-gpt.js";
import { decodeModel } from "../src/tools/onnx-builder.js";
import { encoderDir, generatedDemoModel, refLayerNorm, refLinear, sha256 } from "./helpers/demo-language-models.js";

const { vocabSize: V, hidden: H, heads: NH, headDim: D } = TINY_EMBED;


// One generated tree shared by the tests below.
const { generated, session: model } = generatedDemoModel(TINY_EMBED.name);
let tokenizer: Promise<Tokenizer> | undefined;
const tok = (): Promise<Tokenizer> =>
  (tokenizer ??= generated().then(async (dir) => new Tokenizer(
    JSON.parse(await readFile(path.join(dir, "tokenizer.json"), "utf8")),
    JSON.parse(await readFile(path.join(dir, "tokenizer_config.json"), "utf8")),
  )));

const int64 = (rows: number[][]): ort.Tensor =>
  new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
/** Runs the encoder on right-padded rows (mask 1 on the real tokens, `pad` after them); returns [B, S, H]. */
async function encode(rows: number[][], pad: number = TINY_EMBED.eosTokenId): Promise<{ data: Float32Array; dims: number[] }> {
  const S = Math.max(...rows.map((r) => r.length));
  const ids = rows.map((r) => [...r, ...Array<number>(S - r.length).fill(pad)]);
  const mask = rows.map((r) => [...r.map(() => 1), ...Array<number>(S - r.length).fill(0)]);
  const out = await (await model()).run({ input_ids: int64(ids), attention_mask: int64(mask) });
  const t = out.last_hidden_state!;
  return { data: t.data as Float32Array, dims: t.dims as number[] };
}
/** Row `b`'s hidden states at positions [0, n) of a [B, S, H] result. */
const rowStates = (r: { data: Float32Array; dims: number[] }, b: number, n: number): Float32Array =>
  r.data.subarray(b * r.dims[1]! * H, (b * r.dims[1]! + n) * H);
/** Mean over a row's first n positions (the real tokens): what /v1/embeddings pools. */
function meanPool(r: { data: Float32Array; dims: number[] }, b: number, n: number): Float64Array {
  const v = new Float64Array(H);
  const x = rowStates(r, b, n);
  for (let i = 0; i < n; i++) for (let h = 0; h < H; h++) v[h]! += x[i * H + h]! / n;
  return v;
}
const cosine = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
};
function maxDiff(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  return worst;
}
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  const worst = maxDiff(actual, expected, what);
  assert.ok(worst <= tol, `${what}: max |diff| ${worst} > ${tol}`);
}

/** erf to ~1e-16: its Taylor series below 2.5, the continued fraction of erfc above. */
function erf(x: number): number {
  const sign = Math.sign(x);
  const a = Math.abs(x);
  if (a < 2.5) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 60; n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    return (sign * sum * 2) / Math.sqrt(Math.PI);
  }
  let t = a;
  for (let k = 60; k >= 1; k--) t = a + k / 2 / t;
  return sign * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / t);
}

/** The encoder's forward pass in plain JS (float64) over the same weights: one unpadded sequence's [S][H]. */
function referenceStates(ids: number[]): Float64Array[] {
  const w = tinyEmbedWeights();
  const { inner: I, layerNormEpsilon: eps } = TINY_EMBED;
  const S = ids.length;
  const linear = refLinear;
  const layerNorm = (x: Float64Array[], g: Float32Array, b: Float32Array): Float64Array[] => refLayerNorm(x, g, b, eps);
  const add = (x: Float64Array[], y: Float64Array[]): Float64Array[] => x.map((row, s) => row.map((v, i) => v + y[s]![i]!));
  const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

  let h = layerNorm(
    ids.map((id, s) => Float64Array.from({ length: H }, (_, i) => w.wordEmbeddings[id * H + i]! + w.positionEmbeddings[s * H + i]!)),
    w.embLnWeight, w.embLnBias,
  );
  for (const l of w.layers) {
    const q = linear(h, l.queryWeight, l.queryBias, H);
    const k = linear(h, l.keyWeight, l.keyBias, H);
    const v = linear(h, l.valueWeight, l.valueBias, H);
    const ctx = h.map(() => new Float64Array(H));
    for (let head = 0; head < NH; head++) {
      for (let i = 0; i < S; i++) {
        // Bidirectional: every key, before and after the query.
        const scores = ids.map((_, j) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[i]![head * D + d]! * k[j]![head * D + d]!;
          return dot / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - max));
        const sum = e.reduce((a, x) => a + x, 0);
        for (let j = 0; j < S; j++) for (let d = 0; d < D; d++) ctx[i]![head * D + d]! += (e[j]! / sum) * v[j]![head * D + d]!;
      }
    }
    h = layerNorm(add(h, linear(ctx, l.attnOutWeight, l.attnOutBias, H)), l.attnLnWeight, l.attnLnBias);
    const act = linear(h, l.intermediateWeight, l.intermediateBias, I).map((row) => row.map(gelu));
    h = layerNorm(add(h, linear(act, l.outputWeight, l.outputBias, H)), l.outputLnWeight, l.outputLnBias);
  }
  return h;
}

const FILES = ["onnx/model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "axon.yaml"];

test("generation is deterministic and the folder is what make-demo-models writes", async (t) => {
  const t0 = performance.now();
  const a = buildTinyEmbed(encoderDir());
  const ms = performance.now() - t0;
  const b = buildTinyEmbed(encoderDir());
  assert.deepEqual(a.files.map((f) => f.path), FILES);
  assert.deepEqual(a.files.map((f) => sha256(f.bytes)), b.files.map((f) => sha256(f.bytes)));
  assert.equal(sha256(buildTinyEmbedOnnx()), sha256(a.files[0]!.bytes));

  const dir = await generated();
  for (const f of a.files) {
    const disk = await readFile(path.join(dir, f.path));
    assert.equal(sha256(disk), sha256(f.bytes), `${f.path} on disk`);
  }
  // GPT-2's tokenizer, byte for byte tiny-gpt's.
  const tokenizerJson = a.files.find((f) => f.path === "tokenizer.json")!.bytes;
  assert.equal(sha256(tokenizerJson), sha256(new TextEncoder().encode(gpt2TokenizerJson(encoderDir()))));
  assert.equal(sha256(await readFile(path.join(dir, "..", TINY_GPT.name, "tokenizer.json"))), sha256(tokenizerJson));

  const onnx = a.files[0]!.bytes;
  t.diagnostic(`build ${ms.toFixed(0)} ms; ${a.files.map((f) => `${f.path} ${f.bytes.length} B`).join(", ")}`);
  t.diagnostic(`onnx/model.onnx sha256:${sha256(onnx)}`);
  const m = decodeModel(onnx) as Record<string, any>;
  assert.equal(m.ir_version, 8);
  assert.deepEqual(m.opset_import, [{ domain: "", version: 17 }]);
  // The token table is stored once, and it is nearly all of the file.
  const big = (m.graph.initializer as Array<{ name: string; dims: number[] }>).filter((i) => i.dims.includes(V));
  assert.deepEqual(big.map((i) => [i.name, i.dims]), [["embeddings.word_embeddings.weight", [V, H]]]);
  assert.ok(onnx.length < V * H * 4 + 500_000, `model.onnx is ${onnx.length} bytes`);
});

test("config files and the manifest", async () => {
  const dir = await generated();
  const read = async (f: string): Promise<any> => JSON.parse(await readFile(path.join(dir, f), "utf8"));
  const config = await read("config.json");
  assert.deepEqual(config.architectures, ["BertModel"]);
  assert.equal(config.model_type, "bert");
  assert.deepEqual(
    [config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size, config.max_position_embeddings, config.hidden_act],
    [V, 64, TINY_EMBED.layers, 4, 128, 256, "gelu"],
  );
  const tokenizerConfig = await read("tokenizer_config.json");
  assert.equal(tokenizerConfig.chat_template, undefined);
  assert.equal(tokenizerConfig.model_max_length, 256);
  assert.equal(tokenizerConfig.clean_up_tokenization_spaces, false);
  for (const k of ["bos_token", "eos_token", "unk_token"]) assert.equal(tokenizerConfig[k], "<|endoftext|>", k);
  assert.equal((await read("special_tokens_map.json")).eos_token, "<|endoftext|>");

  const text = await readFile(path.join(dir, "axon.yaml"), "utf8");
  const draft = parseManifest(text, "axon.yaml", { draft: true });
  assert.deepEqual([draft.metadata.namespace, draft.metadata.name, draft.metadata.version, draft.metadata.license], ["demo", "tiny-embed", "1.0.0", "Apache-2.0"]);
  assert.deepEqual(draft.metadata.tags, ["demo", "onnx", "embeddings"]);
  assert.equal(draft.spec.io, undefined);
  assert.deepEqual(draft.spec.llm, { task: "embeddings", pooling: "mean", config: "config.json", tokenizer: "tokenizer.json", context_length: 256 });
  // As `axon pack` does: sizes and digests filled in, strictly valid.
  const full = await completeManifest(dir, draft);
  assert.deepEqual(full.spec.framework, { name: "onnx", version: "17" });
  assert.equal(full.spec.format.entrypoint, "onnx/model.onnx");
  assert.deepEqual(full.spec.format.files.map((f) => f.path), FILES.slice(0, -1));
});

test("ORT: signature, and the graph computes the encoder (a plain JS forward pass agrees)", async (t) => {
  const s = await model();
  assert.deepEqual(s.inputNames, ["input_ids", "attention_mask"]);
  assert.deepEqual(s.outputNames, ["last_hidden_state"]);
  const ids = (await tok()).encode("Hello world, this is a test of the tiny encoder.").ids;
  const out = await encode([ids]);
  assert.deepEqual(out.dims, [1, ids.length, H]);
  const reference = referenceStates(ids);
  // float32 against float64: ~1e-6. Tight, because a wrong GELU (the tanh form) moves ~7e-4.
  let worst = 0;
  for (let i = 0; i < ids.length; i++) worst = Math.max(worst, maxDiff(rowStates(out, 0, ids.length).subarray(i * H, (i + 1) * H), reference[i]!, `position ${i}`));
  t.diagnostic(`max |ORT - reference| ${worst.toExponential(2)} over ${ids.length} tokens`);
  assert.ok(worst < 2e-5, `ORT vs reference: max |diff| ${worst}`);
  // Post-LayerNorm: every vector has mean 0 and variance 1.
  const first = rowStates(out, 0, 1);
  const mean = first.reduce((a, v) => a + v, 0) / H;
  assert.ok(Math.abs(mean) < 1e-4 && Math.abs(first.reduce((a, v) => a + (v - mean) ** 2, 0) / H - 1) < 1e-3);
});

test("ORT: right padding with attention_mask 0 leaves each row's states as they are alone", async () => {
  const t = await tok();
  const long = t.encode("The quick brown fox jumps over the lazy dog, twice.").ids;
  const short = t.encode("A short one").ids;
  assert.ok(long.length > short.length + 3);

  const aloneLong = await encode([long]);
  const aloneShort = await encode([short]);
  const batch = await encode([long, short]);
  assert.deepEqual(batch.dims, [2, long.length, H]);
  assertClose(rowStates(batch, 0, long.length), rowStates(aloneLong, 0, long.length), 1e-4, "row 0 (unpadded)");
  assertClose(rowStates(batch, 1, short.length), rowStates(aloneShort, 0, short.length), 1e-4, "row 1 (right-padded)");
  // What the pads hold does not matter either: the mask hides them, not their token.
  const otherPad = await encode([long, short], 0);
  assertClose(rowStates(otherPad, 1, short.length), rowStates(aloneShort, 0, short.length), 1e-4, "row 1 padded with token 0");
  // Without the mask the pads would be seen (the test above tests something).
  const unmasked = (await (await model()).run({
    input_ids: int64([[...short, ...Array<number>(long.length - short.length).fill(TINY_EMBED.eosTokenId)]]),
    attention_mask: int64([Array<number>(long.length).fill(1)]),
  })).last_hidden_state!;
  assert.ok(maxDiff((unmasked.data as Float32Array).subarray(0, short.length * H), rowStates(aloneShort, 0, short.length), "unmasked") > 1e-2);
  // A row that is all padding gives finite numbers (a uniform softmax, not NaN).
  const allPad = await (await model()).run({ input_ids: int64([[1, 2, 3]]), attention_mask: int64([[0, 0, 0]]) });
  for (const x of allPad.last_hidden_state!.data as Float32Array) assert.ok(Number.isFinite(x));
});

test("ORT: different texts give clearly different mean-pooled vectors", async (t) => {
  const texts = [
    "The cat sat on the mat.",
    "Quantum chromodynamics describes the strong interaction.",
    "I like pizza",
    "mat the on sat cat The.",
    "Hello world",
  ];
  const k = await tok();
  const rows = texts.map((s) => k.encode(s).ids);
  const batch = await encode(rows);
  const vectors = rows.map((r, b) => meanPool(batch, b, r.length));
  let highest = -1;
  for (let i = 0; i < texts.length; i++) {
    for (let j = i + 1; j < texts.length; j++) {
      const c = cosine(vectors[i]!, vectors[j]!);
      highest = Math.max(highest, c);
      assert.ok(c < 0.99, `cosine(${JSON.stringify(texts[i])}, ${JSON.stringify(texts[j])}) = ${c}`);
    }
  }
  t.diagnostic(`highest cosine between different texts: ${highest.toFixed(3)} (the same words reordered: ${cosine(vectors[0]!, vectors[3]!).toFixed(3)})`);
  // The pooled vector of a text in a padded batch is its vector alone.
  const alone = await encode([rows[2]!]);
  assert.ok(cosine(meanPool(alone, 0, rows[2]!.length), vectors[2]!) > 0.99999);
});
