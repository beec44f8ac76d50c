/**
 * Guesses what a Hugging Face repository holds from its file names: the framework and format
 * that pick a runtime plugin, the file a runtime opens first, and the tokenizer, chat template
 * and generation files that the LLM routes need. Names alone decide; `refineDetection` then reads
 * a few small JSON files (already downloaded) to settle what names cannot: tfjs graph vs layers,
 * a chat template kept inside tokenizer_config.json, the context length.
 *
 * When a repository holds several formats (a transformers repo with safetensors and an `onnx/`
 * export, say) the order below decides, ONNX first because every MLOS Core install can run it.
 */
import type { AxonManifest, FrameworkName } from "../manifest/types.js";

export interface DetectFile {
  path: string;
  size?: number;
}

export type LlmSpec = NonNullable<AxonManifest["spec"]["llm"]>;

export interface Detection {
  framework: FrameworkName;
  /** `spec.format.type`: onnx, torchscript, tfjs-graph, tfjs-layers, savedmodel, safetensors, gguf, other. */
  format: string;
  /** The file a runtime opens first; absent for `other`. */
  entrypoint?: string;
  /** Keywords for `metadata.tags`. */
  tags: string[];
  llm?: LlmSpec;
}

/** Small files that `refineDetection` may read, by path, in the detection's file list. */
export function filesToRefine(d: Detection, files: DetectFile[]): string[] {
  const out: string[] = [];
  if (d.framework === "tfjs" && d.entrypoint) out.push(d.entrypoint);
  for (const name of ["tokenizer_config.json", "chat_template.json", "config.json"]) {
    const p = shallowest(files.map((f) => f.path).filter((p) => base(p) === name));
    if (p) out.push(p);
  }
  return [...new Set(out)];
}

/** Framework, format, entrypoint and LLM files from file names alone. */
export function detectModel(files: DetectFile[]): Detection {
  const paths = files.map((f) => f.path).sort();
  const lower = (p: string): string => p.toLowerCase();
  const withExt = (...exts: string[]): string[] => paths.filter((p) => exts.some((e) => lower(p).endsWith(e)));

  let d: Detection;
  const onnx = withExt(".onnx");
  const torch = withExt(".pt", ".pth", ".torchscript");
  const tfjs = paths.filter((p) => base(p) === "model.json" && paths.some((q) => dir(q) === dir(p) && lower(q).endsWith(".bin")));
  const saved = paths.filter((p) => base(p) === "saved_model.pb" || base(p) === "saved_model.pbtxt");
  const safetensors = withExt(".safetensors");
  const gguf = withExt(".gguf");
  if (onnx.length > 0) {
    d = { tags: [], framework: "onnx", format: "onnx", entrypoint: pick(onnx, ["model.onnx", "onnx/model.onnx"], "model.onnx") };
  } else if (torch.length > 0) {
    d = { tags: [], framework: "pytorch", format: "torchscript", entrypoint: pick(torch, ["model.pt", "model.pth"], "model.pt") };
  } else if (tfjs.length > 0) {
    d = { tags: [], framework: "tfjs", format: "tfjs-graph", entrypoint: shallowest(tfjs)! };
  } else if (saved.length > 0) {
    d = { tags: [], framework: "tensorflow", format: "savedmodel", entrypoint: shallowest(saved)! };
  } else if (safetensors.length > 0) {
    const index = paths.filter((p) => base(p) === "model.safetensors.index.json");
    d = { tags: [], framework: "safetensors", format: "safetensors", entrypoint: shallowest(index) ?? pick(safetensors, ["model.safetensors"], "model.safetensors") };
  } else if (gguf.length > 0) {
    d = { tags: [], framework: "gguf", format: "gguf", entrypoint: pick(gguf, [], "model.gguf") };
  } else {
    d = { tags: [], framework: "other", format: "other" };
  }

  const llm: LlmSpec = {};
  const tokenizer = shallowest(paths.filter((p) => base(p) === "tokenizer.json")) ?? shallowest(paths.filter((p) => base(p) === "tokenizer.model"));
  if (tokenizer) llm.tokenizer = tokenizer;
  const generation = shallowest(paths.filter((p) => base(p) === "generation_config.json"));
  if (generation) llm.generation_config = generation;
  const template = shallowest(paths.filter((p) => base(p) === "chat_template.jinja"));
  if (template) llm.chat_template = template;
  if (Object.keys(llm).length > 0) d.llm = llm;
  d.tags = tagsOf(d);
  return d;
}

