/**
 * Two hooks on node-llama-cpp's native context object (an internal of node-llama-cpp 3.21.1, the
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
 */
import type { LlamaContext } from "node-llama-cpp";
import { MlosError } from "../../core/errors.js";

type NativeContext = {
  decodeBatch: (...args: unknown[]) => Promise<unknown>;
  sampleToken: (...args: unknown[]) => Promise<unknown>;
};

/** Installs both hooks on `context`; `onDecode` is called as each decode starts. */
export function hookContext(context: LlamaContext, onDecode: () => void): void {
  const native = (context as unknown as { _ctx?: Partial<NativeContext> })._ctx;
  if (!native || typeof native.decodeBatch !== "function" || typeof native.sampleToken !== "function") {
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
