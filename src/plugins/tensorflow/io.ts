/**
 * TF.js model folders on disk: `model.json` (the topology and the weights manifest) and its weight
 * shards, read through a custom `tf.io.IOHandler` (TensorFlow.js without tfjs-node has no file://
 * loader), and written by {@link fileSaveHandler}. Only type imports from TensorFlow.js: nothing
 * here loads it.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type * as TF from "@tensorflow/tfjs";
import { relativePathProblem } from "../../axon/manifest/validate.js";
import { MlosError } from "../../core/errors.js";
import type { TfNamespace } from "./tfjs.js";

/** A graph model (tfjs-converter's `graph-model`) or a Keras-style layers model (`layers-model`). */
export type TfModelKind = "graph" | "layers";

export const MODEL_JSON = "model.json";

/** A model.json, read and checked, with its kind settled. */
export interface TfModelJson {
  /** The model.json file. */
  readonly file: string;
  readonly json: TF.io.ModelJSON;
  readonly kind: TfModelKind;
}

const invalid = (file: string, why: string, cause?: unknown): MlosError => new MlosError("MODEL_INVALID", `${file}: ${why}`, { path: file }, cause === undefined ? undefined : { cause });

/** `spec.format.type` -> the kind it names (undefined for `tfjs` and anything else: detect it). */
export function declaredKind(format: string | undefined): TfModelKind | undefined {
  if (format === "tfjs-graph") return "graph";
  if (format === "tfjs-layers") return "layers";
  return undefined;
}

/** What model.json says it is: its `format`, else the shape of its `modelTopology`. */
export function detectKind(json: { format?: unknown; modelTopology?: unknown }): TfModelKind | undefined {
  const f = typeof json.format === "string" ? json.format.toLowerCase() : "";
  if (f.includes("graph")) return "graph";
  if (f.includes("layers")) return "layers";
  const t = json.modelTopology as Record<string, unknown> | null | undefined;
  if (!t || typeof t !== "object") return undefined;
  if (Array.isArray(t.node)) return "graph";
  if (typeof t.class_name === "string" || (t.model_config && typeof t.model_config === "object")) return "layers";
  return undefined;
}

/**
 * Finds the model.json of a source (the entrypoint itself, `model.json` in the entrypoint when it
 * is a folder, or next to it when the entrypoint is a weight shard), reads it and settles the kind:
 * `spec.format.type` (`tfjs-graph`, `tfjs-layers`) when the manifest names one, checked against the
 * file. Throws MODEL_INVALID.
 */
