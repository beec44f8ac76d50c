/**
 * Semantic checks on a manifest, beyond what the JSON Schema can say: file paths that stay inside
 * the model folder, no duplicate files, an entrypoint that is one of the files, unique tensor
 * names, a version that `semver` accepts. `parseManifest` runs them after the schema; call
 * `assertManifestSemantics` yourself for a manifest built in code.
 */
import { createRequire } from "node:module";
import type SemverModule from "semver";

// semver loads ~50 CJS modules: only the manifest checks need it, not the path checks that the
// install fast path uses from this file.
let semverModule: typeof SemverModule | undefined;
const semverLib = (): typeof SemverModule => (semverModule ??= createRequire(import.meta.url)("semver") as typeof SemverModule);
import { AxonError } from "../errors.js";
import { MANIFEST_FILENAME, type AxonManifest, type AxonManifestDraft } from "./types.js";

/** A field path in the manifest: keys and array indexes, e.g. `["spec", "io", "inputs", 0, "dtype"]`. */
export type FieldPath = ReadonlyArray<string | number>;

/** Where a field is in the manifest's text: 1-based line and column. */
export interface SourcePos {
  line: number;
  col: number;
}

/**
 * Finds a field in the manifest's source. `key` asks for the position of the key itself (for
 * unknown fields), `value` (the default) for the value.
 */
export type Locator = (path: FieldPath, target?: "key" | "value") => SourcePos | undefined;

/** One problem found in a manifest, with everything needed to point at it. */
export interface ManifestIssue {
  code: "MANIFEST_INVALID" | "PATH_ESCAPE";
  file: string;
  line?: number;
  col?: number;
  /** Field path with dots and `[i]`, e.g. `spec.format.files[0].path`; `""` for the whole document. */
  path: string;
  message: string;
}

export interface SemanticOptions {
  /** File name used in messages (default `axon.yaml`). */
  file?: string;
  /** Positions of fields in the source, when the manifest came from text. */
  locate?: Locator;
}

/** `["spec", "io", "inputs", 0, "dtype"]` -> `spec.io.inputs[0].dtype`. */
export function formatFieldPath(path: FieldPath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(seg)) out += out === "" ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** One line: `axon.yaml:12:5 spec.io.inputs[0].dtype: must be one of ...`. */
export function formatIssue(issue: Pick<ManifestIssue, "file" | "line" | "col" | "path" | "message">): string {
  const where = issue.line !== undefined ? `${issue.file}:${issue.line}:${issue.col ?? 1}` : issue.file;
  return issue.path ? `${where} ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`;
}

/**
 * The error for a list of issues: the first one's code and one-line message; `details` holds its
 * file/line/col/path and `details.errors` all of them.
 */
export function issuesError(issues: ManifestIssue[]): AxonError {
  const first = issues[0];
  if (!first) throw new Error("issuesError needs at least one issue");
  return new AxonError(first.code, formatIssue(first), {
    file: first.file,
    line: first.line,
    col: first.col,
    path: first.path,
    errors: issues.map((i) => ({ ...i })),
  });
}

/**
 * Why a path written in a manifest is not a safe path inside the model folder, or `undefined`
 * when it is: relative, forward slashes, no empty, `.` or `..` segments, no drive letter.
 */
export function relativePathProblem(p: string): string | undefined {
  if (typeof p !== "string" || p.length === 0) return "the path is empty";
  if (p.includes("\0")) return "it contains a NUL character";
  if (p.includes("\\")) return "it contains a backslash (use forward slashes)";
  if (p.startsWith("/")) return "it is absolute";
  if (/^[A-Za-z]:/.test(p)) return "it starts with a drive letter";
  for (const seg of p.split("/")) {
    if (seg === "") return "it has an empty segment";
    if (seg === "..") return "a '..' segment leaves the model folder";
    if (seg === ".") return "it has a '.' segment";
  }
  return undefined;
}

export function isSafeRelativePath(p: string): boolean {
  return relativePathProblem(p) === undefined;
}

/** Throws PATH_ESCAPE when `p` is not a safe relative path; `where` names it in the message. */
export function assertSafeRelativePath(p: string, where?: string): void {
  const why = relativePathProblem(p);
  if (why !== undefined) {
    throw new AxonError("PATH_ESCAPE", `${where ? `${where}: ` : ""}unsafe path '${p}': ${why}`, { path: p, reason: why });
  }
}

/** True for a chat template written inline rather than as the path of a template file. */
export function isInlineChatTemplate(t: string): boolean {
  return t.includes("{{") || t.includes("{%") || t.includes("\n");
}

