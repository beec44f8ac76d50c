/**
 * Builds llama.cpp's own `llama-server` from the llama.cpp source that node-llama-cpp's npm
 * package bundles (`llama/gitRelease.bundle`), so that the GGUF benchmark compares mlos with the
 * same llama.cpp that mlos runs. CMake, CPU only, native instructions, nothing fetched (no web UI
 * download, no HTTPS client). The build is cached in build/llama-server/<commit>/: a second call
 * returns at once.
 *
 *   node dist/bench/build-llama-server.js        (prints the binary's path)
 *
 * About 15-30 minutes on 2 cores the first time.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, realpathSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { llamaCppSourceBundle } from "../src/tools/make-gguf-models.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The llama-server binary, built on first use. */
export function llamaServerBinary(log: (s: string) => void = (s) => process.stderr.write(s + "\n")): string {
  const bundle = llamaCppSourceBundle();
  if (!bundle) throw new Error("build-llama-server: node-llama-cpp is not installed (its package carries llama.cpp's source)");
  const commit = execFileSync("git", ["bundle", "list-heads", bundle], { encoding: "utf8" }).trim().split(/\s+/)[0]!;
  const base = path.join(ROOT, "build", "llama-server", commit.slice(0, 12));
  const binary = path.join(base, "build", "bin", "llama-server");
  if (existsSync(binary)) return binary;
  const src = path.join(base, "src");
  rmSync(base, { recursive: true, force: true });
  mkdirSync(base, { recursive: true });
  log(`build-llama-server: building llama-server ${commit.slice(0, 12)} in ${path.relative(ROOT, base)} (first time only; 15-30 minutes on 2 cores)`);
  execFileSync("git", ["clone", "--quiet", bundle, src], { stdio: "inherit" });
  execFileSync(
    "cmake",
    ["-S", src, "-B", path.join(base, "build"), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  execFileSync("cmake", ["--build", path.join(base, "build"), "--target", "llama-server", "-j", String(availableParallelism())], { stdio: ["ignore", "ignore", "inherit"] });
  if (!existsSync(binary)) throw new Error(`build-llama-server: the build finished without ${binary}`);
  return binary;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(llamaServerBinary());
}
