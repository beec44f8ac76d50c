/**
 * The `tensorflow` plugin: TF.js graph models (tfjs-converter's `graph-model`) and layers models
 * (Keras-style `layers-model`), from a folder's `model.json` and weight shards, through
 * `@tensorflow/tfjs-node` when it is installed, else `@tensorflow/tfjs` on the WebAssembly backend
 * (see ./tfjs.ts). Importing this module loads no TensorFlow.js: the first `load()` does.
 *
 * Unlike the onnxruntime plugin, the data path copies: TensorFlow.js owns its tensors' memory
 * (the wasm backend's heap, or TensorFlow's buffers), so a request's inputs are copied in and the
 * outputs are read back out (`await t.data()`). Every TensorFlow.js tensor a run creates is
 * disposed before the run returns.
 */
import type * as TF from "@tensorflow/tfjs";
import { MlosError } from "../../core/errors.js";
import type { LoadedModel, ModelSource, Plugin, PluginAvailability, PluginLoadOptions, RunRequest, RunResult } from "../../core/plugin.js";
import { formatShape, mergeSignature, type Signature, type TensorInfo } from "../../core/signature.js";
import type { DType } from "../../tensor/dtype.js";
import { Tensor } from "../../tensor/tensor.js";
import { fileLoadHandler, readModelJson, type TfModelJson, type TfModelKind } from "./io.js";
import type { TfBackendName } from "./backend-name.js";
import { loadedTensorflow, loadTensorflow, packageVersion, tensorflowPlan, TFJS_PACKAGE, type TfNamespace, type TfRuntime } from "./tfjs.js";

export type { TfBackendName };

/** What `availability()` reports: whether the plugin can run, and on which backend. */
export type TensorflowAvailability = PluginAvailability & {
  /** The TensorFlow.js backend loads use (or will use): `tensorflow` (tfjs-node), `wasm` or `cpu`. */
  readonly backend?: TfBackendName;
  /** The package the TensorFlow.js API comes from. */
  readonly package?: string;
  /** Why a preferred backend is not the one used (tfjs-node installed but failing to load). */
  readonly note?: string;
};

/** Ops that make a graph model need `executeAsync` (tfjs-converter's control-flow, dynamic-shape and hash-table ops). */
const ASYNC_OPS = new Set([
  "Switch", "Merge", "Enter", "Exit", "NextIteration", "LoopCond", "If", "StatelessIf", "if", "While", "StatelessWhile",
  "NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4", "NonMaxSuppressionV5", "Where",
  "HashTable", "HashTableV2", "LookupTableImport", "LookupTableImportV2", "LookupTableFind", "LookupTableFindV2", "LookupTableSize", "LookupTableSizeV2",
]);

/** TensorFlow dtype enum names (model.json signatures) -> the dtype TensorFlow.js gives such a tensor. */
const TF_DTYPES: Record<string, DType> = {
  DT_FLOAT: "float32", DT_DOUBLE: "float32", DT_HALF: "float32", DT_BFLOAT16: "float32",
  DT_INT32: "int32", DT_INT64: "int32", DT_INT16: "int32", DT_INT8: "int32", DT_UINT8: "int32", DT_UINT16: "int32", DT_UINT32: "int32", DT_UINT64: "int32",
  DT_BOOL: "bool", DT_STRING: "string", DT_COMPLEX64: "complex64",
};

const TFJS_DTYPES = new Set<string>(["float32", "int32", "bool", "complex64", "string"]);

/** One side of the signature as the model file knows it: dtype or rank may be unknown. */
interface PartialInfo {
  name: string;
  /** The name TensorFlow.js takes (graph: node or signature key; layers: position). */
  key: string;
  dtype: DType | undefined;
  shape: Array<number | string> | undefined;
}

const dims = (shape: readonly (number | null | undefined)[] | undefined): number[] | undefined => (shape ? shape.map((d) => (typeof d === "number" && d >= 0 ? d : -1)) : undefined);

const tfjsDType = (d: unknown): DType | undefined => (typeof d === "string" && TFJS_DTYPES.has(d) ? (d as DType) : undefined);

function dedupe(names: string[]): string[] {
  const seen = new Map<string, number>();
  return names.map((n) => {
    const k = seen.get(n) ?? 0;
    seen.set(n, k + 1);
    return k === 0 ? n : `${n}_${k}`;
  });
}

