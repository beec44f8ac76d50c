#!/usr/bin/env node
// Builds the native addon. Run by `npm install` (the "install" script) and `npm run build:native`.
//
//   node scripts/build-native.js            cmake-js: build/Release/mlos_native.node and the C++
//                                           unit tests in build/native-tests/*_test
//   node scripts/build-native.js --debug    the same, Debug (build/Debug/mlos_native.node)
//   node scripts/build-native.js --sanitize unit tests with ASan + UBSan (the addon is unchanged)
//   node scripts/build-native.js --sanitize-tree
//                                           the unit tests with ASan + UBSan in a tree of their own,
//                                           build/asan/native-tests/ (no addon), beside the regular
//                                           ones; `npm test` runs both
//   node scripts/build-native.js --no-tests skip the unit tests
//   node scripts/build-native.js --gyp      node-gyp instead, built in build/gyp/ (so cmake-js's
//                                           build/ is left alone): build/gyp/build/Release/mlos_native.node
//
//   node scripts/build-native.js --addon-only
//                                           the addon alone (no C++ tests, no torch test-model
//                                           generator) and no intermediate files left in build/:
//                                           what a consumer's `npm install mlos` runs (see below)
//
// As a dependency (this package sits in a node_modules folder, as in `npm install mlos`), the
// install script builds the addons only: --addon-only is implied. The C++ tests are the
// repository's, and their objects would only take the user's time and disk.
//
// Environment: MLOS_SKIP_NATIVE=1 skips the build (the loader then explains what is missing);
// MLOS_NATIVE_JOBS=N sets the parallel build jobs (default: the number of CPUs).
//
// ONNX Runtime: the addon opens the library at run time (dlopen) and needs only the C API headers
// to compile. They are never committed; this script finds them, in order:
//   1. $ORT_ROOT/include (an official ONNX Runtime release),
//   2. the cache ${XDG_CACHE_HOME:-~/.cache}/mlos/ort-headers-1.29/include (reused by every build
//      and every clone),
//   3. `npm pack com.github.asus4.onnxruntime@0.4.9` (MIT; the only npm package carrying them),
//      extracting only the iOS framework's Headers/*.h (ORT 1.29, platform independent) into
//      that cache.
// When none works the addon is built without ONNX Runtime (MLOS_WITH_ORT=OFF) and the reason is
// printed; MLOS_ORT=0 asks for that explicitly.
//
// libtorch: after the main addon, the torch plugin's addon (native/torch) is built with cmake-js
// in build/torch into build/<config>/mlos_torch.node, with build/torch/bin/make_test_model, when a
// TorchConfig.cmake is found ($Torch_DIR, $LIBTORCH or $TORCH_ROOT, then Debian's libtorch-dev
// under /usr/lib/<multiarch>/cmake/Torch). It prints "mlos: torch plugin built" or "mlos: torch
// plugin not built: <reason>" and never fails the install; MLOS_TORCH=0 skips it.
//
// cmake-js takes the Node-API headers from the npm package node-api-headers (package.json has
// "binary": {"napi_versions": [8]}) and node-addon-api from node_modules: nothing is downloaded.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const args = new Set(process.argv.slice(2));
/** Installed as a dependency (inside a node_modules folder), or asked for: build the addons and nothing else. */
const addonOnly = args.has("--addon-only") || root.split(path.sep).includes("node_modules");
const noTests = addonOnly || args.has("--no-tests");
const jobs = Number(process.env.MLOS_NATIVE_JOBS) || Math.max(1, os.cpus().length);

function fail(message) {
  console.error(`mlos: native build failed: ${message}`);
  console.error(
    "mlos: it needs cmake >= 3.15, make or ninja, and a C++17 compiler, and llhttp's C sources for the HTTP server (Debian: apt-get install cmake g++ node-llhttp). " +
      `Install them and run ${addonOnly ? "`npm rebuild mlos`" : "`npm run build:native`"}, or set MLOS_SKIP_NATIVE=1 to install without the native core.`,
  );
  process.exit(1);
}

