/**
 * What list and install print, how install runs, and how any command prints a failure: shared by
 * the oclif commands and the fast path (src/cli/fast-path.ts), so both behave and print alike.
 * Light on purpose (type imports only, besides errors): the fast path loads it before anything else.
 */
import type { Axon, InstallOptions, InstallResult } from "../axon/axon.js";
import { AxonError } from "../axon/errors.js";
import type { InstallRecord } from "../axon/store/installs.js";
import type { ProgressDisplay } from "./progress.js";

export type Log = (line: string) => void;

export interface ListResult {
  models: Array<{ reference: string; digest: string; size: number; source: string; path: string; lastUsed: string }>;
}

export function listResult(records: Array<InstallRecord & { lastUsed: string }>): ListResult {
  return { models: records.map((r) => ({ reference: `${r.namespace}/${r.name}@${r.version}`, digest: r.digest, size: r.size, source: r.source, path: r.path, lastUsed: r.lastUsed })) };
}

export function printList(result: ListResult, log: Log): void {
  const models = result.models;
  if (!models.length) {
    log("no models installed (run 'npm start' to seed the demo models, or 'axon pack DIR', 'axon install REF')");
    return;
  }
  const w = Math.max(...models.map((m) => m.reference.length), 9);
  log(`${"REFERENCE".padEnd(w)}  ${"SIZE".padStart(10)}  ${"SOURCE".padEnd(16)}  DIGEST`);
  for (const m of models) log(`${m.reference.padEnd(w)}  ${formatBytes(m.size).padStart(10)}  ${m.source.padEnd(16)}  ${m.digest.slice(0, 19)}`);
}

export interface InstallJson {
  installed: Array<{ reference: string; digest: string; path: string; size: number; transferred: number; alreadyInstalled: boolean }>;
}

export function installResult(results: InstallResult[]): InstallJson {
  return {
    installed: results.map((r) => ({ reference: r.reference, digest: r.record.digest, path: r.record.path, size: r.record.size, transferred: r.transferred, alreadyInstalled: r.alreadyInstalled })),
  };
}

export function printInstall(result: InstallJson, log: Log): void {
  for (const r of result.installed) log(`${r.alreadyInstalled ? "already installed" : "installed"} ${r.reference} (${r.digest.slice(0, 19)}) -> ${r.path}`);
}

/**
 * `axon install REF...`: installs the references one after the other, showing `progress` (when
 * there is a display) until the last one ends or one fails, then prints what was installed.
 */
export async function runInstall(axon: Axon, refs: readonly string[], options: Omit<InstallOptions, "onProgress">, progress: ProgressDisplay | undefined, log: Log): Promise<InstallJson> {
  await progress?.ready();
  const results: InstallResult[] = [];
  try {
    for (const ref of refs) results.push(await axon.install(ref, { ...options, onProgress: progress?.sink }));
  } finally {
    progress?.stop();
  }
  const result = installResult(results);
  printInstall(result, log);
  return result;
}

/** One line on stderr (`error[CODE]: message`), and with --json the error object on stdout too. */
export function printError(err: Error & { oclif?: { exit?: number } }, json: boolean): void {
  // AxonError, MlosError, the server client's errors and the addon's all carry a stable code.
  const own = (err as { code?: unknown }).code;
  const code = err instanceof AxonError ? err.code : typeof own === "string" && /^[A-Z][A-Z0-9_]*$/.test(own) ? own : err.oclif ? "BAD_ARGUMENT" : "INTERNAL";
  const message = (err.message.split("\n").filter((l) => l.trim() && !l.startsWith("See more help"))[0] ?? String(err)).replace(/^Error: /, "");
  if (json) process.stdout.write(`${JSON.stringify({ error: message, code, ...(err instanceof AxonError ? { details: err.details } : {}) })}\n`);
  process.stderr.write(`error[${code}]: ${message}\n`);
  if (process.env.AXON_DEBUG && err.stack) process.stderr.write(`${err.stack}\n`);
}

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
