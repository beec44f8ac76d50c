/**
 * The MLOS v1 API as it travels: the JSON bodies of `/api/v1/...` (the server writes them, the
 * client and the CLI's server commands read them).
 */
import type { ModelSummary } from "../core/model-table.js";
import type { ErrorBody } from "./kserve.js";

/** A served model, as `GET /api/v1/models[/{id}]` and `axon ps` show it (the model table's summary). */
export type { ErrorBody, ModelSummary };

/** `POST /api/v1/models/register` */
export interface RegisterRequest {
  /** The served name with `path`; without it, an Axon reference (installed when missing). */
  model_id: string;
  path?: string;
  /** A plugin id or a name people use for it: `onnxruntime`/`onnx`, `torch`/`pytorch`, `tensorflow`/`tfjs`. */
  plugin_id?: string;
  framework?: string;
}

export type RegisterResponse = ModelSummary & { model_id: string; status: ModelSummary["state"] };

/** `GET /api/v1/models` */
export interface ModelsResponse {
  models: ModelSummary[];
}

/** `DELETE /api/v1/models/{id}`: `name@version` of each version removed. */
export interface UnregisterResponse {
  removed: string[];
}

/** One tensor in MLOS v1 JSON. */
export interface MlosTensor {
  dtype: string;
  shape: number[];
  data: unknown[];
}

/** `POST /api/v1/inference` */
export interface InferenceRequest {
  model_id: string;
  /** `{name: nested array}`, `{name: {data, shape?, dtype?}}`, or a KServe-style list. */
  inputs?: unknown;
  /** One nested array, for a single-input model. */
  input?: unknown;
  outputs?: string[];
  parameters?: { priority?: number; timeout?: number };
}

export interface InferenceResponse {
  model_id: string;
  model_version: string;
  outputs: Record<string, MlosTensor>;
}

/** `GET /api/v1/plugins` */
export interface PluginsResponse {
  plugins: Array<{ id: string; version: string; frameworks: readonly string[]; aliases: readonly string[]; formats: readonly string[]; available: boolean; reason?: string }>;
}
