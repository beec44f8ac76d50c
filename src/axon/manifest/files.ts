/**
 * The files of a model folder: walking it safely, hashing each file as a stream, checking a
 * manifest's `spec.format.files` against the folder, and filling in sizes and digests for
 * `axon pack`.
 *
 * Rules for the folder: `axon.yaml` at its top and dotfiles/dot-folders (`.git`, `.DS_Store`) at
 * any depth are not model files; a symlink is followed only when it resolves inside the folder
 * (PATH_ESCAPE otherwise); sockets, FIFOs and devices are refused (MANIFEST_FILE).
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { lstat, open, readdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { AxonError } from "../errors.js";
import { validateManifestObject } from "./parse.js";
import { MANIFEST_FILENAME, type AxonManifest, type AxonManifestDraft, type ManifestFile } from "./types.js";
import { assertManifestSemantics, relativePathProblem } from "./validate.js";

export interface HashOptions {
  /** Files hashed at once (default 4). */
  concurrency?: number;
  /** Stops the work (rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Called after each file is hashed. */
  onFile?: (file: ManifestFile) => void;
  /** Called with the bytes read so far of the file being hashed, for progress bars. */
  onBytes?: (path: string, bytes: number) => void;
}

/** One file found in a model folder. */
export interface ModelDirEntry {
  /** Relative path, forward slashes. */
  path: string;
  /** Absolute real path of the bytes (symlinks resolved). */
  abs: string;
}

/** A difference between a manifest's files and the folder. */
export interface FileProblem {
  kind: "missing" | "not-a-file" | "size" | "sha256" | "unlisted";
  path: string;
  expected?: number | string;
  actual?: number | string;
  message: string;
}

const CHUNK = 1 << 20;

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isInside(root: string, target: string): boolean {
  const rel = path.relative(root, target);
  return rel === "" || (!rel.startsWith(`..${path.sep}`) && rel !== ".." && !path.isAbsolute(rel));
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** sha256 and size of one file, read as a stream (never whole in memory). Refuses anything but a regular file. */
export async function hashFile(file: string, opts: { signal?: AbortSignal; onBytes?: (bytes: number) => void } = {}): Promise<{ size: number; sha256: string }> {
  opts.signal?.throwIfAborted();
  // O_NONBLOCK: if a FIFO was swapped in after the walk, opening it must not hang.
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new AxonError("MANIFEST_FILE", `${file} is not a regular file`, { file });
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of fh.createReadStream({ start: 0, highWaterMark: CHUNK, autoClose: false })) {
      opts.signal?.throwIfAborted();
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
      opts.onBytes?.(size);
    }
    return { size, sha256: `sha256:${hash.digest("hex")}` };
  } finally {
    await fh.close();
  }
}

/**
 * Every model file in `dir`, sorted by path: regular files, and symlinks that resolve to a file
 * or folder inside `dir`. Skips the top-level `axon.yaml` and every dot-entry.
 */
export async function listModelFiles(dir: string): Promise<ModelDirEntry[]> {
  let realRoot: string;
  try {
    realRoot = await realpath(dir);
  } catch (e) {
    throw new AxonError("MANIFEST_FILE", `model folder ${dir} does not exist`, { dir }, { cause: e });
  }
  if (!(await stat(realRoot)).isDirectory()) throw new AxonError("MANIFEST_FILE", `${dir} is not a folder`, { dir });
  const out: ModelDirEntry[] = [];

  const walk = async (realDir: string, relDir: string, ancestors: ReadonlySet<string>): Promise<void> => {
    const entries = await readdir(realDir, { withFileTypes: true });
    for (const ent of entries) {
      const name = ent.name;
      if (name.startsWith(".")) continue;
      if (relDir === "" && name === MANIFEST_FILENAME) continue;
      const rel = relDir === "" ? name : `${relDir}/${name}`;
      const why = relativePathProblem(rel);
      if (why !== undefined) throw new AxonError("MANIFEST_FILE", `cannot pack '${rel}': ${why}`, { dir, path: rel });
      const abs = path.join(realDir, name);
      if (ent.isSymbolicLink()) {
        let target: string;
        try {
          target = await realpath(abs);
        } catch (e) {
          throw new AxonError("MANIFEST_FILE", `symlink ${rel} is broken`, { dir, path: rel }, { cause: e });
        }
        if (!isInside(realRoot, target)) {
          throw new AxonError("PATH_ESCAPE", `symlink ${rel} points outside the model folder (to ${target})`, { dir, path: rel, target });
        }
        const st = await stat(target);
        if (st.isDirectory()) {
          if (ancestors.has(target)) throw new AxonError("MANIFEST_FILE", `symlink ${rel} makes a loop`, { dir, path: rel, target });
          await walk(target, rel, new Set([...ancestors, target]));
        } else if (st.isFile()) {
          out.push({ path: rel, abs: target });
        } else {
          throw notRegular(dir, rel);
        }
      } else if (ent.isDirectory()) {
        await walk(abs, rel, new Set([...ancestors, abs]));
      } else if (ent.isFile()) {
        out.push({ path: rel, abs });
      } else {
        throw notRegular(dir, rel);
      }
    }
  };
  await walk(realRoot, "", new Set([realRoot]));
  return out.sort((a, b) => compareCodeUnits(a.path, b.path));
}

