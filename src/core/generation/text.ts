/**
 * A language model's text side: its tokenizer (Hugging Face `tokenizer.json`, run by
 * `@huggingface/tokenizers`, or another runtime's, such as the one in a GGUF file), its chat template (Jinja, rendered by `@huggingface/jinja`), its
 * end-of-sequence tokens, and the incremental detokenizer and stop-string matcher a stream needs.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { assertSafeRelativePath, isInlineChatTemplate } from "../../axon/manifest/validate.js";
import { MlosError } from "../errors.js";

/** One chat message, as OpenAI's API and the library take it. */
export interface ChatMessage {
  role: string;
  /** Text, or OpenAI's content parts (only `{type: "text"}` parts are supported). */
  content: string | ReadonlyArray<{ type: string; text?: string }> | null;
  name?: string;
}

/** A tokenizer, whichever library runs it. */
export interface TokenCodec {
  /** Token ids of `text`, with the special tokens the tokenizer adds to a sequence (a BOS, ...) when `addSpecialTokens`. */
  encode(text: string, addSpecialTokens: boolean): number[];
  /** The text of `ids`, special tokens left out when `skipSpecialTokens`. */
  decode(ids: readonly number[], skipSpecialTokens: boolean): string;
}

/** What a runtime that reads its own model files tells about the model's text side. */
export interface TextParts {
  codec: TokenCodec;
  chatTemplate?: string;
  /** The template's variables for special tokens: bos_token, eos_token ... */
  specials?: Record<string, string>;
  eosTokenIds: number[];
  generationDefaults?: Record<string, unknown>;
  config?: Record<string, unknown>;
}

/** `@huggingface/tokenizers` as a TokenCodec. */
function hfCodec(tokenizer: Tokenizer): TokenCodec {
  return {
    encode: (text, add) => tokenizer.encode(text, { add_special_tokens: add }).ids,
    decode: (ids, skip) => tokenizer.decode(ids as number[], { skip_special_tokens: skip }),
  };
}

const KNOWN_ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

/** Where a model folder keeps its text files (from its manifest's `spec.llm`, or the usual names). */
export interface TextFiles {
  tokenizer: string;
  tokenizerConfig?: string;
  /** A template file's path, or the template itself. */
  chatTemplate?: string;
  generationConfig?: string;
  config?: string;
}

/** A JSON object file (undefined when absent); MODEL_INVALID naming the file when it is not one. */
export async function readJson(file: string | undefined, what: string): Promise<Record<string, unknown> | undefined> {
  if (!file) return undefined;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new MlosError("MODEL_INVALID", `${file}: the ${what} is not valid JSON: ${(e as Error).message}`, { path: file });
  }
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

/** The tokenizer, template and special tokens of one language model. */
export class ModelText {
  readonly #codec: TokenCodec;
  readonly #template: Template | undefined;
  readonly #templateSource: string | undefined;
  readonly #specials: Record<string, string>;
  /** Tokens that end a sequence (the generation config's, else the model config's, else the tokenizer's eos). */
  readonly eosTokenIds: readonly number[];
  /** Generation defaults from `generation_config.json` (temperature, top_k, top_p, max_new_tokens ...). */
  readonly generationDefaults: Readonly<Record<string, unknown>>;
  /** The architecture config (`config.json`), when present. */
  readonly config: Readonly<Record<string, unknown>>;

  private constructor(codec: TokenCodec, template: string | undefined, specials: Record<string, string>, eos: number[], generation: Record<string, unknown>, config: Record<string, unknown>) {
    this.#codec = codec;
    this.#templateSource = template;
    this.#specials = specials;
    this.eosTokenIds = eos;
    this.generationDefaults = generation;
    this.config = config;
    if (template !== undefined) {
      try {
        this.#template = new Template(template);
      } catch (e) {
        throw new MlosError("MODEL_INVALID", `the chat template does not parse: ${(e as Error).message}`);
      }
    }
  }

