/**
 * The two commands people run in loops and scripts, `axon list` and `axon install REF...`, served
 * without loading oclif: oclif's start-up alone (config, plugins, manifest) costs ~190 ms here, over
 * a budget of 200 ms for the whole command. Only plain forms are taken (flags `--json`, `--quiet`,
 * `--registry`); anything else — help, other flags, a parse error — returns false and goes through
 * oclif, which owns the CLI's full surface. Output is produced by the same functions (render.ts).
 */
import { parseArgs } from "node:util";
import { installResult, listResult, printError, printInstall, printList } from "./render.js";

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
  const out: string[] = [];
  const log = (l: string) => out.push(l);
  if (cmd === "list") {
    // Only the install records are needed: load just that module (and not the whole library).
    try {
      const [{ AxonPaths }, { BlobStore }, { InstallDb }] = await Promise.all([import("../axon/paths.js"), import("../axon/store/blob-store.js"), import("../axon/store/installs.js")]);
      const paths = new AxonPaths();
      const result = listResult(await new InstallDb(paths, new BlobStore(paths)).listWithLastUse());
      if (!json) printList(result, log);
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : out.map((l) => `${l}\n`).join(""));
    } catch (e) {
      printError(e as Error, json);
      process.exitCode = 1;
    }
    return true;
  }
  const { Axon } = await import("../axon/axon.js");
  const axon = new Axon();
  try {
    let result: unknown;
    {
      const showProgress = !json && !parsed.values.quiet && process.stderr.isTTY;
      const progress = showProgress ? new (await import("./progress.js")).ProgressDisplay(process.stderr) : undefined;
      await progress?.ready();
      const results = [];
      try {
        for (const ref of parsed.positionals) results.push(await axon.install(ref, { registry: parsed.values.registry as string | undefined, onProgress: progress?.sink }));
      } finally {
        progress?.stop();
      }
      result = installResult(results);
      if (!json) printInstall(result as ReturnType<typeof installResult>, log);
    }
    process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : out.map((l) => `${l}\n`).join(""));
  } catch (e) {
    printError(e as Error, json);
    process.exitCode = 1;
  } finally {
    await axon.close();
  }
  return true;
}
