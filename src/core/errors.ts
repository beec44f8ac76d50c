/**
 * Errors of MLOS Core (the runtime, its plugins and the library). Like `AxonError`, each carries a
 * stable `code` and a one-line message that says what was wrong and where; input errors also say
 * which input, what the model expects and what it received.
 */
export type MlosErrorCode =
  | "TENSOR_INVALID" // a Tensor constructed with a bad dtype, shape or data
  | "TENSOR_DISPOSED" // a disposed tensor was read or passed to a model
  | "INPUT_INVALID" // the inputs argument is not an object of tensors
  | "INPUT_UNKNOWN" // an input the model does not have
  | "INPUT_MISSING" // an input the model needs was not given
  | "INPUT_DTYPE" // wrong element type
  | "INPUT_RANK" // wrong number of dimensions
  | "INPUT_SHAPE" // a dimension that does not match the signature (or another input's)
  | "INPUT_SIZE" // data whose length does not match the shape
  | "OUTPUT_UNKNOWN" // an output the model does not have
  | "OUTPUT_INVALID" // a preallocated output that does not fit
  | "MODEL_NOT_FOUND" // a path or reference that names no model
  | "MODEL_INVALID" // a model folder that cannot be loaded (no entrypoint, bad manifest ...)
  | "MODEL_DISPOSED" // infer on a disposed model
  | "MODEL_EXISTS" // a served name (and version) that another model holds
  | "MODEL_NOT_READY" // a registered model that is loading, unloaded or failed
  | "QUEUE_FULL" // the model's request queue is at its maximum depth
  | "PLUGIN_NOT_FOUND" // no plugin serves the model's framework/format
  | "PLUGIN_UNAVAILABLE" // the plugin exists but cannot run here (native part missing ...)
  | "PLUGIN_INVALID" // a plugin module that does not implement the interface
  | "RUN_FAILED" // the framework failed while running the model
  | "RUN_ABORTED" // cancelled through an AbortSignal
  | "RUN_TIMEOUT" // exceeded its timeoutMs
  | "POOL_EXHAUSTED" // the tensor pool has no room for the allocation
  | "GENERATION_INVALID" // a generation option out of range (max tokens, temperature, stop ...)
  | "PROMPT_TOO_LONG" // a prompt (with the tokens asked for) longer than the model's context
  | "MESSAGES_INVALID" // chat messages that are malformed (no role, unknown role, content not text)
  | "TEMPLATE_FAILED" // the model's chat template failed to render the messages
  | "NOT_A_LANGUAGE_MODEL" // generate/chat/embed on a model that is not one (or not of that task)
  | "NOT_A_TENSOR_MODEL" // infer with tensors on a model that only generates text (a GGUF model)
  | "KV_CACHE_TOO_SMALL"; // a request that could never fit the KV cache's budget

export class MlosError extends Error {
  readonly code: MlosErrorCode;
  /** Extra machine-readable context (input, expected, received, model, ...). */
  readonly details: Record<string, unknown>;

  constructor(code: MlosErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MlosError";
    this.code = code;
    this.details = details;
  }

  toJSON(): { error: string; code: MlosErrorCode; details: Record<string, unknown> } {
    return { error: this.message, code: this.code, details: this.details };
  }
}

/**
 * An input that does not match the model's signature: `input` names it, `expected` and
 * `received` say how (dtype, shape or rank, as strings).
 */
export class InputError extends MlosError {
  readonly input: string;
  readonly expected: string;
  readonly received: string;
  constructor(code: MlosErrorCode, input: string, expected: string, received: string, message: string) {
    super(code, message, { input, expected, received });
    this.name = "InputError";
    this.input = input;
    this.expected = expected;
    this.received = received;
  }
}

export function isMlosError(e: unknown): e is MlosError {
  return e instanceof MlosError;
}
