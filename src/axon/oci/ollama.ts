/**
 * Ollama's model artifacts, installed as GGUF packages. Ollama's registry speaks the OCI
 * distribution protocol; its image manifests carry a Docker-style config and layers with Ollama's
 * own media types (no file-path annotations, no axon.yaml):
 *
 * - `application/vnd.ollama.image.model`: the GGUF file                -> model.gguf
 * - `...image.template`: the chat template (Go text/template)           -> ollama/template, and
 *                                                                          chat_template.jinja when it converts
 * - `...image.params`: JSON parameters (stop, temperature, num_ctx ...) -> ollama/params.json, and
 *                                                                          generation_config.json + context length
 * - `...image.system`: the default system prompt                        -> ollama/system (and the template's default)
 * - `...image.license`: license texts                                   -> LICENSE, LICENSE-2 ...
 *
 * Adapters and projectors (LoRA, vision) are refused: the llamacpp plugin serves one GGUF file.
 */
import { readFile } from "node:fs/promises";
import { AxonError } from "../errors.js";
import { MANIFEST_API_VERSION, type AxonManifest, type ManifestFile } from "../manifest/types.js";
import { ggufManifestFacts } from "../gguf/gguf-header.js";
import type { OciManifest } from "./artifact.js";
import { ollamaTemplateToJinja, UnsupportedTemplate } from "./ollama-template.js";

const PREFIX = "application/vnd.ollama.image.";
export const OllamaMediaTypes = {
  model: `${PREFIX}model`,
  template: `${PREFIX}template`,
  params: `${PREFIX}params`,
  system: `${PREFIX}system`,
  license: `${PREFIX}license`,
  messages: `${PREFIX}messages`,
  adapter: `${PREFIX}adapter`,
  projector: `${PREFIX}projector`,
} as const;

/** Whether an image manifest is an Ollama model (any layer of Ollama's media types). */
export function isOllamaManifest(m: OciManifest): boolean {
  return Array.isArray(m.layers) && m.layers.some((l) => typeof l.mediaType === "string" && l.mediaType.startsWith(PREFIX));
}

/** Ollama parameters (Modelfile PARAMETER) that have a generation_config.json counterpart. */
const PARAMS: Record<string, string> = { temperature: "temperature", top_k: "top_k", top_p: "top_p", min_p: "min_p", repeat_penalty: "repetition_penalty", num_predict: "max_new_tokens", stop: "stop" };

export interface OllamaPackage {
  manifest: AxonManifest;
  /** Files made here (the converted template, generation_config.json), to store as blobs. */
  generated: Array<{ path: string; bytes: Buffer }>;
  /** What could not be carried over, for the install's caller to show. */
  notes: string[];
}

/**
 * The Axon package of an Ollama artifact whose blobs are downloaded (`blobPath` gives a digest's
 * file). `repo` is `namespace/name` (Ollama's `library/llama3`), `tag` its tag (`8b`).
 */
