/**
 * Finding and starting llama.cpp for the `llamacpp` plugin, through `node-llama-cpp`: an optional
 * peer dependency of mlos (its prebuilt binaries for every platform weigh about 680 MB), loaded on
 * the first GGUF model, never at import.
 *
 * Only prebuilt binaries are used (`build: "never"`): nothing is compiled or downloaded at run
 * time. Which one: `gpu` picks CPU (`off`), a CUDA or Vulkan build (`cuda`, `vulkan`: their npm
 * packages `@node-llama-cpp/linux-x64-cuda` / `-vulkan` must be installed and the device usable),
 * or `auto` (the best one that loads, else the CPU). A choice that cannot be honoured fails with
 * one line that says why, instead of quietly running on the CPU.
 */
import { existsSync } from "node:fs";
import type * as NodeLlamaCpp from "node-llama-cpp";
import { MlosError } from "../../core/errors.js";
import { MissingPackageError, missingPackagesReason, optionalImport, optionalPackageDir, optionalPackageVersion } from "../optional-import.js";

export type NodeLlamaCppModule = typeof NodeLlamaCpp;
export type Llama = NodeLlamaCpp.Llama;

export const PACKAGE = "node-llama-cpp";
const WHY = "the llamacpp plugin (GGUF models)";

/** Where llama.cpp runs: the CPU, a CUDA or Vulkan GPU, or the best that loads. */
export type GpuChoice = "off" | "cuda" | "vulkan" | "auto";

export const GPU_CHOICES: readonly GpuChoice[] = ["off", "cuda", "vulkan", "auto"];

/** The prebuilt-binary package each GPU backend needs (x64 Linux; other platforms name theirs alike). */
export function gpuPackage(gpu: "cuda" | "vulkan"): string {
  return `@node-llama-cpp/${process.platform}-${process.arch}-${gpu}`;
}

/** The package's version (read from its package.json; loads nothing), or undefined when it is not installed. */
export function nodeLlamaCppVersion(): string | undefined {
  return optionalPackageVersion(PACKAGE);
}

/** Why the plugin cannot run here, or undefined when it can (the package is installed). Loads nothing. */
export function unavailableReason(): string | undefined {
  return optionalPackageDir(PACKAGE) ? undefined : missingPackagesReason([PACKAGE], WHY);
}

/**
 * Why `gpu` cannot be used here, or undefined when it may be (its binaries are installed; whether
 * the device works is known only when llama.cpp starts). Loads nothing.
 */
export function gpuUnavailableReason(gpu: GpuChoice): string | undefined {
  if (gpu === "off" || gpu === "auto") return undefined;
  if (process.platform !== "linux" && process.platform !== "win32") return `--gpu ${gpu}: llama.cpp's ${gpu} builds are for Linux and Windows; this is ${process.platform}`;
  const pkg = gpuPackage(gpu);
  if (!optionalPackageDir(pkg)) return `--gpu ${gpu}: ${pkg} (llama.cpp built for ${gpu === "cuda" ? "CUDA" : "Vulkan"}) is not installed; install node-llama-cpp with its optional dependencies, or use --gpu off`;
  if (gpu === "cuda" && process.platform === "linux" && !hasNvidiaDriver()) return "--gpu cuda: no NVIDIA driver here (no /proc/driver/nvidia/version); use --gpu off or vulkan";
  return undefined;
}

/** The NVIDIA kernel driver's mark: without it no CUDA device can be opened. */
function hasNvidiaDriver(): boolean {
  return existsSync("/proc/driver/nvidia/version");
}

let module: Promise<NodeLlamaCppModule> | undefined;

/** node-llama-cpp's module (imported once), or PLUGIN_UNAVAILABLE saying what to install. */
export async function nodeLlamaCpp(): Promise<NodeLlamaCppModule> {
  module ??= optionalImport<NodeLlamaCppModule>(PACKAGE, WHY);
  try {
    return await module;
  } catch (e) {
    module = undefined; // installed later: found on the next load
    if (e instanceof MissingPackageError) throw new MlosError("PLUGIN_UNAVAILABLE", e.message, { plugin: "llamacpp", install: e.install });
    throw new MlosError("PLUGIN_UNAVAILABLE", `${WHY}: ${PACKAGE} is installed but does not load: ${(e as Error).message}`, { plugin: "llamacpp" }, { cause: e });
  }
}

/** One llama.cpp instance per GPU choice, per process (node-llama-cpp's bindings are process-wide). */
const instances = new Map<GpuChoice, Promise<Llama>>();

/**
 * llama.cpp with the binaries `gpu` asks for. `off` loads the CPU build; `cuda`/`vulkan` load
 * theirs or fail with the reason; `auto` tries the GPU builds that are installed, then the CPU.
 */
export function startLlama(gpu: GpuChoice): Promise<Llama> {
  let p = instances.get(gpu);
  if (!p) {
    p = start(gpu);
    instances.set(gpu, p);
    p.catch(() => instances.delete(gpu));
  }
  return p;
}

async function start(gpu: GpuChoice): Promise<Llama> {
  const reason = gpuUnavailableReason(gpu);
  if (reason) throw new MlosError("PLUGIN_UNAVAILABLE", reason, { plugin: "llamacpp", gpu });
  const m = await nodeLlamaCpp();
  const common = {
    build: "never" as const,
    usePrebuiltBinaries: true,
    progressLogs: false,
    skipDownload: true,
    logLevel: m.LlamaLogLevel.error,
    // llama.cpp's own messages go to stderr only when they are errors: a server's log stays ours.
    logger: (level: NodeLlamaCpp.LlamaLogLevel, message: string) => {
      if (level === m.LlamaLogLevel.error || level === m.LlamaLogLevel.fatal) process.stderr.write(`llama.cpp: ${message.trimEnd()}\n`);
    },
  };
  try {
    if (gpu === "off") return await m.getLlama({ ...common, gpu: false });
    if (gpu === "auto") return await m.getLlama({ ...common, gpu: "auto" });
    return await m.getLlama({ ...common, gpu, existingPrebuiltBinaryMustMatchBuildOptions: true });
  } catch (e) {
    const err = e as Error;
    if ((gpu === "cuda" || gpu === "vulkan") && (err.name === "NoBinaryFoundError" || err.message === "NoBinaryFoundError")) {
      // The binaries are installed (checked above): what they need to start is not.
      const needs = gpu === "cuda" ? "a CUDA 13 runtime and a usable NVIDIA GPU" : "a Vulkan loader (libvulkan1) and a Vulkan device";
      throw new MlosError("PLUGIN_UNAVAILABLE", `--gpu ${gpu}: llama.cpp's ${gpu} build does not start here (it needs ${needs}); use --gpu off or auto`, { plugin: "llamacpp", gpu }, { cause: e });
    }
    const what = gpu === "off" ? "the CPU build" : gpu === "auto" ? "any build" : `the ${gpu} build`;
    throw new MlosError("PLUGIN_UNAVAILABLE", `llama.cpp (${what}) cannot start here: ${(err.message || err.name).split("\n")[0]}`, { plugin: "llamacpp", gpu }, { cause: e });
  }
}

/** What a started llama.cpp runs on: `cpu`, `cuda`, `vulkan` or `metal`. */
export function backendOf(llama: Llama): string {
  return llama.gpu === false ? "cpu" : llama.gpu;
}
