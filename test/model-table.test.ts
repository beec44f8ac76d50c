// The server's model table: names and versions side by side, states, a memory budget that evicts
// idle models least recently used first (they load again on their next request, and requests keep
// succeeding while models come and go), and the keep-alive.
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { Axon, MlosError, Runtime, Tensor, seedDemoModels } from "mlos";
import { tryLoadOrt } from "../bindings/native.js";
import { ModelTable } from "../src/core/model-table.js";

const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";
const isCode = (code: string) => (e: unknown) => e instanceof MlosError && e.code === code;

describe("ModelTable", { skip }, () => {
  let axon: Axon;
  let home: string;

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-table-"));
    axon = new Axon({ home });
    await seedDemoModels(axon);
    // demo/mlp@2.0.0 beside 1.0.0: the same weights under another version.
    const [record] = await axon.findInstalled("demo/mlp@1.0.0");
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-mlp2-"));
    copyFileSync(path.join(record!.path, "model.onnx"), path.join(dir, "model.onnx"));
    writeFileSync(path.join(dir, "axon.yaml"), readFileSync(path.join(record!.path, "axon.yaml"), "utf8").replace("version: 1.0.0", "version: 2.0.0").replace(/\n\s+size: \d+|\n\s+sha256: \S+/g, ""));
    await axon.pack(dir);
  });

  it("keeps versions side by side: a name is its highest version", async () => {
    const table = new ModelTable(new Runtime({ axon }));
    await table.register({ target: "demo/mlp@1.0.0" });
    await table.register({ target: "demo/mlp@2.0.0" });
    assert.equal(table.get("mlp").version, "2.0.0");
    assert.equal(table.get("mlp", "1.0.0").version, "1.0.0");
    assert.equal(table.get("mlp@1.0.0").version, "1.0.0");
    assert.throws(() => table.get("mlp", "3.0.0"), isCode("MODEL_NOT_FOUND"));
    await assert.rejects(table.register({ id: "mlp", target: "demo/tiny-cnn@1.0.0" }), isCode("MODEL_EXISTS"));
    await assert.rejects(table.register({ id: "bad name!", target: "demo/mlp@1.0.0" }), isCode("MODEL_INVALID"));
    const again = await table.register({ target: "demo/mlp@1.0.0" });
    assert.equal(again, table.get("mlp@1.0.0"), "registering the same target again is idempotent");
    await table.unregister("mlp", "2.0.0");
    assert.equal(table.get("mlp").version, "1.0.0");
    await table.unload("mlp");
    assert.equal(table.get("mlp").state, "unloaded");
    await assert.rejects(table.acquire("mlp"), isCode("MODEL_NOT_READY"), "an explicit unload stays unloaded");
    await table.load("mlp");
    assert.equal((await table.acquire("mlp")).state, "ready");
    await table.close();
  });

  it("evicts idle models LRU under a memory budget, reloads them on demand, and requests keep succeeding", async () => {
    const probe = new ModelTable(new Runtime({ axon }));
    const sizes: Record<string, number> = {};
    for (const t of ["demo/embedder@1.0.0", "demo/mlp@1.0.0", "demo/tiny-cnn@1.0.0"]) sizes[t] = (await probe.register({ target: t })).model!.memoryBytes;
    await probe.close();
    // Room for the embedder and one small model, not for all three.
    const budget = sizes["demo/embedder@1.0.0"]! + Math.max(sizes["demo/mlp@1.0.0"]!, sizes["demo/tiny-cnn@1.0.0"]!) + 16;
    const evicted: string[] = [];
    const table = new ModelTable(new Runtime({ axon }), { maxMemoryBytes: budget, onEvict: (e, why) => evicted.push(`${e.name}:${why}`) });
    await table.register({ target: "demo/embedder@1.0.0" });
    await table.register({ target: "demo/mlp@1.0.0" });
    await table.register({ target: "demo/tiny-cnn@1.0.0" });
    assert.ok(table.loadedBytes <= budget, `${table.loadedBytes} bytes loaded, budget ${budget}`);
    assert.deepEqual(evicted, ["embedder:memory"], "the least recently used idle model went");
    assert.equal(table.get("embedder").state, "evicted");

    const inputs: Record<string, () => Record<string, Tensor>> = {
      embedder: () => ({ input_ids: Tensor.int64([1, 5], [1, 2, 3, 4, 5]) }),
      mlp: () => ({ x: Tensor.float32([1, 4], [1, 2, 3, 4]) }),
      "tiny-cnn": () => ({ image: Tensor.float32([1, 3, 224, 224]) }),
    };
    const names = Object.keys(inputs);
    const results = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const name = names[i % 3]!;
        const out = await table.submit(table.get(name), inputs[name]!());
        return Object.keys(out).length;
      }),
    );
    assert.ok(results.every((n) => n === 1), "every request was answered");
    assert.ok(table.evictions > 1, `models were evicted and reloaded while requests went on (${table.evictions} evictions)`);
    assert.ok(table.loadedBytes <= budget);
    await table.close();
  });

  it("unloads models idle past the keep-alive, and loads them again on the next request", async () => {
    const table = new ModelTable(new Runtime({ axon }), { keepAliveMs: 100 });
    await table.register({ target: "demo/mlp@1.0.0" });
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(table.get("mlp").state, "evicted");
    const e = await table.acquire("mlp");
    assert.equal(e.state, "ready");
    const { y } = await e.scheduler.submit({ x: Tensor.float32([1, 4]) });
    assert.deepEqual(y!.shape, [1, 3]);
    await table.close();
  });
});
