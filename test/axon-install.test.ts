/**
 * End to end through the Axon library against a real docker-registry: pack, push, install by
 * version, range, latest and digest, dedup, and what happens on bad input: a corrupt blob, a
 * truncated transfer, a process killed mid-install, two installs at once, a full disk.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Axon } from "../src/axon/axon.js";
import { AxonError } from "../src/axon/errors.js";
import { registryAvailable, startRegistry, type StartedRegistry } from "./helpers/registry.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const skip = registryAvailable() ? false : "docker-registry is not installed (apt-get install docker-registry)";

function tmp(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `axon-${prefix}-`));
}

/** A model folder with the given files and a draft axon.yaml listing them. */
function modelDir(ns: string, name: string, version: string, files: Record<string, Buffer | string>): string {
  const dir = tmp(`${name}-${version}`);
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    writeFileSync(path.join(dir, p), c);
  }
  writeFileSync(
    path.join(dir, "axon.yaml"),
    `apiVersion: axon.mlos.io/v1
kind: Model
metadata:
  namespace: ${ns}
  name: ${name}
  version: ${version}
  description: test model ${name}
  tags: [test]
spec:
  framework: { name: onnx }
  format:
    type: onnx
    files:
${Object.keys(files).map((p) => `      - path: ${p}`).join("\n")}
`,
  );
  return dir;
}

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

let registry: StartedRegistry;
let publisher: Axon;
const big = randomBytes(6 << 20);
const shared = randomBytes(64 << 10);

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  publisher = new Axon({ home: tmp("publisher") });
  for (const v of ["1.0.0", "1.1.0", "2.0.0"]) {
    await publisher.pack(modelDir("acme", "net", v, { "model.onnx": `weights ${v}`, "shared/vocab.bin": shared }));
    await publisher.push(`acme/net@${v}`, { registry: registry.host });
  }
  await publisher.pack(modelDir("acme", "big", "1.0.0", { "weights.bin": big, "config.json": "{}" }));
  await publisher.push("acme/big@1.0.0", { registry: registry.host });
});

after(async () => {
  await publisher?.close();
  await registry?.stop();
});

test("pack then install from the local store works offline and is idempotent", { skip }, async () => {
  const axon = new Axon({ home: tmp("local") });
  const dir = modelDir("demo", "tiny", "0.1.0", { "model.onnx": "abc", "sub/extra.txt": "hello" });
  const packed = await axon.pack(dir);
  assert.equal(packed.reference, "demo/tiny@0.1.0");
  assert.equal(readFileSync(path.join(packed.record.path, "sub/extra.txt"), "utf8"), "hello");
  assert.ok(existsSync(path.join(packed.record.path, "axon.yaml")));
  // Views are hard links into the cache.
  const st = statSync(path.join(packed.record.path, "model.onnx"));
  assert.equal(st.ino, statSync(axon.blobs.path(sha(Buffer.from("abc")))).ino);
  const again = await axon.install("demo/tiny");
  assert.equal(again.alreadyInstalled, true);
  assert.equal(again.transferred, 0);
  // The local store is a valid OCI image layout.
  const index = JSON.parse(readFileSync(path.join(axon.paths.store, "index.json"), "utf8"));
  assert.equal(index.manifests[0].annotations["org.opencontainers.image.ref.name"], "demo/tiny:0.1.0");
  assert.deepEqual(JSON.parse(readFileSync(path.join(axon.paths.store, "oci-layout"), "utf8")), { imageLayoutVersion: "1.0.0" });
});

test("install resolves exact versions, ranges, latest and digests against the registry's tags", { skip }, async () => {
  const axon = new Axon({ home: tmp("resolve") });
  await axon.config.write({ registries: [{ name: "test", url: registry.url }], default_registry: "test" });
  assert.equal((await axon.install("acme/net@^1")).reference, "acme/net@1.1.0");
  assert.equal((await axon.install("acme/net@1.0.0")).reference, "acme/net@1.0.0");
  const latest = await axon.install("acme/net");
  assert.equal(latest.reference, "acme/net@2.0.0");
  assert.equal(readFileSync(path.join(latest.record.path, "model.onnx"), "utf8"), "weights 2.0.0");
  const pinned = await axon.install(`test/acme/net@${latest.record.digest}`);
  assert.equal(pinned.record.digest, latest.record.digest);
  assert.equal(pinned.reference, "acme/net@2.0.0");
  await assert.rejects(axon.install("acme/net@^3"), (e: AxonError) => e.code === "NO_MATCHING_VERSION" && /2\.0\.0/.test(e.message));
  await assert.rejects(axon.install("acme/missing"), (e: AxonError) => e.code === "NOT_FOUND");
  // The shared file is stored once for three versions.
  const sharedBlobs = (await axon.blobs.list()).filter((b) => b.digest === sha(shared));
  assert.equal(sharedBlobs.length, 1);
  const stats = await axon.cacheStats();
  assert.equal(stats.models, 3);
  assert.equal(stats.savedByDedup, 2 * shared.length);
  await axon.close();
});

test("uninstall frees blobs only when nothing else uses them; prune --max-size evicts least recently used", { skip }, async () => {
  const axon = new Axon({ home: tmp("gc") });
  for (const v of ["1.0.0", "2.0.0"]) await axon.install(`acme/net@${v}`, { registry: registry.host });
  const { freedBytes } = await axon.uninstall("acme/net@1.0.0");
  assert.ok(freedBytes > 0);
  assert.ok(await axon.blobs.has(sha(shared)), "blob still used by 2.0.0 stays");
  await axon.install("acme/big", { registry: registry.host });
  await new Promise((r) => setTimeout(r, 20));
  await axon.install("acme/net@2.0.0"); // touch: most recently used
  const pruned = await axon.cachePrune({ maxSize: 1 << 20 });
  assert.deepEqual(pruned.evicted, ["acme/big@1.0.0"]);
  assert.ok(pruned.bytes <= 1 << 20);
  assert.deepEqual((await axon.list()).map((r) => r.version), ["2.0.0"]);
  await axon.close();
});

