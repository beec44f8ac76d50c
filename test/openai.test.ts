// Language models over the OpenAI-compatible API and MLOS v1, end to end: `axon serve` in a child
// process with the bundled tiny-gpt (a GPT-2-shaped decoder with random weights and GPT-2's real
// tokenizer), called with the official `openai` npm client, curl and raw sockets.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { Axon, Runtime, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { disconnectMidStream, startServer, stop, type Served } from "./helpers/axon-serve.js";

const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";
const MODEL = "tiny-gpt";
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

describe("language models over the OpenAI API", { skip }, () => {
  let home: string;
  let server: Served;
  let client: OpenAI;

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-openai-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--model", "demo/tiny-gpt@1", "--model", "demo/tiny-embed@1", "--max-num-seqs", "16", "--kv-cache-memory", "16M"]);
    client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly: ${server.stderr()}`);
  });

  it("lists the model", async () => {
    const list = await client.models.list();
    assert.ok(list.data.some((m) => m.id === MODEL), JSON.stringify(list.data));
  });

  it("completes a prompt, greedy, with usage, the same as the library does", async () => {
    const r = await client.completions.create({ model: MODEL, prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0]!.finish_reason, "length");
    assert.ok(r.choices[0]!.text.length > 0);
    assert.equal(r.usage!.prompt_tokens, 4);
    assert.equal(r.usage!.completion_tokens, 12);
    // The library in this process, on the same files: identical text.
    const runtime = new Runtime({ axon: new Axon({ home }) });
    const llm = await runtime.load("demo/tiny-gpt@1");
    try {
      const mine = await llm.generate("Once upon a time", { maxTokens: 12, temperature: 0 });
      assert.equal(mine.choices[0]!.text, r.choices[0]!.text);
    } finally {
      await llm.dispose();
    }
  });

  it("chats, with the model's chat template, and streams the same text as chunks", async () => {
    const messages = [{ role: "system" as const, content: "You are terse." }, { role: "user" as const, content: "Hello!" }];
    const whole = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0 });
    assert.equal(whole.object, "chat.completion");
    assert.equal(whole.choices[0]!.message.role, "assistant");
    const text = whole.choices[0]!.message.content!;
    assert.ok(text.length > 0);

    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let streamed = "";
    let chunks = 0;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let sawRole = false;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role === "assistant") sawRole = true;
        streamed += c.delta.content ?? "";
        if (c.finish_reason) finish = c.finish_reason;
        chunks++;
      }
    }
    assert.ok(sawRole, "the first chunk carries the role");
    assert.equal(streamed, text);
    assert.ok(chunks >= 10, `${chunks} chunks`);
    assert.equal(finish, "length");
    assert.equal(usage?.completion_tokens, 16);
  });

  it("stops at a stop string, which the text does not include", async () => {
    const free = await client.completions.create({ model: MODEL, prompt: "The answer is", max_tokens: 20, temperature: 0 });
    const text = free.choices[0]!.text;
    // A stop string taken from the middle of what the model writes.
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    assert.ok(stop.trim().length > 0, `a stop string from ${JSON.stringify(text)}`);
    const r = await client.completions.create({ model: MODEL, prompt: "The answer is", max_tokens: 20, temperature: 0, stop: [stop] });
    assert.equal(r.choices[0]!.finish_reason, "stop");
    assert.equal(r.choices[0]!.text, text.slice(0, text.indexOf(stop)));
  });

  it("returns n choices, reproducible with a seed, and logprobs", async () => {
    const ask = () => client.completions.create({ model: MODEL, prompt: "Hello", max_tokens: 8, temperature: 1, n: 3, seed: 42, logprobs: 2 });
    const a = await ask();
    const b = await ask();
    assert.equal(a.choices.length, 3);
    assert.deepEqual(a.choices.map((c) => c.index).sort(), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
    assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, "different samples per choice");
    const lp = a.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 8);
    assert.ok(lp.token_logprobs!.every((x) => typeof x === "number" && x <= 0));
    assert.ok(lp.top_logprobs!.every((t) => t !== null && Object.keys(t).length >= 1));

    const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = chat.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 4);
    for (const c of content) {
      assert.equal(c.top_logprobs.length, 3);
      // Greedy: the token chosen is the most likely one.
      assert.ok(Math.abs(c.logprob - c.top_logprobs[0]!.logprob) < 1e-5);
    }
  });

  it("answers errors in OpenAI's envelope: unknown model 404, too long a prompt 400, bad options 400", async () => {
    await assert.rejects(client.completions.create({ model: "no-such-model", prompt: "x" }), (e: unknown) => e instanceof OpenAI.NotFoundError && /no-such-model/.test(e.message));
    const long = "word ".repeat(400);
    await assert.rejects(client.completions.create({ model: MODEL, prompt: long, max_tokens: 4 }), (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { code?: string }).code === "context_length_exceeded");
    await assert.rejects(client.completions.create({ model: MODEL, prompt: "x", max_tokens: 0 }), (e: unknown) => e instanceof OpenAI.BadRequestError);
    await assert.rejects(client.completions.create({ model: MODEL, prompt: "x", n: 1000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /n must be/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: "wizard" as "user", content: "x" }] }), (e: unknown) => e instanceof OpenAI.BadRequestError && /wizard/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [] }), (e: unknown) => e instanceof OpenAI.BadRequestError);
    // Bodies no client library would send, in OpenAI's envelope too.
    for (const [route, body, code] of [
      ["/v1/chat/completions", "{not json", "bad_json"],
      ["/v1/chat/completions", JSON.stringify({ model: MODEL, messages: "hello" }), "messages_invalid"],
      ["/v1/completions", JSON.stringify({ model: MODEL, prompt: [1, "two"] }), "bad_request"],
      ["/v1/completions", JSON.stringify({ model: MODEL, prompt: "x", temperature: "hot" }), "generation_invalid"],
      ["/v1/embeddings", JSON.stringify({ model: "tiny-embed", input: [] }), "bad_request"],
    ] as const) {
      const r = await fetch(`${server.base}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body });
      const e = (await r.json()) as { error: { message: string; type: string; code: string } };
      assert.equal(r.status, 400, `${route} ${body}: ${JSON.stringify(e)}`);
      assert.equal(e.error.type, "invalid_request_error");
      assert.equal(e.error.code, code, e.error.message);
    }
    // Still serving.
    const ok = await client.completions.create({ model: MODEL, prompt: "Still", max_tokens: 2 });
    assert.equal(ok.choices.length, 1);
  });

  it("embeds texts with an encoder: normalised vectors, base64 and dimensions as OpenAI's client asks, the library's numbers", async () => {
    const r = await client.embeddings.create({ model: "tiny-embed", input: ["a cat sat on the mat", "stock prices fell sharply", "a cat sat on the mat"] });
    assert.equal(r.object, "list");
    assert.equal(r.data.length, 3);
    const [a, b, c] = r.data.map((d) => d.embedding);
    assert.equal(a!.length, 64);
    const dot = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i]!, 0);
    assert.ok(Math.abs(dot(a!, a!) - 1) < 1e-5, "normalised");
    assert.ok(Math.abs(dot(a!, c!) - 1) < 1e-5, "the same text, the same vector");
    assert.ok(dot(a!, b!) < 0.95, `different texts differ (cosine ${dot(a!, b!)})`);
    assert.ok(r.usage.prompt_tokens > 8);
    // The official client asks for base64 by default when it can decode it itself; ask explicitly too.
    const b64 = await client.embeddings.create({ model: "tiny-embed", input: "a cat sat on the mat", encoding_format: "base64" });
    const raw = b64.data[0]!.embedding as unknown;
    const vec = typeof raw === "string" ? Array.from(new Float32Array(Uint8Array.from(Buffer.from(raw, "base64")).buffer)) : (raw as number[]);
    vec.forEach((v, i) => assert.ok(Math.abs(v - a![i]!) < 1e-6));
    const short = await client.embeddings.create({ model: "tiny-embed", input: "a cat sat on the mat", dimensions: 16 });
    assert.equal(short.data[0]!.embedding.length, 16);
    // The library, on the same files: the same numbers.
    const runtime = new Runtime({ axon: new Axon({ home }) });
    const enc = await runtime.load("demo/tiny-embed@1");
    try {
      assert.equal(enc.isEmbeddingModel, true);
      const mine = await enc.embed("a cat sat on the mat");
      Array.from(mine.embeddings[0]!).forEach((v, i) => assert.ok(Math.abs(v - a![i]!) < 1e-6));
    } finally {
      await enc.dispose();
    }
    await assert.rejects(client.embeddings.create({ model: MODEL, input: "x" }), (e: unknown) => e instanceof OpenAI.BadRequestError && /not an embeddings model/.test(e.message));
    await assert.rejects(client.embeddings.create({ model: "tiny-embed", input: "word ".repeat(300) }), (e: unknown) => e instanceof OpenAI.BadRequestError);
    await assert.rejects(client.chat.completions.create({ model: "tiny-embed", messages: [{ role: "user", content: "x" }] }), (e: unknown) => e instanceof OpenAI.BadRequestError && /not a language model/.test(e.message));
  });

  it("registers a Hugging Face-layout folder by path over MLOS v1 and serves it over both APIs", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-hf-folder-"));
    cpSync(path.join(ROOT, "dist", "demo-models", "tiny-gpt"), dir, { recursive: true });
    rmSync(path.join(dir, "axon.yaml")); // a plain exported folder: config.json, tokenizer.json, onnx/model.onnx
    const reg = await fetch(`${server.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: "gpt-by-path", path: dir, plugin_id: "onnxruntime" }) });
    assert.equal(reg.status, 201, await reg.text());
    const r = await client.chat.completions.create({ model: "gpt-by-path", messages: [{ role: "user", content: "Hello!" }], max_tokens: 6, temperature: 0 });
    const same = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "Hello!" }], max_tokens: 6, temperature: 0 });
    assert.equal(r.choices[0]!.message.content, same.choices[0]!.message.content);
    const v1 = await fetch(`${server.base}/api/v1/inference`, { method: "POST", body: JSON.stringify({ model_id: "gpt-by-path", messages: [{ role: "user", content: "Hello!" }], parameters: { max_tokens: 6, temperature: 0 } }) });
    assert.equal(((await v1.json()) as { output: string }).output, same.choices[0]!.message.content);
  });

  it("generates text over MLOS v1 /api/v1/inference with a string input", () => {
    const r = spawnSync("curl", ["-s", "-S", "-X", "POST", `${server.base}/api/v1/inference`, "-H", "Content-Type: application/json", "-d", JSON.stringify({ model_id: MODEL, input: "What is machine learning?", parameters: { max_tokens: 8, temperature: 0 } })], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const body = JSON.parse(r.stdout) as { output: string; finish_reason: string; usage: { completion_tokens: number } };
    assert.equal(typeof body.output, "string");
    assert.equal(body.usage.completion_tokens, 8);
    assert.equal(body.finish_reason, "length");
  });

  it("frees a stream's sequence when its client disconnects, and keeps serving", async () => {
    const metrics = async () => (await (await fetch(`${server.base}/metrics`)).text());
    await disconnectMidStream(server.port, { model: MODEL, prompt: "A long story:", max_tokens: 200, temperature: 0, stream: true, ignore_eos: true });
    // The sequence leaves the batch at the next step: no running sequence remains.
    let running = -1;
    for (let i = 0; i < 100 && running !== 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      running = Number(/^mlos_llm_sequences\{[^}]*state="running"[^}]*\} (\d+)/m.exec(await metrics())?.[1] ?? -1);
    }
    assert.equal(running, 0, "the disconnected client's sequence was freed");
    // Freed because it was aborted (200 tokens take longer than this), not because it finished.
    const aborted = Number(/^mlos_llm_requests_total\{[^}]*finish="abort"[^}]*\} (\d+)/m.exec(await metrics())?.[1] ?? 0);
    assert.equal(aborted, 1, "one request ended as aborted");
    const used = Number(/^mlos_llm_kv_cache_usage_ratio\{[^}]*\} (\S+)/m.exec(await metrics())?.[1] ?? -1);
    assert.equal(used, 0, "its KV blocks are back");
    const ok = await client.completions.create({ model: MODEL, prompt: "After", max_tokens: 2 });
    assert.equal(ok.choices[0]!.text.length > 0, true);
  });

  it("runs 64 concurrent streams to completion, none lost, greedy tokens equal to a lone run", async () => {
    const prompts = Array.from({ length: 64 }, (_, i) => `Request number ${i}:${" and".repeat(i % 7)}`);
    const lone = await client.completions.create({ model: MODEL, prompt: prompts[5]!, max_tokens: 24, temperature: 0 });
    // --max-num-seqs 16: at most 16 run at a time, the others wait.
    let maxRunning = 0;
    let sawWaiting = false;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const text = await (await fetch(`${server.base}/metrics`)).text();
        maxRunning = Math.max(maxRunning, Number(/^mlos_llm_sequences\{[^}]*state="running"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0));
        if (Number(/^mlos_llm_sequences\{[^}]*state="waiting"[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0) > 0) sawWaiting = true;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const results = await Promise.all(
      prompts.map(async (p) => {
        const s = await client.completions.create({ model: MODEL, prompt: p, max_tokens: 24, temperature: 0, stream: true });
        let text = "";
        let finish: string | null = null;
        for await (const c of s) {
          text += c.choices[0]?.text ?? "";
          finish = c.choices[0]?.finish_reason ?? finish;
        }
        return { text, finish };
      }),
    );
    watching = false;
    await watcher;
    assert.ok(maxRunning > 1 && maxRunning <= 16, `running at most --max-num-seqs: saw ${maxRunning}`);
    assert.ok(sawWaiting, "sequences waited for a slot");
    assert.equal(results.length, 64);
    for (const r of results) assert.equal(r.finish, "length");
    assert.equal(results[5]!.text, lone.choices[0]!.text);
  });
});

describe("a language model over capacity", { skip }, () => {
  let server: Served;
  before(async () => {
    const home = mkdtempSync(path.join(tmpdir(), "mlos-openai-cap-"));
    await seedDemoModels(new Axon({ home }));
    server = await startServer(home, ["--model", "demo/tiny-gpt@1", "--max-num-seqs", "1", "--max-queue", "2", "--api-key", "sk-test-key-1234"]);
  });
  after(async () => {
    if (server) assert.equal(await stop(server), 0, server.stderr());
  });

  it("takes the server's API key as OpenAI's clients send it", async () => {
    const wrong = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "not-the-key", maxRetries: 0 });
    await assert.rejects(wrong.completions.create({ model: MODEL, prompt: "x", max_tokens: 1 }), (e: unknown) => e instanceof OpenAI.AuthenticationError && (e.error as { type?: string }).type === "authentication_error");
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "sk-test-key-1234", maxRetries: 0 });
    assert.equal((await right.completions.create({ model: MODEL, prompt: "x", max_tokens: 1 })).choices.length, 1);
  });

  it("answers 429 with Retry-After past --max-queue waiting sequences, and serves the rest", async () => {
    const client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "sk-test-key-1234", maxRetries: 0 });
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => client.completions.create({ model: MODEL, prompt: `Busy ${i}`, max_tokens: 40, temperature: 0, ignore_eos: true } as never)));
    const refused = results.filter((r) => r.status === "rejected");
    const served = results.filter((r) => r.status === "fulfilled");
    assert.ok(refused.length >= 4, `${refused.length} refused`);
    assert.ok(served.length >= 2, `${served.length} served`);
    for (const r of refused) {
      const e = (r as PromiseRejectedResult).reason as InstanceType<typeof OpenAI.APIError>;
      assert.ok(e instanceof OpenAI.RateLimitError, String(e));
      assert.equal(e.headers?.get("retry-after"), "1");
      assert.equal((e.error as { type?: string }).type, "rate_limit_error");
    }
    const later = await client.completions.create({ model: MODEL, prompt: "Later", max_tokens: 2 });
    assert.equal(later.choices.length, 1);
  });
});
