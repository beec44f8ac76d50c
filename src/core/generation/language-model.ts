/**
 * Recognising a language model and building its generation engine: a folder in Hugging Face's
 * layout (config.json, tokenizer.json, an ONNX decoder in onnx/model.onnx), with or without an
 * axon.yaml, and a loaded model whose signature is a decoder with a KV cache.
 */
import { access, readFile } from "node:fs/promises";
import path from "node:path";
import type { AxonManifest } from "../../axon/manifest/types.js";
import { MlosError } from "../errors.js";
import type { LoadedModel, ModelSource } from "../plugin.js";
import type { Signature } from "../signature.js";
import { EmbeddingModel, type Pooling } from "./embeddings.js";
import { DecoderEngine, type DecoderLayout, type EngineOptions } from "./engine.js";
import { applyGenerationHeapGrowth } from "./heap-growth.js";
import type { GenerationEngine } from "./requests.js";
import { ModelText } from "./text.js";

/** Decoder files where Hugging Face's exporters put them, most preferred first. */
export const DECODER_FILES = ["onnx/model.onnx", "onnx/decoder_model_merged.onnx", "onnx/decoder_with_past_model.onnx", "model.onnx"];

const exists = (p: string) => access(p).then(() => true, () => false);

/**
 * For a folder without axon.yaml: the decoder file when the folder is a language model in
 * Hugging Face's layout (config.json and tokenizer.json beside an ONNX decoder), else undefined.
 */
export async function findLanguageModelEntrypoint(dir: string): Promise<string | undefined> {
  if (!(await exists(path.join(dir, "config.json"))) || !(await exists(path.join(dir, "tokenizer.json")))) return undefined;
  for (const f of DECODER_FILES) if (await exists(path.join(dir, f))) return f;
  return undefined;
}

/** Whether a signature is that of a decoder with a KV cache in Hugging Face's layout. */
export function isDecoderSignature(sig: Signature): boolean {
  const names = new Set(sig.inputs.map((i) => i.name));
  return names.has("input_ids") && names.has("attention_mask") && names.has("past_key_values.0.key") && sig.outputs.some((o) => o.name === "logits") && sig.outputs.some((o) => o.name === "present.0.key");
}

const numberOf = (v: unknown): number | undefined => (typeof v === "number" && Number.isInteger(v) && v > 0 ? v : undefined);

/** The decoder's layout from its signature, completed from config.json where dims are symbolic. */
export function decoderLayout(sig: Signature, config: Readonly<Record<string, unknown>>, manifest: AxonManifest | undefined, where: string): DecoderLayout {
  if (!isDecoderSignature(sig)) {
    throw new MlosError("NOT_A_LANGUAGE_MODEL", `${where}: not a decoder with a KV cache (inputs input_ids, attention_mask, past_key_values.N.key/value; outputs logits, present.N.key/value); its inputs are ${sig.inputs.map((i) => i.name).join(", ")}`);
  }
  let layers = 0;
  while (sig.inputs.some((i) => i.name === `past_key_values.${layers}.key`)) layers++;
  const past = sig.inputs.find((i) => i.name === "past_key_values.0.key")!;
  if (past.dtype !== "float32") throw new MlosError("NOT_A_LANGUAGE_MODEL", `${where}: its KV cache is ${past.dtype}; float32 caches are supported`);
  const logits = sig.outputs.find((o) => o.name === "logits")!;
  const heads = numberOf(past.shape[1]) ?? numberOf(config.num_key_value_heads) ?? numberOf(config.n_head) ?? numberOf(config.num_attention_heads);
  const hidden = numberOf(config.n_embd) ?? numberOf(config.hidden_size);
  const attnHeads = numberOf(config.n_head) ?? numberOf(config.num_attention_heads);
  const headDim = numberOf(past.shape[3]) ?? numberOf(config.head_dim) ?? (hidden && attnHeads ? hidden / attnHeads : undefined);
  const vocabSize = numberOf(logits.shape[2]) ?? numberOf(config.vocab_size);
  const contextLength = manifest?.spec.llm?.context_length ?? numberOf(config.n_positions) ?? numberOf(config.max_position_embeddings) ?? numberOf(config.n_ctx);
  const missing = [!heads && "heads", !headDim && "head size", !vocabSize && "vocabulary size", !contextLength && "context length"].filter(Boolean);
  if (missing.length > 0) throw new MlosError("MODEL_INVALID", `${where}: cannot tell the decoder's ${missing.join(", ")} from its signature or config.json`);
  return { layers, heads: heads!, headDim: headDim!, vocabSize: vocabSize!, contextLength: contextLength!, hasPositionIds: sig.inputs.some((i) => i.name === "position_ids") };
}

