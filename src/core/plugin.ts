/**
 * The plugin interface: how MLOS Core hosts a framework. A plugin loads a model folder (with its
 * manifest, when it has one), reports the model's signature and memory, runs requests, and unloads.
 * Built-in: `onnxruntime` (src/plugins/onnxruntime). A third party implements this interface in a
 * JS module and registers it with `runtime.registerPlugin(plugin)`.
 */
import type { AxonManifest } from "../axon/manifest/types.js";
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
}

/** What a run returns: one tensor per requested output. */
export type RunResult = Record<string, Tensor>;

/** {@link LoadedModel.runEncodedBatchSync}'s answer for a request left for another batch. */
export const LATER = Symbol("mlos.later");

/** A request body in a wire format, for {@link LoadedModel.runEncodedSync}. */
export interface EncodedRequest {
  /** `kserve-v2-json`: a KServe v2 / Open Inference Protocol infer request, JSON tensors only. */
  readonly format: "kserve-v2-json";
  readonly body: Uint8Array;
  /** The names the response carries (`model_name`, `model_version`). */
  readonly modelName: string;
  readonly modelVersion: string;
}

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
   * Optional: decodes a request body in a wire format, runs it on the calling thread and returns
   * the encoded response body, with no JS tensor in between (the server's fast path for
   * microsecond models, where that JS work costs more than the run). The response must be
   * byte-for-byte what the server writes for the same request through `run`; for anything it does
   * not fully handle (an invalid request included) it returns undefined having done nothing, and
   * the server takes the general path, which reports errors. The bytes returned may be a view of
   * a buffer the plugin reuses: they are valid until its next call (the server writes them to the
   * socket at once).
   */
  runEncodedSync?(request: EncodedRequest): Uint8Array | undefined;
  /**
   * Optional, for batched models: several encoded requests (of this model) as one run of at most
   * `maxRows` rows, on the calling thread. Returns each request's response (same contract as
   * runEncodedSync; undefined for one it declines; `LATER` for a valid one that did not fit in
   * this batch: the caller runs it in another), or undefined when it cannot batch this model at
   * all. Its responses stay valid (they are not views of a reused buffer).
   */
  runEncodedBatchSync?(requests: readonly EncodedRequest[], maxRows: number): Array<Uint8Array | typeof LATER | undefined> | undefined;
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
