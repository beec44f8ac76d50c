/**
 * The KServe v2 / Open Inference Protocol as it travels: the JSON bodies of its HTTP routes (the
 * server writes them, clients read them), and the native-codec capability a plugin may offer to
 * answer JSON infer requests in one call. Shared by the server's doors, the client and plugins.
 */

/** One tensor of an infer request's `inputs` or a response's `outputs`, as JSON. */
export interface KserveTensor {
  name: string;
  /** `BOOL`, `UINT8` ... `FP32`, `FP64`, `BYTES` (see DTYPE_INFO's `kserve` in src/tensor/dtype.ts). */
  datatype: string;
  shape: number[];
  /** Flat or nested row-major elements; absent when the tensor travels as binary data. */
  data?: unknown[];
  /** `binary_data_size` (binary tensor extension), `binary_data` (on requested outputs). */
  parameters?: Record<string, unknown>;
}

/** `POST /v2/models/{name}[/versions/{v}]/infer` */
export interface KserveInferRequest {
  id?: string;
  inputs: KserveTensor[];
  /** Outputs to return (default all), each with `parameters.binary_data` to ask for binary data. */
  outputs?: Array<{ name: string; parameters?: { binary_data?: boolean } }>;
  /** `priority` (higher first), `timeout` (ms), `binary_data_output`. */
  parameters?: { priority?: number; timeout?: number; binary_data_output?: boolean; [k: string]: unknown };
}

export interface KserveInferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  outputs: KserveTensor[];
}

/** `GET /v2` */
export interface KserveServerMetadata {
  name: string;
  version: string;
  extensions: string[];
}

/** `GET /v2/models/{name}[/versions/{v}]`: shapes with -1 for a dynamic dimension. */
export interface KserveModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: Array<{ name: string; datatype: string; shape: number[] }>;
  outputs: Array<{ name: string; datatype: string; shape: number[] }>;
}

/** `GET /v2/models/{name}[/versions/{v}]/ready` */
export interface KserveModelReady {
  name: string;
  version: string;
  ready: boolean;
}

/** One row of `POST /v2/repository/index`. */
export interface KserveRepositoryEntry {
  name: string;
  version: string;
  state: "READY" | "UNAVAILABLE" | "LOADING" | "UNLOADING" | "UNLOADED" | "EVICTED" | "REGISTERING";
  reason: string;
}

/** Every failure, on every route: one line and a stable code. */
export interface ErrorBody {
  error: string;
  code: string;
}

/**
 * The names under which a plugin offers a {@link KserveNativeCodec} (LoadedModel.capabilities):
 * one for the HTTP door's JSON bodies, one for the gRPC door's ModelInferRequest messages
 * (protobuf bytes in, ModelInferResponse bytes out).
 */
export const KSERVE_JSON_CODEC = "kserve-v2-json";
export const KSERVE_GRPC_CODEC = "kserve-v2-grpc";

/** {@link KserveNativeCodec.runBatchSync}'s answer for a request left for another batch. */
export const LATER = Symbol("mlos.later");

/**
 * A plugin's native codec for KServe v2 infer requests in one wire format: decodes the body, runs
 * the model and encodes the response in one call on the calling thread, with no JS tensor in
 * between (for microsecond models, where that JS work costs more than the run). Its response must
 * be byte for byte what the server's general path writes for the same request; for anything it
 * does not fully handle (an invalid request included) it answers undefined having done nothing,
 * and the server takes the general path, which reports errors.
 */
export interface KserveNativeCodec {
  /**
   * One request. The bytes returned may be a view of a buffer the codec reuses: valid until its
   * next call (the caller copies or writes them at once).
   */
  runSync(body: Uint8Array, modelName: string, modelVersion: string): Uint8Array | undefined;
  /**
   * Batched models: several requests as one run of at most `maxRows` rows. Each request's response
   * (undefined for one it declines; `LATER` for a valid one that did not fit: the caller runs it
   * in another batch), or undefined when it cannot batch this model at all. These responses stay
   * valid (they are not views of a reused buffer).
   */
  runBatchSync(bodies: readonly Uint8Array[], modelName: string, modelVersion: string, maxRows: number): Array<Uint8Array | typeof LATER | undefined> | undefined;
}
