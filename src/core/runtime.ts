/**
 * The runtime: resolves a model (an Axon reference, installed when missing, or a path), picks the
 * plugin that serves it, loads it once however many handles share it, and hands out {@link Model}s.
 * A loaded model stays loaded while any handle references it; the last `dispose()` (or the garbage
 * collection of the last forgotten handle) unloads it.
 */
import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parse as parseYaml } from "yaml";
import { Axon } from "../axon/axon.js";
import { assertSafeRelativePath } from "../axon/manifest/index.js";
import { parseManifest } from "../axon/manifest/parse.js";
import { MANIFEST_FILENAME, type AxonManifest } from "../axon/manifest/types.js";
import type { Tensor } from "../tensor/tensor.js";
import { MlosError } from "./errors.js";
import { Model, type InferOptions, type LoadedEntry, type ResolvedSource } from "./model.js";
import { defaultPlugins } from "./plugin-registry.js";
import type { LoadedModel, ModelSource, Plugin, PluginLoadOptions } from "./plugin.js";
import type { EngineOptions } from "./generation/engine.js";
import { findLanguageModelEntrypoint } from "./generation/language-model.js";

export interface LoadOptions extends PluginLoadOptions {
  /**
   * Use this plugin instead of the one the manifest or the file's format names: its id or a name
   * people use for it (`onnx`, `pytorch`, `tfjs`: see {@link Runtime.findPlugin}).
   */
  plugin?: string;
  /** The framework the model was made with (`pytorch`, `onnx`, `tensorflow` ...), when it has no manifest to say so. */
  framework?: string;
  /** Install a reference that is not installed yet (default true). */
  install?: boolean;
  /** The Axon instance references resolve through (default: the runtime's, on $AXON_HOME). */
  axon?: Axon;
  /** For language models: the generation engine's batch, token budget and KV cache (see EngineOptions). */
  generation?: EngineOptions;
}

const EXTENSION_FORMATS: Record<string, string> = { ".onnx": "onnx", ".ort": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".json": "tfjs", ".gguf": "gguf" };

function looksLikePath(target: string): boolean {
  return target.startsWith("/") || target.startsWith("./") || target.startsWith("../") || target === "." || target === ".." || existsSync(target);
}

export class Runtime {
  readonly #plugins = new Map<string, Plugin>();
  readonly #loading = new Map<string, Promise<LoadedEntry>>();
  readonly #loaded = new Map<string, LoadedEntry>();
  readonly #oneShot = new Map<string, Promise<Model>>();
  #axon: Axon | undefined;
  readonly #forgotten = new FinalizationRegistry<LoadedEntry>((entry) => void this.#release(entry));

  /**
   * A runtime with the default plugins (those registered with `registerDefaultPlugin`: the
   * library's built-ins once `mlos` is imported) and then `plugins`, which replace a default with
   * the same id.
   */
  constructor(options: { axon?: Axon; plugins?: Plugin[] } = {}) {
    this.#axon = options.axon;
    for (const p of [...defaultPlugins(), ...(options.plugins ?? [])]) this.registerPlugin(p);
  }

  /** Each registered plugin object's generation: a replaced plugin never shares loads with its successor. */
  readonly #generation = new WeakMap<Plugin, number>();
  #generations = 0;

  /**
   * Adds a plugin, or replaces the one with the same id for models loaded from now on (models
   * already loaded keep the old one until they are disposed; the server's ModelTable reloads them).
   */
  registerPlugin(plugin: Plugin): void {
    checkPlugin(plugin);
    this.#generation.set(plugin, ++this.#generations);
    this.#plugins.set(plugin.id, plugin);
  }

