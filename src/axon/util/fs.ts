import { randomBytes } from "node:crypto";
import { rename, rm, writeFile, mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fsError } from "../errors.js";

/** Writes a file atomically: a sibling temp file, then rename over the target. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, data, { mode });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw fsError(e, file);
  }
}

export async function readJson<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

export function randomId(): string {
  return `${process.pid}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

/** Whether a process with this pid is alive (signal 0 probes without sending). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
