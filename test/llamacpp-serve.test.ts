// A GGUF model served by `axon serve` (a child process) through the llamacpp plugin, called with
// the official `openai` npm client, curl and a raw socket: the same OpenAI and MLOS v1 routes as
// an ONNX language model.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { disconnectMidStream, startServer, stop, type Served } from "./helpers/axon-serve.js";
import { ggufModels, ggufSkip } from "./helpers/gguf-models.js";

const MODEL = "tiny-llama3";
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "run.js");

describe("a GGUF model over the OpenAI API and MLOS v1", { skip: ggufSkip }, () => {
  let home: string;
  let server: Served;
  let client: OpenAI;

  before(async () => {
    const models = ggufModels();
    home = mkdtempSync(path.join(tmpdir(), "mlos-gguf-serve-"));
    server = await startServer(home, ["--max-num-seqs", "8"]);
    const reg = await fetch(`${server.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: MODEL, path: models.tinyLlama3, plugin_id: "llamacpp" }) });
    assert.equal(reg.status, 201, await reg.text());
    // Without a plugin: recognised from the file.
    const reg2 = await fetch(`${server.base}/api/v1/models/register`, { method: "POST", body: JSON.stringify({ model_id: "tiny-llama", path: models.tinyLlama }) });
    assert.equal(reg2.status, 201, await reg2.text());
    client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "unused", maxRetries: 0 });
  });
  after(async () => {
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly: ${server.stderr()}`);
    rmSync(home, { recursive: true, force: true });
  });

  it("lists the models", async () => {
    const ids = (await client.models.list()).data.map((m) => m.id);
    assert.ok(ids.includes(MODEL) && ids.includes("tiny-llama"), ids.join());
  });

  it("chats with the template from the GGUF file, and streams the same text", async () => {
    const messages = [{ role: "system" as const, content: "You are terse." }, { role: "user" as const, content: "Hello!" }];
    const whole = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12, temperature: 0 });
    assert.equal(whole.object, "chat.completion");
    const text = whole.choices[0]!.message.content!;
    assert.ok(text.length > 0);
    assert.ok(whole.usage!.prompt_tokens > 20, "the system and user turns in Llama 3.1's template");
    const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let streamed = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        streamed += c.delta.content ?? "";
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(streamed, text);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.deepEqual(usage, whole.usage);
  });

  it("completes with n choices, a stop string and logprobs", async () => {
    const base = await client.completions.create({ model: "tiny-llama", prompt: "Once upon a time", max_tokens: 16, temperature: 0 });
    const text = base.choices[0]!.text;
    assert.ok(text.length > 6, text);
    const stop = text.slice(4, 7);
    const cut = await client.completions.create({ model: "tiny-llama", prompt: "Once upon a time", max_tokens: 16, temperature: 0, stop: [stop] });
    assert.equal(cut.choices[0]!.text, text.slice(0, text.indexOf(stop)));
    assert.equal(cut.choices[0]!.finish_reason, "stop");
    const n = await client.completions.create({ model: "tiny-llama", prompt: "Once upon a time", max_tokens: 8, temperature: 1, seed: 3, n: 3, logprobs: 2 });
    assert.equal(n.choices.length, 3);
    assert.deepEqual(
      n.choices.map((c) => c.index),
      [0, 1, 2],
    );
    for (const c of n.choices) {
      assert.equal(c.logprobs!.tokens!.length, c.logprobs!.token_logprobs!.length);
      assert.ok(c.logprobs!.token_logprobs!.every((l) => l !== null && l <= 0));
    }
  });

  it("answers errors in OpenAI's envelope: unknown model 404, a prompt longer than the context 400", async () => {
    await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }), (e: unknown) => e instanceof OpenAI.NotFoundError);
    await assert.rejects(client.completions.create({ model: MODEL, prompt: "word ".repeat(1100), max_tokens: 4 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /context/.test(e.message));
    const r = await fetch(`${server.base}/v2/models/${MODEL}/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", shape: [1], datatype: "FP32", data: [1] }] }) });
    assert.equal(r.status, 400);
  });

  it("generates text over MLOS v1 /api/v1/inference with a string input, as for an ONNX model", () => {
    const r = spawnSync("curl", ["-s", "-S", "-X", "POST", `${server.base}/api/v1/inference`, "-H", "Content-Type: application/json", "-d", JSON.stringify({ model_id: MODEL, input: "What is machine learning?", parameters: { max_tokens: 8, temperature: 0, ignore_eos: true } })], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const body = JSON.parse(r.stdout) as { output: string; finish_reason: string; usage: { completion_tokens: number } };
    assert.equal(typeof body.output, "string");
    assert.equal(body.usage.completion_tokens, 8);
    assert.equal(body.finish_reason, "length");
  });

  it("frees a stream's sequence when its client disconnects, and keeps serving", async () => {
    const metrics = async () => await (await fetch(`${server.base}/metrics`)).text();
    await disconnectMidStream(server.port, { model: MODEL, prompt: "A long story:", max_tokens: 900, temperature: 0, stream: true, ignore_eos: true });
    let running = -1;
    for (let i = 0; i < 100 && running !== 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      running = Number(new RegExp(`^mlos_llm_sequences\\{[^}]*model="${MODEL}@[^"]*"[^}]*state="running"[^}]*\\} (\\d+)`, "m").exec(await metrics())?.[1] ?? -1);
    }
    assert.equal(running, 0, "the disconnected client's sequence was freed");
    const r = await client.completions.create({ model: MODEL, prompt: "Again", max_tokens: 4, temperature: 0 });
    assert.ok(r.choices[0]!.text.length >= 0);
  });

  it("refuses to start with --gpu cuda where no NVIDIA driver is, saying why in one line", { skip: existsSync("/proc/driver/nvidia/version") && "this machine has an NVIDIA driver" }, () => {
    const r = spawnSync(process.execPath, [CLI, "serve", "--gpu", "cuda", "--http-port", "0", "--ipc-name", "off"], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr.trim(), /^error\[PLUGIN_UNAVAILABLE\]: --gpu cuda: (no NVIDIA driver here|\S+ \(llama\.cpp built for CUDA\) is not installed)/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  });
});
