import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import YAML from "yaml";
import { AxonError } from "../src/axon/errors.js";
import { detectModel, refineDetection } from "../src/axon/hf/detect.js";
import { hfFileSelected, hfIdentity, hfNamePart, pullFromHub, type PullFromHubOptions } from "../src/axon/hf/hf-adapter.js";
import { HubClient } from "../src/axon/hf/hub-client.js";
import { parseManifest } from "../src/axon/manifest/parse.js";
import type { AxonManifest } from "../src/axon/manifest/types.js";
import { AxonPaths } from "../src/axon/paths.js";
import { LocalStore } from "../src/axon/store/local-store.js";
import { bytes, FakeHub, type FakeFile } from "./helpers/fake-hub.js";

const TOKEN = "hf_SeCrEt_tOkEn_0123456789";
const sha = (b: Buffer | string): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

const onnxWeights = bytes(300_000, 7);
const quantWeights = bytes(120_000, 9);
const config = JSON.stringify({ architectures: ["TinyNet"], max_position_embeddings: 2048 });
const tokenizerConfig = JSON.stringify({ chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}", model_max_length: 1e30 });
const tinyFiles: FakeFile[] = [
  { path: ".gitattributes", content: "*.onnx filter=lfs diff=lfs merge=lfs -text\n" },
  { path: "README.md", content: "---\nlicense: mit\n---\n# TinyNet\n" },
  { path: "config.json", content: config },
  { path: "model.onnx", content: onnxWeights, lfs: true },
  { path: "onnx/model_quantized.onnx", content: quantWeights, lfs: true },
  { path: "tokenizer.json", content: JSON.stringify({ version: "1.0", model: { type: "BPE" } }) },
  { path: "tokenizer_config.json", content: tokenizerConfig },
  { path: "generation_config.json", content: JSON.stringify({ max_new_tokens: 32 }) },
];
const v2Config = JSON.stringify({ architectures: ["TinyNet"], max_position_embeddings: 4096, v: 2 });

let hub: FakeHub;
let homes: string[] = [];

async function home(): Promise<{ paths: AxonPaths; store: LocalStore }> {
  const dir = await mkdtemp(path.join(tmpdir(), "axon-hf-"));
  homes.push(dir);
  const paths = new AxonPaths(dir);
  return { paths, store: new LocalStore(paths) };
}

function client(token?: string): HubClient {
  return new HubClient({ endpoint: hub.endpoint, ...(token ? { token } : { token: "" }), retryBaseMs: 10 });
}

async function pull(o: Partial<PullFromHubOptions> & { org: string; name: string }): Promise<Awaited<ReturnType<typeof pullFromHub>> & { store: LocalStore; paths: AxonPaths }> {
  const h = o.store && o.paths ? { store: o.store, paths: o.paths } : await home();
  const r = await pullFromHub({ client: client(), ...h, ...o });
  return { ...r, ...h };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<AxonError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof AxonError, `expected an AxonError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return e;
  }
  assert.fail(`expected ${code}`);
}

async function storedBlobs(paths: AxonPaths): Promise<string[]> {
  return (await readdir(paths.blobs).catch(() => [] as string[])).map((h) => `sha256:${h}`);
}

before(async () => {
  hub = await FakeHub.start([
    { id: "acme/TinyNet", branches: { main: tinyFiles, v2: tinyFiles.map((f) => (f.path === "config.json" ? { ...f, content: v2Config } : f)) }, pipelineTag: "text-generation", license: "mit" },
    { id: "acme/private-net", private: true, token: TOKEN, branches: { main: [{ path: "model.onnx", content: bytes(50_000, 3), lfs: true }, { path: "config.json", content: "{}" }] } },
    { id: "acme/flaky", branches: { main: [{ path: "model.onnx", content: bytes(400_000, 5), lfs: true }, { path: "notes.txt", content: bytes(90_000, 11) }] } },
  ]);
});

afterEach(() => {
  hub.clearFaults();
  hub.clearLog();
  delete process.env.HF_TOKEN;
  delete process.env.HF_ENDPOINT;
});

after(async () => {
  await hub.close();
  for (const d of homes) await rm(d, { recursive: true, force: true });
  homes = [];
});

describe("pullFromHub", () => {
  test("installs an ONNX repo: blobs in the store, named in the layout, axon.yaml generated", async () => {
    const commit = hub.commitOf("acme/TinyNet");
    const progress = new Map<string, number>();
    const r = await pull({ org: "acme", name: "TinyNet", onProgress: (e) => progress.set(e.file, (progress.get(e.file) ?? 0) + e.delta) });
    assert.equal(r.commit, commit);
    assert.equal(r.repository, "hf/acme/tinynet");
    assert.equal(r.tag, `0.0.0-rev-${commit.slice(0, 12)}`);
    const ref = await r.store.find("hf/acme/tinynet", r.tag);
    assert.ok(ref, "named in index.json");
    assert.equal(ref.digest, r.manifestDigest);
    assert.equal(ref.source, "hf");

    const blobs = await storedBlobs(r.paths);
    for (const f of tinyFiles) assert.ok(blobs.includes(sha(f.content)), `${f.path} is in store/blobs`);
    assert.equal(progress.get("model.onnx"), onnxWeights.byteLength);

    const { json } = await r.store.readManifest(r.manifestDigest);
    const yamlLayer = json.layers.find((l) => l.mediaType === "application/vnd.mlos.axon.manifest.v1+yaml")!;
    const yamlText = await readFile(r.store.blobs.path(yamlLayer.digest), "utf8");
    const m = YAML.parse(yamlText) as AxonManifest;
    assert.deepEqual(parseManifest(yamlText, "axon.yaml"), m, "the generated axon.yaml passes the schema");
    assert.deepEqual(m, r.manifest);
    assert.equal(m.metadata.namespace, "hf.acme");
    assert.equal(m.metadata.name, "tinynet");
    assert.equal(m.metadata.version, r.tag);
    assert.equal(m.metadata.source, `${hub.endpoint}/acme/TinyNet`);
    assert.equal(m.metadata.license, "mit");
    assert.match(m.metadata.description!, /^Hugging Face model acme\/TinyNet at revision main/);
    assert.ok(m.metadata.tags!.includes("onnx") && m.metadata.tags!.includes("text-generation"));
    assert.deepEqual(m.spec.framework, { name: "onnx" });
    assert.equal(m.spec.format.type, "onnx");
    assert.equal(m.spec.format.entrypoint, "model.onnx");
    assert.deepEqual(
      m.spec.format.files,
      [...tinyFiles].sort((a, b) => (a.path < b.path ? -1 : 1)).map((f) => ({ path: f.path, size: Buffer.byteLength(f.content), sha256: sha(f.content) })),
    );
    assert.deepEqual(m.spec.llm, {
      tokenizer: "tokenizer.json",
      generation_config: "generation_config.json",
      chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}",
      context_length: 2048,
    });
    // LFS bytes came from the CDN, small files from the hub.
    assert.equal(hub.fileRequests("model.onnx", "cdn").length, 1);
    assert.equal(hub.fileRequests("config.json", "hub").length, 1);

    // Again, same commit: nothing is downloaded, the same manifest is named.
    hub.clearLog();
    const again = await pullFromHub({ client: client(), paths: r.paths, store: r.store, org: "acme", name: "TinyNet" });
    assert.equal(again.manifestDigest, r.manifestDigest);
    assert.equal(again.transferred, 0);
    assert.deepEqual(hub.requests.filter((q) => q.file !== undefined), []);
  });

  test("--include / --exclude globs", async () => {
    const a = await pull({ org: "acme", name: "TinyNet", include: ["*.onnx", "config.json"] });
    assert.deepEqual(a.manifest.spec.format.files.map((f) => f.path), ["config.json", "model.onnx", "onnx/model_quantized.onnx"]);
    assert.equal(a.manifest.spec.llm?.tokenizer, undefined);

    hub.clearLog();
    const b = await pull({ org: "acme", name: "TinyNet", exclude: ["onnx/", "*.md", ".git*", "model.onnx"] });
    assert.deepEqual(b.manifest.spec.format.files.map((f) => f.path), ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]);
    assert.equal(b.manifest.spec.framework.name, "other");
    assert.equal(hub.fileRequests("model.onnx").length, 0, "excluded files are not fetched");

    const c = await pull({ org: "acme", name: "TinyNet", include: ["onnx/**"] });
    assert.equal(c.manifest.spec.format.entrypoint, "onnx/model_quantized.onnx");

    await rejectsWith(pull({ org: "acme", name: "TinyNet", include: ["*.gguf"] }), "BAD_ARGUMENT");
    assert.equal(hfFileSelected("a/b/c.safetensors", ["*.safetensors"]), true);
    assert.equal(hfFileSelected("a/b/c.safetensors", ["a/*.safetensors"]), false);
    assert.equal(hfFileSelected("a/b/c.safetensors", undefined, ["a/"]), false);
  });

  test("private repo: REGISTRY_AUTH without a token, works with HF_TOKEN (hub only, never the CDN)", async () => {
    const e1 = await rejectsWith(pull({ org: "acme", name: "private-net" }), "REGISTRY_AUTH");
    assert.match(e1.message, /HF_TOKEN/);

    const e2 = await rejectsWith(pull({ org: "acme", name: "private-net", client: client("hf_wrong_token_456") }), "REGISTRY_AUTH");
    assert.ok(!e2.message.includes("hf_wrong_token_456") && !JSON.stringify(e2.details).includes("hf_wrong_token_456"));
    assert.ok(!String(e2.stack).includes("hf_wrong_token_456"));

    hub.clearLog();
    process.env.HF_TOKEN = TOKEN;
    process.env.HF_ENDPOINT = hub.endpoint;
    const h = await home();
    const r = await pullFromHub({ ...h, org: "acme", name: "private-net" });
    assert.equal(r.manifest.spec.format.files.length, 2);
    const hubReqs = hub.requests.filter((q) => q.server === "hub");
    const cdnReqs = hub.requests.filter((q) => q.server === "cdn");
    assert.ok(hubReqs.length >= 3 && hubReqs.every((q) => q.authorization === `Bearer ${TOKEN}`));
    assert.equal(cdnReqs.length, 1);
    assert.equal(cdnReqs[0]!.authorization, undefined, "the token is not forwarded to the CDN host");
  });

  test("a corrupt LFS file fails with DIGEST_MISMATCH and leaves no blob", async () => {
    hub.fault({ kind: "corrupt", repo: "acme/flaky", path: "model.onnx", times: Infinity });
    const h = await home();
    const e = await rejectsWith(pullFromHub({ client: client(), ...h, org: "acme", name: "flaky", include: ["model.onnx"] }), "DIGEST_MISMATCH");
    assert.ok(!e.message.includes(TOKEN));
    assert.deepEqual(await storedBlobs(h.paths), []);
    assert.deepEqual(await h.store.refs(), []);
    assert.deepEqual((await readdir(h.paths.tmp).catch(() => [] as string[])).filter((n) => n.endsWith(".partial")), []);
  });

  test("a truncated download resumes with a Range request", async () => {
    hub.fault({ kind: "truncate", repo: "acme/flaky", path: "model.onnx" });
    hub.fault({ kind: "truncate", repo: "acme/flaky", path: "notes.txt" });
    const r = await pull({ org: "acme", name: "flaky" });
    const lfs = hub.fileRequests("model.onnx", "cdn");
    assert.equal(lfs.length, 2);
    assert.equal(lfs[0]!.range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(lfs[1]!.range ?? "")?.[1]);
    assert.ok(from > 0 && from < 400_000, `resumed from byte ${from}`);
    const hubSmall = hub.fileRequests("notes.txt", "hub");
    assert.equal(hubSmall.length, 2);
    assert.match(hubSmall[1]!.range ?? "", /^bytes=[1-9]\d*-$/);
    const blobs = await storedBlobs(r.paths);
    assert.ok(blobs.includes(sha(bytes(400_000, 5))));
    assert.ok(blobs.includes(sha(bytes(90_000, 11))));
  });

  test("500 and 429 (Retry-After) once are retried", async () => {
    hub.fault({ kind: "500", repo: "acme/flaky", path: "@api" });
    hub.fault({ kind: "500", repo: "acme/flaky", path: "model.onnx" });
    hub.fault({ kind: "429", repo: "acme/flaky", path: "notes.txt" });
    const t0 = Date.now();
    const r = await pull({ org: "acme", name: "flaky" });
    assert.ok(Date.now() - t0 >= 900, "waited for Retry-After");
    assert.equal(r.manifest.spec.format.files.length, 2);
    assert.deepEqual(hub.requests.filter((q) => q.url.startsWith("/api/")).map((q) => q.status), [500, 200]);
    assert.deepEqual(hub.fileRequests("model.onnx", "cdn").map((q) => q.status), [500, 200]);
    assert.deepEqual(hub.fileRequests("notes.txt", "hub").map((q) => q.status), [429, 200]);
  });

  test("500 for good gives HF_ERROR after the retries", async () => {
    hub.fault({ kind: "500", repo: "acme/flaky", path: "@api", times: Infinity });
    const e = await rejectsWith(pullFromHub({ client: new HubClient({ endpoint: hub.endpoint, token: "", retries: 2, retryBaseMs: 5 }), ...(await home()), org: "acme", name: "flaky" }), "HF_ERROR");
    assert.equal(e.details.status, 500);
    assert.equal(hub.requests.length, 3);
  });

  test("missing repo or revision is NOT_FOUND", async () => {
    const e1 = await rejectsWith(pull({ org: "acme", name: "nope" }), "NOT_FOUND");
    assert.match(e1.message, /acme\/nope/);
    const e2 = await rejectsWith(pull({ org: "acme", name: "TinyNet", revision: "no-such-branch" }), "NOT_FOUND");
    assert.match(e2.message, /no-such-branch/);
    assert.match(e2.message, /acme\/TinyNet/);
    await rejectsWith(pull({ org: "acme", name: "bad--name" }), "BAD_REFERENCE");
  });

  test("revision pinning: a branch, and a commit", async () => {
    const v2 = hub.commitOf("acme/TinyNet", "v2");
    const main = hub.commitOf("acme/TinyNet", "main");
    assert.notEqual(v2, main);
    const r = await pull({ org: "acme", name: "TinyNet", revision: "v2", include: ["config.json"] });
    assert.equal(r.commit, v2);
    assert.equal(r.tag, `0.0.0-rev-${v2.slice(0, 12)}`);
    assert.equal(r.manifest.spec.format.files[0]!.sha256, sha(v2Config));
    assert.match(r.manifest.metadata.description!, /at revision v2 \(commit [0-9a-f]{40}\)/);
    // Files are fetched by commit, never by the branch name.
    assert.ok(hub.fileRequests("config.json").every((q) => q.url.includes(`/resolve/${v2}/`)));

    const p = await pull({ org: "acme", name: "TinyNet", revision: main, include: ["config.json"], paths: r.paths, store: r.store });
    assert.equal(p.commit, main);
    assert.equal(p.manifest.spec.format.files[0]!.sha256, sha(config));
    assert.deepEqual((await r.store.tags("hf/acme/tinynet")).sort(), [`0.0.0-rev-${main.slice(0, 12)}`, `0.0.0-rev-${v2.slice(0, 12)}`].sort());
  });
});

describe("HubClient", () => {
  test("openFile follows the LFS redirect, reads the hub headers and honours Range", async () => {
    const c = client();
    const info = await c.modelInfo("acme/TinyNet");
    const f = info.files.find((x) => x.path === "model.onnx")!;
    assert.equal(f.lfsSha256, sha(onnxWeights).slice(7));
    assert.equal(f.size, onnxWeights.byteLength);
    const r = await c.openFile("acme/TinyNet", info.sha, "model.onnx", 1000);
    const chunks: Buffer[] = [];
    for await (const b of r.body) chunks.push(Buffer.from(b));
    assert.equal(r.status, 206);
    assert.equal(r.offset, 1000);
    assert.equal(r.size, onnxWeights.byteLength);
    assert.equal(r.commit, info.sha);
    assert.equal(r.linkedEtag, f.lfsSha256);
    assert.equal(r.linkedSize, onnxWeights.byteLength);
    assert.equal(r.redirected, true);
    assert.ok(Buffer.concat(chunks).equals(onnxWeights.subarray(1000)));
    const small = await c.openFile("acme/TinyNet", info.sha, "config.json");
    assert.equal(small.status, 200);
    assert.equal(small.redirected, false);
    assert.equal(small.etag, info.files.find((x) => x.path === "config.json")!.blobId);
    for await (const _ of small.body) void _;
    await rejectsWith(c.openFile("acme/TinyNet", info.sha, "missing.bin"), "NOT_FOUND");
  });
});

describe("detect", () => {
  const d = (...paths: string[]) => detectModel(paths.map((p) => ({ path: p })));
  test("framework, format and entrypoint from names", () => {
    assert.deepEqual([d("onnx/model.onnx", "onnx/model_fp16.onnx", "model.safetensors").framework, d("onnx/model.onnx", "onnx/model_fp16.onnx").entrypoint], ["onnx", "onnx/model.onnx"]);
    assert.equal(d("weights/encoder.onnx").entrypoint, "weights/encoder.onnx");
    assert.deepEqual(pickFF(d("traced.pt")), ["pytorch", "torchscript", "traced.pt"]);
    assert.deepEqual(pickFF(d("model.json", "group1-shard1of2.bin", "group1-shard2of2.bin")), ["tfjs", "tfjs-graph", "model.json"]);
    assert.deepEqual(pickFF(d("saved_model/saved_model.pb", "saved_model/variables/variables.index")), ["tensorflow", "savedmodel", "saved_model/saved_model.pb"]);
    assert.deepEqual(pickFF(d("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json")), ["safetensors", "safetensors", "model.safetensors.index.json"]);
    assert.deepEqual(pickFF(d("tiny-q4_k_m.gguf", "tiny-q8_0.gguf")), ["gguf", "gguf", "tiny-q4_k_m.gguf"]);
    assert.deepEqual(pickFF(d("pytorch_model.bin", "config.json")), ["other", "other", undefined]);
    assert.deepEqual(d("model.gguf", "tokenizer.json", "chat_template.jinja").llm, { tokenizer: "tokenizer.json", chat_template: "chat_template.jinja" });
  });
  test("refinement reads model.json and tokenizer_config.json", async () => {
    const files = [{ path: "model.json" }, { path: "w.bin" }, { path: "tokenizer_config.json" }];
    const texts: Record<string, string> = {
      "model.json": JSON.stringify({ format: "layers-model", modelTopology: {} }),
      "tokenizer_config.json": JSON.stringify({ chat_template: [{ name: "tool_use", template: "T" }, { name: "default", template: "D {{ x }}" }], model_max_length: 512 }),
    };
    const r = await refineDetection(detectModel(files), files, async (p) => texts[p]);
    assert.equal(r.format, "tfjs-layers");
    assert.deepEqual(r.llm, { chat_template: "D {{ x }}", context_length: 512 });
  });
  test("names for the store", () => {
    assert.equal(hfNamePart("Qwen2.5-0.5B_Instruct"), "qwen2.5-0.5b_instruct");
    assert.equal(hfNamePart("weird__name.-x"), "weird_name.x");
    assert.deepEqual(hfIdentity("Meta-Llama", "Llama-3.2-1B", "0123456789abcdef0123456789abcdef01234567"), {
      repository: "hf/meta-llama/llama-3.2-1b",
      namespace: "hf.meta-llama",
      name: "llama-3.2-1b",
      version: "0.0.0-rev-0123456789ab",
    });
  });
});

function pickFF(x: ReturnType<typeof detectModel>): [string, string, string | undefined] {
  return [x.framework, x.format, x.entrypoint];
}
