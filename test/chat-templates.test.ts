// Real chat templates of current model families (llama.cpp's models/templates, which
// scripts/fetch-test-models.js copies out of node-llama-cpp's bundled llama.cpp source) rendered by
// ModelText.applyChatTemplate (@huggingface/jinja): each family's exact prompt format for a
// system + user + assistant + user conversation with the generation prompt, templates that raise
// (alternation, unsupported system role) or fail giving TEMPLATE_FAILED, and a template given by
// the manifest, inline or as a file in the model folder, instead of tokenizer_config.json's.
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { after, describe, it } from "node:test";
import YAML from "yaml";
import { readManifest } from "../src/axon/manifest/parse.js";
import { MlosError } from "../src/core/errors.js";
import { ModelText } from "../src/core/generation/text.js";

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/test
const fetchScript = path.join(here, "..", "..", "scripts", "fetch-test-models.js");
const { chatTemplatesDir } = (await import(pathToFileURL(fetchScript).href)) as { chatTemplatesDir: () => string };
const TEMPLATES = chatTemplatesDir();
// The demo language model's GPT-2 tokenizer: the templates only need some tokenizer to load.
const TOKENIZER = path.join(here, "..", "demo-models", "tiny-gpt", "tokenizer.json");

const skip = !existsSync(TEMPLATES)
  ? `no chat templates in ${TEMPLATES} (node scripts/fetch-test-models.js fetches them)`
  : !existsSync(TOKENIZER)
    ? `no ${TOKENIZER} (npm run build makes the demo models)`
    : false;

const CONVERSATION = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Hello there" },
  { role: "assistant", content: "Hi! How can I help?" },
  { role: "user", content: "Name a colour." },
];
const NO_SYSTEM = CONVERSATION.slice(1);

const template = (file: string): string => readFileSync(path.join(TEMPLATES, file), "utf8");