  /** Reads the files of a model folder. */
  static async load(dir: string, files: TextFiles): Promise<ModelText> {
    const at = (f: string | undefined) => (f === undefined ? undefined : path.join(dir, f));
    const tokenizerJson = await readJson(at(files.tokenizer), "tokenizer");
    if (!tokenizerJson) throw new MlosError("MODEL_INVALID", `${at(files.tokenizer)}: a language model needs its tokenizer file`, { path: at(files.tokenizer) });
    const tokenizerConfig = (await readJson(at(files.tokenizerConfig ?? "tokenizer_config.json"), "tokenizer config")) ?? {};
    const generation = (await readJson(at(files.generationConfig ?? "generation_config.json"), "generation config")) ?? {};
    const config = (await readJson(at(files.config ?? "config.json"), "model config")) ?? {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new MlosError("MODEL_INVALID", `${at(files.tokenizer)}: the tokenizer cannot be built: ${(e as Error).message}`, { path: at(files.tokenizer) });
    }
    // The template: the manifest's (a file or the text itself), else the tokenizer config's
    // (a string, or a list of named templates of which "default" is the one).
    let template: string | undefined;
    const given = files.chatTemplate;
    if (given !== undefined) {
      if (isInlineChatTemplate(given)) template = given;
      else {
        // A file in the model folder (the same rule the manifest's validation applies).
        try {
          assertSafeRelativePath(given, "chat_template");
        } catch (e) {
          throw new MlosError("MODEL_INVALID", `chat_template ${JSON.stringify(given)}: ${(e as Error).message}`, { path: given });
        }
        try {
          template = await readFile(path.join(dir, given), "utf8");
        } catch (e) {
          throw new MlosError("MODEL_INVALID", `${path.join(dir, given)}: the chat template file cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { path: path.join(dir, given) });
        }
      }
    } else {
      const t = tokenizerConfig.chat_template;
      if (typeof t === "string") template = t;
      else if (Array.isArray(t)) {
        const named = t as Array<{ name?: string; template?: string }>;
        template = (named.find((x) => x.name === "default") ?? named[0])?.template;
      }
    }
    const specials: Record<string, string> = {};
    for (const k of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      const v = tokenContent(tokenizerConfig[k]);
      if (v !== undefined) specials[k] = v;
    }
    const ids = (v: unknown): number[] => (typeof v === "number" ? [v] : Array.isArray(v) ? v.filter((x): x is number => typeof x === "number") : []);
    let eos = ids(generation.eos_token_id);
    if (eos.length === 0) eos = ids(config.eos_token_id);
    if (eos.length === 0 && specials.eos_token !== undefined) {
      const id = tokenizer.token_to_id(specials.eos_token);
      if (id !== undefined) eos = [id];
    }
    return new ModelText(hfCodec(tokenizer), template, specials, eos, generation, config);
  }

  /** The text side of a model whose runtime tokenizes (a GGUF file's vocabulary, run by llama.cpp). */
  static fromParts(parts: TextParts): ModelText {
    return new ModelText(parts.codec, parts.chatTemplate, parts.specials ?? {}, parts.eosTokenIds, parts.generationDefaults ?? {}, parts.config ?? {});
  }

  /** Whether the model has a chat template. */
  get hasChatTemplate(): boolean {
    return this.#template !== undefined;
  }

  /** Token ids of `text`, with the special tokens the tokenizer adds to a sequence (a BOS, ...) unless told not to. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.#codec.encode(text, addSpecialTokens);
  }

  /** The text of `ids`, special tokens left out. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    return this.#codec.decode(ids, true);
  }

  readonly #one = new Map<number, string>();

  /** The text of one token (cached: the incremental decoder asks for the same tokens again and again). */
  decodeOne(id: number): string {
    let t = this.#one.get(id);
    if (t === undefined) {
      t = this.decode([id]);
      if (this.#one.size < 1 << 17) this.#one.set(id, t);
    }
    return t;
  }

  /** A token's string form (for logprobs). */
  tokenString(id: number): string {
    return this.#codec.decode([id], false);
  }

  /**
   * Renders chat messages with the model's template, ending with the assistant's turn when
   * `addGenerationPrompt`. MESSAGES_INVALID for malformed messages, TEMPLATE_FAILED when the
   * template raises or fails.
   */
  applyChatTemplate(messages: unknown, addGenerationPrompt = true): string {
    const checked = checkMessages(messages);
    if (!this.#template) throw new MlosError("TEMPLATE_FAILED", "the model has no chat template (tokenizer_config.json chat_template, or spec.llm.chat_template in its axon.yaml); use a completion with a plain prompt instead");
    try {
      // @huggingface/jinja defines raise_exception itself (it throws an Error with the message).
      return this.#template.render({ messages: checked, add_generation_prompt: addGenerationPrompt, ...this.#specials });
    } catch (e) {
      throw new MlosError("TEMPLATE_FAILED", `the model's chat template failed on these messages: ${(e as Error).message}`);
    }
  }

  /** The template's text (for `describe`). */
  get chatTemplate(): string | undefined {
    return this.#templateSource;
  }
}

/** Checks OpenAI-style messages and flattens text content parts to strings. */
export function checkMessages(messages: unknown): Array<{ role: string; content: string; name?: string }> {
  if (!Array.isArray(messages) || messages.length === 0) throw new MlosError("MESSAGES_INVALID", "messages must be a non-empty array of {role, content}");
  return messages.map((m: unknown, i) => {
    if (m === null || typeof m !== "object" || Array.isArray(m)) throw new MlosError("MESSAGES_INVALID", `messages[${i}] must be an object {role, content}`, { index: i });
    const { role, content, name } = m as Record<string, unknown>;
    if (typeof role !== "string" || role.length === 0) throw new MlosError("MESSAGES_INVALID", `messages[${i}].role must be a string`, { index: i });
    if (!KNOWN_ROLES.has(role)) throw new MlosError("MESSAGES_INVALID", `messages[${i}].role ${JSON.stringify(role)} is not one of ${[...KNOWN_ROLES].join(", ")}`, { index: i, role });
    let text: string;
    if (typeof content === "string") text = content;
    else if (content === null || content === undefined) {
      if (role !== "assistant") throw new MlosError("MESSAGES_INVALID", `messages[${i}].content is missing`, { index: i });
      text = "";
    } else if (Array.isArray(content)) {
      text = content
        .map((part: unknown, j) => {
          const p = part as { type?: unknown; text?: unknown } | null;
          if (!p || p.type !== "text" || typeof p.text !== "string") throw new MlosError("MESSAGES_INVALID", `messages[${i}].content[${j}] must be a {type: "text", text} part (other kinds are not supported by text models)`, { index: i });
          return p.text;
        })
        .join("");
    } else throw new MlosError("MESSAGES_INVALID", `messages[${i}].content must be a string or an array of text parts`, { index: i });
    return name === undefined ? { role, content: text } : { role, content: text, name: String(name) };
  });
}

/**
 * Turns a growing list of token ids into text pieces as they become complete characters: a
 * token that ends inside a multi-byte character is held back until the rest arrives. Decodes only
 * a short window (the tokens since the last emitted piece), not the whole sequence, per token.
 */
export class IncrementalDecoder {
  readonly #ids: number[] = [];
  #prefix = 0;
  #read = 0;

  constructor(private readonly text: ModelText) {}

  /** Adds a token; returns the new text it completes ("" when none yet). */
  push(id: number): string {
    this.#ids.push(id);
    // The window's first part is most often the one token emitted last: its text is cached.
    const before = this.#read - this.#prefix === 1 ? this.text.decodeOne(this.#ids[this.#prefix]!) : this.text.decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.text.decode(this.#ids.slice(this.#prefix));
    if (after.length > before.length && !after.endsWith("\uFFFD")) {
      const piece = after.slice(before.length);
      this.#prefix = this.#read;
      this.#read = this.#ids.length;
      return piece;
    }
    return "";
  }

  /** What is still held back (at the end of the sequence), replacement characters included. */
  flush(): string {
    const before = this.text.decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.text.decode(this.#ids.slice(this.#prefix));
    this.#prefix = this.#read = this.#ids.length;
    return after.length > before.length ? after.slice(before.length) : "";
  }
}

/**
 * Finds stop strings in streamed text. `push` returns the text that is safe to emit (text that
 * cannot be the start of a stop string) and whether a stop string was found (then the text before
 * it is the last piece).
 */
export class StopMatcher {
  #held = "";
  readonly #longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.#longest = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  push(piece: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: piece, stopped: false };
    const text = this.#held + piece;
    let first = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.#held = "";
      return { emit: text.slice(0, first), stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (let k = Math.min(this.#longest - 1, text.length); k > 0; k--) {
      const tail = text.slice(text.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) {
        keep = k;
        break;
      }
    }
    this.#held = text.slice(text.length - keep);
    return { emit: text.slice(0, text.length - keep), stopped: false };
  }

  /** The held-back text, at the end of a sequence that stopped for another reason. */
  flush(): string {
    const t = this.#held;
    this.#held = "";
    return t;
  }
}
