/**
 * One error type for the whole Axon layer. Every failure a user can cause or meet carries a
 * stable `code` (for scripts and `--json`) and a one-line message that says what was wrong and
 * where. The CLI prints `error[CODE]: message` and exits non-zero.
 */
export type AxonErrorCode =
  | "MANIFEST_PARSE" // axon.yaml is not valid YAML
  | "MANIFEST_INVALID" // axon.yaml violates the schema
  | "MANIFEST_FILE" // a file listed in / found for the manifest is missing, escapes, or mismatches
  | "PATH_ESCAPE" // a path leaves the model folder (../, absolute, symlink out)
  | "BAD_REFERENCE" // a model reference that cannot be parsed
  | "NOT_FOUND" // model, version, tag or blob not found
  | "NO_MATCHING_VERSION" // no tag satisfies the requested semver range
  | "DIGEST_MISMATCH" // downloaded or stored bytes do not hash to their digest
  | "SIZE_MISMATCH" // downloaded bytes are not the advertised size
  | "REGISTRY_AUTH" // 401/403 from a registry, or a token flow that failed
  | "REGISTRY_RATE_LIMIT" // 429 after retries
  | "REGISTRY_ERROR" // other 4xx/5xx from a registry after retries
  | "NETWORK" // connection refused/reset/timeout after retries
  | "DISK_FULL" // ENOSPC / EDQUOT while writing
  | "LOCK_TIMEOUT" // another axon process holds a lock for too long
  | "NOT_INSTALLED" // operation on a model that is not installed
  | "VERIFY_FAILED" // axon verify found a corrupt file
  | "CONFIG_INVALID" // config.yaml or a config key/value is invalid
  | "BAD_ARGUMENT" // a flag or argument that makes no sense
  | "HF_ERROR"; // the Hugging Face adapter failed

export class AxonError extends Error {
  readonly code: AxonErrorCode;
  /** Extra machine-readable context (file, line, column, path, status, url ...). */
  readonly details: Record<string, unknown>;

  constructor(code: AxonErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AxonError";
    this.code = code;
    this.details = details;
  }

  toJSON(): { error: string; code: AxonErrorCode; details: Record<string, unknown> } {
    return { error: this.message, code: this.code, details: this.details };
  }
}

export function isAxonError(e: unknown): e is AxonError {
  return e instanceof AxonError;
}

/** Maps low-level filesystem errors to Axon errors where the user can act on them. */
export function fsError(e: unknown, where: string): Error {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new AxonError("DISK_FULL", `no space left on device while writing ${where}`, { path: where }, { cause: e });
  }
  return e instanceof Error ? e : new Error(String(e));
}