const scratch = mkdtempSync(path.join(tmpdir(), "mlos-chat-templates-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let folders = 0;

/** A model folder with the demo tokenizer and a tokenizer_config.json of `config`. */
function modelFolder(config: Record<string, unknown>): string {
  const dir = path.join(scratch, `model-${folders++}`);
  mkdirSync(dir);
  copyFileSync(TOKENIZER, path.join(dir, "tokenizer.json"));
  writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({ add_bos_token: false, ...config }, null, 2));
  return dir;
}

/** ModelText over a folder whose tokenizer_config.json has `file`'s template and these special tokens. */
async function familyText(file: string, bos: string | undefined, eos: string): Promise<ModelText> {
  const config: Record<string, unknown> = { eos_token: eos, chat_template: template(file) };
  if (bos !== undefined) config.bos_token = bos;
  const text = await ModelText.load(modelFolder(config), { tokenizer: "tokenizer.json" });
  assert.ok(text.hasChatTemplate, `${file} is the model's template`);
  return text;
}

const templateFailed = (message: RegExp) => (e: unknown) => {
  assert.ok(e instanceof MlosError, `an MlosError, not ${String(e)}`);
  assert.equal(e.code, "TEMPLATE_FAILED");
  assert.match(e.message, message);
  return true;
};

interface Family {
  name: string;
  file: string;
  bos?: string;
  eos: string;
  messages?: typeof CONVERSATION;
  /** The whole prompt, when it does not depend on the day. */
  exact?: string;
  contains?: Array<string | RegExp>;
  endsWith: string;
}

const LLAMA3_TURNS =
  "You are terse.<|eot_id|>" +
  "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>" +
  "<|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>" +
  "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>" +
  "<|start_header_id|>assistant<|end_header_id|>\n\n";

const CHATML =
  "<|im_start|>system\nYou are terse.<|im_end|>\n" +
  "<|im_start|>user\nHello there<|im_end|>\n" +
  "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n" +
  "<|im_start|>user\nName a colour.<|im_end|>\n" +
  "<|im_start|>assistant\n";

const FAMILIES: Family[] = [
  {
    name: "Llama 3.1",
    file: "meta-llama-Llama-3.1-8B-Instruct.jinja",
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    exact: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + LLAMA3_TURNS,
    endsWith: "<|start_header_id|>assistant<|end_header_id|>\n\n",
  },
  {
    // Llama 3.2 dates its system turn with strftime_now: today's date.
    name: "Llama 3.2",
    file: "meta-llama-Llama-3.2-3B-Instruct.jinja",
    bos: "<|begin_of_text|>",
    eos: "<|eot_id|>",
    contains: [
      /^<\|begin_of_text\|><\|start_header_id\|>system<\|end_header_id\|>\n\nCutting Knowledge Date: December 2023\nToday Date: \d\d [A-Z][a-z]{2} \d{4}\n\n/,
      "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>",
      LLAMA3_TURNS,
    ],
    endsWith: "<|start_header_id|>assistant<|end_header_id|>\n\n",
  },
  { name: "Qwen 2.5 (ChatML)", file: "Qwen-Qwen2.5-7B-Instruct.jinja", eos: "<|im_end|>", exact: CHATML, endsWith: "<|im_start|>assistant\n" },
  { name: "Qwen 3 (ChatML)", file: "Qwen-Qwen3-0.6B.jinja", eos: "<|im_end|>", exact: CHATML, endsWith: "<|im_start|>assistant\n" },
  {
    // Mistral Nemo folds the system message into the last user turn.
    name: "Mistral Nemo",
    file: "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    bos: "<s>",
    eos: "</s>",
    exact: "<s>[INST]Hello there[/INST]Hi! How can I help?</s>[INST]You are terse.\n\nName a colour.[/INST]",
    endsWith: "[/INST]",
  },
  {
    name: "Mistral Small 3.2",
    file: "Mistral-Small-3.2-24B-Instruct-2506.jinja",
    bos: "<s>",
    eos: "</s>",
    exact: "<s>[SYSTEM_PROMPT]You are terse.[/SYSTEM_PROMPT][INST]Hello there[/INST]Hi! How can I help?</s>[INST]Name a colour.[/INST]",
    endsWith: "[INST]Name a colour.[/INST]",
  },
  {
    // Gemma 2 has no system role (see the TEMPLATE_FAILED tests), so no system message here.
    name: "Gemma 2",
    file: "google-gemma-2-2b-it.jinja",
    bos: "<bos>",
    eos: "<eos>",
    messages: NO_SYSTEM,
    exact:
      "<bos><start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\nHi! How can I help?<end_of_turn>\n" +
      "<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n",
    endsWith: "<start_of_turn>model\n",
  },
  {
    name: "Gemma 4",
    file: "google-gemma-4-31B-it.jinja",
    bos: "<bos>",
    eos: "<eos>",
    contains: ["<bos><|turn>system\nYou are terse.<turn|>\n", "<|turn>user\nHello there<turn|>\n<|turn>model\nHi! How can I help?<turn|>\n<|turn>user\nName a colour.<turn|>\n<|turn>model\n"],
    endsWith: "<|turn>model\n<|channel>thought\n<channel|>",
  },
  {
    name: "Phi-3.5",
    file: "microsoft-Phi-3.5-mini-instruct.jinja",
    bos: "<s>",
    eos: "<|endoftext|>",
    exact: "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello there<|end|>\n<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nName a colour.<|end|>\n<|assistant|>\n",
    endsWith: "<|assistant|>\n",
  },
  {
    name: "DeepSeek R1 (Qwen distill)",
    file: "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    bos: "<｜begin▁of▁sentence｜>",
    eos: "<｜end▁of▁sentence｜>",
    exact: "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hello there<｜Assistant｜>Hi! How can I help?<｜end▁of▁sentence｜><｜User｜>Name a colour.<｜Assistant｜><think>\n</think>",
    endsWith: "<｜Assistant｜><think>\n</think>",
  },
  {
    name: "DeepSeek V3.1",
    file: "deepseek-ai-DeepSeek-V3.1.jinja",
    bos: "<｜begin▁of▁sentence｜>",
    eos: "<｜end▁of▁sentence｜>",
    exact: "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hello there<｜Assistant｜><think></think>Hi! How can I help?<｜end▁of▁sentence｜><｜User｜>Name a colour.<｜Assistant｜><think></think>",
    endsWith: "<｜Assistant｜><think></think>",
  },
  {
    name: "Granite 3.3",
    file: "ibm-granite-granite-3.3-2B-Instruct.jinja",
    eos: "<|end_of_text|>",
    exact:
      "<|start_of_role|>system<|end_of_role|>You are terse.<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello there<|end_of_text|>\n" +
      "<|start_of_role|>assistant<|end_of_role|>Hi! How can I help?<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Name a colour.<|end_of_text|>\n" +
      "<|start_of_role|>assistant<|end_of_role|>",
    endsWith: "<|start_of_role|>assistant<|end_of_role|>",
  },
  {
    // gpt-oss (harmony): the system message becomes the developer's instructions.
    name: "gpt-oss",
    file: "openai-gpt-oss-120b.jinja",
    bos: "<|startoftext|>",
    eos: "<|return|>",
    contains: [
      /^<\|start\|>system<\|message\|>You are ChatGPT, a large language model trained by OpenAI\.\nKnowledge cutoff: 2024-06\nCurrent date: \d{4}-\d\d-\d\d\n/,
      "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n<|end|>",
      "<|start|>user<|message|>Hello there<|end|><|start|>assistant<|channel|>final<|message|>Hi! How can I help?<|end|><|start|>user<|message|>Name a colour.<|end|>",
    ],
    endsWith: "<|end|><|start|>assistant",
  },
];

describe("real chat templates", { skip }, () => {
  for (const f of FAMILIES) {
    it(`renders ${f.name} (${f.file})`, async () => {
      const text = await familyText(f.file, f.bos, f.eos);
      const prompt = text.applyChatTemplate(f.messages ?? CONVERSATION);
      if (f.exact !== undefined) assert.equal(prompt, f.exact);
      for (const c of f.contains ?? []) {
        if (typeof c === "string") assert.ok(prompt.includes(c), `${JSON.stringify(prompt)} contains ${JSON.stringify(c)}`);
        else assert.match(prompt, c);
      }
      assert.ok(prompt.endsWith(f.endsWith), `${JSON.stringify(prompt)} ends with ${JSON.stringify(f.endsWith)}`);
      for (const m of f.messages ?? CONVERSATION) assert.ok(prompt.includes(m.content), `the prompt holds ${JSON.stringify(m.content)}`);
    });
  }

  it("leaves the generation prompt out when asked (ChatML, Llama 3.1)", async () => {
    const qwen = await familyText("Qwen-Qwen2.5-7B-Instruct.jinja", undefined, "<|im_end|>");
    assert.equal(qwen.applyChatTemplate(CONVERSATION, false), CHATML.slice(0, -"<|im_start|>assistant\n".length));
    const llama = await familyText("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>");
    const prompt = llama.applyChatTemplate(CONVERSATION, false);
    assert.ok(prompt.endsWith("<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"), JSON.stringify(prompt));
  });

  it("turns a template's raise_exception into TEMPLATE_FAILED (Gemma 2: no system role, roles must alternate)", async () => {
    const gemma = await familyText("google-gemma-2-2b-it.jinja", "<bos>", "<eos>");
    assert.throws(() => gemma.applyChatTemplate(CONVERSATION), templateFailed(/System role not supported/));
    assert.throws(
      () => gemma.applyChatTemplate([{ role: "user", content: "a" }, { role: "user", content: "b" }]),
      templateFailed(/Conversation roles must alternate user\/assistant\/user\/assistant/),
    );
    assert.throws(() => gemma.applyChatTemplate([{ role: "assistant", content: "I start" }]), templateFailed(/roles must alternate/));
    // The same ModelText still renders a valid conversation afterwards.
    assert.ok(gemma.applyChatTemplate(NO_SYSTEM).endsWith("<start_of_turn>model\n"));
  });

  it("turns a template's raise_exception into TEMPLATE_FAILED (Mistral Nemo: roles must alternate)", async () => {
    const nemo = await familyText("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>");
    assert.throws(
      () => nemo.applyChatTemplate([{ role: "system", content: "s" }, { role: "user", content: "a" }, { role: "user", content: "b" }]),
      templateFailed(/After the optional system message, conversation roles must alternate/),
    );
  });

  it("turns a template that fails at render time into TEMPLATE_FAILED (a tool-use template given no tools)", async () => {
    // Hermes 2 Pro's tool_use template loops over `tools` unguarded; without tools it cannot render.
    const hermes = await familyText("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "<|begin_of_text|>", "<|im_end|>");
    assert.throws(() => hermes.applyChatTemplate(CONVERSATION), templateFailed(/the model's chat template failed on these messages/));
  });

  it("checks the messages before the template (MESSAGES_INVALID, not TEMPLATE_FAILED)", async () => {
    const qwen = await familyText("Qwen-Qwen2.5-7B-Instruct.jinja", undefined, "<|im_end|>");
    assert.throws(
      () => qwen.applyChatTemplate([{ role: "narrator", content: "x" }]),
      (e: unknown) => e instanceof MlosError && e.code === "MESSAGES_INVALID",
    );
  });
});

describe("a chat template from the manifest", { skip }, () => {
  const QWEN = "Qwen-Qwen2.5-7B-Instruct.jinja";
  const PHI = "microsoft-Phi-3.5-mini-instruct.jinja";
  const PHI_PROMPT = "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello there<|end|>\n<|assistant|>\nHi! How can I help?<|end|>\n<|user|>\nName a colour.<|end|>\n<|assistant|>\n";

  it("takes files.chatTemplate given inline over tokenizer_config.json's", async () => {
    // tokenizer_config.json carries Llama 3.1's template; the manifest's inline Qwen one wins.
    const dir = modelFolder({ eos_token: "<|im_end|>", bos_token: "<|begin_of_text|>", chat_template: template("meta-llama-Llama-3.1-8B-Instruct.jinja") });
    const source = template(QWEN);
    const text = await ModelText.load(dir, { tokenizer: "tokenizer.json", chatTemplate: source });
    assert.equal(text.chatTemplate, source);
    assert.equal(text.applyChatTemplate(CONVERSATION), CHATML);
  });

  it("takes files.chatTemplate given as a file path relative to the model folder", async () => {
    const dir = modelFolder({ eos_token: "<|endoftext|>" }); // no chat_template of its own
    mkdirSync(path.join(dir, "templates"));
    writeFileSync(path.join(dir, "templates", "chat.jinja"), template(PHI));
    const text = await ModelText.load(dir, { tokenizer: "tokenizer.json", chatTemplate: "templates/chat.jinja" });
    assert.equal(text.chatTemplate, template(PHI));
    assert.equal(text.applyChatTemplate(CONVERSATION), PHI_PROMPT);
  });

  /** Writes an axon.yaml (as tiny-gpt's) whose spec.llm.chat_template is `chatTemplate`; returns its spec.llm after reading it back. */
  async function manifestLlm(dir: string, chatTemplate: string, extraFiles: string[] = []) {
    const manifest = {
      apiVersion: "axon.mlos.io/v1",
      kind: "Model",
      metadata: { namespace: "test", name: "chat-template", version: "1.0.0" },
      spec: {
        framework: { name: "onnx", version: "17" },
        format: { type: "onnx", entrypoint: "onnx/model.onnx", files: [{ path: "onnx/model.onnx" }, { path: "tokenizer.json" }, { path: "tokenizer_config.json" }, ...extraFiles.map((p) => ({ path: p }))] },
        llm: { task: "text-generation", tokenizer: "tokenizer.json", chat_template: chatTemplate, context_length: 256 },
      },
    };
    writeFileSync(path.join(dir, "axon.yaml"), YAML.stringify(manifest));
    // A draft (files without sizes and digests), as a folder's axon.yaml is before `axon` completes it.
    const llm = (await readManifest(dir, { draft: true })).spec?.llm;
    assert.ok(llm);
    return llm;
  }

  it("renders spec.llm.chat_template of an axon.yaml, inline (a YAML block) or a listed file, as the generation engine loads it", async () => {
    // Inline: a multi-line real template survives YAML and is used over tokenizer_config.json's.
    const inlineDir = modelFolder({ eos_token: "<|im_end|>", chat_template: "{{ raise_exception('not this one') }}" });
    const inline = await manifestLlm(inlineDir, template(QWEN));
    assert.equal(inline.chat_template, template(QWEN));
    const fromInline = await ModelText.load(inlineDir, { tokenizer: inline.tokenizer ?? "tokenizer.json", chatTemplate: inline.chat_template, generationConfig: inline.generation_config, config: inline.config });
    assert.equal(fromInline.applyChatTemplate(CONVERSATION), CHATML);

    // A file: a path listed in spec.format.files, relative to the model folder.
    const fileDir = modelFolder({ eos_token: "<|endoftext|>" });
    mkdirSync(path.join(fileDir, "templates"));
    writeFileSync(path.join(fileDir, "templates", "chat.jinja"), template(PHI));
    const fromFile = await manifestLlm(fileDir, "templates/chat.jinja", ["templates/chat.jinja"]);
    assert.equal(fromFile.chat_template, "templates/chat.jinja");
    const text = await ModelText.load(fileDir, { tokenizer: fromFile.tokenizer ?? "tokenizer.json", chatTemplate: fromFile.chat_template, generationConfig: fromFile.generation_config, config: fromFile.config });
    assert.equal(text.applyChatTemplate(CONVERSATION), PHI_PROMPT);
  });
});
