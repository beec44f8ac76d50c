/**
 * Hooks on node-llama-cpp's context (an internal of node-llama-cpp 3.21.1, the
 * version mlos pins; checked at load, so another version fails loudly instead of misbehaving):
 *
 * 1. Sampling after a batched decode. node-llama-cpp samples every sequence of a decoded batch at
 *    once, each on its own libuv thread. llama.cpp reorders a batch's output rows in place on the
 *    first `llama_get_logits_ith()` after a decode whose batch it split by sequence
 *    (`output_reorder`), so concurrent first calls swap rows twice and sequences sample from
 *    other sequences' logits: greedy generation in a batch of 16 differed from the same requests
 *    one at a time, and from one run to the next (with one libuv thread it did not). Here the
 *    first sampling after each decode runs alone; the others start once it is done, in parallel.
 * 2. Counting decodes: each `decodeBatch()` is one engine step (one llama_decode of every
 *    sequence's pending tokens).
 * 3. The order of a batch (`batchInSequenceOrder`, the context's item prioritisation strategy).
 *    node-llama-cpp fills a batch in the order the sequences queued their tokens, and a sequence
 *    id freed by one request is handed to the next in the order the requests ended; llama.cpp
 *    (which keeps each sequence's cache cells apart) then split the decodes of such a shuffled
 *    batch into more and smaller pieces: with 32 streams on a 40M-parameter model, every round of
 *    32 requests cost more than the one before, from 1.7 to 2.9 ms of CPU per token after five,
 *    while the same decodes in sequence-id order stayed at 1.4 ms. Each batch is put in
 *    sequence-id order: every sequence's next token first, then prompt tokens while the batch
 *    has room.
 */
import type { CustomBatchingPrioritizationStrategy, LlamaContext, PrioritizedBatchItem } from "node-llama-cpp";
import { MlosError } from "../../core/errors.js";

type NativeContext = {
  decodeBatch: (...args: unknown[]) => Promise<unknown>;
  sampleToken: (...args: unknown[]) => Promise<unknown>;
};

/** Installs both hooks on `context`; `onDecode` is called as each decode starts. */
export function hookContext(context: LlamaContext, onDecode: () => void): void {
  const native = (context as unknown as { _ctx?: Partial<NativeContext> })._ctx;
  if (!native || !hasQueuedDecodes(context) || typeof native.decodeBatch !== "function" || typeof native.sampleToken !== "function") {
    throw new MlosError("PLUGIN_UNAVAILABLE", "the llamacpp plugin needs node-llama-cpp 3.21.1 (its context has no decodeBatch/sampleToken to hook): npm install node-llama-cpp@3.21.1", { plugin: "llamacpp" });
  }
  const decodeBatch = native.decodeBatch.bind(native);
  const sampleToken = native.sampleToken.bind(native);
  /** The first sampling since the last decode, which the others wait for; undefined until one starts. */
  let first: Promise<unknown> | undefined;
  let decoded = false;
  // The addon's methods are read-only properties of its prototype: own properties shadow them.
  const define = (name: keyof NativeContext, value: NativeContext[keyof NativeContext]) => Object.defineProperty(native, name, { value, configurable: true, writable: true });
  define("decodeBatch", (...args: unknown[]) => {
    onDecode();
    decoded = true;
    first = undefined;
    return decodeBatch(...args);
  });
  define("sampleToken", (...args: unknown[]) => {
    if (decoded && first === undefined) {
      const p = sampleToken(...args);
      first = p.then(
        () => undefined,
        () => undefined,
      );
      return p;
    }
    const gate = first;
    return gate ? gate.then(() => sampleToken(...args)) : sampleToken(...args);
  });
}

type QueuedDecode = { readonly tokens: readonly unknown[]; readonly sequenceId: number };

/**
 * The context's item prioritisation strategy (see 3. above). `context()` gives the context once it
 * exists (the strategy is given to createContext, before there is one).
 */
export function batchInSequenceOrder(context: () => LlamaContext | undefined): CustomBatchingPrioritizationStrategy {
  return ({ items, size }) => {
    // node-llama-cpp's batch items share their tokens array with the queued decodes that say
    // which sequence they are for.
    const queued = (context() as unknown as { _queuedDecodes?: QueuedDecode[] } | undefined)?._queuedDecodes ?? [];
    const ids = new Map<readonly unknown[], number>(queued.map((q) => [q.tokens, q.sequenceId]));
    const order: PrioritizedBatchItem[] = [...items].sort((a, b) => (ids.get(a.tokens) ?? 0) - (ids.get(b.tokens) ?? 0)).map((item) => ({ item, processAmount: 0 }));
    let left = size;
    for (const o of order) {
      if (left <= 0) break;
      o.processAmount = 1;
      left--;
    }
    for (const o of order) {
      if (left <= 0) break;
      const more = Math.min(o.item.tokens.length - o.processAmount, left);
      o.processAmount += more;
      left -= more;
    }
    return order.filter((o) => o.processAmount > 0);
  };
}

/** Whether `context` has the internal the strategy reads (node-llama-cpp 3.21.1 does). */
export function hasQueuedDecodes(context: LlamaContext): boolean {
  return Array.isArray((context as unknown as { _queuedDecodes?: unknown })._queuedDecodes);
}
