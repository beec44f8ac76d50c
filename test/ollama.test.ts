// Ollama's model artifacts: its Go chat templates rewritten as Jinja, and an Ollama-format
// artifact (made here: a GGUF model layer, template, params, system and license layers with
// Ollama's media types, a Docker v2 manifest) pushed to a real registry, installed with `axon
// install` as a GGUF package, and served.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { Template } from "@huggingface/jinja";
import YAML from "yaml";
import { Axon, Runtime } from "mlos";
import { AxonError } from "../src/axon/errors.js";
import type { AxonManifest } from "../src/axon/manifest/types.js";
import { ollamaTemplateToJinja, UnsupportedTemplate } from "../src/axon/oci/ollama-template.js";
import { OciRegistryClient } from "../src/axon/registry/oci-client.js";
import { ggufModels, ggufSkip } from "./helpers/gguf-models.js";
import { registryAvailable, startRegistry, type StartedRegistry } from "./helpers/registry.js";

/** Llama 3's template as Ollama's library writes it (range over .Messages, $last, eq). */
const LLAMA3 = `{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- end }}`;

/** A legacy template (.System / .Prompt / .Response), ChatML. */
const CHATML = `{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
`;

const render = (jinja: string, messages: Array<{ role: string; content: string }>) => new Template(jinja).render({ messages, add_generation_prompt: true });

