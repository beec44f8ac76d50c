/**
 * Token sampling from one row of logits: penalties (repetition, frequency, presence), then greedy
 * or temperature sampling restricted by top-k, min-p and top-p, from a per-sequence seeded
 * generator so that a `seed` reproduces a run exactly. Log-probabilities, when asked, are those
 * of the model's own distribution (log-softmax of the raw logits), as OpenAI's API reports them.
 *
 * Everything works in place on the row (the engine owns the logits buffer) and in O(vocabulary):
 * no sort of the vocabulary, so a step over 32 sequences of a 50k vocabulary stays in the
 * low milliseconds. Top-k takes the k-th largest value by selection; top-p finds its probability
 * threshold by bisection on the cumulative mass.
 */
import type { SamplingParams } from "./params.js";

/** A 32-bit generator (mulberry32): small, fast, and the same sequence on every machine. */
export class SeededRandom {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** What the sequence has seen, for the penalties: counts of generated tokens, and the prompt's. */
export interface PenaltyState {
  /** Token -> times generated so far. */
  readonly generated: Map<number, number>;
  /** Tokens of the prompt (the repetition penalty applies to them too). */
  readonly prompt: ReadonlySet<number>;
}

export interface SampledToken {
  token: number;
  /** log P(token) under the model's distribution; NaN when not asked. */
  logprob: number;
  /** The most likely tokens and their log-probabilities, when `topLogprobs` > 0. */
  top?: Array<{ token: number; logprob: number }>;
}

/** log(sum(exp(row))), stable. */
export function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return max + Math.log(sum);
}

/** The indices of the `k` largest values, largest first. */
export function topIndices(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (best.length === k && v <= row[best[k - 1]!]!) continue;
    let j = best.length < k ? best.length : k - 1;
    if (best.length < k) best.push(i);
    while (j > 0 && row[best[j - 1]!]! < v) {
      best[j] = best[j - 1]!;
      j--;
    }
    best[j] = i;
  }
  return best;
}

/** The k-th largest value of `values` (1-based k), by quickselect on a copy held in `scratch`. */
function kthLargest(values: Float32Array, k: number, scratch: Float32Array): number {
  const a = scratch.subarray(0, values.length);
  a.set(values);
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1; // index in descending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Samples tokens for sequences of one model. Holds scratch buffers of the vocabulary's size, so
 * one Sampler per engine (not per sequence) and calls from one thread.
 */
export class Sampler {
  readonly #probs: Float32Array;
  readonly #scratch: Float32Array;

  readonly #argmax: ((values: Float32Array, start: number, length: number) => number) | undefined;

  /** `argmax`: the native addon's (sampling/argmax.h), ~10x a JavaScript loop on a vocabulary-sized row; absent, a loop. */
  constructor(
    readonly vocabSize: number,
    argmax?: (values: Float32Array, start: number, length: number) => number,
  ) {
    this.#probs = new Float32Array(vocabSize);
    this.#scratch = new Float32Array(vocabSize);
    this.#argmax = argmax;
  }

  /**
   * Picks the next token from `logits` (one row of `vocabSize`, modified in place by the
   * penalties). `rng` is the sequence's generator.
   */
  sample(logits: Float32Array, params: SamplingParams, penalties: PenaltyState, rng: SeededRandom): SampledToken {
    const V = this.vocabSize;
    const row = logits.length === V ? logits : logits.subarray(0, V);
    // Log-probabilities of the raw distribution are taken before any processing.
    let logZ = NaN;
    let top: SampledToken["top"];
    if (params.logprobs) {
      logZ = logSumExp(row);
      if (params.topLogprobs > 0) top = topIndices(row, params.topLogprobs).map((t) => ({ token: t, logprob: row[t]! - logZ }));
    }
    const raw = params.logprobs ? (t: number) => row[t]! - logZ : () => NaN;
    // Penalties touch only the tokens seen.
    if (params.repetitionPenalty !== 1) {
      const p = params.repetitionPenalty;
      const apply = (t: number) => {
        if (t < V) row[t] = row[t]! > 0 ? row[t]! / p : row[t]! * p;
      };
      for (const t of penalties.prompt) apply(t);
      for (const t of penalties.generated.keys()) if (!penalties.prompt.has(t)) apply(t);
    }
    if (params.frequencyPenalty !== 0 || params.presencePenalty !== 0) {
      for (const [t, n] of penalties.generated) if (t < V) row[t] = row[t]! - params.frequencyPenalty * n - params.presencePenalty;
    }
    if (params.temperature === 0) {
      if (this.#argmax) {
        const best = this.#argmax(row, 0, V);
        return { token: best, logprob: raw(best), top };
      }
      let best = 0;
      let bestV = -Infinity;
      for (let i = 0; i < V; i++) {
        if (row[i]! > bestV) {
          bestV = row[i]!;
          best = i;
        }
      }
      return { token: best, logprob: raw(best), top };
    }
    // Probabilities (unnormalised) at the temperature.
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (row[i]! > max) max = row[i]!;
    const inv = 1 / params.temperature;
    const probs = this.#probs;
    let total = 0;
    for (let i = 0; i < V; i++) {
      const p = Math.exp((row[i]! - max) * inv);
      probs[i] = p;
      total += p;
    }
    // The smallest probability kept: top-k, min-p (relative to the largest, which is exp(0) = 1),
    // then top-p over what is left.
    let floor = 0;
    if (params.topK > 0 && params.topK < V) floor = Math.max(floor, kthLargest(probs, params.topK, this.#scratch));
    if (params.minP > 0) floor = Math.max(floor, params.minP);
    if (params.topP < 1) {
      let kept = 0;
      if (floor > 0) {
        for (let i = 0; i < V; i++) if (probs[i]! >= floor) kept += probs[i]!;
      } else kept = total;
      const want = params.topP * kept;
      // The largest threshold whose kept mass still reaches `want`.
      let lo = floor;
      let hi = 1;
      for (let it = 0; it < 30; it++) {
        const mid = (lo + hi) / 2;
        let mass = 0;
        for (let i = 0; i < V; i++) if (probs[i]! >= mid) mass += probs[i]!;
        if (mass >= want) lo = mid;
        else hi = mid;
      }
      floor = lo;
    }
    let kept = 0;
    if (floor > 0) {
      for (let i = 0; i < V; i++) if (probs[i]! >= floor) kept += probs[i]!;
    } else kept = total;
    let r = rng.next() * kept;
    let last = -1;
    for (let i = 0; i < V; i++) {
      const p = probs[i]!;
      if (p < floor) continue;
      last = i;
      r -= p;
      if (r < 0) return { token: i, logprob: raw(i), top };
    }
    return { token: last, logprob: raw(last), top }; // rounding left a sliver: the last kept token
  }
}
