#!/usr/bin/env node
// Runs every test: the TypeScript suites (compiled into dist/test) under node's test runner, then
// the native test binaries when they were built (regular, and sanitized when that tree exists).
// Any failure makes the whole run fail.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const testDir = path.join(root, "dist", "test");
const only = process.argv.slice(2);
const files = readdirSync(testDir)
  .filter((f) => f.endsWith(".test.js"))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => path.join(testDir, f));

const node = spawnSync(process.execPath, ["--test", "--test-concurrency=2", ...files], { stdio: "inherit", cwd: root });
let failed = node.status !== 0;

// The C++ tests of the regular build, then those of the sanitizer build (ASan + UBSan) when one
// was made (`node scripts/build-native.js --sanitize-tree`; .ci/run makes it).
for (const dir of [path.join(root, "build", "native-tests"), path.join(root, "build", "asan", "native-tests")]) {
  if (only.length > 0 || !existsSync(dir)) continue;
  for (const t of readdirSync(dir).filter((f) => f.endsWith("_test")).sort()) {
    console.log(`# ${path.relative(root, path.join(dir, t))}`);
    const r = spawnSync(path.join(dir, t), [], { stdio: "inherit", cwd: root, env: { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS ?? "detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS: process.env.UBSAN_OPTIONS ?? "print_stacktrace=1:halt_on_error=1" } });
    if (r.status !== 0) {
      console.log(`# FAILED: ${t} exited with ${r.status ?? r.signal}`);
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
