/**
 * The `llamacpp` plugin (also called `gguf`): GGUF language models, the format of llama.cpp,
 * Ollama and LM Studio, run by llama.cpp through node-llama-cpp (an optional package, see
 * ./llama.ts). A GGUF model is recognised from its manifest (`framework: gguf` or `llamacpp`,
 * format `gguf`) or from its `.gguf` file.
 *
 * A GGUF model generates text; it has no tensor signature, and `infer()` with tensors is refused
 * with NOT_A_TENSOR_MODEL. Its tokenizer and chat template are the ones in the file (llama.cpp
 * tokenizes; the template is rendered by mlos with @huggingface/jinja, as for ONNX models, so
 * that every model family's template behaves the same whichever runtime serves it). Generation
 * runs on ./engine.ts.
 */
import { open as openFile, readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import type { LlamaContext, LlamaModel } from "node-llama-cpp";
import { isInlineChatTemplate } from "../../axon/manifest/validate.js";
import { MlosError } from "../../core/errors.js";
import type { EngineOptions } from "../../core/generation/engine.js";
import type { GenerationEngine } from "../../core/generation/requests.js";
import { ModelText, readJson } from "../../core/generation/text.js";
import type { LoadedModel, ModelSource, Plugin, PluginAvailability, PluginLoadOptions, RunResult } from "../../core/plugin.js";
import { batchInSequenceOrder, hookContext } from "./context-hooks.js";
import { LlamaCppEngine } from "./engine.js";
import { backendOf, GPU_CHOICES, gpuUnavailableReason, nodeLlamaCpp, nodeLlamaCppVersion, startLlama, unavailableReason, type GpuChoice, type Llama, type NodeLlamaCppModule } from "./llama.js";

export { GPU_CHOICES, type GpuChoice };

/** The first bytes of every GGUF file. */
const GGUF_MAGIC = "GGUF";

/** Threads per model when the caller gives none: half the CPUs (1 on a 2-core machine), at least 1. */
function defaultThreads(): number {
  return Math.max(1, Math.floor(availableParallelism() / 2));
}

/** The GPU choice from MLOS_LLAMACPP_GPU (off unless set). */
function gpuFromEnv(): GpuChoice {
  const v = (process.env.MLOS_LLAMACPP_GPU ?? "off").toLowerCase();
  return (GPU_CHOICES as readonly string[]).includes(v) ? (v as GpuChoice) : "off";
}

export interface LlamaCppPluginOptions {
  /** Where llama.cpp runs (default: MLOS_LLAMACPP_GPU, else off: the CPU). */
  gpu?: GpuChoice;
}

export type LlamaCppAvailability = PluginAvailability & { readonly gpu?: GpuChoice };

/** The built-in llama.cpp plugin. */
export class LlamaCppPlugin implements Plugin {
  readonly id = "llamacpp";
  readonly frameworks = ["gguf", "llamacpp", "llama.cpp"] as const;
  readonly aliases = ["gguf", "llama.cpp", "llama-cpp"] as const;
  readonly formats = ["gguf"] as const;
  readonly gpu: GpuChoice;

  constructor(options: LlamaCppPluginOptions = {}) {
    const gpu = options.gpu ?? gpuFromEnv();
    if (!(GPU_CHOICES as readonly string[]).includes(gpu)) throw new MlosError("PLUGIN_INVALID", `llamacpp: gpu must be one of ${GPU_CHOICES.join(", ")}, got ${JSON.stringify(gpu)}`);
    this.gpu = gpu;
  }

  /** node-llama-cpp's version (from its package.json), or "unavailable". */
  get version(): string {
    return nodeLlamaCppVersion() ?? "unavailable";
  }

  /** Whether node-llama-cpp is installed and the GPU choice's binaries are; loads nothing. */
  availability(): LlamaCppAvailability {
    const reason = unavailableReason() ?? gpuUnavailableReason(this.gpu);
    return reason ? { available: false, reason, gpu: this.gpu } : { available: true, gpu: this.gpu };
  }

  async load(source: ModelSource, options: PluginLoadOptions): Promise<LoadedModel> {
    const file = source.entrypoint;
    await checkGgufFile(file);
    const m = await nodeLlamaCpp();
    const llama = await startLlama(this.gpu);
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: file, gpuLayers: llama.gpu === false ? 0 : "auto" });
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${file}: llama.cpp cannot load this GGUF model: ${(e as Error).message.split("\n")[0]}`, { path: file }, { cause: e });
    }
    const threads = options.intraOpThreads !== undefined && options.intraOpThreads > 0 ? options.intraOpThreads : defaultThreads();
    return new LlamaCppModel(m, llama, model, source, threads);
  }
}

/** MODEL_INVALID unless `file` is readable and starts with GGUF's magic (before llama.cpp sees it). */
async function checkGgufFile(file: string): Promise<void> {
  let head: Buffer;
  try {
    const fh = await openFile(file, "r");
    try {
      head = Buffer.alloc(4);
      const { bytesRead } = await fh.read(head, 0, 4, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new MlosError("MODEL_NOT_FOUND", `${file}: the GGUF file cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { path: file });
  }
  if (head.toString("latin1") !== GGUF_MAGIC) throw new MlosError("MODEL_INVALID", `${file}: not a GGUF file (it does not start with "GGUF")`, { path: file });
}

