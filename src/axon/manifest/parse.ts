/**
 * Reading and writing `axon.yaml`. The text is parsed with the `yaml` Document API, keeping each
 * node's source range, so that every error points at `FILE:LINE:COL` and a field path:
 *
 *   axon.yaml:12:5 spec.io.inputs[0].dtype: must be one of float32, float64, ...
 *
 * Then the JSON Schema in `schemas/axon-manifest.schema.json` (ajv, compiled once, lazily) and the
 * semantic checks of `validate.ts` run. Strict by default (every file with size and sha256);
 * `{ draft: true }` accepts what an author writes for `axon pack` (files absent, or paths only).
 */
import { existsSync, readFileSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import type { Ajv2020, ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import { Document, LineCounter, isAlias, isMap, isNode, isPair, isScalar, isSeq, parseDocument, visit, type Node as YamlNode } from "yaml";
import { AxonError } from "../errors.js";
import { MANIFEST_FILENAME, type AxonManifest, type AxonManifestDraft } from "./types.js";
import {
  assertManifestSemantics,
  formatFieldPath,
  formatIssue,
  issuesError,
  type FieldPath,
  type Locator,
  type ManifestIssue,
  type SourcePos,
} from "./validate.js";

export interface ParseOptions {
  /** Accept the draft form for `axon pack`: `spec.format.files` absent or entries with only `path`. */
  draft?: boolean;
}

// ---------------------------------------------------------------------------------------------
// The schema

const SCHEMA_FILE = "axon-manifest.schema.json";

/** Where the schema file is: `schemas/` at the package root (from `dist/src/axon/manifest/` or `src/axon/manifest/`). */
export function manifestSchemaPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.resolve(here, "../../../../schemas", SCHEMA_FILE), path.resolve(here, "../../../schemas", SCHEMA_FILE)];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`cannot find schemas/${SCHEMA_FILE} (looked in ${candidates.join(", ")})`);
}

type JsonObject = Record<string, any>;

let schemaCache: JsonObject | undefined;

/** The manifest's JSON Schema (strict form), as loaded from `schemas/`. Do not mutate. */
export function manifestSchema(): JsonObject {
  schemaCache ??= JSON.parse(readFileSync(manifestSchemaPath(), "utf8")) as JsonObject;
  return schemaCache;
}

/** The draft form: the same schema, with `files` optional and file entries needing only `path`. */
export function draftSchema(): JsonObject {
  const s = structuredClone(manifestSchema());
  s.$id = String(s.$id).replace(/\.schema\.json$/, ".draft.schema.json");
  s.$defs.format.required = (s.$defs.format.required as string[]).filter((k) => k !== "files");
  delete s.$defs.format.properties.files.minItems;
  s.$defs.file.required = ["path"];
  return s;
}

let ajv: Ajv2020 | undefined;
const validators: { strict?: ValidateFunction; draft?: ValidateFunction } = {};

/** Where the build puts both validators, generated ahead of time (src/tools/compile-schemas.ts). */
export const PRECOMPILED_VALIDATORS = fileURLToPath(new URL("../../../schemas/manifest-validators.cjs", import.meta.url));

function precompiled(): { strict: ValidateFunction; draft: ValidateFunction } | undefined {
  try {
    return createRequire(import.meta.url)(PRECOMPILED_VALIDATORS);
  } catch {
    return undefined; // not built yet: compile at run time
  }
}

function validator(draft: boolean): ValidateFunction {
  // Compiling the schema costs ~150 ms per process; the build generates the same code once.
  if (!validators.strict) {
    const pre = precompiled();
    if (pre) Object.assign(validators, pre);
  }
  if (draft && validators.draft) return validators.draft;
  if (!draft && validators.strict) return validators.strict;
  // ajv itself loads only when the precompiled validators are missing.
  const Ajv = (createRequire(import.meta.url)("ajv/dist/2020.js") as typeof import("ajv/dist/2020.js")).Ajv2020;
  ajv ??= new Ajv({ allErrors: true, verbose: true, strict: true });
  if (draft) return (validators.draft ??= ajv.compile(draftSchema()));
  return (validators.strict ??= ajv.compile(manifestSchema()));
}

// ---------------------------------------------------------------------------------------------
// Positions

