/**
 * What every generation engine shares: the public types of a generation (chunks, results,
 * metrics hooks), the `GenerationEngine` interface that the library and the doors use, and the
 * request side of an engine (the queue a stream drains, the checks of a submission, turning a
 * sampled token into text with stop strings and limits, settling a request). The engines differ
 * in how they compute the next tokens: `DecoderEngine` (engine.ts) batches an ONNX decoder with a
 * KV cache of its own; `LlamaCppEngine` (src/plugins/llamacpp) drives llama.cpp's batched decode.
 */
import { MlosError } from "../errors.js";
import { checkGenerationOptions, withModelDefaults, type CheckedGeneration, type GenerationOptions } from "./params.js";
import { IncrementalDecoder, StopMatcher, type ModelText } from "./text.js";

/** Per-token log-probabilities, when asked. */
export interface TokenLogprob {
  token: number;
  text: string;
  logprob: number;
  top?: Array<{ token: number; text: string; logprob: number }>;
}

export type FinishReason = "stop" | "length" | "abort";

/** A piece of one sequence's output, as a stream yields it. */
export interface GenerationChunk {
  /** Which of the request's `n` sequences. */
  index: number;
  text: string;
  tokenIds: number[];
  logprobs?: TokenLogprob[];
  /** Set on the sequence's last chunk. */
  finishReason?: FinishReason;
}

export interface GenerationChoice {
  index: number;
  text: string;
  tokenIds: number[];
  finishReason: FinishReason;
  logprobs?: TokenLogprob[];
}

export interface GenerationResult {
  choices: GenerationChoice[];
  usage: { promptTokens: number; completionTokens: number; totalTokens: number; cachedPromptTokens: number };
}

/** What the engine reports, for metrics. */
export interface EngineObserver {
  firstToken?(seconds: number): void;
  interToken?(seconds: number): void;
  promptTokens?(n: number): void;
  generatedTokens?(n: number): void;
  preempted?(): void;
  requestDone?(reason: FinishReason, seconds: number): void;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  kvUsage: number;
  preemptions: number;
  prefixHitTokens: number;
  prefixQueriedTokens: number;
  steps: number;
}


/** A language model's generation engine: continuous batching of text generation on one loaded model. */
export interface GenerationEngine {
  /** The model's tokenizer, chat template and special tokens. */
  readonly text: ModelText;
  /** The longest prompt plus completion, in tokens. */
  readonly contextLength: number;
  /** Receives time to first token, inter-token latency and token counts (the server's metrics). */
  observer: EngineObserver;
  stats(): EngineStats;
  /**
   * Starts generating from `prompt` (token ids). The returned stream yields chunks as tokens are
   * generated; `result` settles with the whole output. Throws GENERATION_INVALID,
   * PROMPT_TOO_LONG or QUEUE_FULL before anything is queued.
   */
  submit(prompt: readonly number[], options?: GenerationOptions): { stream: AsyncIterable<GenerationChunk>; result: Promise<GenerationResult>; promptTokens: number };
  /** Stops taking requests, ends the ones in flight (aborted), and frees what the engine holds. */
  close(): Promise<void>;
}

