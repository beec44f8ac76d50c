import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { OciRegistryClient, MEDIA_TYPE_OCI_MANIFEST } from "../src/axon/registry/oci-client.js";
import { parseLinkNext, parseRetryAfter } from "../src/axon/registry/http.js";
import { AxonError } from "../src/axon/errors.js";
import { modelArtifact, registryAvailable, sha256, startRegistry, type StartedRegistry, type TestArtifact } from "./helpers/registry.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";

const execFileP = promisify(execFile);
const SKIP = registryAvailable() ? false : "/usr/bin/docker-registry is not installed";

let reg: StartedRegistry;
let client: OciRegistryClient;
const clients: OciRegistryClient[] = [];
const proxies: FaultProxy[] = [];

function mk(url: string, extra: Partial<ConstructorParameters<typeof OciRegistryClient>[0]> = {}): OciRegistryClient {
  const c = new OciRegistryClient({ url, retries: 3, retryBaseMs: 5, ...extra });
  clients.push(c);
  return c;
}

async function proxy(opts?: Parameters<typeof startFaultProxy>[1]): Promise<FaultProxy> {
  const p = await startFaultProxy(reg.url, opts);
  proxies.push(p);
  return p;
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function pushArtifact(c: OciRegistryClient, repo: string, tag: string, a: TestArtifact): Promise<string> {
  for (const b of [a.config, ...a.layers]) await c.pushBlob(repo, b.digest, b.size, iter(b.bytes));
  return c.pushManifest(repo, tag, a.manifest, MEDIA_TYPE_OCI_MANIFEST);
}

function iter(b: Buffer, piece = 1000): () => AsyncIterable<Uint8Array> {
  return () =>
    (async function* () {
      for (let i = 0; i < b.length; i += piece) yield b.subarray(i, i + piece);
    })();
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<AxonError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof AxonError, `expected AxonError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    assert.ok(!e.message.includes("\n"), "one-line message");
    return e;
  }
  assert.fail(`expected ${code}`);
}

before(async () => {
  if (SKIP) return;
  reg = await startRegistry();
  client = mk(reg.url);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(proxies.map((p) => p.stop()));
  await reg?.stop();
});

test("pure helpers: Link and Retry-After", () => {
  assert.equal(parseLinkNext('</v2/_catalog?last=b&n=2>; rel="next"'), "/v2/_catalog?last=b&n=2");
  assert.equal(parseLinkNext('<https://x/a>; rel="prev", <https://x/b>; rel=next'), "https://x/b");
  assert.equal(parseLinkNext(undefined), undefined);
  assert.equal(parseRetryAfter("2"), 2000);
  assert.equal(parseRetryAfter(new Date(Date.now() + 5000).toUTCString())! > 3000, true);
  assert.equal(parseRetryAfter("soon"), undefined);
});

test("bare host:port of 127.0.0.1 means plain http", () => {
  const c = new OciRegistryClient({ url: "127.0.0.1:5000" });
  assert.equal(c.baseUrl, "http://127.0.0.1:5000");
  const d = new OciRegistryClient({ url: "ghcr.io" });
  assert.equal(d.baseUrl, "https://ghcr.io");
  void c.close();
  void d.close();
});

test("ping, monolithic blob push, head, read, skip when present", { skip: SKIP }, async () => {
  await client.ping();
  const data = Buffer.from("hello blob " + "x".repeat(5000));
  const d = sha256(data);
  assert.equal(await client.headBlob("t/mono", d), null);
  assert.equal(await client.pushBlob("t/mono", d, data.length, iter(data)), "uploaded");
  assert.deepEqual(await client.headBlob("t/mono", d), { size: data.length });
  assert.equal(await client.pushBlob("t/mono", d, data.length, iter(data)), "exists");
  const b = await client.openBlob("t/mono", d);
  assert.equal(b.offset, 0);
  assert.equal(b.size, data.length);
  assert.deepEqual(await collect(b.body), data);
});

test("chunked blob push with PATCH and Content-Range, then Range resume", { skip: SKIP }, async () => {
  const p = await proxy();
  const c = mk(p.url);
  const data = Buffer.alloc(100_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  const d = sha256(data);
  assert.equal(await c.pushBlob("t/chunked", d, data.length, iter(data, 3333), { chunkSize: 16 * 1024 }), "uploaded");
  const patches = p.requests.filter((r) => r.method === "PATCH");
  assert.equal(patches.length, Math.ceil(100_000 / 16384));
  assert.equal(p.requests.filter((r) => r.method === "PUT").length, 1);
  // resume in the middle
  const b = await c.openBlob("t/chunked", d, 40_000);
  assert.equal(b.offset, 40_000);
  assert.equal(b.size, data.length);
  assert.deepEqual(await collect(b.body), data.subarray(40_000));
  // resuming at the very end: the registry answers 416, the client an empty body
  const end = await c.openBlob("t/chunked", d, data.length);
  assert.equal(end.offset, data.length);
  assert.equal(end.size, data.length);
  assert.equal((await collect(end.body)).length, 0);
  // a wrong digest is refused by the registry
  const bad = Buffer.from("not what the digest says");
  await rejectsWith(c.pushBlob("t/chunked", sha256(Buffer.from("other")), bad.length, iter(bad), { chunkSize: 10 }), "DIGEST_MISMATCH");
});

test("model artifact: manifest by tag and digest, tags, catalog with pagination", { skip: SKIP }, async () => {
  const a = modelArtifact("alpha");
  const digest = await pushArtifact(client, "models/alpha", "1.0.0", a);
  assert.equal(digest, a.manifestDigest);
  await client.pushManifest("models/alpha", "1.1.0", a.manifest, MEDIA_TYPE_OCI_MANIFEST);
  await client.pushManifest("models/alpha", "latest", a.manifest, MEDIA_TYPE_OCI_MANIFEST);
  await pushArtifact(client, "models/beta", "0.1.0", modelArtifact("beta"));

  const byTag = await client.getManifest("models/alpha", "1.0.0");
  assert.equal(byTag.digest, a.manifestDigest);
  assert.equal(byTag.mediaType, MEDIA_TYPE_OCI_MANIFEST);
  assert.deepEqual(byTag.bytes, a.manifest);
  assert.equal(byTag.json.artifactType, "application/vnd.cncf.model.manifest.v1+json");
  assert.equal(byTag.json.config.mediaType, "application/vnd.cncf.model.config.v1+json");
  assert.equal(byTag.json.layers[1].annotations["org.cncf.model.filepath"], "model.onnx");
  const byDigest = await client.getManifest("models/alpha", a.manifestDigest);
  assert.deepEqual(byDigest.bytes, a.manifest);

  const paged = mk(reg.url, { pageSize: 1 });
  assert.deepEqual((await paged.listTags("models/alpha")).sort(), ["1.0.0", "1.1.0", "latest"]);
  assert.deepEqual((await client.listTags("models/alpha")).sort(), ["1.0.0", "1.1.0", "latest"]);
  const cat = await paged.catalog();
  assert.ok(cat.includes("models/alpha") && cat.includes("models/beta"), cat.join(","));
  assert.deepEqual(await client.catalog(), cat);

  const layer = a.layers[1]!;
  const b = await client.openBlob("models/alpha", layer.digest);
  assert.equal(sha256(await collect(b.body)), layer.digest);
});

test("cross-repository mount", { skip: SKIP }, async () => {
  const p = await proxy();
  const c = mk(p.url);
  const data = Buffer.from("mount me " + Date.now());
  const d = sha256(data);
  await c.pushBlob("t/mount-src", d, data.length, iter(data));
  let opened = 0;
  const r = await c.pushBlob("t/mount-dst", d, data.length, () => {
    opened++;
    return iter(data)();
  }, { mountFrom: "t/mount-src" });
  assert.equal(r, "mounted");
  assert.equal(opened, 0);
  assert.ok(p.requests.some((q) => q.method === "POST" && q.url.includes("mount=") && q.url.includes("from=t%2Fmount-src")));
  assert.deepEqual(await c.headBlob("t/mount-dst", d), { size: data.length });
  // mount from a repo that lacks the blob: 202, then a normal upload
  const other = Buffer.from("not in the source repo");
  assert.equal(await c.pushBlob("t/mount-dst", sha256(other), other.length, iter(other), { mountFrom: "t/mount-src" }), "uploaded");
});

test("404s name the repository and reference", { skip: SKIP }, async () => {
  await rejectsWith(client.getManifest("models/alpha", "9.9.9"), "NOT_FOUND", /models\/alpha:9\.9\.9/);
  await rejectsWith(client.listTags("no/such-repo"), "NOT_FOUND", /no\/such-repo/);
  await rejectsWith(client.openBlob("models/alpha", "sha256:" + "0".repeat(64)), "NOT_FOUND", /models\/alpha@sha256:0+/);
});

test("manifest bytes that do not hash to the digest -> DIGEST_MISMATCH", { skip: SKIP }, async () => {
  const a = modelArtifact("tamper");
  await pushArtifact(client, "t/tamper", "1", a);
  const p = await proxy({
    intercept: (req, res) => {
      if (!req.url?.includes("/manifests/")) return false;
      const body = Buffer.from(a.manifest.toString().replace("tamper", "tampeR"));
      res.writeHead(200, { "content-type": MEDIA_TYPE_OCI_MANIFEST, "content-length": body.length });
      res.end(body);
      return true;
    },
  });
  const c = mk(p.url);
  await rejectsWith(c.getManifest("t/tamper", a.manifestDigest), "DIGEST_MISMATCH");
});

test("500, 429 (Retry-After) and connection resets are retried", { skip: SKIP }, async () => {
  const a = modelArtifact("retry");
  await pushArtifact(client, "t/retry", "1", a);
  const p = await proxy();
  const c = mk(p.url);

  p.addFault({ match: /\/manifests\//, kind: "500", times: 2 });
  assert.equal((await c.getManifest("t/retry", "1")).digest, a.manifestDigest);
  assert.equal(p.pending(), 0);

  p.addFault({ match: /\/tags\/list/, kind: "reset", times: 2 });
  assert.deepEqual(await c.listTags("t/retry"), ["1"]);
  assert.equal(p.pending(), 0);

  p.addFault({ match: /\/manifests\//, kind: "429", times: 1, retryAfter: "1" });
  const t0 = Date.now();
  await c.getManifest("t/retry", "1");
  assert.ok(Date.now() - t0 >= 900, `Retry-After honoured (${Date.now() - t0} ms)`);

  p.addFault({ match: /\/manifests\//, kind: "reset", times: 1, method: "PUT" });
  assert.equal(await c.pushManifest("t/retry", "2", a.manifest, MEDIA_TYPE_OCI_MANIFEST), a.manifestDigest);

  // upload: a failed PUT restarts the upload session
  const data = Buffer.from("retry upload " + Date.now());
  p.addFault({ match: /\/blobs\/uploads\//, method: "PUT", kind: "503", times: 1 });
  assert.equal(await c.pushBlob("t/retry", sha256(data), data.length, iter(data)), "uploaded");
  assert.equal(p.pending(), 0);
  const big = Buffer.alloc(50_000, 3);
  p.addFault({ match: /\/blobs\/uploads\//, method: "PATCH", kind: "reset", times: 1 });
  assert.equal(await c.pushBlob("t/retry", sha256(big), big.length, iter(big), { chunkSize: 20_000 }), "uploaded");
  assert.equal(p.pending(), 0);
});

test("a body cut mid-stream fails the reader; resuming with Range completes it", { skip: SKIP }, async () => {
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
  const d = sha256(data);
  await client.pushBlob("t/trunc", d, data.length, iter(data, 65536));
  const p = await proxy();
  const c = mk(p.url);
  p.addFault({ match: /\/blobs\/sha256:/, method: "GET", kind: "truncate", times: 1 });
  const got: Buffer[] = [];
  let have = 0;
  const first = await c.openBlob("t/trunc", d);
  await assert.rejects(async () => {
    for await (const chunk of first.body) {
      got.push(Buffer.from(chunk));
      have += chunk.byteLength;
    }
  });
  assert.ok(have > 0 && have < data.length, `got ${have}`);
  const rest = await c.openBlob("t/trunc", d, have);
  assert.equal(rest.offset, have);
  assert.equal(rest.size, data.length);
  got.push(await collect(rest.body));
  assert.equal(createHash("sha256").update(Buffer.concat(got)).digest("hex"), d.slice(7));

  // a manifest cut mid-body is retried inside getManifest
  const a = modelArtifact("trunc", 200_000);
  await pushArtifact(client, "t/trunc", "1", a);
  p.addFault({ match: /\/manifests\//, kind: "truncate", times: 1 });
  assert.equal((await c.getManifest("t/trunc", "1")).digest, a.manifestDigest);
});

test("persistent 500 -> REGISTRY_ERROR; persistent 429 -> REGISTRY_RATE_LIMIT; refused -> NETWORK", { skip: SKIP }, async () => {
  const p = await proxy();
  const c = mk(p.url, { retries: 2 });
  p.addFault({ match: /\/manifests\//, kind: "500", times: 100 });
  const e = await rejectsWith(c.getManifest("t/retry", "1"), "REGISTRY_ERROR", /HTTP 500 .*\/v2\/t\/retry\/manifests\/1: injected 500/);
  assert.equal(e.details.status, 500);
  assert.equal(p.requests.filter((r) => r.fault === "500").length, 3);
  p.clearFaults();
  p.addFault({ match: /\/tags\//, kind: "429", times: 100 });
  await rejectsWith(c.listTags("t/retry"), "REGISTRY_RATE_LIMIT", /429/);
  p.clearFaults();
  // 400-class errors are not retried (a manifest naming a blob the registry lacks: 400 MANIFEST_BLOB_UNKNOWN)
  const before = p.requests.length;
  const orphan = modelArtifact("orphan");
  await rejectsWith(c.pushManifest("t/retry", "bad", orphan.manifest, MEDIA_TYPE_OCI_MANIFEST), "NOT_FOUND", /does not have a blob/);
  assert.equal(p.requests.length - before, 1);
  const dead = mk("http://127.0.0.1:1", { retries: 1 });
  await rejectsWith(dead.ping(), "NETWORK", /127\.0\.0\.1:1/);
});

test("skopeo copies what the client pushed into an OCI layout", { skip: SKIP || (existsSync("/usr/bin/skopeo") ? false : "skopeo missing") }, async () => {
  const a = modelArtifact("skopeo");
  await pushArtifact(client, "models/skopeo", "1.0.0", a);
  const out = await fs.mkdtemp(path.join(os.tmpdir(), "axon-skopeo-"));
  try {
    await execFileP("skopeo", ["copy", "--src-tls-verify=false", `docker://${reg.host}/models/skopeo:1.0.0`, `oci:${out}/layout:1.0.0`], {
      timeout: 30_000,
    });
    const index = JSON.parse(await fs.readFile(path.join(out, "layout", "index.json"), "utf8"));
    assert.equal(index.manifests[0].digest, a.manifestDigest, "skopeo kept the manifest byte for byte");
    for (const b of [a.config, ...a.layers]) {
      const f = await fs.readFile(path.join(out, "layout", "blobs", "sha256", b.digest.slice(7)));
      assert.equal(sha256(f), b.digest);
    }
    // and back: skopeo pushes the layout to another repository; the client reads the same manifest
    await execFileP("skopeo", ["copy", "--dest-tls-verify=false", `oci:${out}/layout:1.0.0`, `docker://${reg.host}/models/skopeo-back:1.0.0`], {
      timeout: 30_000,
    });
    const back = await client.getManifest("models/skopeo-back", "1.0.0");
    assert.equal(back.digest, a.manifestDigest);
  } finally {
    await fs.rm(out, { recursive: true, force: true });
  }
});
