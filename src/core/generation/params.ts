/**
 * Generation options as callers give them (the library's `generate`/`stream`/`chat`, and the doors
 * that translate OpenAI's or MLOS v1's request fields into them), and their checked form. Every
 * bad value is a GENERATION_INVALID error naming the option, what it must be and what it was.
 */
import { MlosError } from "../errors.js";

/** Options of one generation request. */
export interface GenerationOptions {
  /** Most new tokens to generate (default: what the context leaves, at most 256). */
  maxTokens?: number;
  /** 0 picks the most likely token (greedy); higher flattens the distribution. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one (0: none). */
  minP?: number;
  /** Divides positive logits (multiplies negative ones) of tokens already in the prompt or output (1: off). */
  repetitionPenalty?: number;
  /** Subtracted from a token's logit once per time it was generated (-2..2). */
  frequencyPenalty?: number;
  /** Subtracted from a token's logit once it was generated (-2..2). */
  presencePenalty?: number;
  /** Makes sampling reproducible: the same seed, prompt and options give the same tokens. */
  seed?: number;
  /** Strings that end the generation (not included in the text). At most 16. */
  stop?: string | readonly string[];
  /** Token ids that end the generation, besides the model's end-of-sequence token. */
  stopTokenIds?: readonly number[];
  /** Keep generating past the end-of-sequence token (for benchmarks). */
  ignoreEos?: boolean;
  /** Number of independent completions of the prompt (1..16). */
  n?: number;
  /** Report each generated token's log-probability. */
  logprobs?: boolean;
  /** And that many most likely alternatives per position (0..20). */
  topLogprobs?: number;
  /** Stops the request: its sequences leave the batch at the next step. */
  signal?: AbortSignal;
  /** Scheduling priority: lower runs first when sequences wait (default 0). */
  priority?: number;
}

/** The checked sampling part of the options (per sequence). */
export interface SamplingParams {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly frequencyPenalty: number;
  readonly presencePenalty: number;
  readonly logprobs: boolean;
  readonly topLogprobs: number;
}

/** All options, checked, with defaults filled in (maxTokens is resolved against the context by the engine). */
export interface CheckedGeneration {
  readonly sampling: SamplingParams;
  readonly maxTokens: number | undefined;
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  readonly stopTokenIds: readonly number[];
  readonly ignoreEos: boolean;
  readonly n: number;
  readonly priority: number;
}

export const MAX_N = 16;
export const MAX_STOP_STRINGS = 16;
export const MAX_TOP_LOGPROBS = 20;

function invalid(option: string, must: string, got: unknown): never {
  const shown = typeof got === "string" ? JSON.stringify(got) : typeof got === "object" ? JSON.stringify(got) : String(got);
  throw new MlosError("GENERATION_INVALID", `${option} must be ${must}, got ${shown}`, { option, received: got });
}

function num(o: Record<string, unknown>, key: string, def: number, min: number, max: number, integer = false): number {
  const v = o[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    invalid(key, `${integer ? "an integer" : "a number"} from ${min} to ${max}`, v);
  }
  return v;
}

