import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { ConfigStore, registryUrl, type RegistryConfig } from "./config.js";
import { AxonError } from "./errors.js";
import { MANIFEST_API_VERSION, MANIFEST_FILENAME, type AxonManifest, type AxonManifestDraft } from "./manifest/types.js";
import { Annotations, artifactFiles, buildArtifact, MediaTypes, type Descriptor, type OciManifest } from "./oci/artifact.js";
import { AxonPaths } from "./paths.js";
import { formatReference, parseReference, repositoryOf, type ModelReference } from "./reference.js";
import { EXACT_VERSION, noMatchingVersion, pickTag, semverSortDesc } from "./resolve-version.js";
import type { OciRegistryClient } from "./registry/oci-client.js";
import { BlobStore } from "./store/blob-store.js";
import { InstallDb, type InstallRecord } from "./store/installs.js";
import { LocalStore, type LocalRef } from "./store/local-store.js";
import { limiter, withLock } from "./util/locks.js";

/** A progress event: `delta` new bytes of `file` (of `total`), from any long operation. */
export interface ProgressEvent {
  file: string;
  delta: number;
  total?: number;
}
export type ProgressSink = (e: ProgressEvent) => void;

export interface InstallOptions {
  /** Registry to use instead of the local store and configured ones (a name or host[:port]/URL). */
  registry?: string;
  /** Hugging Face only: globs of files to take / to leave. */
  include?: string[];
  exclude?: string[];
  onProgress?: ProgressSink;
  signal?: AbortSignal;
}

export interface InstallResult {
  record: InstallRecord;
  /** The reference as resolved: `ns/name@version`. */
  reference: string;
  /** Bytes that came over the network. */
  transferred: number;
  /** True when the model was already installed with this digest. */
  alreadyInstalled: boolean;
}

export interface ModelInfo {
  record: InstallRecord;
  manifest: AxonManifest;
  lastUsed: string;
}

export interface SearchHit {
  reference: string;
  where: string;
  score: number;
  description?: string;
  tags?: string[];
  installed: boolean;
}

export interface VerifyProblem {
  model: string;
  file: string;
  problem: string;
}

const AXON_YAML_LAYER = MediaTypes.axonManifest;

/**
 * Axon: the model package manager, as a library. The CLI is a thin client of this class; the
 * runtime uses it to resolve and install what it loads. One instance per AXON_HOME; safe to use
 * from several processes at once (every shared file is written atomically, under a lock where
 * a read-modify-write is needed).
 */
export class Axon {
  readonly paths: AxonPaths;
  readonly config: ConfigStore;
  readonly store: LocalStore;
  readonly blobs: BlobStore;
  readonly installs: InstallDb;
  readonly #clients = new Map<string, OciRegistryClient>();

  constructor(opts: { home?: string } = {}) {
    this.paths = new AxonPaths(opts.home);
    this.config = new ConfigStore(this.paths);
    this.blobs = new BlobStore(this.paths);
    this.store = new LocalStore(this.paths, this.blobs);
    this.installs = new InstallDb(this.paths, this.blobs);
  }