/** JSON pointer (`/spec/io/inputs/0`) -> segments; numeric segments stay strings (keys may be digits). */
function pointerSegments(pointer: string): string[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** Segments as a field path: indexes of arrays become numbers. */
function typedSegments(segs: string[], data: unknown): FieldPath {
  const out: Array<string | number> = [];
  let cur: unknown = data;
  for (const s of segs) {
    if (Array.isArray(cur)) {
      out.push(Number(s));
      cur = cur[Number(s)];
    } else {
      out.push(s);
      cur = cur !== null && typeof cur === "object" ? (cur as Record<string, unknown>)[s] : undefined;
    }
  }
  return out;
}

function keyString(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}

/** Finds fields of a parsed document by path, and turns their offsets into line:col. */
function makeLocator(doc: Document, lc: LineCounter): Locator {
  const pos = (offset: number): SourcePos => {
    const p = lc.linePos(offset);
    return { line: p.line, col: p.col };
  };
  return (fieldPath, target = "value") => {
    let cur: unknown = doc.contents;
    let key: YamlNode | undefined;
    let last: YamlNode | undefined = isNode(cur) ? cur : undefined;
    for (const seg of fieldPath) {
      if (isAlias(cur)) cur = cur.resolve(doc);
      key = undefined;
      if (isMap(cur)) {
        const pair = cur.items.find((p) => keyString(p.key) === String(seg));
        if (!pair) return last?.range ? pos(last.range[0]) : undefined;
        key = isNode(pair.key) ? pair.key : undefined;
        cur = pair.value;
      } else if (isSeq(cur)) {
        cur = cur.items[Number(seg)];
      } else {
        return last?.range ? pos(last.range[0]) : undefined;
      }
      if (isNode(cur)) last = cur;
      else if (key) last = key;
    }
    if (target === "key" && key?.range) return pos(key.range[0]);
    // An empty value (`name:` with nothing after it) has no extent of its own: point at its key.
    if (isNode(cur) && cur.range && cur.range[1] > cur.range[0]) return pos(cur.range[0]);
    if (key?.range) return pos(key.range[0]);
    if (isNode(cur) && cur.range) return pos(cur.range[0]);
    return last?.range ? pos(last.range[0]) : { line: 1, col: 1 };
  };
}

// ---------------------------------------------------------------------------------------------
// Schema errors -> one line each

/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

function suggestion(unknown: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(unknown.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}

function describeValue(v: unknown, source?: string): string {
  if (v === null) return "nothing (null)";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
  const text = source !== undefined && source.length > 0 && source.length <= 40 && !source.includes("\n") ? source : String(v);
  return `${typeof v === "number" ? "the number" : "the boolean"} ${text}`;
}

const ARTICLE: Record<string, string> = {
  string: "a string",
  integer: "an integer",
  number: "a number",
  boolean: "true or false",
  object: "a mapping",
  array: "a list",
  null: "null",
};

/** Friendlier words for the schema's patterns, keyed by the pattern text read from the schema. */
function patternMessages(): Map<string, string> {
  const d = manifestSchema().$defs;
  return new Map<string, string>([
    [d.name.pattern, "must be lowercase letters and digits, in groups separated by '.', '_' or '-'"],
    [d.semver.pattern, "must be a semver version (MAJOR.MINOR.PATCH, e.g. 1.0.0)"],
    [d.file.properties.sha256.pattern, "must be 'sha256:' followed by 64 lowercase hex digits, or those 64 digits alone"],
    [d.metadata.properties.homepage.pattern, "must be an http:// or https:// URL"],
    [d.requirements.properties.memory.pattern, "must be a byte count or a quantity such as 64Mi, 1.5Gi or 500M"],
    [d.format.properties.type.pattern, "must be lowercase letters and digits, in groups separated by '.', '_' or '-' (e.g. onnx, tfjs-graph)"],
  ]);
}
let patternMessageCache: Map<string, string> | undefined;

interface RankedIssue extends ManifestIssue {
  keyword: string;
  /** Instance path of the mapping an unknown field or missing property belongs to. */
  parent?: string;
}

const KEYWORD_RANK: Record<string, number> = { additionalProperties: 0, required: 1, type: 2, const: 3, enum: 4 };

function schemaErrorsToIssues(errors: ErrorObject[], data: unknown, file: string, locate: Locator, sourceOf: (p: FieldPath) => string | undefined): ManifestIssue[] {
  // An anyOf failure stands for its branches' failures: keep the anyOf error alone.
  const anyOfs = errors.filter((e) => e.keyword === "anyOf" || e.keyword === "oneOf");
  const kept = errors.filter(
    (e) => !anyOfs.some((a) => a !== e && e.schemaPath.startsWith(a.schemaPath + "/") && (e.instancePath === a.instancePath || e.instancePath.startsWith(a.instancePath + "/"))),
  );
  patternMessageCache ??= patternMessages();
  const issues: RankedIssue[] = [];
  for (const e of kept) {
    const segs = typedSegments(pointerSegments(e.instancePath), data);
    const params = e.params as Record<string, any>;
    let at: FieldPath = segs;
    let target: "key" | "value" = "value";
    let message: string;
    switch (e.keyword) {
      case "additionalProperties": {
        const name = String(params.additionalProperty);
        at = [...segs, name];
        target = "key";
        const known = Object.keys((e.parentSchema as JsonObject | undefined)?.properties ?? {});
        const hint = suggestion(name, known);
        message = `unknown field '${name}'${hint ? ` (did you mean '${hint}'?)` : ""}`;
        break;
      }
      case "required":
        message = `must have required property '${String(params.missingProperty)}'`;
        break;
      case "type": {
        const want = String(params.type)
          .split(",")
          .map((t) => ARTICLE[t] ?? t)
          .join(" or ");
        message = `must be ${want}, got ${describeValue(e.data, sourceOf(segs))}`;
        if (params.type === "string" && (typeof e.data === "number" || typeof e.data === "boolean")) {
          const src = sourceOf(segs) ?? String(e.data);
          message += ` (write it in quotes: "${src}")`;
        }
        break;
      }
      case "enum":
        message = `must be one of ${(params.allowedValues as unknown[]).map(String).join(", ")}, got ${describeValue(e.data, sourceOf(segs))}`;
        break;
      case "const":
        message = `must be '${String(params.allowedValue)}', got ${describeValue(e.data, sourceOf(segs))}`;
        break;
      case "pattern":
        message = patternMessageCache.get(String(params.pattern)) ?? `must match the pattern ${String(params.pattern)}`;
        message += `, got ${describeValue(e.data, sourceOf(segs))}`;
        break;
      case "anyOf":
      case "oneOf": {
        const branches = ((e.schema as JsonObject[] | undefined) ?? []).map((b) => String(b.description ?? b.type ?? "a valid value").replace(/\.$/, ""));
        message = e.schemaPath.endsWith("/dimension/anyOf")
          ? `must be a size (an integer, -1 for a dynamic dimension) or a dimension name such as 'batch', got ${describeValue(e.data, sourceOf(segs))}`
          : `must be one of: ${branches.join("; ")}`;
        break;
      }
      case "minItems":
        message = `must list at least ${String(params.limit)} item${params.limit === 1 ? "" : "s"}`;
        break;
      case "uniqueItems":
        message = `has duplicate items (${String(params.j)} and ${String(params.i)})`;
        break;
      case "minLength":
        message = params.limit === 1 ? "must not be empty" : `must be at least ${String(params.limit)} characters long`;
        break;
      case "maxLength":
        message = `must be at most ${String(params.limit)} characters long`;
        break;
      case "minimum":
      case "maximum":
      case "exclusiveMinimum":
      case "exclusiveMaximum":
        message = `must be ${String(params.comparison)} ${String(params.limit)}, got ${String(e.data)}`;
        break;
      default:
        message = e.message ?? `fails ${e.keyword}`;
    }
    const p = locate(at, target);
    issues.push({
      code: "MANIFEST_INVALID",
      file,
      line: p?.line,
      col: p?.col,
      path: formatFieldPath(at),
      message,
      keyword: e.keyword,
      parent: e.keyword === "additionalProperties" || e.keyword === "required" ? e.instancePath : undefined,
    });
  }
  // Most relevant first: in document order; a typo'd key beats the missing property it stands
  // for (the "required" error sits on the mapping, ahead of the typo).
  const typoParents = new Map<string, RankedIssue>();
  for (const i of issues) if (i.keyword === "additionalProperties" && i.parent !== undefined && !typoParents.has(i.parent)) typoParents.set(i.parent, i);
  const sortPos = (i: RankedIssue): [number, number] => {
    const typo = i.keyword === "required" && i.parent !== undefined ? typoParents.get(i.parent) : undefined;
    const src = typo ?? i;
    return [src.line ?? 0, src.col ?? 0];
  };
  const ranked = issues
    .map((issue, n) => ({ issue, n, at: sortPos(issue) }))
    .sort((a, b) => a.at[0] - b.at[0] || a.at[1] - b.at[1] || (KEYWORD_RANK[a.issue.keyword] ?? 9) - (KEYWORD_RANK[b.issue.keyword] ?? 9) || a.n - b.n)
    .map((x) => x.issue);
  return ranked.map(({ keyword: _k, parent: _p, ...issue }) => issue);
}

// ---------------------------------------------------------------------------------------------
// Public API

function parseError(file: string, line: number, col: number, reason: string, extra: Record<string, unknown> = {}): AxonError {
  const issue = { file, line, col, path: "", message: reason, ...extra };
  return new AxonError("MANIFEST_PARSE", formatIssue(issue), { file, line, col, path: "", errors: [issue] });
}

/**
 * Parses and validates the text of an `axon.yaml` (a bare hex file `sha256` comes back as
 * `sha256:<hex>`). `file` names it in messages. Throws
 * AxonError MANIFEST_PARSE (not YAML, duplicate keys), MANIFEST_INVALID (schema or semantics)
 * or PATH_ESCAPE (a listed path leaves the model folder); the message is one line,
 * `FILE:LINE:COL FIELD.PATH: what is wrong`, and `details.errors` lists every problem.
 */
export function parseManifest(text: string, file?: string, opts?: ParseOptions & { draft?: false }): AxonManifest;
export function parseManifest(text: string, file: string | undefined, opts: ParseOptions & { draft: true }): AxonManifestDraft;
export function parseManifest(text: string, file?: string, opts?: ParseOptions): AxonManifest | AxonManifestDraft;
export function parseManifest(text: string, file: string = MANIFEST_FILENAME, opts: ParseOptions = {}): AxonManifest | AxonManifestDraft {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  if (doc.errors.length > 0) {
    const errors = doc.errors.map((e) => {
      const { line, col } = lc.linePos(e.pos[0]);
      let reason = e.message.split("\n")[0] ?? e.message;
      if (e.code === "DUPLICATE_KEY") {
        const rest = text.slice(e.pos[0]).split("\n")[0] ?? "";
        const key = (/^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^:#]+?)\s*:/.exec(rest)?.[1] ?? text.slice(e.pos[0], e.pos[1])).trim();
        if (key) reason += ` (duplicate key '${key.length > 60 ? key.slice(0, 60) + "..." : key}')`;
      }
      return { file, line, col, path: "", message: reason, yamlCode: e.code };
    });
    const first = errors[0]!;
    throw new AxonError("MANIFEST_PARSE", formatIssue(first), { file, line: first.line, col: first.col, path: "", errors });
  }
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    throw new AxonError("MANIFEST_INVALID", formatIssue({ file, line: 1, col: 1, path: "", message: "the manifest is empty" }), {
      file, line: 1, col: 1, path: "", errors: [{ code: "MANIFEST_INVALID", file, line: 1, col: 1, path: "", message: "the manifest is empty" }],
    });
  }

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // An alias to an anchor that does not exist, or an alias bomb.
    let at: SourcePos = { line: 1, col: 1 };
    visit(doc, {
      Alias(_k, node) {
        if (node.range && node.resolve(doc) === undefined) {
          at = lc.linePos(node.range[0]);
          return visit.BREAK;
        }
        return undefined;
      },
    });
    throw parseError(file, at.line, at.col, (e as Error).message);
  }

  const locate = makeLocator(doc, lc);
  const sourceOf = (p: FieldPath): string | undefined => {
    const node = doc.getIn(p as Array<string | number>, true);
    return isNode(node) && node.range ? text.slice(node.range[0], node.range[1]) : undefined;
  };
  const draft = opts.draft === true;
  const validate = validator(draft);
  if (!validate(data)) {
    throw issuesError(schemaErrorsToIssues(validate.errors ?? [], data, file, locate, sourceOf));
  }
  normalizeFileDigests(data as AxonManifestDraft);
  assertManifestSemantics(data as AxonManifest, { file, locate });
  return draft ? (data as AxonManifestDraft) : (data as AxonManifest);
}

/**
 * A file's `sha256` may be written as the bare 64 hex digits that `sha256sum` prints (the schema
 * allows both forms); everything past parsing reads `sha256:<hex>`, so a valid manifest gets that
 * form here, in place.
 */
function normalizeFileDigests(m: AxonManifestDraft): void {
  for (const f of m.spec.format.files ?? []) {
    if (f.sha256 !== undefined && !f.sha256.startsWith("sha256:")) f.sha256 = `sha256:${f.sha256}`;
  }
}

/**
 * Validates a manifest that is already a JS value (built in code, read from JSON, completed by
 * `completeManifest`): schema and semantics, without source positions. A bare hex `sha256` is
 * rewritten to `sha256:<hex>` in `value` itself.
 */
export function validateManifestObject(value: unknown, opts?: { file?: string; draft?: false }): AxonManifest;
export function validateManifestObject(value: unknown, opts: { file?: string; draft: true }): AxonManifestDraft;
export function validateManifestObject(value: unknown, opts: { file?: string; draft?: boolean } = {}): AxonManifest | AxonManifestDraft {
  const file = opts.file ?? MANIFEST_FILENAME;
  const validate = validator(opts.draft === true);
  if (!validate(value)) {
    throw issuesError(schemaErrorsToIssues(validate.errors ?? [], value, file, () => undefined, () => undefined));
  }
  normalizeFileDigests(value as AxonManifestDraft);
  assertManifestSemantics(value as AxonManifest, { file });
  return value as AxonManifest;
}

/** Reads and parses `DIR/axon.yaml` (or the file itself when `dir` is a file). */
export async function readManifest(dir: string, opts?: ParseOptions & { draft?: false }): Promise<AxonManifest>;
export async function readManifest(dir: string, opts: ParseOptions & { draft: true }): Promise<AxonManifestDraft>;
export async function readManifest(dir: string, opts?: ParseOptions): Promise<AxonManifest | AxonManifestDraft>;
export async function readManifest(dir: string, opts: ParseOptions = {}): Promise<AxonManifest | AxonManifestDraft> {
  let file = path.join(dir, MANIFEST_FILENAME);
  try {
    if ((await stat(dir)).isFile()) file = dir;
  } catch {
    // reported below
  }
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new AxonError("MANIFEST_FILE", `no ${MANIFEST_FILENAME} in ${dir}`, { file, dir }, { cause: e });
    }
    throw new AxonError("MANIFEST_FILE", `cannot read ${file}: ${(e as Error).message}`, { file, dir }, { cause: e });
  }
  return parseManifest(text, file, opts);
}

