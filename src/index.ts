/**
 * mlos: the library. Axon (the model package manager: install, pack, push, verify, search and the
 * cache, as the `axon` CLI does) and MLOS Core's runtime (`load`, `infer`, `Tensor`).
 *
 * ```ts
 * import { load, infer, Tensor } from "mlos";
 * await using model = await load("demo/mlp@1");          // installs if needed, picks the plugin
 * const { y } = await model.infer({ x: Tensor.float32([2, 4], data) });
 * const out = await infer("demo/mlp@1", { x });           // one-shot, over a process-wide runtime
 *
 * import { Axon } from "mlos";
 * const { record } = await new Axon().install("demo/mlp@^1");
 * console.log(record.path);                               // a folder of files any framework can open
 * ```
 */
import "./plugins/index.js"; // registers the built-in plugins as every Runtime's defaults
import type { InferOptions, Model } from "./core/model.js";
import { getDefaultRuntime, type LoadOptions } from "./core/runtime.js";
import type { Tensor as TensorClass } from "./tensor/tensor.js";

/**
 * Loads a model over the process-wide runtime: `target` is an Axon reference (`demo/mlp@^1`,
 * installed through the configured registries when missing) or a path (a folder with an
 * `axon.yaml`, or a model file). The plugin comes from the manifest or the file's format.
 */
export function load(target: string, options?: LoadOptions): Promise<Model> {
  return getDefaultRuntime().load(target, options);
}

/** One-shot inference: loads `target` once (it stays loaded for later calls) and runs it. */
export function infer(target: string, inputs: Readonly<Record<string, TensorClass>>, options?: InferOptions & { load?: LoadOptions }): Promise<Record<string, TensorClass>> {
  return getDefaultRuntime().infer(target, inputs, options);
}

export { Tensor, type TensorSource } from "./tensor/tensor.js";
export { TensorPool, getDefaultPool, type TensorPoolOptions, type TensorPoolStats } from "./tensor/pool.js";
export { DTYPES, type DType, type TensorData, type NumericDType } from "./tensor/dtype.js";
export { Model, type InferOptions } from "./core/model.js";
export { Runtime, getDefaultRuntime, type LoadOptions } from "./core/runtime.js";
export { MlosError, InputError, isMlosError, type MlosErrorCode } from "./core/errors.js";
export type { Plugin, PluginAvailability, PluginLoadOptions, LoadedModel, ModelSource, RunRequest, RunResult } from "./core/plugin.js";
export { registerDefaultPlugin } from "./core/plugin-registry.js";
export { RunPolicy, type RunMode } from "./core/run-policy.js";
export type { GenerationOptions } from "./core/generation/params.js";
export type { GenerationEngine, GenerationChunk, GenerationChoice, GenerationResult, TokenLogprob, FinishReason, EngineOptions, EngineStats } from "./core/generation/engine.js";
export type { ChatMessage } from "./core/generation/text.js";
export type { TensorInfo, Signature } from "./core/signature.js";
export { OnnxRuntimePlugin, ADDRESSES, type NativeAddresses } from "./plugins/onnxruntime/index.js";
export { LlamaCppPlugin, type LlamaCppPluginOptions, type GpuChoice } from "./plugins/llamacpp/index.js";
export type * as kserve from "./protocol/kserve.js";
export type * as mlosV1 from "./protocol/mlos-v1.js";

export { Axon, type InstallOptions, type InstallResult, type ModelInfo, type ProgressEvent, type ProgressSink, type SearchHit, type VerifyProblem } from "./axon/axon.js";
export { AxonError, isAxonError, type AxonErrorCode } from "./axon/errors.js";
export { AxonPaths } from "./axon/paths.js";
export { parseReference, formatReference, type ModelReference } from "./axon/reference.js";
export type { InstallRecord, InstalledFile } from "./axon/store/installs.js";
export type { AxonManifest, TensorSpec, TensorDType, ManifestFile } from "./axon/manifest/types.js";
export { parseManifest, stringifyManifest } from "./axon/manifest/parse.js";
export { seedDemoModels, DEMO_MODELS_DIR } from "./axon/demo.js";