  /** Closes registry connections (lets the process exit promptly). */
  async close(): Promise<void> {
    await Promise.all([...this.#clients.values()].map((c) => c.close()));
    this.#clients.clear();
  }

  async parse(raw: string): Promise<ModelReference> {
    const names = new Set((await this.config.registries()).map((r) => r.name));
    return parseReference(raw, (s) => names.has(s));
  }

  /** An OCI client for a configured registry name, a host[:port] or a URL (cached per URL). */
  async client(nameOrHost: string | RegistryConfig): Promise<OciRegistryClient> {
    const reg = typeof nameOrHost === "string" ? await this.config.registry(nameOrHost) : nameOrHost;
    const url = registryUrl(reg.url, reg.insecure);
    let c = this.#clients.get(url);
    if (!c) {
      const [{ OciRegistryClient }, { DefaultCredentialProvider }] = await Promise.all([import("./registry/oci-client.js"), import("./registry/credentials.js")]);
      const retries = Number(await this.config.get("retries"));
      c = new OciRegistryClient({ url, retries, credentials: new DefaultCredentialProvider({ store: this.paths.credentials }) });
      this.#clients.set(url, c);
    }
    return c;
  }

  /** Remote registries to try for a reference without one: the default first, then the others. */
  async #remoteCandidates(): Promise<RegistryConfig[]> {
    const regs = await this.config.registries();
    const def = String(await this.config.get("default_registry"));
    const first = regs.filter((r) => r.name === def);
    return [...first, ...regs.filter((r) => r.name !== def)];
  }

  // ---------------------------------------------------------------- install

  /** Resolves a reference and installs it (from the local store when it is there, else a registry or the hub). */
  async install(raw: string, opts: InstallOptions = {}): Promise<InstallResult> {
    await this.installs.sweep({ views: false });
    const ref = await this.parse(raw);
    if (ref.kind === "path") {
      const packed = await this.pack(ref.path);
      return { record: packed.record, reference: packed.reference, transferred: 0, alreadyInstalled: false };
    }
    if (ref.kind === "hf") {
      const { pullFromHub } = await import("./hf/hf-adapter.js");
      const { HubClient } = await import("./hf/hub-client.js");
      const endpoint = process.env.HF_ENDPOINT ?? String(await this.config.get("hf_endpoint"));
      const pulled = await pullFromHub({
        paths: this.paths,
        store: this.store,
        org: ref.org,
        name: ref.name,
        revision: ref.revision,
        include: opts.include,
        exclude: opts.exclude,
        concurrency: Number(await this.config.get("concurrency")),
        onProgress: opts.onProgress,
        signal: opts.signal,
        client: new HubClient({ endpoint }),
      });
      const res = await this.#installFromStore(pulled.repository, pulled.tag, "hf");
      return { ...res, transferred: pulled.transferred };
    }

    const repo = repositoryOf(ref);
    const targets = opts.registry ? [await this.config.registry(opts.registry)] : ref.registry ? [await this.config.registry(ref.registry)] : await this.#remoteCandidates();
    if (!ref.registry && !opts.registry) {
      const local = await this.#findLocal(repo, ref.version);
      // An exact version or a digest is immutable: the local copy is the answer, with no network.
      // `latest` and ranges ask the configured registries for something newer, and fall back to
      // the local store when none is configured or they cannot be reached.
      const immutable = ref.version.startsWith("sha256:") || EXACT_VERSION.test(ref.version);
      if (local && (immutable || targets.length === 0)) return this.#installFromStore(local.repository, local.tag, local.source);
      if (local) {
        try {
          return await this.#installFromRegistries(targets, repo, ref.version, opts);
        } catch (e) {
          if (e instanceof AxonError && (e.code === "NETWORK" || e.code === "NOT_FOUND" || e.code === "NO_MATCHING_VERSION")) {
            return this.#installFromStore(local.repository, local.tag, local.source);
          }
          throw e;
        }
      }
    }
    if (targets.length === 0) {
      const tags = await this.store.tags(repo);
      if (tags.length) throw noMatchingVersion(repo, ref.version, tags, "the local store");
      throw new AxonError("NOT_FOUND", `${formatReference(ref)} is not in the local store and no registry is configured (add one with 'axon registry add NAME URL')`, { reference: raw });
    }
    return this.#installFromRegistries(targets, repo, ref.version, opts);
  }

  async #installFromRegistries(targets: RegistryConfig[], repo: string, version: string, opts: InstallOptions): Promise<InstallResult> {
    let lastNotFound: AxonError | undefined;
    for (const reg of targets) {
      try {
        return await this.#pull(reg, repo, version, opts);
      } catch (e) {
        if (e instanceof AxonError && (e.code === "NOT_FOUND" || e.code === "NO_MATCHING_VERSION") && targets.length > 1) {
          lastNotFound = e;
          continue;
        }
        throw e;
      }
    }
    throw lastNotFound!;
  }

