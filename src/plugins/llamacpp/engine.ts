/**
 * The generation engine of a GGUF model: continuous batching on llama.cpp.
 *
 * One llama.cpp context holds `maxNumSeqs` sequences, each with its own KV cells. Every running
 * output sequence owns one of them and evaluates through node-llama-cpp's `evaluate()`, which
 * queues the sequence's pending tokens (its prompt, then one token per step) on the context; the
 * context decodes what every sequence queued in one `llama_decode` call per step, on a native
 * thread, and samples each sequence's next token with llama.cpp's samplers. Sequences therefore
 * join and leave the batch at every step, as in the ONNX engine.
 *
 * What mlos adds on top: the waiting queue (priorities, `maxWaiting`, QUEUE_FULL), admission when
 * a sequence slot frees up, the token budget per step (the context's batch size: a long prompt is
 * spread over several steps, decoding tokens first), stop strings, stop tokens and limits
 * (requests.ts), cancellation (an aborted request leaves at its next token and its cells are
 * cleared), log-probabilities, and the metrics.
 */
import type { LlamaContext, LlamaContextSequence, LlamaModel, SequenceEvaluateOptions, Token, TokenBias } from "node-llama-cpp";
import { MlosError } from "../../core/errors.js";
import type { GenerationOptions } from "../../core/generation/params.js";
import { acceptToken, checkSubmission, enqueueByPriority, failRequest, GenerationRequest, watchAbort, OutputSequence, settleRequest, type EngineObserver, type EngineStats, type GenerationChunk, type GenerationEngine, type GenerationResult, type PickedToken } from "../../core/generation/requests.js";
import type { ModelText } from "../../core/generation/text.js";
import type { NodeLlamaCppModule } from "./llama.js";

/** An output sequence and the llama.cpp sequence (KV cells) it runs on while it runs. */
class SlotSequence extends OutputSequence {
  declare readonly request: GenerationRequest<SlotSequence>;
  slot: LlamaContextSequence | undefined;
}

export interface LlamaCppEngineSettings {
  /** Most sequences waiting for a slot; a request that would pass it is refused with QUEUE_FULL. */
  maxWaiting: number;
  /** The model's context per sequence (prompt and completion), in tokens. */
  contextLength: number;
  vocabSize: number;
  /** Tokens that end generation (end of text, end of turn ...). */
  endTokens: readonly number[];
}

export class LlamaCppEngine implements GenerationEngine {
  readonly text: ModelText;
  readonly contextLength: number;
  observer: EngineObserver = {};
  readonly #m: NodeLlamaCppModule;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #settings: LlamaCppEngineSettings;
  readonly #waiting: SlotSequence[] = [];
  readonly #running = new Set<SlotSequence>();
  #nextRequest = 1;
  #steps = 0;
  #closed = false;
  #idle: Array<() => void> = [];
  #noEnd: TokenBias | undefined;

  constructor(m: NodeLlamaCppModule, model: LlamaModel, context: LlamaContext, text: ModelText, settings: LlamaCppEngineSettings) {
    this.#m = m;
    this.#model = model;
    this.#context = context;
    this.text = text;
    this.#settings = settings;
    this.contextLength = settings.contextLength;
  }

