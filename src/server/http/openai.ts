/**
 * The OpenAI-compatible API for language models: `GET /v1/models`, `POST /v1/completions`,
 * `POST /v1/chat/completions` (whole answers, or Server-Sent Events streams of
 * `text_completion` / `chat.completion.chunk` objects ending with `data: [DONE]`), and
 * `POST /v1/embeddings` (encoders, pooled and normalised). The official
 * clients work unchanged. Errors use OpenAI's envelope `{"error": {message, type, param, code}}`
 * with the status a client expects (404 unknown model, 400 a prompt past the context, 429 over
 * capacity). Generation itself is the core's (src/core/generation); this file only translates.
 */
import { randomUUID } from "node:crypto";
import { MlosError } from "../../core/errors.js";
import type { GenerationChunk, GenerationEngine, GenerationResult, TokenLogprob } from "../../core/generation/engine.js";
import type { GenerationOptions } from "../../core/generation/params.js";
import type { ModelEntry, ReadyEntry } from "../../core/model-table.js";
import { generationOptionsFrom } from "../generation-request.js";
import { HttpError, toHttpError } from "../http-error.js";
import { parseJson, type Ctx, type HttpRouter, type Reply } from "./router.js";
import type { Serving } from "../serving.js";

const SSE_HEADERS = { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" };

/** OpenAI's error envelope for any error. */
function openAiError(e: unknown): Reply {
  const h = toHttpError(e);
  const type = h.status === 401 || h.status === 403 ? "authentication_error" : h.status === 429 ? "rate_limit_error" : h.status >= 500 ? "server_error" : "invalid_request_error";
  const code = h.code === "MODEL_NOT_FOUND" ? "model_not_found" : h.code === "PROMPT_TOO_LONG" ? "context_length_exceeded" : h.code.toLowerCase();
  const param = e instanceof MlosError && typeof e.details.option === "string" ? e.details.option : null;
  return { status: h.status, body: { error: { message: h.message, type, param, code } }, headers: h.headers };
}

/** The registered model a request names, loaded (404 in OpenAI's words when there is none). */
async function servedModel(serving: Serving, name: unknown, what: string): Promise<ReadyEntry> {
  if (typeof name !== "string" || name === "") throw new HttpError(400, "BAD_REQUEST", `${what}: "model" must be the name of a served model`);
  try {
    return await serving.table.acquire(name);
  } catch (e) {
    if (e instanceof MlosError && e.code === "MODEL_NOT_FOUND") throw new MlosError("MODEL_NOT_FOUND", `The model \`${name}\` does not exist`, { model: name });
    throw e;
  }
}

/** The registered language model a request names, loaded, and its engine. */
async function languageModel(serving: Serving, name: unknown, what: string): Promise<{ entry: ModelEntry; engine: GenerationEngine }> {
  const entry = await servedModel(serving, name, what);
  if (!entry.model.isLanguageModel) throw new MlosError("NOT_A_LANGUAGE_MODEL", `${what}: model ${name} is not a language model (it has no tokenizer and decoder); use /v2/models/${name}/infer`, { option: "model" });
  return { entry, engine: await serving.languageEngine(entry) };
}

/** OpenAI's `logprobs` of a completion choice (the legacy shape). */
function completionLogprobs(lps: TokenLogprob[] | undefined, offset0 = 0): Record<string, unknown> | null {
  if (!lps) return null;
  let offset = offset0;
  const text_offset: number[] = [];
  for (const lp of lps) {
    text_offset.push(offset);
    offset += lp.text.length;
  }
  return {
    tokens: lps.map((l) => l.text),
    token_logprobs: lps.map((l) => l.logprob),
    top_logprobs: lps.map((l) => (l.top ? Object.fromEntries(l.top.map((t) => [t.text, t.logprob])) : null)),
    text_offset,
  };
}

/** OpenAI's `logprobs` of a chat choice. */
function chatLogprobs(lps: TokenLogprob[] | undefined): Record<string, unknown> | null {
  if (!lps) return null;
  const bytes = (s: string) => [...Buffer.from(s, "utf8")];
  return { content: lps.map((l) => ({ token: l.text, logprob: l.logprob, bytes: bytes(l.text), top_logprobs: (l.top ?? []).map((t) => ({ token: t.text, logprob: t.logprob, bytes: bytes(t.text) })) })) };
}

/** The usage of several requests (one per prompt of a completions request), summed. */
function totalUsage(results: GenerationResult[]): GenerationResult["usage"] {
  const u = { promptTokens: 0, completionTokens: 0, totalTokens: 0, cachedPromptTokens: 0 };
  for (const r of results) {
    u.promptTokens += r.usage.promptTokens;
    u.completionTokens += r.usage.completionTokens;
    u.totalTokens += r.usage.totalTokens;
    u.cachedPromptTokens += r.usage.cachedPromptTokens;
  }
  return u;
}

const usageOf = (u: GenerationResult["usage"]) => ({ prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens, ...(u.cachedPromptTokens > 0 ? { prompt_tokens_details: { cached_tokens: u.cachedPromptTokens } } : {}) });

/** The prompts of a completion request: a string, strings, token ids, or lists of token ids. */
function prompts(engine: GenerationEngine, p: unknown): number[][] {
  const bad = () => new HttpError(400, "BAD_REQUEST", 'completions: "prompt" must be a string, an array of strings, an array of token ids, or an array of arrays of token ids');
  if (typeof p === "string") return [engine.text.encode(p)];
  if (!Array.isArray(p) || p.length === 0) throw bad();
  if (p.every((x) => typeof x === "string")) return (p as string[]).map((s) => engine.text.encode(s));
  if (p.every((x) => typeof x === "number")) return [p as number[]];
  if (p.every((x) => Array.isArray(x) && x.every((y) => typeof y === "number"))) return p as number[][];
  throw bad();
}

interface Submitted {
  promptIndex: number;
  stream: AsyncIterable<GenerationChunk>;
  result: Promise<GenerationResult>;
}

/**
 * Streams the chunks of several submitted requests as SSE events, in the order they come;
 * `event` turns one chunk into the JSON object to send. Ends with a usage event when asked, then
 * `[DONE]`. An error mid-stream is sent as an error event (the status line went out already).
 */
function sseReply(subs: Submitted[], n: number, event: (chunk: GenerationChunk, choiceIndex: number) => unknown, start: ((choiceIndex: number) => unknown) | undefined, usage: ((u: GenerationResult["usage"]) => unknown) | undefined, abort: AbortController): Reply {
  return {
    headers: SSE_HEADERS,
    stream: async (write) => {
      const send = (obj: unknown) => write(`data: ${JSON.stringify(obj)}\n\n`);
      try {
        if (start) for (let i = 0; i < subs.length * n; i++) send(start(i));
        await Promise.all(
          subs.map(async (s) => {
            for await (const chunk of s.stream) {
              if (!send(event(chunk, s.promptIndex * n + chunk.index))) {
                abort.abort();
                return;
              }
            }
          }),
        );
        const results = await Promise.all(subs.map((s) => s.result));
        if (usage) {
          const total = totalUsage(results);
          send(usage(total));
        }
        write("data: [DONE]\n\n");
      } catch (e) {
        abort.abort();
        if (e instanceof MlosError && e.code === "RUN_ABORTED") return;
        send(openAiError(e).body);
      }
    },
  };
}

export function registerOpenAiRoutes(router: HttpRouter, serving: Serving): void {
  const { table } = serving;
  // Every failure, authentication's included, in OpenAI's envelope.
  const route = (method: "get" | "post", pattern: string, handler: (ctx: Ctx, body: Buffer | undefined) => Promise<Reply> | Reply) =>
    router.route(method, pattern, "api", method === "post", handler, openAiError);

  route("get", "/v1/models", () => ({
    body: {
      object: "list",
      data: table.list().map((e) => ({ id: e.name, object: "model", created: Math.floor(e.registeredAt.getTime() / 1000), owned_by: "mlos" })),
    },
  }));
  route("get", "/v1/models/:id", (ctx) => {
    const e = table.get(ctx.params[0]!);
    return { body: { id: e.name, object: "model", created: Math.floor(e.registeredAt.getTime() / 1000), owned_by: "mlos" } };
  });

  route("post", "/v1/embeddings", async (ctx, raw) => {
    const body = parseJson(raw, "embeddings");
    const entry = await servedModel(serving, body.model, "embeddings");
    if (!entry.model.isEmbeddingModel) throw new MlosError("NOT_A_LANGUAGE_MODEL", `embeddings: model ${entry.name} is not an embeddings model (an encoder with a tokenizer)`, { option: "model" });
    const input = body.input;
    let texts: Array<string | number[]>;
    if (typeof input === "string") texts = [input];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "string")) texts = input as string[];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "number")) texts = [input as number[]];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => Array.isArray(x) && x.every((y) => typeof y === "number"))) texts = input as number[][];
    else throw new HttpError(400, "BAD_REQUEST", 'embeddings: "input" must be a string, an array of strings, an array of token ids, or an array of arrays of token ids');
    if (texts.length > 2048) throw new HttpError(400, "BAD_REQUEST", `embeddings: at most 2048 inputs per request, got ${texts.length}`);
    const format = body.encoding_format ?? "float";
    if (format !== "float" && format !== "base64") throw new HttpError(400, "BAD_REQUEST", `embeddings: "encoding_format" must be "float" or "base64", got ${JSON.stringify(format)}`);
    if (body.dimensions !== undefined && (typeof body.dimensions !== "number" || !Number.isInteger(body.dimensions))) throw new HttpError(400, "BAD_REQUEST", '"dimensions" must be an integer');
    const embedder = await entry.model.embeddingModel();
    const r = await embedder.embed(texts, { dimensions: body.dimensions as number | undefined, signal: ctx.signal });
    return {
      body: {
        object: "list",
        data: r.embeddings.map((v, index) => ({ object: "embedding", index, embedding: format === "base64" ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") : Array.from(v) })),
        model: entry.name,
        usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
      },
    };
  });

  route("post", "/v1/completions", async (ctx, raw) => {
    const body = parseJson(raw, "completions");
    const { entry, engine } = await languageModel(serving, body.model, "completions");
    const options = generationOptionsFrom(body, "completions");
    if (body.max_tokens === undefined) options.maxTokens = 16; // OpenAI's default for completions
    const lp = body.logprobs;
    if (lp !== undefined && lp !== null) {
      if (typeof lp !== "number" || !Number.isInteger(lp) || lp < 0 || lp > 20) throw new HttpError(400, "GENERATION_INVALID", `completions: "logprobs" must be an integer from 0 to 20, got ${JSON.stringify(lp)}`);
      options.logprobs = true;
      options.topLogprobs = lp;
    }
    const echo = body.echo === true;
    const ids = prompts(engine, body.prompt);
    const abort = new AbortController();
    const signal = AbortSignal.any([ctx.signal, abort.signal]);
    let subs: Submitted[];
    try {
      subs = ids.map((p, i) => ({ promptIndex: i, ...engine.submit(p, { ...options, signal } satisfies GenerationOptions) }));
    } catch (e) {
      abort.abort(); // a later prompt was refused: the earlier ones stop too
      throw e;
    }
    const n = options.n ?? 1;
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = entry.name;
    if (body.stream === true) {
      const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
      return sseReply(
        subs,
        n,
        (c, index) => ({ id, object: "text_completion", created, model, choices: [{ index, text: c.text, logprobs: completionLogprobs(c.logprobs), finish_reason: c.finishReason ?? null }] }),
        echo ? (index) => ({ id, object: "text_completion", created, model, choices: [{ index, text: engine.text.decode(ids[Math.floor(index / n)]!), logprobs: null, finish_reason: null }] }) : undefined,
        includeUsage ? (u) => ({ id, object: "text_completion", created, model, choices: [], usage: usageOf(u) }) : undefined,
        abort,
      );
    }
    const results = await Promise.all(subs.map((s) => s.result));
    const choices = results.flatMap((r, p) =>
      r.choices.map((c) => {
        const prefix = echo ? engine.text.decode(ids[p]!) : "";
        return { index: p * n + c.index, text: prefix + c.text, logprobs: completionLogprobs(c.logprobs, prefix.length), finish_reason: c.finishReason };
      }),
    );
    const usage = totalUsage(results);
    return { body: { id, object: "text_completion", created, model, choices, usage: usageOf(usage) } };
  });

  route("post", "/v1/chat/completions", async (ctx, raw) => {
    const body = parseJson(raw, "chat/completions");
    const { entry, engine } = await languageModel(serving, body.model, "chat/completions");
    const options = generationOptionsFrom(body, "chat/completions");
    if (body.logprobs !== undefined && body.logprobs !== null && typeof body.logprobs !== "boolean") throw new HttpError(400, "GENERATION_INVALID", `chat/completions: "logprobs" must be true or false, got ${JSON.stringify(body.logprobs)}`);
    if (body.logprobs === true) options.logprobs = true;
    if (body.top_logprobs !== undefined && body.top_logprobs !== null) {
      const t = body.top_logprobs;
      if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t > 20) throw new HttpError(400, "GENERATION_INVALID", `chat/completions: "top_logprobs" must be an integer from 0 to 20, got ${JSON.stringify(t)}`);
      if (body.logprobs !== true && t > 0) throw new HttpError(400, "GENERATION_INVALID", 'chat/completions: "top_logprobs" needs "logprobs": true');
      options.topLogprobs = t;
    }
    const prompt = engine.text.applyChatTemplate(body.messages);
    const ids = engine.text.encode(prompt, false);
    const abort = new AbortController();
    const signal = AbortSignal.any([ctx.signal, abort.signal]);
    const sub: Submitted = { promptIndex: 0, ...engine.submit(ids, { ...options, signal }) };
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = entry.name;
    const n = options.n ?? 1;
    if (body.stream === true) {
      const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
      return sseReply(
        [sub],
        n,
        (c, index) => ({ id, object: "chat.completion.chunk", created, model, choices: [{ index, delta: c.text.length > 0 ? { content: c.text } : {}, logprobs: chatLogprobs(c.logprobs), finish_reason: c.finishReason ?? null }] }),
        (index) => ({ id, object: "chat.completion.chunk", created, model, choices: [{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] }),
        includeUsage ? (u) => ({ id, object: "chat.completion.chunk", created, model, choices: [], usage: usageOf(u) }) : undefined,
        abort,
      );
    }
    const r = await sub.result;
    return {
      body: {
        id,
        object: "chat.completion",
        created,
        model,
        choices: r.choices.map((c) => ({ index: c.index, message: { role: "assistant", content: c.text }, logprobs: chatLogprobs(c.logprobs), finish_reason: c.finishReason })),
        usage: usageOf(r.usage),
      },
    };
  });
}
