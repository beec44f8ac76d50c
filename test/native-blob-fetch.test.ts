/**
 * The native download path (native/src/fetch/blob_fetch.h, through OciRegistryClient.directBlobFetcher)
 * against a real docker-registry, with the fault proxy in front where failures are needed: an
 * install, a corrupt blob, a truncated transfer resumed with Range, 500/429/reset retried, a
 * redirect handed to the JS path, a Basic-auth challenge, an abort, `MLOS_NATIVE_FETCH=0`, and
 * the binding's argument and receiver checks; then the binding under valgrind (test/leak/blob-fetch.mjs).
 *
 * Native requests are told apart from undici's by `Connection: close` (undici keeps connections
 * alive) and counted through BlobFetch.prototype.start.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { tryLoadNative, type NativeBlobFetch } from "../bindings/native.js";
import { Axon } from "../src/axon/axon.js";
import { AxonError } from "../src/axon/errors.js";
import { OciRegistryClient } from "../src/axon/registry/oci-client.js";
import { registryAvailable, startRegistry, type StartedRegistry } from "./helpers/registry.js";
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from "./helpers/fault-proxy.js";

const addon = tryLoadNative();
const skip = !registryAvailable()
  ? "docker-registry is not installed (apt-get install docker-registry)"
  : !addon?.BlobFetch
    ? "the addon has no native blob fetcher (built without OpenSSL headers?)"
    : false;

let starts = 0;
if (addon?.BlobFetch) {
  const proto = addon.BlobFetch.prototype as NativeBlobFetch;
  const start = proto.start;
  proto.start = function (this: NativeBlobFetch, ...args: Parameters<NativeBlobFetch["start"]>) {
    starts++;
    return start.apply(this, args);
  };
}

function tmp(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `axon-nf-${prefix}-`));
}

function modelDir(ns: string, name: string, version: string, files: Record<string, Buffer | string>): string {
  const dir = tmp(`${name}-${version}`);
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    writeFileSync(path.join(dir, p), c);
  }
  writeFileSync(
    path.join(dir, "axon.yaml"),
    `apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata:\n  namespace: ${ns}\n  name: ${name}\n  version: ${version}\nspec:\n  framework: { name: onnx }\n  format:\n    type: onnx\n    files:\n${Object.keys(files)
      .map((p) => `      - path: ${p}`)
      .join("\n")}\n`,
  );
  return dir;
}

const sha = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const isNative = (req: IncomingMessage): boolean => req.headers.connection === "close";
const blobGet = (digest: string) => (req: IncomingMessage) => req.method === "GET" && (req.url ?? "").includes(`/blobs/${digest}`);

let registry: StartedRegistry;
let publisher: Axon;
const big = randomBytes(5 << 20);
const weights = sha(big);
const proxies: FaultProxy[] = [];

async function proxy(opts?: FaultProxyOptions): Promise<FaultProxy> {
  const p = await startFaultProxy(registry.url, opts);
  proxies.push(p);
  return p;
}

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  publisher = new Axon({ home: tmp("publisher") });
  await publisher.pack(modelDir("nf", "big", "1.0.0", { "weights.bin": big, "config.json": "{}" }));
  await publisher.push("nf/big@1.0.0", { registry: registry.host });
});

after(async () => {
  for (const p of proxies) await p.stop();
  await publisher?.close();
  await registry?.stop();
});

test("an install from a plain-HTTP registry goes through the native fetcher: files, progress, transferred", { skip }, async () => {
  const axon = new Axon({ home: tmp("install") });
  try {
    const before = starts;
    const progress = new Map<string, number>();
    const r = await axon.install("nf/big@1.0.0", { registry: registry.host, onProgress: (e) => progress.set(e.file, (progress.get(e.file) ?? 0) + e.delta) });
    assert.equal(starts - before, 4, "config, axon.yaml, weights.bin and config.json: one native transfer each");
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
    assert.equal(readFileSync(path.join(r.record.path, "config.json"), "utf8"), "{}");
    assert.equal(progress.get("weights.bin"), big.length);
    assert.ok(r.transferred > big.length && r.transferred < big.length + 4096, `transferred ${r.transferred}`);
    assert.deepEqual((await axon.blobs.partials()).length, 0);
    assert.deepEqual((await axon.verify()).problems, []);
  } finally {
    await axon.close();
  }
});

test("MLOS_NATIVE_FETCH=0 keeps every byte on the JS path", { skip }, async () => {
  const saved = process.env.MLOS_NATIVE_FETCH;
  process.env.MLOS_NATIVE_FETCH = "0";
  const axon = new Axon({ home: tmp("js") });
  try {
    const before = starts;
    const r = await axon.install("nf/big@1.0.0", { registry: registry.host });
    assert.equal(starts, before);
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
  } finally {
    if (saved === undefined) delete process.env.MLOS_NATIVE_FETCH;
    else process.env.MLOS_NATIVE_FETCH = saved;
    await axon.close();
  }
});

test("bytes that do not match the digest are rejected: nothing installed, no partial left", { skip }, async () => {
  let nativeGets = 0;
  const p = await proxy({
    intercept: (req, res) => {
      if (!blobGet(weights)(req)) return false;
      if (isNative(req)) nativeGets++;
      const bad = Buffer.from(big);
      bad[4242] ^= 0x01;
      res.writeHead(200, { "content-length": String(bad.length), "content-type": "application/octet-stream" });
      res.end(bad);
      return true;
    },
  });
  const axon = new Axon({ home: tmp("corrupt") });
  try {
    await assert.rejects(axon.install("nf/big@1.0.0", { registry: p.host }), (e: AxonError) => e.code === "DIGEST_MISMATCH" && e.message.includes(weights));
    assert.equal(nativeGets, 1);
    assert.equal(await axon.blobs.has(weights), false);
    assert.equal((await axon.blobs.partials()).length, 0);
    assert.equal((await axon.list()).length, 0);
  } finally {
    await axon.close();
  }
});

test("a transfer cut mid-body is resumed natively with a Range request", { skip }, async () => {
  const seen: Array<{ native: boolean; range?: string }> = [];
  const p = await proxy({
    intercept: (req) => {
      if (blobGet(weights)(req)) seen.push({ native: isNative(req), range: req.headers.range });
      return false;
    },
  });
  p.addFault({ match: blobGet(weights), kind: "truncate", times: 1 });
  const axon = new Axon({ home: tmp("resume") });
  try {
    const r = await axon.install("nf/big@1.0.0", { registry: p.host });
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
    assert.equal(p.pending(), 0);
    assert.equal(seen.length, 2, JSON.stringify(seen));
    assert.ok(seen.every((s) => s.native));
    assert.equal(seen[0]!.range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(seen[1]!.range ?? "")?.[1]);
    assert.ok(from > 0 && from < big.length, `resumed from ${seen[1]!.range}`);
    // What arrived before the cut was kept, not fetched twice.
    assert.ok(r.transferred < big.length + from, `transferred ${r.transferred}`);
  } finally {
    await axon.close();
  }
});

test("500, 429 and connection resets on a blob are retried", { skip }, async () => {
  const p = await proxy();
  p.addFault({ match: blobGet(weights), kind: "500", times: 2 });
  p.addFault({ match: blobGet(weights), kind: "429", times: 1, retryAfter: "0" });
  p.addFault({ match: blobGet(weights), kind: "reset", times: 1 });
  const axon = new Axon({ home: tmp("retry") });
  try {
    const before = starts;
    const r = await axon.install("nf/big@1.0.0", { registry: p.host });
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
    assert.equal(p.pending(), 0);
    assert.ok(starts - before >= 4 + 4);
  } finally {
    await axon.close();
  }
});

test("a 500 that persists is REGISTRY_ERROR (retryable) after the client's retries", { skip }, async () => {
  const p = await proxy();
  p.addFault({ match: blobGet(weights), kind: "500", times: 100 });
  const c = new OciRegistryClient({ url: p.url, retries: 2, retryBaseMs: 5 });
  const dir = tmp("persist");
  try {
    const fetch = c.directBlobFetcher("nf/big", weights);
    assert.ok(fetch);
    await assert.rejects(fetch({ file: path.join(dir, "partial"), offset: 0, size: big.length, onLength: () => {} }), (e: AxonError) => {
      assert.equal(e.code, "REGISTRY_ERROR");
      assert.match(e.message, /HTTP 500/);
      assert.match(e.message, /injected 500/, "the registry's error message is passed through");
      assert.equal(e.details.retryable, true);
      return true;
    });
    assert.equal(p.requests.filter((q) => q.fault === "500").length, 3);
    assert.equal(existsSync(path.join(dir, "partial")), false, "an error answer creates no file");
  } finally {
    await c.close();
  }
});

test("a redirect hands the blob to the JS path, which follows it", { skip }, async () => {
  let redirected = 0;
  const p = await proxy({
    intercept: (req, res) => {
      if (!blobGet(weights)(req) || !isNative(req)) return false;
      redirected++;
      res.writeHead(307, { location: `${registry.url}${req.url}`, "content-length": "0" });
      res.end();
      return true;
    },
  });
  const axon = new Axon({ home: tmp("redirect") });
  try {
    const r = await axon.install("nf/big@1.0.0", { registry: p.host });
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
    assert.equal(redirected, 1);
  } finally {
    await axon.close();
  }
});

test("a Basic-auth challenge is answered by the JS auth flow; the native request repeats with the header", { skip }, async () => {
  const user = "bob";
  const pass = "n4tive-fetch";
  const authReg = await startRegistry({ htpasswd: { user, password: pass } });
  try {
    const credentials = { get: async () => ({ username: user, password: pass }) };
    const data = randomBytes(300_000);
    const pusher = new OciRegistryClient({ url: authReg.url, credentials });
    await pusher.pushBlob("nf/auth", sha(data), data.length, () =>
      (async function* () {
        yield data;
      })(),
    );
    await pusher.close();
    const seen: Array<{ native: boolean; auth: boolean }> = [];
    const p = await startFaultProxy(authReg.url, {
      intercept: (req) => {
        if (blobGet(sha(data))(req)) seen.push({ native: isNative(req), auth: !!req.headers.authorization });
        return false;
      },
    });
    proxies.push(p);
    const c = new OciRegistryClient({ url: p.url, credentials });
    const dir = tmp("auth");
    try {
      const r = await c.directBlobFetcher("nf/auth", sha(data))!({ file: path.join(dir, "partial"), offset: 0, size: data.length, onLength: () => {} });
      assert.deepEqual(r, { size: data.length, digest: sha(data), transferred: data.length });
      assert.ok(readFileSync(path.join(dir, "partial")).equals(data));
      assert.deepEqual(seen, [
        { native: true, auth: false },
        { native: true, auth: true },
      ]);
      // Without credentials: REGISTRY_AUTH, as on the JS path.
      const anon = new OciRegistryClient({ url: p.url });
      await assert.rejects(anon.directBlobFetcher("nf/auth", sha(data))!({ file: path.join(dir, "other"), offset: 0, onLength: () => {} }), (e: AxonError) => e.code === "REGISTRY_AUTH");
      await anon.close();
    } finally {
      await c.close();
    }
  } finally {
    await authReg.stop();
  }
});

test("an abort stops a native transfer at once; the partial stays and the next install resumes it", { skip }, async () => {
  let stalled = 0;
  const p = await proxy({
    intercept: (req, res) => {
      if (!blobGet(weights)(req) || stalled++ > 0) return false;
      res.writeHead(200, { "content-length": String(big.length), "content-type": "application/octet-stream" });
      res.write(big.subarray(0, 2 << 20)); // then silence
      return true;
    },
  });
  const home = tmp("abort");
  const axon = new Axon({ home });
  try {
    const partial = path.join(home, "tmp", `${weights.slice(7)}.partial`);
    const controller = new AbortController();
    const reason = new Error("stop now");
    const install = axon.install("nf/big@1.0.0", { registry: p.host, signal: controller.signal });
    for (let i = 0; i < 200 && !(existsSync(partial) && statSync(partial).size >= 2 << 20); i++) await new Promise((r) => setTimeout(r, 25));
    const t0 = Date.now();
    controller.abort(reason);
    await assert.rejects(install, (e) => e === reason);
    assert.ok(Date.now() - t0 < 2000, "aborted promptly");
    assert.equal(statSync(partial).size, 2 << 20, "what arrived is kept");
    const r = await axon.install("nf/big@1.0.0", { registry: p.host });
    assert.ok(readFileSync(path.join(r.record.path, "weights.bin")).equals(big));
    assert.ok(r.transferred < big.length - (2 << 20) + 4096, `resumed: transferred ${r.transferred}`);
  } finally {
    await axon.close();
  }
});

test("the binding checks its arguments and receivers", { skip: addon?.BlobFetch ? false : "no native blob fetcher" }, async () => {
  const BlobFetch = addon!.BlobFetch!;
  const ok = { host: "127.0.0.1", port: 9, path: "/x", file: path.join(tmp("args"), "f") };
  assert.throws(() => new BlobFetch({ ...ok, port: 0 }), (e: NodeJS.ErrnoException) => e instanceof RangeError && e.code === "BAD_ARGUMENT");
  assert.throws(() => new BlobFetch({ ...ok, path: "x" }), (e: NodeJS.ErrnoException) => e instanceof RangeError && e.code === "BAD_ARGUMENT");
  assert.throws(() => new BlobFetch({ ...ok, headers: { "x-a": "1\r\nInjected: 2" } }), RangeError);
  assert.throws(() => new BlobFetch({ ...ok, offset: 10, expectedSize: 5 }), RangeError);
  assert.throws(() => new BlobFetch({ ...ok, host: 5 } as never), (e: NodeJS.ErrnoException) => e instanceof TypeError && e.code === "BAD_ARGUMENT");
  const f = new BlobFetch(ok);
  assert.throws(() => BlobFetch.prototype.start.call({} as NativeBlobFetch), (e: NodeJS.ErrnoException) => e instanceof TypeError && e.code === "BAD_ARGUMENT");
  assert.throws(() => f.start("nope" as never), TypeError);
  const r = await f.start(); // nothing listens on port 9 (discard) here
  assert.equal(r.status, 0);
  assert.equal(r.complete, false);
  assert.ok(r.code === "ECONNREFUSED" || r.code === "ETIMEDOUT", String(r.code));
  assert.throws(() => f.start(), (e: NodeJS.ErrnoException) => e.code === "BAD_STATE");
});

const valgrind = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].find((p) => existsSync(p));

test("no leak and no memory error in the binding under valgrind (results, errors, abort, a throwing callback, exit mid-transfer)", {
  skip: !addon?.BlobFetch ? "no native blob fetcher" : !valgrind ? "valgrind is not installed (apt-get install valgrind)" : false,
  timeout: 120_000,
}, () => {
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
  const r = spawnSync(
    valgrind!,
    [
      "--leak-check=full",
      "--show-leak-kinds=definite,indirect",
      "--errors-for-leak-kinds=definite,indirect",
      "--error-exitcode=97",
      "--num-callers=30",
      `--suppressions=${path.join(root, "test", "leak", "valgrind.supp")}`,
      process.execPath,
      path.join(root, "test", "leak", "blob-fetch.mjs"),
    ],
    { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 },
  );
  const summary = (r.stderr.match(/(definitely|indirectly) lost: .*|ERROR SUMMARY: .*/g) ?? []).join("; ");
  assert.equal(r.stdout.trim(), "ok", `the script did not finish: ${r.stderr.slice(-3000)}`);
  assert.equal(r.status, 0, `valgrind found problems (${summary}):\n${r.stderr.slice(-6000)}`);
  assert.match(r.stderr, /ERROR SUMMARY: 0 errors/);
});
