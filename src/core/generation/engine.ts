/**
 * The generation engine: continuous batching of text generation over one loaded decoder.
 *
 * Every step, sequences join and leave the running batch: the ones whose prompt is computed
 * decode one token each in one batched run; waiting ones are admitted while the step's token
 * budget, `maxNumSeqs` and the KV cache allow, and their prompts are computed in chunks (a long
 * prompt spreads over several steps instead of stalling the others) in a second run that executes
 * beside the decode run, on another native thread. When the KV cache has no block for a running
 * sequence's next token, the newest sequence is preempted: its blocks are freed and it waits to
 * be recomputed (with what it generated so far) when memory frees up. A request whose signal
 * aborts leaves at the next step and its blocks are freed.
 *
 * The model is any plugin's LoadedModel with Hugging Face's decoder interface (`input_ids`,
 * `attention_mask`, optional `position_ids`, `past_key_values.N.key/value` in, `logits` and
 * `present.N.key/value` out). Runs execute on native worker threads; the event loop does the
 * bookkeeping, gathers and scatters the cache and samples, a few milliseconds per step at most.
 */
import { tryLoadNative } from "../../../bindings/native.js";
import { MlosError } from "../errors.js";
import type { LoadedModel } from "../plugin.js";
import { checkInputs } from "../signature.js";
import { TensorPool } from "../../tensor/pool.js";
import { Tensor } from "../../tensor/tensor.js";
import { KvCache, type KvRow } from "./kv-cache.js";
import type { CheckedGeneration, GenerationOptions } from "./params.js";
import { acceptToken, checkSubmission, enqueueByPriority, failRequest, GenerationRequest, watchAbort, OutputSequence, settleRequest, type EngineObserver, type EngineStats, type GenerationChunk, type GenerationEngine, type GenerationResult } from "./requests.js";
import { Sampler, SeededRandom, type PenaltyState } from "./sampler.js";
import type { ModelText } from "./text.js";

export type { EngineObserver, EngineStats, FinishReason, GenerationChoice, GenerationChunk, GenerationEngine, GenerationResult, TokenLogprob } from "./requests.js";

/** What the engine needs to know about the decoder, read from its signature and config. */
export interface DecoderLayout {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly hasPositionIds: boolean;
}

export interface EngineOptions {
  /** Most sequences in the running batch (default 32). */
  maxNumSeqs?: number;
  /** Most tokens one step of a lane computes, decode and prompt chunks together (padded; default 256). */
  maxBatchedTokens?: number;
  /** Memory for keys and values, in bytes (default 64 MiB, at least one context's worth). */
  kvCacheBytes?: number;
  /** Tokens per KV block (default 16). */
  blockSize?: number;
  /** Where the cache and each step's tensors live (default: a pool of the engine's own, sized for them). */
  pool?: TensorPool;
  /** Reused full blocks of earlier prompts (default on). */
  prefixCache?: boolean;
  /** Most sequences waiting for a slot; a request that would pass it is refused with QUEUE_FULL (default 1024). */
  maxWaiting?: number;
  /**
   * Independent step loops over disjoint halves of the batch (default 2). While one lane's model
   * run is on a worker thread, the event loop samples and prepares the other's, so sampling and
   * bookkeeping overlap the runs instead of adding to them.
   */
  lanes?: number;
}

/** An output sequence as the decoder engine schedules it: its KV blocks, lane and sampling state. */
class Sequence extends OutputSequence {
  declare readonly request: GenerationRequest<Sequence>;
  blocks: number[] = [];
  /** Tokens whose keys and values are in the cache. */
  computed = 0;
  running = false;
  readonly penalties: PenaltyState;
  readonly rng: SeededRandom;
  /** Admission order, for preemption (the newest goes first). */
  admitted = 0;
  /** Which step loop runs it. */
  lane = 0;
  /** Bumped when it is preempted: a run that started before cannot write into its new blocks. */
  epoch = 0;
  constructor(request: GenerationRequest<Sequence>, index: number, text: ModelText) {
    super(request, index, text);
    this.penalties = { generated: new Map(), prompt: new Set(request.prompt) };
    const seed = request.params.seed !== undefined ? request.params.seed + index * 0x9e3779b1 : Math.floor(Math.random() * 2 ** 32);
    this.rng = new SeededRandom(seed);
  }
}

