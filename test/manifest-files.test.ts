import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { AxonError } from "../src/axon/errors.js";
import {
  checkManifestFiles,
  completeManifest,
  diffManifestFiles,
  hashFile,
  hashModelDir,
  parseManifest,
  stringifyManifest,
  type AxonManifest,
  type AxonManifestDraft,
  type FileProblem,
} from "../src/axon/manifest/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = [path.resolve(here, "../../test/fixtures/manifests"), path.resolve(here, "fixtures/manifests")].find((d) => existsSync(d))!;
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), "utf8");

const sha = (b: Buffer | string): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let root: string;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), "axon-files-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh model folder with `files` (path -> content). */
async function modelDir(files: Record<string, string | Buffer>): Promise<string> {
  const dir = path.join(root, `m${n++}`);
  await mkdir(dir, { recursive: true });
  for (const [p, content] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await writeFile(path.join(dir, p), content);
  }
  return dir;
}

function isAxon(code: string, message?: string | RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof AxonError, String(e));
    assert.equal(e.code, code, e.message);
    if (typeof message === "string") assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  };
}

/** A strict manifest for the files of `dir` as given. */
function manifestFor(files: Array<{ path: string; size: number; sha256: string }>): AxonManifest {
  const m = parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true });
  m.spec.format.files = files;
  return m as AxonManifest;
}

describe("hashFile / hashModelDir", () => {
  it("streams big files and matches crypto's digest", async () => {
    const big = Buffer.alloc(5 * 1024 * 1024 + 123);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const dir = await modelDir({ "big.bin": big });
    let last = 0;
    const h = await hashFile(path.join(dir, "big.bin"), { onBytes: (b) => (last = b) });
    assert.deepEqual(h, { size: big.length, sha256: sha(big) });
    assert.equal(last, big.length);
  });

  it("walks the folder: sorted by path, skipping axon.yaml and dotfiles", async () => {
    const dir = await modelDir({
      "model.onnx": "weights",
      "sub/b.txt": "bee",
      "sub/a.txt": "",
      "Z.bin": "zed",
      "axon.yaml": "not a model file",
      "sub/axon.yaml": "a nested one is a model file",
      ".git/HEAD": "ref",
      ".DS_Store": "x",
      "sub/.cache/x": "y",
    });
    const seen: string[] = [];
    const files = await hashModelDir(dir, undefined, { onFile: (f) => seen.push(f.path), concurrency: 2 });
    assert.deepEqual(files, [
      { path: "Z.bin", size: 3, sha256: sha("zed") },
      { path: "model.onnx", size: 7, sha256: sha("weights") },
      { path: "sub/a.txt", size: 0, sha256: sha("") },
      { path: "sub/axon.yaml", size: 28, sha256: sha("a nested one is a model file") },
      { path: "sub/b.txt", size: 3, sha256: sha("bee") },
    ]);
    assert.deepEqual([...seen].sort(), files.map((f) => f.path).sort());
  });

  it("with a manifest that lists files, hashes only those", async () => {
    const dir = await modelDir({ "a.bin": "a", "b.bin": "b" });
    const m = parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true });
    m.spec.format.files = [{ path: "b.bin" }];
    assert.deepEqual(await hashModelDir(dir, m), [{ path: "b.bin", size: 1, sha256: sha("b") }]);
    m.spec.format.files = [{ path: "c.bin" }];
    await assert.rejects(hashModelDir(dir, m), isAxon("MANIFEST_FILE", "listed file c.bin does not exist"));
  });

  it("follows symlinks that stay inside the folder", async () => {
    const dir = await modelDir({ "real/w.bin": "data" });
    await symlink("real/w.bin", path.join(dir, "link.bin"));
    await symlink("real", path.join(dir, "alias"));
    const files = await hashModelDir(dir);
    assert.deepEqual(files.map((f) => f.path), ["alias/w.bin", "link.bin", "real/w.bin"]);
    assert.ok(files.every((f) => f.sha256 === sha("data")));
  });

  it("rejects a symlink that points out of the folder (PATH_ESCAPE)", async () => {
    const outside = await modelDir({ "secret.txt": "secret" });
    const dir = await modelDir({ "model.onnx": "m" });
    await symlink(path.join(outside, "secret.txt"), path.join(dir, "leak.txt"));
    await assert.rejects(hashModelDir(dir), isAxon("PATH_ESCAPE", /^symlink leak\.txt points outside the model folder/));

    const dir2 = await modelDir({ "model.onnx": "m" });
    await symlink("../" + path.basename(outside), path.join(dir2, "up"));
    await assert.rejects(hashModelDir(dir2), isAxon("PATH_ESCAPE", /^symlink up points outside/));
  });

  it("rejects broken symlinks, symlink loops and special files", async () => {
    const dir = await modelDir({ "model.onnx": "m" });
    await symlink("nowhere.bin", path.join(dir, "dangling.bin"));
    await assert.rejects(hashModelDir(dir), isAxon("MANIFEST_FILE", "symlink dangling.bin is broken"));

    const loop = await modelDir({ "d/model.onnx": "m" });
    await symlink("..", path.join(loop, "d", "up"));
    await assert.rejects(hashModelDir(loop), isAxon("MANIFEST_FILE", /makes a loop/));

    let hasMkfifo = true;
    const fifoDir = await modelDir({ "model.onnx": "m" });
    try {
      execFileSync("mkfifo", [path.join(fifoDir, "pipe")]);
    } catch {
      hasMkfifo = false;
    }
    if (hasMkfifo) {
      await assert.rejects(hashModelDir(fifoDir), isAxon("MANIFEST_FILE", /^pipe is not a regular file/));
      const m = manifestFor([{ path: "pipe", size: 0, sha256: sha("") }]);
      await assert.rejects(checkManifestFiles(fifoDir, m, { allowUnlisted: true }), isAxon("MANIFEST_FILE", "listed file pipe is not a regular file"));
    }
  });

  it("reports a missing folder", async () => {
    await assert.rejects(hashModelDir(path.join(root, "does-not-exist")), isAxon("MANIFEST_FILE", /does not exist/));
  });
});