/** Checks options and fills defaults; throws GENERATION_INVALID naming the first bad option. */
export function checkGenerationOptions(options: GenerationOptions = {}): CheckedGeneration {
  if (options === null || typeof options !== "object") invalid("options", "an object", options);
  const o = options as Record<string, unknown>;
  let maxTokens: number | undefined;
  if (o.maxTokens !== undefined && o.maxTokens !== null) {
    const v = o.maxTokens;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) invalid("maxTokens", "an integer of at least 1", v);
    maxTokens = v;
  }
  const temperature = num(o, "temperature", 1, 0, 100);
  const topK = num(o, "topK", 0, -1, 1e9, true);
  const topP = num(o, "topP", 1, 0, 1);
  if (topP === 0) invalid("topP", "a number above 0 and at most 1", 0);
  const minP = num(o, "minP", 0, 0, 1);
  const repetitionPenalty = num(o, "repetitionPenalty", 1, 0, 100);
  if (repetitionPenalty === 0) invalid("repetitionPenalty", "a number above 0", 0);
  const frequencyPenalty = num(o, "frequencyPenalty", 0, -2, 2);
  const presencePenalty = num(o, "presencePenalty", 0, -2, 2);
  let seed: number | undefined;
  if (o.seed !== undefined && o.seed !== null) {
    const v = o.seed;
    if (typeof v !== "number" || !Number.isSafeInteger(v)) invalid("seed", "an integer", v);
    seed = v;
  }
  let stop: string[] = [];
  if (o.stop !== undefined && o.stop !== null) {
    const v = o.stop;
    stop = typeof v === "string" ? [v] : Array.isArray(v) ? [...v] : invalid("stop", "a string or an array of strings", v);
    if (stop.length > MAX_STOP_STRINGS) invalid("stop", `at most ${MAX_STOP_STRINGS} strings`, `${stop.length} strings`);
    stop.forEach((s, i) => {
      if (typeof s !== "string" || s.length === 0) invalid(`stop[${i}]`, "a non-empty string", s);
    });
  }
  let stopTokenIds: number[] = [];
  if (o.stopTokenIds !== undefined && o.stopTokenIds !== null) {
    if (!Array.isArray(o.stopTokenIds)) invalid("stopTokenIds", "an array of token ids", o.stopTokenIds);
    stopTokenIds = (o.stopTokenIds as unknown[]).map((t, i) => {
      if (typeof t !== "number" || !Number.isInteger(t) || t < 0) invalid(`stopTokenIds[${i}]`, "a non-negative integer", t);
      return t;
    });
  }
  const n = num(o, "n", 1, 1, MAX_N, true);
  const logprobs = o.logprobs === undefined || o.logprobs === null ? false : typeof o.logprobs === "boolean" ? o.logprobs : invalid("logprobs", "true or false", o.logprobs);
  const topLogprobs = num(o, "topLogprobs", 0, 0, MAX_TOP_LOGPROBS, true);
  const ignoreEos = o.ignoreEos === undefined ? false : typeof o.ignoreEos === "boolean" ? o.ignoreEos : invalid("ignoreEos", "true or false", o.ignoreEos);
  const priority = num(o, "priority", 0, -1e9, 1e9, true);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) invalid("signal", "an AbortSignal", "another value");
  return {
    sampling: { temperature, topK: topK < 0 ? 0 : topK, topP, minP, repetitionPenalty, frequencyPenalty, presencePenalty, logprobs: logprobs || topLogprobs > 0, topLogprobs },
    maxTokens,
    seed,
    stop,
    stopTokenIds,
    ignoreEos,
    n,
    priority,
  };
}

/**
 * The request's options over the model's defaults (`generation_config.json`: temperature, top_k,
 * top_p, min_p, repetition_penalty; `stop`, which packages converted from Ollama carry): what the
 * request leaves unset takes the model's value, as Hugging Face's and vLLM's generation do.
 * `do_sample: false` makes greedy decoding the default.
 */
export function withModelDefaults(options: GenerationOptions, defaults: Readonly<Record<string, unknown>>): GenerationOptions {
  const out: GenerationOptions = { ...options };
  const num = (k: string) => (typeof defaults[k] === "number" && Number.isFinite(defaults[k]) ? (defaults[k] as number) : undefined);
  if (out.temperature === undefined) {
    const t = defaults.do_sample === false ? 0 : num("temperature");
    if (t !== undefined) out.temperature = t;
  }
  if (out.topK === undefined && num("top_k") !== undefined) out.topK = num("top_k");
  if (out.topP === undefined && num("top_p") !== undefined) out.topP = num("top_p");
  if (out.minP === undefined && num("min_p") !== undefined) out.minP = num("min_p");
  if (out.repetitionPenalty === undefined && num("repetition_penalty") !== undefined) out.repetitionPenalty = num("repetition_penalty");
  if (out.stop === undefined) {
    const stop = defaults.stop;
    if (typeof stop === "string") out.stop = [stop];
    else if (Array.isArray(stop) && stop.every((s) => typeof s === "string")) out.stop = stop as string[];
  }
  return out;
}
