/**
 * The `onnxruntime` plugin: ONNX models through the native addon's ONNX Runtime sessions
 * (native/src/ort/ort_session.cc, the C API over the library onnxruntime-node ships).
 *
 * The data path copies nothing: input tensors are handed to ONNX Runtime over their own memory,
 * outputs whose shape the inputs determine are written by ONNX Runtime straight into slices of the
 * tensor pool, and the others are returned over ONNX Runtime's own buffers.
 */
import { readFile, stat } from "node:fs/promises";
import { loadedOrtInfo, loadOrt, ortLoadError, tryLoadOrt, type NativeOrtBoundRun, type NativeOrtIoInfo, type NativeOrtResult, type NativeOrtSession } from "../../../bindings/native.js";
import { MlosError } from "../../core/errors.js";
import { IPC_NATIVE_SESSION } from "../../protocol/ipc.js";
import { KSERVE_GRPC_CODEC, KSERVE_JSON_CODEC, LATER, type KserveNativeCodec } from "../../protocol/kserve.js";
import { type LoadedModel, type ModelSource, type Plugin, type PluginAvailability, type PluginLoadOptions, type RunRequest, type RunResult } from "../../core/plugin.js";
import { concreteShape, mergeSignature, type Signature, type TensorInfo } from "../../core/signature.js";
import { isDType, type DType } from "../../tensor/dtype.js";
import { getDefaultPool, type TensorPool } from "../../tensor/pool.js";
import { Tensor } from "../../tensor/tensor.js";
import { RunPolicy } from "../../core/run-policy.js";
import { findLanguageModelEntrypoint } from "../../core/generation/language-model.js";
import { LOGITS_FROM_INPUT, rewriteForLastPositionLogits } from "./last-position-logits.js";

/** Native data pointers a debugging run reports (see `InferOptions.debugAddresses`). */
export interface NativeAddresses {
  inputs: Record<string, bigint>;
  outputs: Record<string, bigint>;
}

/** The debugging addresses attached (non-enumerable) to a run's result. */
export const ADDRESSES = Symbol("mlos.nativeAddresses");

function frameworkInfo(io: NativeOrtIoInfo, where: string): TensorInfo {
  if (io.type !== "tensor" || !io.dtype || !isDType(io.dtype)) {
    throw new MlosError("MODEL_INVALID", `${where}: "${io.name}" is a ${io.type}${io.dtype ? ` of ${io.dtype}` : ""}; only tensors are supported`);
  }
  return { name: io.name, dtype: io.dtype as DType, shape: io.shape.map((d, i) => (d >= 0 ? d : (io.symbolicShape[i] ?? -1))) };
}

let runTags = 0;

function inputBytes(inputs: Readonly<Record<string, Tensor>>): number {
  let n = 0;
  for (const k in inputs) n += inputs[k]!.byteLength;
  return n;
}

/** The rewritten decoder's `mlos_logits_from` for a run that wants the last position's logits only. */
const LAST_POSITION = new Tensor("int64", [1], new BigInt64Array([-1n]));

/** Bound runs are kept only for small tensors: a binding holds its buffers alive. */
const BIND_MAX_BYTES = 64 * 1024;

/** A run prepared once (NativeOrtSession.bind) for the same input and output tensors. */
interface Bound {
  readonly run: NativeOrtBoundRun | undefined;
  readonly inputs: readonly Tensor[];
  readonly outputNames: readonly string[];
  readonly outputs: readonly Tensor[];
}

/** One wire format of the native KServe fast path: its session calls. */
interface KserveFormat {
  run(session: NativeOrtSession, body: Uint8Array, out: Uint8Array): number;
  runBatch(session: NativeOrtSession, bodies: readonly Uint8Array[], out: Uint8Array, lengths: Int32Array, maxRows: number): number;
  /** A body's size over its tensors' (for the run policy's size check): JSON text takes at least two bytes per tensor byte, protobuf's raw contents one. */
  bodyBytesPerTensorByte: number;
}