export async function readModelJson(entrypoint: string, format: string | undefined): Promise<TfModelJson> {
  let file = entrypoint;
  let st;
  try {
    st = await stat(file);
  } catch (e) {
    throw invalid(file, "the TF.js model.json does not exist", e);
  }
  if (st.isDirectory()) file = path.join(file, MODEL_JSON);
  else if (path.extname(file).toLowerCase() !== ".json" && existsSync(path.join(path.dirname(file), MODEL_JSON))) file = path.join(path.dirname(file), MODEL_JSON);
  if (path.extname(file).toLowerCase() !== ".json" && (format === "savedmodel" || path.basename(file) === "saved_model.pb" || existsSync(path.join(path.dirname(file), "saved_model.pb")))) {
    throw invalid(entrypoint, "a TensorFlow SavedModel: the tensorflow plugin runs TF.js models (convert it to a graph model with tensorflowjs_converter)");
  }
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw invalid(file, `cannot read the TF.js model.json: ${(e as Error).message}`, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw invalid(file, `not a TF.js model.json: ${(e as Error).message}`, e);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw invalid(file, "not a TF.js model.json: it is not a JSON object");
  const j = json as Record<string, unknown>;
  if (!j.modelTopology || typeof j.modelTopology !== "object") throw invalid(file, "not a TF.js model.json: it has no modelTopology object");
  if (j.weightsManifest !== undefined) {
    const ok =
      Array.isArray(j.weightsManifest) &&
      j.weightsManifest.every(
        (g: unknown) =>
          g !== null &&
          typeof g === "object" &&
          Array.isArray((g as { paths?: unknown }).paths) &&
          (g as { paths: unknown[] }).paths.every((p) => typeof p === "string") &&
          Array.isArray((g as { weights?: unknown }).weights) &&
          (g as { weights: unknown[] }).weights.every((w) => w !== null && typeof w === "object" && typeof (w as { name?: unknown }).name === "string" && Array.isArray((w as { shape?: unknown }).shape)),
      );
    if (!ok) throw invalid(file, "weightsManifest must be an array of { paths: string[], weights: [{ name, shape, dtype }] }");
  }
  const detected = detectKind(j);
  const declared = declaredKind(format);
  if (declared && detected && declared !== detected) {
    throw invalid(file, `the manifest says spec.format.type tfjs-${declared}, but model.json is a ${detected} model (format ${JSON.stringify(j.format ?? null)})`);
  }
  const kind = declared ?? detected;
  if (!kind) throw invalid(file, "cannot tell a graph model from a layers model: model.json has no format and an unrecognized modelTopology (set spec.format.type to tfjs-graph or tfjs-layers)");
  return { file, json: json as TF.io.ModelJSON, kind };
}

/** The shard files a model.json names, in the order their bytes concatenate, checked to stay in its folder. */
export function shardFiles(model: TfModelJson): string[] {
  const base = path.dirname(model.file);
  const out: string[] = [];
  for (const group of model.json.weightsManifest ?? []) {
    for (const p of group.paths) {
      // Paths are URLs relative to model.json in the http loader: undo %-escapes when the literal name is not there.
      let rel = p;
      if (!existsSync(path.join(base, rel))) {
        try {
          const decoded = decodeURIComponent(p);
          if (existsSync(path.join(base, decoded))) rel = decoded;
        } catch {
          // keep the literal path
        }
      }
      const why = relativePathProblem(rel.replace(/^\.\//, ""));
      if (why !== undefined) throw invalid(model.file, `weightsManifest path ${JSON.stringify(p)} is unsafe: ${why}`);
      out.push(path.join(base, rel));
    }
  }
  return out;
}

/**
 * A load handler over a model.json already read: it reads the weight shards (each kept as its own
 * ArrayBuffer, so that models past 2 GiB load too) when TensorFlow.js asks for them.
 */
export function fileLoadHandler(tf: TfNamespace, model: TfModelJson, onBytes?: (n: number) => void): TF.io.IOHandler {
  return {
    load: () =>
      tf.io.getModelArtifactsForJSON(model.json, async (manifest) => {
        const specs = tf.io.getWeightSpecs(manifest);
        const buffers: ArrayBuffer[] = [];
        for (const file of shardFiles(model)) {
          let buf: Buffer;
          try {
            buf = await readFile(file);
          } catch (e) {
            throw invalid(model.file, `cannot read weight shard ${path.basename(file)}: ${(e as Error).message}`, e);
          }
          onBytes?.(buf.byteLength);
          // readFile's Buffer may be a view into a larger allocation: hand TensorFlow.js exactly the file's bytes.
          buffers.push(buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength ? (buf.buffer as ArrayBuffer) : (buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer));
        }
        return [specs, buffers.length === 1 ? buffers[0]! : buffers];
      }),
  };
}

/**
 * A save handler writing a TF.js model into `dir` as `model.json` + one `weights.bin` (what
 * tfjs-node's file:// saver writes), for `model.save(fileSaveHandler(dir))`.
 */
export function fileSaveHandler(dir: string, options: { weightsFile?: string } = {}): TF.io.IOHandler {
  const weightsFile = options.weightsFile ?? "weights.bin";
  return {
    async save(artifacts: TF.io.ModelArtifacts): Promise<TF.io.SaveResult> {
      await mkdir(dir, { recursive: true });
      const parts = artifacts.weightData === undefined ? [] : Array.isArray(artifacts.weightData) ? artifacts.weightData : [artifacts.weightData];
      const weights = Buffer.concat(parts.map((b) => new Uint8Array(b)));
      const json: Record<string, unknown> = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [weightsFile], weights: artifacts.weightSpecs ?? [] }],
      };
      if (artifacts.trainingConfig) json.trainingConfig = artifacts.trainingConfig;
      if (artifacts.signature) json.signature = artifacts.signature;
      if (artifacts.userDefinedMetadata) json.userDefinedMetadata = artifacts.userDefinedMetadata;
      if (artifacts.modelInitializer) json.modelInitializer = artifacts.modelInitializer;
      const text = JSON.stringify(json);
      await writeFile(path.join(dir, MODEL_JSON), text);
      await writeFile(path.join(dir, weightsFile), weights);
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: "JSON",
          modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology ?? null)),
          weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? [])),
          weightDataBytes: weights.byteLength,
        },
      };
    },
  };
}
