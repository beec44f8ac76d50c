import { createHash } from "node:crypto";
import { MANIFEST_FILENAME, type AxonManifest } from "../manifest/types.js";
import { AxonError } from "../errors.js";
import { assertSafeRelativePath } from "../manifest/validate.js";

export { assertSafeRelativePath };

/**
 * How an Axon model is laid out as an OCI artifact, following the CNCF ModelPack spec so other
 * model tools can read it: an image manifest with `artifactType` = the ModelPack manifest type, a
 * ModelPack config, one uncompressed layer per file annotated with its path, and `axon.yaml` as a
 * layer of its own (media type below) so that Axon gets its serving metadata back unchanged.
 */
export const MediaTypes = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  modelArtifact: "application/vnd.cncf.model.manifest.v1+json",
  modelConfig: "application/vnd.cncf.model.config.v1+json",
  weightRaw: "application/vnd.cncf.model.weight.v1.raw",
  weightConfigRaw: "application/vnd.cncf.model.weight.config.v1.raw",
  docRaw: "application/vnd.cncf.model.doc.v1.raw",
  codeRaw: "application/vnd.cncf.model.code.v1.raw",
  axonManifest: "application/vnd.mlos.axon.manifest.v1+yaml",
} as const;

export const Annotations = {
  filepath: "org.cncf.model.filepath",
  title: "org.opencontainers.image.title",
  version: "org.opencontainers.image.version",
  created: "org.opencontainers.image.created",
  description: "org.opencontainers.image.description",
  refName: "org.opencontainers.image.ref.name",
  /** Where a manifest in the local store came from: `pack`, `hf`, or a registry host. */
  axonSource: "io.mlos.axon.source",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface BuiltArtifact {
  manifest: OciManifest;
  manifestBytes: Buffer;
  manifestDigest: string;
  config: Buffer;
  configDigest: string;
  axonYaml: Buffer;
  axonYamlDigest: string;
}

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Chooses a ModelPack layer type from a file's name: configs and tokenizers, docs, code, weights. */
export function layerMediaType(file: string): string {
  const base = file.split("/").pop()!.toLowerCase();
  if (/\.(md|txt|rst|pdf)$/.test(base) || base === "license" || base.startsWith("license.")) return MediaTypes.docRaw;
  if (/\.(py|js|mjs|ts|sh)$/.test(base)) return MediaTypes.codeRaw;
  if (/\.(json|yaml|yml|model|tiktoken|jinja|txt)$/.test(base) || base.startsWith("tokenizer") || base === "vocab.txt" || base === "merges.txt") {
    return MediaTypes.weightConfigRaw;
  }
  return MediaTypes.weightRaw;
}

/**
 * Builds the OCI manifest for a model whose manifest lists every file with size and sha256.
 * Deterministic: the same model gives the same digest (no timestamps unless `created` is given).
 */
export function buildArtifact(m: AxonManifest, axonYaml: string, created?: string): BuiltArtifact {
  const files = m.spec.format.files;
  const config = Buffer.from(
    JSON.stringify({
      descriptor: {
        name: `${m.metadata.namespace}/${m.metadata.name}`,
        version: m.metadata.version,
        description: m.metadata.description,
        authors: m.metadata.authors,
        licenses: m.metadata.license ? [m.metadata.license] : undefined,
        ...(created ? { createdAt: created } : {}),
      },
      config: {
        format: m.spec.format.type,
        framework: m.spec.framework.name,
        frameworkVersion: m.spec.framework.version,
      },
      modelfs: { type: "layers", diffIds: files.map((f) => f.sha256) },
    }),
  );
  const yamlBytes = Buffer.from(axonYaml);
  const layers: Descriptor[] = files.map((f) => ({
    mediaType: layerMediaType(f.path),
    digest: f.sha256,
    size: f.size,
    annotations: { [Annotations.filepath]: f.path, [Annotations.title]: f.path },
  }));
  const yamlDigest = sha256(yamlBytes);
  layers.push({
    mediaType: MediaTypes.axonManifest,
    digest: yamlDigest,
    size: yamlBytes.byteLength,
    annotations: { [Annotations.filepath]: MANIFEST_FILENAME, [Annotations.title]: MANIFEST_FILENAME },
  });
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType: MediaTypes.modelArtifact,
    config: { mediaType: MediaTypes.modelConfig, digest: sha256(config), size: config.byteLength },
    layers,
    annotations: {
      [Annotations.version]: m.metadata.version,
      [Annotations.title]: `${m.metadata.namespace}/${m.metadata.name}`,
      ...(m.metadata.description ? { [Annotations.description]: m.metadata.description } : {}),
      ...(created ? { [Annotations.created]: created } : {}),
    },
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  return { manifest, manifestBytes, manifestDigest: sha256(manifestBytes), config, configDigest: manifest.config.digest, axonYaml: yamlBytes, axonYamlDigest: yamlDigest };
}

/** The files a manifest installs: every layer with a path annotation; axon.yaml marked. */
export function artifactFiles(manifest: OciManifest, where: string): Array<Descriptor & { path: string }> {
  if (!Array.isArray(manifest.layers)) throw new AxonError("REGISTRY_ERROR", `${where} is not an OCI image manifest (no layers)`);
  const out: Array<Descriptor & { path: string }> = [];
  for (const l of manifest.layers) {
    const p = l.annotations?.[Annotations.filepath] ?? l.annotations?.[Annotations.title];
    if (!p) throw new AxonError("REGISTRY_ERROR", `${where}: layer ${l.digest} has no ${Annotations.filepath} annotation`);
    assertSafeRelativePath(p, where);
    out.push({ ...l, path: p });
  }
  return out;
}
