/**
 * The server's model table: models registered by Axon reference or by path, under a served name
 * (`model_id`), with versions side by side (`name` resolves to the highest, `name@1.2.0` to that
 * one), each with a state: registering -> loading -> ready, unloading, or failed (with its error).
 * A registered model can be unloaded and loaded again (KServe's repository load/unload) without
 * losing its registration.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import semver from "semver";
import { parse as parseYaml } from "yaml";
import { parseReference } from "../axon/reference.js";
import { MlosError } from "./errors.js";
import type { Model } from "./model.js";
import type { LoadOptions, Runtime } from "./runtime.js";
import { Scheduler, type BatchingOptions, type SubmitOptions } from "./scheduler.js";
import type { RunResult } from "./plugin.js";
import type { Tensor } from "../tensor/tensor.js";
import { getDefaultPool, type TensorPool } from "../tensor/pool.js";
import { tryLoadNative } from "../../bindings/native.js";

export type ModelState = "registering" | "loading" | "ready" | "unloading" | "unloaded" | "evicted" | "failed";

export interface RegisterSpec {
  /** The served name; default: the reference's NAME, or the folder's / file's name. */
  id?: string;
  /** An Axon reference or a path. */
  target: string;
  /** Force a plugin by id. */
  plugin?: string;
  /** The framework (`pytorch`, `onnx` ...): picks the plugin when neither `plugin`, a manifest nor the file's format does. */
  framework?: string;
  load?: LoadOptions;
}

export interface ModelEntry {
  readonly name: string;
  /** The model's version (its manifest's, or "1" for a bare file). */
  version: string;
  readonly target: string;
  readonly spec: RegisterSpec;
  state: ModelState;
  error: string | undefined;
  model: Model | undefined;
  readonly registeredAt: Date;
  lastUsed: Date | undefined;
  /** The model's queue, limits and batcher (while loaded). */
  scheduler: Scheduler | undefined;
}

/** An entry whose model is loaded and serving. */
export type ReadyEntry = ModelEntry & { model: Model; scheduler: Scheduler };

/** Scheduling defaults for every model; a manifest's spec.serving overrides batching and instances. */
export interface TableOptions {
  maxQueueDepth?: number;
  /** Runs in flight per model (default: the manifest's instances, else 4). */
  instances?: number;
  /** Batching for every model whose manifest does not set it; `false` turns batching off everywhere. */
  batching?: BatchingOptions | false;
  pool?: TensorPool;
  /** Load options for models registered without their own (threads, pool). */
  load?: LoadOptions;
  /**
   * Memory budget for loaded models, in bytes. Loading a model that would pass it first unloads
   * idle models, least recently used first; they load again on their next request.
   */
  maxMemoryBytes?: number;
  /** Unload a model nobody has used for this long (ms); it loads again on its next request. */
  keepAliveMs?: number;
  /** Called when a model is evicted (for metrics). */
  onEvict?: (e: ModelEntry, why: "memory" | "idle") => void;
}

/** The public view of an entry (`GET /api/v1/models`, `axon ps`). */
export interface ModelSummary {
  id: string;
  name: string;
  version: string;
  state: ModelState;
  error?: string;
  target: string;
  reference?: string;
  plugin?: string;
  path?: string;
  memoryBytes?: number;
  registeredAt: string;
  lastUsed?: string;
  pending: number;
  batching?: boolean;
  batches?: number;
  batchedRequests?: number;
  inputs?: unknown;
  outputs?: unknown;
  details?: Record<string, unknown>;
}

/**
 * The served name a target gets when none is given: the reference's NAME; for a folder, its
 * manifest's metadata.name; else the path's base name.
 */