/** One batched run: its rows, and how many tokens each feeds. */
interface Call {
  seqs: Sequence[];
  counts: number[];
}

/**
 * A lane's last decode run, kept: its `present` tensors are the next decode run's past as they
 * are (each row's tokens stay right-aligned, the new one last) when the same sequences decode
 * again, so that the dense past is not gathered from the blocks again at every step.
 */
interface DenseBatch {
  seqs: Sequence[];
  epochs: number[];
  /** Each row's computed tokens after that run. */
  computed: number[];
  /** The run's total length: the next run's past length. */
  T: number;
  keys: Tensor[];
  values: Tensor[];
}

/** Greedy, with no penalty or log-probability that needs the row itself: the next token is its argmax. */
function isPlainGreedy(p: CheckedGeneration): boolean {
  const x = p.sampling;
  return x.temperature === 0 && !x.logprobs && x.repetitionPenalty === 1 && x.frequencyPenalty === 0 && x.presencePenalty === 0;
}

export class DecoderEngine implements GenerationEngine {
  readonly layout: DecoderLayout;
  readonly text: ModelText;
  readonly #model: LoadedModel;
  readonly #cache: KvCache;
  readonly #sampler: Sampler;
  readonly #pool: TensorPool;
  readonly #ownPool: boolean;
  readonly #maxNumSeqs: number;
  readonly #maxBatchedTokens: number;
  readonly #maxWaiting: number;
  readonly #prefixCache: boolean;
  readonly #waiting: Sequence[] = [];
  readonly #running: Sequence[] = [];
  #observer: EngineObserver = {};
  #nextRequest = 1;
  #admissions = 0;
  readonly #lanes: number;
  readonly #active: boolean[];
  readonly #dense: Array<DenseBatch | undefined>;
  #closed = false;
  #preemptions = 0;
  #steps = 0;
  #idle: Array<() => void> = [];

  constructor(model: LoadedModel, text: ModelText, layout: DecoderLayout, options: EngineOptions = {}) {
    this.#model = model;
    this.text = text;
    this.layout = layout;
    this.#maxNumSeqs = options.maxNumSeqs ?? 32;
    this.#maxWaiting = options.maxWaiting ?? 1024;
    this.#lanes = Math.max(1, Math.min(options.lanes ?? 2, 8));
    this.#active = new Array<boolean>(this.#lanes).fill(false);
    this.#dense = new Array<DenseBatch | undefined>(this.#lanes).fill(undefined);
    this.#maxBatchedTokens = Math.max(options.maxBatchedTokens ?? 256, 16);
    this.#prefixCache = options.prefixCache ?? true;
    const blockSize = options.blockSize ?? 16;
    const perToken = layout.layers * 2 * layout.heads * layout.headDim * 4;
    const budget = options.kvCacheBytes ?? Math.max(64 << 20, perToken * (layout.contextLength + blockSize));
    // Its own pool (unless given one): the cache, and each step's dense tensors (logits of the
    // decode and prompt runs, pasts and presents), which the process-wide pool need not make room for.
    const stepBytes = this.#lanes * (2 * this.#maxBatchedTokens * layout.vocabSize * 4 + 4 * (this.#maxNumSeqs + 1) * layout.contextLength * perToken);
    this.#ownPool = options.pool === undefined;
    this.#pool = options.pool ?? new TensorPool({ size: budget + stepBytes + (16 << 20) });
    this.#cache = new KvCache({ layers: layout.layers, heads: layout.heads, headDim: layout.headDim, blockSize }, budget, this.#pool);
    this.#sampler = new Sampler(layout.vocabSize, tryLoadNative()?.argmax);
  }

  get observer(): EngineObserver {
    return this.#observer;
  }
  set observer(o: EngineObserver) {
    this.#observer = o;
  }