function asArray(t: TF.Tensor | TF.Tensor[] | TF.NamedTensorMap): TF.Tensor[] {
  if (Array.isArray(t)) return t;
  if ((t as TF.Tensor).dataId !== undefined) return [t as TF.Tensor];
  return Object.values(t as TF.NamedTensorMap);
}

function opsOf(json: TfModelJson["json"]): Set<string> {
  const ops = new Set<string>();
  const topology = json.modelTopology as { node?: Array<{ op?: string }>; library?: { function?: Array<{ nodeDef?: Array<{ op?: string }> }> } };
  for (const n of topology.node ?? []) if (n.op) ops.add(n.op);
  for (const f of topology.library?.function ?? []) for (const n of f.nodeDef ?? []) if (n.op) ops.add(n.op);
  return ops;
}

/** model.json's own `signature` entry for a graph output or input, when the converter wrote one. */
function signatureEntry(json: TfModelJson["json"], side: "inputs" | "outputs", key: string): PartialInfo | undefined {
  const sig = (json as { signature?: Record<string, Record<string, { name?: string; dtype?: string; tensorShape?: { dim?: Array<{ size?: string | number }>; unknownRank?: boolean } }>> }).signature?.[side];
  if (!sig) return undefined;
  const node = key.replace(/:\d+$/, "");
  const e = sig[key] ?? Object.values(sig).find((v) => v.name === key || v.name === `${node}:0` || v.name === node);
  if (!e) return undefined;
  const shape = e.tensorShape && !e.tensorShape.unknownRank ? (e.tensorShape.dim ?? []).map((d) => Number(d.size ?? -1)).map((d) => (Number.isFinite(d) && d >= 0 ? d : -1)) : undefined;
  return { name: key, key, dtype: e.dtype ? TF_DTYPES[e.dtype] : undefined, shape };
}

/**
 * Manifest names for a model whose names are the framework's own inventions: when none of the
 * manifest's names is one of the model's and both list as many tensors, the manifest's names are
 * the model's tensors in order (a layers model's `input_1`, `dense_Dense2` ... become `x`, `y`).
 */
function renameByPosition(model: PartialInfo[], manifest: readonly { name: string }[] | undefined): void {
  if (!manifest || manifest.length !== model.length || manifest.length === 0) return;
  if (manifest.some((m) => model.some((f) => f.name === m.name))) return;
  model.forEach((f, i) => (f.name = manifest[i]!.name));
}

/** Fills what the model file leaves unknown from the manifest's `spec.io`. */
function fillFromManifest(infos: PartialInfo[], manifest: readonly { name: string; dtype: string; shape: readonly (number | string)[] }[] | undefined): void {
  for (const f of infos) {
    const m = manifest?.find((x) => x.name === f.name);
    if (!m) continue;
    if (f.dtype === undefined && TFJS_DTYPES.has(m.dtype)) f.dtype = m.dtype as DType;
    if (f.shape === undefined) f.shape = [...m.shape];
  }
}

class TfLoadedModel implements LoadedModel {
  readonly signature: Signature;
  readonly memoryBytes: number;
  readonly #rt: TfRuntime;
  readonly #tf: TfNamespace;
  readonly #kind: TfModelKind;
  readonly #layers: TF.LayersModel | undefined;
  readonly #graph: TF.GraphModel | undefined;
  /** Graph models with control flow or dynamic-shape ops run through `executeAsync`. */
  #async: boolean;
  readonly #file: string;
  /** Signature input name -> the key TensorFlow.js takes (graph: input node or signature key). */
  readonly #inputKeys: Map<string, string>;
  /** Signature output name -> graph output node, or the index of a layers model's output. */
  readonly #outputKeys: Map<string, string>;
  readonly #outputIndex: Map<string, number>;
  /** Ids of tensors the model owns (weights): never disposed by a run, even when a run returns one. */
  readonly #kept: Set<number>;
  readonly #inflight = new Set<Promise<unknown>>();
  #unloaded = false;
  #runs = 0;
  #lastRunMs = 0;

