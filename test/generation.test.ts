// The generation engine on the bundled tiny-gpt, in-process: greedy tokens are the same alone, in
// a batch whose members join and leave at different steps, and in a plain loop over the ONNX
// model that recomputes everything each step (no KV cache at all); seeds reproduce; the prefix
// cache and a KV budget too small for the load change no token; aborts free their blocks; bad
// options are refused with their codes.
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import ort from "onnxruntime-node";
import { Axon, MlosError, Runtime, type Model } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { applyGenerationHeapGrowth, DEFAULT_HEAP_GROWING_PERCENT } from "../src/core/generation/heap-growth.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const MODEL_DIR = path.join(ROOT, "dist", "demo-models", "tiny-gpt");
const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";

/** Greedy tokens by recomputing the whole sequence every step with an empty past: no cache to get wrong. */
async function plainGreedy(session: ort.InferenceSession, prompt: number[], steps: number): Promise<number[]> {
  const ids = [...prompt];
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    const n = ids.length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, n]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(n).fill(1n), [1, n]),
      position_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, n]),
    };
    for (let l = 0; l < 2; l++) {
      feeds[`past_key_values.${l}.key`] = new ort.Tensor("float32", new Float32Array(0), [1, 4, 0, 16]);
      feeds[`past_key_values.${l}.value`] = new ort.Tensor("float32", new Float32Array(0), [1, 4, 0, 16]);
    }
    const r = await session.run(feeds);
    const logits = r.logits!.data as Float32Array;
    const V = r.logits!.dims[2]!;
    const row = logits.subarray((n - 1) * V, n * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
    out.push(best);
    ids.push(best);
  }
  return out;
}