const KSERVE_FORMATS = {
  json: {
    run: (s, body, out) => s.runKserveJson(body, out),
    runBatch: (s, bodies, out, lengths, maxRows) => s.runKserveJsonBatch(bodies, out, lengths, maxRows),
    bodyBytesPerTensorByte: 2,
  },
  grpc: {
    run: (s, body, out) => s.runKserveGrpc(body, out),
    runBatch: (s, bodies, out, lengths, maxRows) => s.runKserveGrpcBatch(bodies, out, lengths, maxRows),
    bodyBytesPerTensorByte: 1,
  },
} satisfies Record<string, KserveFormat>;

class OrtLoadedModel implements LoadedModel {
  readonly signature: Signature;
  readonly memoryBytes: number;
  readonly #session: NativeOrtSession;
  readonly #pool: TensorPool | undefined;
  readonly #policy: RunPolicy;
  readonly #outputInfo = new Map<string, TensorInfo>();
  /** Outputs whose preallocation ONNX Runtime refused once (their declared shape was wrong). */
  readonly #noPrealloc = new Set<string>();
  readonly #inputNames: readonly string[];
  /** The last inline call's tensors with every output given, and its binding once they repeat. */
  #bound: Bound | undefined;
  /** The KServe fast path (JSON and gRPC): for which model name and version the session is prepared, and whether it can take requests. */
  #kserve: { key: string; usable: boolean; batchable: boolean } | undefined;
  /** Written by the native fast path: [0] the last fast run's Session::Run time (µs), [1] its rows (batched runs). */
  readonly #kserveStats = new Float64Array(2);
  /** The fast path's response buffer, reused from request to request (KserveNativeCodec.runSync's contract). */
  #kserveOut: Buffer = Buffer.allocUnsafeSlow(16 * 1024);

  readonly lastPositionLogits: boolean;

  constructor(session: NativeOrtSession, signature: Signature, memoryBytes: number, options: PluginLoadOptions) {
    this.#session = session;
    this.lastPositionLogits = session.overridable.some((o) => o.name === LOGITS_FROM_INPUT);
    this.signature = signature;
    this.memoryBytes = memoryBytes;
    this.#pool = options.pool;
    this.#policy = new RunPolicy(options.runMode ?? "auto");
    for (const o of signature.outputs) this.#outputInfo.set(o.name, o);
    this.#inputNames = signature.inputs.map((i) => i.name);
    this.capabilities = {
      [IPC_NATIVE_SESSION]: session,
      [KSERVE_JSON_CODEC]: this.#kserveCodec(KSERVE_FORMATS.json),
      [KSERVE_GRPC_CODEC]: this.#kserveCodec(KSERVE_FORMATS.grpc),
    };
  }

  /**
   * The native KServe v2 codecs (src/protocol/kserve.ts): JSON for the server's HTTP door,
   * protobuf for its gRPC door; the native session itself, for the IPC door's native threads
   * (src/protocol/ipc.ts).
   */
  readonly capabilities: Readonly<Record<string, unknown>>;

