/**
 * Finding and starting TensorFlow.js for the `tensorflow` plugin, once per process.
 *
 * `@tensorflow/tfjs-node` (the native TensorFlow library) is used when it is installed and loads;
 * otherwise `@tensorflow/tfjs` on the WebAssembly backend (`@tensorflow/tfjs-backend-wasm`), with
 * the `.wasm` binaries read from the package's own folder: nothing is downloaded, ever.
 * `MLOS_TFJS_BACKEND` (`auto`, `tensorflow`, `wasm` or `cpu`) forces one backend.
 *
 * Nothing here loads TensorFlow.js at module load: `availability()` only resolves package paths,
 * and `loadTensorflow()` loads the packages the first time a model is loaded. TensorFlow.js keeps
 * one engine per process, so every plugin instance (and every Runtime) shares the backend chosen.
 */
import type { TfBackendName } from "./backend-name.js";
import { existsSync } from "node:fs";
import path from "node:path";
import type * as TF from "@tensorflow/tfjs";
import { MissingPackageError, missingPackagesReason, optionalImport, optionalPackageDir, optionalPackageVersion } from "../optional-import.js";

export type TfNamespace = typeof TF;

/** TensorFlow.js backends the plugin can run on: native TensorFlow, WebAssembly (XNNPACK), or plain JS. */
export type { TfBackendName };

export interface TfRuntime {
  readonly tf: TfNamespace;
  /** `tf.getBackend()`: `tensorflow` (tfjs-node), `wasm` or `cpu`. */
  readonly backend: TfBackendName;
  /** The package the namespace came from. */
  readonly package: "@tensorflow/tfjs-node" | "@tensorflow/tfjs";
  /** TensorFlow.js core version (`tf.version_core`). */
  readonly version: string;
  /** For the wasm backend: the folder the .wasm binaries were read from. */
  readonly wasmDir?: string;
  /** Why tfjs-node was not used, when it was installed but failed to load. */
  readonly nodeError?: string;
}

export const NODE_PACKAGE = "@tensorflow/tfjs-node";
export const TFJS_PACKAGE = "@tensorflow/tfjs";
export const WASM_PACKAGE = "@tensorflow/tfjs-backend-wasm";

const WHY = "the tensorflow plugin";

/** A package's folder, or undefined (resolved from mlos's folder; loads nothing). */
const resolvePackageDir = optionalPackageDir;

/** A package's version from its package.json (without loading the package), or undefined. */
export const packageVersion = optionalPackageVersion;

/** The folder holding the wasm backend's binaries (with a trailing separator), or undefined. */
export function wasmBinaryDir(): string | undefined {
  const dir = resolvePackageDir(WASM_PACKAGE);
  if (!dir) return undefined;
  const dist = path.join(dir, "dist") + path.sep;
  return existsSync(path.join(dist, "tfjs-backend-wasm.wasm")) ? dist : undefined;
}

type Preference = "auto" | TfBackendName;

function preference(): Preference {
  const v = (process.env.MLOS_TFJS_BACKEND ?? "auto").trim().toLowerCase();
  if (v === "" || v === "auto") return "auto";
  if (v === "tensorflow" || v === "node" || v === "tfjs-node") return "tensorflow";
  if (v === "wasm" || v === "cpu") return v;
  return "auto";
}

/** The wasm backend's packages that are missing, with the command that installs them. */
function missingWasmError(): MissingPackageError {
  return new MissingPackageError([TFJS_PACKAGE, WASM_PACKAGE].filter((p) => !resolvePackageDir(p)), WHY);
}

export type TfPlan =
  | { readonly available: true; readonly backend: TfBackendName; readonly package: string; readonly note?: string }
  | { readonly available: false; readonly reason: string };

let started: Promise<TfRuntime> | undefined;
let ready: TfRuntime | undefined;
let failure: Error | undefined;
let nodeFailure: string | undefined;

/**
 * Which backend `loadTensorflow()` will use (or uses), decided from what is installed; loads nothing.
 * A tfjs-node that is installed but fails to load is only known after the first load, which then
 * falls back to wasm (and this reports it).
 */
