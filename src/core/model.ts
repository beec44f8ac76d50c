import type { AxonManifest } from "../axon/manifest/types.js";
import { Tensor } from "../tensor/tensor.js";
import { MlosError } from "./errors.js";
import type { EngineOptions, GenerationChunk, GenerationEngine, GenerationResult } from "./generation/engine.js";
import type { EmbedOptions, EmbeddingModel, EmbeddingResult } from "./generation/embeddings.js";
import { createEmbeddingModel, createGenerationEngine, isDecoderSignature, isEncoderSignature } from "./generation/language-model.js";
import type { GenerationOptions } from "./generation/params.js";
import type { ChatMessage } from "./generation/text.js";
import type { LoadedModel, ModelSource, Plugin, RunResult } from "./plugin.js";
import { checkInputs, concreteShape, formatShape, type TensorInfo } from "./signature.js";

/** What a target resolved to: the model source, and the reference and name it goes by. */
export type ResolvedSource = ModelSource & { readonly reference: string | undefined; readonly name: string };

/** A loaded model shared by every handle that references it (the runtime's bookkeeping). */
export interface LoadedEntry {
  readonly key: string;
  readonly plugin: Plugin;
  /** The source it was first loaded from (handles keep their own). */
  readonly source: ResolvedSource;
  readonly model: LoadedModel;
  refs: number;
  /** A language model's generation engine, built on first use and shared by every handle. */
  engine?: Promise<GenerationEngine>;
  /** An embeddings model's tokenizer and pooling, built on first use. */
  embedder?: Promise<EmbeddingModel>;
  readonly generationOptions?: EngineOptions;
}

/** What a handle calls when it is disposed: the owner (the runtime) drops one reference. */
export type ReleaseHandle = (entry: LoadedEntry, handle: Model) => Promise<void>;

const NO_OUTPUTS: Readonly<Record<string, Tensor>> = Object.freeze({});

const isMessages = (v: unknown): v is readonly ChatMessage[] => Array.isArray(v) && v.length > 0 && typeof v[0] === "object" && v[0] !== null;

export interface InferOptions {
  /**
   * Which outputs to return: names (default: all), or tensors to write them into (returned as
   * they are; with a pool tensor of the right shape, a run allocates and copies nothing).
   */
  outputs?: readonly string[] | Readonly<Record<string, Tensor>>;
  /** Cancels the run (it rejects with RUN_ABORTED). */
  signal?: AbortSignal;
  /** Stops a run that takes longer (it rejects with RUN_TIMEOUT). */
  timeoutMs?: number;
  /** Debugging: attach the native data pointers the framework read and wrote (see `nativeAddresses`). */
  debugAddresses?: boolean;
}

/**
 * A loaded model. `inputs` and `outputs` are its signature (the framework's, with the dynamic
 * dimensions the manifest names); `infer` checks every input against it before anything runs.
 * Several handles may share one loaded model; it stays loaded until the last is disposed.
 *
 * ```ts
 * await using model = await load("demo/mlp@1");
 * const { y } = await model.infer({ x: Tensor.float32([2, 4], data) });
 * ```
 */
export class Model {
  readonly #entry: LoadedEntry;
  readonly #source: ResolvedSource;
  readonly #release: ReleaseHandle;
  readonly #allOutputs: readonly string[];
  #disposed = false;

  /** @internal Use `load()` or `runtime.load()`. */
  constructor(entry: LoadedEntry, source: ResolvedSource, release: ReleaseHandle) {
    this.#entry = entry;
    this.#source = source;
    this.#release = release;
    this.#allOutputs = entry.model.signature.outputs.map((o) => o.name);
  }

  /** The model's name: its manifest's `metadata.name`, or the file's name. */
  get name(): string {
    return this.#source.name;
  }

  /** The resolved Axon reference (`demo/mlp@1.0.0`), when it was loaded by reference. */
  get reference(): string | undefined {
    return this.#source.reference;
  }

  /** The file the framework opened. */
  get path(): string {
    return this.#source.entrypoint;
  }

  get manifest(): AxonManifest | undefined {
    return this.#source.manifest;
  }

  /** The plugin serving it (`onnxruntime`). */
  get plugin(): string {
    return this.#entry.plugin.id;
  }

  get inputs(): readonly TensorInfo[] {
    return this.#entry.model.signature.inputs;
  }

  get outputs(): readonly TensorInfo[] {
    return this.#entry.model.signature.outputs;
  }

  /** Estimated memory of the loaded model, in bytes. */
  get memoryBytes(): number {
    return this.#entry.model.memoryBytes;
  }

