/**
 * Text embeddings from an encoder in Hugging Face's feature-extraction layout (`input_ids`,
 * `attention_mask`, optionally `token_type_ids` in; `last_hidden_state` [batch, tokens, hidden]
 * out, or an already pooled [batch, hidden] output): texts are tokenized, run in padded batches,
 * pooled (mean over the attention mask, or the first token's vector) and L2-normalised.
 */
import { MlosError } from "../errors.js";
import type { LoadedModel } from "../plugin.js";
import { checkInputs } from "../signature.js";
import { Tensor } from "../../tensor/tensor.js";
import type { ModelText } from "./text.js";

export type Pooling = "mean" | "cls";

export interface EmbedOptions {
  /** Scale each vector to length 1 (default true, as OpenAI's embeddings are). */
  normalize?: boolean;
  /** Keep the first `dimensions` components (then normalise), as OpenAI's `dimensions` does. */
  dimensions?: number;
  signal?: AbortSignal;
}

export interface EmbeddingResult {
  embeddings: Float32Array[];
  /** Tokens of all the inputs. */
  promptTokens: number;
}

/** Most texts one run takes. */
const MAX_BATCH = 32;

export class EmbeddingModel {
  readonly #model: LoadedModel;
  readonly text: ModelText;
  readonly pooling: Pooling;
  readonly contextLength: number;
  readonly #output: string;
  readonly #pooled: boolean;
  readonly #tokenTypes: boolean;

  constructor(model: LoadedModel, text: ModelText, pooling: Pooling, contextLength: number, where: string) {
    this.#model = model;
    this.text = text;
    this.pooling = pooling;
    this.contextLength = contextLength;
    const sig = model.signature;
    const names = new Set(sig.inputs.map((i) => i.name));
    if (!names.has("input_ids") || !names.has("attention_mask")) {
      throw new MlosError("NOT_A_LANGUAGE_MODEL", `${where}: an embeddings model takes input_ids and attention_mask; its inputs are ${sig.inputs.map((i) => i.name).join(", ")}`);
    }
    const out = sig.outputs.find((o) => o.name === "last_hidden_state") ?? sig.outputs.find((o) => o.name === "sentence_embedding") ?? sig.outputs[0];
    if (!out || out.dtype !== "float32" || (out.shape.length !== 3 && out.shape.length !== 2)) {
      throw new MlosError("NOT_A_LANGUAGE_MODEL", `${where}: no float32 [batch, tokens, hidden] or [batch, hidden] output to embed with`);
    }
    this.#output = out.name;
    this.#pooled = out.shape.length === 2;
    this.#tokenTypes = names.has("token_type_ids");
  }

  /** Embeds texts (or token id lists); one vector per input, in order. */
  async embed(inputs: ReadonlyArray<string | readonly number[]>, options: EmbedOptions = {}): Promise<EmbeddingResult> {
    if (!Array.isArray(inputs) || inputs.length === 0) throw new MlosError("GENERATION_INVALID", "embed: give at least one text", { option: "input" });
    const ids = inputs.map((t, i) => {
      const toks = typeof t === "string" ? this.text.encode(t) : Array.isArray(t) ? [...t] : undefined;
      if (!toks) throw new MlosError("GENERATION_INVALID", `input[${i}] must be a string or an array of token ids`, { option: "input" });
      if (toks.length === 0) throw new MlosError("GENERATION_INVALID", `input[${i}] is empty`, { option: "input" });
      if (toks.length > this.contextLength) throw new MlosError("PROMPT_TOO_LONG", `input[${i}] has ${toks.length} tokens; this model takes at most ${this.contextLength}`, { option: "input", contextLength: this.contextLength });
      return toks;
    });
    const dims = options.dimensions;
    if (dims !== undefined && (!Number.isInteger(dims) || dims < 1)) throw new MlosError("GENERATION_INVALID", `dimensions must be a positive integer, got ${dims}`, { option: "dimensions" });
    const out: Float32Array[] = [];
    for (let start = 0; start < ids.length; start += MAX_BATCH) {
      if (options.signal?.aborted) throw new MlosError("RUN_ABORTED", "the embeddings request was aborted");
      out.push(...(await this.#run(ids.slice(start, start + MAX_BATCH), options.signal)));
    }
    const normalize = options.normalize ?? true;
    const embeddings = out.map((v) => {
      if (dims !== undefined && dims > v.length) throw new MlosError("GENERATION_INVALID", `dimensions ${dims} is more than the model's ${v.length}`, { option: "dimensions" });
      const w = dims !== undefined ? v.slice(0, dims) : v;
      if (normalize) {
        let n = 0;
        for (let i = 0; i < w.length; i++) n += w[i]! * w[i]!;
        const inv = n > 0 ? 1 / Math.sqrt(n) : 0;
        for (let i = 0; i < w.length; i++) w[i]! *= inv;
      }
      return w;
    });
    return { embeddings, promptTokens: ids.reduce((s, t) => s + t.length, 0) };
  }

  /** One padded batch (right padding, masked): its pooled vectors. */
  async #run(batch: number[][], signal: AbortSignal | undefined): Promise<Float32Array[]> {
    const B = batch.length;
    const S = Math.max(...batch.map((t) => t.length));
    const ids = new BigInt64Array(B * S);
    const mask = new BigInt64Array(B * S);
    batch.forEach((t, b) => {
      for (let i = 0; i < t.length; i++) {
        ids[b * S + i] = BigInt(t[i]!);
        mask[b * S + i] = 1n;
      }
    });
    const inputs: Record<string, Tensor> = { input_ids: new Tensor("int64", [B, S], ids), attention_mask: new Tensor("int64", [B, S], mask) };
    if (this.#tokenTypes) inputs.token_type_ids = new Tensor("int64", [B, S], new BigInt64Array(B * S));
    const bindings = checkInputs(this.#model.signature, inputs);
    const result = await this.#model.run({ inputs, bindings, outputs: [this.#output], preallocated: {}, signal });
    const t = result[this.#output]!;
    try {
      const data = t.data as Float32Array;
      const H = t.shape[t.shape.length - 1]!;
      return batch.map((toks, b) => {
        const v = new Float32Array(H);
        if (this.#pooled) {
          v.set(data.subarray(b * H, (b + 1) * H));
        } else if (this.pooling === "cls") {
          v.set(data.subarray(b * S * H, b * S * H + H));
        } else {
          for (let i = 0; i < toks.length; i++) {
            const row = (b * S + i) * H;
            for (let h = 0; h < H; h++) v[h]! += data[row + h]!;
          }
          for (let h = 0; h < H; h++) v[h]! /= toks.length;
        }
        return v;
      });
    } finally {
      for (const x of Object.values(result)) x.dispose();
    }
  }
}