describe("checkManifestFiles", () => {
  const files = { "model.onnx": "weights!", "labels/a.txt": "cat\ndog\n" };
  const listed = () => [
    { path: "model.onnx", size: 8, sha256: sha("weights!") },
    { path: "labels/a.txt", size: 8, sha256: sha("cat\ndog\n") },
  ];

  it("passes when the folder matches", async () => {
    const dir = await modelDir({ ...files, "axon.yaml": "ignored", ".git/x": "ignored" });
    assert.deepEqual(await checkManifestFiles(dir, manifestFor(listed())), listed());
  });

  it("a listed file that does not exist", async () => {
    const dir = await modelDir(files);
    const m = manifestFor([...listed(), { path: "weights.bin", size: 1, sha256: sha("x") }]);
    await assert.rejects(checkManifestFiles(dir, m), isAxon("MANIFEST_FILE", "listed file weights.bin does not exist"));
  });

  it("size mismatch names the file, expected and actual", async () => {
    const dir = await modelDir({ ...files, "model.onnx": "weights!!" });
    await assert.rejects(checkManifestFiles(dir, manifestFor(listed())), (e: unknown) => {
      isAxon("MANIFEST_FILE", "file model.onnx: size mismatch: expected 8 bytes, actual 9 bytes")(e);
      const d = (e as AxonError).details;
      assert.deepEqual([d.file, d.expected, d.actual], ["model.onnx", 8, 9]);
      return true;
    });
  });

  it("sha256 mismatch names the file, expected and actual", async () => {
    const dir = await modelDir({ ...files, "model.onnx": "weights?" });
    await assert.rejects(
      checkManifestFiles(dir, manifestFor(listed())),
      isAxon("MANIFEST_FILE", `file model.onnx: sha256 mismatch: expected ${sha("weights!")}, actual ${sha("weights?")}`),
    );
  });

  it("reports files in the folder that are not listed, unless allowed", async () => {
    const dir = await modelDir({ ...files, "extra.txt": "x" });
    await assert.rejects(checkManifestFiles(dir, manifestFor(listed())), isAxon("MANIFEST_FILE", "file extra.txt is in the model folder but not listed in spec.format.files"));
    assert.equal((await checkManifestFiles(dir, manifestFor(listed()), { allowUnlisted: true })).length, 2);
  });

  it("lists every problem in details.problems", async () => {
    const dir = await modelDir({ "model.onnx": "changed!", "extra.txt": "x" });
    const problems = await diffManifestFiles(dir, manifestFor(listed()));
    assert.deepEqual(problems.map((p: FileProblem) => [p.kind, p.path]), [
      ["sha256", "model.onnx"],
      ["missing", "labels/a.txt"],
      ["unlisted", "extra.txt"],
    ]);
    await assert.rejects(checkManifestFiles(dir, manifestFor(listed())), (e: unknown) => {
      assert.equal(((e as AxonError).details.problems as FileProblem[]).length, 3);
      return true;
    });
  });

  it("a listed path that escapes through a symlink is PATH_ESCAPE", async () => {
    const outside = await modelDir({ "model.onnx": "weights!" });
    const dir = await modelDir({});
    await symlink(outside, path.join(dir, "sub"));
    const m = manifestFor([{ path: "sub/model.onnx", size: 8, sha256: sha("weights!") }]);
    await assert.rejects(checkManifestFiles(dir, m, { allowUnlisted: true }), isAxon("PATH_ESCAPE", /^sub\/model\.onnx resolves outside the model folder/));
    const bad = manifestFor([{ path: "../x", size: 1, sha256: sha("x") }]);
    await assert.rejects(checkManifestFiles(dir, bad), isAxon("PATH_ESCAPE", /unsafe path '\.\.\/x'/));
  });
});

