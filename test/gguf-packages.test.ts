// GGUF models as Axon packages: the header reader, `axon pack` of a folder holding a .gguf file
// (the manifest written from the file's metadata), and one quantisation of a multi-quantisation
// Hugging Face repository installed with --include; each then loaded and generating.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import YAML from "yaml";
import { Axon, Runtime } from "mlos";
import { readGgufHeader, summarizeGguf } from "../src/axon/gguf/gguf-header.js";
import type { AxonManifest } from "../src/axon/manifest/types.js";
import { FakeHub } from "./helpers/fake-hub.js";
import { ggufModels, ggufSkip } from "./helpers/gguf-models.js";

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "run.js");

describe("GGUF packages", { skip: ggufSkip }, () => {
  let models: ReturnType<typeof ggufModels>;
  const scratch: string[] = [];
  const tmp = (prefix = "mlos-gguf-pkg-") => {
    const d = mkdtempSync(path.join(tmpdir(), prefix));
    scratch.push(d);
    return d;
  };
  before(() => {
    models = ggufModels();
  });
  after(() => {
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it("reads a GGUF header: architecture, context length, chat template, quantisation; arrays skipped", async () => {
    const h = await readGgufHeader(models.tinyLlama3);
    assert.equal(h.version, 3);
    assert.equal(h.tensorCount, 21n);
    const tokens = h.metadata.get("tokenizer.ggml.tokens") as { type: string; length: number };
    assert.deepEqual(tokens, { type: "array", elementType: 8, length: 128256 });
    const s = summarizeGguf(h);
    assert.equal(s.architecture, "llama");
    assert.equal(s.contextLength, 1024);
    assert.equal(s.quantization, "F16");
    assert.equal(s.name, "tiny-llama3");
    assert.match(s.chatTemplate!, /<\|start_header_id\|>/);
    assert.equal(summarizeGguf(await readGgufHeader(models.tinyLlamaQ8)).quantization, "Q8_0");
  });

  it("refuses a file that is not GGUF and a header cut short, naming the file", async () => {
    const d = tmp();
    const notGguf = path.join(d, "x.gguf");
    writeFileSync(notGguf, "GGML and something else");
    await assert.rejects(readGgufHeader(notGguf), { code: "MANIFEST_FILE", message: /x\.gguf: not a GGUF file/ });
    const cut = path.join(d, "cut.gguf");
    writeFileSync(cut, readFileSync(models.tinyLlama).subarray(0, 5000));
    await assert.rejects(readGgufHeader(cut), { code: "MANIFEST_FILE", message: /cut\.gguf: the GGUF header is truncated/ });
  });

  it("packs a folder holding a .gguf file into a manifest from its metadata, and serves it", async () => {
    const home = tmp("axon-home-");
    const dir = tmp();
    copyFileSync(models.tinyLlama3, path.join(dir, "Tiny-Llama3-F16.gguf"));
    const r = spawnSync(process.execPath, [CLI, "pack", dir, "--json"], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { reference: string; path: string };
    assert.equal(out.reference, "local/tiny-llama3-f16@1.0.0", "named from the file");
    const m = YAML.parse(readFileSync(path.join(out.path, "axon.yaml"), "utf8")) as AxonManifest;
    assert.equal(m.spec.framework.name, "gguf");
    assert.equal(m.spec.format.type, "gguf");
    assert.equal(m.spec.format.entrypoint, "Tiny-Llama3-F16.gguf");
    assert.equal(m.spec.llm?.task, "text-generation");
    assert.equal(m.spec.llm?.context_length, 1024);
    assert.equal(m.spec.llm?.chat_template, summarizeGguf(await readGgufHeader(models.tinyLlama3)).chatTemplate);
    assert.equal(m.spec.llm?.tokenizer, undefined, "the vocabulary is in the file");
    for (const t of ["gguf", "llama", "f16", "text-generation"]) assert.ok(m.metadata.tags?.includes(t), `tag ${t} in ${m.metadata.tags?.join()}`);
    const runtime = new Runtime({ axon: new Axon({ home }) });
    const llm = await runtime.load("local/tiny-llama3-f16@1", { intraOpThreads: 1 });
    try {
      assert.equal(llm.plugin, "llamacpp");
      const c = await llm.chat([{ role: "user", content: "Hello!" }], { maxTokens: 4, temperature: 0, ignoreEos: true });
      assert.equal(c.choices[0]!.tokenIds.length, 4);
    } finally {
      await llm.dispose();
    }
    // --as names it instead.
    const r2 = spawnSync(process.execPath, [CLI, "pack", dir, "--as", "nlp/llama3-tiny@2.0.0", "--json"], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.equal(r2.status, 0, r2.stderr);
    assert.equal((JSON.parse(r2.stdout) as { reference: string }).reference, "nlp/llama3-tiny@2.0.0");
  });

  it("refuses to guess between several quantisations in one folder", async () => {
    const home = tmp("axon-home-");
    const r = spawnSync(process.execPath, [CLI, "pack", path.dirname(models.tinyLlama)], { env: { ...process.env, AXON_HOME: home }, encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /several GGUF files \(tiny-llama-F32\.gguf, tiny-llama-Q8_0\.gguf\)/);
  });

  it("installs one quantisation of a multi-quantisation Hugging Face repository with --include", async () => {
    const hub = await FakeHub.start([
      {
        id: "acme/tiny-llama-GGUF",
        license: "apache-2.0",
        branches: {
          main: [
            { path: "README.md", content: "# tiny llama, two quantisations\n" },
            { path: "tiny-llama-F32.gguf", content: readFileSync(models.tinyLlama), lfs: true },
            { path: "tiny-llama-Q8_0.gguf", content: readFileSync(models.tinyLlamaQ8), lfs: true },
          ],
        },
      },
    ]);
    try {
      const home = tmp("axon-home-");
      process.env.HF_ENDPOINT = hub.endpoint;
      process.env.HF_TOKEN = "";
      const axon = new Axon({ home });
      const installed = await axon.install("hf/acme/tiny-llama-GGUF@main", { include: ["*Q8_0.gguf"] });
      const manifest = YAML.parse(readFileSync(path.join(installed.record.path, "axon.yaml"), "utf8")) as AxonManifest;
      assert.deepEqual(
        manifest.spec.format.files.map((f) => f.path),
        ["tiny-llama-Q8_0.gguf"],
      );
      assert.equal(manifest.spec.format.entrypoint, "tiny-llama-Q8_0.gguf");
      assert.equal(manifest.spec.llm?.context_length, 1024);
      assert.match(manifest.spec.llm?.chat_template ?? "", /\[INST\]/);
      assert.ok(manifest.metadata.tags?.includes("q8_0"));
      assert.ok(!hub.requests.some((l) => l.file === "tiny-llama-F32.gguf"), "the other quantisation was not downloaded");
      // Loaded by the reference it was installed under, as any model.
      const runtime = new Runtime({ axon });
      const llm = await runtime.load(installed.reference, { intraOpThreads: 1 });
      try {
        assert.equal(llm.plugin, "llamacpp");
        const g = await llm.generate("Once upon a time", { maxTokens: 4, temperature: 0, ignoreEos: true });
        assert.equal(g.choices[0]!.tokenIds.length, 4);
      } finally {
        await llm.dispose();
      }
    } finally {
      delete process.env.HF_ENDPOINT;
      delete process.env.HF_TOKEN;
      await hub.close();
    }
  });
});