  /** Plugin facts: run mode and what was measured to choose it, the file, ... */
  describe(): Record<string, unknown> {
    return this.#entry.model.describe?.() ?? {};
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Runs the model. Inputs are checked first: an unknown or missing input, a wrong dtype, rank or
   * dimension, or data that does not fit the shape rejects with an `InputError` naming the input,
   * the expected and the received, and nothing runs.
   */
  infer(inputs: Readonly<Record<string, Tensor>>, options?: InferOptions): Promise<RunResult> {
    // Not `async`: the plugin's promise is returned as it is (one less promise per call, which
    // shows on microsecond models). Synchronous failures become rejections all the same.
    try {
      if (this.#disposed) throw new MlosError("MODEL_DISPOSED", `model ${this.name} was disposed`);
      const bindings = checkInputs(this.#entry.model.signature, inputs);
      let outputs = this.#allOutputs;
      let preallocated: Readonly<Record<string, Tensor>> = NO_OUTPUTS;
      const wanted = options?.outputs;
      if (wanted !== undefined) {
        if (Array.isArray(wanted)) {
          outputs = this.#checkOutputNames(wanted);
        } else if (wanted !== null && typeof wanted === "object") {
          preallocated = this.#checkPreallocated(wanted as Record<string, Tensor>, bindings);
          outputs = Object.keys(preallocated);
        } else {
          throw new MlosError("OUTPUT_INVALID", "options.outputs must be an array of output names or an object { name: Tensor }");
        }
      }
      return this.#entry.model.run({ inputs, bindings, outputs, preallocated, signal: options?.signal, timeoutMs: options?.timeoutMs, debugAddresses: options?.debugAddresses });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * The same as `infer`, on the calling thread, when the model's plugin runs it there anyway (a
   * microsecond model, see "Where runs execute"); undefined when it would not, and then nothing
   * was run. Throws what `infer` would reject with.
   */
  inferSync(inputs: Readonly<Record<string, Tensor>>, options?: InferOptions): RunResult | undefined {
    const loaded = this.#entry.model;
    if (!loaded.runSync || options?.timeoutMs !== undefined) return undefined;
    if (this.#disposed) throw new MlosError("MODEL_DISPOSED", `model ${this.name} was disposed`);
    const bindings = checkInputs(loaded.signature, inputs);
    let outputs = this.#allOutputs;
    let preallocated: Readonly<Record<string, Tensor>> = NO_OUTPUTS;
    const wanted = options?.outputs;
    if (wanted !== undefined) {
      if (Array.isArray(wanted)) outputs = this.#checkOutputNames(wanted);
      else if (wanted !== null && typeof wanted === "object") {
        preallocated = this.#checkPreallocated(wanted as Record<string, Tensor>, bindings);
        outputs = Object.keys(preallocated);
      } else throw new MlosError("OUTPUT_INVALID", "options.outputs must be an array of output names or an object { name: Tensor }");
    }
    return loaded.runSync({ inputs, bindings, outputs, preallocated, signal: options?.signal, debugAddresses: options?.debugAddresses });
  }

  /**
   * An interface the model's plugin offers under `name` (LoadedModel.capabilities), for a door
   * that knows it; undefined when the plugin has none by that name.
   */
  capability<T>(name: string): T | undefined {
    if (this.#disposed) throw new MlosError("MODEL_DISPOSED", `model ${this.name} was disposed`);
    return this.#entry.model.capabilities?.[name] as T | undefined;
  }

  // ---- language models -------------------------------------------------------------------

  /** Whether the model generates text: a decoder with a KV cache, in a folder with its tokenizer, or a model whose plugin generates (GGUF). */
  get isLanguageModel(): boolean {
    if (this.#entry.model.createGenerationEngine) return true;
    return this.#source.dir !== undefined && (this.#source.manifest?.spec.llm?.task ?? "text-generation") === "text-generation" && isDecoderSignature(this.#entry.model.signature);
  }

  /**
   * Whether the model gives text embeddings: its manifest says `spec.llm.task: embeddings`, or (a
   * folder without one) it is an encoder taking input_ids and attention_mask beside a tokenizer.
   */
  get isEmbeddingModel(): boolean {
    const task = this.#source.manifest?.spec.llm?.task;
    if (this.#source.dir === undefined || !isEncoderSignature(this.#entry.model.signature)) return false;
    return task === "embeddings" || this.#source.manifest === undefined;
  }

  /** The embeddings side of an encoder (built on first use, shared by every handle). */
  embeddingModel(): Promise<EmbeddingModel> {
    if (this.#disposed) return Promise.reject(new MlosError("MODEL_DISPOSED", `model ${this.name} was disposed`));
    const entry = this.#entry;
    if (!entry.embedder) {
      entry.embedder = createEmbeddingModel(entry.model, this.#source);
      entry.embedder.catch(() => {
        entry.embedder = undefined;
      });
    }
    return entry.embedder;
  }

  /**
   * Embeds texts with an embeddings model: one vector per text (pooled as the model says, mean by
   * default, and normalised to length 1 unless `normalize: false`).
   *
   * ```ts
   * await using enc = await load("demo/tiny-embed@1");
   * const { embeddings } = await enc.embed(["a cat", "a dog"]);
   * ```
   */
  async embed(texts: string | ReadonlyArray<string | readonly number[]>, options: EmbedOptions = {}): Promise<EmbeddingResult> {
    const e = await this.embeddingModel();
    return e.embed(typeof texts === "string" ? [texts] : texts, options);
  }

  /**
   * The generation engine of a language model (built on first use, shared by every handle of the
   * model). Rejects with NOT_A_LANGUAGE_MODEL for other models.
   */
  generationEngine(): Promise<GenerationEngine> {
    if (this.#disposed) return Promise.reject(new MlosError("MODEL_DISPOSED", `model ${this.name} was disposed`));
    const entry = this.#entry;
    if (!entry.engine) {
      entry.engine = createGenerationEngine(entry.model, this.#source, entry.generationOptions);
      entry.engine.catch(() => {
        entry.engine = undefined; // a later call may try again (after the files are fixed)
      });
    }
    return entry.engine;
  }

  /**
   * Generates text after `prompt` (a string, or token ids). Resolves with every choice's text,
   * tokens and finish reason, and the token usage.
   *
   * ```ts
   * await using llm = await load("demo/tiny-gpt@1");
   * const { choices } = await llm.generate("Once upon a time", { maxTokens: 32, temperature: 0 });
   * ```
   */
  async generate(prompt: string | readonly number[], options: GenerationOptions = {}): Promise<GenerationResult> {
    const engine = await this.generationEngine();
    return engine.submit(this.#promptIds(engine, prompt), options).result;
  }

  /**
   * Streams text as it is generated: a prompt (string or token ids), or chat messages (rendered
   * with the model's chat template). Each chunk carries one sequence's new text and tokens; its
   * last has `finishReason`. Breaking out of the loop, or the signal aborting, ends the request.
   */
  async *stream(input: string | readonly number[] | readonly ChatMessage[], options: GenerationOptions = {}): AsyncGenerator<GenerationChunk, GenerationResult | undefined> {
    const engine = await this.generationEngine();
    const ids = isMessages(input) ? engine.text.encode(engine.text.applyChatTemplate(input), false) : this.#promptIds(engine, input);
    const { stream, result } = engine.submit(ids, options);
    for await (const chunk of stream) yield chunk;
    return await result;
  }

  /** Answers chat messages with the model's chat template; resolves like `generate`. */
  async chat(messages: readonly ChatMessage[], options: GenerationOptions = {}): Promise<GenerationResult> {
    const engine = await this.generationEngine();
    const ids = engine.text.encode(engine.text.applyChatTemplate(messages), false);
    return engine.submit(ids, options).result;
  }

  #promptIds(engine: GenerationEngine, prompt: string | readonly number[]): number[] {
    if (typeof prompt === "string") return engine.text.encode(prompt);
    if (Array.isArray(prompt)) return [...(prompt as number[])];
    throw new MlosError("GENERATION_INVALID", "the prompt must be a string or an array of token ids", { option: "prompt" });
  }

  #checkOutputNames(names: readonly unknown[]): string[] {
    const seen = new Set<string>();
    for (const n of names) {
      if (typeof n !== "string" || !this.#allOutputs.includes(n)) {
        throw new MlosError("OUTPUT_UNKNOWN", `unknown output ${JSON.stringify(n)}; the model's outputs are: ${this.#allOutputs.join(", ")}`, { output: n });
      }
      if (seen.has(n)) throw new MlosError("OUTPUT_INVALID", `output "${n}" is named twice`, { output: n });
      seen.add(n);
    }
    return [...seen];
  }

  #checkPreallocated(given: Record<string, unknown>, bindings: Map<string, number>): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(given)) {
      const info = this.outputs.find((o) => o.name === name);
      if (!info) throw new MlosError("OUTPUT_UNKNOWN", `unknown output "${name}"; the model's outputs are: ${this.#allOutputs.join(", ")}`, { output: name });
      if (!(t instanceof Tensor) || t.disposed) throw new MlosError("OUTPUT_INVALID", `output "${name}" must be a live Tensor to write into`, { output: name });
      if (t.dtype !== info.dtype) throw new MlosError("OUTPUT_INVALID", `output "${name}": the model writes ${info.dtype}, the tensor given is ${t.dtype}`, { output: name, expected: info.dtype, received: t.dtype });
      const shape = concreteShape(info, bindings);
      const fits = shape ? shape.length === t.shape.length && shape.every((d, i) => d === t.shape[i]) : info.shape.length === t.shape.length;
      if (!fits) {
        throw new MlosError("OUTPUT_INVALID", `output "${name}": the model writes ${shape ? formatShape(shape) : formatShape(info.shape)} for these inputs, the tensor given is ${formatShape(t.shape)}`, { output: name, expected: formatShape(shape ?? info.shape), received: formatShape(t.shape) });
      }
      out[name] = t;
    }
    return out;
  }

  /** Releases this handle; the model unloads when no handle references it. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#release(this.#entry, this);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