  constructor(init: {
    rt: TfRuntime;
    kind: TfModelKind;
    layers?: TF.LayersModel;
    graph?: TF.GraphModel;
    async: boolean;
    file: string;
    signature: Signature;
    inputKeys: Map<string, string>;
    outputKeys: Map<string, string>;
    memoryBytes: number;
  }) {
    this.#rt = init.rt;
    this.#tf = init.rt.tf;
    this.#kind = init.kind;
    this.#layers = init.layers;
    this.#graph = init.graph;
    this.#async = init.async;
    this.#file = init.file;
    this.signature = init.signature;
    this.#inputKeys = init.inputKeys;
    this.#outputKeys = init.outputKeys;
    this.#outputIndex = new Map(init.signature.outputs.map((o, i) => [o.name, i]));
    this.memoryBytes = init.memoryBytes;
    this.#kept = new Set<number>();
    if (init.graph) for (const list of Object.values(init.graph.weights)) for (const t of list) this.#kept.add(t.id);
    if (init.layers) for (const w of init.layers.weights) this.#kept.add(w.read().id);
  }

  run(req: RunRequest): Promise<RunResult> {
    if (this.#unloaded) return Promise.reject(new MlosError("MODEL_DISPOSED", `${this.#file}: the model was unloaded`));
    const p = this.#run(req);
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  async #run(req: RunRequest): Promise<RunResult> {
    const started = performance.now();
    const deadline = req.timeoutMs !== undefined ? started + req.timeoutMs : Infinity;
    // TensorFlow.js cannot interrupt a kernel: cancellation and timeouts are checked between the
    // steps of a run (before it, after the model executed, after the outputs were read).
    const check = (): void => {
      if (req.signal?.aborted) throw new MlosError("RUN_ABORTED", "the run was aborted", {}, { cause: req.signal.reason });
      if (performance.now() > deadline) throw new MlosError("RUN_TIMEOUT", `the run took longer than its ${req.timeoutMs} ms timeout`, { timeoutMs: req.timeoutMs });
    };
    check();
    const created: TF.Tensor[] = [];
    let outputs: TF.Tensor[] = [];
    try {
      for (const info of this.signature.inputs) created.push(this.#toTf(info, req.inputs[info.name]!));
      outputs = await this.#execute(created, req.outputs);
      check();
      // Reads back out of the backend (wasm: a copy off its heap; tfjs-node: TensorFlow's buffer).
      const values = await Promise.all(outputs.map((t) => t.data()));
      check();
      const result: RunResult = {};
      req.outputs.forEach((name, i) => {
        const t = outputs[i]!;
        result[name] = this.#toMlos(name, t.dtype as DType, t.shape, values[i]!, req.preallocated[name]);
      });
      this.#runs++;
      this.#lastRunMs = performance.now() - started;
      return result;
    } catch (e) {
      throw runError(e, this.#rt);
    } finally {
      for (const t of created) t.dispose();
      for (const t of outputs) if (!this.#kept.has(t.id)) t.dispose(); // dispose() is idempotent
    }
  }

  /** Runs the model on `inputs` (in signature order); returns the requested outputs, in order. */
  async #execute(inputs: TF.Tensor[], names: readonly string[]): Promise<TF.Tensor[]> {
    const tf = this.#tf;
    if (this.#layers) {
      const model = this.#layers;
      // What predict() runs (inference mode), minus its batching loop: predict slices a request
      // into batches of 32 and concatenates the results, predictOnBatch still slices and
      // concatenates once; execute() runs the layers on the whole request, for the outputs asked.
      const symbolic = names.map((n) => model.outputs[this.#outputIndex.get(n)!]!.name);
      return tf.tidy(() => asArray(model.execute(inputs, symbolic)));
    }
    const model = this.#graph!;
    const feed: TF.NamedTensorMap = {};
    this.signature.inputs.forEach((info, i) => (feed[this.#inputKeys.get(info.name)!] = inputs[i]!));
    const keys = names.map((n) => this.#outputKeys.get(n)!);
    if (!this.#async) {
      try {
        // tidy: whatever an op leaves behind is disposed with the scope; the outputs are kept.
        return tf.tidy(() => asArray(model.execute({ ...feed }, keys)));
      } catch (e) {
        if (!/executeAsync/.test((e as Error).message ?? "")) throw e;
        this.#async = true; // an op that is only async (the scan at load missed it): from now on
      }
    }
    return asArray(await model.executeAsync({ ...feed }, keys));
  }

  /**
   * A TensorFlow.js tensor with the request tensor's values. The copy is unavoidable: TensorFlow.js
   * tensors live in the backend's own memory (the wasm heap, TensorFlow's allocator), which cannot
   * wrap a caller's buffer. (The cpu backend keeps the typed array it is given, read only.)
   */
  #toTf(info: TensorInfo, t: Tensor): TF.Tensor {
    const tf = this.#tf;
    const shape = [...t.shape];
    switch (t.dtype) {
      case "float32":
      case "int32":
        return tf.tensor(t.data as Float32Array | Int32Array, shape, t.dtype);
      case "bool":
        return tf.tensor(t.data as Uint8Array, shape, "bool");
      case "string":
        return tf.tensor(t.data as string[], shape, "string");
      case "complex64": {
        const d = t.data as Float32Array;
        const re = new Float32Array(d.length / 2);
        const im = new Float32Array(d.length / 2);
        for (let i = 0; i < re.length; i++) {
          re[i] = d[2 * i]!;
          im[i] = d[2 * i + 1]!;
        }
        return tf.tidy(() => tf.complex(tf.tensor(re, shape), tf.tensor(im, shape)));
      }
      default:
        throw new MlosError("INPUT_DTYPE", `input "${info.name}": TensorFlow.js has no ${t.dtype} tensors`, { input: info.name, expected: info.dtype, received: t.dtype });
    }
  }

  /** A result tensor over the values read back (or those values written into a caller's tensor). */
  #toMlos(name: string, dtype: DType, shape: number[], values: TF.TypedArray | string[] | Uint8Array[], pre: Tensor | undefined): Tensor {
    const data = dtype === "string" ? (values as unknown[]).map((v) => (typeof v === "string" ? v : Buffer.from(v as Uint8Array).toString("utf8"))) : values;
    if (!pre) return new Tensor(dtype, shape, data as Float32Array);
    if (pre.dtype !== dtype || pre.shape.length !== shape.length || pre.shape.some((d, i) => d !== shape[i])) {
      throw new MlosError("OUTPUT_INVALID", `output "${name}": the model wrote ${dtype} ${formatShape(shape)}, the tensor given is ${pre.dtype} ${formatShape(pre.shape)}`, { output: name, expected: `${dtype} ${formatShape(shape)}`, received: `${pre.dtype} ${formatShape(pre.shape)}` });
    }
    const target = pre.data as unknown as { set?: (a: ArrayLike<unknown>) => void; length: number; [i: number]: unknown };
    if (typeof target.set === "function") target.set(data as ArrayLike<number>);
    else for (let i = 0; i < target.length; i++) target[i] = (data as string[])[i];
    return pre;
  }

  async unload(): Promise<void> {
    if (this.#unloaded) return;
    this.#unloaded = true;
    await Promise.allSettled([...this.#inflight]);
    this.#layers?.dispose();
    this.#graph?.dispose();
  }

  describe(): Record<string, unknown> {
    return {
      path: this.#file,
      kind: this.#kind,
      backend: this.#rt.backend,
      package: this.#rt.package,
      tfjs: this.#rt.version,
      execution: this.#async ? "executeAsync" : "execute",
      runs: this.#runs,
      lastRunMs: this.#lastRunMs,
    };
  }
}

function runError(e: unknown, rt: TfRuntime): Error {
  if (e instanceof MlosError) return e;
  const message = e instanceof Error ? e.message : String(e);
  // The runtime checked the inputs against the signature; what TensorFlow.js still refuses about
  // them (a layers model's own input check, a graph model's dict check) is the caller's.
  if (/Error when checking|provided in model\.execute\(dict\)|must match the shape|expected .* to have shape/i.test(message)) {
    return new MlosError("INPUT_INVALID", `TensorFlow.js: ${message}`, {}, { cause: e });
  }
  return new MlosError("RUN_FAILED", `TensorFlow.js (${rt.backend}): ${message}`, {}, { cause: e });
}

/** Zeros for every input (dynamic dimensions 1): a probe run to learn outputs the file does not describe. */
function probeInputs(tf: TfNamespace, inputs: readonly PartialInfo[]): TF.NamedTensorMap | undefined {
  const feed: TF.NamedTensorMap = {};
  for (const i of inputs) {
    if (!i.shape || !i.dtype) return undefined;
    const shape = i.shape.map((d) => (typeof d === "number" && d >= 0 ? d : 1));
    feed[i.key] = i.dtype === "string" ? tf.fill(shape, "", "string") : tf.zeros(shape, i.dtype as "float32");
  }
  return feed;
}

async function graphSignature(tf: TfNamespace, model: TF.GraphModel, mj: TfModelJson, source: ModelSource, isAsync: boolean): Promise<{ inputs: PartialInfo[]; outputs: PartialInfo[] }> {
  const io = source.manifest?.spec.io;
  const resource = (model as unknown as { signature?: { inputs?: Record<string, { resourceId?: unknown }> } }).signature?.inputs ?? {};
  const inputNodes = model.inputNodes;
  // Placeholders carry their dtype and shape: the inputs are known from the file.
  const inputs: PartialInfo[] = model.inputs
    .map((info, i) => {
      const key = inputNodes[i] ?? info.name;
      const fromSig = signatureEntry(mj.json, "inputs", key);
      return { name: key, key, dtype: tfjsDType(info.dtype) ?? fromSig?.dtype, shape: dims(info.shape) ?? fromSig?.shape } as PartialInfo;
    })
    .filter((i) => resource[i.key]?.resourceId == null);
  renameByPosition(inputs, io?.inputs);
  fillFromManifest(inputs, io?.inputs);
  // Outputs rarely are: the converter's signature has them (when it wrote one); an op's `dtype`
  // attribute is often its input's type (Where, Greater ...), so it is only a last guess.
  const outputNodes = model.outputNodes;
  const guesses: Array<DType | undefined> = [];
  const outputs: PartialInfo[] = model.outputs.map((info, i) => {
    const key = outputNodes[i] ?? info.name;
    const fromSig = signatureEntry(mj.json, "outputs", key);
    guesses.push(tfjsDType(info.dtype));
    return { name: key, key, dtype: fromSig?.dtype, shape: fromSig?.shape ?? dims(info.shape) };
  });
  renameByPosition(outputs, io?.outputs);
  // Run the model once on zeros (dynamic dimensions 1): each output's real dtype and rank (its
  // dimensions stay dynamic unless the file or spec.io fixes them). It also warms the model up.
  const feed = probeInputs(tf, inputs);
  if (feed) {
    let got: TF.Tensor[] = [];
    try {
      const keys = outputs.map((o) => o.key);
      got = isAsync ? asArray(await model.executeAsync({ ...feed }, keys)) : tf.tidy(() => asArray(model.execute({ ...feed }, keys)));
      outputs.forEach((o, i) => {
        const t = got[i]!;
        o.dtype = t.dtype as DType;
        if (!o.shape || o.shape.length !== t.rank) o.shape = t.shape.map(() => -1);
      });
    } catch {
      // a model that refuses zeros: the file's and the manifest's word stand
    } finally {
      const kept = new Set(Object.values(model.weights).flatMap((l) => l.map((t) => t.id)));
      for (const t of Object.values(feed)) t.dispose();
      for (const t of got) if (!kept.has(t.id)) t.dispose();
    }
  }
  fillFromManifest(outputs, io?.outputs);
  outputs.forEach((o, i) => (o.dtype ??= guesses[i]));
  for (const [side, list] of [["input", inputs], ["output", outputs]] as const) {
    const bad = list.find((x) => x.dtype === undefined || x.shape === undefined);
    if (bad) {
      throw new MlosError("MODEL_INVALID", `${mj.file}: the ${side} "${bad.name}" has no known ${bad.dtype === undefined ? "dtype" : "shape"}; declare it in spec.io.${side}s of axon.yaml`, { path: mj.file });
    }
  }
  return { inputs, outputs };
}

function layersSignature(model: TF.LayersModel, source: ModelSource): { inputs: PartialInfo[]; outputs: PartialInfo[] } {
  const io = source.manifest?.spec.io;
  const inNames = dedupe(model.inputNames);
  const outNames = dedupe(model.outputNames);
  const inputs: PartialInfo[] = model.inputs.map((t, i) => ({ name: inNames[i]!, key: String(i), dtype: tfjsDType(t.dtype) ?? "float32", shape: dims(t.shape) ?? [] }));
  const outputs: PartialInfo[] = model.outputs.map((t, i) => ({ name: outNames[i]!, key: String(i), dtype: tfjsDType(t.dtype) ?? "float32", shape: dims(t.shape) ?? [] }));
  renameByPosition(inputs, io?.inputs);
  renameByPosition(outputs, io?.outputs);
  return { inputs, outputs };
}

/** The built-in TensorFlow.js plugin. */
export class TensorflowPlugin implements Plugin {
  readonly id = "tensorflow";
  readonly frameworks = ["tensorflow", "tfjs"] as const;
  readonly aliases = ["tf", "tensorflowjs", "tensorflow.js"] as const;
  readonly formats = ["tfjs-graph", "tfjs-layers", "tfjs"] as const;

  /** TensorFlow.js core's version (read from its package.json until it is loaded). */
  get version(): string {
    return loadedTensorflow()?.version ?? packageVersion(TFJS_PACKAGE) ?? packageVersion("@tensorflow/tfjs-node") ?? "unavailable";
  }

  /** Whether a TensorFlow.js backend can run, which one (`backend`), or why none can. Loads nothing. */
  availability(): TensorflowAvailability {
    const plan = tensorflowPlan();
    if (!plan.available) return { available: false, reason: plan.reason };
    return plan.note ? { available: true, backend: plan.backend, package: plan.package, note: plan.note } : { available: true, backend: plan.backend, package: plan.package };
  }

  async load(source: ModelSource, options: PluginLoadOptions): Promise<LoadedModel> {
    void options; // thread counts and run modes are ONNX Runtime's; TensorFlow.js has one engine per process
    let rt: TfRuntime;
    try {
      rt = await loadTensorflow();
    } catch (e) {
      throw new MlosError("PLUGIN_UNAVAILABLE", `the tensorflow plugin cannot run here: ${(e as Error).message}`, { plugin: this.id }, { cause: e });
    }
    const tf = rt.tf;
    const mj = await readModelJson(source.entrypoint, source.format);
    let weightBytes = 0;
    const handler = fileLoadHandler(tf, mj, (n) => (weightBytes += n));
    const where = source.dir ? `${source.dir}/axon.yaml` : mj.file;
    let layers: TF.LayersModel | undefined;
    let graph: TF.GraphModel | undefined;
    try {
      if (mj.kind === "layers") layers = await tf.loadLayersModel(handler, { strict: true });
      else graph = await tf.loadGraphModel(handler);
    } catch (e) {
      if (e instanceof MlosError) throw e;
      throw new MlosError("MODEL_INVALID", `${mj.file}: TensorFlow.js cannot load this ${mj.kind} model: ${(e as Error).message}`, { path: mj.file }, { cause: e });
    }
    try {
      const isAsync = graph ? [...opsOf(mj.json)].some((op) => ASYNC_OPS.has(op)) : false;
      const partial = graph ? await graphSignature(tf, graph, mj, source, isAsync) : layersSignature(layers!, source);
      const full = (l: PartialInfo[]): TensorInfo[] => l.map((p) => ({ name: p.name, dtype: p.dtype!, shape: p.shape! }));
      const framework: Signature = { inputs: full(partial.inputs), outputs: full(partial.outputs) };
      for (const [side, list] of [["input", framework.inputs], ["output", framework.outputs]] as const) {
        const names = new Set<string>();
        for (const t of list) {
          if (names.has(t.name)) throw new MlosError("MODEL_INVALID", `${where}: two ${side}s are named "${t.name}"`, { path: mj.file });
          names.add(t.name);
        }
      }
      const signature = mergeSignature(framework, source.manifest?.spec.io, where);
      return new TfLoadedModel({
        rt,
        kind: mj.kind,
        layers,
        graph,
        async: isAsync,
        file: mj.file,
        signature,
        inputKeys: new Map(partial.inputs.map((p) => [p.name, p.key])),
        outputKeys: new Map(partial.outputs.map((p) => [p.name, p.key])),
        memoryBytes: weightBytes,
      });
    } catch (e) {
      layers?.dispose();
      graph?.dispose();
      throw e;
    }
  }
}