function notRegular(dir: string, rel: string): AxonError {
  return new AxonError("MANIFEST_FILE", `${rel} is not a regular file (sockets, FIFOs and devices cannot be model files)`, { dir, path: rel });
}

/**
 * Resolves a path listed in a manifest to the real path of its bytes, refusing one that leaves
 * the folder (PATH_ESCAPE, also through symlinks). Returns `undefined` when it does not exist.
 */
export async function resolveModelFile(dir: string, rel: string): Promise<{ abs: string } | { problem: FileProblem } | undefined> {
  const why = relativePathProblem(rel);
  if (why !== undefined) throw new AxonError("PATH_ESCAPE", `unsafe path '${rel}': ${why}`, { dir, path: rel, reason: why });
  const realRoot = await realpath(dir);
  const joined = path.join(realRoot, ...rel.split("/"));
  try {
    await lstat(joined);
  } catch (e) {
    if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return undefined;
    throw e;
  }
  let target: string;
  try {
    target = await realpath(joined);
  } catch (e) {
    if (errno(e) === "ENOENT" || errno(e) === "ELOOP") return undefined; // a broken symlink
    throw e;
  }
  if (!isInside(realRoot, target)) {
    throw new AxonError("PATH_ESCAPE", `${rel} resolves outside the model folder (to ${target})`, { dir, path: rel, target });
  }
  const st = await stat(target);
  if (!st.isFile()) {
    return { problem: { kind: "not-a-file", path: rel, message: `listed file ${rel} is not a regular file` } };
  }
  return { abs: target };
}

async function pool<T, R>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, items.length)) }, worker));
  return results;
}

async function hashEntry(entry: ModelDirEntry, opts: HashOptions): Promise<ManifestFile> {
  const { size, sha256 } = await hashFile(entry.abs, { signal: opts.signal, onBytes: (b) => opts.onBytes?.(entry.path, b) });
  const f: ManifestFile = { path: entry.path, size, sha256 };
  opts.onFile?.(f);
  return f;
}

function listedFiles(manifest: AxonManifest | AxonManifestDraft | undefined): Array<{ path: string; size?: number; sha256?: string }> {
  const files = manifest?.spec?.format?.files;
  return Array.isArray(files) ? files : [];
}

/**
 * Hashes the model files of `dir` and returns them sorted by path. With a manifest that lists
 * files, exactly those paths are hashed (MANIFEST_FILE when one is missing); otherwise every
 * file of the folder (see `listModelFiles`).
 */
export async function hashModelDir(dir: string, manifest?: AxonManifest | AxonManifestDraft, opts: HashOptions = {}): Promise<ManifestFile[]> {
  const listed = listedFiles(manifest);
  let entries: ModelDirEntry[];
  if (listed.length > 0) {
    entries = [];
    for (const f of listed) {
      const r = await resolveModelFile(dir, f.path);
      if (r === undefined) throw new AxonError("MANIFEST_FILE", `listed file ${f.path} does not exist`, { dir, path: f.path });
      if ("problem" in r) throw new AxonError("MANIFEST_FILE", r.problem.message, { dir, path: f.path });
      entries.push({ path: f.path, abs: r.abs });
    }
  } else {
    entries = await listModelFiles(dir);
  }
  const hashed = await pool(entries, opts.concurrency ?? 4, (e) => hashEntry(e, opts));
  return hashed.sort((a, b) => compareCodeUnits(a.path, b.path));
}

/**
 * Every difference between the files a manifest lists and the folder: missing files, size and
 * digest mismatches (a file whose size is wrong is not hashed), and, unless `allowUnlisted`,
 * files in the folder that the manifest does not list. Throws PATH_ESCAPE for a listed path
 * or symlink that leaves the folder.
 */