  plugins(): Plugin[] {
    return [...this.#plugins.values()];
  }

  /** Models loaded now: what they are, how many handles hold them, their memory. */
  loaded(): Array<{ name: string; reference: string | undefined; path: string; plugin: string; refs: number; memoryBytes: number; details: Record<string, unknown> }> {
    return [...this.#loaded.values()].map((e) => ({
      name: e.source.name,
      reference: e.source.reference,
      path: e.source.entrypoint,
      plugin: e.plugin.id,
      refs: e.refs,
      memoryBytes: e.model.memoryBytes,
      details: e.model.describe?.() ?? {},
    }));
  }

  /**
   * Loads a model: `target` is an Axon reference (`demo/mlp@^1`, installed through the configured
   * registries when missing) or a path (a model folder with an `axon.yaml`, or a model file).
   */
  async load(target: string, options: LoadOptions = {}): Promise<Model> {
    if (typeof target !== "string" || target.length === 0) throw new MlosError("MODEL_NOT_FOUND", "load(target): target must be a model reference or a path");
    const source = await this.#resolve(target, options);
    const plugin = this.#choosePlugin(source, options.plugin, options.framework);
    const pluginOptions: PluginLoadOptions = {
      intraOpThreads: options.intraOpThreads,
      interOpThreads: options.interOpThreads,
      graphOptimizationLevel: options.graphOptimizationLevel,
      executionMode: options.executionMode,
      runMode: options.runMode,
      pool: options.pool,
    };
    const poolKey = options.pool ? options.pool.name : "";
    const key = [plugin.id, this.#generation.get(plugin) ?? 0, source.entrypoint, JSON.stringify({ ...pluginOptions, pool: poolKey })].join("\0");
    let entry = this.#loaded.get(key);
    if (!entry) {
      let pending = this.#loading.get(key);
      if (!pending) {
        pending = plugin.load(source, pluginOptions).then((model) => {
          const e: LoadedEntry = { key, plugin, source, model, refs: 0, generationOptions: options.generation };
          this.#loaded.set(key, e);
          return e;
        });
        this.#loading.set(key, pending);
        pending.then(
          () => this.#loading.delete(key),
          () => this.#loading.delete(key),
        );
      }
      entry = await pending;
    }
    entry.refs++;
    const model = new Model(entry, source, this.#releaseHandle);
    this.#forgotten.register(model, entry, model);
    return model;
  }

  /** Runs `target` once on `inputs`; the model stays loaded in this runtime for later calls. */
  async infer(target: string, inputs: Record<string, Tensor>, options?: InferOptions & { load?: LoadOptions }): Promise<Record<string, Tensor>> {
    let pending = this.#oneShot.get(target);
    if (!pending) {
      pending = this.load(target, options?.load);
      this.#oneShot.set(target, pending);
      pending.catch(() => this.#oneShot.delete(target));
    }
    return (await pending).infer(inputs, options);
  }

  readonly #releaseHandle = (entry: LoadedEntry, handle: Model): Promise<void> => this.#release(entry, handle);

  /** Drops one handle's reference (Model.dispose, or a forgotten handle); unloads on the last one. */
  async #release(entry: LoadedEntry, handle?: Model): Promise<void> {
    if (handle) this.#forgotten.unregister(handle);
    entry.refs--;
    if (entry.refs > 0 || this.#loaded.get(entry.key) !== entry) return;
    this.#loaded.delete(entry.key);
    if (entry.engine) await (await entry.engine.catch(() => undefined))?.close();
    await entry.model.unload();
  }

  /** Unloads every model this runtime's one-shot `infer` holds. Handles from `load` stay valid. */
  async close(): Promise<void> {
    const models = await Promise.allSettled(this.#oneShot.values());
    this.#oneShot.clear();
    for (const m of models) if (m.status === "fulfilled") await m.value.dispose();
    await this.#axon?.close();
  }

  /**
   * The plugin a name designates: its id, or a name people use for its framework (case-insensitive):
   * `onnx` and `onnxruntime`, `pytorch` and `torch`, `tensorflow` and `tfjs`, and whatever a
   * plugin lists in its `frameworks` and `aliases`. An id wins over another plugin's alias.
   */
  findPlugin(name: string): Plugin | undefined {
    const exact = this.#plugins.get(name);
    if (exact) return exact;
    const wanted = name.toLowerCase();
    const all = [...this.#plugins.values()];
    return all.find((p) => p.id.toLowerCase() === wanted) ?? all.find((p) => [...p.frameworks, ...(p.aliases ?? [])].some((n) => n.toLowerCase() === wanted));
  }

  #choosePlugin(source: ModelSource, explicit: string | undefined, frameworkHint: string | undefined): Plugin {
    const wanted = explicit ?? source.manifest?.spec.serving?.plugin;
    let plugin: Plugin | undefined;
    if (wanted) {
      plugin = this.findPlugin(wanted);
      if (!plugin) throw new MlosError("PLUGIN_NOT_FOUND", `no plugin "${wanted}" is registered (registered: ${this.#pluginNames()})`, { plugin: wanted });
    } else {
      const framework = source.manifest?.spec.framework.name ?? frameworkHint;
      const all = [...this.#plugins.values()];
      plugin = all.find((p) => p.formats.includes(source.format)) ?? (framework ? this.findPlugin(framework) : undefined);
      if (!plugin && frameworkHint && !source.manifest) {
        throw new MlosError("PLUGIN_NOT_FOUND", `no plugin serves framework "${frameworkHint}" (registered: ${this.#pluginNames()})`, { framework: frameworkHint });
      }
      if (!plugin) {
        throw new MlosError("PLUGIN_NOT_FOUND", `no plugin serves ${source.format} models${framework ? ` (framework ${framework})` : ""}: ${source.entrypoint} (registered: ${all.map((p) => `${p.id} [${p.formats.join(", ")}]`).join("; ")})`, { format: source.format, framework });
      }
    }
    const a = plugin.availability();
    if (!a.available) {
      // A reason may name its plugin already ("the tensorflow plugin needs ..."): say it once.
      const said = a.reason.toLowerCase().startsWith(`the ${plugin.id} plugin`);
      throw new MlosError("PLUGIN_UNAVAILABLE", said ? a.reason : `the ${plugin.id} plugin cannot run here: ${a.reason}`, { plugin: plugin.id });
    }
    return plugin;
  }

  /** `onnxruntime (onnx, ort), torch (pytorch ...)`: ids with the other names they answer to. */
  #pluginNames(): string {
    return [...this.#plugins.values()].map((p) => {
      const other = [...new Set([...p.frameworks, ...(p.aliases ?? [])])].filter((n) => n !== p.id);
      return other.length ? `${p.id} (${other.join(", ")})` : p.id;
    }).join(", ");
  }

  async #resolve(target: string, options: LoadOptions): Promise<ResolvedSource> {
    if (looksLikePath(target)) return this.#resolvePath(path.resolve(target), undefined);
    const axon = options.axon ?? (this.#axon ??= new Axon());
    let dir: string;
    let reference: string;
    if (options.install === false) {
      const [record] = await axon.findInstalled(target);
      if (!record) throw new MlosError("MODEL_NOT_FOUND", `${target} is not installed (install it with 'axon install ${target}')`, { reference: target });
      dir = record.path;
      reference = `${record.namespace}/${record.name}@${record.version}`;
    } else {
      // An exact version or digest that is installed needs no resolution (and no network).
      const exact = /@(\d+\.\d+\.\d+(?:[-+][\w.+-]*)?|sha256:[0-9a-f]{64})$/.test(target);
      const [record] = exact ? await axon.findInstalled(target).catch(() => []) : [];
      if (record) {
        dir = record.path;
        reference = `${record.namespace}/${record.name}@${record.version}`;
      } else {
        const installed = await axon.install(target);
        dir = installed.record.path;
        reference = installed.reference;
      }
    }
    return this.#resolvePath(dir, reference);
  }

  async #resolvePath(target: string, reference: string | undefined): Promise<ResolvedSource> {
    let st;
    try {
      st = await stat(target);
    } catch {
      throw new MlosError("MODEL_NOT_FOUND", `${target}: no such model file or folder`, { path: target });
    }
    if (st.isFile()) {
      const ext = path.extname(target).toLowerCase();
      return { dir: undefined, entrypoint: target, manifest: undefined, format: EXTENSION_FORMATS[ext] ?? ext.slice(1), reference, name: path.basename(target, ext) };
    }
    const manifestFile = path.join(target, MANIFEST_FILENAME);
    let manifest: AxonManifest | undefined;
    let text: string | undefined;
    try {
      text = await readFile(manifestFile, "utf8");
    } catch {
      // no manifest: look for the one model file in the folder
    }
    if (text !== undefined) {
      // A folder named by path may be an author's, before `axon pack` filled in sizes and digests.
      // An installed view's manifest was validated when it was installed and is read-only in the
      // content-addressed cache: reading it needs no schema check. A folder named by path may be
      // an author's, before `axon pack` filled in sizes and digests: it is checked as a draft.
      manifest = (reference ? (parseYaml(text) as AxonManifest) : parseManifest(text, manifestFile, { draft: true })) as AxonManifest;
      const rel = manifest.spec.format.entrypoint ?? manifest.spec.format.files?.[0]?.path;
      if (!rel) throw new MlosError("MODEL_INVALID", `${manifestFile}: spec.format lists no files and no entrypoint`, { path: manifestFile });
      assertSafeRelativePath(rel, `${manifestFile} spec.format.entrypoint`);
      const entrypoint = path.join(target, rel);
      return { dir: target, entrypoint, manifest, format: manifest.spec.format.type, reference, name: manifest.metadata.name };
    }
    // A language model in Hugging Face's layout: its decoder is in onnx/.
    const decoder = await findLanguageModelEntrypoint(target);
    if (decoder) return { dir: target, entrypoint: path.join(target, decoder), manifest: undefined, format: "onnx", reference, name: path.basename(target) };
    // JSON files are configs and tokenizers as often as models: only a TF.js model.json counts.
    const candidates = (await readdir(target)).filter((f) => EXTENSION_FORMATS[path.extname(f).toLowerCase()] && (path.extname(f).toLowerCase() !== ".json" || f === "model.json"));
    if (candidates.length !== 1) {
      throw new MlosError("MODEL_INVALID", `${target}: no ${MANIFEST_FILENAME}, and ${candidates.length === 0 ? "no model file" : `several model files (${candidates.join(", ")})`} to load`, { path: target });
    }
    const file = candidates[0]!;
    const ext = path.extname(file).toLowerCase();
    return { dir: target, entrypoint: path.join(target, file), manifest: undefined, format: EXTENSION_FORMATS[ext]!, reference, name: path.basename(target) };
  }
}

function propertyKind(o: object, key: string): "missing" | "value" | "accessor" {
  for (let p: object | null = o; p; p = Object.getPrototypeOf(p) as object | null) {
    const d = Object.getOwnPropertyDescriptor(p, key);
    if (d) return d.get ? "accessor" : "value";
  }
  return "missing";
}

/** Throws PLUGIN_INVALID when `p` does not implement the plugin interface. */
export function checkPlugin(p: unknown, where = "plugin"): asserts p is Plugin {
  const o = p as Partial<Plugin> | null;
  const problems: string[] = [];
  if (!o || typeof o !== "object") problems.push("it is not an object");
  else {
    if (typeof o.id !== "string" || !/^[a-z0-9][a-z0-9._-]*$/i.test(o.id)) problems.push("id must be a name like 'my-plugin'");
    // Read as a property: a getter (a plugin that reports its library's version once loaded) is
    // not called here, so that registering a plugin never loads its framework.
    const version = propertyKind(o, "version");
    if (version === "missing" || (version === "value" && typeof o.version !== "string")) problems.push("version must be a string");
    if (!Array.isArray(o.frameworks)) problems.push("frameworks must be an array");
    if (!Array.isArray(o.formats)) problems.push("formats must be an array");
    if (typeof o.availability !== "function") problems.push("availability() is missing");
    if (typeof o.load !== "function") problems.push("load() is missing");
  }
  if (problems.length) throw new MlosError("PLUGIN_INVALID", `${where} does not implement the plugin interface: ${problems.join("; ")}`);
}

/**
 * Loads a third-party plugin: `spec` is a path (a .js/.mjs file, or a folder with a package.json
 * or index.js) or an npm package name resolved from the current directory. The module exports
 * the plugin as its default export or as `plugin`, or a `createPlugin()` factory.
 */
export async function importPlugin(spec: string): Promise<Plugin> {
  let url: string;
  try {
    if (spec.startsWith(".") || spec.startsWith("/")) {
      url = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve(path.resolve(spec))).href;
    } else {
      url = pathToFileURL(createRequire(path.join(process.cwd(), "noop.js")).resolve(spec)).href;
    }
  } catch (e) {
    throw new MlosError("PLUGIN_NOT_FOUND", `plugin ${spec}: cannot find its module (${(e as Error).message.split("\n")[0]})`, { plugin: spec });
  }
  let mod: Record<string, unknown>;
  try {
    // A query makes a new version of the same file load fresh (hot swap), not from the module cache.
    mod = (await import(`${url}?v=${Date.now()}-${Math.random().toString(36).slice(2)}`)) as Record<string, unknown>;
  } catch (e) {
    throw new MlosError("PLUGIN_INVALID", `plugin ${spec}: its module failed to load: ${(e as Error).message.split("\n")[0]}`, { plugin: spec });
  }
  const factory = mod.createPlugin ?? (mod.default as { createPlugin?: unknown } | undefined)?.createPlugin;
  const candidate = typeof factory === "function" ? await (factory as () => unknown)() : (mod.plugin ?? mod.default);
  const plugin = typeof candidate === "function" ? new (candidate as new () => unknown)() : candidate;
  checkPlugin(plugin, `plugin ${spec}`);
  return plugin;
}

let defaultRuntime: Runtime | undefined;

/** The process-wide runtime behind the library's `load` and `infer`. */
export function getDefaultRuntime(): Runtime {
  return (defaultRuntime ??= new Runtime());
}
