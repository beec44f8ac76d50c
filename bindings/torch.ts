// The typed loader for the torch addon (build/Release/mlos_torch.node, built from native/torch when
// libtorch is found).
//
// `NativeTorchAddon` is the one TS type for its whole surface, mirroring native/torch/torch_module.h.
// The addon is loaded lazily, on the first loadTorch() call: it maps libtorch (about 285 shared
// libraries, about 0.4 s), so nothing loads it until a torch model is used. torchStatus() answers
// "could it load?" without loading it.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { NativeError, packageRoot, rebuildCommand } from "./native.js";

/** Stable `code` values of errors thrown by the torch addon. */
export type NativeTorchErrorCode = "TORCH_FAIL" | "TORCH_UNAVAILABLE" | "BAD_ARGUMENT" | "CLOSED";

/** The element types the torch addon accepts and returns. */
export type NativeTorchDtype = "float32" | "float64" | "float16" | "bfloat16" | "int8" | "int16" | "int32" | "int64" | "uint8" | "bool";

export const TORCH_DTYPES: readonly NativeTorchDtype[] = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"];

/**
 * A tensor handed to a run, positional. `data` is wrapped with torch::from_blob in place (no copy):
 * its byte length must be exactly dtype x shape and it must be aligned to the element size, or the
 * call throws a TypeError with code BAD_ARGUMENT.
 */
export interface NativeTorchTensorArg {
  dtype: NativeTorchDtype;
  shape: readonly number[];
  data: ArrayBuffer | ArrayBufferView;
}

/**
 * A tensor a run returns: `data` is an external ArrayBuffer over the (contiguous) torch tensor's own
 * memory, released when the buffer is collected. An output sharing memory with an input, a
 * parameter or another output is copied once.
 */
export interface NativeTorchTensor {
  dtype: NativeTorchDtype;
  shape: number[];
  data: ArrayBuffer;
  /** With `debugAddresses`: the data pointer of the tensor `data` covers. */
  address?: bigint;
}

/** What forward/forwardSync resolve to: the method's result flattened in order (tuples and lists element by element). */
export type NativeTorchResult = NativeTorchTensor[] & {
  /** Non-enumerable: how long the method itself took, in microseconds (no hand-off included). */
  readonly runMicros: number;
  /** Non-enumerable, with `debugAddresses`: the data pointers of the tensors the method received. */
  readonly inputAddresses?: readonly bigint[];
};

export interface NativeTorchForwardOptions {
  /** The module's method to run (default "forward"). */
  method?: string;
  /** Debugging: report native data pointers (`address` on outputs, `inputAddresses` on the result). */
  debugAddresses?: boolean;
}

export interface NativeTorchOpenOptions {
  /** Intra-op threads of this module's runs; 0 or absent: libtorch's default (one per physical core). */
  threads?: number;
}

/** One method of a TorchScript module. */
export interface NativeTorchMethodInfo {
  readonly name: string;
  /** e.g. "forward(__torch__.Linear self, Tensor x) -> Tensor". */
  readonly schema: string;
  /** Arguments after `self`. */
  readonly inputs: number;
  /** Of those, the ones without a default. */
  readonly requiredInputs: number;
}

/** A loaded TorchScript module (native/torch/torch_module.h). */
export interface NativeTorchModule {
  readonly path: string;
  readonly methods: readonly NativeTorchMethodInfo[];
  /** Bytes of the module's parameters and buffers. */
  readonly parameterBytes: number;
  /**
   * Runs a method on a libuv worker thread (never on the event loop); many runs may be in flight.
   * Rejects with TORCH_FAIL (libtorch's message, TorchScript traceback included) or CLOSED;
   * argument errors (unknown method, wrong input count, a buffer that does not fit) throw
   * synchronously.
   */
  forward(inputs: readonly NativeTorchTensorArg[], options?: NativeTorchForwardOptions): Promise<NativeTorchResult>;
  /** The same on the calling thread (for models whose run is cheaper than a thread hop). */
  forwardSync(inputs: readonly NativeTorchTensorArg[], options?: NativeTorchForwardOptions): NativeTorchResult;
  /** Drops the module once the runs in flight are done; later calls throw CLOSED. */
  release(): void;
  /**
   * An mlos_ipc_runner (native/src/ipc/ipc_runner.h) over this module, for the IPC door's native
   * threads: inputs in forward's order with their declared dtype and shape (-1: any), outputs in
   * the order forward returns them.
   */
  ipcRunner(inputs: ReadonlyArray<{ name: string; dtype: string; shape: readonly number[] }>, outputs: ReadonlyArray<{ name: string }>): object;
  isReleased(): boolean;
}