export async function ollamaPackage(m: OciManifest, opts: { repo: string; tag: string; source: string; blobPath: (digest: string) => string; digestOf: (bytes: Buffer) => string }): Promise<OllamaPackage> {
  const where = `${opts.source}/${opts.repo}:${opts.tag}`;
  const of = (type: string) => m.layers.filter((l) => l.mediaType === type);
  for (const t of [OllamaMediaTypes.adapter, OllamaMediaTypes.projector]) {
    if (of(t).length > 0) throw new AxonError("MANIFEST_FILE", `${where} has an Ollama ${t.slice(PREFIX.length)} layer (LoRA adapters and vision projectors are not supported): only plain GGUF models install`);
  }
  const models = of(OllamaMediaTypes.model);
  if (models.length !== 1) throw new AxonError("MANIFEST_FILE", `${where} has ${models.length} Ollama model layers; one GGUF file is expected`);
  const model = models[0]!;
  const text = async (type: string) => {
    const l = of(type)[0];
    return l ? readFile(opts.blobPath(l.digest), "utf8") : undefined;
  };
  const files: ManifestFile[] = [{ path: "model.gguf", size: model.size, sha256: model.digest }];
  const generated: OllamaPackage["generated"] = [];
  const notes: string[] = [];
  const add = (path: string, bytes: Buffer) => {
    generated.push({ path, bytes });
    files.push({ path, size: bytes.length, sha256: opts.digestOf(bytes) });
  };
  const keep = (path: string, type: string) => {
    const l = of(type)[0];
    if (l) files.push({ path, size: l.size, sha256: l.digest });
  };
  of(OllamaMediaTypes.license).forEach((l, i) => files.push({ path: i === 0 ? "LICENSE" : `LICENSE-${i + 1}`, size: l.size, sha256: l.digest }));
  keep("ollama/template", OllamaMediaTypes.template);
  keep("ollama/params.json", OllamaMediaTypes.params);
  keep("ollama/system", OllamaMediaTypes.system);

  const facts = await ggufManifestFacts(opts.blobPath(model.digest));
  const llm: NonNullable<AxonManifest["spec"]["llm"]> = { ...facts.llm };
  delete llm.chat_template; // Ollama's template, when it converts, is the one it serves with

  const template = await text(OllamaMediaTypes.template);
  const system = await text(OllamaMediaTypes.system);
  if (template !== undefined) {
    try {
      add("chat_template.jinja", Buffer.from(ollamaTemplateToJinja(template, { defaultSystem: system })));
      llm.chat_template = "chat_template.jinja";
    } catch (e) {
      if (!(e instanceof UnsupportedTemplate)) throw e;
      if (facts.llm.chat_template) llm.chat_template = facts.llm.chat_template;
      notes.push(`the Ollama template was not converted (${e.message}): the GGUF file's own chat template is used; the original is in ollama/template`);
    }
  }

  const paramsText = await text(OllamaMediaTypes.params);
  if (paramsText !== undefined) {
    let params: Record<string, unknown>;
    try {
      params = JSON.parse(paramsText) as Record<string, unknown>;
    } catch (e) {
      throw new AxonError("MANIFEST_FILE", `${where}: the Ollama params layer is not JSON: ${(e as Error).message}`);
    }
    const gen: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(params)) {
      const to = PARAMS[k];
      if (to === undefined) continue;
      if (k === "num_predict" && (typeof v !== "number" || v <= 0)) continue; // -1: no limit
      if (k === "stop") gen.stop = Array.isArray(v) ? v.filter((s) => typeof s === "string") : typeof v === "string" ? [v] : [];
      else if (typeof v === "number") gen[to] = v;
    }
    const numCtx = params.num_ctx;
    if (typeof numCtx === "number" && Number.isSafeInteger(numCtx) && numCtx > 0) llm.context_length = Math.min(numCtx, facts.llm.context_length ?? numCtx);
    const unmapped = Object.keys(params).filter((k) => PARAMS[k] === undefined && k !== "num_ctx");
    if (unmapped.length > 0) notes.push(`Ollama parameters without a counterpart were kept only in ollama/params.json: ${unmapped.join(", ")}`);
    if (Object.keys(gen).length > 0) {
      add("generation_config.json", Buffer.from(`${JSON.stringify(gen, null, 2)}\n`));
      llm.generation_config = "generation_config.json";
    }
  }

  const [namespace, ...rest] = opts.repo.split("/");
  const name = rest.join("-") || namespace!;
  const manifest: AxonManifest = {
    apiVersion: MANIFEST_API_VERSION,
    kind: "Model",
    metadata: {
      namespace: rest.length > 0 ? namespace! : "library",
      name,
      version: opts.tag,
      description: `Ollama model ${where}`,
      tags: [...new Set(["gguf", "ollama", ...facts.tags])],
      source: where,
    },
    spec: {
      framework: { name: "gguf" },
      format: { type: "gguf", entrypoint: "model.gguf", files },
      llm,
      serving: { plugin: "llamacpp" },
    },
  };
  return { manifest, generated, notes };
}
