import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { AxonError } from "../errors.js";
import { Annotations, MediaTypes, type Descriptor, type OciManifest } from "../oci/artifact.js";
import { AxonPaths } from "../paths.js";
import { readJson, writeFileAtomic } from "../util/fs.js";
import { withLock } from "../util/locks.js";
import { BlobStore } from "./blob-store.js";

export interface OciIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
}

export interface LocalRef {
  /** `namespace/name` */
  repository: string;
  tag: string;
  digest: string;
  size: number;
  source: string;
}

/**
 * The local store: an OCI image layout in `$AXON_HOME/store` (oci-layout, index.json, blobs/), the
 * default registry that needs no server. Every manifest listed in index.json has all its blobs in
 * the store. Each entry is named `namespace/name:version` by `org.opencontainers.image.ref.name`.
 * index.json is rewritten atomically under a lock, so concurrent axon processes never lose entries.
 */
export class LocalStore {
  readonly blobs: BlobStore;
  readonly #paths: AxonPaths;

  constructor(paths: AxonPaths, blobs = new BlobStore(paths)) {
    this.#paths = paths;
    this.blobs = blobs;
  }

  get root(): string {
    return this.#paths.store;
  }

  async #readIndex(): Promise<OciIndex> {
    const idx = await readJson<OciIndex>(path.join(this.root, "index.json"));
    return idx ?? { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
  }

  async #writeIndex(idx: OciIndex): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await writeFileAtomic(path.join(this.root, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    await writeFileAtomic(path.join(this.root, "index.json"), JSON.stringify(idx, null, 1));
  }

  /** Every named manifest in the store. */
  async refs(): Promise<LocalRef[]> {
    const idx = await this.#readIndex();
    const out: LocalRef[] = [];
    for (const d of idx.manifests) {
      const name = d.annotations?.[Annotations.refName];
      if (!name) continue;
      const at = name.lastIndexOf(":");
      if (at <= 0) continue;
      out.push({ repository: name.slice(0, at), tag: name.slice(at + 1), digest: d.digest, size: d.size, source: d.annotations?.[Annotations.axonSource] ?? "pack" });
    }
    return out;
  }

  async tags(repository: string): Promise<string[]> {
    return (await this.refs()).filter((r) => r.repository === repository).map((r) => r.tag);
  }

  async find(repository: string, tag: string): Promise<LocalRef | undefined> {
    return (await this.refs()).find((r) => r.repository === repository && r.tag === tag);
  }

  async findByDigest(repository: string, digest: string): Promise<LocalRef | undefined> {
    return (await this.refs()).find((r) => r.repository === repository && r.digest === digest);
  }

  async readManifest(digest: string): Promise<{ bytes: Buffer; json: OciManifest }> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.blobs.path(digest));
    } catch {
      throw new AxonError("NOT_FOUND", `manifest ${digest} is not in the local store`, { digest });
    }
    return { bytes, json: JSON.parse(bytes.toString("utf8")) as OciManifest };
  }

  /**
   * Names a manifest (whose blobs must all be in the store already) as `repository:tag`, replacing
   * an older manifest of that name.
   */
  async tag(repository: string, tag: string, manifestBytes: Uint8Array, source: string): Promise<string> {
    const manifest = JSON.parse(Buffer.from(manifestBytes).toString("utf8")) as OciManifest;
    for (const d of [manifest.config, ...manifest.layers]) {
      if (!(await this.blobs.has(d.digest, d.size))) {
        throw new AxonError("NOT_FOUND", `cannot name ${repository}:${tag}: blob ${d.digest} is missing from the local store`);
      }
    }
    const { digest, size } = await this.blobs.putBytes(manifestBytes);
    await withLock(this.#paths.locks, "store-index", async () => {
      const idx = await this.#readIndex();
      const refName = `${repository}:${tag}`;
      idx.manifests = idx.manifests.filter((d) => d.annotations?.[Annotations.refName] !== refName);
      idx.manifests.push({
        mediaType: manifest.mediaType ?? MediaTypes.ociManifest,
        digest,
        size,
        ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
        annotations: { [Annotations.refName]: refName, [Annotations.axonSource]: source },
      });
      idx.manifests.sort((a, b) => (a.annotations![Annotations.refName]! < b.annotations![Annotations.refName]! ? -1 : 1));
      await this.#writeIndex(idx);
    });
    return digest;
  }

  async untag(repository: string, tag: string): Promise<boolean> {
    return withLock(this.#paths.locks, "store-index", async () => {
      const idx = await this.#readIndex();
      const before = idx.manifests.length;
      idx.manifests = idx.manifests.filter((d) => d.annotations?.[Annotations.refName] !== `${repository}:${tag}`);
      if (idx.manifests.length === before) return false;
      await this.#writeIndex(idx);
      return true;
    });
  }

  /** Digests reachable from the index: manifests, their configs and layers. */
  async referencedBlobs(): Promise<Set<string>> {
    const live = new Set<string>();
    for (const r of await this.refs()) {
      live.add(r.digest);
      try {
        const { json } = await this.readManifest(r.digest);
        live.add(json.config.digest);
        for (const l of json.layers) live.add(l.digest);
      } catch {
        /* a manifest blob missing: verify reports it */
      }
    }
    return live;
  }
}