  stats(): EngineStats {
    return {
      running: this.#running.length,
      waiting: this.#waiting.length,
      kvBlocksUsed: this.#cache.used,
      kvBlocksTotal: this.#cache.numBlocks,
      kvUsage: this.#cache.used / this.#cache.numBlocks,
      preemptions: this.#preemptions,
      prefixHitTokens: this.#cache.hitTokens,
      prefixQueriedTokens: this.#cache.queriedTokens,
      steps: this.#steps,
    };
  }

  /** The longest prompt plus completion, in tokens. */
  get contextLength(): number {
    return this.layout.contextLength;
  }

  /**
   * Starts generating from `prompt` (token ids). The returned stream yields chunks as tokens are
   * generated; `result` settles with the whole output. Throws GENERATION_INVALID or
   * PROMPT_TOO_LONG before anything is queued.
   */
  submit(prompt: readonly number[], options: GenerationOptions = {}): { stream: AsyncIterable<GenerationChunk>; result: Promise<GenerationResult>; promptTokens: number } {
    if (this.#closed) throw new MlosError("MODEL_DISPOSED", "the model's generation engine is closed");
    const { params, maxTokens } = checkSubmission(prompt, options, { vocabSize: this.layout.vocabSize, contextLength: this.layout.contextLength, text: this.text });
    // A sequence that could never fit the cache would wait forever.
    if (this.#cache.blocksFor(prompt.length + maxTokens) > this.#cache.numBlocks) {
      throw new MlosError("KV_CACHE_TOO_SMALL", `the request needs ${prompt.length + maxTokens} tokens of KV cache; the cache holds ${this.#cache.numBlocks * this.#cache.shape.blockSize}`, { tokens: prompt.length + maxTokens });
    }
    const signal = options.signal;
    if (this.#waiting.length + params.n > this.#maxWaiting) {
      throw new MlosError("QUEUE_FULL", `the model is over capacity: ${this.#waiting.length} sequences wait for a slot (at most ${this.#maxWaiting}); retry later`, { waiting: this.#waiting.length });
    }
    const req = new GenerationRequest<Sequence>(this.#nextRequest++, prompt, params, maxTokens, signal);
    for (let i = 0; i < params.n; i++) {
      const seq = new Sequence(req, i, this.text);
      req.sequences.push(seq);
    }
    enqueueByPriority(this.#waiting, req.sequences);
    this.#observer.promptTokens?.(prompt.length * params.n);
    watchAbort(req, signal, () => this.#kick());
    this.#kick();
    return { stream: req.queue, result: req.result, promptTokens: prompt.length };
  }

  /** Stops taking requests, ends the ones in flight (aborted), and frees the cache once idle. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#waiting, ...this.#running]) s.request.aborted = true;
    this.#kick();
    if (this.#active.some(Boolean)) await new Promise<void>((r) => this.#idle.push(r));
    this.#reap();
    for (let l = 0; l < this.#lanes; l++) this.#dropDense(l);
    this.#cache.dispose();
    if (this.#ownPool) this.#pool.close();
  }

  /** Starts the step loop of every idle lane that has work. */
  #kick(): void {
    for (let lane = 0; lane < this.#lanes; lane++) {
      if (this.#active[lane] || !this.#hasWork(lane)) continue;
      this.#active[lane] = true;
      setImmediate(() => void this.#loop(lane));
    }
  }

  #laneCount(lane: number): number {
    let n = 0;
    for (const s of this.#running) if (s.lane === lane) n++;
    return n;
  }

  /**
   * Whether `lane` may take a waiting sequence: a free slot, and the lane holds fewer than its share
   * of the sequences there are to run (running and waiting, up to maxNumSeqs, split evenly). A
   * lane takes its whole share in one step when the token budget allows, so that a burst of
   * requests is prefilled in a few full runs rather than one or two sequences per run in turn
   * (each run has a fixed cost: on a small model, as much as a dozen rows' work).
   */
  #canAdmit(lane: number): boolean {
    if (this.#running.length >= this.#maxNumSeqs) return false;
    const share = Math.ceil(Math.min(this.#maxNumSeqs, this.#running.length + this.#waiting.length) / this.#lanes);
    return this.#laneCount(lane) < share;
  }

  #hasWork(lane: number): boolean {
    if (this.#closed) return this.#running.length > 0 || this.#waiting.length > 0; // to reap them
    return this.#running.some((s) => s.lane === lane) || (this.#waiting.length > 0 && this.#canAdmit(lane));
  }

  async #loop(lane: number): Promise<void> {
    try {
      for (;;) {
        this.#reap();
        if (this.#closed || !this.#hasWork(lane)) break;
        const ran = await this.#step(lane);
        this.#kick(); // another lane may have work now (arrivals, admissions it should take)
        if (!ran) break;
      }
    } catch (e) {
      // A failed run fails the requests in it; the engine keeps serving the others.
      const err = e instanceof MlosError ? e : new MlosError("RUN_FAILED", `generation step failed: ${(e as Error).message}`, {}, { cause: e });
      for (const s of this.#running.filter((x) => x.lane === lane)) this.#fail(s.request, err);
      this.#reap();
    }
    this.#active[lane] = false;
    if (!this.#closed) this.#kick();
    if (!this.#active.some(Boolean)) for (const r of this.#idle.splice(0)) r();
  }

  /** Removes finished and aborted sequences, frees their blocks, settles their requests. */
  #reap(): void {
    const gone = (s: Sequence) => s.finish !== undefined || s.request.aborted;
    for (const list of [this.#running, this.#waiting]) {
      for (let i = list.length - 1; i >= 0; i--) {
        const s = list[i]!;
        if (!gone(s)) continue;
        list.splice(i, 1);
        this.#pendingSettle.add(s.request);
        this.#cache.release(s.blocks);
        s.blocks = [];
        s.running = false;
        if (s.request.aborted && s.finish === undefined) s.finish = "abort";
      }
    }
    // Settle requests whose every sequence is done.
    const seen = new Set<GenerationRequest>();
    for (const s of [...this.#running, ...this.#waiting]) seen.add(s.request);
    for (const req of this.#pendingSettle) {
      if (seen.has(req)) continue;
      this.#pendingSettle.delete(req);
      this.#settle(req);
    }
  }

  readonly #pendingSettle = new Set<GenerationRequest>();

  #settle(req: GenerationRequest): void {
    settleRequest(req, this.#observer);
  }

  #fail(req: GenerationRequest, err: MlosError): void {
    failRequest(req, err);
  }

  /** One engine step: schedule, run decode and prompt chunks (concurrently), sample, emit. */
  async #step(lane: number): Promise<boolean> {
    this.#steps++;
    const bs = this.#cache.shape.blockSize;
    // 1. Running sequences whose prompt is computed decode one token. Each needs room for it.
    const decode: Sequence[] = [];
    const decoding = this.#running.filter((s) => s.lane === lane && s.computed === s.tokens.length - 1).sort((a, b) => a.admitted - b.admitted);
    for (const s of decoding) {
      if (!s.running) continue; // preempted below for an older one
      const need = this.#cache.blocksFor(s.tokens.length) - s.blocks.length;
      if (need > 0 && !this.#reserve(s, need)) continue;
      decode.push(s);
    }
    // 2. Prompt chunks, under the step's token budget: running sequences mid-prompt first, then
    //    waiting ones in priority order while there are slots and blocks.
    // The prompt run is dense, [rows, longest chunk]: its padded size is what counts (the logits
    // alone are rows x chunk x vocabulary floats).
    let budget = this.#maxBatchedTokens - decode.length;
    const prefill: Call = { seqs: [], counts: [] };
    let prefillS = 0;
    let prefillReal = 0;
    const chunk = (s: Sequence): boolean => {
      const left = s.tokens.length - s.computed;
      const rows = prefill.seqs.length + 1;
      if (rows * prefillS > budget) return false;
      const n = Math.min(left, Math.floor(budget / rows));
      if (n <= 0) return false;
      // Padding computes logits for nothing (the run is [rows, longest chunk] and the vocabulary
      // projection is most of a small model's work): a chunk that would make more than a quarter
      // of the run padding waits for the next step, or the other lane.
      if (rows > 1 && (prefillReal + n) / (rows * Math.max(prefillS, n)) < 0.75) return false;
      const need = this.#cache.blocksFor(s.computed + n) - s.blocks.length;
      if (need > 0) {
        const got = this.#cache.allocate(need);
        if (!got) return false;
        s.blocks.push(...got);
      }
      prefill.seqs.push(s);
      prefill.counts.push(n);
      prefillS = Math.max(prefillS, n);
      prefillReal += n;
      return true;
    };
    for (const s of this.#running) {
      if (s.lane === lane && s.computed < s.tokens.length - 1 && budget > 0 && !decode.includes(s)) chunk(s);
    }
    while (this.#waiting.length > 0 && budget > 0 && this.#canAdmit(lane)) {
      const s = this.#waiting[0]!;
      // Reuse cached blocks of the same prefix (never the last token: its logits are needed).
      if (this.#prefixCache && s.blocks.length === 0) {
        const hit = this.#cache.matchPrefix(s.tokens, s.tokens.length - 1);
        if (hit.length > 0) {
          s.blocks = hit;
          s.computed = hit.length * bs;
          if (s.generated.length === 0) s.request.cachedPromptTokens = Math.max(s.request.cachedPromptTokens, s.computed);
        }
      }
      if (!chunk(s)) {
        if (s.blocks.length > 0 && s.computed > 0 && !prefill.seqs.includes(s)) {
          // Keep its prefix hit for later? Its blocks stay referenced while it waits, which could
          // starve the running ones: give them back.
          this.#cache.release(s.blocks);
          s.blocks = [];
          s.computed = 0;
        }
        break;
      }
      this.#waiting.shift();
      s.running = true;
      s.lane = lane;
      s.admitted = ++this.#admissions;
      this.#running.push(s);
    }
    if (decode.length === 0 && prefill.seqs.length === 0) {
      if (this.#running.length === 0 && this.#waiting.length > 0) {
        // Nothing runs and the first waiting sequence does not fit: it never will.
        const s = this.#waiting[0]!;
        this.#fail(s.request, new MlosError("KV_CACHE_TOO_SMALL", `a sequence of ${s.tokens.length} tokens does not fit the KV cache (${this.#cache.numBlocks} blocks of ${bs})`));
      }
      return false;
    }
    const calls: Array<Promise<void>> = [];
    if (decode.length > 0) calls.push(this.#run({ seqs: decode, counts: decode.map(() => 1) }, lane));
    else this.#dropDense(lane);
    if (prefill.seqs.length > 0) calls.push(this.#run(prefill));
    const results = await Promise.allSettled(calls);
    for (const r of results) if (r.status === "rejected") throw r.reason;
    return true;
  }

  /** Finds `need` blocks for `s`, preempting the newest running sequences if the cache is full. */
  #reserve(s: Sequence, need: number): boolean {
    for (;;) {
      const got = this.#cache.allocate(need);
      if (got) {
        s.blocks.push(...got);
        return true;
      }
      const victim = this.#running.filter((r) => r.running && r !== s).sort((a, b) => b.admitted - a.admitted)[0];
      if (!victim || victim.admitted < s.admitted) {
        // s itself is the newest: it waits.
        this.#preempt(s);
        return false;
      }
      this.#preempt(victim);
    }
  }

  #preempt(s: Sequence): void {
    this.#preemptions++;
    this.#observer.preempted?.();
    this.#cache.release(s.blocks);
    s.blocks = [];
    s.computed = 0;
    s.running = false;
    s.epoch++;
    const i = this.#running.indexOf(s);
    if (i >= 0) this.#running.splice(i, 1);
    this.#waiting.unshift(s);
  }

  /** Builds the dense inputs of a call, runs the model, stores the new keys and values, samples. */
  #dropDense(lane: number): void {
    const d = this.#dense[lane];
    if (!d) return;
    this.#dense[lane] = undefined;
    for (const t of [...d.keys, ...d.values]) t.dispose();
  }

  /** `lane`: a decode run's lane, whose last decode run's presents may serve as this one's past. */
  async #run(call: Call, lane?: number): Promise<void> {
    const { layers, heads, headDim: D, vocabSize: V, hasPositionIds } = this.layout;
    const B = call.seqs.length;
    const S = Math.max(...call.counts);
    const P = Math.max(...call.seqs.map((s) => s.computed));
    const T = P + S;
    const epochs = call.seqs.map((s) => s.epoch);
    const owned: Tensor[] = [];
    const prev = lane !== undefined ? this.#dense[lane] : undefined;
    if (lane !== undefined) this.#dense[lane] = undefined; // this run owns them now (to reuse, or to drop)
    const reuse =
      prev !== undefined &&
      S === 1 &&
      prev.T === P &&
      prev.seqs.length === B &&
      call.seqs.every((s, b) => prev.seqs[b] === s && prev.epochs[b] === s.epoch && prev.computed[b] === s.computed);
    if (prev) owned.push(...prev.keys, ...prev.values);
    try {
      const ids = new BigInt64Array(B * S);
      const pos = new BigInt64Array(B * S);
      const mask = new BigInt64Array(B * T);
      const rows: KvRow[] = [];
      for (let b = 0; b < B; b++) {
        const s = call.seqs[b]!;
        const n = call.counts[b]!;
        const past = s.computed;
        rows.push({ blocks: s.blocks, length: past });
        for (let j = P - past; j < P; j++) mask[b * T + j] = 1n;
        for (let i = 0; i < n; i++) {
          const col = S - n + i;
          ids[b * S + col] = BigInt(s.tokens[past + i]!);
          pos[b * S + col] = BigInt(past + i);
          mask[b * T + P + col] = 1n;
        }
      }
      const inputs: Record<string, Tensor> = {
        input_ids: new Tensor("int64", [B, S], ids),
        attention_mask: new Tensor("int64", [B, T], mask),
      };
      if (hasPositionIds) inputs.position_ids = new Tensor("int64", [B, S], pos);
      const pastK: Float32Array[] = [];
      const pastV: Float32Array[] = [];
      for (let l = 0; l < layers; l++) {
        if (reuse) {
          inputs[`past_key_values.${l}.key`] = prev.keys[l]!;
          inputs[`past_key_values.${l}.value`] = prev.values[l]!;
          continue;
        }
        // The first run of a batch of fresh prompts has no past: empty tensors (the pool has no empty slices).
        const k = P > 0 ? this.#pool.tensor("float32", [B, heads, P, D]) : new Tensor("float32", [B, heads, 0, D], new Float32Array(0));
        const v = P > 0 ? this.#pool.tensor("float32", [B, heads, P, D]) : new Tensor("float32", [B, heads, 0, D], new Float32Array(0));
        owned.push(k, v);
        pastK.push(k.data as Float32Array);
        pastV.push(v.data as Float32Array);
        inputs[`past_key_values.${l}.key`] = k;
        inputs[`past_key_values.${l}.value`] = v;
      }
      if (P > 0 && !reuse) this.#cache.gather(rows, P, pastK, pastV);
      const preallocated: Record<string, Tensor> = {};
      // Only each row's last position is sampled: a model that can skip the others' vocabulary
      // projection (most of a prompt chunk's work on a small model) computes [B, 1, V].
      const lastOnly = this.#model.lastPositionLogits === true;
      const L = lastOnly ? 1 : S;
      const logits = this.#pool.tensor("float32", [B, L, V]);
      owned.push(logits);
      preallocated.logits = logits;
      for (let l = 0; l < layers; l++) {
        const k = this.#pool.tensor("float32", [B, heads, T, D]);
        const v = this.#pool.tensor("float32", [B, heads, T, D]);
        owned.push(k, v);
        preallocated[`present.${l}.key`] = k;
        preallocated[`present.${l}.value`] = v;
      }
      const bindings = checkInputs(this.#model.signature, inputs);
      // Rows that complete a prompt or decode, sampled greedily with nothing that needs the whole
      // distribution: their next token is the argmax, which the plugin may compute where the logits
      // were written (-1: it did not, the sampler does it here).
      const offsets = new Float64Array(B);
      const greedy = new Int32Array(B).fill(-1);
      for (let b = 0; b < B; b++) offsets[b] = (b * L + L - 1) * V;
      const argmax = call.seqs.some((s) => isPlainGreedy(s.request.params)) ? { output: "logits", offsets, width: V, into: greedy } : undefined;
      await this.#model.run({ inputs, bindings, outputs: Object.keys(preallocated), preallocated, argmax, lastPositionLogits: lastOnly, offThread: true });
      // The new tokens' keys and values, into each sequence's blocks.
      const presentK: Float32Array[] = [];
      const presentV: Float32Array[] = [];
      for (let l = 0; l < layers; l++) {
        presentK.push(preallocated[`present.${l}.key`]!.data as Float32Array);
        presentV.push(preallocated[`present.${l}.value`]!.data as Float32Array);
      }
      const scatterRows = call.seqs.map((s, b) => ({ blocks: s.blocks, start: s.computed, count: call.counts[b]! }));
      // A sequence aborted or preempted while the run was in flight has no blocks to write into.
      const live = scatterRows.map((r, b) => {
        const s = call.seqs[b]!;
        return s.blocks.length > 0 && s.running && s.epoch === epochs[b] ? r : undefined;
      });
      this.#scatterLive(live, T, presentK, presentV);
      const data = logits.data as Float32Array;
      const now = performance.now();
      for (let b = 0; b < B; b++) {
        const s = call.seqs[b]!;
        if (!live[b]) continue;
        s.computed += call.counts[b]!;
        if (this.#prefixCache) this.#cache.commitPrefix(s.tokens, s.blocks, s.computed);
        if (s.computed < s.tokens.length) continue; // a prompt chunk: no token yet
        if (s.request.aborted || s.finish !== undefined) continue;
        const row = data.subarray((b * L + L - 1) * V, (b * L + L) * V);
        this.#accept(s, row, now, isPlainGreedy(s.request.params) && greedy[b]! >= 0 ? greedy[b] : undefined);
      }
      // Keep this decode run's presents for the lane's next decode run, when every row lives on.
      if (lane !== undefined && S === 1 && live.every((r) => r !== undefined) && this.#dense[lane] === undefined) {
        const keys: Tensor[] = [];
        const values: Tensor[] = [];
        for (let l = 0; l < layers; l++) {
          keys.push(preallocated[`present.${l}.key`]!);
          values.push(preallocated[`present.${l}.value`]!);
        }
        const kept = new Set<Tensor>([...keys, ...values]);
        for (let i = owned.length - 1; i >= 0; i--) if (kept.has(owned[i]!)) owned.splice(i, 1);
        this.#dense[lane] = { seqs: call.seqs, epochs, computed: call.seqs.map((s) => s.computed), T, keys, values };
      }
    } finally {
      for (const t of owned) t.dispose();
    }
  }

  #scatterLive(rows: Array<{ blocks: number[]; start: number; count: number } | undefined>, T: number, presentK: Float32Array[], presentV: Float32Array[]): void {
    // scatter() indexes rows by their position in the dense tensors: keep positions, skip the dead.
    if (rows.every((r) => r !== undefined)) {
      this.#cache.scatter(rows as Array<{ blocks: number[]; start: number; count: number }>, T, presentK, presentV);
      return;
    }
    rows.forEach((r, b) => {
      if (!r) return;
      const { heads, headDim: D } = this.layout;
      const stride = heads * T * D;
      this.#cache.scatter([r], T, presentK.map((k) => k.subarray(b * stride, (b + 1) * stride)), presentV.map((v) => v.subarray(b * stride, (b + 1) * stride)));
    });
  }

  /** Samples the next token of `s` from its logits row, emits text, checks the stop conditions. */
  #accept(s: Sequence, row: Float32Array, now: number, argmax?: number): void {
    const picked = argmax !== undefined ? { token: argmax, logprob: NaN } : this.#sampler.sample(row, s.request.params.sampling, s.penalties, s.rng);
    if (acceptToken(s, picked, now, { text: this.text, contextLength: this.layout.contextLength, observer: this.#observer })) {
      s.penalties.generated.set(picked.token, (s.penalties.generated.get(picked.token) ?? 0) + 1);
    }
    if (s.finish) this.#pendingSettle.add(s.request);
  }
}
