/**
 * Optional packages: frameworks a plugin uses when the user has installed them, and that a plain
 * `npm install mlos` does not pull (TensorFlow.js today; the llama.cpp engine next). They are
 * optional peer dependencies in package.json (`peerDependencies` + `peerDependenciesMeta`), so the
 * range that works is declared once and npm checks it when the user adds one.
 *
 * Packages are resolved from mlos's own folder (where npm puts peers, and where our own dev
 * installs have them). Nothing here loads a package at module load: `optionalPackageDir()` only
 * resolves paths, and `optionalImport()` loads on first use. When a package is missing, the error
 * (and {@link missingPackagesReason}, for a plugin's availability) says exactly what to run.
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { packageRoot } from "../../bindings/native.js";

const require = createRequire(import.meta.url);

/** Thrown by {@link optionalImport} when an optional package is not installed. */
export class MissingPackageError extends Error {
  readonly code = "PACKAGE_MISSING";
  /** The packages that are missing. */
  readonly packages: readonly string[];
  /** The command that installs them (`npm install pkg@range ...`). */
  readonly install: string;
  constructor(packages: readonly string[], why: string, options?: { cause?: unknown }) {
    super(missingPackagesReason(packages, why), options);
    this.name = "MissingPackageError";
    this.packages = packages;
    this.install = installCommand(packages);
  }
}

let peerRanges: Record<string, string> | undefined;

/** The range mlos's package.json declares for a peer dependency, if it does. */
export function peerRange(name: string): string | undefined {
  if (!peerRanges) {
    try {
      const pj = JSON.parse(readFileSync(path.join(packageRoot(), "package.json"), "utf8")) as { peerDependencies?: Record<string, string> };
      peerRanges = pj.peerDependencies ?? {};
    } catch {
      peerRanges = {};
    }
  }
  return peerRanges[name];
}

/** `npm install a@range b@range`: the versions mlos declares, so that npm picks ones that fit. */
export function installCommand(packages: readonly string[]): string {
  return `npm install ${packages.map((p) => (peerRange(p) ? `${p}@${peerRange(p)}` : p)).join(" ")}`;
}

/**
 * One line for a plugin's unavailability: `<why> needs A and B, which are not installed (optional
 * peer dependencies of mlos): npm install A@range B@range`.
 */
export function missingPackagesReason(packages: readonly string[], why: string): string {
  const names = packages.length <= 1 ? packages.join("") : `${packages.slice(0, -1).join(", ")} and ${packages[packages.length - 1]}`;
  const verb = packages.length <= 1 ? "which is not installed (an optional peer dependency of mlos)" : "which are not installed (optional peer dependencies of mlos)";
  return `${why} needs ${names}, ${verb}: ${installCommand(packages)}`;
}

/** Package folders found so far (a package installed while the process runs is found on the next ask). */
const packageDirs = new Map<string, string>();

/** The folder of an installed package (resolved from mlos's own folder), or undefined. Loads nothing. */
export function optionalPackageDir(name: string): string | undefined {
  const known = packageDirs.get(name);
  if (known) return known;
  // Node's lookup for a bare name, by folder: `require.resolve("<name>/package.json")` would fail
  // for a package whose "exports" do not list its package.json.
  for (const base of require.resolve.paths(name) ?? []) {
    const dir = path.join(base, name);
    if (existsSync(path.join(dir, "package.json"))) {
      packageDirs.set(name, dir);
      return dir;
    }
  }
  return undefined;
}

const versions = new Map<string, string>();

/** An installed package's version from its package.json (without loading the package), or undefined. */
export function optionalPackageVersion(name: string): string | undefined {
  const known = versions.get(name);
  if (known) return known;
  const dir = optionalPackageDir(name);
  if (!dir) return undefined;
  try {
    const v = (JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as { version?: string }).version;
    if (v) versions.set(name, v);
    return v;
  } catch {
    return undefined;
  }
}

/**
 * Loads an optional package, or throws a {@link MissingPackageError} saying what to install
 * (`why` names who needs it: "the tensorflow plugin"). CommonJS packages are `require`d (cheaper
 * than `import()`, which lexes a bundle for its export names); an ESM-only one is imported, and
 * its default export is returned when it has one. A package that is installed but fails to load
 * rethrows its own error.
 */
export async function optionalImport<T = unknown>(name: string, why: string): Promise<T> {
  if (!optionalPackageDir(name)) throw new MissingPackageError([name], why);
  try {
    return require(name) as T;
  } catch (e) {
    const code = (e as { code?: string }).code;
    // An ES module: Node 20 refuses to require() one (with top-level await: on every version).
    if (code !== "ERR_REQUIRE_ESM" && code !== "ERR_REQUIRE_ASYNC_MODULE" && code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
  }
  const mod = (await import(name)) as { default?: unknown };
  return (mod.default ?? mod) as T;
}