test("a blob whose bytes do not match its digest is rejected and nothing is installed", { skip }, async () => {
  const target = sha(big);
  const proxy = await startFaultProxy(registry.url, {
    intercept: (req, res) => {
      if (req.method === "GET" && req.url?.includes(`/blobs/${target}`)) {
        const bad = Buffer.from(big);
        bad[12345] ^= 0xff;
        res.writeHead(200, { "content-length": String(bad.length), "content-type": "application/octet-stream" });
        res.end(bad);
        return true;
      }
      return false;
    },
  });
  const axon = new Axon({ home: tmp("corrupt") });
  try {
    await assert.rejects(axon.install("acme/big", { registry: proxy.host }), (e: AxonError) => e.code === "DIGEST_MISMATCH" && e.message.includes(target));
    assert.equal((await axon.list()).length, 0);
    assert.equal(await axon.blobs.has(target), false);
    assert.deepEqual((await axon.blobs.partials()).length, 0, "no partial left behind");
    assert.equal((await axon.store.refs()).length, 0);
  } finally {
    await axon.close();
    await proxy.stop();
  }
});

test("a truncated transfer is resumed with a Range request", { skip }, async () => {
  const proxy = await startFaultProxy(registry.url);
  proxy.addFault({ match: new RegExp(`/blobs/${sha(big)}`), method: "GET", kind: "truncate", times: 1 });
  const axon = new Axon({ home: tmp("resume") });
  try {
    const r = await axon.install("acme/big", { registry: proxy.host });
    assert.equal(readFileSync(path.join(r.record.path, "weights.bin")).equals(big), true);
    assert.equal(proxy.pending(), 0);
    const gets = proxy.requests.filter((q) => q.method === "GET" && q.url.includes(sha(big)));
    assert.equal(gets.length, 2);
  } finally {
    await axon.close();
    await proxy.stop();
  }
});

test("a process killed mid-install leaves no half-installed model; the next run resumes and finishes", { skip }, async () => {
  const home = tmp("killed");
  let served = 0;
  const proxy = await startFaultProxy(registry.url, {
    intercept: (req, res) => {
      if (req.method === "GET" && req.url?.includes(`/blobs/${sha(big)}`) && served++ === 0) {
        // Half the blob, then silence: the client is killed while waiting for the rest.
        res.writeHead(200, { "content-length": String(big.length), "content-type": "application/octet-stream" });
        res.write(big.subarray(0, big.length / 2));
        return true;
      }
      return false;
    },
  });
  const env = { ...process.env, AXON_HOME: home, AXON_LOCK_STALE_MS: "2000" };
  try {
    const child = spawn(process.execPath, [CLI, "install", "acme/big", "--registry", proxy.host, "--quiet"], { env, stdio: "ignore" });
    const partial = path.join(home, "tmp", `${sha(big).slice(7)}.partial`);
    // Wait until some bytes are on disk (writes are batched, so not necessarily all that arrived).
    for (let i = 0; i < 200 && !(existsSync(partial) && statSync(partial).size > 0); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const kept = existsSync(partial) ? statSync(partial).size : 0;
    assert.ok(kept > 0, "the download had started");
    const axon = new Axon({ home });
    assert.equal((await axon.list()).length, 0, "no record of a half-installed model");
    assert.equal(existsSync(path.join(home, "models", "acme", "big", "1.0.0")), false);
    const r = await axon.install("acme/big", { registry: proxy.host });
    assert.equal(readFileSync(path.join(r.record.path, "weights.bin")).equals(big), true);
    // The big blob resumed after what the killed process left; the rest is the few small blobs.
    assert.ok(r.transferred >= big.length - kept && r.transferred < big.length - kept + 4096, `transferred ${r.transferred}, kept ${kept}`);
    assert.deepEqual(readdirSync(path.join(home, "tmp")).filter((f) => !f.startsWith(".")), []);
    await axon.close();
  } finally {
    await proxy.stop();
  }
});

test("two axon processes installing the same model at once share the work and both succeed", { skip }, async () => {
  const home = tmp("concurrent");
  const env = { ...process.env, AXON_HOME: home };
  const run = () =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn(process.execPath, [CLI, "install", "acme/big", "acme/net@1.0.0", "--registry", registry.host, "--json"], { env });
      let out = "";
      c.stdout.on("data", (d) => (out += d));
      c.on("exit", (code) => resolve({ code, out }));
    });
  const [a, b] = await Promise.all([run(), run()]);
  assert.equal(a.code, 0, a.out);
  assert.equal(b.code, 0, b.out);
  const axon = new Axon({ home });
  assert.deepEqual((await axon.list()).map((r) => `${r.name}@${r.version}`), ["big@1.0.0", "net@1.0.0"]);
  assert.deepEqual((await axon.verify()).problems, []);
  assert.equal((await axon.cacheVerify()).corrupt.length, 0);
});

test("a full disk fails with DISK_FULL and leaves no temp files", { skip }, async (t) => {
  const home = tmp("full");
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", home]).status === 0;
  if (!mounted) return t.skip("cannot mount a small tmpfs here (needs root)");
  try {
    const axon = new Axon({ home });
    await assert.rejects(axon.install("acme/big", { registry: registry.host }), (e: AxonError) => e.code === "DISK_FULL");
    assert.deepEqual((await axon.blobs.partials()).length, 0);
    assert.equal((await axon.list()).length, 0);
    await axon.close();
  } finally {
    spawnSync("umount", [home]);
  }
});
