import { link, mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { AxonError, fsError } from "../errors.js";
import { AxonPaths } from "../paths.js";
import { pidAlive, randomId, readJson, writeFileAtomic } from "../util/fs.js";
import { BlobStore } from "./blob-store.js";

/** Namespace, then name, then version with numeric parts compared as numbers (1.10.0 after 1.9.0). Plain code: ICU collators cost ~10 ms to create. */
function byReference(a: InstallRecord, b: InstallRecord): number {
  if (a.namespace !== b.namespace) return a.namespace < b.namespace ? -1 : 1;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  const pa = a.version.split(/[.-]/);
  const pb = b.version.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? "";
    const y = pb[i] ?? "";
    if (x === y) continue;
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) return nx - ny;
    return x < y ? -1 : 1;
  }
  return 0;
}

export interface InstalledFile {
  path: string;
  digest: string;
  size: number;
}

/** What `axon list` shows and what the runtime opens: one installed model version. */
export interface InstallRecord {
  namespace: string;
  name: string;
  version: string;
  /** Manifest digest in the local store. */
  digest: string;
  /** Where it came from: `local` (packed here), `hf`, or a registry host. */
  source: string;
  /** The installed view: a folder of hard links to blobs. */
  path: string;
  files: InstalledFile[];
  size: number;
  installedAt: string;
}

/**
 * Installed views and their records. A view is built in `tmp/`, renamed into `models/NS/NAME/VER`
 * (atomic), and only then recorded in `installs/NS/NAME/VER.json`; a record therefore always
 * points at a complete view, and anything a killed process left behind is found by `sweep()`.
 */
export class InstallDb {
  readonly #paths: AxonPaths;
  readonly #blobs: BlobStore;

  constructor(paths: AxonPaths, blobs: BlobStore) {
    this.#paths = paths;
    this.#blobs = blobs;
  }

  async get(namespace: string, name: string, version: string): Promise<InstallRecord | undefined> {
    return readJson<InstallRecord>(this.#paths.installRecord(namespace, name, version));
  }

  /** Every installed model, sorted by namespace, name, version (records read in parallel). */
  async list(): Promise<InstallRecord[]> {
    const root = this.#paths.installs;
    const files: string[] = [];
    for (const ns of await readdir(root).catch(() => [] as string[])) {
      const names = await readdir(path.join(root, ns)).catch(() => [] as string[]);
      const perName = await Promise.all(names.map((name) => readdir(path.join(root, ns, name)).then((fs) => fs.map((f) => path.join(root, ns, name, f)), () => [] as string[])));
      for (const list of perName) files.push(...list.filter((f) => f.endsWith(".json")));
    }
    const recs = await Promise.all(files.map((f) => readJson<InstallRecord>(f).catch(() => undefined)));
    return recs
      .filter((r): r is InstallRecord => r !== undefined)
      .sort(byReference);
  }

  /** `list()` with each model's last use (ISO time), for `axon list`. */
  async listWithLastUse(): Promise<Array<InstallRecord & { lastUsed: string }>> {
    const recs = await this.list();
    return Promise.all(recs.map(async (r) => ({ ...r, lastUsed: new Date(await this.lastUsed(r)).toISOString() })));
  }

  /** Marks a model used now (the record's mtime), for least-recently-used eviction. */
  async touch(r: InstallRecord): Promise<void> {
    const now = new Date();
    await utimes(this.#paths.installRecord(r.namespace, r.name, r.version), now, now).catch(() => {});
  }

  async lastUsed(r: InstallRecord): Promise<number> {
    return (await stat(this.#paths.installRecord(r.namespace, r.name, r.version)).catch(() => undefined))?.mtimeMs ?? 0;
  }

  /** Builds the view from cached blobs and records it, replacing an older install of that version. */
  async install(rec: Omit<InstallRecord, "path" | "size" | "installedAt">): Promise<InstallRecord> {
    const final = this.#paths.modelView(rec.namespace, rec.name, rec.version);
    const building = path.join(this.#paths.tmp, `view-${randomId()}`);
    try {
      for (const f of rec.files) {
        const dest = path.join(building, ...f.path.split("/"));
        if (!dest.startsWith(building + path.sep)) throw new AxonError("PATH_ESCAPE", `file path '${f.path}' escapes the model folder`);
        await mkdir(path.dirname(dest), { recursive: true });
        try {
          await link(this.#blobs.path(f.digest), dest);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new AxonError("NOT_FOUND", `blob ${f.digest} for ${f.path} is missing from the cache`);
          throw e;
        }
      }
      await mkdir(path.dirname(final), { recursive: true });
      // Replace an existing view: move it aside first so that the new one appears in one rename.
      const old = path.join(this.#paths.tmp, `old-${randomId()}`);
      const hadOld = await rename(final, old).then(() => true, () => false);
      await rename(building, final);
      if (hadOld) await rm(old, { recursive: true, force: true });
    } catch (e) {
      await rm(building, { recursive: true, force: true });
      throw fsError(e, final);
    }
    const record: InstallRecord = {
      ...rec,
      path: final,
      size: rec.files.reduce((s, f) => s + f.size, 0),
      installedAt: new Date().toISOString(),
    };
    await writeFileAtomic(this.#paths.installRecord(rec.namespace, rec.name, rec.version), JSON.stringify(record, null, 1));
    return record;
  }

  async remove(r: Pick<InstallRecord, "namespace" | "name" | "version">): Promise<void> {
    await rm(this.#paths.installRecord(r.namespace, r.name, r.version), { force: true });
    await rm(this.#paths.modelView(r.namespace, r.name, r.version), { recursive: true, force: true });
    for (const dir of [path.dirname(this.#paths.installRecord(r.namespace, r.name, r.version)), path.dirname(this.#paths.modelView(r.namespace, r.name, r.version))]) {
      await rm(dir, { recursive: false }).catch(() => {});
    }
  }

  /**
   * Removes what interrupted processes left: views being built, views moved aside, and views with
   * no record (a crash between the rename and the record). Only entries whose process is gone.
   */
  async sweep(opts: { views?: boolean } = {}): Promise<{ removed: string[] }> {
    const removed: string[] = [];
    for (const n of await readdir(this.#paths.tmp).catch(() => [] as string[])) {
      const m = /^(?:view|old|put)-(\d+)-/.exec(n);
      if (m && !pidAlive(Number(m[1]))) {
        await rm(path.join(this.#paths.tmp, n), { recursive: true, force: true });
        removed.push(path.join(this.#paths.tmp, n));
      }
    }
    if (opts.views === false) return { removed };
    const models = this.#paths.models;
    for (const ns of await readdir(models).catch(() => [] as string[])) {
      for (const name of await readdir(path.join(models, ns)).catch(() => [] as string[])) {
        for (const ver of await readdir(path.join(models, ns, name)).catch(() => [] as string[])) {
          if (!(await this.get(ns, name, ver))) {
            const dir = path.join(models, ns, name, ver);
            await rm(dir, { recursive: true, force: true });
            removed.push(dir);
          }
        }
      }
    }
    return { removed };
  }
}
