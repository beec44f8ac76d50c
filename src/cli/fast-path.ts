/**
 * The two commands people run in loops and scripts, `axon list` and `axon install REF...`, served
 * without loading oclif: oclif's start-up alone (config, plugins, manifest) costs ~190 ms here, over
 * a budget of 200 ms for the whole command. Only plain forms are taken (flags `--json`, `--quiet`,
 * `--registry`); anything else — help, other flags, a parse error — returns false and goes through
 * oclif, which owns the CLI's full surface. Output is produced by the same functions (render.ts).
 */
import { parseArgs } from "node:util";
import { listResult, printError, printList, runInstall, type Log } from "./render.js";

export async function tryFastPath(argv: string[]): Promise<boolean> {
  const [cmd, ...rest] = argv;
  if (cmd !== "list" && cmd !== "install") return false;
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: cmd === "install",
      strict: true,
      options: {
        json: { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        ...(cmd === "install" ? { registry: { type: "string", short: "r" } } : {}),
      },
    });
  } catch {
    return false;
  }
  if (cmd === "install" && parsed.positionals.length === 0) return false;
  const json = parsed.values.json === true;
  if (cmd === "list") {
    await answer(json, async (log) => {
      // Only the install records are needed: load just that module (and not the whole library).
      const [{ AxonPaths }, { BlobStore }, { InstallDb }] = await Promise.all([import("../axon/paths.js"), import("../axon/store/blob-store.js"), import("../axon/store/installs.js")]);
      const paths = new AxonPaths();
      const result = listResult(await new InstallDb(paths, new BlobStore(paths)).listWithLastUse());
      printList(result, log);
      return result;
    });
    return true;
  }
  const { Axon } = await import("../axon/axon.js");
  const axon = new Axon();
  try {
    await answer(json, async (log) => {
      const showProgress = !json && !parsed.values.quiet && process.stderr.isTTY;
      const progress = showProgress ? new (await import("./progress.js")).ProgressDisplay(process.stderr) : undefined;
      return runInstall(axon, parsed.positionals, { registry: parsed.values.registry as string | undefined }, progress, log);
    });
  } finally {
    await axon.close();
  }
  return true;
}

/**
 * Runs a command and prints as oclif's would: its result as JSON with --json, else the lines it
 * logged; a failure as printError does, with exit code 1.
 */
async function answer(json: boolean, run: (log: Log) => Promise<unknown>): Promise<void> {
  const out: string[] = [];
  try {
    const result = await run((l) => out.push(l));
    process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : out.map((l) => `${l}\n`).join(""));
  } catch (e) {
    printError(e as Error, json);
    process.exitCode = 1;
  }
}
