// GGUF language models through the llamacpp plugin (node-llama-cpp's prebuilt llama.cpp), in the
// library: recognition, tokenization against llama.cpp's own test cases, chat templates, greedy
// generation alone and batched, cancellation, and the errors for files that are not models.
// The models are tiny random-weight Llamas with real vocabularies (src/tools/make-gguf-models.ts).
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Runtime, type Model } from "mlos";
import { LlamaCppPlugin } from "../src/plugins/llamacpp/index.js";
import { ggufModels, ggufSkip, tokenizerCases } from "./helpers/gguf-models.js";

const GREEDY = { temperature: 0 } as const;

describe("GGUF models through llama.cpp", { skip: ggufSkip }, () => {
  let models: ReturnType<typeof ggufModels>;
  let runtime: Runtime;
  let llama: Model;
  let llama3: Model;
  const scratch: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(path.join(tmpdir(), "mlos-gguf-"));
    scratch.push(d);
    return d;
  };

  before(async () => {
    models = ggufModels();
    runtime = new Runtime();
    llama = await runtime.load(models.tinyLlama, { intraOpThreads: 1, generation: { maxNumSeqs: 16 } });
    llama3 = await runtime.load(models.tinyLlama3, { intraOpThreads: 1, generation: { maxNumSeqs: 4 } });
  });
  after(async () => {
    await llama?.dispose();
    await llama3?.dispose();
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it("recognises a .gguf file as a language model of the llamacpp plugin", async () => {
    assert.equal(llama.isLanguageModel, true);
    assert.equal(llama.plugin, "llamacpp");
    assert.equal((await llama.generationEngine()).contextLength, 1024);
  });

  for (const [name, which] of [
    ["Llama 2's SentencePiece", "tinyLlama"],
    ["Llama 3's BPE", "tinyLlama3"],
  ] as const) {
    it(`tokenizes as llama.cpp's own test cases say (${name} vocabulary)`, async () => {
      const engine = await (which === "tinyLlama" ? llama : llama3).generationEngine();
      const cases = tokenizerCases(which);
      assert.ok(cases.length >= 40, `${cases.length} cases`);
      for (const c of cases) assert.deepEqual(engine.text.encode(c.text, false), c.ids, `text ${JSON.stringify(c.text)}`);
      // A plain prompt gets the model's BOS; a rendered chat (which writes its own) does not.
      const bos = which === "tinyLlama" ? 1 : 128000;
      assert.equal(engine.text.encode("Hello")[0], bos);
      assert.notEqual(engine.text.encode("Hello", false)[0], bos);
    });
  }

  it("renders each model's chat template from the GGUF file and generates a reply", async () => {
    const messages = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "Hello!" },
    ];
    const e3 = await llama3.generationEngine();
    const prompt3 = e3.text.applyChatTemplate(messages);
    assert.match(prompt3, /^<\|begin_of_text\|><\|start_header_id\|>system<\|end_header_id\|>/);
    assert.ok(prompt3.endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n"), prompt3);
    // Special tokens in the rendered text are single tokens, and there is exactly one BOS.
    const ids = e3.text.encode(prompt3, false);
    assert.equal(ids.filter((t) => t === 128000).length, 1);
    assert.ok(ids.includes(128006) && ids.includes(128007), "header tokens parsed as special tokens");
    const e2 = await llama.generationEngine();
    assert.match(e2.text.applyChatTemplate(messages), /\[INST\]/);
    const r = await llama3.chat(messages, { maxTokens: 8, ...GREEDY });
    assert.equal(r.choices[0]!.tokenIds.length, 8);
    assert.equal(r.usage.promptTokens, ids.length);
  });

  it("gives the same greedy tokens alone and in a batch of 16", async () => {
    const prompts = Array.from({ length: 16 }, (_, i) => `Once upon a time there were ${i + 1} small birds in the`);
    const alone: number[][] = [];
    for (const p of prompts) alone.push((await llama.generate(p, { maxTokens: 24, ignoreEos: true, ...GREEDY })).choices[0]!.tokenIds);
    const engine = await llama.generationEngine();
    const steps0 = engine.stats().steps;
    const batched = await Promise.all(prompts.map((p) => llama.generate(p, { maxTokens: 24, ignoreEos: true, ...GREEDY })));
    assert.deepEqual(
      batched.map((r) => r.choices[0]!.tokenIds),
      alone,
    );
    assert.ok(new Set(alone.map((t) => t.join())).size > 8, "different prompts give different continuations");
    // Batched: far fewer steps than 16 requests x 24 tokens one at a time.
    assert.ok(engine.stats().steps - steps0 < 16 * 24, `${engine.stats().steps - steps0} steps`);
  });

  it("samples reproducibly with a seed, and honours stop strings, n and logprobs", async () => {
    const opts = { maxTokens: 16, temperature: 0.9, topP: 0.95, topK: 40, seed: 7, ignoreEos: true };
    const a = await llama.generate("The river", opts);
    const b = await llama.generate("The river", opts);
    assert.deepEqual(a.choices[0]!.tokenIds, b.choices[0]!.tokenIds);
    const n = await llama.generate("The river", { ...opts, n: 3 });
    assert.equal(n.choices.length, 3);
    assert.deepEqual(n.choices[0]!.tokenIds, a.choices[0]!.tokenIds, "choice 0 uses the seed itself");
    assert.ok(new Set(n.choices.map((c) => c.tokenIds.join())).size > 1, "the choices differ");
    // A stop string from the middle of the greedy text ends the text before it.
    const whole = (await llama.generate("The river", { maxTokens: 24, ignoreEos: true, ...GREEDY })).choices[0]!;
    const stop = whole.text.slice(Math.floor(whole.text.length / 2), Math.floor(whole.text.length / 2) + 3);
    const cut = (await llama.generate("The river", { maxTokens: 24, ignoreEos: true, stop: [stop], ...GREEDY })).choices[0]!;
    assert.equal(cut.finishReason, "stop");
    assert.equal(cut.text, whole.text.slice(0, whole.text.indexOf(stop)));
    const lp = (await llama.generate("The river", { maxTokens: 4, logprobs: true, topLogprobs: 3, ...GREEDY })).choices[0]!;
    assert.equal(lp.logprobs!.length, lp.tokenIds.length);
    for (const [i, l] of lp.logprobs!.entries()) {
      assert.equal(l.token, lp.tokenIds[i]);
      assert.ok(l.logprob <= 0 && Number.isFinite(l.logprob));
      assert.equal(l.top!.length, 3);
      assert.equal(l.top![0]!.token, l.token, "greedy picks the most likely token");
    }
  });

  it("frees a sequence whose request is aborted or whose stream is left, and goes on serving", async () => {
    const engine = await llama.generationEngine();
    const ac = new AbortController();
    const long = llama.generate("Far away", { maxTokens: 500, ignoreEos: true, signal: ac.signal, ...GREEDY });
    let got = 0;
    for await (const chunk of llama.stream("Near here", { maxTokens: 500, ignoreEos: true, ...GREEDY })) {
      got += chunk.tokenIds.length;
      if (got >= 5) break;
    }
    ac.abort();
    await assert.rejects(long, { code: "RUN_ABORTED" });
    for (let i = 0; i < 100 && engine.stats().running > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.stats().running, 0);
    assert.equal(engine.stats().waiting, 0);
    const after = await llama.generate("Once", { maxTokens: 3, ...GREEDY, ignoreEos: true });
    assert.equal(after.choices[0]!.tokenIds.length, 3);
  });

  it("queues requests beyond its sequences and serves them as slots free up", async () => {
    const engine = await llama3.generationEngine(); // 4 sequences
    const all = Promise.all(Array.from({ length: 10 }, (_, i) => llama3.generate(`Item ${i}`, { maxTokens: 6, ignoreEos: true, ...GREEDY })));
    await new Promise((r) => setImmediate(r));
    assert.equal(engine.stats().running, 4);
    assert.equal(engine.stats().waiting, 6);
    const rs = await all;
    assert.ok(rs.every((r) => r.choices[0]!.tokenIds.length === 6));
  });

  it("refuses a prompt longer than the context, and tensors", async () => {
    const long = Array.from({ length: 1100 }, () => 500);
    await assert.rejects(llama.generate(long, GREEDY), { code: "PROMPT_TOO_LONG" });
    await assert.rejects(llama.infer({}), { code: "NOT_A_TENSOR_MODEL", message: /GGUF language model/ });
  });

  it("loads a folder holding one .gguf file, and asks which one in a folder holding several", async () => {
    const one = tmp();
    copyFileSync(models.tinyLlama3, path.join(one, "model.gguf"));
    const m = await runtime.load(one, { intraOpThreads: 1 });
    try {
      assert.equal(m.isLanguageModel, true);
    } finally {
      await m.dispose();
    }
    await assert.rejects(runtime.load(path.dirname(models.tinyLlama)), { code: "MODEL_INVALID", message: /several model files \(tiny-llama-F32\.gguf, tiny-llama-Q8_0\.gguf\)/ });
  });

  it("loads the Q8_0 quantisation of the same model", async () => {
    const q = await runtime.load(models.tinyLlamaQ8, { intraOpThreads: 1 });
    try {
      const r = await q.generate("Once upon a time", { maxTokens: 8, ignoreEos: true, ...GREEDY });
      assert.equal(r.choices[0]!.tokenIds.length, 8);
    } finally {
      await q.dispose();
    }
  });

  it("refuses a file that is not GGUF, and a truncated one, with MODEL_INVALID, leaving them as they were", async () => {
    const d = tmp();
    const notGguf = path.join(d, "model.gguf");
    writeFileSync(notGguf, "this is not a model\n");
    await assert.rejects(runtime.load(notGguf), { code: "MODEL_INVALID", message: /not a GGUF file/ });
    const truncated = path.join(d, "truncated.gguf");
    const bytes = readFileSync(models.tinyLlama).subarray(0, 100_000);
    writeFileSync(truncated, bytes);
    await assert.rejects(runtime.load(truncated), (e: Error & { code?: string }) => {
      assert.equal(e.code, "MODEL_INVALID");
      assert.match(e.message, /truncated\.gguf: llama\.cpp cannot load this GGUF model/);
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
    assert.deepEqual(readFileSync(truncated), bytes);
    await assert.rejects(runtime.load(path.join(d, "missing.gguf")), { code: "MODEL_NOT_FOUND" });
  });

  it("says in one line why a GPU build cannot be used", async () => {
    const cuda = new LlamaCppPlugin({ gpu: "cuda" }).availability();
    if (!existsSync("/proc/driver/nvidia/version")) {
      assert.equal(cuda.available, false);
      assert.match((cuda as { reason: string }).reason, /^--gpu cuda: (no NVIDIA driver here|@node-llama-cpp\/\S+-cuda .*not installed)/);
      const r = new Runtime({ plugins: [new LlamaCppPlugin({ gpu: "cuda" })] });
      await assert.rejects(r.load(models.tinyLlama3), (e: Error & { code?: string }) => e.code === "PLUGIN_UNAVAILABLE" && /--gpu cuda/.test(e.message) && !e.message.includes("\n"));
    }
    // Vulkan's binaries come with node-llama-cpp; without a Vulkan loader they cannot start.
    if (!["/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib/libvulkan.so.1", "/usr/lib64/libvulkan.so.1"].some((f) => existsSync(f))) {
      const r = new Runtime({ plugins: [new LlamaCppPlugin({ gpu: "vulkan" })] });
      await assert.rejects(r.load(models.tinyLlama3), (e: Error & { code?: string }) => e.code === "PLUGIN_UNAVAILABLE" && /^--gpu vulkan: llama\.cpp's vulkan build does not start here/.test(e.message) && !e.message.includes("\n"));
    }
    // auto falls back to the CPU.
    const auto = new Runtime({ plugins: [new LlamaCppPlugin({ gpu: "auto" })] });
    const m = await auto.load(models.tinyLlama3, { intraOpThreads: 1 });
    try {
      assert.ok(["cpu", "cuda", "vulkan"].includes(String(m.describe().backend)));
    } finally {
      await m.dispose();
    }
    assert.throws(() => new LlamaCppPlugin({ gpu: "tpu" as never }), /gpu must be one of off, cuda, vulkan, auto/);
    assert.equal(new LlamaCppPlugin({ gpu: "off" }).availability().available, true);
  });
});
