/**
 * The `torch` plugin: TorchScript models (`torch.jit.save` archives) through libtorch, in an addon
 * of its own (native/torch, build/Release/mlos_torch.node) built when libtorch is found. Importing
 * this module loads neither the addon nor libtorch (about 285 shared libraries): the first `load()`
 * does; `availability()` only looks for the addon's file (or reports why an earlier load failed).
 *
 * TorchScript has no named, typed signature, so a model needs the manifest's `spec.io`: its inputs
 * are the method's arguments in the manifest's order, its outputs the result flattened in order
 * (a tensor, or a tuple or list of them). The data path copies nothing: inputs are handed to
 * libtorch with `torch::from_blob` over the tensors' own memory (pool slices stay where they are),
 * and outputs come back as buffers over the torch tensors' memory. The one copy is into outputs the
 * caller preallocated (libtorch's methods cannot write into given memory).
 */
import { stat } from "node:fs/promises";
import { loadTorch, torchStatus, TORCH_DTYPES, tryLoadTorch, type NativeTorchDtype, type NativeTorchModule, type NativeTorchResult, type NativeTorchTensorArg } from "../../../bindings/torch.js";
import { MlosError } from "../../core/errors.js";
import type { LoadedModel, ModelSource, Plugin, PluginAvailability, PluginLoadOptions, RunRequest, RunResult } from "../../core/plugin.js";
import { IPC_NATIVE_RUNNER } from "../../protocol/ipc.js";
import { formatShape, type Signature, type TensorInfo } from "../../core/signature.js";
import type { DType } from "../../tensor/dtype.js";
import { Tensor } from "../../tensor/tensor.js";
import { ADDRESSES, type NativeAddresses } from "../onnxruntime/index.js";
import { RunPolicy } from "../../core/run-policy.js";

const SUPPORTED = new Set<string>(TORCH_DTYPES);

/** libtorch's errors carry a TorchScript traceback: the last line says what went wrong. */
function summary(message: string): string {
  const lines = message.split("\n").map((l) => l.trim()).filter(Boolean);
  if (lines.length <= 1) return message.trim();
  const head = /^([\w.]+):/.exec(lines[0]!)?.[1];
  return `${head ? `${head}: ` : ""}${lines[lines.length - 1]}`;
}

function runError(e: unknown): Error {
  if (e instanceof MlosError) return e;
  const code = (e as { code?: string }).code;
  const message = e instanceof Error ? e.message : String(e);
  if (code === "BAD_ARGUMENT") return new MlosError("INPUT_INVALID", message, {}, { cause: e });
  return new MlosError("RUN_FAILED", `libtorch: ${summary(message)}`, {}, { cause: e });
}

/** Rejects when the signal aborts or the timeout passes; libtorch cannot stop a method, so the run itself finishes unobserved. */
function abandonable<T>(run: Promise<T>, signal: AbortSignal | undefined, timeoutMs: number | undefined): Promise<T> {
  if (!signal && timeoutMs === undefined) return run;
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      done();
      reject(new MlosError("RUN_ABORTED", "the run was aborted (libtorch finishes it in the background; its result is dropped)", {}, { cause: signal!.reason }));
    };
    const done = (): void => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        done();
        reject(new MlosError("RUN_TIMEOUT", `the run took longer than its ${timeoutMs} ms timeout (libtorch finishes it in the background; its result is dropped)`, { timeoutMs }));
      }, timeoutMs);
    }
    run.then(
      (v) => {
        done();
        resolve(v);
      },
      (e: unknown) => {
        done();
        reject(e);
      },
    );
  });
}

class TorchLoadedModel implements LoadedModel {
  readonly signature: Signature;
  readonly memoryBytes: number;
  readonly #module: NativeTorchModule;
  readonly #policy: RunPolicy;
  readonly #outputIndex = new Map<string, number>();

