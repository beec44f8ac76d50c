import { Command, Flags, type Interfaces } from "@oclif/core";
import type { Axon } from "../axon/axon.js";
import { AxonError } from "../axon/errors.js";
import { printError } from "./render.js";
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
    printError(err, this.jsonEnabled());
    this.exit(err.oclif?.exit && err.oclif.exit !== 0 ? err.oclif.exit : 1);
  }
}

export { formatBytes } from "./render.js";

/** "500M", "2GiB", "1.5G", "1024" -> bytes. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$/i.exec(s.trim());
  if (!m) throw new AxonError("BAD_ARGUMENT", `'${s}' is not a size (examples: 500M, 2G, 1GiB, 1048576)`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.round(Number(m[1]) * mult);
}