  async #findLocal(repo: string, version: string): Promise<LocalRef | undefined> {
    if (version.startsWith("sha256:")) return this.store.findByDigest(repo, version);
    const tag = pickTag(await this.store.tags(repo), version);
    return tag ? this.store.find(repo, tag) : undefined;
  }

  async #pull(reg: RegistryConfig, repo: string, version: string, opts: InstallOptions): Promise<InstallResult> {
    const client = await this.client(reg);
    const host = client.host;
    let reference = version;
    if (!version.startsWith("sha256:")) {
      const tags = await client.listTags(repo);
      const tag = pickTag(tags, version);
      if (!tag) throw noMatchingVersion(repo, version, tags, host);
      reference = tag;
    }
    const man = await client.getManifest(repo, reference);
    if (man.mediaType === MediaTypes.ociIndex || Array.isArray(man.json?.manifests)) {
      throw new AxonError("REGISTRY_ERROR", `${host}/${repo}@${reference} is an image index, not a model artifact`);
    }
    const manifest = man.json as OciManifest;
    const where = `${host}/${repo}@${reference}`;
    const { isOllamaManifest } = await import("./oci/ollama.js");
    // An Ollama model has no file paths: it becomes a GGUF package once downloaded.
    const ollama = isOllamaManifest(manifest);
    if (!ollama) artifactFiles(manifest, where); // rejects unsafe paths before anything is downloaded
    const blobs: Descriptor[] = [manifest.config, ...manifest.layers];
    const concurrency = Number(await this.config.get("concurrency"));
    const retries = Number(await this.config.get("retries"));
    const limit = limiter(concurrency);
    let transferred = 0;
    const controller = new AbortController();
    opts.signal?.addEventListener("abort", () => controller.abort(opts.signal!.reason), { once: true });
    const settled = await Promise.allSettled(
      blobs.map((d) =>
        limit(async () => {
          const name = d.annotations?.[Annotations.filepath] ?? (d === manifest.config ? "config" : d.digest.slice(7, 19));
          if (await this.blobs.has(d.digest, d.size)) {
            opts.onProgress?.({ file: name, delta: d.size, total: d.size });
            return;
          }
          const r = await this.blobs.fetch({
            digest: d.digest,
            size: d.size,
            retries,
            signal: controller.signal,
            open: (offset, signal) => client.openBlob(repo, d.digest, offset, signal),
            direct: client.directBlobFetcher(repo, d.digest),
            onBytes: (delta) => opts.onProgress?.({ file: name, delta, total: d.size }),
          });
          transferred += r.transferred;
        }).catch((e) => {
          controller.abort(e);
          throw e;
        }),
      ),
    );
    const failures = settled.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as unknown);
    if (failures.length) {
      // Partial downloads are kept for resuming, except when the disk is full: then they are
      // what fills it, and every one of this install's is removed.
      const diskFull = failures.find((e) => e instanceof AxonError && e.code === "DISK_FULL");
      if (diskFull) {
        const { rm } = await import("node:fs/promises");
        await Promise.all(blobs.map((d) => rm(this.paths.partial(d.digest), { force: true })));
        throw diskFull;
      }
      throw failures[0];
    }
    if (ollama) return { ...(await this.#installOllama(manifest, repo, reference, host)), transferred };
    let tag = reference;
    if (reference.startsWith("sha256:")) {
      tag = manifest.annotations?.[Annotations.version] ?? (await this.#axonYamlOf(manifest))?.metadata.version ?? `sha256-${reference.slice(7, 19)}`;
    }
    await this.store.tag(repo, tag, man.bytes, host);
    const res = await this.#installFromStore(repo, tag, host);
    return { ...res, transferred };
  }

  /** Stores an Ollama model, its blobs downloaded, as a GGUF package (oci/ollama.ts) and installs it. */
  async #installOllama(manifest: OciManifest, repo: string, tag: string, host: string): Promise<InstallResult> {
    const { ollamaPackage } = await import("./oci/ollama.js");
    const { stringifyManifest } = await import("./manifest/parse.js");
    const { createHash } = await import("node:crypto");
    const digestOf = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    const pkg = await ollamaPackage(manifest, { repo, tag, source: host, blobPath: (d) => this.blobs.path(d), digestOf });
    // Ollama tags (8b, latest, q4_K_M) are not versions: the manifest's version is a semver
    // prerelease that says which tag it was; the model installs under the tag itself.
    if (!EXACT_VERSION.test(pkg.manifest.metadata.version)) pkg.manifest.metadata.version = `0.0.0-${tag.replace(/[^0-9A-Za-z-]+/g, "-")}`;
    for (const g of pkg.generated) await this.blobs.putBytes(g.bytes);
    const notes = pkg.notes.map((n) => `# ${n}\n`).join("");
    const yamlText = `# Converted by axon from the Ollama model ${host}/${repo}:${tag}\n${notes}${stringifyManifest(pkg.manifest)}`;
    const art = buildArtifact(pkg.manifest, yamlText);
    await this.blobs.putBytes(art.config);
    await this.blobs.putBytes(art.axonYaml);
    await this.store.tag(repo, tag, art.manifestBytes, host);
    return this.#installFromStore(repo, tag, host);
  }

  async #axonYamlOf(manifest: OciManifest): Promise<AxonManifest | undefined> {
    const layer = manifest.layers.find((l) => l.mediaType === AXON_YAML_LAYER || l.annotations?.[Annotations.filepath] === MANIFEST_FILENAME);
    if (!layer || !(await this.blobs.has(layer.digest))) return undefined;
    const { parseManifest } = await import("./manifest/parse.js");
    return parseManifest(await readFile(this.blobs.path(layer.digest), "utf8"), `${MANIFEST_FILENAME} (${layer.digest.slice(0, 19)})`);
  }

  /** Builds the installed view of a manifest that is in the local store. */
  async #installFromStore(repository: string, tag: string, source: string): Promise<InstallResult> {
    const entry = await this.store.find(repository, tag);
    if (!entry) throw new AxonError("NOT_FOUND", `${repository}:${tag} is not in the local store`);
    // Fast path (no lock, no YAML): this exact manifest is installed already.
    const [ns, nm, ...restSegs] = repository.split("/");
    if (restSegs.length === 0 && ns && nm) {
      const existing = await this.installs.get(ns, nm, tag);
      if (existing && existing.digest === entry.digest && (await stat(existing.path).catch(() => undefined))) {
        await this.installs.touch(existing);
        return { record: existing, reference: `${ns}/${nm}@${tag}`, transferred: 0, alreadyInstalled: true };
      }
    }
    const { json } = await this.store.readManifest(entry.digest);
    const where = `${repository}:${tag}`;
    const files = artifactFiles(json, where);
    const axonYaml = await this.#axonYamlOf(json);
    if (!axonYaml) throw new AxonError("MANIFEST_FILE", `${where} has no ${MANIFEST_FILENAME} layer; it is not an Axon model`);
    // The artifact's layers and its axon.yaml must agree, or a view would not be what the manifest says.
    const byPath = new Map(files.map((f) => [f.path, f]));
    for (const f of axonYaml.spec.format.files) {
      const l = byPath.get(f.path);
      if (!l || l.digest !== f.sha256 || l.size !== f.size) {
        throw new AxonError("MANIFEST_FILE", `${where}: ${MANIFEST_FILENAME} lists ${f.path} (${f.sha256}) but the artifact's layer ${l ? `is ${l.digest}` : "is missing"}`);
      }
    }
    const segs = repository.split("/");
    const namespace = segs.length === 2 ? segs[0]! : axonYaml.metadata.namespace;
    const name = segs.length === 2 ? segs[1]! : axonYaml.metadata.name;
    const version = tag;
    return withLock(this.paths.locks, `model-${namespace}-${name}-${version}`, async () => {
      const existing = await this.installs.get(namespace, name, version);
      if (existing && existing.digest === entry.digest && (await stat(existing.path).catch(() => undefined))) {
        await this.installs.touch(existing);
        return { record: existing, reference: `${namespace}/${name}@${version}`, transferred: 0, alreadyInstalled: true };
      }
      const record = await this.installs.install({
        namespace,
        name,
        version,
        digest: entry.digest,
        source,
        files: files.map((f) => ({ path: f.path, digest: f.digest, size: f.size })),
      });
      return { record, reference: `${namespace}/${name}@${version}`, transferred: 0, alreadyInstalled: false };
    });
  }

  // ---------------------------------------------------------------- pack / push

  /** A draft manifest for a folder without axon.yaml, from its files. */
  async #draftFromFiles(root: string, as: string | undefined): Promise<AxonManifestDraft> {
    const { listModelFiles } = await import("./manifest/files.js");
    const { detectModel, filesToRefine, refineDetection } = await import("./hf/detect.js");
    const files = (await listModelFiles(root)).map((f) => ({ path: f.path }));
    let detection = detectModel(files);
    if (detection.framework === "other" || !detection.entrypoint) {
      throw new AxonError("MANIFEST_FILE", `no ${MANIFEST_FILENAME} in ${root}, and no model file it could be made from (ONNX, TorchScript, TF.js, SavedModel, safetensors, GGUF)`, { dir: root });
    }
    const readable = new Set(filesToRefine(detection, files));
    detection = await refineDetection(detection, files, async (p) => (readable.has(p) ? readFile(path.join(root, p), "utf8").catch(() => undefined) : undefined));
    const toName = (s: string) => s.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "") || "model";
    let namespace = "local";
    let name = toName(path.basename(root));
    let license: string | undefined;
    if (detection.framework === "gguf" && detection.entrypoint) {
      const entry = detection.entrypoint;
      // A GGUF file carries what the manifest needs: the rest comes from its header.
      const ggufs = files.map((f) => f.path).filter((p) => p.toLowerCase().endsWith(".gguf"));
      if (ggufs.length > 1) throw new AxonError("MANIFEST_FILE", `${root} holds several GGUF files (${ggufs.join(", ")}): pack a folder with the one to serve, or write an ${MANIFEST_FILENAME} that names it`, { dir: root });
      const { ggufManifestFacts } = await import("./gguf/gguf-header.js");
      const facts = await ggufManifestFacts(path.join(root, entry));
      name = toName(path.basename(entry, path.extname(entry)));
      detection.llm = { ...facts.llm, ...detection.llm };
      delete detection.llm.tokenizer; // the vocabulary is in the file
      detection.tags = [...new Set([...detection.tags, ...facts.tags])];
      license = facts.license;
    }
    let version = "1.0.0";
    if (as !== undefined) {
      const ref = parseReference(as);
      if (ref.kind !== "registry" || ref.registry !== undefined || !EXACT_VERSION.test(ref.version)) throw new AxonError("BAD_REFERENCE", `--as ${as}: give NAMESPACE/NAME@VERSION with an exact version`);
      ({ namespace, name } = ref);
      version = ref.version;
    }
    if (detection.llm && !detection.llm.tokenizer && files.some((f) => f.path === "tokenizer.json")) detection.llm.tokenizer = "tokenizer.json";
    if (detection.llm && !detection.llm.config && files.some((f) => f.path === "config.json")) detection.llm.config = "config.json";
    return {
      apiVersion: MANIFEST_API_VERSION,
      kind: "Model",
      metadata: { namespace, name, version, description: `Packed by axon from the files of ${path.basename(root)}`, tags: detection.tags, ...(license ? { license } : {}) },
      spec: {
        framework: { name: detection.framework },
        format: { type: detection.format, entrypoint: detection.entrypoint },
        ...(detection.llm ? { llm: detection.llm } : {}),
      },
    };
  }

  /**
   * Validates `dir/axon.yaml`, hashes the files, stores the model in the local store and installs
   * it. A folder without an axon.yaml is packed from what its files are (the detection the Hugging
   * Face adapter uses: an ONNX model, a language model in Hugging Face's layout with its tokenizer,
   * chat template and context length ...), as `opts.as` (`NAMESPACE/NAME@VERSION`; default
   * `local/<folder name>@1.0.0`); the folder itself is not written to.
   */
  async pack(dir: string, opts: { onProgress?: ProgressSink; as?: string } = {}): Promise<{ reference: string; digest: string; manifest: AxonManifest; record: InstallRecord; files: number; size: number }> {
    const { readManifest, stringifyManifest } = await import("./manifest/parse.js");
    const { completeManifest, resolveModelFile } = await import("./manifest/files.js");
    const root = path.resolve(dir);
    const st = await stat(root).catch(() => undefined);
    if (!st?.isDirectory()) throw new AxonError("BAD_ARGUMENT", `${dir} is not a folder`);
    const hasYaml = await stat(path.join(root, MANIFEST_FILENAME)).then(() => true, () => false);
    if (hasYaml && opts.as !== undefined) throw new AxonError("BAD_ARGUMENT", `${dir} has an ${MANIFEST_FILENAME}: its metadata names the model (--as is for folders without one)`);
    const draft = hasYaml ? await readManifest(root, { draft: true }) : await this.#draftFromFiles(root, opts.as);
    const manifest = await completeManifest(root, draft, { file: path.join(dir, MANIFEST_FILENAME) });
    for (const f of manifest.spec.format.files) {
      const r = await resolveModelFile(root, f.path);
      const abs = r && "abs" in r ? r.abs : path.join(root, f.path);
      await this.blobs.putFile(abs, f.sha256, f.size);
      opts.onProgress?.({ file: f.path, delta: f.size, total: f.size });
    }
    const yamlText = stringifyManifest(manifest);
    const art = buildArtifact(manifest, yamlText);
    await this.blobs.putBytes(art.config);
    await this.blobs.putBytes(art.axonYaml);
    const repo = `${manifest.metadata.namespace}/${manifest.metadata.name}`;
    const digest = await this.store.tag(repo, manifest.metadata.version, art.manifestBytes, "local");
    const { record } = await this.#installFromStore(repo, manifest.metadata.version, "local");
    return { reference: `${repo}@${manifest.metadata.version}`, digest, manifest, record, files: manifest.spec.format.files.length, size: record.size };
  }

  /** Publishes a model from the local store to a registry. */
  async push(raw: string, opts: { registry: string; repository?: string; onProgress?: ProgressSink; mountFrom?: string }): Promise<{ registry: string; repository: string; tag: string; digest: string; uploaded: number; skipped: number; mounted: number }> {
    const entry = await this.#resolveLocal(raw);
    const client = await this.client(opts.registry);
    const { bytes, json } = await this.store.readManifest(entry.digest);
    const repo = opts.repository ?? (entry.repository.split("/").length === 2 ? entry.repository : await this.#metadataRepo(json, entry));
    const limit = limiter(Number(await this.config.get("concurrency")));
    const counts = { uploaded: 0, skipped: 0, mounted: 0 };
    await Promise.all(
      [json.config, ...json.layers].map((d) =>
        limit(async () => {
          const r = await client.pushBlob(repo, d.digest, d.size, () => createReadStream(this.blobs.path(d.digest)), opts.mountFrom ? { mountFrom: opts.mountFrom } : {});
          counts[r === "uploaded" ? "uploaded" : r === "mounted" ? "mounted" : "skipped"]++;
          opts.onProgress?.({ file: d.annotations?.[Annotations.filepath] ?? "config", delta: d.size, total: d.size });
        }),
      ),
    );
    const digest = await client.pushManifest(repo, entry.tag, bytes, json.mediaType ?? MediaTypes.ociManifest);
    return { registry: client.host, repository: repo, tag: entry.tag, digest, ...counts };
  }

  async #metadataRepo(json: OciManifest, entry: LocalRef): Promise<string> {
    const y = await this.#axonYamlOf(json);
    return y ? `${y.metadata.namespace}/${y.metadata.name}` : entry.repository;
  }

  /** A reference -> an entry of the local store (what pack, install and pull put there). */
  async #resolveLocal(raw: string): Promise<LocalRef> {
    const ref = await this.parse(raw);
    if (ref.kind === "path") throw new AxonError("BAD_ARGUMENT", `${raw} is a folder: run 'axon pack ${raw}' first`);
    const repo = ref.kind === "hf" ? `hf/${ref.org}/${ref.name}`.toLowerCase() : repositoryOf(ref);
    const version = ref.kind === "hf" ? "latest" : ref.version;
    const hit = await this.#findLocal(repo, version);
    if (!hit) {
      const tags = await this.store.tags(repo);
      if (tags.length) throw noMatchingVersion(repo, version, tags, "the local store");
      throw new AxonError("NOT_FOUND", `${raw} is not in the local store (install or pack it first)`);
    }
    return hit;
  }

  // ---------------------------------------------------------------- installed models

  /** Installed records matching a reference (all versions when it names none and `all` is set). */
  async findInstalled(raw: string, opts: { all?: boolean } = {}): Promise<InstallRecord[]> {
    const ref = await this.parse(raw);
    let namespace: string, name: string, version: string;
    if (ref.kind === "path") throw new AxonError("BAD_ARGUMENT", `${raw} is a folder, not an installed model`);
    if (ref.kind === "hf") {
      const { hfIdentity } = await import("./hf/hf-adapter.js");
      const id = hfIdentity(ref.org, ref.name, "0".repeat(40));
      const recs = (await this.installs.list()).filter((r) => r.namespace === id.namespace && r.name === id.name);
      if (/^[a-f0-9]{7,40}$/.test(ref.revision)) return recs.filter((r) => ref.revision.startsWith(r.version.replace("0.0.0-rev-", "")));
      return opts.all ? recs : recs.sort((a, b) => b.installedAt.localeCompare(a.installedAt)).slice(0, 1);
    }
    ({ namespace, name, version } = ref);
    const recs = (await this.installs.list()).filter((r) => r.namespace === namespace && r.name === name);
    if (opts.all) return recs;
    if (version.startsWith("sha256:")) return recs.filter((r) => r.digest === version);
    const tag = pickTag(recs.map((r) => r.version), version);
    return recs.filter((r) => r.version === tag);
  }

  async #oneInstalled(raw: string): Promise<InstallRecord> {
    const recs = await this.findInstalled(raw);
    if (!recs.length) throw new AxonError("NOT_INSTALLED", `${raw} is not installed (see 'axon list')`);
    return recs[0]!;
  }

  async list(): Promise<Array<InstallRecord & { lastUsed: string }>> {
    return this.installs.listWithLastUse();
  }

  async info(raw: string): Promise<ModelInfo> {
    const record = await this.#oneInstalled(raw);
    const { parseManifest } = await import("./manifest/parse.js");
    const manifest = parseManifest(await readFile(path.join(record.path, MANIFEST_FILENAME), "utf8"), path.join(record.path, MANIFEST_FILENAME));
    return { record, manifest, lastUsed: new Date(await this.installs.lastUsed(record)).toISOString() };
  }

  /** Removes an installed version (or all with `all`), and frees blobs nothing references any more. */
  async uninstall(raw: string, opts: { all?: boolean } = {}): Promise<{ removed: string[]; freedBytes: number }> {
    const recs = await this.findInstalled(raw, opts);
    if (!recs.length) throw new AxonError("NOT_INSTALLED", `${raw} is not installed (see 'axon list')`);
    const removed: string[] = [];
    for (const r of recs) await this.#evict(r, removed);
    const { freedBytes } = await this.gc();
    return { removed, freedBytes };
  }

  async #evict(r: InstallRecord, removed: string[]): Promise<void> {
    await withLock(this.paths.locks, `model-${r.namespace}-${r.name}-${r.version}`, async () => {
      await this.installs.remove(r);
      // Packed models stay in the local store (it is their registry); pulled ones are only a cache.
      if (r.source !== "local") {
        for (const ref of await this.store.refs()) {
          if (ref.digest === r.digest && ref.tag === r.version) await this.store.untag(ref.repository, ref.tag);
        }
      }
    });
    removed.push(`${r.namespace}/${r.name}@${r.version}`);
  }

  /** Deletes blobs that no manifest in the local store and no installed view references. */
  async gc(): Promise<{ freedBytes: number; removedBlobs: number }> {
    return withLock(this.paths.locks, "gc", async () => {
      const live = await this.store.referencedBlobs();
      for (const r of await this.installs.list()) {
        live.add(r.digest);
        for (const f of r.files) live.add(f.digest);
      }
      let freedBytes = 0;
      let removedBlobs = 0;
      for (const b of await this.blobs.list()) {
        if (live.has(b.digest)) continue;
        await this.blobs.remove(b.digest);
        freedBytes += b.size;
        removedBlobs++;
      }
      return { freedBytes, removedBlobs };
    });
  }

  /** Re-hashes the files of installed models (one reference, or all). */
  async verify(raw?: string, opts: { onProgress?: ProgressSink } = {}): Promise<{ checked: number; problems: VerifyProblem[] }> {
    const recs = raw ? await this.findInstalled(raw) : await this.installs.list();
    if (raw && !recs.length) throw new AxonError("NOT_INSTALLED", `${raw} is not installed (see 'axon list')`);
    const { hashFile } = await import("./store/blob-store.js");
    const problems: VerifyProblem[] = [];
    let checked = 0;
    for (const r of recs) {
      const model = `${r.namespace}/${r.name}@${r.version}`;
      for (const f of r.files) {
        checked++;
        const file = path.join(r.path, ...f.path.split("/"));
        const h = await hashFile(file).catch(() => undefined);
        opts.onProgress?.({ file: `${model}:${f.path}`, delta: f.size, total: f.size });
        if (!h) problems.push({ model, file: f.path, problem: "missing" });
        else if (h.size !== f.size) problems.push({ model, file: f.path, problem: `size ${h.size}, expected ${f.size}` });
        else if (h.digest !== f.digest) problems.push({ model, file: f.path, problem: `hashes to ${h.digest}, expected ${f.digest}` });
      }
    }
    return { checked, problems };
  }

  // ---------------------------------------------------------------- cache

  async cacheList(): Promise<Array<LocalRef & { installed: boolean }>> {
    const installed = new Set((await this.installs.list()).map((r) => r.digest));
    return (await this.store.refs()).map((r) => ({ ...r, installed: installed.has(r.digest) }));
  }

  async cacheStats(): Promise<{ blobs: number; bytes: number; referencedBytes: number; unreferencedBytes: number; partialBytes: number; models: number; installedBytes: number; savedByDedup: number }> {
    const blobs = await this.blobs.list();
    const live = await this.store.referencedBlobs();
    const recs = await this.installs.list();
    for (const r of recs) for (const f of r.files) live.add(f.digest);
    const bytes = blobs.reduce((s, b) => s + b.size, 0);
    const referencedBytes = blobs.filter((b) => live.has(b.digest)).reduce((s, b) => s + b.size, 0);
    const installedBytes = recs.reduce((s, r) => s + r.size, 0);
    const uniqueInstalled = new Map<string, number>();
    for (const r of recs) for (const f of r.files) uniqueInstalled.set(f.digest, f.size);
    const partialBytes = (await this.blobs.partials()).reduce((s, p) => s + p.size, 0);
    return {
      blobs: blobs.length,
      bytes,
      referencedBytes,
      unreferencedBytes: bytes - referencedBytes,
      partialBytes,
      models: recs.length,
      installedBytes,
      savedByDedup: installedBytes - [...uniqueInstalled.values()].reduce((s, n) => s + n, 0),
    };
  }

  /** Re-hashes every blob; corrupt ones are removed with `fix` (installs that used them then fail verify). */
  async cacheVerify(opts: { fix?: boolean } = {}): Promise<{ checked: number; corrupt: Array<{ digest: string; actual?: string }> }> {
    const corrupt: Array<{ digest: string; actual?: string }> = [];
    const blobs = await this.blobs.list();
    for (const b of blobs) {
      const r = await this.blobs.verify(b.digest);
      if (!r.ok) {
        corrupt.push({ digest: b.digest, actual: r.actual });
        if (opts.fix) await this.blobs.remove(b.digest);
      }
    }
    return { checked: blobs.length, corrupt };
  }

  /** Removes partial downloads, leftovers of interrupted installs, and unreferenced blobs. */
  async cacheClean(): Promise<{ freedBytes: number; removed: number }> {
    const { rm } = await import("node:fs/promises");
    let freed = 0;
    let removed = 0;
    for (const p of await this.blobs.partials()) {
      await withLock(this.paths.locks, `blob-${p.file.slice(-72)}`, () => rm(p.file, { force: true }), { waitMs: 1000 }).then(
        () => {
          freed += p.size;
          removed++;
        },
        () => {}, // in use by a running download
      );
    }
    removed += (await this.installs.sweep()).removed.length;
    const g = await this.gc();
    return { freedBytes: freed + g.freedBytes, removed: removed + g.removedBlobs };
  }

  /**
   * Frees unreferenced blobs; with `maxSize`, also evicts installed models that came from a
   * registry or the hub (they can be fetched again), least recently used first, until the cache fits.
   */
  async cachePrune(opts: { maxSize?: number } = {}): Promise<{ evicted: string[]; freedBytes: number; bytes: number }> {
    let freed = (await this.gc()).freedBytes;
    const evicted: string[] = [];
    if (opts.maxSize !== undefined) {
      const total = async () => (await this.blobs.list()).reduce((s, b) => s + b.size, 0);
      const recs = (await this.installs.list()).filter((r) => r.source !== "local");
      const withUse = await Promise.all(recs.map(async (r) => ({ r, used: await this.installs.lastUsed(r) })));
      withUse.sort((a, b) => a.used - b.used);
      for (const { r } of withUse) {
        if ((await total()) <= opts.maxSize) break;
        await this.#evict(r, evicted);
        freed += (await this.gc()).freedBytes;
      }
    }
    return { evicted, freedBytes: freed, bytes: (await this.blobs.list()).reduce((s, b) => s + b.size, 0) };
  }

  // ---------------------------------------------------------------- search

  /** Installed models, the local store and the catalogs of configured registries, ranked by name, tags and description. */
  async search(query: string, opts: { remote?: boolean } = {}): Promise<{ hits: SearchHit[]; errors: Array<{ registry: string; error: string }> }> {
    const terms = query.toLowerCase().split(/\s+/).filter(Boolean);
    const hits = new Map<string, SearchHit>();
    const add = (h: SearchHit) => {
      if (h.score <= 0) return;
      const prev = hits.get(`${h.where}|${h.reference}`);
      if (!prev || prev.score < h.score) hits.set(`${h.where}|${h.reference}`, h);
    };
    const installed = await this.installs.list();
    const installedDigests = new Set(installed.map((r) => r.digest));
    const byRepo = new Map<string, LocalRef[]>();
    for (const r of await this.store.refs()) byRepo.set(r.repository, [...(byRepo.get(r.repository) ?? []), r]);
    for (const [repo, refs] of byRepo) {
      const latest = semverSortDesc(refs.map((r) => r.tag))[0]!;
      const entry = refs.find((r) => r.tag === latest)!;
      let description: string | undefined;
      let tags: string[] | undefined;
      try {
        const y = await this.#axonYamlOf((await this.store.readManifest(entry.digest)).json);
        description = y?.metadata.description;
        tags = y?.metadata.tags;
      } catch {
        /* unreadable entries are still found by name */
      }
      add({ reference: `${repo}@${latest}`, where: "local", score: score(terms, repo, tags, description) + (installedDigests.has(entry.digest) ? 1 : 0), description, tags, installed: refs.some((r) => installedDigests.has(r.digest)) });
    }
    const errors: Array<{ registry: string; error: string }> = [];
    if (opts.remote !== false) {
      for (const reg of await this.config.registries()) {
        try {
          const client = await this.client(reg);
          for (const repo of await client.catalog()) {
            const s = score(terms, repo);
            if (s > 0) add({ reference: `${reg.name}/${repo}`, where: reg.name, score: s, installed: byRepo.has(repo) });
          }
        } catch (e) {
          errors.push({ registry: reg.name, error: (e as Error).message });
        }
      }
    }
    return { hits: [...hits.values()].sort((a, b) => b.score - a.score || a.reference.localeCompare(b.reference)), errors };
  }
}

/** Name matches weigh most (exact > prefix > substring), then tags, then description words. */
function score(terms: string[], repo: string, tags: string[] = [], description = ""): number {
  if (!terms.length) return 1;
  const name = repo.toLowerCase();
  const base = name.split("/").pop()!;
  const desc = description.toLowerCase();
  let total = 0;
  for (const t of terms) {
    let s = 0;
    if (base === t || name === t) s = 100;
    else if (base.startsWith(t)) s = 60;
    else if (name.includes(t)) s = 40;
    if (tags.some((g) => g.toLowerCase() === t)) s = Math.max(s, 30);
    else if (tags.some((g) => g.toLowerCase().includes(t))) s = Math.max(s, 15);
    if (desc.includes(t)) s = Math.max(s, 10);
    if (s === 0) return 0; // every term must match somewhere
    total += s;
  }
  return total;
}