  constructor(module: NativeTorchModule, signature: Signature, memoryBytes: number, options: PluginLoadOptions) {
    this.#module = module;
    this.signature = signature;
    this.memoryBytes = memoryBytes;
    this.#policy = new RunPolicy(options.runMode ?? "auto");
    signature.outputs.forEach((o, i) => this.#outputIndex.set(o.name, i));
    // The IPC door runs the module on its native threads (src/protocol/ipc.ts), against the declared signature.
    const inputs = signature.inputs.map((i) => ({ name: i.name, dtype: i.dtype, shape: i.shape.map((d) => (typeof d === "number" ? d : -1)) }));
    const outputs = signature.outputs.map((o) => ({ name: o.name }));
    this.capabilities = { [IPC_NATIVE_RUNNER]: () => module.ipcRunner(inputs, outputs) };
  }

  readonly capabilities: Readonly<Record<string, unknown>>;

  run(req: RunRequest): Promise<RunResult> {
    let args: NativeTorchTensorArg[];
    try {
      args = this.signature.inputs.map((info) => {
        const t = req.inputs[info.name]!;
        return { dtype: t.dtype as NativeTorchDtype, shape: t.shape, data: t.data as ArrayBufferView };
      });
    } catch (e) {
      return Promise.reject(runError(e));
    }
    const options = req.debugAddresses ? { debugAddresses: true } : undefined;
    if (req.signal?.aborted) return Promise.reject(new MlosError("RUN_ABORTED", "the run was aborted before it started", {}, { cause: req.signal.reason }));
    if (this.#policy.inline && !req.signal && req.timeoutMs === undefined) {
      // The whole run takes microseconds: no promise chain, no thread hop.
      try {
        const result = this.#module.forwardSync(args, options);
        this.#policy.recordInline(result.runMicros);
        return Promise.resolve(this.#collect(req, result));
      } catch (e) {
        return Promise.reject(runError(e));
      }
    }
    const started = performance.now();
    let pending: Promise<NativeTorchResult>;
    try {
      pending = this.#module.forward(args, options);
    } catch (e) {
      return Promise.reject(runError(e));
    }
    return abandonable(pending, req.signal, req.timeoutMs).then(
      (result) => {
        this.#policy.recordAsync(result.runMicros, (performance.now() - started) * 1000);
        return this.#collect(req, result);
      },
      (e: unknown) => {
        throw runError(e);
      },
    );
  }

  /** The requested outputs, by the manifest's names, checked against what it declares. */
  #collect(req: RunRequest, result: NativeTorchResult): RunResult {
    const declared = this.signature.outputs;
    if (result.length !== declared.length) {
      throw new MlosError("RUN_FAILED", `the model returned ${result.length} output${result.length === 1 ? "" : "s"}, spec.io declares ${declared.length} (${declared.map((o) => o.name).join(", ")})`, { returned: result.length, declared: declared.length });
    }
    const out: RunResult = {};
    for (const name of req.outputs) {
      const i = this.#outputIndex.get(name)!;
      const r = result[i]!;
      const info = declared[i]!;
      const fits = r.dtype === info.dtype && r.shape.length === info.shape.length && info.shape.every((d, k) => typeof d !== "number" || d < 0 || d === r.shape[k]);
      if (!fits) {
        throw new MlosError("RUN_FAILED", `output ${i} ("${name}"): spec.io declares ${info.dtype} ${formatShape(info.shape)}, the model returned ${r.dtype} ${formatShape(r.shape)}`, { output: name, expected: `${info.dtype} ${formatShape(info.shape)}`, received: `${r.dtype} ${formatShape(r.shape)}` });
      }
      const pre = req.preallocated[name];
      if (pre) {
        if (pre.byteLength !== r.data.byteLength || pre.shape.some((d, k) => d !== r.shape[k])) {
          throw new MlosError("OUTPUT_INVALID", `output "${name}": the model returned ${formatShape(r.shape)}, the tensor given is ${formatShape(pre.shape)}`, { output: name, expected: formatShape(r.shape), received: formatShape(pre.shape) });
        }
        const dst = pre.data as ArrayBufferView;
        new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(new Uint8Array(r.data));
        out[name] = pre;
      } else {
        out[name] = new Tensor(r.dtype as DType, r.shape, r.data);
      }
    }
    if (req.debugAddresses) {
      const addresses: NativeAddresses = { inputs: {}, outputs: {} };
      this.signature.inputs.forEach((info, i) => {
        const a = result.inputAddresses?.[i];
        if (a !== undefined) addresses.inputs[info.name] = a;
      });
      for (const name of req.outputs) {
        const a = result[this.#outputIndex.get(name)!]?.address;
        if (a !== undefined && !req.preallocated[name]) addresses.outputs[name] = a;
      }
      Object.defineProperty(out, ADDRESSES, { value: addresses, enumerable: false });
    }
    return out;
  }

  async unload(): Promise<void> {
    this.#module.release();
  }

  describe(): Record<string, unknown> {
    return { path: this.#module.path, methods: this.#module.methods.map((m) => m.schema), parameterBytes: this.#module.parameterBytes, ...this.#policy.describe() };
  }
}

/** The built-in libtorch plugin. */
export class TorchPlugin implements Plugin {
  readonly id = "torch";
  readonly frameworks = ["pytorch", "torch"] as const;
  readonly aliases = ["libtorch", "torchscript"] as const;
  readonly formats = ["torchscript", "pt"] as const;

  /** libtorch's version once a torch model was loaded; "not loaded" before (reading it would map libtorch). */
  get version(): string {
    const s = torchStatus();
    if (!s.available) return "unavailable";
    return s.loaded ? (tryLoadTorch()?.torchInfo().version ?? "unavailable") : "not loaded";
  }

  availability(): PluginAvailability {
    const s = torchStatus();
    return s.available ? { available: true } : { available: false, reason: s.reason };
  }

  async load(source: ModelSource, options: PluginLoadOptions): Promise<LoadedModel> {
    const where = source.dir ? `${source.dir}/axon.yaml` : source.entrypoint;
    const io = source.manifest?.spec.io;
    if (!io || !io.inputs?.length || !io.outputs?.length) {
      throw new MlosError(
        "MODEL_INVALID",
        `${where}: a TorchScript model has no named, typed signature; declare spec.io in its axon.yaml (inputs in the order the model's forward takes them, outputs in the order it returns them, each with name, dtype and shape)`,
        { path: source.entrypoint },
      );
    }
    for (const [kind, list] of [["input", io.inputs], ["output", io.outputs]] as const) {
      for (const t of list) {
        if (!SUPPORTED.has(t.dtype)) {
          throw new MlosError("MODEL_INVALID", `${where}: spec.io ${kind} "${t.name}" is ${t.dtype}; the torch plugin takes ${TORCH_DTYPES.join(", ")}`, { path: source.entrypoint });
        }
      }
    }
    let addon;
    try {
      addon = loadTorch();
    } catch (e) {
      throw new MlosError("PLUGIN_UNAVAILABLE", `the torch plugin cannot run here: ${(e as Error).message}`, { plugin: this.id }, { cause: e });
    }
    let module: NativeTorchModule;
    try {
      module = await addon.TorchModule.open(source.entrypoint, { threads: options.intraOpThreads });
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${source.entrypoint}: libtorch cannot load it as TorchScript: ${summary((e as Error).message)}`, { path: source.entrypoint }, { cause: e });
    }
    try {
      const forward = module.methods.find((m) => m.name === "forward");
      if (!forward) throw new MlosError("MODEL_INVALID", `${source.entrypoint}: the TorchScript module has no forward method (it has: ${module.methods.map((m) => m.name).join(", ") || "none"})`, { path: source.entrypoint });
      const n = io.inputs.length;
      if (n < forward.requiredInputs || n > forward.inputs) {
        throw new MlosError("MODEL_INVALID", `${where}: spec.io declares ${n} input${n === 1 ? "" : "s"}, the module's forward takes ${forward.requiredInputs === forward.inputs ? forward.inputs : `${forward.requiredInputs} to ${forward.inputs}`} (${forward.schema})`, { path: source.entrypoint });
      }
      const info = (t: { name: string; dtype: string; shape: Array<number | string> }): TensorInfo => ({ name: t.name, dtype: t.dtype as DType, shape: [...t.shape] });
      const signature: Signature = { inputs: io.inputs.map(info), outputs: io.outputs.map(info) };
      const memory = module.parameterBytes > 0 ? module.parameterBytes : (await stat(source.entrypoint)).size;
      return new TorchLoadedModel(module, signature, memory, options);
    } catch (e) {
      module.release();
      throw e;
    }
  }
}
