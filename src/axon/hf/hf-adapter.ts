/**
 * `axon install hf/ORG/NAME[@REVISION]`: turns a Hugging Face repository at one commit into an
 * Axon model in the local store. The revision (branch, tag or commit; default `main`) is resolved
 * to its commit once, and every file is fetched from that commit, so a branch that moves during
 * the download cannot mix two commits. LFS files carry their sha256 in the hub's file list and are
 * verified while they stream; small files are hashed while they stream. Then an `axon.yaml` is
 * generated (framework and format detected from the files), the OCI artifact is built and named
 * `hf/<org>/<name>:0.0.0-rev-<commit12>` in the local store (source `hf`).
 *
 * A repeat install of the same commit transfers nothing: LFS blobs are found by digest, and the
 * digests of small files are taken from the manifest that the earlier install left in the store.
 */
import { readFile } from "node:fs/promises";
import { minimatch } from "minimatch";
import YAML from "yaml";
import { AxonError } from "../errors.js";
import { MANIFEST_API_VERSION, type AxonManifest, type ManifestFile } from "../manifest/types.js";
import { Annotations, assertSafeRelativePath, buildArtifact } from "../oci/artifact.js";
import type { AxonPaths } from "../paths.js";
import type { LocalStore } from "../store/local-store.js";
import { ggufManifestFacts } from "../gguf/gguf-header.js";
import { detectModel, filesToRefine, refineDetection } from "./detect.js";
import { HubClient, type HubFile } from "./hub-client.js";

export interface HfProgressEvent {
  /** Path of the file in the repository. */
  file: string;
  /** New bytes (negative when a restarted download discards some). */
  delta: number;
  /** Size of the file. */
  total?: number;
}

export interface PullFromHubOptions {
  paths: AxonPaths;
  store: LocalStore;
  /** Organisation or user, as the hub spells it. */
  org: string;
  /** Repository name, as the hub spells it. */
  name: string;
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** minimatch globs on repository paths; a file is kept when it matches one (all files when absent or empty). A glob without `/` matches base names anywhere; `dir/` means everything under dir. */
  include?: string[];
  /** minimatch globs on repository paths; a file is dropped when it matches one. */
  exclude?: string[];
  /** Files downloaded at once (default 4). */
  concurrency?: number;
  onProgress?: (e: HfProgressEvent) => void;
  /** Defaults to `new HubClient()` (HF_ENDPOINT, HF_TOKEN). */
  client?: HubClient;
  signal?: AbortSignal;
}

export interface PullFromHubResult {
  /** Local store repository: `hf/<org>/<name>`, lower case. */
  repository: string;
  /** Local store tag: the manifest's version, `0.0.0-rev-<first 12 of commit>`. */
  tag: string;
  manifestDigest: string;
  manifest: AxonManifest;
  /** The commit the revision resolved to (40 hex). */
  commit: string;
  /** The generated axon.yaml text. */
  axonYaml: string;
  /** Bytes that came over the network for files (0 on a repeat install). */
  transferred: number;
}

const MAX_REFINE_BYTES = 16 << 20;

/** Lower case, characters outside [a-z0-9._-] replaced by `-`, separator runs collapsed and trimmed, so the result is a valid Axon name. */
export function hfNamePart(s: string): string {
  const out = s
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, "-")
    .replace(/[._-]{2,}/g, (m) => m[0]!)
    .replace(/^[._-]+|[._-]+$/g, "");
  if (out === "") throw new AxonError("BAD_REFERENCE", `'${s}' cannot be turned into a model name`);
  return out;
}

/** Where `pullFromHub` names a model in the local store, and its manifest's identity. */
export function hfIdentity(org: string, name: string, commit: string): { repository: string; namespace: string; name: string; version: string } {
  const o = hfNamePart(org);
  const n = hfNamePart(name);
  return { repository: `hf/${o}/${n}`, namespace: `hf.${o}`, name: n, version: `0.0.0-rev-${commit.slice(0, 12)}` };
}