describe("completeManifest", () => {
  it("fills in every file of the folder when none are listed", async () => {
    const dir = await modelDir({ "model.onnx": "onnx bytes", "data/weights.bin": Buffer.from([1, 2, 3]), "axon.yaml": "x", ".gitignore": "*" });
    const draft = parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true });
    const before = structuredClone(draft);
    const m = await completeManifest(dir, draft);
    assert.deepEqual(m.spec.format.files, [
      { path: "data/weights.bin", size: 3, sha256: sha(Buffer.from([1, 2, 3])) },
      { path: "model.onnx", size: 10, sha256: sha("onnx bytes") },
    ]);
    assert.deepEqual(draft, before, "input unchanged");
    // The result is a strict manifest, and the folder checks out against it.
    assert.deepEqual(parseManifest(stringifyManifest(m)), m);
    await checkManifestFiles(dir, m);
  });

  it("fills sizes and hashes of listed paths, keeping their order", async () => {
    const dir = await modelDir({ "model.onnx": "m", "data/weights.bin": "ww", "notes.md": "not packed" });
    const draft = parseManifest(fixture("draft.yaml"), "axon.yaml", { draft: true });
    const m = await completeManifest(dir, draft);
    assert.deepEqual(m.spec.format.files, [
      { path: "model.onnx", size: 1, sha256: sha("m") },
      { path: "data/weights.bin", size: 2, sha256: sha("ww") },
    ]);
    assert.equal(m.spec.format.entrypoint, "model.onnx");
  });

  it("checks sizes and hashes the author wrote, unless overwrite", async () => {
    const dir = await modelDir({ "model.onnx": "m", "data/weights.bin": "ww" });
    const draft = parseManifest(fixture("draft.yaml"), "axon.yaml", { draft: true }) as AxonManifestDraft;
    draft.spec.format.files = [{ path: "model.onnx", sha256: sha("old") }, { path: "data/weights.bin", size: 2 }];
    await assert.rejects(completeManifest(dir, draft), isAxon("MANIFEST_FILE", `file model.onnx: sha256 mismatch: expected ${sha("old")}, actual ${sha("m")}`));
    const m = await completeManifest(dir, draft, { overwrite: true });
    assert.equal(m.spec.format.files[0]?.sha256, sha("m"));
  });

  it("fails on a missing listed file, an empty folder, an escaping path or an escaping symlink", async () => {
    const dir = await modelDir({ "model.onnx": "m" });
    const draft = parseManifest(fixture("draft.yaml"), "axon.yaml", { draft: true });
    await assert.rejects(completeManifest(dir, draft), isAxon("MANIFEST_FILE", "listed file data/weights.bin does not exist"));

    const empty = await modelDir({ "axon.yaml": "x" });
    await assert.rejects(completeManifest(empty, parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true })), isAxon("MANIFEST_FILE", /^no model files in /));

    const esc = structuredClone(draft);
    esc.spec.format.files = [{ path: "model.onnx" }, { path: "../../etc/passwd" }];
    await assert.rejects(completeManifest(dir, esc), isAxon("PATH_ESCAPE", /spec\.format\.files\[1\]\.path: unsafe path '\.\.\/\.\.\/etc\/passwd'/));

    const outside = await modelDir({ "secret.txt": "s" });
    const leaky = await modelDir({ "model.onnx": "m" });
    await symlink(path.join(outside, "secret.txt"), path.join(leaky, "secret.txt"));
    await assert.rejects(completeManifest(leaky, parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true })), isAxon("PATH_ESCAPE"));
  });
});
