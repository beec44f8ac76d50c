import { createRequire } from "node:module";
import type SemverModule from "semver";

// semver's index loads ~50 modules; load it only when a request actually needs range logic, so
// that installing an exact, cached version starts fast.
let semverModule: typeof SemverModule | undefined;
function semverLib(): typeof SemverModule {
  return (semverModule ??= createRequire(import.meta.url)("semver") as typeof SemverModule);
}

/** A plain `MAJOR.MINOR.PATCH[-pre][+build]` version (no range operators). */
export const EXACT_VERSION = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
import { AxonError } from "./errors.js";

/**
 * Picks the tag a version request means among a repository's tags: `latest` is the highest release
 * (pre-releases only when nothing else exists), an exact tag matches itself, a semver range the
 * highest satisfying tag. Returns undefined when nothing matches.
 */
export function pickTag(tags: string[], request: string): string | undefined {
  if (request.startsWith("sha256:")) return undefined;
  if (EXACT_VERSION.test(request)) return tags.includes(request) ? request : undefined;
  const semver = semverLib();
  const versions = tags.filter((t) => semver.valid(t));
  if (request === "latest") {
    const releases = versions.filter((v) => !semver.prerelease(v));
    const pool = releases.length ? releases : versions;
    if (!pool.length) return tags.includes("latest") ? "latest" : undefined;
    return semver.rsort([...pool])[0];
  }
  if (tags.includes(request)) return request;
  const range = semver.validRange(request.replace(/^v(?=\d)/, ""));
  if (!range) return undefined;
  return semver.maxSatisfying(versions, range, { includePrerelease: false }) ?? undefined;
}

export function noMatchingVersion(repo: string, request: string, tags: string[], where: string): AxonError {
  const shown = tags.length ? semverSortDesc(tags).slice(0, 8).join(", ") : "none";
  return new AxonError("NO_MATCHING_VERSION", `no version of ${repo} in ${where} satisfies '${request}' (available: ${shown})`, { repository: repo, request, tags });
}

export function semverSortDesc(tags: string[]): string[] {
  const semver = semverLib();
  return [...tags].sort((a, b) => {
    const va = semver.valid(a);
    const vb = semver.valid(b);
    if (va && vb) return semver.rcompare(va, vb);
    if (va) return -1;
    if (vb) return 1;
    return a < b ? -1 : 1;
  });
}
