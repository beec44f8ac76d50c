import type { Hook } from "@oclif/core";

/** An unknown command fails like every other error: one line, `error[BAD_ARGUMENT]: ...`, exit 2. */
const hook: Hook<"command_not_found"> = async function (opts) {
  // With a space as topic separator, oclif hands over the words that follow too: keep the command.
  const words = opts.id.split(/[: ]/);
  const topics = new Set(opts.config.topics.map((t) => t.name));
  const id = topics.has(words[0]!) ? words.slice(0, 2).join(" ") : words[0]!;
  const known = opts.config.commandIDs.map((c) => c.replace(/:/g, " "));
  const near = known.filter((c) => c.startsWith(id.split(" ")[0]!.slice(0, 3)));
  process.stderr.write(`error[BAD_ARGUMENT]: unknown command '${id}'${near.length ? ` (did you mean ${near.slice(0, 3).map((n) => `'${n}'`).join(", ")}?)` : ""}; see 'axon --help'\n`);
  process.exit(2);
};

export default hook;
