#!/usr/bin/env node
// Runs every test: the TypeScript suites (compiled into dist/test) under node's test runner, then
// the native test binaries when they were built. Any failure makes the whole run fail.
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

const nativeTests = path.join(root, "build", "native-tests");
if (only.length === 0 && existsSync(nativeTests)) {
  for (const t of readdirSync(nativeTests).filter((f) => f.endsWith("_test")).sort()) {
    const r = spawnSync(path.join(nativeTests, t), [], { stdio: "inherit", cwd: root });
    if (r.status !== 0) failed = true;
  }
}
process.exit(failed ? 1 : 0);
