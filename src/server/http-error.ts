import { AxonError } from "../axon/errors.js";
import { MlosError } from "../core/errors.js";

/**
 * An error with an HTTP status and a stable code. Every route answers failures as
 * `{"error": "<one line>", "code": "<CODE>"}` (KServe v2 clients read `error`).
 */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

const MLOS_STATUS: Partial<Record<string, number>> = {
  INPUT_INVALID: 400,
  INPUT_UNKNOWN: 400,
  INPUT_MISSING: 400,
  INPUT_DTYPE: 400,
  INPUT_RANK: 400,
  INPUT_SHAPE: 400,
  INPUT_SIZE: 400,
  OUTPUT_UNKNOWN: 400,
  OUTPUT_INVALID: 400,
  TENSOR_INVALID: 400,
  TENSOR_DISPOSED: 400,
  MODEL_NOT_FOUND: 404,
  MODEL_INVALID: 422,
  MODEL_DISPOSED: 503,
  MODEL_EXISTS: 409,
  MODEL_NOT_READY: 503,
  QUEUE_FULL: 429,
  PLUGIN_NOT_FOUND: 422,
  PLUGIN_UNAVAILABLE: 501,
  PLUGIN_INVALID: 422,
  RUN_ABORTED: 499,
  RUN_TIMEOUT: 504,
  RUN_FAILED: 500,
  POOL_EXHAUSTED: 503,
  GENERATION_INVALID: 400,
  PROMPT_TOO_LONG: 400,
  MESSAGES_INVALID: 400,
  TEMPLATE_FAILED: 400,
  NOT_A_LANGUAGE_MODEL: 400,
  NOT_A_TENSOR_MODEL: 400,
  KV_CACHE_TOO_SMALL: 400,
};

const AXON_STATUS: Partial<Record<string, number>> = {
  NOT_FOUND: 404,
  NO_MATCHING_VERSION: 404,
  BAD_REFERENCE: 400,
  MANIFEST_PARSE: 422,
  MANIFEST_INVALID: 422,
  REGISTRY_AUTH: 502,
  NETWORK: 502,
  REGISTRY_ERROR: 502,
};

/** Maps any error to a status, a code and a one-line message. */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof MlosError) return new HttpError(MLOS_STATUS[e.code] ?? 500, e.code, e.message, e.code === "QUEUE_FULL" ? { "Retry-After": "1" } : {});
  if (e instanceof AxonError) return new HttpError(AXON_STATUS[e.code] ?? 500, e.code, e.message);
  const message = e instanceof Error ? e.message : String(e);
  return new HttpError(500, "INTERNAL", message.split("\n")[0]!);
}