/** All semantic problems of a (schema-valid, strict or draft) manifest, in document order. */
export function checkManifestSemantics(m: AxonManifest | AxonManifestDraft, opts: SemanticOptions = {}): ManifestIssue[] {
  const file = opts.file ?? MANIFEST_FILENAME;
  const issues: ManifestIssue[] = [];
  const add = (code: ManifestIssue["code"], path: FieldPath, message: string): void => {
    const pos = opts.locate?.(path);
    issues.push({ code, file, line: pos?.line, col: pos?.col, path: formatFieldPath(path), message });
  };

  // metadata.version: the schema's pattern is semver 2.0; `semver` must agree (and normalise to itself).
  const version = m.metadata?.version;
  // (`semver` drops build metadata from `.version`, and accepts a leading `v` that we do not.)
  if (typeof version === "string" && semverLib().parse(version)?.version !== version.replace(/\+.*$/, "")) {
    add("MANIFEST_INVALID", ["metadata", "version"], `'${version}' is not a semver version (MAJOR.MINOR.PATCH, e.g. 1.0.0)`);
  }

  const format = m.spec?.format;
  const files = format?.files;
  const listed = new Map<string, number>();
  if (Array.isArray(files)) {
    const lower = new Map<string, number>();
    files.forEach((f, i) => {
      const at: FieldPath = ["spec", "format", "files", i, "path"];
      const p = f?.path;
      if (typeof p !== "string") return;
      const why = relativePathProblem(p);
      if (why !== undefined) {
        add("PATH_ESCAPE", at, `unsafe path '${p}': ${why}`);
        return;
      }
      if (p === MANIFEST_FILENAME) {
        add("MANIFEST_INVALID", at, `'${MANIFEST_FILENAME}' is the manifest itself and cannot be listed as a model file`);
        return;
      }
      const prev = listed.get(p);
      if (prev !== undefined) {
        add("MANIFEST_INVALID", at, `duplicate file path '${p}' (also spec.format.files[${prev}])`);
        return;
      }
      const prevCase = lower.get(p.toLowerCase());
      if (prevCase !== undefined) {
        add("MANIFEST_INVALID", at, `file path '${p}' differs only in case from spec.format.files[${prevCase}] ('${files[prevCase]?.path}')`);
        return;
      }
      listed.set(p, i);
      lower.set(p.toLowerCase(), i);
    });
    // A path cannot be both a file and a folder (`a` and `a/b`).
    for (const [p, i] of listed) {
      const segs = p.split("/");
      for (let k = 1; k < segs.length; k++) {
        const dir = segs.slice(0, k).join("/");
        const j = listed.get(dir);
        if (j !== undefined) {
          add("MANIFEST_INVALID", ["spec", "format", "files", i, "path"], `'${dir}' is listed as a file (spec.format.files[${j}]) but '${p}' puts a file inside it`);
          break;
        }
      }
    }
  }
  const hasFiles = Array.isArray(files) && files.length > 0;

  /** A path field that must be safe and, when files are listed, one of them. */
  const checkFileRef = (value: unknown, at: FieldPath, what: string): void => {
    if (typeof value !== "string") return;
    const why = relativePathProblem(value);
    if (why !== undefined) {
      add("PATH_ESCAPE", at, `unsafe path '${value}': ${why}`);
    } else if (hasFiles && !listed.has(value)) {
      add("MANIFEST_INVALID", at, `${what} '${value}' is not one of spec.format.files`);
    }
  };
  checkFileRef(format?.entrypoint, ["spec", "format", "entrypoint"], "entrypoint");

  const io = m.spec?.io;
  if (io) {
    for (const side of ["inputs", "outputs"] as const) {
      const seen = new Map<string, number>();
      (io[side] ?? []).forEach((t, i) => {
        if (typeof t?.name !== "string") return;
        const prev = seen.get(t.name);
        if (prev !== undefined) add("MANIFEST_INVALID", ["spec", "io", side, i, "name"], `duplicate ${side === "inputs" ? "input" : "output"} name '${t.name}' (also spec.io.${side}[${prev}])`);
        else seen.set(t.name, i);
      });
    }
  }

  const runtime = m.spec?.requirements?.runtime;
  if (typeof runtime === "string" && semverLib().validRange(runtime) === null) {
    add("MANIFEST_INVALID", ["spec", "requirements", "runtime"], `'${runtime}' is not a semver range (e.g. >=0.1.0)`);
  }

  const batching = m.spec?.serving?.batching;
  if (batching?.max_batch_size !== undefined && Array.isArray(batching.preferred_batch_sizes)) {
    batching.preferred_batch_sizes.forEach((n, i) => {
      if (typeof n === "number" && n > (batching.max_batch_size as number)) {
        add("MANIFEST_INVALID", ["spec", "serving", "batching", "preferred_batch_sizes", i], `preferred batch size ${n} is larger than max_batch_size ${batching.max_batch_size}`);
      }
    });
  }

  const llm = m.spec?.llm;
  if (llm) {
    checkFileRef(llm.config, ["spec", "llm", "config"], "config");
    checkFileRef(llm.tokenizer, ["spec", "llm", "tokenizer"], "tokenizer");
    checkFileRef(llm.generation_config, ["spec", "llm", "generation_config"], "generation_config");
    if (typeof llm.chat_template === "string" && !isInlineChatTemplate(llm.chat_template)) {
      checkFileRef(llm.chat_template, ["spec", "llm", "chat_template"], "chat_template");
    }
  }

  // Document order when positions are known; otherwise the order of the checks.
  return issues
    .map((issue, i) => ({ issue, i }))
    .sort((a, b) => (a.issue.line ?? 0) - (b.issue.line ?? 0) || (a.issue.col ?? 0) - (b.issue.col ?? 0) || a.i - b.i)
    .map((x) => x.issue);
}

/** Throws the first semantic problem (PATH_ESCAPE or MANIFEST_INVALID), with all of them in `details.errors`. */
export function assertManifestSemantics(m: AxonManifest | AxonManifestDraft, opts: SemanticOptions = {}): void {
  const issues = checkManifestSemantics(m, opts);
  if (issues.length > 0) throw issuesError(issues);
}
