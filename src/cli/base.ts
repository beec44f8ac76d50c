import { Command, Flags, type Interfaces } from "@oclif/core";
import type { Axon } from "../axon/axon.js";
import { AxonError } from "../axon/errors.js";
import { ProgressDisplay } from "./progress.js";

export type BaseFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof AxonCommand)["baseFlags"] & T["flags"]>;

/**
 * Every axon command: `--json` (the result as JSON on stdout and nothing else), `--quiet`, and
 * failures as one line `error[CODE]: message` on stderr with a non-zero exit. Commands parse flags,
 * call the Axon library and print; they hold no logic of their own.
 */
export abstract class AxonCommand extends Command {
  static override enableJsonFlag = true;
  static override baseFlags = {
    quiet: Flags.boolean({ char: "q", description: "print no progress", default: false }),
  };

  #axon: Axon | undefined;

  /** The Axon library over $AXON_HOME (loaded lazily: a command that does not need it does not pay for it). */
  protected async axon(): Promise<Axon> {
    if (!this.#axon) {
      const { Axon } = await import("../axon/axon.js");
      this.#axon = new Axon();
    }
    return this.#axon;
  }

  /** A progress display on a TTY, none when piped, with --json or --quiet. */
  protected progress(flags: { quiet?: boolean; json?: boolean }): ProgressDisplay | undefined {
    if (flags.quiet || this.jsonEnabled() || !process.stderr.isTTY) return undefined;
    return new ProgressDisplay(process.stderr);
  }

  protected override async finally(err: Error | undefined): Promise<unknown> {
    await this.#axon?.close();
    return super.finally(err);
  }

  protected override async catch(err: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    // oclif's own parse errors (unknown flag, missing argument) keep their message, on one line.
    const code = err instanceof AxonError ? err.code : err.oclif ? "BAD_ARGUMENT" : "INTERNAL";
    const message = err.message.split("\n").filter((l) => l.trim() && !l.startsWith("See more help"))[0] ?? String(err);
    if (this.jsonEnabled()) {
      process.stdout.write(`${JSON.stringify({ error: message, code, ...(err instanceof AxonError ? { details: err.details } : {}) })}\n`);
    }
    process.stderr.write(`error[${code}]: ${message.replace(/^Error: /, "")}\n`);
    if (process.env.AXON_DEBUG && err.stack) process.stderr.write(`${err.stack}\n`);
    this.exit(err.oclif?.exit && err.oclif.exit !== 0 ? err.oclif.exit : 1);
  }
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

/** "500M", "2GiB", "1.5G", "1024" -> bytes. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(s.trim());
  if (!m) throw new AxonError("BAD_ARGUMENT", `'${s}' is not a size (examples: 500M, 2G, 1GiB, 1048576)`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.round(Number(m[1]) * mult);
}