// ---------------------------------------------------------------------------------------------
// Writing

interface KeyOrder {
  keys: string[];
  children?: Record<string, KeyOrder>;
  /** For a list: the order of its items' keys. */
  items?: KeyOrder;
}

const TENSOR_ORDER: KeyOrder = { keys: ["name", "dtype", "shape", "description"] };
const MANIFEST_ORDER: KeyOrder = {
  keys: ["apiVersion", "kind", "metadata", "spec"],
  children: {
    metadata: { keys: ["namespace", "name", "version", "description", "license", "authors", "tags", "homepage", "source"] },
    spec: {
      keys: ["framework", "format", "io", "requirements", "serving", "llm"],
      children: {
        framework: { keys: ["name", "version"] },
        format: { keys: ["type", "entrypoint", "files"], children: { files: { keys: [], items: { keys: ["path", "size", "sha256"] } } } },
        io: { keys: ["inputs", "outputs"], children: { inputs: { keys: [], items: TENSOR_ORDER }, outputs: { keys: [], items: TENSOR_ORDER } } },
        requirements: { keys: ["memory", "gpu", "cpu", "runtime"] },
        serving: {
          keys: ["batching", "instances", "plugin"],
          children: { batching: { keys: ["max_batch_size", "max_queue_delay_us", "preferred_batch_sizes"] } },
        },
        llm: { keys: ["tokenizer", "chat_template", "generation_config", "context_length"] },
      },
    },
  },
};

function ordered(value: unknown, order: KeyOrder | undefined): unknown {
  if (Array.isArray(value)) return value.map((v) => ordered(v, order?.items));
  if (value === null || typeof value !== "object") return value;
  const obj = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const keys = [...(order?.keys ?? []).filter((k) => k in obj), ...Object.keys(obj).filter((k) => !(order?.keys ?? []).includes(k))];
  for (const k of keys) {
    if (obj[k] === undefined) continue;
    out[k] = ordered(obj[k], order?.children?.[k]);
  }
  return out;
}

/** Clean YAML for a manifest: keys in the order of the types, shapes as `[1, 3, 224, 224]`. */
export function stringifyManifest(m: AxonManifest | AxonManifestDraft): string {
  const doc = new Document(ordered(m, MANIFEST_ORDER));
  visit(doc, {
    Pair(_k, pair) {
      if (isPair(pair) && isScalar(pair.key) && (pair.key.value === "shape" || pair.key.value === "preferred_batch_sizes") && isSeq(pair.value)) {
        pair.value.flow = true;
      }
    },
  });
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}
