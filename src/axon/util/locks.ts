import { mkdir } from "node:fs/promises";
import path from "node:path";
import { AxonError } from "../errors.js";

/**
 * Cross-process mutual exclusion on a name, for several `axon` processes sharing one AXON_HOME.
 * proper-lockfile takes a lock by `mkdir` (atomic on every filesystem we care about) and keeps
 * its mtime fresh; a lock whose holder died (SIGKILL) goes stale after `staleMs` and is taken over.
 */
export interface LockOptions {
  /** How long to wait for another holder before LOCK_TIMEOUT. */
  waitMs?: number;
  staleMs?: number;
}

const DEFAULT_STALE_MS = Number(process.env.AXON_LOCK_STALE_MS ?? 4000);

export async function withLock<T>(lockDir: string, name: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  await mkdir(lockDir, { recursive: true });
  const target = path.join(lockDir, name.replace(/[^A-Za-z0-9._-]/g, "_"));
  const stale = Math.max(2000, opts.staleMs ?? DEFAULT_STALE_MS);
  const waitMs = opts.waitMs ?? 10 * 60_000;
  const started = Date.now();
  // Loaded on first use: proper-lockfile pulls in graceful-fs, which costs start-up time.
  const lockfile = (await import("proper-lockfile")).default;
  let release: (() => Promise<void>) | undefined;
  let delay = 15;
  for (;;) {
    try {
      release = await lockfile.lock(target, { realpath: false, stale, update: Math.floor(stale / 2), retries: 0 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ELOCKED") throw e;
      if (Date.now() - started > waitMs) {
        throw new AxonError("LOCK_TIMEOUT", `timed out after ${waitMs} ms waiting for lock '${name}' held by another axon process`, { lock: target });
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 250);
    }
  }
  try {
    return await fn();
  } finally {
    await release().catch(() => {});
  }
}

/** Bounded parallelism: at most `limit` of the returned function's calls run at once. */
export function limiter(limit: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  const next = () => {
    if (active >= limit) return;
    const run = queue.shift();
    if (run) {
      active++;
      run();
    }
  };
  return <T>(fn: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      queue.push(() => {
        fn().then(resolve, reject).finally(() => {
          active--;
          next();
        });
      });
      next();
    });
}