export function defaultModelName(target: string): string {
  if (target.startsWith("/") || target.startsWith(".")) {
    try {
      const name = (parseYaml(readFileSync(path.join(target, "axon.yaml"), "utf8")) as { metadata?: { name?: unknown } } | null)?.metadata?.name;
      if (typeof name === "string" && name) return name;
    } catch {
      // not a folder with a readable manifest
    }
    return path.basename(target, path.extname(target));
  }
  try {
    const ref = parseReference(target);
    if (ref.kind === "path") return path.basename(ref.path, path.extname(ref.path));
    return ref.name;
  } catch {
    return path.basename(target, path.extname(target));
  }
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class ModelTable {
  readonly #runtime: Runtime;
  readonly #models = new Map<string, Map<string, ModelEntry>>();
  readonly #options: TableOptions;
  readonly #idleTimer: NodeJS.Timeout | undefined;
  /** Loads in progress (lazy loads on first request share one). */
  readonly #loading = new Map<ModelEntry, Promise<void>>();
  readonly #watchers = new Set<(e: ModelEntry) => void>();
  evictions = 0;

  /**
   * Calls `listener` synchronously whenever an entry changes: it became ready, starts unloading
   * (before its model is disposed, so that a door serving the model by other means stops first),
   * was unloaded or evicted, or was unregistered. Returns the function that stops it.
   */
  watch(listener: (e: ModelEntry) => void): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  #changed(e: ModelEntry): void {
    for (const w of this.#watchers) {
      try {
        w(e);
      } catch {
        // a watcher's failure is its own
      }
    }
  }

  constructor(runtime: Runtime, options: TableOptions = {}) {
    this.#runtime = runtime;
    this.#options = options;
    if (options.keepAliveMs) {
      const every = Math.max(50, Math.min(60_000, options.keepAliveMs / 4));
      this.#idleTimer = setInterval(() => void this.#unloadIdle(), every);
      this.#idleTimer.unref();
    }
  }

  /** Bytes held by loaded models. */
  get loadedBytes(): number {
    return this.list().reduce((a, e) => a + (e.model && e.state === "ready" ? e.model.memoryBytes : 0), 0);
  }

  /**
   * Unloads idle models, least recently used first, until `bytes` more fit in the budget. Models
   * with requests pending are never evicted, so no request fails because another model was.
   */
  async #makeRoom(bytes: number, except?: ModelEntry): Promise<void> {
    const budget = this.#options.maxMemoryBytes;
    if (!budget) return;
    const victims = this.list()
      .filter((e) => e !== except && e.state === "ready" && e.model && (e.scheduler?.pending ?? 0) === 0)
      .sort((a, b) => (a.lastUsed?.getTime() ?? a.registeredAt.getTime()) - (b.lastUsed?.getTime() ?? b.registeredAt.getTime()));
    for (const v of victims) {
      if (this.loadedBytes + bytes <= budget) return;
      // Checked again at each step: a request may have come for it while the last one unloaded.
      if (v.state !== "ready" || (v.scheduler?.pending ?? 0) > 0) continue;
      await this.#dispose(v);
      this.evictions++;
      this.#options.onEvict?.(v, "memory");
    }
  }

  async #unloadIdle(): Promise<void> {
    const keep = this.#options.keepAliveMs;
    if (!keep) return;
    const now = Date.now();
    for (const e of this.list()) {
      const last = (e.lastUsed ?? e.registeredAt).getTime();
      if (e.state === "ready" && e.model && (e.scheduler?.pending ?? 0) === 0 && now - last > keep) {
        await this.#dispose(e);
        this.evictions++;
        this.#options.onEvict?.(e, "idle");
      }
    }
  }

  /** The scheduler for a loaded model: batching from the manifest (unless turned off), else the table's default. */
  /** What a registration loads with: the table's defaults, its own options, its plugin and framework. */
  #loadOptions(spec: RegisterSpec): LoadOptions {
    return { ...this.#options.load, ...spec.load, plugin: spec.plugin ?? spec.load?.plugin, framework: spec.framework ?? spec.load?.framework };
  }

  #schedulerFor(model: Model): Scheduler {
    const serving = model.manifest?.spec.serving;
    const fromManifest = serving?.batching?.max_batch_size
      ? { maxBatchSize: serving.batching.max_batch_size, maxQueueDelayUs: serving.batching.max_queue_delay_us ?? 500, preferredBatchSizes: serving.batching.preferred_batch_sizes }
      : undefined;
    const batching = this.#options.batching === false ? undefined : (fromManifest ?? this.#options.batching);
    return new Scheduler(model, {
      maxQueueDepth: this.#options.maxQueueDepth ?? 1024,
      instances: this.#options.instances ?? serving?.instances ?? 4,
      batching,
      pool: this.#options.pool ?? getDefaultPool(),
    });
  }

  /**
   * Registers and loads a model. A name that is taken by another target is MODEL_EXISTS; the same
   * target registered again under its name returns the existing entry (idempotent).
   */
  async register(spec: RegisterSpec): Promise<ModelEntry> {
    if (typeof spec.target !== "string" || spec.target.length === 0) throw new MlosError("MODEL_NOT_FOUND", "register: give a model reference or path");
    const name = spec.id ?? defaultModelName(spec.target);
    if (!NAME.test(name)) throw new MlosError("MODEL_INVALID", `model name ${JSON.stringify(name)} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    const versions = this.#models.get(name);
    for (const e of versions?.values() ?? []) {
      if (e.target === spec.target && e.state !== "failed") return e;
      if (e.target !== spec.target && e.state === "registering") {
        throw new MlosError("MODEL_EXISTS", `model "${name}" is being registered from ${e.target}`, { name });
      }
    }
    const entry: ModelEntry = { name, version: "?", target: spec.target, spec, state: "registering", error: undefined, model: undefined, registeredAt: new Date(), lastUsed: undefined, scheduler: undefined };
    const pendingKey = `registering:${spec.target}`;
    const table = versions ?? new Map<string, ModelEntry>();
    table.set(pendingKey, entry);
    this.#models.set(name, table);
    try {
      entry.state = "loading";
      const model = await this.#runtime.load(spec.target, this.#loadOptions(spec));
      const version = model.manifest?.metadata.version ?? "1";
      const existing = table.get(version);
      if (existing && existing.target !== spec.target && existing.state !== "failed") {
        await model.dispose();
        throw new MlosError("MODEL_EXISTS", `model "${name}" version ${version} is already registered from ${existing.target}; unregister it first or register under another model_id`, { name, version });
      }
      entry.version = version;
      entry.model = model;
      entry.scheduler = this.#schedulerFor(model);
      await this.#makeRoom(model.memoryBytes, entry);
      entry.state = "ready";
      table.delete(pendingKey);
      if (existing) await this.#dispose(existing);
      table.set(version, entry);
      this.#changed(entry);
      return entry;
    } catch (e) {
      table.delete(pendingKey);
      if (table.size === 0) this.#models.delete(name);
      throw e;
    }
  }

  /** The entry `name` or `name@version` names (highest version when none is given); MODEL_NOT_FOUND otherwise. */
  get(name: string, version?: string): ModelEntry {
    let n = name;
    let v = version;
    if (v === undefined && name.includes("@")) [n, v] = [name.slice(0, name.lastIndexOf("@")), name.slice(name.lastIndexOf("@") + 1)];
    const table = this.#models.get(n);
    if (!table || table.size === 0) throw new MlosError("MODEL_NOT_FOUND", `no model named "${n}" is registered`, { name: n });
    if (v !== undefined && v !== "") {
      const e = table.get(v);
      if (!e) throw new MlosError("MODEL_NOT_FOUND", `model "${n}" has no version ${v} (registered: ${[...table.keys()].filter((k) => !k.startsWith("registering:")).join(", ")})`, { name: n, version: v });
      return e;
    }
    const settled = [...table.values()].filter((e) => e.version !== "?");
    if (settled.length === 0) return [...table.values()][0]!;
    return settled.sort((a, b) => compareVersions(b.version, a.version))[0]!;
  }

  /** Every registered version of every model. */
  list(): ModelEntry[] {
    return [...this.#models.values()].flatMap((t) => [...t.values()]);
  }

  /** Removes a model (every version, or one); disposes what was loaded. Returns what was removed. */
  async unregister(name: string, version?: string): Promise<ModelEntry[]> {
    const removed: ModelEntry[] = [];
    if (version !== undefined || name.includes("@")) {
      const e = this.get(name, version);
      this.#models.get(e.name)!.delete(e.version);
      if (this.#models.get(e.name)!.size === 0) this.#models.delete(e.name);
      removed.push(e);
    } else {
      const table = this.#models.get(name);
      if (!table) throw new MlosError("MODEL_NOT_FOUND", `no model named "${name}" is registered`, { name });
      this.#models.delete(name);
      removed.push(...table.values());
    }
    for (const e of removed) {
      await this.#dispose(e);
      this.#changed(e);
    }
    return removed;
  }

  /**
   * After a plugin was replaced: loads every ready model it serves again with the new one, switches
   * new requests to it at once, and disposes the old model once the requests it took have drained.
   * A model the new plugin cannot load keeps the old one (its error is returned).
   */
  async reloadPlugin(pluginId: string): Promise<Array<{ model: string; ok: boolean; error?: string }>> {
    const results: Array<{ model: string; ok: boolean; error?: string }> = [];
    for (const e of this.list()) {
      if (e.state !== "ready" || !e.model || e.model.plugin !== pluginId) continue;
      const oldModel = e.model;
      const oldScheduler = e.scheduler!;
      let model: Model;
      try {
        model = await this.#runtime.load(e.target, this.#loadOptions(e.spec));
      } catch (err) {
        results.push({ model: `${e.name}@${e.version}`, ok: false, error: (err as Error).message });
        continue;
      }
      e.model = model;
      e.scheduler = this.#schedulerFor(model);
      this.#changed(e);
      results.push({ model: `${e.name}@${e.version}`, ok: true });
      void (async () => {
        while (oldScheduler.pending > 0) await new Promise((r) => setTimeout(r, 5));
        await oldModel.dispose();
      })();
    }
    return results;
  }

  /** Unloads a model's session(s) but keeps it registered (KServe repository unload). */
  async unload(name: string, version?: string): Promise<ModelEntry> {
    const e = this.get(name, version);
    await this.#dispose(e);
    e.state = "unloaded";
    this.#changed(e);
    return e;
  }

  /** Loads a registered model again (KServe repository load); registers it by reference when it is not registered. */
  async load(name: string, version?: string): Promise<ModelEntry> {
    let e: ModelEntry;
    try {
      e = this.get(name, version);
    } catch (err) {
      if ((err as MlosError).code === "MODEL_NOT_FOUND" && version === undefined) return this.register({ target: name });
      throw err;
    }
    await this.#ensureLoaded(e);
    return e;
  }

  /** Loads an unloaded (or evicted) entry once, however many requests wait for it. */
  async #ensureLoaded(e: ModelEntry): Promise<void> {
    if (e.state === "ready" && e.model) return;
    let pending = this.#loading.get(e);
    if (!pending) {
      pending = (async () => {
        e.state = "loading";
        try {
          const model = await this.#runtime.load(e.target, this.#loadOptions(e.spec));
          await this.#makeRoom(model.memoryBytes, e);
          e.model = model;
          e.scheduler = this.#schedulerFor(model);
          e.state = "ready";
          e.error = undefined;
          this.#changed(e);
        } catch (err) {
          e.state = "failed";
          e.error = (err as Error).message;
          throw err;
        } finally {
          this.#loading.delete(e);
        }
      })();
      this.#loading.set(e, pending);
    }
    await pending;
  }

  /**
   * Runs a request on the model of `entry` (found once with `get`), loading it first when the
   * memory budget or the keep-alive unloaded it. The request is admitted to the model's scheduler
   * in the same turn as the model is found ready, so it counts as pending before any eviction can
   * look at it.
   */
  async submit(entry: ModelEntry, inputs: Record<string, Tensor>, options?: SubmitOptions): Promise<RunResult> {
    for (;;) {
      const e = await this.acquire(entry);
      if (e.state === "ready" && e.scheduler) return e.scheduler.submit(inputs, options);
    }
  }

  /**
   * `submit`, synchronously, when the model is ready and its scheduler can run the request at once
   * on the calling thread (Scheduler.trySubmitSync); undefined otherwise, and nothing ran.
   */
  trySubmitSync(entry: ModelEntry, inputs: Record<string, Tensor>, options?: SubmitOptions): RunResult | undefined {
    if (entry.state !== "ready" || !entry.scheduler) return undefined;
    entry.lastUsed = new Date();
    return entry.scheduler.trySubmitSync(inputs, options);
  }

  /**
   * The model of `entry` ready for a request, loading it first when it was unloaded by the memory
   * budget or the keep-alive (a failed or explicitly unloaded one is MODEL_NOT_READY). `entry` may
   * be a name (`name` or `name@version`): it is then looked up.
   */
  async acquire(entry: ModelEntry | string, version?: string): Promise<ReadyEntry> {
    const e = typeof entry === "string" ? this.get(entry, version) : entry;
    if (e.state === "ready" && e.model && e.scheduler) {
      e.lastUsed = new Date();
      return e as ReadyEntry;
    }
    if (e.state === "evicted" || e.state === "loading") await this.#ensureLoaded(e);
    e.lastUsed = new Date();
    return ModelTable.ready(e);
  }

  /** `e` as a ready entry, or MODEL_NOT_READY saying what state it is in. */
  static ready(e: ModelEntry): ReadyEntry {
    if (e.state !== "ready" || !e.model || !e.scheduler) {
      throw new MlosError("MODEL_NOT_READY", `model "${e.name}" version ${e.version} is ${e.state}${e.error ? `: ${e.error}` : ""}`, { name: e.name, state: e.state });
    }
    return e as ReadyEntry;
  }

  summary(e: ModelEntry): ModelSummary {
    const m = e.model;
    return {
      id: e.name,
      name: e.name,
      version: e.version,
      state: e.state,
      ...(e.error ? { error: e.error } : {}),
      target: e.target,
      ...(m?.reference ? { reference: m.reference } : {}),
      ...(m ? { plugin: m.plugin, path: m.path, memoryBytes: m.memoryBytes, inputs: m.inputs, outputs: m.outputs, details: m.describe() } : {}),
      registeredAt: e.registeredAt.toISOString(),
      ...(e.lastUsed ? { lastUsed: e.lastUsed.toISOString() } : {}),
      pending: e.scheduler?.pending ?? 0,
      ...(e.scheduler ? { batching: e.scheduler.batching, batches: e.scheduler.stats.batches, batchedRequests: e.scheduler.stats.batchedRequests } : {}),
    };
  }

  #trimTimer: NodeJS.Timeout | undefined;

  /**
   * After models are unloaded, hands the freed memory back to the OS (their arenas go back to the C
   * allocator, which would keep them): once, shortly after a burst of unloads.
   */
  #trimSoon(): void {
    if (this.#trimTimer) return;
    this.#trimTimer = setTimeout(() => {
      this.#trimTimer = undefined;
      tryLoadNative()?.trimMemory?.();
    }, 100);
    this.#trimTimer.unref();
  }

  async close(): Promise<void> {
    if (this.#idleTimer) clearInterval(this.#idleTimer);
    for (const e of this.list()) await this.#dispose(e);
    this.#models.clear();
  }

  async #dispose(e: ModelEntry): Promise<void> {
    const m = e.model;
    if (!m) return;
    e.state = "unloading";
    e.model = undefined;
    e.scheduler = undefined;
    this.#changed(e);
    await m.dispose();
    this.#trimSoon();
    e.state = "evicted"; // loads again on its next request; unload() marks it "unloaded"
    this.#changed(e);
  }
}

function compareVersions(a: string, b: string): number {
  const va = semver.valid(a);
  const vb = semver.valid(b);
  if (va && vb) return semver.compare(va, vb);
  if (va) return 1;
  if (vb) return -1;
  return a.localeCompare(b, "en", { numeric: true });
}
