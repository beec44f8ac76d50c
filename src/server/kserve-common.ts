/**
 * What the KServe v2 protocol's HTTP and gRPC bindings share besides tensors: the server's
 * metadata and readiness, a model's platform name and tensor metadata, repository states.
 */
import { createRequire } from "node:module";
import type { Model } from "../core/model.js";
import type { ModelEntry, ModelTable } from "../core/model-table.js";
import type { TensorInfo } from "../core/signature.js";
import type { KserveModelMetadata, KserveRepositoryEntry, KserveServerMetadata } from "../protocol/kserve.js";
import { HttpError } from "./http-error.js";
import { datatypeOf } from "./kserve-codec.js";

const VERSION = (createRequire(import.meta.url)("../../../package.json") as { version: string }).version;

/** `GET /v2` and ServerMetadata: the server's name, version and protocol extensions. */
export function serverMetadata(extensions: string[]): KserveServerMetadata {
  return { name: "mlos", version: VERSION, extensions };
}

/** Ready when no model is on its way in or out (registering, loading, unloading). */
export function serverReady(table: ModelTable): boolean {
  return table.list().every((e) => e.state === "ready" || e.state === "unloaded" || e.state === "evicted" || e.state === "failed");
}

/** KServe's `platform` name for a plugin. */
export function platformOf(m: Model): string {
  return m.plugin === "onnxruntime" ? "onnxruntime_onnx" : m.plugin === "torch" ? "pytorch_libtorch" : m.plugin === "tensorflow" ? "tensorflow_tfjs" : m.plugin;
}

/** A tensor's metadata: -1 for a dynamic dimension. */
export const kserveTensorInfo = (t: TensorInfo) => ({ name: t.name, datatype: datatypeOf(t.dtype), shape: t.shape.map((d) => (typeof d === "number" ? d : -1)) });

/** A model version's metadata (name, every registered version, platform, inputs, outputs); 503 when it is not loaded. */
export function modelMetadata(table: ModelTable, e: ModelEntry): KserveModelMetadata {
  const versions = table.list().filter((x) => x.name === e.name).map((x) => x.version);
  if (!e.model) throw new HttpError(503, "MODEL_NOT_READY", `model "${e.name}" version ${e.version} is ${e.state}`);
  return { name: e.name, versions, platform: platformOf(e.model), inputs: e.model.inputs.map(kserveTensorInfo), outputs: e.model.outputs.map(kserveTensorInfo) };
}

/** A model's state as the repository extension names it. */
export const repositoryState = (e: ModelEntry): KserveRepositoryEntry["state"] => (e.state === "ready" ? "READY" : e.state === "failed" ? "UNAVAILABLE" : (e.state.toUpperCase() as KserveRepositoryEntry["state"]));