/**
 * Settles what names cannot by reading a few small JSON files (`read` returns a file's text, or
 * undefined when it is not at hand). Never throws on unexpected content: it keeps the guess.
 */
export async function refineDetection(d: Detection, files: DetectFile[], read: (path: string) => Promise<string | undefined>): Promise<Detection> {
  const out: Detection = { ...d, tags: [...d.tags], ...(d.llm ? { llm: { ...d.llm } } : {}) };
  const json = async (p: string | undefined): Promise<Record<string, unknown> | undefined> => {
    if (!p) return undefined;
    try {
      const text = await read(p);
      if (text === undefined) return undefined;
      const v = JSON.parse(text) as unknown;
      return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  };
  const paths = files.map((f) => f.path);
  const find = (name: string): string | undefined => shallowest(paths.filter((p) => base(p) === name));

  if (out.framework === "tfjs" && out.entrypoint) {
    const model = await json(out.entrypoint);
    const format = typeof model?.format === "string" ? model.format : undefined;
    const topology = model?.modelTopology as Record<string, unknown> | undefined;
    if (format === "layers-model" || (!format && topology && ("keras_version" in topology || "model_config" in topology || "class_name" in topology))) {
      out.format = "tfjs-layers";
    } else if (format === "graph-model") {
      out.format = "tfjs-graph";
    }
  }

  const llm: LlmSpec = { ...(out.llm ?? {}) };
  if (!llm.chat_template) {
    const fromConfig = chatTemplateOf((await json(find("tokenizer_config.json")))?.chat_template) ?? chatTemplateOf((await json(find("chat_template.json")))?.chat_template);
    if (fromConfig) llm.chat_template = fromConfig;
  }
  if (llm.context_length === undefined) {
    const config = await json(find("config.json"));
    const textConfig = config?.text_config && typeof config.text_config === "object" ? (config.text_config as Record<string, unknown>) : undefined;
    let ctx: number | undefined;
    for (const c of [config, textConfig]) {
      for (const k of ["max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"]) {
        const v = c?.[k];
        if (ctx === undefined && typeof v === "number" && Number.isSafeInteger(v) && v > 0) ctx = v;
      }
    }
    if (ctx === undefined && (llm.tokenizer || llm.chat_template)) {
      const v = (await json(find("tokenizer_config.json")))?.model_max_length;
      // Tokenizers without a limit say 1e30; only believe plausible numbers.
      if (typeof v === "number" && Number.isSafeInteger(v) && v > 0 && v <= 10_000_000) ctx = v;
    }
    if (ctx !== undefined && (llm.tokenizer || llm.chat_template || llm.generation_config)) llm.context_length = ctx;
  }
  if (Object.keys(llm).length > 0) out.llm = llm;
  out.tags = tagsOf(out);
  return out;
}

function chatTemplateOf(v: unknown): string | undefined {
  if (typeof v === "string" && v.trim() !== "") return v;
  // Several named templates: [{ name, template }], "default" first.
  if (Array.isArray(v)) {
    const named = v.filter((t): t is { name?: unknown; template: string } => !!t && typeof t === "object" && typeof (t as { template?: unknown }).template === "string");
    const chosen = named.find((t) => t.name === "default") ?? named[0];
    return chosen?.template;
  }
  return undefined;
}

function tagsOf(d: Detection): string[] {
  const tags = [d.framework, d.format];
  if (d.llm?.chat_template || d.llm?.generation_config) tags.push("llm");
  return [...new Set(tags.filter((t) => t !== "other"))];
}

function base(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}

function dir(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

function depth(p: string): number {
  return p.split("/").length;
}

/** The shallowest path, then the first in order. */
function shallowest(paths: string[]): string | undefined {
  return [...paths].sort((a, b) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0))[0];
}

/** An exact preferred path, else a file with the preferred base name, else the shallowest. */
function pick(paths: string[], preferred: string[], baseName: string): string {
  for (const p of preferred) if (paths.includes(p)) return p;
  return shallowest(paths.filter((p) => base(p) === baseName)) ?? shallowest(paths)!;
}
