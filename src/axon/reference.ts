import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { AxonError } from "./errors.js";

/** A parsed model reference. See DESIGN.md "References". */
export type ModelReference =
  | {
      kind: "registry";
      /** A host[:port] or the name of a configured registry; undefined = local store, then configured ones. */
      registry?: string;
      namespace: string;
      name: string;
      /** `latest` when omitted; a semver version or range, a tag, or `sha256:<hex>`. */
      version: string;
      /** The text the user wrote. */
      raw: string;
    }
  | { kind: "hf"; org: string; name: string; revision: string; raw: string }
  | { kind: "path"; path: string; raw: string };

const COMPONENT = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;

export function repositoryOf(ref: { namespace: string; name: string }): string {
  return `${ref.namespace}/${ref.name}`;
}

function looksLikeHost(s: string): boolean {
  return s === "localhost" || s.includes(".") || s.includes(":");
}

/**
 * Parses `[REGISTRY/]NAMESPACE/NAME[@VERSION]`, `hf/ORG/NAME[@REVISION]`, or a path to a folder
 * holding an `axon.yaml`. `isRegistryName` tells whether a first segment names a configured registry.
 */
export function parseReference(raw: string, isRegistryName: (s: string) => boolean = () => false): ModelReference {
  const text = raw.trim();
  if (!text) throw new AxonError("BAD_REFERENCE", "empty model reference");
  if (text.startsWith("./") || text.startsWith("../") || text.startsWith("/") || text === "." || text.startsWith("~/")) {
    return { kind: "path", path: path.resolve(text.replace(/^~\//, `${process.env.HOME ?? ""}/`)), raw };
  }
  if (!text.includes("@") && existsSync(path.join(text, "axon.yaml")) && statSync(text).isDirectory()) {
    return { kind: "path", path: path.resolve(text), raw };
  }
  const at = text.indexOf("@");
  const body = at >= 0 ? text.slice(0, at) : text;
  const version = at >= 0 ? text.slice(at + 1) : "";
  if (at >= 0 && !version) throw new AxonError("BAD_REFERENCE", `'${raw}': nothing after '@' (expected a version, range, 'latest' or sha256:<digest>)`);
  const segs = body.split("/");
  if (segs.some((s) => s === "")) throw new AxonError("BAD_REFERENCE", `'${raw}': empty path segment`);

  if (segs[0] === "hf") {
    if (segs.length !== 3) throw new AxonError("BAD_REFERENCE", `'${raw}': expected hf/ORG/NAME[@REVISION]`);
    if (!/^[\w.-]+$/.test(segs[1]!) || !/^[\w.-]+$/.test(segs[2]!)) throw new AxonError("BAD_REFERENCE", `'${raw}': invalid Hugging Face repository id`);
    return { kind: "hf", org: segs[1]!, name: segs[2]!, revision: version || "main", raw };
  }

  let registry: string | undefined;
  let rest = segs;
  if (segs.length >= 3) {
    if (looksLikeHost(segs[0]!) || isRegistryName(segs[0]!)) {
      registry = segs[0];
      rest = segs.slice(1);
    }
  }
  if (rest.length !== 2) {
    throw new AxonError("BAD_REFERENCE", `'${raw}': expected [REGISTRY/]NAMESPACE/NAME[@VERSION]`);
  }
  const [namespace, name] = rest as [string, string];
  for (const [what, v] of [["namespace", namespace], ["name", name]] as const) {
    if (!COMPONENT.test(v)) throw new AxonError("BAD_REFERENCE", `'${raw}': ${what} '${v}' must be lower case letters, digits and . _ - separators`);
  }
  if (version.startsWith("sha256:") && !/^sha256:[a-f0-9]{64}$/.test(version)) {
    throw new AxonError("BAD_REFERENCE", `'${raw}': a digest must be sha256: followed by 64 hex digits`);
  }
  return { kind: "registry", registry, namespace, name, version: version || "latest", raw };
}

/** `ns/name@1.0.0` (with the registry when one was named). */
export function formatReference(r: { registry?: string; namespace: string; name: string; version?: string }): string {
  return `${r.registry ? `${r.registry}/` : ""}${r.namespace}/${r.name}${r.version ? `@${r.version}` : ""}`;
}
