import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { AxonError } from "../src/axon/errors.js";
import {
  TENSOR_DTYPES,
  FRAMEWORKS,
  assertManifestSemantics,
  checkManifestSemantics,
  manifestSchema,
  parseManifest,
  readManifest,
  relativePathProblem,
  stringifyManifest,
  validateManifestObject,
  type AxonManifest,
  type ManifestIssue,
} from "../src/axon/manifest/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = [path.resolve(here, "../../test/fixtures/manifests"), path.resolve(here, "fixtures/manifests")].find((d) => existsSync(d))!;
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), "utf8");
const valid = fixture("valid.yaml");

/** Runs `fn`, asserts it throws an AxonError with `code`, returns the error. */
function throwsAxon(fn: () => unknown, code: string): AxonError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof AxonError, `expected AxonError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code} to be thrown`);
}
const errorsOf = (e: AxonError): ManifestIssue[] => e.details.errors as ManifestIssue[];

describe("schema file", () => {
  it("is draft 2020-12, closed at every level, and describes every field", () => {
    const s = manifestSchema();
    assert.equal(s.$schema, "https://json-schema.org/draft/2020-12/schema");
    const walk = (node: unknown, at: string): void => {
      if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${at}/${i}`));
      if (node === null || typeof node !== "object") return;
      const o = node as Record<string, unknown>;
      if (o.type === "object" || o.properties) assert.equal(o.additionalProperties, false, `${at} must be closed`);
      if (o.properties) {
        for (const [k, v] of Object.entries(o.properties as Record<string, Record<string, unknown>>)) {
          const described = typeof v.description === "string" || (typeof v.$ref === "string" && typeof (s.$defs[v.$ref.split("/").pop()!] as Record<string, unknown>).description === "string");
          assert.ok(described, `${at}/properties/${k} needs a description`);
        }
      }
      for (const [k, v] of Object.entries(o)) walk(v, `${at}/${k}`);
    };
    walk(s, "#");
  });

  it("lists the same dtypes and frameworks as types.ts", () => {
    const s = manifestSchema();
    assert.deepEqual(s.$defs.tensor.properties.dtype.enum, [...TENSOR_DTYPES]);
    assert.deepEqual(s.$defs.framework.properties.name.enum, [...FRAMEWORKS]);
  });
});

describe("parseManifest: valid manifests", () => {
  it("parses the full example", () => {
    const m = parseManifest(valid);
    assert.equal(m.apiVersion, "axon.mlos.io/v1");
    assert.equal(m.metadata.name, "resnet-mini");
    assert.equal(m.metadata.version, "1.2.0-rc.1+build.5");
    assert.equal(m.spec.framework.version, "17");
    assert.equal(m.spec.format.files.length, 2);
    assert.deepEqual(m.spec.io?.inputs[0]?.shape, ["batch", 3, 224, 224]);
    assert.deepEqual(m.spec.serving?.batching?.preferred_batch_sizes, [4, 8]);
  });

  it("parses an LLM manifest with an inline chat template", () => {
    const m = parseManifest(fixture("llm.yaml"));
    assert.equal(m.spec.llm?.tokenizer, "tokenizer.json");
    assert.equal(m.spec.llm?.context_length, 4096);
    assert.match(m.spec.llm?.chat_template ?? "", /\{% for m in messages %\}/);
  });

  it("accepts the draft form only with { draft: true }", () => {
    const d = parseManifest(fixture("draft.yaml"), "axon.yaml", { draft: true });
    assert.deepEqual(d.spec.format.files, [{ path: "model.onnx" }, { path: "data/weights.bin" }]);
    const n = parseManifest(fixture("draft-nofiles.yaml"), "axon.yaml", { draft: true });
    assert.equal(n.spec.format.files, undefined);

    const e = throwsAxon(() => parseManifest(fixture("draft.yaml")), "MANIFEST_INVALID");
    assert.match(e.message, /^axon\.yaml:15:9 spec\.format\.files\[0\]: must have required property 'size'$/);
    const e2 = throwsAxon(() => parseManifest(fixture("draft-nofiles.yaml")), "MANIFEST_INVALID");
    assert.match(e2.message, /^axon\.yaml:\d+:\d+ spec\.format: must have required property 'files'$/);
  });

  it("still validates everything else in draft mode", () => {
    const text = fixture("draft.yaml").replace("dtype: float32", "dtype: f32");
    const e = throwsAxon(() => parseManifest(text, "axon.yaml", { draft: true }), "MANIFEST_INVALID");
    assert.match(e.message, /spec\.io\.inputs\[0\]\.dtype: must be one of float32/);
  });
});

describe("parseManifest: YAML errors", () => {
  it("reports malformed YAML as MANIFEST_PARSE with line:col", () => {
    const e = throwsAxon(() => parseManifest(fixture("bad-syntax.yaml"), "models/x/axon.yaml"), "MANIFEST_PARSE");
    assert.match(e.message, /^models\/x\/axon\.yaml:\d+:\d+: \S.*/);
    assert.ok(!e.message.includes("\n"), "one line");
    assert.equal(e.details.file, "models/x/axon.yaml");
    assert.equal(typeof e.details.line, "number");
  });

  it("reports the exact position of a syntax error", () => {
    const e = throwsAxon(() => parseManifest('apiVersion: axon.mlos.io/v1\nkind: "Model\n'), "MANIFEST_PARSE");
    assert.match(e.message, /^axon\.yaml:3:1: Missing closing "quote$/);
    const t = throwsAxon(() => parseManifest("apiVersion: axon.mlos.io/v1\n\tkind: Model\n"), "MANIFEST_PARSE");
    assert.match(t.message, /^axon\.yaml:2:1: /);
  });

  it("rejects duplicate keys, naming the key and pointing at the second one", () => {
    const e = throwsAxon(() => parseManifest(fixture("duplicate-key.yaml")), "MANIFEST_PARSE");
    assert.equal(e.message, "axon.yaml:7:3: Map keys must be unique (duplicate key 'name')");
  });

  it("rejects several documents, unresolved aliases and an empty file", () => {
    throwsAxon(() => parseManifest(valid + "---\nkind: Model\n"), "MANIFEST_PARSE");
    const a = throwsAxon(() => parseManifest("apiVersion: *nope\n"), "MANIFEST_PARSE");
    assert.match(a.message, /^axon\.yaml:1:13: /);
    const empty = throwsAxon(() => parseManifest("# nothing\n"), "MANIFEST_INVALID");
    assert.equal(empty.message, "axon.yaml:1:1: the manifest is empty");
    const list = throwsAxon(() => parseManifest("- a\n"), "MANIFEST_INVALID");
    assert.equal(list.message, "axon.yaml:1:1: must be a mapping, got a list");
  });
});

describe("parseManifest: schema violations", () => {
  it("bad dtype: exact line:col, field path and allowed values", () => {
    const e = throwsAxon(() => parseManifest(fixture("bad-dtype.yaml")), "MANIFEST_INVALID");
    assert.ok(e.message.startsWith(`axon.yaml:32:16 spec.io.inputs[0].dtype: must be one of ${TENSOR_DTYPES.join(", ")}`), e.message);
    assert.deepEqual(
      { line: e.details.line, col: e.details.col, path: e.details.path },
      { line: 32, col: 16, path: "spec.io.inputs[0].dtype" },
    );
    const [first] = errorsOf(e);
    assert.deepEqual({ file: first?.file, line: first?.line, col: first?.col }, { file: "axon.yaml", line: 32, col: 16 });
  });

  it("missing required property: the parent mapping's position", () => {
    const e = throwsAxon(() => parseManifest(fixture("missing-name.yaml")), "MANIFEST_INVALID");
    assert.equal(e.message, "axon.yaml:5:3 metadata: must have required property 'name'");
  });

  it("unknown field: the key's position, with a suggestion", () => {
    const e = throwsAxon(() => parseManifest(fixture("unknown-field.yaml")), "MANIFEST_INVALID");
    assert.equal(e.message, "axon.yaml:6:3 metadata.nmae: unknown field 'nmae' (did you mean 'name'?)");
    // The missing `name` is reported too, after the typo that explains it.
    const all = errorsOf(e).map((i) => i.message);
    assert.deepEqual(all, ["unknown field 'nmae' (did you mean 'name'?)", "must have required property 'name'"]);
  });

  it("typos are errors at every level", () => {
    const cases: Array<[string, string, string]> = [
      ["kind: Model\n", "kind: Model\nkidn: Model\n", "kidn"],
      ["  framework:\n    name: onnx\n", "  framework:\n    name: onnx\n    verison: '1'\n", "spec.framework.verison"],
      ["      max_batch_size: 8\n", "      max_batch_size: 8\n      max_batch: 8\n", "spec.serving.batching.max_batch"],
      ["        size: 1024\n", "        size: 1024\n        digest: x\n", "spec.format.files[0].digest"],
      ["        description: RGB image, normalised\n", "        description: RGB image, normalised\n        dtyp: float32\n", "spec.io.inputs[0].dtyp"],
      ["    gpu: false\n", "    gpu: false\n    gpus: 1\n", "spec.requirements.gpus"],
    ];
    for (const [from, to, field] of cases) {
      assert.ok(valid.includes(from), from);
      const e = throwsAxon(() => parseManifest(valid.replace(from, to)), "MANIFEST_INVALID");
      assert.ok(e.message.includes(` ${field}: unknown field '${field.split(".").pop()!.replace(/\[\d+\]$/, "")}'`), e.message);
    }
  });

  it("bad version: schema pattern, and numbers that YAML reads as such", () => {
    const e = throwsAxon(() => parseManifest(fixture("bad-version.yaml")), "MANIFEST_INVALID");
    assert.match(e.message, /^axon\.yaml:7:12 metadata\.version: must be a semver version/);
    const n = throwsAxon(() => parseManifest(valid.replace("version: 1.2.0-rc.1+build.5", "version: 1.0")), "MANIFEST_INVALID");
    assert.equal(n.message, 'axon.yaml:7:12 metadata.version: must be a string, got the number 1.0 (write it in quotes: "1.0")');
    for (const bad of ["01.2.3", "1.2.3-", "v1.2.3", "1.2.3.4"]) {
      throwsAxon(() => parseManifest(valid.replace("1.2.0-rc.1+build.5", `"${bad}"`)), "MANIFEST_INVALID");
    }
  });

  it("bad sha256", () => {
    const e = throwsAxon(() => parseManifest(fixture("bad-sha256.yaml")), "MANIFEST_INVALID");
    assert.match(e.message, /^axon\.yaml:25:17 spec\.format\.files\[0\]\.sha256: must be 'sha256:' followed by 64 lowercase hex digits/);
    const upper = valid.replace("sha256:" + "a".repeat(64), "sha256:" + "A".repeat(64));
    throwsAxon(() => parseManifest(upper), "MANIFEST_INVALID");
  });

  it("a bare 64-hex sha256 (as sha256sum prints it) is accepted and read as sha256:<hex>", () => {
    const hex = "a".repeat(64);
    const bare = valid.replace(`sha256:${hex}`, hex);
    assert.ok(bare.includes(`sha256: ${hex}\n`));
    const m = parseManifest(bare);
    assert.equal(m.spec.format.files[0]!.sha256, `sha256:${hex}`);
    assert.deepEqual(m, parseManifest(valid));
    assert.ok(stringifyManifest(m).includes(`sha256: sha256:${hex}`));
    // The draft form (axon pack) and manifests built in code read it the same way.
    const draftText = fixture("draft.yaml").replace("- path: model.onnx\n", `- path: model.onnx\n        sha256: ${hex}\n`);
    const draft = parseManifest(draftText, "axon.yaml", { draft: true });
    assert.deepEqual(draft.spec.format.files, [{ path: "model.onnx", sha256: `sha256:${hex}` }, { path: "data/weights.bin" }]);
    const obj = structuredClone(parseManifest(valid)) as AxonManifest;
    obj.spec.format.files[1]!.sha256 = obj.spec.format.files[1]!.sha256.slice("sha256:".length);
    assert.equal(validateManifestObject(obj).spec.format.files[1]!.sha256, parseManifest(valid).spec.format.files[1]!.sha256);
  });

  it("a bare sha256 in upper case or of 63 digits is still refused, naming file:line:col and the field", () => {
    const hex = "a".repeat(64);
    const cases: Array<[string, string]> = [
      ["A".repeat(64), `"${"A".repeat(40)}..."`],
      ["a".repeat(63), `"${"a".repeat(40)}..."`],
      [`sha256:${"a".repeat(63)}`, `"sha256:${"a".repeat(33)}..."`],
      [`SHA256:${hex}`, `"SHA256:${"a".repeat(33)}..."`],
    ];
    for (const [digest, shown] of cases) {
      const e = throwsAxon(() => parseManifest(valid.replace(`sha256:${hex}`, digest), "models/x/axon.yaml"), "MANIFEST_INVALID");
      assert.equal(
        e.message,
        `models/x/axon.yaml:25:17 spec.format.files[0].sha256: must be 'sha256:' followed by 64 lowercase hex digits, or those 64 digits alone, got the string ${shown}`,
      );
      const [issue] = errorsOf(e);
      assert.deepEqual({ file: issue!.file, line: issue!.line, col: issue!.col, path: issue!.path }, { file: "models/x/axon.yaml", line: 25, col: 17, path: "spec.format.files[0].sha256" });
    }
  });

  it("apiVersion, kind, names, sizes, shapes, numbers", () => {
    const cases: Array<[string, string, RegExp]> = [
      ["apiVersion: axon.mlos.io/v1", "apiVersion: axon.mlos.io/v2", /^axon\.yaml:2:13 apiVersion: must be 'axon\.mlos\.io\/v1'/],
      ["kind: Model", "kind: Dataset", /^axon\.yaml:3:7 kind: must be 'Model'/],
      ["namespace: demo", "namespace: Demo", /metadata\.namespace: must be lowercase letters and digits/],
      ["name: resnet-mini", "name: resnet--mini", /metadata\.name: must be lowercase/],
      ["size: 1024", "size: -1", /spec\.format\.files\[0\]\.size: must be >= 0, got -1/],
      ["size: 1024", "size: 1.5", /spec\.format\.files\[0\]\.size: must be an integer/],
      ["shape: [-1, 1000]", "shape: [-2, 1000]", /^axon\.yaml:38:17 spec\.io\.outputs\[0\]\.shape\[0\]: must be a size .* or a dimension name/],
      ["shape: [-1, 1000]", "shape: [-1, 2x]", /spec\.io\.outputs\[0\]\.shape\[1\]: must be a size/],
      ["max_batch_size: 8", "max_batch_size: 0", /spec\.serving\.batching\.max_batch_size: must be >= 1/],
      ["max_queue_delay_us: 500", "max_queue_delay_us: -5", /max_queue_delay_us: must be >= 0/],
      ["instances: 2", "instances: 0", /spec\.serving\.instances: must be >= 1/],
      ["memory: 64Mi", "memory: lots", /spec\.requirements\.memory: must be a byte count/],
      ["name: onnx", "name: caffe", /spec\.framework\.name: must be one of onnx, pytorch/],
      ["homepage: https://example.com/resnet-mini", "homepage: example.com", /metadata\.homepage: must be an http/],
      ["tags: [vision, classification]", "tags: [vision, vision]", /metadata\.tags: has duplicate items/],
    ];
    for (const [from, to, re] of cases) {
      assert.ok(valid.includes(from), from);
      const e = throwsAxon(() => parseManifest(valid.replace(from, to)), "MANIFEST_INVALID");
      assert.match(e.message, re);
    }
  });

  it("an empty files list is invalid in the strict form", () => {
    const text = fixture("draft-nofiles.yaml").replace("    type: onnx\n", "    type: onnx\n    files: []\n");
    const e = throwsAxon(() => parseManifest(text), "MANIFEST_INVALID");
    assert.match(e.message, /spec\.format\.files: must list at least 1 item/);
  });

  it("collects every error in details.errors, in document order", () => {
    const text = valid.replace("kind: Model", "kind: Dataset").replace("dtype: float32", "dtype: x").replace("instances: 2", "instances: 0");
    const e = throwsAxon(() => parseManifest(text), "MANIFEST_INVALID");
    const errs = errorsOf(e);
    assert.deepEqual(errs.map((i) => i.path), ["kind", "spec.io.inputs[0].dtype", "spec.serving.instances"]);
    for (const i of errs) {
      assert.equal(i.file, "axon.yaml");
      assert.equal(typeof i.line, "number");
      assert.equal(typeof i.col, "number");
      assert.equal(typeof i.message, "string");
    }
  });
});

describe("semantic validation", () => {
  it("path traversal in files is PATH_ESCAPE with the manifest location", () => {
    const e = throwsAxon(() => parseManifest(fixture("path-traversal.yaml")), "PATH_ESCAPE");
    assert.equal(e.message, "axon.yaml:26:15 spec.format.files[1].path: unsafe path '../outside.txt': a '..' segment leaves the model folder");
  });

  it("rejects absolute, drive-letter, empty-segment and other unsafe paths", () => {
    const cases: Array<[string, RegExp]> = [
      ["/etc/passwd", /unsafe path '\/etc\/passwd': it is absolute/],
      ["C:/Windows/x.bin", /it starts with a drive letter/],
      ["c:x.bin", /it starts with a drive letter/],
      ["a//b", /unsafe path 'a\/\/b': it has an empty segment/],
      ["a/", /it has an empty segment/],
      ["a/../../b", /a '\.\.' segment leaves the model folder/],
      ["./a", /it has a '\.' segment/],
      ["a\\\\b", /backslash/],
    ];
    for (const [p, re] of cases) {
      const e = throwsAxon(() => parseManifest(valid.replace("path: labels/imagenet.txt", `path: "${p}"`)), "PATH_ESCAPE");
      assert.match(e.message, /^axon\.yaml:26:15 spec\.format\.files\[1\]\.path: /);
      assert.match(e.message, re);
    }
    assert.equal(relativePathProblem("a/b.c/d..e"), undefined);
    assert.equal(relativePathProblem(".hidden/x"), undefined);
  });

  it("entrypoint: safe and one of the files", () => {
    const e = throwsAxon(() => parseManifest(valid.replace("entrypoint: model.onnx", "entrypoint: other.onnx")), "MANIFEST_INVALID");
    assert.equal(e.message, "axon.yaml:21:17 spec.format.entrypoint: entrypoint 'other.onnx' is not one of spec.format.files");
    throwsAxon(() => parseManifest(valid.replace("entrypoint: model.onnx", "entrypoint: ../model.onnx")), "PATH_ESCAPE");
  });

  it("duplicate file paths, case clashes, file-vs-folder, axon.yaml itself", () => {
    const dup = throwsAxon(() => parseManifest(valid.replace("path: labels/imagenet.txt", "path: model.onnx")), "MANIFEST_INVALID");
    assert.equal(dup.message, "axon.yaml:26:15 spec.format.files[1].path: duplicate file path 'model.onnx' (also spec.format.files[0])");
    const cased = throwsAxon(() => parseManifest(valid.replace("path: labels/imagenet.txt", "path: Model.onnx")), "MANIFEST_INVALID");
    assert.match(cased.message, /differs only in case/);
    const folder = throwsAxon(() => parseManifest(valid.replace("path: labels/imagenet.txt", "path: model.onnx/x")), "MANIFEST_INVALID");
    assert.match(folder.message, /'model\.onnx' is listed as a file/);
    const self = throwsAxon(() => parseManifest(valid.replace("path: labels/imagenet.txt", "path: axon.yaml")), "MANIFEST_INVALID");
    assert.match(self.message, /is the manifest itself/);
  });

  it("io names unique", () => {
    const text = valid.replace("      - name: logits", "      - name: logits\n        dtype: float32\n        shape: [1]\n      - name: logits");
    const e = throwsAxon(() => parseManifest(text), "MANIFEST_INVALID");
    assert.match(e.message, /^axon\.yaml:39:15 spec\.io\.outputs\[1\]\.name: duplicate output name 'logits' \(also spec\.io\.outputs\[0\]\)$/);
    // The same name as an input and an output is fine.
    parseManifest(valid.replace("- name: logits", "- name: pixels"));
  });

  it("batching, runtime range and LLM file references", () => {
    throwsAxon(() => parseManifest(valid.replace("preferred_batch_sizes: [4, 8]", "preferred_batch_sizes: [4, 16]")), "MANIFEST_INVALID");
    throwsAxon(() => parseManifest(valid.replace('runtime: ">=0.1.0"', "runtime: not-a-range")), "MANIFEST_INVALID");
    const llm = fixture("llm.yaml");
    const t = throwsAxon(() => parseManifest(llm.replace("tokenizer: tokenizer.json", "tokenizer: vocab.json")), "MANIFEST_INVALID");
    assert.match(t.message, /spec\.llm\.tokenizer: tokenizer 'vocab\.json' is not one of spec\.format\.files/);
    throwsAxon(() => parseManifest(llm.replace("generation_config: generation_config.json", "generation_config: /etc/x.json")), "PATH_ESCAPE");
  });

  it("semver check via the semver package, also for objects built in code", () => {
    const m = parseManifest(valid);
    const bad = structuredClone(m) as AxonManifest;
    bad.metadata.version = "1.2";
    const issues = checkManifestSemantics(bad);
    assert.equal(issues.length, 1);
    assert.equal(issues[0]?.path, "metadata.version");
    assert.throws(() => assertManifestSemantics(bad), (e: unknown) => e instanceof AxonError && e.code === "MANIFEST_INVALID" && e.message.startsWith("axon.yaml metadata.version: "));
    const e = throwsAxon(() => validateManifestObject(bad), "MANIFEST_INVALID");
    assert.match(e.message, /^axon\.yaml metadata\.version: must be a semver version/);
    assert.deepEqual(validateManifestObject(m), m);
  });
});

describe("stringifyManifest", () => {
  it("round-trips through parseManifest", () => {
    for (const name of ["valid.yaml", "llm.yaml"]) {
      const m = parseManifest(fixture(name));
      const text = stringifyManifest(m);
      assert.deepEqual(parseManifest(text), m, name);
      assert.equal(stringifyManifest(parseManifest(text)), text, "stable");
    }
    const d = parseManifest(fixture("draft.yaml"), "axon.yaml", { draft: true });
    assert.deepEqual(parseManifest(stringifyManifest(d), "axon.yaml", { draft: true }), d);
  });

  it("writes keys in the order of the types, shapes in flow style, versions as strings", () => {
    const m = parseManifest(valid);
    // Shuffle key order: the output must not depend on it.
    const shuffled = JSON.parse(JSON.stringify({ spec: { io: m.spec.io, format: m.spec.format, serving: m.spec.serving, requirements: m.spec.requirements, framework: m.spec.framework }, metadata: { ...m.metadata }, kind: m.kind, apiVersion: m.apiVersion })) as AxonManifest;
    const text = stringifyManifest(shuffled);
    assert.equal(text, stringifyManifest(m));
    const keys = text.split("\n").filter((l) => /^\S/.test(l)).map((l) => l.split(":")[0]);
    assert.deepEqual(keys, ["apiVersion", "kind", "metadata", "spec"]);
    assert.ok(text.indexOf("  framework:") < text.indexOf("  format:") && text.indexOf("  format:") < text.indexOf("  io:"));
    assert.match(text, /shape: \[batch, 3, 224, 224\]/);
    assert.match(text, /version: "17"/);
    const v = structuredClone(m);
    v.metadata.version = "1.0.0";
    v.spec.framework.version = "1.0";
    assert.equal(parseManifest(stringifyManifest(v)).spec.framework.version, "1.0");
  });
});

describe("readManifest", () => {
  it("reads DIR/axon.yaml and names it in errors", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "axon-manifest-"));
    try {
      await assert.rejects(readManifest(dir), (e: unknown) => e instanceof AxonError && e.code === "MANIFEST_FILE" && e.message === `no axon.yaml in ${dir}`);
      await writeFile(path.join(dir, "axon.yaml"), valid);
      assert.equal((await readManifest(dir)).metadata.name, "resnet-mini");
      assert.equal((await readManifest(path.join(dir, "axon.yaml"))).metadata.name, "resnet-mini");
      await writeFile(path.join(dir, "axon.yaml"), fixture("bad-dtype.yaml"));
      await assert.rejects(readManifest(dir), (e: unknown) => e instanceof AxonError && e.message.startsWith(`${path.join(dir, "axon.yaml")}:32:16 spec.io.inputs[0].dtype: `));
      await writeFile(path.join(dir, "axon.yaml"), fixture("draft.yaml"));
      const d = await readManifest(dir, { draft: true });
      assert.equal(d.spec.format.files?.length, 2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