export async function diffManifestFiles(
  dir: string,
  manifest: AxonManifest | AxonManifestDraft,
  opts: HashOptions & { allowUnlisted?: boolean } = {},
): Promise<FileProblem[]> {
  const listed = listedFiles(manifest);
  const problems = await pool(listed, opts.concurrency ?? 4, async (f): Promise<FileProblem | undefined> => {
    const r = await resolveModelFile(dir, f.path);
    if (r === undefined) return { kind: "missing", path: f.path, message: `listed file ${f.path} does not exist` };
    if ("problem" in r) return r.problem;
    if (f.size !== undefined) {
      const size = (await stat(r.abs)).size;
      if (size !== f.size) {
        return { kind: "size", path: f.path, expected: f.size, actual: size, message: `file ${f.path}: size mismatch: expected ${f.size} bytes, actual ${size} bytes` };
      }
    }
    if (f.sha256 !== undefined) {
      const h = await hashEntry({ path: f.path, abs: r.abs }, opts);
      if (h.sha256 !== f.sha256) {
        return { kind: "sha256", path: f.path, expected: f.sha256, actual: h.sha256, message: `file ${f.path}: sha256 mismatch: expected ${f.sha256}, actual ${h.sha256}` };
      }
      if (f.size !== undefined && h.size !== f.size) {
        // Changed while we read it.
        return { kind: "size", path: f.path, expected: f.size, actual: h.size, message: `file ${f.path}: size mismatch: expected ${f.size} bytes, actual ${h.size} bytes` };
      }
    }
    return undefined;
  });
  const out = problems.filter((p): p is FileProblem => p !== undefined);
  if (!opts.allowUnlisted) {
    const names = new Set(listed.map((f) => f.path));
    for (const e of await listModelFiles(dir)) {
      if (!names.has(e.path)) {
        out.push({ kind: "unlisted", path: e.path, message: `file ${e.path} is in the model folder but not listed in spec.format.files` });
      }
    }
  }
  return out;
}

/**
 * Checks that the folder holds exactly the files the manifest lists, with their sizes and
 * digests. Throws AxonError MANIFEST_FILE naming the first problem (file, expected, actual in
 * `details`, every problem in `details.problems`), or PATH_ESCAPE. A manifest that lists no
 * files (a draft) has nothing to check. Returns the listed files.
 */
export async function checkManifestFiles(
  dir: string,
  manifest: AxonManifest | AxonManifestDraft,
  opts: HashOptions & { allowUnlisted?: boolean } = {},
): Promise<ManifestFile[]> {
  const listed = listedFiles(manifest);
  if (listed.length === 0) return [];
  const problems = await diffManifestFiles(dir, manifest, opts);
  const first = problems[0];
  if (first) {
    throw new AxonError("MANIFEST_FILE", first.message, { dir, file: first.path, kind: first.kind, expected: first.expected, actual: first.actual, problems });
  }
  return listed as ManifestFile[];
}

/**
 * Fills in `spec.format.files` from the folder, as `axon pack` does: when the manifest lists no
 * files, every model file of the folder (sorted by path); when it lists paths, those paths in
 * their order, with size and sha256. A size or sha256 the author wrote must match the file
 * (MANIFEST_FILE) unless `overwrite`. Returns a new, strictly valid manifest; the input is not
 * changed.
 */
export async function completeManifest(
  dir: string,
  manifest: AxonManifest | AxonManifestDraft,
  opts: HashOptions & { overwrite?: boolean; file?: string } = {},
): Promise<AxonManifest> {
  assertManifestSemantics(manifest, { file: opts.file });
  const listed = listedFiles(manifest);
  let files: ManifestFile[];
  if (listed.length === 0) {
    files = await hashModelDir(dir, undefined, opts);
    if (files.length === 0) throw new AxonError("MANIFEST_FILE", `no model files in ${dir}`, { dir });
  } else {
    const byPath = new Map((await hashModelDir(dir, manifest, opts)).map((f) => [f.path, f]));
    files = listed.map((f) => {
      const actual = byPath.get(f.path)!;
      if (!opts.overwrite) {
        if (f.size !== undefined && f.size !== actual.size) {
          throw new AxonError("MANIFEST_FILE", `file ${f.path}: size mismatch: expected ${f.size} bytes, actual ${actual.size} bytes`, { dir, file: f.path, expected: f.size, actual: actual.size });
        }
        if (f.sha256 !== undefined && f.sha256 !== actual.sha256) {
          throw new AxonError("MANIFEST_FILE", `file ${f.path}: sha256 mismatch: expected ${f.sha256}, actual ${actual.sha256}`, { dir, file: f.path, expected: f.sha256, actual: actual.sha256 });
        }
      }
      return { path: f.path, size: actual.size, sha256: actual.sha256 };
    });
  }
  const out = structuredClone(manifest) as AxonManifestDraft;
  out.spec.format.files = files;
  return validateManifestObject(out, { file: opts.file });
}
