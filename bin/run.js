#!/usr/bin/env node
// The axon CLI. `list` and plain `install` take a fast path that skips oclif's start-up
// (src/cli/fast-path.ts); everything else is oclif.
const { tryFastPath } = await import("../dist/src/cli/fast-path.js");
if (!(await tryFastPath(process.argv.slice(2)))) {
  const { execute } = await import("@oclif/core");
  await execute({ dir: import.meta.url });
}
