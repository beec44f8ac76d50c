/**
 * The MLOS v1 API: register models (by Axon reference or path), list and unregister them, run
 * inference on JSON inputs, list and register plugins.
 */
import type { ReadyEntry, RegisterSpec } from "../../core/model-table.js";
import { importPlugin } from "../../core/runtime.js";
import type { InferenceResponse, ModelsResponse, PluginsResponse, UnregisterResponse } from "../../protocol/mlos-v1.js";
import type { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";
import { mlosInputs, outputsToJson } from "../json-inputs.js";
import { parseJson, type Ctx, type HttpRouter, type Reply } from "./router.js";
import { generationOptionsFrom } from "../generation-request.js";
import { disposeAll, requestParameters, type Serving } from "../serving.js";

/**
 * Text in, text out, on a language model: `input` a prompt (or `messages`, rendered with the
 * model's chat template), `parameters` the generation options (OpenAI's field names).
 */
async function generateText(entry: ReadyEntry, serving: Serving, req: Record<string, unknown>, ctx: Ctx): Promise<Reply> {
  if (!entry.model.isLanguageModel) throw new HttpError(400, "NOT_A_LANGUAGE_MODEL", `inference: model ${entry.name} does not take text (it is not a language model); send "inputs" as tensors`);
  const params = req.parameters ?? {};
  if (params === null || typeof params !== "object" || Array.isArray(params)) throw new HttpError(400, "BAD_REQUEST", 'inference: "parameters" must be an object');
  const options = generationOptionsFrom(params as Record<string, unknown>, "inference");
  const engine = await serving.languageEngine(entry);
  const prompt = Array.isArray(req.messages) ? engine.text.encode(engine.text.applyChatTemplate(req.messages), false) : engine.text.encode(String(req.input ?? req.inputs));
  const result = await engine.submit(prompt, { ...options, signal: ctx.signal }).result;
  const first = result.choices[0]!;
  return {
    body: {
      model_id: entry.name,
      model_version: entry.version,
      output: first.text,
      finish_reason: first.finishReason,
      ...(result.choices.length > 1 ? { outputs: result.choices.map((c) => ({ text: c.text, finish_reason: c.finishReason })) } : {}),
      usage: { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, total_tokens: result.usage.totalTokens },
    },
  };
}

export function registerMlosV1Routes(router: HttpRouter, serving: Serving): void {
  const { table, runtime, pool } = serving;

  router.route("post", "/api/v1/models/register", "admin", true, async (_ctx, body) => {
    const req = parseJson(body, "register");
    const { model_id: id, path, plugin_id: plugin, framework } = req as { model_id?: unknown; path?: unknown; plugin_id?: unknown; framework?: unknown };
    if (typeof id !== "string" || id === "") throw new HttpError(400, "BAD_REQUEST", 'register: "model_id" must be a non-empty string (a name, or an Axon reference when no "path" is given)');
    if (path !== undefined && typeof path !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "path" must be a string');
    if (plugin !== undefined && typeof plugin !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "plugin_id" must be a string');
    if (framework !== undefined && typeof framework !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "framework" must be a string');
    const named = { plugin: plugin as string | undefined, framework: framework as string | undefined };
    const spec: RegisterSpec = path ? { id, target: path, ...named } : { target: id, ...named };
    const entry = await table.register(spec);
    return { status: 201, body: { model_id: entry.name, status: entry.state, ...table.summary(entry) } };
  });
  router.route("get", "/api/v1/models", "api", false, () => ({ body: { models: table.list().map((e) => table.summary(e)) } satisfies ModelsResponse }));
  router.route("get", "/api/v1/models/:id", "api", false, (ctx) => ({ body: table.summary(table.get(ctx.params[0]!)) }));
  router.route("del", "/api/v1/models/:id", "admin", false, async (ctx) => {
    const removed = await table.unregister(ctx.params[0]!);
    return { body: { removed: removed.map((e) => `${e.name}@${e.version}`) } satisfies UnregisterResponse };
  });
  router.route("get", "/api/v1/plugins", "api", false, () => ({
    body: {
      plugins: runtime.plugins().map((p) => {
        const a = p.availability();
        return { id: p.id, version: p.version, frameworks: p.frameworks, aliases: p.aliases ?? [], formats: p.formats, available: a.available, ...(a.available ? {} : { reason: a.reason }) };
      }),
    } satisfies PluginsResponse,
  }));
  router.route("post", "/api/v1/plugins/register", "admin", true, async (_ctx, body) => {
    const req = parseJson(body, "plugins/register");
    const spec = req.path ?? req.package;
    if (typeof spec !== "string" || spec === "") throw new HttpError(400, "BAD_REQUEST", 'plugins/register: give "path" (a module file or folder on the server) or "package" (an npm package name)');
    const plugin = await importPlugin(spec);
    const replaced = runtime.plugins().some((p) => p.id === plugin.id);
    runtime.registerPlugin(plugin);
    const reloaded = replaced ? await table.reloadPlugin(plugin.id) : [];
    return { status: 201, body: { id: plugin.id, version: plugin.version, replaced, reloaded } };
  });
  router.route("post", "/api/v1/inference", "api", true, async (ctx, body) => {
    const req = parseJson(body, "inference");
    const id = req.model_id;
    if (typeof id !== "string" || id === "") throw new HttpError(400, "BAD_REQUEST", 'inference: "model_id" must be the name a model was registered with');
    const entry = await table.acquire(id);
    if (typeof (req.input ?? req.inputs) === "string" || Array.isArray(req.messages)) return generateText(entry, serving, req, ctx);
    const inputs = mlosInputs(entry.model, req.inputs ?? req.input, pool);
    let outputs: Record<string, Tensor>;
    try {
      outputs = await serving.infer(entry, inputs, "mlos", ctx.signal, Array.isArray(req.outputs) ? (req.outputs as string[]) : undefined, requestParameters(req.parameters ?? { priority: req.priority, timeout: req.timeout_ms }));
    } finally {
      disposeAll(Object.values(inputs));
    }
    return { body: { model_id: entry.name, model_version: entry.version, outputs: outputsToJson(outputs) } satisfies InferenceResponse, after: () => disposeAll(Object.values(outputs)) };
  });
}
