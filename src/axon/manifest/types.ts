/**
 * The Axon model manifest, `axon.yaml`. Field names follow the original Axon manifest
 * (`apiVersion`, `kind`, `metadata`, `spec.framework`, `spec.format`, `spec.io`,
 * `spec.requirements`); `spec.serving` and `spec.llm` add what MLOS Core needs to serve it.
 * The JSON Schema in `schemas/axon-manifest.schema.json` is the authority; these types mirror it.
 */
export const MANIFEST_API_VERSION = "axon.mlos.io/v1";
export const MANIFEST_FILENAME = "axon.yaml";

/** Tensor element types, as ONNX names them (lower case). */
export const TENSOR_DTYPES = [
  "float32", "float64", "float16", "bfloat16",
  "int8", "int16", "int32", "int64",
  "uint8", "uint16", "uint32", "uint64",
  "bool", "string",
] as const;
export type TensorDType = (typeof TENSOR_DTYPES)[number];

export const FRAMEWORKS = ["onnx", "pytorch", "tensorflow", "tfjs", "gguf", "safetensors", "other"] as const;
export type FrameworkName = (typeof FRAMEWORKS)[number];

export interface ManifestFile {
  /** Path relative to the model folder, forward slashes, never escaping it. */
  path: string;
  size: number;
  /** `sha256:<64 hex>` (axon.yaml may write the bare 64 hex digits; parsing adds the prefix). */
  sha256: string;
}

export interface TensorSpec {
  name: string;
  dtype: TensorDType;
  /** Dimensions; -1 or a symbolic name for a dynamic one. */
  shape: Array<number | string>;
  description?: string;
}

export interface AxonManifest {
  apiVersion: typeof MANIFEST_API_VERSION;
  kind: "Model";
  metadata: {
    namespace: string;
    name: string;
    /** A semver version. */
    version: string;
    description?: string;
    license?: string;
    authors?: string[];
    tags?: string[];
    homepage?: string;
    source?: string;
  };
  spec: {
    framework: { name: FrameworkName; version?: string };
    format: {
      /** e.g. onnx, torchscript, tfjs-graph, tfjs-layers, safetensors, gguf */
      type: string;
      /** The file a runtime opens first (defaults to the first file). */
      entrypoint?: string;
      files: ManifestFile[];
    };
    io?: { inputs: TensorSpec[]; outputs: TensorSpec[] };
    requirements?: {
      memory?: string; // e.g. "64Mi", estimate of resident memory when loaded
      gpu?: boolean;
      cpu?: number;
      runtime?: string; // semver range of MLOS Core
    };
    serving?: {
      batching?: { max_batch_size?: number; max_queue_delay_us?: number; preferred_batch_sizes?: number[] };
      instances?: number;
      plugin?: string;
    };
    llm?: {
      /** `text-generation` (default) or `embeddings`. */
      task?: "text-generation" | "embeddings";
      /** The Hugging Face `config.json` (architecture: layers, heads, vocabulary). */
      config?: string;
      /** Embeddings: `mean` or `cls` pooling. */
      pooling?: "mean" | "cls";
      tokenizer?: string;
      chat_template?: string;
      generation_config?: string;
      context_length?: number;
    };
  };
}

/** A `spec.format.files` entry as an author may write it for `axon pack`: size and digest optional. */
export interface ManifestFileDraft {
  path: string;
  size?: number;
  sha256?: string;
}

/**
 * The draft form of a manifest that `axon pack` accepts (`parseManifest(text, file, { draft: true })`):
 * `spec.format.files` may be absent, or list paths without size and sha256; `completeManifest`
 * fills them in from the model folder.
 */
export type AxonManifestDraft = Omit<AxonManifest, "spec"> & {
  spec: Omit<AxonManifest["spec"], "format"> & {
    format: Omit<AxonManifest["spec"]["format"], "files"> & { files?: ManifestFileDraft[] };
  };
};