/** Whether a repository path passes the include/exclude globs. */
export function hfFileSelected(path: string, include?: string[], exclude?: string[]): boolean {
  const match = (glob: string): boolean => {
    let g = glob.trim().replace(/^\.\//, "");
    if (g.endsWith("/")) g += "**";
    return minimatch(path, g, { dot: true, matchBase: !g.includes("/") });
  };
  if (include && include.length > 0 && !include.some(match)) return false;
  if (exclude && exclude.some(match)) return false;
  return true;
}

export async function pullFromHub(opts: PullFromHubOptions): Promise<PullFromHubResult> {
  const { store, org, name } = opts;
  const repoId = `${org}/${name}`;
  const revision = opts.revision ?? "main";
  const client = opts.client ?? new HubClient();
  const info = await client.modelInfo(repoId, revision, opts.signal);
  const commit = info.sha;
  const id = hfIdentity(org, name, commit);

  for (const f of info.files) assertSafeRelativePath(f.path, `hf/${repoId}@${revision}`);
  const files = info.files.filter((f) => hfFileSelected(f.path, opts.include, opts.exclude)).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (info.files.length === 0) throw new AxonError("HF_ERROR", `hf/${repoId}@${revision} has no files`, { repo: repoId, revision });
  if (files.length === 0) {
    throw new AxonError("BAD_ARGUMENT", `no file of hf/${repoId}@${revision} is left after --include/--exclude (${info.files.length} files in the repository)`, {
      repo: repoId,
      revision,
      include: opts.include ?? [],
      exclude: opts.exclude ?? [],
    });
  }

  // Digests of small (non-LFS) files from an earlier install of this same commit.
  const known = new Map<string, { digest: string; size: number }>();
  const earlier = await store.find(id.repository, id.version);
  if (earlier) {
    try {
      const { json } = await store.readManifest(earlier.digest);
      for (const l of json.layers) {
        const p = l.annotations?.[Annotations.filepath];
        if (p) known.set(p, { digest: l.digest, size: l.size });
      }
    } catch {
      /* unreadable: download again */
    }
  }

  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const results: ManifestFile[] = new Array(files.length);
  let transferred = 0;
  let next = 0;
  let failure: { error: unknown } | undefined;

  const one = async (f: HubFile): Promise<ManifestFile> => {
    const progress = (delta: number): void => opts.onProgress?.({ file: f.path, delta, total: f.size });
    if (f.size === 0) {
      const { digest } = await store.blobs.putBytes(new Uint8Array(0));
      return { path: f.path, size: 0, sha256: digest };
    }
    const open = async (offset: number, signal?: AbortSignal): Promise<{ body: AsyncIterable<Uint8Array>; offset: number }> => {
      const r = await client.openFile(repoId, commit, f.path, offset, signal ?? ac.signal);
      return { body: r.body, offset: r.offset };
    };
    if (f.lfsSha256) {
      const r = await store.blobs.fetch({ digest: `sha256:${f.lfsSha256}`, size: f.size, open, onBytes: progress, signal: ac.signal });
      transferred += r.transferred;
      return { path: f.path, size: f.size, sha256: r.digest };
    }
    const k = known.get(f.path);
    if (k && k.size === f.size && (await store.blobs.has(k.digest, k.size))) {
      return { path: f.path, size: f.size, sha256: k.digest };
    }
    const r = await store.blobs.fetch({ key: `hf:${repoId}:${commit}:${f.path}`, size: f.size, open, onBytes: progress, signal: ac.signal });
    transferred += r.transferred;
    return { path: f.path, size: r.size, sha256: r.digest };
  };

  const worker = async (): Promise<void> => {
    while (!failure) {
      const i = next++;
      if (i >= files.length) return;
      try {
        results[i] = await one(files[i]!);
      } catch (e) {
        if (!failure) {
          failure = { error: e };
          ac.abort(e);
        }
        return;
      }
    }
  };
  try {
    const n = Math.max(1, Math.min(opts.concurrency ?? 4, files.length));
    await Promise.all(Array.from({ length: n }, () => worker()));
  } finally {
    opts.signal?.removeEventListener("abort", onOuterAbort);
  }
  if (failure) throw failure.error;

  // What the files are: names first, then a few small JSON files read from the store.
  const byPath = new Map(results.map((f) => [f.path, f]));
  let detection = detectModel(results);
  const toRead = new Set(filesToRefine(detection, results));
  detection = await refineDetection(detection, results, async (p) => {
    const f = byPath.get(p);
    if (!f || !toRead.has(p) || f.size > MAX_REFINE_BYTES) return undefined;
    return readFile(store.blobs.path(f.sha256), "utf8").catch(() => undefined);
  });

  // A GGUF model: the context length and chat template are in the file's header.
  let license = info.license;
  if (detection.framework === "gguf" && detection.entrypoint) {
    const f = byPath.get(detection.entrypoint);
    if (f) {
      const facts = await ggufManifestFacts(store.blobs.path(f.sha256));
      const llm = { ...facts.llm, ...detection.llm };
      delete llm.tokenizer; // the vocabulary is in the file
      detection = { ...detection, llm, tags: [...new Set([...detection.tags, ...facts.tags])] };
      license ??= facts.license;
    }
  }

  const pinned = revision === commit;
  const manifest: AxonManifest = {
    apiVersion: MANIFEST_API_VERSION,
    kind: "Model",
    metadata: {
      namespace: id.namespace,
      name: id.name,
      version: id.version,
      description: `Hugging Face model ${repoId} at revision ${revision}${pinned ? "" : ` (commit ${commit})`}`,
      ...(license ? { license } : {}),
      tags: [...new Set([...detection.tags, ...(info.pipelineTag ? [info.pipelineTag] : []), "huggingface"])],
      source: client.repoUrl(repoId),
    },
    spec: {
      framework: { name: detection.framework },
      format: {
        type: detection.format,
        ...(detection.entrypoint ? { entrypoint: detection.entrypoint } : {}),
        files: results.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 })),
      },
      ...(detection.llm ? { llm: detection.llm } : {}),
    },
  };
  const axonYaml = `# Generated by axon from ${client.repoUrl(repoId)} at commit ${commit}\n${YAML.stringify(manifest, { lineWidth: 0 })}`;
  const art = buildArtifact(manifest, axonYaml);
  await store.blobs.putBytes(art.config);
  await store.blobs.putBytes(art.axonYaml);
  const manifestDigest = await store.tag(id.repository, id.version, art.manifestBytes, "hf");
  return { repository: id.repository, tag: id.version, manifestDigest, manifest, commit, axonYaml, transferred };
}
