import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Axon, AxonError, seedDemoModels } from "mlos";

test("the package's public entry installs the demo models offline", async () => {
  const axon = new Axon({ home: mkdtempSync(path.join(tmpdir(), "axon-lib-")) });
  const seeded = await seedDemoModels(axon);
  assert.deepEqual(seeded.map((s) => s.reference), ["demo/embedder@1.0.0", "demo/mlp@1.0.0", "demo/tiny-cnn@1.0.0", "demo/tiny-embed@1.0.0", "demo/tiny-gpt@1.0.0"]);
  const { record, alreadyInstalled } = await axon.install("demo/mlp@^1");
  assert.equal(alreadyInstalled, true);
  assert.equal(readFileSync(path.join(record.path, "model.onnx")).subarray(0, 2).length, 2);
  const info = await axon.info("demo/mlp");
  assert.deepEqual(info.manifest.spec.io?.inputs[0], { name: "x", dtype: "float32", shape: ["batch", 4] });
  await assert.rejects(axon.install("demo/mlp@^9"), (e: unknown) => e instanceof AxonError && e.code === "NO_MATCHING_VERSION");
  await axon.close();
});