export function tensorflowPlan(): TfPlan {
  if (ready) return { available: true, backend: ready.backend, package: ready.package, note: ready.nodeError ? `${NODE_PACKAGE} failed to load: ${ready.nodeError}` : undefined };
  if (failure) return { available: false, reason: failure.message };
  const want = preference();
  const hasNode = resolvePackageDir(NODE_PACKAGE) !== undefined && nodeFailure === undefined;
  const hasTfjs = resolvePackageDir(TFJS_PACKAGE) !== undefined;
  if (want === "tensorflow") {
    return hasNode ? { available: true, backend: "tensorflow", package: NODE_PACKAGE } : { available: false, reason: `MLOS_TFJS_BACKEND=tensorflow, but ${NODE_PACKAGE} ${nodeFailure ? `failed to load: ${nodeFailure}` : "is not installed"}` };
  }
  if (want === "auto" && hasNode) return { available: true, backend: "tensorflow", package: NODE_PACKAGE };
  const note = nodeFailure ? `${NODE_PACKAGE} failed to load: ${nodeFailure}` : undefined;
  if (want === "cpu") {
    return hasTfjs ? { available: true, backend: "cpu", package: TFJS_PACKAGE, note } : { available: false, reason: missingPackagesReason([TFJS_PACKAGE], `${WHY} (MLOS_TFJS_BACKEND=cpu)`) };
  }
  if (!hasTfjs || !resolvePackageDir(WASM_PACKAGE)) return { available: false, reason: missingWasmError().message };
  if (!wasmBinaryDir()) return { available: false, reason: `${WASM_PACKAGE} is installed without its dist/*.wasm binaries` };
  return { available: true, backend: "wasm", package: TFJS_PACKAGE, note };
}

async function importNamespace(name: string): Promise<TfNamespace> {
  const mod = await optionalImport<TfNamespace & { default?: unknown }>(name, WHY);
  const ns = (typeof mod.tensor !== "function" && mod.default && typeof (mod.default as { tensor?: unknown }).tensor === "function" ? mod.default : mod) as TfNamespace;
  if (typeof ns.tensor !== "function" || typeof ns.loadGraphModel !== "function") throw new Error(`${name} does not export the TensorFlow.js API`);
  return ns;
}

async function start(): Promise<TfRuntime> {
  const want = preference();
  let nodeError: string | undefined;
  if ((want === "auto" || want === "tensorflow") && resolvePackageDir(NODE_PACKAGE)) {
    try {
      const tf = await importNamespace(NODE_PACKAGE);
      await tf.ready();
      if (tf.getBackend() !== "tensorflow" && !(await tf.setBackend("tensorflow"))) throw new Error("its tensorflow backend did not initialize");
      return { tf, backend: "tensorflow", package: NODE_PACKAGE, version: tf.version_core };
    } catch (e) {
      nodeError = nodeFailure = (e as Error).message.split("\n")[0] ?? String(e);
      if (want === "tensorflow") throw new Error(`${NODE_PACKAGE} failed to load: ${nodeError}`, { cause: e });
    }
  } else if (want === "tensorflow") {
    throw new Error(`MLOS_TFJS_BACKEND=tensorflow, but ${NODE_PACKAGE} is not installed`);
  }
  if (want !== "cpu" && (!resolvePackageDir(TFJS_PACKAGE) || !resolvePackageDir(WASM_PACKAGE))) {
    throw missingWasmError();
  }
  const tf = await importNamespace(TFJS_PACKAGE);
  if (want === "cpu") {
    if (!(await tf.setBackend("cpu"))) throw new Error("the TensorFlow.js cpu backend did not initialize");
    await tf.ready();
    return { tf, backend: "cpu", package: TFJS_PACKAGE, version: tf.version_core, nodeError };
  }
  const wasmDir = wasmBinaryDir();
  if (!wasmDir) throw new Error(`${WASM_PACKAGE} is not installed, or its dist/*.wasm binaries are missing`);
  const wasm = await optionalImport<{ setWasmPaths?: (prefix: string) => void; default?: { setWasmPaths?: (prefix: string) => void } }>(WASM_PACKAGE, WHY);
  const setWasmPaths = wasm.setWasmPaths ?? wasm.default?.setWasmPaths;
  if (!setWasmPaths) throw new Error(`${WASM_PACKAGE} does not export setWasmPaths`);
  // A filesystem prefix: in Node, Emscripten reads `<prefix>tfjs-backend-wasm[-simd].wasm` with
  // fs.readFileSync (no fetch, no network). Node has no wasm threads here, so the SIMD (or plain)
  // single-threaded binary is the one used.
  let ok: boolean;
  try {
    setWasmPaths(wasmDir);
    ok = await tf.setBackend("wasm");
  } catch (e) {
    throw new Error(`the TensorFlow.js wasm backend did not initialize: ${(e as Error).message}`, { cause: e });
  }
  if (!ok || tf.getBackend() !== "wasm") throw new Error(`the TensorFlow.js wasm backend did not initialize (binaries in ${wasmDir})`);
  await tf.ready();
  return { tf, backend: "wasm", package: TFJS_PACKAGE, version: tf.version_core, wasmDir, nodeError };
}

/**
 * Imports TensorFlow.js and sets its backend, the first time it is called in the process; later
 * calls return the same runtime. Rejects (and keeps rejecting) when no backend can run.
 */
export function loadTensorflow(): Promise<TfRuntime> {
  if (!started) {
    started = start().then(
      (rt) => (ready = rt),
      (e: unknown) => {
        failure = e instanceof Error ? e : new Error(String(e));
        throw failure;
      },
    );
  }
  return started;
}

/** The runtime, when `loadTensorflow()` has finished. */
export function loadedTensorflow(): TfRuntime | undefined {
  return ready;
}