describe("the generation engine", { skip }, () => {
  let runtime: Runtime;
  let llm: Model;
  before(async () => {
    runtime = new Runtime();
    llm = await runtime.load(MODEL_DIR, { intraOpThreads: 1 });
  });
  after(async () => {
    await llm?.dispose();
  });

  it("sets V8's heap growth for generation unless told otherwise (MLOS_V8_HEAP_GROWING_PERCENT)", () => {
    assert.equal(applyGenerationHeapGrowth({}), DEFAULT_HEAP_GROWING_PERCENT);
    assert.equal(applyGenerationHeapGrowth({ MLOS_V8_HEAP_GROWING_PERCENT: "150" }), 150);
    for (const keep of ["0", "-5", "1.5", "lots"]) assert.equal(applyGenerationHeapGrowth({ MLOS_V8_HEAP_GROWING_PERCENT: keep }), 0, keep);
    assert.equal(applyGenerationHeapGrowth({}), DEFAULT_HEAP_GROWING_PERCENT); // back to the default for the tests below
  });

  it("recognises the folder as a language model", () => {
    assert.equal(llm.isLanguageModel, true);
  });

  it("greedy: alone, in a batch of 16 that joins and leaves, and a plain loop without a cache give the same tokens", async () => {
    const engine = await llm.generationEngine();
    const prompts = Array.from({ length: 16 }, (_, i) => engine.text.encode(`Prompt ${i}:${" word".repeat(i * 2)} end`));
    const lengths = prompts.map((_, i) => 6 + ((i * 5) % 17)); // sequences leave at different steps
    const alone: number[][] = [];
    for (let i = 0; i < prompts.length; i++) alone.push((await llm.generate(prompts[i]!, { maxTokens: lengths[i], temperature: 0, ignoreEos: true })).choices[0]!.tokenIds);
    // Staggered arrivals: some join while others are mid-way.
    const batched = await Promise.all(
      prompts.map(async (p, i) => {
        await new Promise((r) => setTimeout(r, (i % 4) * 15));
        return (await llm.generate(p, { maxTokens: lengths[i], temperature: 0, ignoreEos: true })).choices[0]!.tokenIds;
      }),
    );
    assert.deepEqual(batched, alone);
    const session = await ort.InferenceSession.create(path.join(MODEL_DIR, "onnx", "model.onnx"), { intraOpNumThreads: 1 });
    try {
      for (const i of [0, 7, 15]) assert.deepEqual(await plainGreedy(session, prompts[i]!, lengths[i]!), alone[i], `prompt ${i}`);
    } finally {
      await session.release();
    }
  });

  it("seeded sampling reproduces; another seed differs", async () => {
    const opts = { maxTokens: 16, temperature: 1.2, topK: 50, topP: 0.9, seed: 7 };
    const a = await llm.generate("Seeds", opts);
    const b = await llm.generate("Seeds", opts);
    const c = await llm.generate("Seeds", { ...opts, seed: 8 });
    assert.deepEqual(a.choices[0]!.tokenIds, b.choices[0]!.tokenIds);
    assert.notDeepEqual(a.choices[0]!.tokenIds, c.choices[0]!.tokenIds);
    // n sequences of one request draw from their own generators, reproducibly.
    const n1 = await llm.generate("Seeds", { ...opts, n: 3 });
    const n2 = await llm.generate("Seeds", { ...opts, n: 3 });
    assert.deepEqual(n1.choices.map((x) => x.tokenIds), n2.choices.map((x) => x.tokenIds));
    assert.ok(new Set(n1.choices.map((x) => x.tokenIds.join())).size > 1);
  });

  it("the prefix cache reuses a shared prompt and changes no token", async () => {
    const prefix = " The quick brown fox jumps over the lazy dog.".repeat(4); // 40+ tokens: two full blocks
    const first = await llm.generate(prefix + " One", { maxTokens: 10, temperature: 0 });
    const second = await llm.generate(prefix + " One", { maxTokens: 10, temperature: 0 });
    assert.ok(second.usage.cachedPromptTokens >= 32, `cached ${second.usage.cachedPromptTokens}`);
    assert.deepEqual(second.choices[0]!.tokenIds, first.choices[0]!.tokenIds);
    // Without the cache, in a fresh engine: the same tokens.
    const cold = new Runtime();
    const m = await cold.load(MODEL_DIR, { intraOpThreads: 1, generation: { prefixCache: false } });
    try {
      const r = await m.generate(prefix + " One", { maxTokens: 10, temperature: 0 });
      assert.equal(r.usage.cachedPromptTokens, 0);
      assert.deepEqual(r.choices[0]!.tokenIds, first.choices[0]!.tokenIds);
    } finally {
      await m.dispose();
    }
  });

  it("a KV cache too small for the load makes requests wait (and preempts), never fail or change tokens", async () => {
    const tight = new Runtime();
    // 6 blocks of 16 tokens: room for two of these sequences at a time.
    const m = await tight.load(MODEL_DIR, { intraOpThreads: 1, generation: { kvCacheBytes: 6 * 16 * 1024, prefixCache: false } });
    try {
      const engine = await m.generationEngine();
      assert.equal(engine.stats().kvBlocksTotal, 6);
      const prompts = Array.from({ length: 8 }, (_, i) => `Tight ${i} and some more words`);
      const expected = [];
      for (const p of prompts) expected.push((await llm.generate(p, { maxTokens: 30, temperature: 0, ignoreEos: true })).choices[0]!.tokenIds);
      const got = await Promise.all(prompts.map((p) => m.generate(p, { maxTokens: 30, temperature: 0, ignoreEos: true })));
      assert.deepEqual(got.map((g) => g.choices[0]!.tokenIds), expected);
      assert.ok(engine.stats().preemptions > 0, "the cache was full: some sequence was preempted");
      assert.equal(engine.stats().kvBlocksUsed, 0);
      // A request that could never fit is refused at once.
      await assert.rejects(m.generate("x", { maxTokens: 200 }), (e: unknown) => e instanceof MlosError && e.code === "KV_CACHE_TOO_SMALL");
    } finally {
      await m.dispose();
    }
  });

  it("an aborted request and a stream left early free their blocks", async () => {
    const engine = await llm.generationEngine();
    const ac = new AbortController();
    const p = llm.generate("Abort me", { maxTokens: 200, ignoreEos: true, signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(p, (e: unknown) => e instanceof MlosError && e.code === "RUN_ABORTED");
    let chunks = 0;
    for await (const c of llm.stream("Leave early", { maxTokens: 200, ignoreEos: true })) {
      if (c.tokenIds.length > 0 && ++chunks === 3) break;
    }
    for (let i = 0; i < 50 && (engine.stats().running > 0 || engine.stats().kvBlocksUsed > 0); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.stats().running, 0);
    assert.equal(engine.stats().kvBlocksUsed, 0);
  });

  it("stop strings end the text before them; stop token ids end it too", async () => {
    const free = (await llm.generate("Stops", { maxTokens: 20, temperature: 0 })).choices[0]!;
    const cut = free.text.slice(5, 8);
    const stopped = (await llm.generate("Stops", { maxTokens: 20, temperature: 0, stop: cut })).choices[0]!;
    assert.equal(stopped.finishReason, "stop");
    assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(cut)));
    const byToken = (await llm.generate("Stops", { maxTokens: 20, temperature: 0, stopTokenIds: [free.tokenIds[3]!] })).choices[0]!;
    assert.equal(byToken.finishReason, "stop");
    assert.deepEqual(byToken.tokenIds, free.tokenIds.slice(0, 3));
  });

  it("refuses bad options and prompts with their codes, and keeps generating", async () => {
    const code = (c: string) => (e: unknown) => e instanceof MlosError && e.code === c;
    await assert.rejects(llm.generate("x", { maxTokens: 0 }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("x", { maxTokens: -3 }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("x", { n: 1000 }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("x", { temperature: -1 }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("x", { topP: 0 }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("x", { stop: [""] }), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate("word ".repeat(300)), code("PROMPT_TOO_LONG"));
    await assert.rejects(llm.generate("x", { maxTokens: 300 }), code("PROMPT_TOO_LONG"));
    await assert.rejects(llm.generate([], {}), code("GENERATION_INVALID"));
    await assert.rejects(llm.generate([1, 99999999]), code("GENERATION_INVALID"));
    await assert.rejects(llm.chat([{ role: "robot", content: "x" }]), code("MESSAGES_INVALID"));
    await assert.rejects(llm.chat([{ role: "user" } as never]), code("MESSAGES_INVALID"));
    await assert.rejects(llm.chat([]), code("MESSAGES_INVALID"));
    const ok = await llm.generate("still fine", { maxTokens: 3 });
    assert.equal(ok.choices[0]!.tokenIds.length + (ok.choices[0]!.finishReason === "stop" ? 1 : 0) > 0, true);
  });

  it("a folder in Hugging Face's layout without axon.yaml is a language model: load(path), and axon pack makes its manifest", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-hf-layout-"));
    const home = mkdtempSync(path.join(tmpdir(), "mlos-hf-home-"));
    try {
      cpSync(MODEL_DIR, dir, { recursive: true });
      rmSync(path.join(dir, "axon.yaml"));
      const expected = (await llm.generate("Layout", { maxTokens: 8, temperature: 0 })).choices[0]!.tokenIds;
      const byPath = await runtime.load(dir);
      try {
        assert.equal(byPath.isLanguageModel, true);
        assert.equal(byPath.path, path.join(dir, "onnx", "model.onnx"));
        assert.deepEqual((await byPath.generate("Layout", { maxTokens: 8, temperature: 0 })).choices[0]!.tokenIds, expected);
      } finally {
        await byPath.dispose();
      }
      const axon = new Axon({ home });
      const packed = await axon.pack(dir, { as: "nlp/tiny-gpt@1.0.0" });
      assert.equal(packed.reference, "nlp/tiny-gpt@1.0.0");
      assert.equal(packed.manifest.spec.format.entrypoint, "onnx/model.onnx");
      assert.equal(packed.manifest.spec.llm?.tokenizer, "tokenizer.json");
      assert.equal(packed.manifest.spec.llm?.context_length, 256);
      assert.ok(packed.manifest.spec.llm?.chat_template, "the chat template from tokenizer_config.json");
      assert.equal(existsSync(path.join(dir, "axon.yaml")), false, "the folder is not written to");
      const byRef = await new Runtime({ axon }).load("nlp/tiny-gpt@1");
      try {
        assert.deepEqual((await byRef.generate("Layout", { maxTokens: 8, temperature: 0 })).choices[0]!.tokenIds, expected);
        assert.ok((await byRef.chat([{ role: "user", content: "hi" }], { maxTokens: 2 })).choices[0]);
      } finally {
        await byRef.dispose();
        await axon.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(home, { recursive: true, force: true });
    }
  });

  it("a model that is not a language model says so", async () => {
    const other = await runtime.load(path.join(ROOT, "dist", "demo-models", "mlp"));
    try {
      assert.equal(other.isLanguageModel, false);
      await assert.rejects(other.generate("x"), (e: unknown) => e instanceof MlosError && e.code === "NOT_A_LANGUAGE_MODEL");
    } finally {
      await other.dispose();
    }
  });
});