export interface NativeTorchModuleConstructor {
  readonly prototype: NativeTorchModule;
  /** torch::jit::load on a libuv worker thread; rejects with TORCH_FAIL (e.g. not a TorchScript archive). */
  open(path: string, options?: NativeTorchOpenOptions): Promise<NativeTorchModule>;
}

export interface NativeTorchInfo {
  /** libtorch's version, e.g. "1.13.0". */
  version: string;
  /** Intra-op threads (at::get_num_threads) on the calling thread. */
  threads: number;
  interopThreads: number;
}

/** The whole surface of mlos_torch.node (native/torch/torch_addon.cc). */
export interface NativeTorchAddon {
  TorchModule: NativeTorchModuleConstructor;
  torchInfo(): NativeTorchInfo;
  /** Sets the class of coded errors; the loader calls it with NativeError. */
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  readonly napiVersion: number;
}

/** Thrown by {@link loadTorch} when the torch addon is missing or cannot be loaded. */
export class TorchUnavailableError extends Error {
  readonly code = "TORCH_UNAVAILABLE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TorchUnavailableError";
  }
}

const howToBuild = (): string => `Install libtorch and build the addon: \`apt-get install libtorch-dev && ${rebuildCommand()}\``;

/** Where the loader looks: $MLOS_TORCH_PATH alone when it is set, else build/Release, then build/Debug. */
export function torchCandidates(): string[] {
  const env = process.env.MLOS_TORCH_PATH;
  if (env) return [path.resolve(env)];
  const root = packageRoot();
  return [path.join(root, "build", "Release", "mlos_torch.node"), path.join(root, "build", "Debug", "mlos_torch.node")];
}

/** The TorchScript test-model generator built with the addon (build/torch/bin/make_test_model), when it was. */
export function torchTestModelTool(): string | undefined {
  const file = path.join(packageRoot(), "build", "torch", "bin", "make_test_model");
  return existsSync(file) ? file : undefined;
}

let cached: NativeTorchAddon | undefined;
let cachedError: TorchUnavailableError | undefined;

/**
 * Whether the addon can be used, without loading it: available (`loaded`, or its file is there and
 * loading may still fail), or unavailable with the reason (not built, or a load that failed).
 */
export function torchStatus(): { available: true; loaded: boolean; file: string } | { available: false; reason: string } {
  if (cached) return { available: true, loaded: true, file: torchFile()! };
  if (cachedError) return { available: false, reason: cachedError.message };
  const file = torchFile();
  if (!file) return { available: false, reason: notBuiltMessage() };
  return { available: true, loaded: false, file };
}

let loadedFrom: string | undefined;

function torchFile(): string | undefined {
  return loadedFrom ?? torchCandidates().find((c) => existsSync(c));
}

function notBuiltMessage(): string {
  return `The torch addon is not built: none of ${torchCandidates().join(", ")} exists (the build skips it when libtorch is not found, and prints why). ${howToBuild()}.`;
}

/** Loads the torch addon once (mapping libtorch); throws a {@link TorchUnavailableError} that says what to install and run. */
export function loadTorch(): NativeTorchAddon {
  if (cached) return cached;
  if (cachedError) throw cachedError;
  const file = torchFile();
  if (!file) {
    cachedError = new TorchUnavailableError(notBuiltMessage());
    throw cachedError;
  }
  try {
    const addon = createRequire(import.meta.url)(file) as NativeTorchAddon;
    if (typeof addon?.TorchModule?.open !== "function" || typeof addon.setErrorClass !== "function") {
      throw new Error("it does not export the expected surface (TorchModule.open, setErrorClass)");
    }
    addon.setErrorClass(NativeError);
    cached = addon;
    loadedFrom = file;
    return addon;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    const missingLib = /lib(torch|c10)[^:]*\.so/.test(why);
    cachedError = new TorchUnavailableError(
      `The torch addon at ${file} failed to load: ${why}. ` +
        (missingLib
          ? `libtorch is missing or not the one it was built against. ${howToBuild()}.`
          : `Rebuild it for this Node (${process.version}, ${process.platform}-${process.arch}): ${howToBuild()}.`),
      { cause: e },
    );
    throw cachedError;
  }
}

/** The torch addon, or null (the reason is in {@link torchLoadError}). */
export function tryLoadTorch(): NativeTorchAddon | null {
  try {
    return loadTorch();
  } catch {
    return null;
  }
}

/** Why the torch addon failed to load, when it did. */
export function torchLoadError(): TorchUnavailableError | undefined {
  return cachedError;
}
