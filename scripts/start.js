#!/usr/bin/env node
// `npm start`: the main job on embedded defaults, offline. Seeds the local store in $AXON_HOME
// (default ~/.axon) with the bundled demo models, then shows what is installed.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
if (!existsSync(path.join(root, "dist", "src", "axon", "axon.js"))) {
  console.error("mlos is not built: run 'npm install' (or 'npm run build') first");
  process.exit(1);
}
const { Axon } = await import("../dist/src/axon/axon.js");
const { seedDemoModels } = await import("../dist/src/axon/demo.js");
const axon = new Axon();
const seeded = await seedDemoModels(axon);
console.log(`local store: ${axon.paths.store}`);
for (const s of seeded) console.log(`  packed ${s.reference}  ${s.digest.slice(0, 19)}`);
await axon.close();
console.log("\n$ axon list");
spawnSync(process.execPath, [path.join(root, "bin", "run.js"), "list"], { stdio: "inherit" });
console.log("\nTry: npx axon info demo/mlp · npx axon search demo · npx axon verify");