  stats(): EngineStats {
    // llama.cpp gives every sequence its own cells up front: usage is the tokens the running
    // sequences hold against all the cells (a "block" here is one token's cell).
    let used = 0;
    for (const s of this.#running) used += s.tokens.length;
    const total = this.#context.totalSequences * this.contextLength;
    return { running: this.#running.size, waiting: this.#waiting.length, kvBlocksUsed: used, kvBlocksTotal: total, kvUsage: total > 0 ? used / total : 0, preemptions: 0, prefixHitTokens: 0, prefixQueriedTokens: 0, steps: this.#steps };
  }

  /** Counts one decode step (one llama_decode of every sequence's pending tokens; see context-hooks.ts). */
  countStep(): void {
    this.#steps++;
  }

  submit(prompt: readonly number[], options: GenerationOptions = {}): { stream: AsyncIterable<GenerationChunk>; result: Promise<GenerationResult>; promptTokens: number } {
    if (this.#closed) throw new MlosError("MODEL_DISPOSED", "the model's generation engine is closed");
    const { params, maxTokens } = checkSubmission(prompt, options, { vocabSize: this.#settings.vocabSize, contextLength: this.contextLength, text: this.text });
    if (this.#waiting.length + params.n > this.#settings.maxWaiting) {
      throw new MlosError("QUEUE_FULL", `the model is over capacity: ${this.#waiting.length} sequences wait for a slot (at most ${this.#settings.maxWaiting}); retry later`, { waiting: this.#waiting.length });
    }
    const signal = options.signal;
    const req = new GenerationRequest<SlotSequence>(this.#nextRequest++, prompt, params, maxTokens, signal);
    for (let i = 0; i < params.n; i++) req.sequences.push(new SlotSequence(req, i, this.text));
    enqueueByPriority(this.#waiting, req.sequences);
    this.observer.promptTokens?.(prompt.length * params.n);
    watchAbort(req, signal, () => this.#dropWaiting(req));
    this.#admit();
    return { stream: req.queue, result: req.result, promptTokens: prompt.length };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#waiting, ...this.#running]) s.request.aborted = true;
    for (const s of this.#waiting.splice(0)) this.#settleIfDone(s.request);
    if (this.#running.size > 0) await new Promise<void>((r) => this.#idle.push(r));
  }

  /** Removes an aborted request's waiting sequences (its running ones leave at their next token). */
  #dropWaiting(req: GenerationRequest<SlotSequence>): void {
    for (let i = this.#waiting.length - 1; i >= 0; i--) if (this.#waiting[i]!.request === req) this.#waiting.splice(i, 1);
    this.#settleIfDone(req);
  }

  #settleIfDone(req: GenerationRequest<SlotSequence>): void {
    if (req.sequences.some((s) => s.slot !== undefined || this.#waiting.includes(s))) return;
    for (const s of req.sequences) if (req.aborted && s.finish === undefined) s.finish = "abort";
    settleRequest(req, this.observer);
  }

  /** Starts waiting sequences while the context has a free sequence slot. */
  #admit(): void {
    while (!this.#closed && this.#waiting.length > 0 && this.#context.sequencesLeft > 0) {
      const s = this.#waiting.shift()!;
      s.slot = this.#context.getSequence();
      this.#running.add(s);
      void this.#run(s);
    }
  }

  async #run(s: SlotSequence): Promise<void> {
    const slot = s.slot!;
    const req = s.request;
    try {
      const options = this.#evaluateOptions(s);
      const env = { text: this.text, contextLength: this.contextLength, observer: this.observer };
      if (req.params.sampling.logprobs) {
        const top = req.params.sampling.topLogprobs;
        for await (const out of slot.evaluateWithMetadata(tokens(s.tokens), { probabilities: true }, options)) {
          if (req.aborted) break;
          const picked: PickedToken = { token: out.token, logprob: Math.log(out.probabilities.get(out.token) ?? 0) };
          if (top > 0) picked.top = topOf(out.probabilities, top);
          acceptToken(s, picked, performance.now(), env);
          if (s.finish) break;
        }
      } else {
        for await (const token of slot.evaluate(tokens(s.tokens), options)) {
          if (req.aborted) break;
          acceptToken(s, { token, logprob: NaN }, performance.now(), env);
          if (s.finish) break;
        }
      }
      if (s.finish === undefined && !req.aborted) s.finish = "length"; // the context ended the evaluation
    } catch (e) {
      failRequest(req, new MlosError("RUN_FAILED", `llama.cpp generation failed: ${(e as Error).message}`, {}, { cause: e }));
    } finally {
      s.slot = undefined;
      this.#running.delete(s);
      // Its cells are cleared and the slot goes back to the context for the next sequence.
      await slot.dispose();
      this.#settleIfDone(req);
      this.#admit();
      if (this.#running.size === 0) for (const r of this.#idle.splice(0)) r();
    }
  }

  /** llama.cpp's sampling for the request's options (its own samplers, in llama.cpp's order). */
  #evaluateOptions(s: SlotSequence): SequenceEvaluateOptions {
    const p = s.request.params;
    const x = p.sampling;
    const options: SequenceEvaluateOptions = {
      temperature: x.temperature,
      // End tokens are yielded so that requests.ts ends the sequence (and counts them) the same
      // way for every engine.
      yieldEogToken: true,
    };
    if (x.topK > 0) options.topK = x.topK;
    if (x.topP < 1) options.topP = x.topP;
    if (x.minP > 0) options.minP = x.minP;
    if (p.seed !== undefined) options.seed = (p.seed + s.index * 0x9e3779b1) >>> 0;
    if (x.repetitionPenalty !== 1 || x.frequencyPenalty !== 0 || x.presencePenalty !== 0) {
      // llama.cpp applies the three over one window of recent tokens: the whole sequence here
      // (prompt and generated), so frequency and presence count the prompt's tokens too.
      options.repeatPenalty = { punishTokens: () => tokens(s.tokens), maxPunishTokens: this.contextLength, penalty: x.repetitionPenalty, frequencyPenalty: x.frequencyPenalty, presencePenalty: x.presencePenalty };
    }
    if (p.ignoreEos) {
      this.#noEnd ??= this.#endBias();
      options.tokenBias = this.#noEnd;
    }
    return options;
  }

  #endBias(): TokenBias {
    const bias = new this.#m.TokenBias(this.#model.tokenizer);
    for (const t of this.#settings.endTokens) bias.set(t as Token, "never");
    return bias;
  }
}

/** Token ids as node-llama-cpp's branded Token type (plain numbers at run time). */
const tokens = (ids: number[]): Token[] => ids as unknown as Token[];

/** The `n` most likely tokens of a probability map, with their log-probabilities. */
function topOf(probabilities: ReadonlyMap<Token, number>, n: number): Array<{ token: number; logprob: number }> {
  const best: Array<[number, number]> = [];
  for (const [token, p] of probabilities) {
    if (best.length < n) {
      best.push([token, p]);
      best.sort((a, b) => b[1] - a[1]);
    } else if (p > best[n - 1]![1]) {
      best[n - 1] = [token, p];
      best.sort((a, b) => b[1] - a[1]);
    }
  }
  return best.map(([token, p]) => ({ token, logprob: Math.log(p) }));
}
