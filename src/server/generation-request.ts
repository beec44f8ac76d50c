/**
 * Generation options from the fields of a JSON request (OpenAI's names, which MLOS v1's
 * `parameters` share): `max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`,
 * `repetition_penalty`, `frequency_penalty`, `presence_penalty`, `seed`, `stop`,
 * `stop_token_ids`, `ignore_eos`, `n`, `priority`. Type errors are 400s naming the field; the
 * ranges are checked by the core (GENERATION_INVALID, also a 400).
 */
import type { GenerationOptions } from "../core/generation/params.js";
import { HttpError } from "./http-error.js";

const NUMBER_FIELDS: Array<[string, keyof GenerationOptions]> = [
  ["max_tokens", "maxTokens"],
  ["max_completion_tokens", "maxTokens"],
  ["max_new_tokens", "maxTokens"],
  ["temperature", "temperature"],
  ["top_p", "topP"],
  ["top_k", "topK"],
  ["min_p", "minP"],
  ["repetition_penalty", "repetitionPenalty"],
  ["frequency_penalty", "frequencyPenalty"],
  ["presence_penalty", "presencePenalty"],
  ["seed", "seed"],
  ["n", "n"],
  ["priority", "priority"],
];

/** Options from `body`'s fields; `where` names the route in errors. */
export function generationOptionsFrom(body: Record<string, unknown>, where: string): GenerationOptions {
  const out: Record<string, unknown> = {};
  for (const [field, option] of NUMBER_FIELDS) {
    const v = body[field];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number") throw new HttpError(400, "GENERATION_INVALID", `${where}: "${field}" must be a number, got ${JSON.stringify(v)}`);
    if (field === "max_tokens" || field === "max_completion_tokens" || field === "max_new_tokens") {
      if (!Number.isInteger(v) || v < 1) throw new HttpError(400, "GENERATION_INVALID", `${where}: "${field}" must be an integer of at least 1, got ${v}`);
    }
    out[option] = v;
  }
  if (body.stop !== undefined && body.stop !== null) out.stop = body.stop;
  if (body.stop_token_ids !== undefined && body.stop_token_ids !== null) out.stopTokenIds = body.stop_token_ids;
  if (body.ignore_eos !== undefined) out.ignoreEos = body.ignore_eos;
  return out as GenerationOptions;
}