/** A queue that a producer pushes into and an async iterator drains. */
export class ChunkQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiters: Array<{ resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }> = [];
  #done = false;
  #error: unknown;

  push(item: T): void {
    const w = this.#waiters.shift();
    if (w) w.resolve({ value: item, done: false });
    else this.#items.push(item);
  }
  close(error?: unknown): void {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    for (const w of this.#waiters.splice(0)) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.#items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.#done) return this.#error !== undefined ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
      },
      return: () => {
        this.onReturn?.();
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
  /** Called when the consumer stops iterating early (a `break` out of `for await`). */
  onReturn?: () => void;
}

export class GenerationRequest<S extends OutputSequence = OutputSequence> {
  readonly sequences: S[] = [];
  readonly queue = new ChunkQueue<GenerationChunk>();
  readonly arrived = performance.now();
  readonly result: Promise<GenerationResult>;
  resolve!: (r: GenerationResult) => void;
  reject!: (e: unknown) => void;
  cachedPromptTokens = 0;
  aborted = false;
  settled = false;
  constructor(
    readonly id: number,
    readonly prompt: readonly number[],
    readonly params: CheckedGeneration,
    readonly maxTokens: number,
    readonly signal: AbortSignal | undefined,
  ) {
    this.result = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.result.catch(() => {}); // observed through the stream or the caller's await
  }
}


/** One of a request's `n` output sequences: its tokens and what its text has become. */
export class OutputSequence {
  /** Prompt then generated tokens. */
  readonly tokens: number[];
  readonly generated: number[] = [];
  readonly decoder: IncrementalDecoder;
  readonly stopper: StopMatcher;
  text = "";
  logprobs: TokenLogprob[] | undefined;
  finish: FinishReason | undefined;
  lastTokenAt = 0;
  constructor(
    readonly request: GenerationRequest,
    readonly index: number,
    text: ModelText,
  ) {
    this.tokens = [...request.prompt];
    this.decoder = new IncrementalDecoder(text);
    this.stopper = new StopMatcher(request.params.stop);
    if (request.params.sampling.logprobs) this.logprobs = [];
  }
}

const DEFAULT_MAX_TOKENS = 256;

/**
 * Checks a submission against the model (token ids in the vocabulary, prompt and completion
 * within the context, the options over the model's generation defaults) and resolves its number of new tokens (the request's, else the
 * generation config's max_new_tokens, else 256, within the context).
 */
export function checkSubmission(prompt: readonly number[], options: GenerationOptions, model: { vocabSize: number; contextLength: number; text: ModelText }): { params: CheckedGeneration; maxTokens: number } {
  const params = checkGenerationOptions(withModelDefaults(options, model.text.generationDefaults));
  const ctx = model.contextLength;
  if (prompt.length === 0) throw new MlosError("GENERATION_INVALID", "the prompt is empty (no tokens)", { option: "prompt" });
  for (const t of params.stopTokenIds) {
    if (t >= model.vocabSize) throw new MlosError("GENERATION_INVALID", `stopTokenIds has ${t}, past the vocabulary (${model.vocabSize} tokens)`, { option: "stopTokenIds" });
  }
  for (const t of prompt) {
    if (!Number.isInteger(t) || t < 0 || t >= model.vocabSize) throw new MlosError("GENERATION_INVALID", `the prompt has token id ${t}, outside the vocabulary (0..${model.vocabSize - 1})`, { option: "prompt" });
  }
  if (prompt.length >= ctx) {
    throw new MlosError("PROMPT_TOO_LONG", `the prompt has ${prompt.length} tokens; this model's context is ${ctx} tokens, prompt and completion together`, { promptTokens: prompt.length, contextLength: ctx });
  }
  let maxTokens = params.maxTokens;
  if (maxTokens === undefined) {
    const fromConfig = model.text.generationDefaults.max_new_tokens;
    maxTokens = Math.min(ctx - prompt.length, typeof fromConfig === "number" && fromConfig > 0 ? fromConfig : DEFAULT_MAX_TOKENS);
  } else if (prompt.length + maxTokens > ctx) {
    throw new MlosError("PROMPT_TOO_LONG", `the prompt's ${prompt.length} tokens and ${maxTokens} new tokens exceed this model's context of ${ctx} tokens`, { promptTokens: prompt.length, maxTokens, contextLength: ctx });
  }
  if (options.signal?.aborted) throw new MlosError("RUN_ABORTED", "the request was aborted before it started");
  return { params, maxTokens };
}

/** Queues a request's sequences: highest priority (lowest number) first, arrival order within a priority. */
export function enqueueByPriority<S extends OutputSequence>(waiting: S[], sequences: readonly S[]): void {
  for (const seq of sequences) {
    let at = waiting.length;
    while (at > 0 && waiting[at - 1]!.request.params.priority > seq.request.params.priority) at--;
    waiting.splice(at, 0, seq);
  }
}

/**
 * Ends `req` when its signal aborts or its stream's consumer stops reading: marks it aborted and
 * calls `onAbort` (the engine drops or reaps its sequences). The listener goes once it settles.
 */
export function watchAbort(req: GenerationRequest, signal: AbortSignal | undefined, onAbort: () => void): void {
  const abort = () => {
    req.aborted = true;
    onAbort();
  };
  signal?.addEventListener("abort", abort, { once: true });
  req.queue.onReturn = abort;
  req.result.finally(() => signal?.removeEventListener("abort", abort)).catch(() => {});
}

/** A sampled token, with its log-probability and the most likely alternatives when they were asked for. */
export interface PickedToken {
  token: number;
  logprob: number;
  top?: ReadonlyArray<{ token: number; logprob: number }>;
}

/**
 * Takes the next token of `s`: reports it to the observer, ends the sequence on an end-of-text or
 * stop token, a stop string, its token limit or the context's end, and pushes the chunk of text it
 * completes onto the request's stream. Returns whether the token joined the sequence (false for
 * an end-of-text or stop token, which are not part of the output).
 */
export function acceptToken(s: OutputSequence, picked: PickedToken, now: number, model: { text: ModelText; contextLength: number; observer: EngineObserver }): boolean {
  const req = s.request;
  const p = req.params;
  const token = picked.token;
  const observer = model.observer;
  if (s.generated.length === 0) observer.firstToken?.((now - req.arrived) / 1000);
  else observer.interToken?.((now - s.lastTokenAt) / 1000);
  s.lastTokenAt = now;
  observer.generatedTokens?.(1);
  const isEos = !p.ignoreEos && model.text.eosTokenIds.includes(token);
  const isStopToken = p.stopTokenIds.includes(token);
  let finish: FinishReason | undefined;
  let piece = "";
  let lp: TokenLogprob | undefined;
  if (isEos || isStopToken) {
    finish = "stop";
    // The stop token is not part of the text; what was held back is.
    piece = s.stopper.flush();
  } else {
    s.generated.push(token);
    s.tokens.push(token);
    if (s.logprobs) {
      lp = { token, text: model.text.tokenString(token), logprob: picked.logprob };
      if (picked.top) lp.top = picked.top.map((t) => ({ token: t.token, text: model.text.tokenString(t.token), logprob: t.logprob }));
      s.logprobs.push(lp);
    }
    const { emit, stopped } = s.stopper.push(s.decoder.push(token));
    piece = emit;
    if (stopped) finish = "stop";
    else if (s.generated.length >= req.maxTokens || s.tokens.length >= model.contextLength) {
      finish = "length";
      piece += s.stopper.push(s.decoder.flush()).emit + s.stopper.flush();
    }
  }
  s.text += piece;
  if (finish) s.finish = finish;
  req.queue.push({ index: s.index, text: piece, tokenIds: isEos || isStopToken ? [] : [token], ...(lp ? { logprobs: [lp] } : {}), ...(finish ? { finishReason: finish } : {}) });
  return !(isEos || isStopToken);
}

/** Settles a request whose every sequence is done: its result, or RUN_ABORTED when it was aborted. */
export function settleRequest(req: GenerationRequest, observer: EngineObserver): void {
  if (req.settled) return;
  req.settled = true;
  const seconds = (performance.now() - req.arrived) / 1000;
  if (req.aborted) {
    const err = new MlosError("RUN_ABORTED", "the generation was aborted");
    req.queue.close(err);
    req.reject(err);
    observer.requestDone?.("abort", seconds);
    return;
  }
  const choices = req.sequences.map((s) => ({ index: s.index, text: s.text, tokenIds: s.generated, finishReason: s.finish ?? "abort", ...(s.logprobs ? { logprobs: s.logprobs } : {}) }));
  const completion = req.sequences.reduce((n, s) => n + s.generated.length, 0);
  req.queue.close();
  req.resolve({ choices, usage: { promptTokens: req.prompt.length, completionTokens: completion, totalTokens: req.prompt.length + completion, cachedPromptTokens: req.cachedPromptTokens } });
  observer.requestDone?.(choices.every((c) => c.finishReason === "length") ? "length" : "stop", seconds);
}

/** Fails a request with `err` (a failed run): its stream and result reject. */
export function failRequest(req: GenerationRequest, err: MlosError): void {
  if (req.settled) return;
  req.settled = true;
  req.aborted = true;
  for (const s of req.sequences) s.finish ??= "abort";
  req.queue.close(err);
  req.reject(err);
}