/** Builds the engine for a loaded decoder from its folder's text files (or asks the plugin for its own). */
export async function createGenerationEngine(model: LoadedModel, source: ModelSource, options: EngineOptions = {}): Promise<GenerationEngine> {
  applyGenerationHeapGrowth();
  if (model.createGenerationEngine) return model.createGenerationEngine(options);
  if (!source.dir) throw new MlosError("NOT_A_LANGUAGE_MODEL", `${source.entrypoint}: a bare model file has no tokenizer; load the folder that holds it with its tokenizer.json and config.json`);
  if (!isDecoderSignature(model.signature)) {
    throw new MlosError("NOT_A_LANGUAGE_MODEL", `${source.entrypoint}: not a language model (a decoder with inputs input_ids, attention_mask, past_key_values.N.key/value and outputs logits, present.N.key/value); run it with infer()`);
  }
  const llm = source.manifest?.spec.llm ?? {};
  const text = await ModelText.load(source.dir, {
    tokenizer: llm.tokenizer ?? "tokenizer.json",
    chatTemplate: llm.chat_template,
    generationConfig: llm.generation_config,
    config: llm.config,
  });
  const layout = decoderLayout(model.signature, text.config, source.manifest, source.entrypoint);
  return new DecoderEngine(model, text, layout, options);
}

/** Whether a signature is an encoder's that embeddings can come from (input_ids and attention_mask in, no KV cache). */
export function isEncoderSignature(sig: Signature): boolean {
  const names = new Set(sig.inputs.map((i) => i.name));
  return names.has("input_ids") && names.has("attention_mask") && !names.has("past_key_values.0.key");
}

/** Builds the embeddings side of a loaded encoder from its folder's files. */
export async function createEmbeddingModel(model: LoadedModel, source: ModelSource): Promise<EmbeddingModel> {
  if (!source.dir) throw new MlosError("NOT_A_LANGUAGE_MODEL", `${source.entrypoint}: a bare model file has no tokenizer; load the folder that holds it with its tokenizer.json`);
  if (!isEncoderSignature(model.signature)) throw new MlosError("NOT_A_LANGUAGE_MODEL", `${source.entrypoint}: not an embeddings model (an encoder taking input_ids and attention_mask)`);
  const llm = source.manifest?.spec.llm ?? {};
  const text = await ModelText.load(source.dir, { tokenizer: llm.tokenizer ?? "tokenizer.json", config: llm.config });
  // Pooling: the manifest's, else sentence-transformers' pooling config when the folder has one, else mean.
  let pooling: Pooling = llm.pooling ?? "mean";
  if (!llm.pooling) {
    try {
      const st = JSON.parse(await readFile(path.join(source.dir, "1_Pooling", "config.json"), "utf8")) as Record<string, unknown>;
      if (st.pooling_mode_cls_token === true) pooling = "cls";
    } catch {
      // no sentence-transformers pooling file: mean
    }
  }
  const ctx = llm.context_length ?? numberOf(text.config.max_position_embeddings) ?? numberOf(text.config.n_positions) ?? 512;
  return new EmbeddingModel(model, text, pooling, ctx, source.entrypoint);
}
