/**
 * Interoperability: what another OCI tool (skopeo) copies in, Axon installs; a Hugging Face repo
 * goes through `Axon.install` (and the CLI) into the same cache, with HF_ENDPOINT pointing at a
 * local server that speaks the hub's routes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Axon } from "../src/axon/axon.js";
import { DEMO_MODELS_DIR } from "../src/axon/demo.js";
import { registryAvailable, startRegistry } from "./helpers/registry.js";
import { bytes, FakeHub } from "./helpers/fake-hub.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const tmp = (p: string) => mkdtempSync(path.join(tmpdir(), `axon-${p}-`));
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d) => (stdout += d));
    c.stderr.on("data", (d) => (stderr += d));
    c.on("exit", (status) => resolve({ status, stdout, stderr }));
  });
}
const hasSkopeo = existsSync("/usr/bin/skopeo");

test("axon installs an artifact that skopeo copied between registries", { skip: registryAvailable() && hasSkopeo ? false : "docker-registry or skopeo missing" }, async () => {
  const a = await startRegistry();
  const b = await startRegistry();
  const publisher = new Axon({ home: tmp("pub") });
  const consumer = new Axon({ home: tmp("con") });
  try {
    await publisher.pack(path.join(DEMO_MODELS_DIR, "mlp"));
    await publisher.push("demo/mlp@1.0.0", { registry: a.host });
    // skopeo copies the artifact from registry A to registry B under another name...
    const cp = spawnSync("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${a.host}/demo/mlp:1.0.0`, `docker://${b.host}/team/mlp:1.0.0`], { encoding: "utf8" });
    assert.equal(cp.status, 0, cp.stderr);
    // ...and through an OCI layout on disk, the way air-gapped copies travel.
    const layout = tmp("layout");
    const toDir = spawnSync("skopeo", ["copy", "--src-tls-verify=false", `docker://${a.host}/demo/mlp:1.0.0`, `oci:${layout}:1.0.0`], { encoding: "utf8" });
    assert.equal(toDir.status, 0, toDir.stderr);
    const back = spawnSync("skopeo", ["copy", "--dest-tls-verify=false", `oci:${layout}:1.0.0`, `docker://${b.host}/demo/mlp:1.0.0`], { encoding: "utf8" });
    assert.equal(back.status, 0, back.stderr);

    const viaCopy = await consumer.install(`${b.host}/team/mlp@1.0.0`);
    assert.equal(viaCopy.reference, "team/mlp@1.0.0");
    const viaLayout = await consumer.install(`${b.host}/demo/mlp@^1`);
    assert.equal(viaLayout.record.digest, viaCopy.record.digest, "skopeo kept the manifest byte for byte");
    const original = readFileSync(path.join(DEMO_MODELS_DIR, "mlp", "model.onnx"));
    assert.ok(readFileSync(path.join(viaLayout.record.path, "model.onnx")).equals(original));
    assert.deepEqual((await consumer.verify()).problems, []);
  } finally {
    await publisher.close();
    await consumer.close();
    await a.stop();
    await b.stop();
  }
});

test("hf/ORG/NAME installs through the library and the CLI into the same cache", async () => {
  const onnx = bytes(50_000, 7);
  const hub = await FakeHub.start([
    {
      id: "Acme/Tiny-Net",
      branches: {
        main: [
          { path: "model.onnx", content: onnx, lfs: true },
          { path: "config.json", content: '{"model_type":"tiny"}' },
          { path: "README.md", content: "# tiny" },
        ],
      },
    },
  ]);
  const home = tmp("hf");
  const saved = process.env.HF_ENDPOINT;
  process.env.HF_ENDPOINT = hub.endpoint;
  const axon = new Axon({ home });
  try {
    const r = await axon.install("hf/Acme/Tiny-Net", { exclude: ["*.md"] });
    assert.match(r.reference, /^hf\.acme\/tiny-net@0\.0\.0-rev-[a-f0-9]{12}$/);
    assert.ok(readFileSync(path.join(r.record.path, "model.onnx")).equals(onnx));
    assert.equal(existsSync(path.join(r.record.path, "README.md")), false);
    const info = await axon.info("hf/Acme/Tiny-Net");
    assert.equal(info.manifest.spec.framework.name, "onnx");
    // The CLI finds it installed and transfers nothing.
    // (An async child: this process serves the fake hub, so it must not block.)
    const cli = await run(process.execPath, [CLI, "install", "hf/Acme/Tiny-Net", "--exclude", "*.md", "--json"], { ...process.env, AXON_HOME: home });
    assert.equal(cli.status, 0, cli.stderr);
    const out = JSON.parse(cli.stdout);
    assert.equal(out.installed[0].transferred, 0);
    assert.equal(out.installed[0].alreadyInstalled, true);
    assert.deepEqual((await axon.uninstall("hf/Acme/Tiny-Net")).removed, [r.reference]);
  } finally {
    if (saved === undefined) delete process.env.HF_ENDPOINT;
    else process.env.HF_ENDPOINT = saved;
    await axon.close();
    await hub.close();
  }
});