/** A loaded GGUF model. */
class LlamaCppModel implements LoadedModel {
  /** No tensors in or out: the model generates text. */
  readonly signature = { inputs: [], outputs: [] };
  readonly memoryBytes: number;
  readonly #m: NodeLlamaCppModule;
  readonly #llama: Llama;
  readonly #model: LlamaModel;
  readonly #source: ModelSource;
  readonly #threads: number;
  #context: LlamaContext | undefined;
  #engine: LlamaCppEngine | undefined;

  constructor(m: NodeLlamaCppModule, llama: Llama, model: LlamaModel, source: ModelSource, threads: number) {
    this.#m = m;
    this.#llama = llama;
    this.#model = model;
    this.#source = source;
    this.#threads = threads;
    this.memoryBytes = model.size;
  }

  run(): Promise<RunResult> {
    return Promise.reject(new MlosError("NOT_A_TENSOR_MODEL", `${path.basename(this.#source.entrypoint)} is a GGUF language model: it takes text, not tensors (generate(), chat(), /v1/chat/completions, or /api/v1/inference with a string input)`));
  }

  async createGenerationEngine(options: EngineOptions): Promise<GenerationEngine> {
    if (this.#engine) return this.#engine;
    const model = this.#model;
    const metadata = model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: unknown[] }; chat_template?: unknown } };
    const vocabSize = metadata.tokenizer?.ggml?.tokens?.length ?? 0;
    if (vocabSize === 0) throw new MlosError("MODEL_INVALID", `${this.#source.entrypoint}: the GGUF file has no vocabulary (tokenizer.ggml.tokens)`, { path: this.#source.entrypoint });
    const llm = this.#source.manifest?.spec.llm;
    const contextLength = Math.min(llm?.context_length ?? model.trainContextSize, model.trainContextSize);
    const endTokens: number[] = [];
    for (let t = 0; t < vocabSize; t++) if (model.isEogToken(t as never)) endTokens.push(t);
    const text = ModelText.fromParts({
      codec: {
        encode: (s, add) => {
          const ids = model.tokenize(s, true) as number[];
          const bos = model.tokens.bos as number | null;
          return add && bos !== null && model.tokens.shouldPrependBosToken ? [bos, ...ids] : ids;
        },
        decode: (ids, skip) => model.detokenize(ids as never, !skip),
      },
      chatTemplate: await this.#chatTemplate(typeof metadata.tokenizer?.chat_template === "string" ? metadata.tokenizer.chat_template : undefined),
      specials: Object.fromEntries(
        [
          ["bos_token", model.tokens.bosString],
          ["eos_token", model.tokens.eosString],
        ].filter((e): e is [string, string] => typeof e[1] === "string"),
      ),
      eosTokenIds: endTokens,
      generationDefaults: await this.#generationDefaults(),
    });
    let engine: LlamaCppEngine | undefined;
    let context: LlamaContext | undefined;
    try {
      this.#context = context = await model.createContext({
        sequences: Math.max(1, options.maxNumSeqs ?? 32),
        contextSize: contextLength,
        batchSize: Math.max(16, options.maxBatchedTokens ?? 512),
        threads: this.#threads,
        batching: { itemPrioritizationStrategy: batchInSequenceOrder(() => context) },
      });
      hookContext(this.#context, () => engine?.countStep());
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${this.#source.entrypoint}: llama.cpp cannot create a context of ${options.maxNumSeqs ?? 32} sequences x ${contextLength} tokens: ${(e as Error).message.split("\n")[0]}`, { path: this.#source.entrypoint }, { cause: e });
    }
    engine = new LlamaCppEngine(this.#m, model, this.#context, text, { maxWaiting: options.maxWaiting ?? 1024, contextLength, vocabSize, endTokens });
    this.#engine = engine;
    return engine;
  }

  /** The manifest's generation_config.json (sampling defaults, stop strings), when it names one. */
  async #generationDefaults(): Promise<Record<string, unknown>> {
    const rel = this.#source.manifest?.spec.llm?.generation_config;
    if (!rel || !this.#source.dir) return {};
    return (await readJson(path.join(this.#source.dir, rel), "generation config")) ?? {};
  }

  /** The manifest's template (a file in the folder, or the text itself), else the GGUF file's. */
  async #chatTemplate(fromFile: string | undefined): Promise<string | undefined> {
    const given = this.#source.manifest?.spec.llm?.chat_template;
    if (given === undefined) return fromFile;
    if (isInlineChatTemplate(given)) return given;
    const file = path.join(this.#source.dir ?? path.dirname(this.#source.entrypoint), given);
    try {
      return await readFile(file, "utf8");
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${file}: the chat template file cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { path: file });
    }
  }

  async unload(): Promise<void> {
    await this.#engine?.close();
    await this.#context?.dispose();
    await this.#model.dispose();
  }

  describe(): Record<string, unknown> {
    return { runtime: "llama.cpp", backend: backendOf(this.#llama), threads: this.#threads, file: this.#source.entrypoint, architecture: this.#model.fileInfo.metadata.general?.architecture, sizeBytes: this.#model.size };
  }
}
