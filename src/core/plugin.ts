/**
 * The plugin interface: how MLOS Core hosts a framework. A plugin loads a model folder (with its
 * manifest, when it has one), reports the model's signature and memory, runs requests, and unloads.
 * The built-in ones (src/plugins) register themselves as defaults (core/plugin-registry.ts); a
 * third party implements this interface in a JS module and registers it with
 * `runtime.registerPlugin(plugin)`.
 */
import type { ArgmaxRequest } from "../../bindings/native.js";
import type { AxonManifest } from "../axon/manifest/types.js";
import type { EngineOptions } from "./generation/engine.js";
import type { GenerationEngine } from "./generation/requests.js";
import type { TensorPool } from "../tensor/pool.js";
import type { Tensor } from "../tensor/tensor.js";
import type { DimBindings, Signature } from "./signature.js";

/** What a plugin is asked to load. */
export interface ModelSource {
  /** The model folder (an installed view, or a folder the caller named); undefined for a bare file. */
  readonly dir: string | undefined;
  /** The file the framework opens: the manifest's `spec.format.entrypoint`, its first file, or the file given. */
  readonly entrypoint: string;
  /** The manifest, when the model has one. */
  readonly manifest: AxonManifest | undefined;
  /** Format of the model file (`onnx`, `torchscript`, `tfjs-graph` ...). */
  readonly format: string;
}

/** Options a caller may give for loading; plugins ignore what does not apply to them. */
export interface PluginLoadOptions {
  /** Threads inside one operator (ONNX Runtime intra-op); 0 or absent: the framework's default. */
  intraOpThreads?: number;
  /** Threads across operators (ONNX Runtime inter-op, used with executionMode "parallel"). */
  interOpThreads?: number;
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  executionMode?: "sequential" | "parallel";
  /**
   * Where runs execute: "async" on a native worker thread (never on the event loop), "inline" on
   * the calling thread, or "auto" (the default): decided per model from measured run times.
   */
  runMode?: "auto" | "inline" | "async";
  /** Pool for outputs whose shape is known before the run; default: the process-wide pool. */
  pool?: TensorPool;
}

/** One request, already checked against the signature. */
export interface RunRequest {
  readonly inputs: Readonly<Record<string, Tensor>>;
  /** Symbolic dimensions the inputs bind (`batch` -> 8). */
  readonly bindings: DimBindings;
  /** Outputs to return, in order. */
  readonly outputs: readonly string[];
  /** Caller-provided output tensors to write in place (already checked to fit). */
  readonly preallocated: Readonly<Record<string, Tensor>>;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
  /** Debugging: report native data pointers of what the framework read and wrote. */
  readonly debugAddresses?: boolean;
  /**
   * Optional: the index of the largest value of each [offset, offset + width) slice of a float32
   * output, written into `into` by a plugin that can do it where the output was written (the
   * onnxruntime plugin, on the run's worker thread: greedy decoding's next tokens while the logits
   * are in that core's cache). A plugin that cannot leaves `into` as the caller filled it.
   */
  readonly argmax?: ArgmaxRequest;
  /**
   * Optional: compute a decoder's `logits` for the last position of each row only ([batch, 1,
   * vocabulary]), for a model whose `lastPositionLogits` is true; the others ignore it.
   */
  readonly lastPositionLogits?: boolean;
  /**
   * Run on a worker thread even where the plugin's run policy would run it inline: the generation
   * engine's lanes overlap their runs, and a step whose first runs were short may grow long.
   */
  readonly offThread?: boolean;
}

/** What a run returns: one tensor per requested output. */
export type RunResult = Record<string, Tensor>;

/** A loaded model, as a plugin holds it. */
export interface LoadedModel {
  readonly signature: Signature;
  /** Estimate of the memory the loaded model holds, in bytes. */
  readonly memoryBytes: number;
  run(request: RunRequest): Promise<RunResult>;
  /**
   * Optional: the same run on the calling thread, when the plugin would run it there anyway (a
   * microsecond model); undefined when it would not (then nothing was done). The server uses it to
   * answer such requests without a promise in between.
   */
  runSync?(request: RunRequest): RunResult | undefined;
  /**
   * Optional: other interfaces the plugin offers for this model, by name, for the doors that know
   * them: for instance `kserve-v2-json`, a native codec that decodes a request body, runs it and
   * encodes the response in one call (see src/protocol/kserve.ts). The core never calls them; it
   * only carries tensors. A door that uses one runs it through the model's scheduler
   * (`Scheduler.runInline`) so that it counts against the model's instances like any run.
   */
  readonly capabilities?: Readonly<Record<string, unknown>>;
  /**
   * Optional: whether a run can compute a decoder's `logits` for the last position of each row
   * only (RunRequest.lastPositionLogits): generation needs no other, and on a small model the
   * vocabulary projection of every prompt position is most of the prompt's cost.
   */
  readonly lastPositionLogits?: boolean;
  /**
   * Optional: for a framework that generates text itself (llama.cpp), the model's generation
   * engine, built on first use; the core then uses it instead of batching a decoder of its own.
   * A model with it is a language model whatever its signature.
   */
  createGenerationEngine?(options: EngineOptions): Promise<GenerationEngine>;
  /** Releases the model once the runs in flight are done. */
  unload(): Promise<void>;
  /** Plugin-specific facts for `ps`/metrics/debugging (run mode, measured timings ...). */
  describe?(): Record<string, unknown>;
}

export type PluginAvailability = { available: true } | { available: false; reason: string };

export interface Plugin {
  /** Stable id: `onnxruntime`, `torch`, `tensorflow`, or a third party's. */
  readonly id: string;
  readonly version: string;
  /** Manifest `spec.framework.name`s it serves (matched case-insensitively). */
  readonly frameworks: readonly string[];
  /** Other names a register request or a manifest's `spec.serving.plugin` may call it by. */
  readonly aliases?: readonly string[];
  /** Manifest `spec.format.type`s (and file extensions, without the dot) it opens. */
  readonly formats: readonly string[];
  /** Whether it can run here, and why not. */
  availability(): PluginAvailability;
  load(source: ModelSource, options: PluginLoadOptions): Promise<LoadedModel>;
}