const ORT_HEADERS_PACKAGE = "com.github.asus4.onnxruntime@0.4.9";
const ORT_HEADERS_IN_PACKAGE = "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers";

/** The npm command line: the npm that runs this script when there is one. */
function npmCommand() {
  const execPath = process.env.npm_execpath;
  if (execPath && execPath.endsWith(".js") && existsSync(execPath)) return [process.execPath, [execPath]];
  return ["npm", []];
}

/** Fetches the ORT headers into `cacheDir/include`; returns null or why it failed. */
function fetchOrtHeaders(cacheDir) {
  mkdirSync(cacheDir, { recursive: true });
  const tmp = mkdtempSync(path.join(cacheDir, "tmp-"));
  try {
    const [cmd, pre] = npmCommand();
    const pack = spawnSync(cmd, [...pre, "pack", ORT_HEADERS_PACKAGE, "--pack-destination", tmp, "--loglevel=error", "--ignore-scripts"], {
      cwd: tmp,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (pack.status !== 0) {
      // npm's first few error lines carry the reason (code, message); the rest is a stack.
      const lines = (pack.stderr || "").split("\n").filter((l) => l.trim() && !/^npm error\s+at /.test(l));
      return `npm pack ${ORT_HEADERS_PACKAGE} exited with ${pack.status ?? pack.signal}: ${lines.slice(0, 4).join(" | ")}`;
    }
    const tgz = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    if (!tgz) return `npm pack ${ORT_HEADERS_PACKAGE} produced no tarball`;
    const tar = spawnSync("tar", ["-xzf", tgz, "--wildcards", `${ORT_HEADERS_IN_PACKAGE}/*.h`], { cwd: tmp, encoding: "utf8" });
    if (tar.status !== 0) return `tar could not extract the headers: ${(tar.stderr || "").trim().slice(-500)}`;
    const extracted = path.join(tmp, ORT_HEADERS_IN_PACKAGE);
    if (!existsSync(path.join(extracted, "onnxruntime_c_api.h"))) return `the package has no ${ORT_HEADERS_IN_PACKAGE}/onnxruntime_c_api.h`;
    const include = path.join(cacheDir, "include");
    try {
      renameSync(extracted, include); // atomic: a concurrent build sees all headers or none
    } catch (e) {
      if (!existsSync(path.join(include, "onnxruntime_c_api.h"))) throw e;
    }
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** { dir } with the ORT headers, or { why } they are not available. */
function ortHeaders() {
  if (process.env.MLOS_ORT === "0") return { why: "MLOS_ORT=0" };
  if (process.env.ORT_ROOT) {
    const dir = path.join(process.env.ORT_ROOT, "include");
    if (existsSync(path.join(dir, "onnxruntime_c_api.h"))) return { dir };
    console.warn(`mlos: ORT_ROOT is set but ${dir} has no onnxruntime_c_api.h; trying the header cache`);
  }
  const cacheRoot = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  const cacheDir = path.join(cacheRoot, "mlos", "ort-headers-1.29");
  const dir = path.join(cacheDir, "include");
  if (existsSync(path.join(dir, "onnxruntime_c_api.h"))) return { dir };
  console.log(`mlos: fetching the ONNX Runtime C headers (npm pack ${ORT_HEADERS_PACKAGE}) into ${cacheDir}`);
  const why = fetchOrtHeaders(cacheDir);
  if (why) return { why };
  return { dir };
}

async function buildCmake() {
  let BuildSystem;
  try {
    ({ BuildSystem } = require("cmake-js"));
  } catch (e) {
    fail(`cmake-js is not installed (${e.message}); run \`npm install\` first`);
  }
  const config = args.has("--debug") ? "Debug" : "Release";
  const ort = ortHeaders();
  if (ort.why) {
    console.warn(`mlos: building without ONNX Runtime sessions: ${ort.why}`);
  }
  const options = {
    directory: path.join(root, "native"),
    out: path.join(root, "build"),
    config,
    debug: config === "Debug",
    parallel: jobs,
    cMakeOptions: {
      MLOS_NATIVE_TESTS: noTests ? "OFF" : "ON",
      MLOS_SANITIZE: args.has("--sanitize") ? "ON" : "OFF",
      MLOS_WITH_ORT: ort.dir ? "ON" : "OFF",
      ORT_INCLUDE_DIR: ort.dir ?? "",
    },
    log: process.env.MLOS_NATIVE_VERBOSE ? "verbose" : "info",
  };
  const bs = new BuildSystem(options);
  // cmake-js decides "Node-API, use node-api-headers" from the package.json next to the
  // CMakeLists.txt; ours is one level up. The package is Node-API only (binary.napi_versions), so
  // say so, and it neither downloads Node headers nor needs them.
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
  if (!pkg.binary?.napi_versions) fail('package.json lacks "binary": {"napi_versions": [...]}');
  bs.options.isNodeApi = true;
  try {
    // Configure every time (incremental; cheap) so that the options above reach an existing build
    // tree: cmake-js's compile() configures only a fresh one. A failed build is retried from scratch.
    try {
      await bs.configure();
      await bs.build();
    } catch {
      console.warn("mlos: the build failed; retrying from a clean build tree");
      await bs.rebuild();
    }
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
  const out = path.join(root, "build", config, "mlos_native.node");
  if (!existsSync(out)) fail(`${path.relative(root, out)} was not produced`);
  console.log(`mlos: built ${path.relative(root, out)}${ort.dir ? " with ONNX Runtime sessions" : " without ONNX Runtime sessions"}`);
}

/** The directory of a TorchConfig.cmake, or { why } none was found. */
function torchConfigDir() {
  const tried = [];
  const candidates = [];
  if (process.env.Torch_DIR) candidates.push(process.env.Torch_DIR);
  for (const v of ["LIBTORCH", "TORCH_ROOT"]) {
    if (process.env[v]) candidates.push(path.join(process.env[v], "share", "cmake", "Torch"), path.join(process.env[v], "lib", "cmake", "Torch"));
  }
  for (const lib of ["/usr/lib", "/usr/local/lib"]) {
    let entries = [];
    try {
      entries = readdirSync(lib, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory() && e.name.includes("-linux-")) candidates.push(path.join(lib, e.name, "cmake", "Torch"));
    candidates.push(path.join(lib, "cmake", "Torch"));
  }
  candidates.push("/usr/share/cmake/Torch", "/usr/local/share/cmake/Torch");
  for (const dir of candidates) {
    if (existsSync(path.join(dir, "TorchConfig.cmake"))) return { dir };
    tried.push(dir);
  }
  return { why: `libtorch not found (no TorchConfig.cmake in ${tried.join(", ")}); apt-get install libtorch-dev, or set Torch_DIR, then npm run build:native` };
}

/** The torch plugin's addon (native/torch), when libtorch is found; never fails the build. */
async function buildTorch() {
  const notBuilt = (why) => console.log(`mlos: torch plugin not built: ${why}`);
  if (process.env.MLOS_TORCH === "0") return notBuilt("MLOS_TORCH=0");
  const torch = torchConfigDir();
  if (torch.why) return notBuilt(torch.why);
  const config = args.has("--debug") ? "Debug" : "Release";
  const out = path.join(root, "build", config, "mlos_torch.node");
  const started = Date.now();
  try {
    const { BuildSystem } = require("cmake-js");
    const bs = new BuildSystem({
      directory: path.join(root, "native", "torch"),
      out: path.join(root, "build", "torch"),
      config,
      debug: config === "Debug",
      parallel: jobs,
      cMakeOptions: {
        Torch_DIR: torch.dir,
        MLOS_TORCH_OUTPUT_DIR: path.join(root, "build", config),
        MLOS_TORCH_TEST_MODEL: noTests ? "OFF" : "ON",
      },
      log: process.env.MLOS_NATIVE_VERBOSE ? "verbose" : "info",
    });
    bs.options.isNodeApi = true; // as in buildCmake: Node-API only, headers from node-api-headers
    await bs.configure();
    await bs.build();
  } catch (e) {
    return notBuilt(`the build with libtorch from ${torch.dir} failed (${e instanceof Error ? e.message : String(e)}); set MLOS_NATIVE_VERBOSE=1 to see it`);
  }
  if (!existsSync(out)) return notBuilt(`${path.relative(root, out)} was not produced`);
  console.log(`mlos: torch plugin built: ${path.relative(root, out)} (libtorch from ${torch.dir}, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

function nodeGypCommand() {
  // npm sets npm_config_node_gyp for scripts it runs; otherwise use npm's own copy, then npx.
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), "..", "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"),
  ];
  try {
    candidates.push(require.resolve("node-gyp/bin/node-gyp.js"));
  } catch {
    // not a dependency
  }
  for (const c of candidates) {
    if (c && existsSync(c)) return [process.execPath, [c]];
  }
  return ["npx", ["--yes", "node-gyp"]];
}

function buildGyp() {
  // node-gyp always builds into ./build of its working directory, and `rebuild` deletes it first:
  // build from build/gyp/ with a copy of binding.gyp that points back at the sources.
  const dir = path.join(root, "build", "gyp");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const gyp = readFileSync(path.join(root, "binding.gyp"), "utf8");
  const staged = gyp.replace('"mlos_root%": "."', `"mlos_root%": ${JSON.stringify(path.relative(dir, root))}`);
  if (staged === gyp) fail('binding.gyp has no "mlos_root%": "." variable');
  writeFileSync(path.join(dir, "binding.gyp"), staged);
  const [cmd, pre] = nodeGypCommand();
  const gypArgs = [...pre, "rebuild", `--jobs=${jobs}`];
  if (args.has("--debug")) gypArgs.push("--debug");
  if (process.env.npm_config_nodedir) gypArgs.push(`--nodedir=${process.env.npm_config_nodedir}`);
  const r = spawnSync(cmd, gypArgs, { cwd: dir, stdio: "inherit" });
  if (r.status !== 0) fail(`node-gyp exited with ${r.status ?? r.signal}`);
  const out = path.join(dir, "build", args.has("--debug") ? "Debug" : "Release", "mlos_native.node");
  if (!existsSync(out)) fail(`${path.relative(root, out)} was not produced`);
  console.log(`mlos: built ${path.relative(root, out)} with node-gyp`);
}

/** The C++ unit tests alone, sanitized, in build/asan (plain cmake: no addon, no ORT). */
function buildSanitizeTree() {
  const dir = path.join(root, "build", "asan");
  const configure = spawnSync("cmake", ["-S", path.join(root, "native"), "-B", dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DMLOS_SANITIZE=ON", "-DMLOS_NATIVE_TESTS=ON"], { stdio: "inherit" });
  if (configure.status !== 0) fail(`cmake configure of ${dir} exited with ${configure.status ?? configure.signal}`);
  const build = spawnSync("cmake", ["--build", dir, "-j", String(jobs)], { stdio: "inherit" });
  if (build.status !== 0) fail(`cmake --build ${dir} exited with ${build.status ?? build.signal}`);
  console.log(`mlos: built the sanitized C++ tests in ${path.relative(root, dir)}/native-tests`);
}

/**
 * After an --addon-only build: keeps build/<config>/*.node and removes the rest of build/ (CMake's
 * trees, objects, static libraries: ~9 MB a user has no use for; a rebuild configures afresh).
 */
function pruneBuildTree() {
  const dir = path.join(root, "build");
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory() && (e.name === "Release" || e.name === "Debug")) continue;
    rmSync(path.join(dir, e.name), { recursive: true, force: true });
  }
}

if (process.env.MLOS_SKIP_NATIVE === "1") {
  console.log("mlos: MLOS_SKIP_NATIVE=1, native build skipped");
} else if (args.has("--gyp")) {
  buildGyp();
} else if (args.has("--sanitize-tree")) {
  buildSanitizeTree();
} else {
  await buildCmake();
  await buildTorch();
  if (addonOnly) pruneBuildTree();
}