describe("Ollama chat templates as Jinja", () => {
  it("renders a .Messages template as Ollama does, system prompt first, generation prompt last", () => {
    const j = ollamaTemplateToJinja(LLAMA3);
    assert.equal(
      render(j, [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello" },
        { role: "user", content: "Again" },
      ]),
      "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    // Consecutive messages of one role are merged, as Ollama's collate does.
    assert.match(render(j, [{ role: "user", content: "a" }, { role: "user", content: "b" }]), /user<\|end_header_id\|>\n\na\n\nb<\|eot_id\|>/);
  });

  it("renders a legacy template once per turn, the last one cut where the response starts", () => {
    const j = ollamaTemplateToJinja(CHATML);
    assert.equal(
      render(j, [
        { role: "system", content: "S" },
        { role: "user", content: "U1" },
        { role: "assistant", content: "A1" },
        { role: "user", content: "U2" },
      ]),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  it("adds the model's default system prompt when the messages have none", () => {
    for (const t of [LLAMA3, CHATML]) {
      const j = ollamaTemplateToJinja(t, { defaultSystem: "You are a llama." });
      assert.match(render(j, [{ role: "user", content: "Hi" }]), /You are a llama\./);
      assert.doesNotMatch(render(j, [{ role: "system", content: "Mine." }, { role: "user", content: "Hi" }]), /You are a llama\./);
    }
  });

  it("refuses what it does not convert, saying what", () => {
    assert.throws(() => ollamaTemplateToJinja("{{ json .Tools }}"), (e: Error) => e instanceof UnsupportedTemplate && /json/.test(e.message));
    assert.throws(() => ollamaTemplateToJinja("{{ with .System }}x{{ end }}"), UnsupportedTemplate);
    assert.throws(() => ollamaTemplateToJinja("{{ if .System }}x"), /not closed/);
  });
});

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

describe("Ollama artifacts from an OCI registry", { skip: ggufSkip || (registryAvailable() ? false : "docker-registry is not installed") }, () => {
  let registry: StartedRegistry;
  let models: ReturnType<typeof ggufModels>;
  const homes: string[] = [];
  const home = () => {
    const d = mkdtempSync(path.join(tmpdir(), "axon-ollama-"));
    homes.push(d);
    return d;
  };

  /** Pushes an Ollama-format model: Docker v2 manifest, Ollama's config and layer media types. */
  async function pushOllama(repo: string, tag: string, layers: Array<{ mediaType: string; bytes: Buffer }>): Promise<void> {
    const client = new OciRegistryClient({ url: registry.url });
    const config = Buffer.from(JSON.stringify({ model_format: "gguf", model_family: "llama", model_families: ["llama"], model_type: "tiny", file_type: "F16", architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: layers.map((l) => sha(l.bytes)) } }));
    for (const b of [config, ...layers.map((l) => l.bytes)]) await client.pushBlob(repo, sha(b), b.length, () => Readable.from([b]));
    const manifest = {
      schemaVersion: 2,
      mediaType: "application/vnd.docker.distribution.manifest.v2+json",
      config: { mediaType: "application/vnd.docker.container.image.v1+json", digest: sha(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: sha(l.bytes), size: l.bytes.length })),
    };
    await client.pushManifest(repo, tag, Buffer.from(JSON.stringify(manifest)), manifest.mediaType);
    await client.close();
  }

  before(async () => {
    models = ggufModels();
    registry = await startRegistry();
  });
  after(async () => {
    await registry?.stop();
    for (const d of homes) rmSync(d, { recursive: true, force: true });
  });

  it("installs an Ollama model as a GGUF package: template, parameters, system prompt and license mapped", async () => {
    const params = { stop: ["<|eot_id|>", "<|start_header_id|>"], temperature: 0, top_k: 20, num_ctx: 512, num_predict: 6, mirostat: 0 };
    await pushOllama("library/tiny-llama3", "8b", [
      { mediaType: "application/vnd.ollama.image.model", bytes: readFileSync(models.tinyLlama3) },
      { mediaType: "application/vnd.ollama.image.template", bytes: Buffer.from(LLAMA3) },
      { mediaType: "application/vnd.ollama.image.system", bytes: Buffer.from("You are a tiny llama.") },
      { mediaType: "application/vnd.ollama.image.params", bytes: Buffer.from(JSON.stringify(params)) },
      { mediaType: "application/vnd.ollama.image.license", bytes: Buffer.from("Tiny test license.\n") },
    ]);
    const axon = new Axon({ home: home() });
    await axon.config.write({ registries: [{ name: "test", url: registry.url }], default_registry: "test" });
    const r = await axon.install("library/tiny-llama3@8b");
    assert.equal(r.reference, "library/tiny-llama3@8b");
    const yaml = readFileSync(path.join(r.record.path, "axon.yaml"), "utf8");
    const m = YAML.parse(yaml) as AxonManifest;
    assert.match(yaml, /^# Converted by axon from the Ollama model/);
    assert.match(yaml, /mirostat/, "the unmapped parameter is named in a note");
    assert.equal(m.metadata.version, "0.0.0-8b");
    assert.equal(m.spec.framework.name, "gguf");
    assert.equal(m.spec.format.entrypoint, "model.gguf");
    assert.deepEqual(m.spec.format.files.map((f) => f.path).sort(), ["LICENSE", "chat_template.jinja", "generation_config.json", "model.gguf", "ollama/params.json", "ollama/system", "ollama/template"]);
    assert.equal(m.spec.llm?.context_length, 512, "num_ctx");
    assert.equal(m.spec.llm?.chat_template, "chat_template.jinja");
    assert.deepEqual(JSON.parse(readFileSync(path.join(r.record.path, "generation_config.json"), "utf8")), { stop: params.stop, temperature: 0, top_k: 20, max_new_tokens: 6 });
    assert.equal(readFileSync(path.join(r.record.path, "model.gguf")).length, readFileSync(models.tinyLlama3).length);

    // Served: the converted template with the default system prompt; the parameters are defaults.
    const runtime = new Runtime({ axon });
    const llm = await runtime.load("library/tiny-llama3@8b", { intraOpThreads: 1 });
    try {
      assert.equal(llm.plugin, "llamacpp");
      const engine = await llm.generationEngine();
      assert.equal(engine.contextLength, 512);
      const prompt = engine.text.applyChatTemplate([{ role: "user", content: "Hello!" }]);
      assert.equal(prompt, "<|start_header_id|>system<|end_header_id|>\n\nYou are a tiny llama.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
      const a = await llm.chat([{ role: "user", content: "Hello!" }], { ignoreEos: true });
      const b = await llm.chat([{ role: "user", content: "Hello!" }], { ignoreEos: true });
      assert.deepEqual(a.choices[0]!.tokenIds, b.choices[0]!.tokenIds, "temperature 0 from the parameters: greedy");
      assert.ok(a.choices[0]!.tokenIds.length <= 6, "num_predict is the default max tokens");
      const sampled = await llm.chat([{ role: "user", content: "Hello!" }], { temperature: 1.5, seed: 1, maxTokens: 12, ignoreEos: true });
      assert.equal(sampled.choices[0]!.tokenIds.length, 12, "a request's own options win");
    } finally {
      await llm.dispose();
    }
  });

  it("refuses an Ollama model with an adapter layer, and one without a model layer", async () => {
    await pushOllama("library/with-adapter", "latest", [
      { mediaType: "application/vnd.ollama.image.model", bytes: readFileSync(models.tinyLlama3) },
      { mediaType: "application/vnd.ollama.image.adapter", bytes: Buffer.from("lora") },
    ]);
    await pushOllama("library/no-model", "latest", [{ mediaType: "application/vnd.ollama.image.template", bytes: Buffer.from(CHATML) }]);
    const axon = new Axon({ home: home() });
    await axon.config.write({ registries: [{ name: "test", url: registry.url }], default_registry: "test" });
    await assert.rejects(axon.install("library/with-adapter@latest"), (e: AxonError) => e.code === "MANIFEST_FILE" && /adapter layer/.test(e.message));
    await assert.rejects(axon.install("library/no-model@latest"), (e: AxonError) => e.code === "MANIFEST_FILE" && /0 Ollama model layers/.test(e.message));
  });
});
