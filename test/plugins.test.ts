// Third-party plugins: a JS module loaded at start (serve --plugin / config `plugins`) and one
// registered at run time through POST /api/v1/plugins/register, which hot-swaps the models it
// serves: requests already admitted finish on the old version, new ones go to the new one.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Axon, MlosError, Runtime } from "mlos";
import { importPlugin } from "../src/core/runtime.js";
import { serve } from "../src/server/serve.js";
import { freePort } from "./helpers/registry.js";

// Plugin modules are written inside the package (dist/), where `import { Tensor } from "mlos"`
// resolves as it would for a plugin that depends on mlos.
const pluginsDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "test-plugins");

function writePlugin(name: string, version: string, multiplier: number, delayMs: number): string {
  mkdirSync(pluginsDir, { recursive: true });
  const file = path.join(pluginsDir, `${name}.mjs`);
  writeFileSync(
    file,
    `import { readFileSync } from "node:fs";
import { Tensor } from "mlos";
export default {
  id: "scale",
  version: ${JSON.stringify(version)},
  frameworks: ["other"],
  formats: ["scale"],
  availability() { return { available: true }; },
  async load(source) {
    const factor = JSON.parse(readFileSync(source.entrypoint, "utf8")).factor * ${multiplier};
    const io = source.manifest.spec.io;
    return {
      signature: { inputs: io.inputs, outputs: io.outputs },
      memoryBytes: 64,
      async run(req) {
        await new Promise((r) => setTimeout(r, ${delayMs}));
        const x = req.inputs.x;
        return { y: Tensor.float32(x.shape, Float32Array.from(x.data, (v) => v * factor)) };
      },
      async unload() {},
      describe() { return { version: ${JSON.stringify(version)} }; },
    };
  },
};
`,
  );
  return file;
}

function scaleModel(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "mlos-scale-"));
  writeFileSync(path.join(dir, "factor.json"), JSON.stringify({ factor: 2 }));
  writeFileSync(path.join(dir, "axon.yaml"), [
    "apiVersion: axon.mlos.io/v1", "kind: Model", "metadata: { namespace: test, name: scaler, version: 1.0.0 }",
    "spec:", "  framework: { name: other }", "  format: { type: scale, entrypoint: factor.json, files: [{ path: factor.json }] }",
    "  io:", "    inputs: [{ name: x, dtype: float32, shape: [batch, 4] }]", "    outputs: [{ name: \"y\", dtype: float32, shape: [batch, 4] }]",
    "  serving: { plugin: scale }", "",
  ].join("\n"));
  return dir;
}

describe("third-party plugins", () => {
  it("rejects a module that is not a plugin, naming what is missing", async () => {
    mkdirSync(pluginsDir, { recursive: true });
    const bad = path.join(pluginsDir, "not-a-plugin.mjs");
    writeFileSync(bad, "export default { id: 'half', version: '1' };\n");
    await assert.rejects(importPlugin(bad), (e: unknown) => e instanceof MlosError && e.code === "PLUGIN_INVALID" && /frameworks must be an array; formats must be an array; availability\(\) is missing; load\(\) is missing/.test(e.message));
    await assert.rejects(importPlugin("./no/such/plugin.mjs"), (e: unknown) => e instanceof MlosError && e.code === "PLUGIN_NOT_FOUND");
    await assert.rejects(importPlugin("mlos-plugin-that-does-not-exist"), (e: unknown) => e instanceof MlosError && e.code === "PLUGIN_NOT_FOUND");
  });

  it("serves a model through a plugin loaded at start, and hot-swaps it at run time, draining the old one", async () => {
    const v1 = writePlugin("scale-v1", "1.0.0", 1, 40);
    const v2 = writePlugin("scale-v2", "2.0.0", 10, 0);
    const server = await serve({ axon: new Axon({ home: mkdtempSync(path.join(tmpdir(), "mlos-plugins-")) }), plugins: [v1], models: [scaleModel()], httpPort: await freePort(), host: "127.0.0.1" });
    const base = `http://127.0.0.1:${server.http!.port}`;
    const infer = async () => {
      const r = await fetch(`${base}/v2/models/scaler/infer`, { method: "POST", body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] }) });
      assert.equal(r.status, 200, await r.clone().text());
      return ((await r.json()) as { outputs: Array<{ data: number[] }> }).outputs[0]!.data;
    };
    try {
      assert.deepEqual(await infer(), [2, 4, 6, 8], "version 1: factor x 1");
      const inFlight = Array.from({ length: 8 }, () => infer());
      await new Promise((r) => setTimeout(r, 5)); // admitted, running on version 1
      const reg = await fetch(`${base}/api/v1/plugins/register`, { method: "POST", body: JSON.stringify({ path: v2 }) });
      assert.equal(reg.status, 201, await reg.clone().text());
      const body = (await reg.json()) as { id: string; version: string; replaced: boolean; reloaded: Array<{ model: string; ok: boolean }> };
      assert.deepEqual(body, { id: "scale", version: "2.0.0", replaced: true, reloaded: [{ model: "scaler@1.0.0", ok: true }] });
      for (const r of await Promise.all(inFlight)) assert.deepEqual(r, [2, 4, 6, 8], "admitted requests finish on the old version");
      assert.deepEqual(await infer(), [20, 40, 60, 80], "new requests go to version 2");
      const plugins = (await (await fetch(`${base}/api/v1/plugins`)).json()) as { plugins: Array<{ id: string; version: string }> };
      assert.equal(plugins.plugins.find((p) => p.id === "scale")!.version, "2.0.0");
      const bad = await fetch(`${base}/api/v1/plugins/register`, { method: "POST", body: JSON.stringify({ path: path.join(pluginsDir, "not-a-plugin.mjs") }) });
      assert.equal(bad.status, 422);
      assert.equal(((await bad.json()) as { code: string }).code, "PLUGIN_INVALID");
    } finally {
      await server.close();
    }
  });

  it("a Runtime takes plugins given to it", async () => {
    const plugin = await importPlugin(writePlugin("scale-lib", "3.0.0", 1, 0));
    const runtime = new Runtime({ plugins: [plugin] });
    const model = await runtime.load(scaleModel());
    assert.equal(model.plugin, "scale");
    await model.dispose();
  });
});