  run(req: RunRequest): Promise<RunResult> {
    if (req.lastPositionLogits && this.lastPositionLogits) req = { ...req, inputs: { ...req.inputs, [LOGITS_FROM_INPUT]: LAST_POSITION } };
    // An inline run takes microseconds and holds the thread: a signal can only stop it before it
    // starts, so a request that carries one (every server request does) still runs inline.
    if (req.signal?.aborted) return Promise.reject(new MlosError("RUN_ABORTED", "the run was aborted before it started", {}, { cause: req.signal.reason }));
    const inline = this.#inline(req);
    if (inline && !req.debugAddresses && req.outputs.every((n) => req.preallocated[n] !== undefined)) {
      try {
        const out = this.#runBound(req);
        if (out) return Promise.resolve(out);
      } catch (e) {
        return Promise.reject(e);
      }
    }
    let prepared: { pre: Record<string, Tensor>; allocated: Tensor[] | undefined };
    try {
      prepared = this.#preallocate(req);
    } catch (e) {
      return Promise.reject(e);
    }
    const { pre, allocated } = prepared;
    if (inline) {
      // The whole run takes microseconds: no promise chain, no thread hop.
      try {
        return Promise.resolve(this.#runInline(req, pre));
      } catch (e) {
        return this.#retry(e, req, pre, allocated);
      }
    }
    return this.#runAsync(req, pre).catch((e: unknown) => this.#retry(e, req, pre, allocated));
  }

  /**
   * The same run, synchronously, when the run policy keeps this model on the calling thread; else
   * undefined (and nothing was done). A failure is thrown as it would reject `run`, but one that
   * `run` would retry returns undefined so that the caller takes the asynchronous path.
   */
  runSync(req: RunRequest): RunResult | undefined {
    if (!this.#inline(req) || req.debugAddresses || req.signal?.aborted) return undefined;
    if (req.outputs.every((n) => req.preallocated[n] !== undefined)) {
      const out = this.#runBound(req);
      if (out) return out;
    }
    const { pre, allocated } = this.#preallocate(req);
    try {
      return this.#runInline(req, pre);
    } catch (e) {
      if (!allocated) throw e;
      for (const t of allocated) t.dispose();
      return undefined;
    }
  }

  #kserveCodec(format: KserveFormat): KserveNativeCodec {
    return {
      runSync: (body, name, version) => this.#kserveRunSync(format, body, name, version),
      runBatchSync: (bodies, name, version, maxRows) => this.#kserveRunBatchSync(format, bodies, name, version, maxRows),
    };
  }

  /**
   * The KServe v2 fast path (NativeOrtSession.runKserveJson / runKserveGrpc): only for models the
   * run policy keeps on the calling thread, as runSync; the native codec declines whatever it does
   * not handle exactly as the general path would.
   */
  #kserveRunSync(format: KserveFormat, body: Uint8Array, modelName: string, modelVersion: string): Uint8Array | undefined {
    if (!this.#policy.inline || !this.#policy.inlineFor(body.byteLength / format.bodyBytesPerTensorByte)) return undefined;
    if (!this.#prepareKserve(modelName, modelVersion).usable) return undefined;
    const n = format.run(this.#session, body, this.#kserveOut);
    if (n < 0) return undefined;
    this.#policy.recordInline(this.#kserveStats[0]!);
    if (n <= this.#kserveOut.byteLength) return this.#kserveOut.subarray(0, n);
    // A response larger than the reused buffer: grow it up to 1 MiB, else give this one its own.
    const out = Buffer.allocUnsafeSlow(n <= 1 << 20 ? Math.max(n, this.#kserveOut.byteLength * 2) : n);
    this.#session.readKserveResponse(out);
    if (out.byteLength <= 1 << 20) this.#kserveOut = out;
    return out.subarray(0, n);
  }

  /**
   * Batched models: the requests stacked into one fast-path run (NativeOrtSession.runKserveJsonBatch
   * / runKserveGrpcBatch), when the run policy keeps this model on the calling thread and its inputs
   * and outputs share a batch dimension; undefined otherwise.
   */
  #kserveRunBatchSync(format: KserveFormat, reqs: readonly Uint8Array[], modelName: string, modelVersion: string, maxRows: number): Array<Uint8Array | typeof LATER | undefined> | undefined {
    if (reqs.length === 0 || !this.#prepareKserve(modelName, modelVersion).batchable) return undefined;
    // Until the run policy has measured the model as one that runs inline, or for a request
    // larger than those it measured, the general path (which runs off the thread, and measures)
    // takes them. The run policy measured single runs; a stacked run grows sublinearly.
    if (!this.#policy.inline) return reqs.map(() => undefined);
    const taken = reqs.filter((r) => this.#policy.inlineFor(r.byteLength / format.bodyBytesPerTensorByte));
    if (taken.length < reqs.length) {
      // The others, declined, go the general path; the rest run as one batch.
      const out = taken.length > 0 ? this.#kserveRunBatchSync(format, taken, modelName, modelVersion, maxRows) : undefined;
      let next = 0;
      return reqs.map((r) => (r === taken[next] ? out?.[next++] : undefined));
    }
    const lengths = new Int32Array(reqs.length);
    const total = format.runBatch(this.#session, reqs, this.#kserveOut, lengths, this.#policy.batchRows(maxRows));
    if (lengths.some((n) => n >= 0)) this.#policy.recordBatch(this.#kserveStats[0]!, this.#kserveStats[1]!);
    // One buffer for the batch's responses, not the reused one: they are written out later.
    const all = Buffer.allocUnsafe(total);
    if (total <= this.#kserveOut.byteLength) this.#kserveOut.copy(all, 0, 0, total);
    else this.#session.readKserveResponse(all);
    let at = 0;
    return Array.from(lengths, (n) => {
      if (n < 0) return n === -2 ? LATER : undefined;
      at += n;
      return all.subarray(at - n, at);
    });
  }

  /** Sets up the native KServe path (both formats) for this model name and version (once; again when they change). */
  #prepareKserve(modelName: string, modelVersion: string): { usable: boolean; batchable: boolean } {
    const key = `${modelName}\0${modelVersion}`;
    if (this.#kserve?.key !== key) {
      // The general path lists outputs in a JS object's key order, which puts integer-like names
      // ("0", "17") first: for such a model the two paths could order them differently.
      const integerLikeNames = this.signature.outputs.some((o) => /^(0|[1-9]\d*)$/.test(o.name));
      this.#kserve = integerLikeNames ? { key, usable: false, batchable: false } : {
        key,
        ...this.#session.prepareKserveJson({
          modelName,
          modelVersion,
          inputs: this.signature.inputs,
          outputs: this.signature.outputs,
          stats: this.#kserveStats,
        }),
      };
    }
    return this.#kserve;
  }

  #inline(req: RunRequest): boolean {
    return this.#policy.inline && req.timeoutMs === undefined && !req.offThread && this.#policy.inlineFor(inputBytes(req.inputs));
  }

  /** Pool tensors for the outputs whose shape the inputs determine (and the caller did not give). */
  #preallocate(req: RunRequest): { pre: Record<string, Tensor>; allocated: Tensor[] | undefined } {
    let pre: Record<string, Tensor> = req.preallocated;
    let allocated: Tensor[] | undefined;
    for (const name of req.outputs) {
      if (pre[name] || this.#noPrealloc.has(name)) continue;
      const info = this.#outputInfo.get(name)!;
      const shape = info.dtype === "string" ? undefined : concreteShape(info, req.bindings);
      if (!shape) continue;
      let t: Tensor;
      try {
        t = (this.#pool ?? getDefaultPool()).tensor(info.dtype as Exclude<DType, "string">, shape);
      } catch (e) {
        if ((e as MlosError).code !== "POOL_EXHAUSTED") {
          for (const a of allocated ?? []) a.dispose();
          throw e;
        }
        continue; // no room: ONNX Runtime allocates this output itself
      }
      if (!allocated) {
        allocated = [];
        pre = { ...pre };
      }
      pre[name] = t;
      allocated.push(t);
    }
    return { pre, allocated };
  }

  /** After a failed run: drop the outputs this call allocated, and run again without them when ORT refused their shape. */
  #retry(e: unknown, req: RunRequest, pre: Record<string, Tensor>, allocated: Tensor[] | undefined): Promise<RunResult> {
    if (!allocated) return Promise.reject(e);
    for (const t of allocated) t.dispose();
    if ((e as MlosError).code !== "RUN_FAILED" || !/shape|dimension/i.test((e as Error).message)) return Promise.reject(e);
    // A declared output shape that the model does not produce: ONNX Runtime refuses the
    // preallocated buffer. Let it allocate those outputs from now on, and run again.
    const kept: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(pre)) {
      if (allocated.includes(v)) this.#noPrealloc.add(k);
      else kept[k] = v;
    }
    return this.#runAsync(req, kept);
  }

  /**
   * The same tensors again (a caller looping over pool tensors): run the bound plan, which costs
   * Session::Run and nothing else. The first call with new tensors only remembers them; the second
   * binds them. Returns undefined when the call is not eligible.
   */
  #runBound(req: RunRequest): RunResult | undefined {
    const inputs = this.#inputNames.map((n) => req.inputs[n]!);
    const outputs = req.outputs.map((n) => req.preallocated[n]!);
    const last = this.#bound;
    const same =
      last !== undefined &&
      last.outputNames.length === req.outputs.length &&
      last.inputs.every((t, i) => t === inputs[i]) &&
      last.outputs.every((t, i) => t === outputs[i] && last.outputNames[i] === req.outputs[i]);
    if (!same || !last.run) {
      let bytes = 0;
      for (const t of inputs) bytes += t.dtype === "string" ? Infinity : t.byteLength;
      for (const t of outputs) bytes += t.byteLength;
      if (bytes > BIND_MAX_BYTES) return undefined;
      if (!same) {
        this.#bound = { run: undefined, inputs, outputNames: req.outputs, outputs };
        return undefined;
      }
      this.#bound = { run: this.#session.bind(req.inputs as never, req.outputs, req.preallocated as never), inputs, outputNames: req.outputs, outputs };
    }
    // A disposed tensor's memory went back to its pool: never run over it.
    for (const t of this.#bound!.inputs) if (t.disposed) return (this.#bound = undefined);
    for (const t of this.#bound!.outputs) if (t.disposed) return (this.#bound = undefined);
    let micros: number;
    try {
      micros = this.#session.runBound(this.#bound!.run!);
    } catch (e) {
      throw runError(e, undefined, undefined);
    }
    this.#policy.recordInline(micros);
    const out: RunResult = {};
    for (let i = 0; i < outputs.length; i++) out[req.outputs[i]!] = outputs[i]!;
    return out;
  }

  #runInline(req: RunRequest, pre: Record<string, Tensor>): RunResult {
    const options = req.debugAddresses ? { debugAddresses: true } : undefined;
    let result: NativeOrtResult;
    try {
      result = this.#session.runSync(req.inputs as never, req.outputs, pre as never, options);
    } catch (e) {
      throw runError(e, undefined, undefined);
    }
    this.#policy.recordInline(result.runMicros);
    return this.#collect(req, pre, result);
  }

  async #runAsync(req: RunRequest, pre: Record<string, Tensor>): Promise<RunResult> {
    const session = this.#session;
    const signal = req.signal;
    if (signal?.aborted) throw new MlosError("RUN_ABORTED", "the run was aborted before it started", {}, { cause: signal.reason });
    const tag = signal ? `r${++runTags}` : undefined;
    const options = req.timeoutMs !== undefined || req.debugAddresses || tag || req.argmax ? { timeoutMs: req.timeoutMs, debugAddresses: req.debugAddresses, tag, argmax: req.argmax } : undefined;
    const onAbort = tag ? () => session.terminate(tag) : undefined;
    if (onAbort) signal!.addEventListener("abort", onAbort, { once: true });
    const started = performance.now();
    let result: NativeOrtResult;
    try {
      result = await session.run(req.inputs as never, req.outputs, pre as never, options);
    } catch (e) {
      throw runError(e, signal, req.timeoutMs);
    } finally {
      if (onAbort) signal!.removeEventListener("abort", onAbort);
    }
    this.#policy.recordAsync(result.runMicros, (performance.now() - started) * 1000, inputBytes(req.inputs));
    return this.#collect(req, pre, result);
  }

  #collect(req: RunRequest, pre: Record<string, Tensor>, result: NativeOrtResult): RunResult {
    const out: RunResult = {};
    for (const name of req.outputs) {
      const r = result[name]!;
      out[name] = pre[name] ?? new Tensor(r.dtype as DType, r.shape, r.data as ArrayBuffer);
    }
    if (req.debugAddresses) {
      const addresses: NativeAddresses = { inputs: { ...(result.inputAddresses ?? {}) }, outputs: {} };
      for (const name of req.outputs) if (result[name]?.address !== undefined) addresses.outputs[name] = result[name]!.address!;
      Object.defineProperty(out, ADDRESSES, { value: addresses, enumerable: false });
    }
    return out;
  }

  async unload(): Promise<void> {
    this.#bound = undefined;
    this.#session.release();
  }

  describe(): Record<string, unknown> {
    return { path: this.#session.path, ...(this.lastPositionLogits ? { lastPositionLogits: true } : {}), ...this.#policy.describe() };
  }
}

function runError(e: unknown, signal: AbortSignal | undefined, timeoutMs: number | undefined): Error {
  const code = (e as { code?: string }).code;
  const message = e instanceof Error ? e.message : String(e);
  if (code === "ORT_TIMEOUT") return new MlosError("RUN_TIMEOUT", `the run took longer than its ${timeoutMs} ms timeout and was stopped`, { timeoutMs }, { cause: e });
  if (code === "ORT_TERMINATED" && signal?.aborted) return new MlosError("RUN_ABORTED", "the run was aborted", {}, { cause: signal.reason ?? e });
  if (code === "BAD_ARGUMENT") return new MlosError("INPUT_INVALID", message, {}, { cause: e });
  return new MlosError("RUN_FAILED", `ONNX Runtime: ${message}`, {}, { cause: e });
}

/** The built-in ONNX Runtime plugin. */
export class OnnxRuntimePlugin implements Plugin {
  readonly id = "onnxruntime";
  readonly frameworks = ["onnx", "onnxruntime"] as const;
  readonly aliases = ["ort"] as const;
  readonly formats = ["onnx", "ort"] as const;

  /** ONNX Runtime's version once it is loaded ("not loaded" before: asking never loads it). */
  get version(): string {
    return loadedOrtInfo()?.version ?? "not loaded";
  }

  availability(): PluginAvailability {
    return tryLoadOrt() ? { available: true } : { available: false, reason: ortLoadError()?.message ?? "ONNX Runtime could not be loaded" };
  }

  async load(source: ModelSource, options: PluginLoadOptions): Promise<LoadedModel> {
    let addon;
    try {
      addon = loadOrt();
    } catch (e) {
      throw new MlosError("PLUGIN_UNAVAILABLE", `the onnxruntime plugin cannot run here: ${(e as Error).message}`, { plugin: this.id }, { cause: e });
    }
    const sessionOptions = {
      intraOpThreads: options.intraOpThreads,
      interOpThreads: options.interOpThreads,
      graphOptimizationLevel: options.graphOptimizationLevel,
      executionMode: options.executionMode,
    };
    let session: NativeOrtSession | undefined;
    // A language model's decoder, rewritten so that generation can skip the vocabulary projection
    // of all but the last position (last-position-logits.ts); should ONNX Runtime refuse the
    // rewritten graph, the file is loaded as it is.
    const rewritten = await lastPositionVariant(source);
    if (rewritten) session = await addon.OrtSession.open(source.entrypoint, { ...sessionOptions, modelBytes: rewritten }).catch(() => undefined);
    try {
      session ??= await addon.OrtSession.open(source.entrypoint, sessionOptions);
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${source.entrypoint}: ONNX Runtime cannot load it: ${(e as Error).message}`, { path: source.entrypoint }, { cause: e });
    }
    try {
      const where = source.entrypoint;
      const framework: Signature = { inputs: session.inputs.map((i) => frameworkInfo(i, where)), outputs: session.outputs.map((o) => frameworkInfo(o, where)) };
      const io = source.manifest?.spec.io;
      const signature = mergeSignature(framework, io, source.dir ? `${source.dir}/axon.yaml` : where);
      const size = (await stat(source.entrypoint)).size;
      return new OrtLoadedModel(session, signature, size, options);
    } catch (e) {
      session.release();
      throw e;
    }
  }
}

/**
 * For a language model's decoder (a manifest with `spec.llm`, or a folder in Hugging Face's
 * layout): its graph rewritten for last-position logits, or undefined (another kind of model, a
 * graph the rewrite does not recognise, or a file that cannot be read here: the plain load reports it).
 */
async function lastPositionVariant(source: ModelSource): Promise<Uint8Array | undefined> {
  if (source.format !== "onnx") return undefined;
  const llm = source.manifest?.spec.llm !== undefined || (source.dir !== undefined && (await findLanguageModelEntrypoint(source.dir)) !== undefined);
  if (!llm) return undefined;
  try {
    return rewriteForLastPositionLogits(await readFile(source.entrypoint));
  } catch {
    return undefined;
  }
}
