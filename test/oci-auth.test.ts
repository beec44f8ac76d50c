import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type net from "node:net";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { OciRegistryClient, MEDIA_TYPE_OCI_MANIFEST } from "../src/axon/registry/oci-client.js";
import { parseWwwAuthenticate } from "../src/axon/registry/auth.js";
import {
  CredentialStore,
  DefaultCredentialProvider,
  DockerConfigCredentialProvider,
  EnvCredentialProvider,
  envHostSuffix,
  type CredentialProvider,
} from "../src/axon/registry/credentials.js";
import { AxonError } from "../src/axon/errors.js";
import { modelArtifact, registryAvailable, sha256, startRegistry, type StartedRegistry, type TestArtifact } from "./helpers/registry.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";

const SKIP = registryAvailable() ? false : "/usr/bin/docker-registry is not installed";
const USER = "alice";
const PASS = "s3cret-Pa55";

let basicReg: StartedRegistry; // htpasswd
let openReg: StartedRegistry; // no auth, fronted by the bearer proxy
const closers: Array<() => Promise<void>> = [];
let tmp: string;

function creds(username: string, password: string): CredentialProvider {
  return { get: async () => ({ username, password }) };
}

function mk(url: string, credentials?: CredentialProvider): OciRegistryClient {
  const c = new OciRegistryClient({ url, credentials, retries: 2, retryBaseMs: 5 });
  closers.push(() => c.close());
  return c;
}

function iter(b: Buffer): () => AsyncIterable<Uint8Array> {
  return () =>
    (async function* () {
      yield b;
    })();
}

async function pushArtifact(c: OciRegistryClient, repo: string, tag: string, a: TestArtifact): Promise<string> {
  for (const b of [a.config, ...a.layers]) await c.pushBlob(repo, b.digest, b.size, iter(b.bytes));
  return c.pushManifest(repo, tag, a.manifest, MEDIA_TYPE_OCI_MANIFEST);
}

async function authError(p: Promise<unknown>, host: string): Promise<AxonError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof AxonError, String(e));
    assert.equal(e.code, "REGISTRY_AUTH", e.message);
    assert.ok(e.message.includes(`axon registry login ${host}`), e.message);
    assert.ok(!e.message.includes(PASS) && !e.message.includes("wrong-pass"), "no password in the message");
    assert.ok(!/Bearer|Basic [A-Za-z0-9+/=]{8,}/.test(e.message), "no token in the message");
    return e;
  }
  assert.fail("expected REGISTRY_AUTH");
}

async function listen(server: http.Server): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as net.AddressInfo).port;
}

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "axon-auth-test-"));
  if (SKIP) return;
  [basicReg, openReg] = await Promise.all([startRegistry({ htpasswd: { user: USER, password: PASS } }), startRegistry()]);
});

after(async () => {
  for (const c of closers.reverse()) await c();
  await basicReg?.stop();
  await openReg?.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

test("WWW-Authenticate parsing", () => {
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'), [
    { scheme: "bearer", params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull,push" } },
  ]);
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{ scheme: "basic", params: { realm: "Registry Realm" } }]);
  const two = parseWwwAuthenticate('Basic realm="x", Bearer realm="https://t/x",service=s');
  assert.deepEqual(two.map((c) => c.scheme), ["basic", "bearer"]);
  assert.equal(two[1]!.params.service, "s");
});

test("htpasswd: anonymous and wrong password -> REGISTRY_AUTH; right password works, preemptively", { skip: SKIP }, async () => {
  const p = await startFaultProxy(basicReg.url);
  closers.push(() => p.stop());
  await authError(mk(p.url).listTags("x/y"), p.host);
  await authError(mk(p.url, creds(USER, "wrong-pass")).getManifest("x/y", "1"), p.host);

  const c = mk(p.url, creds(USER, PASS));
  const a = modelArtifact("basic");
  p.requests.length = 0;
  assert.equal(await pushArtifact(c, "auth/basic", "1.0.0", a), a.manifestDigest);
  assert.equal((await c.getManifest("auth/basic", "1.0.0")).digest, a.manifestDigest);
  assert.deepEqual(await c.listTags("auth/basic"), ["1.0.0"]);
  assert.deepEqual(await c.catalog(), ["auth/basic"]);
  const unauth = p.requests.filter((r) => !r.authorization);
  assert.equal(unauth.length, 1, "only the first request goes out anonymously; then Basic is sent preemptively");
});

test("credentials from AXON_REGISTRY_AUTH_<HOST> reach a real registry", { skip: SKIP }, async () => {
  const env = { [`AXON_REGISTRY_AUTH_${envHostSuffix(basicReg.host)}`]: Buffer.from(`${USER}:${PASS}`).toString("base64") };
  assert.ok(Object.keys(env)[0]!.startsWith("AXON_REGISTRY_AUTH_127_0_0_1_"));
  const c = mk(basicReg.url, new DefaultCredentialProvider({ env, dockerConfig: false }));
  await c.ping();
});

test("blob redirects to another host are followed without the registry's Authorization", { skip: SKIP }, async () => {
  const data = Buffer.from("redirected bytes " + Date.now());
  const d = sha256(data);
  const c0 = mk(basicReg.url, creds(USER, PASS));
  await c0.pushBlob("auth/redirect", d, data.length, iter(data));

  const seen: Array<string | undefined> = [];
  const storage = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    const range = /bytes=(\d+)-/.exec(req.headers.range ?? "");
    const from = range ? Number(range[1]) : 0;
    const body = data.subarray(from);
    const headers: Record<string, string | number> = { "content-length": body.length };
    if (range) headers["content-range"] = `bytes ${from}-${data.length - 1}/${data.length}`;
    res.writeHead(range ? 206 : 200, headers);
    res.end(body);
  });
  const sport = await listen(storage);
  const p = await startFaultProxy(basicReg.url, {
    intercept: (req, res) => {
      if (req.method === "GET" && req.url?.includes("/blobs/sha256:") && req.headers.authorization) {
        res.writeHead(307, { location: `http://localhost:${sport}/bucket/${d.slice(7)}?sig=abc` });
        res.end();
        return true;
      }
      return false;
    },
  });
  closers.push(() => p.stop());
  const c = mk(p.url, creds(USER, PASS));
  const b = await c.openBlob("auth/redirect", d, 5);
  assert.equal(b.offset, 5);
  assert.equal(b.size, data.length);
  const parts: Buffer[] = [];
  for await (const x of b.body) parts.push(Buffer.from(x));
  assert.deepEqual(Buffer.concat(parts), data.subarray(5));
  assert.deepEqual(seen, [undefined]);
  assert.ok(p.requests.some((r) => r.authorization?.startsWith("Basic ")), "the registry itself got the credentials");
});

// ---------------------------------------------------------------- bearer token flow

interface TokenServer {
  realm: string;
  calls: Array<{ scopes: string[]; service: string | null; basic?: string }>;
  tokens: Map<string, { scopes: string[]; expires: number }>;
  ttl: number;
}

async function startTokenServer(): Promise<TokenServer> {
  const ts: TokenServer = { realm: "", calls: [], tokens: new Map(), ttl: 300 };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    const auth = req.headers.authorization;
    const basic = auth?.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString() : undefined;
    ts.calls.push({ scopes: u.searchParams.getAll("scope"), service: u.searchParams.get("service"), basic });
    if (basic !== `${USER}:${PASS}`) {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ details: "bad credentials" }));
      return;
    }
    const token = randomBytes(16).toString("hex");
    ts.tokens.set(token, { scopes: u.searchParams.getAll("scope"), expires: Date.now() + ts.ttl * 1000 });
    res.writeHead(200, { "content-type": "application/json" });
    // alternate the two field names that token services use
    res.end(JSON.stringify(ts.calls.length % 2 ? { token, expires_in: ts.ttl } : { access_token: token, expires_in: ts.ttl }));
  });
  const port = await listen(server);
  ts.realm = `http://127.0.0.1:${port}/token`;
  return ts;
}

function neededScope(method: string, url: string): string | undefined {
  const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(url);
  if (url.startsWith("/v2/_catalog")) return "registry:catalog:*";
  if (!m) return undefined;
  return `repository:${m[1]}:${method === "GET" || method === "HEAD" ? "pull" : "push"}`;
}

function allowed(granted: string[], need: string): boolean {
  const [type, name, action] = need.split(":") as [string, string, string];
  return granted.some((g) => {
    const i = g.lastIndexOf(":");
    const [gt, gn] = [g.slice(0, g.indexOf(":")), g.slice(g.indexOf(":") + 1, i)];
    const actions = g.slice(i + 1).split(",");
    return gt === type && gn === name && (actions.includes(action) || actions.includes("*"));
  });
}

async function startBearerProxy(ts: TokenServer): Promise<FaultProxy> {
  const p = await startFaultProxy(openReg.url, {
    intercept: (req, res) => {
      const need = neededScope(req.method ?? "GET", req.url ?? "/");
      const auth = req.headers.authorization;
      const tok = auth?.startsWith("Bearer ") ? ts.tokens.get(auth.slice(7)) : undefined;
      const ok = tok && tok.expires > Date.now() && (!need || allowed(tok.scopes, need));
      if (ok) {
        delete req.headers.authorization;
        return false; // forward
      }
      const scope = need ? `,scope="${need.replace(":push", ":pull,push")}"` : "";
      res.writeHead(401, {
        "content-type": "application/json",
        "www-authenticate": `Bearer realm="${ts.realm}",service="test-registry"${scope}`,
      });
      res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
      req.resume();
      return true;
    },
  });
  closers.push(() => p.stop());
  return p;
}

test("bearer: token flow with basic auth to the realm, tokens cached per scope", { skip: SKIP }, async () => {
  const ts = await startTokenServer();
  const p = await startBearerProxy(ts);
  const c = mk(p.url, creds(USER, PASS));
  const a = modelArtifact("bearer");
  assert.equal(await pushArtifact(c, "auth/bearer", "1.0.0", a), a.manifestDigest);
  const afterPush = ts.calls.length;
  assert.ok(afterPush >= 1 && afterPush <= 3, `token fetches during push: ${afterPush}`);
  assert.ok(ts.calls.every((k) => k.basic === `${USER}:${PASS}` && k.service === "test-registry"));
  assert.ok(ts.calls.some((k) => k.scopes.includes("repository:auth/bearer:pull,push")), JSON.stringify(ts.calls));

  const m = await c.getManifest("auth/bearer", "1.0.0");
  assert.equal(m.digest, a.manifestDigest);
  await c.getManifest("auth/bearer", a.manifestDigest);
  const b = await c.openBlob("auth/bearer", a.layers[1]!.digest);
  for await (const _ of b.body) void _;
  assert.deepEqual(await c.listTags("auth/bearer"), ["1.0.0"]);
  assert.equal(ts.calls.length, afterPush + 1, "one pull token serves manifest, blob and tag reads");
  const challenges = p.requests.length;
  await c.getManifest("auth/bearer", "1.0.0");
  assert.equal(p.requests.length, challenges + 1, "cached token is sent preemptively: no 401 round trip");

  // expired tokens are fetched again
  ts.ttl = 1;
  const c2 = mk(p.url, creds(USER, PASS));
  await c2.listTags("auth/bearer");
  const n = ts.calls.length;
  await new Promise((r) => setTimeout(r, 1100));
  await c2.listTags("auth/bearer");
  assert.equal(ts.calls.length, n + 1);
  ts.ttl = 300;
});

test("bearer: wrong password at the token service -> REGISTRY_AUTH", { skip: SKIP }, async () => {
  const ts = await startTokenServer();
  const p = await startBearerProxy(ts);
  await authError(mk(p.url, creds(USER, "wrong-pass")).listTags("auth/bearer"), p.host);
  await authError(mk(p.url).getManifest("auth/bearer", "1.0.0"), p.host);
});

// ---------------------------------------------------------------- credential sources

test("credential store: 0600, atomic, list without passwords, logout", async () => {
  const file = path.join(tmp, "home", "credentials.json");
  const store = new CredentialStore(file);
  assert.deepEqual(await store.list(), []);
  await store.login("https://Registry.Example.com/", "bob", "pw-bob-123");
  await store.login("127.0.0.1:5000", "carol", "pw-carol-456");
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  const list = await store.list();
  assert.deepEqual(list, [
    { host: "127.0.0.1:5000", username: "carol" },
    { host: "registry.example.com", username: "bob" },
  ]);
  assert.ok(!JSON.stringify(list).includes("pw-"));
  assert.deepEqual(await store.get("registry.example.com"), { username: "bob", password: "pw-bob-123" });
  assert.equal(await store.logout("registry.example.com"), true);
  assert.equal(await store.logout("registry.example.com"), false);
  assert.equal(await store.get("registry.example.com"), undefined);
  // an existing file with loose permissions is tightened on the next write
  await fs.chmod(file, 0o644);
  await store.login("x.io", "d", "e");
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  assert.deepEqual((await fs.readdir(path.dirname(file))).filter((f) => f.endsWith(".tmp")), []);
});

test("environment credentials: host-specific first, AUTH base64, TOKEN", async () => {
  assert.equal(envHostSuffix("127.0.0.1:5000"), "127_0_0_1_5000");
  assert.equal(envHostSuffix("ghcr.io"), "GHCR_IO");
  const env = {
    AXON_REGISTRY_USERNAME: "gen",
    AXON_REGISTRY_PASSWORD: "genpw",
    AXON_REGISTRY_AUTH_127_0_0_1_5000: Buffer.from("local:localpw").toString("base64"),
    AXON_REGISTRY_TOKEN_GHCR_IO: "tok123",
  };
  const p = new EnvCredentialProvider(env);
  assert.deepEqual(await p.get("127.0.0.1:5000"), { username: "local", password: "localpw" });
  assert.deepEqual(await p.get("ghcr.io"), { token: "tok123" });
  assert.deepEqual(await p.get("other.io"), { username: "gen", password: "genpw" });
  assert.equal(await new EnvCredentialProvider({}).get("other.io"), undefined);
  assert.deepEqual(await new EnvCredentialProvider({ AXON_REGISTRY_AUTH: Buffer.from("u:p:q").toString("base64") }).get("a"), {
    username: "u",
    password: "p:q",
  });
});

test("docker config.json and the default lookup order", async () => {
  const dockerDir = path.join(tmp, "docker");
  await fs.mkdir(dockerDir, { recursive: true });
  await fs.writeFile(
    path.join(dockerDir, "config.json"),
    JSON.stringify({
      auths: {
        "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hubpw").toString("base64") },
        "https://ghcr.io": { username: "gh", password: "ghpw" },
        "127.0.0.1:5000": { auth: Buffer.from("dock:dockpw").toString("base64") },
      },
    }),
  );
  const d = new DockerConfigCredentialProvider(undefined, { DOCKER_CONFIG: dockerDir });
  assert.deepEqual(await d.get("registry-1.docker.io"), { username: "hubuser", password: "hubpw" });
  assert.deepEqual(await d.get("docker.io"), { username: "hubuser", password: "hubpw" });
  assert.deepEqual(await d.get("ghcr.io"), { username: "gh", password: "ghpw" });
  assert.equal(await d.get("quay.io"), undefined);
  assert.equal(await new DockerConfigCredentialProvider(path.join(tmp, "nope.json")).get("ghcr.io"), undefined);

  const store = new CredentialStore(path.join(tmp, "order", "credentials.json"));
  await store.login("127.0.0.1:5000", "stored", "storedpw");
  const chain = (env: Record<string, string>) => new DefaultCredentialProvider({ env: { DOCKER_CONFIG: dockerDir, ...env }, store });
  assert.deepEqual(await chain({}).get("127.0.0.1:5000"), { username: "stored", password: "storedpw" }, "store before docker");
  assert.deepEqual(await chain({ AXON_REGISTRY_TOKEN: "t" }).get("127.0.0.1:5000"), { token: "t" }, "env before store");
  assert.deepEqual(await chain({}).get("ghcr.io"), { username: "gh", password: "ghpw" }, "docker last");
});

test("Docker credential helpers: credHelpers per registry, then credsStore, then auths", async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "axon-credhelper-"));
  const bin = path.join(tmp, "bin");
  await fs.mkdir(bin);
  // A real helper executable speaking Docker's protocol: the server on stdin, JSON on stdout.
  const helper = (name: string, answers: Record<string, [string, string]>) =>
    fs.writeFile(
      path.join(bin, `docker-credential-${name}`),
      `#!/bin/sh\n[ "$1" = get ] || exit 2\nread server\ncase "$server" in\n${Object.entries(answers)
        .map(([s, [u, p]]) => `  "${s}") printf '{"ServerURL":"%s","Username":"${u}","Secret":"${p}"}' "$server" ;;`)
        .join("\n")}\n  *) echo "credentials not found in native keychain" >&2; exit 1 ;;\nesac\n`,
      { mode: 0o755 },
    );
  await helper("registryhelper", { "127.0.0.1:5000": ["helped", "helperpw"] });
  await helper("desktop", { "https://index.docker.io/v1/": ["<token>", "identity-token"], "quay.io": ["q", "qpw"] });
  const dockerDir = path.join(tmp, "docker");
  await fs.mkdir(dockerDir);
  await fs.writeFile(
    path.join(dockerDir, "config.json"),
    JSON.stringify({
      credHelpers: { "127.0.0.1:5000": "registryhelper" },
      credsStore: "desktop",
      auths: { "127.0.0.1:5000": { auth: Buffer.from("inline:inlinepw").toString("base64") }, "ghcr.io": { username: "gh", password: "ghpw" } },
    }),
  );
  const d = new DockerConfigCredentialProvider(undefined, { DOCKER_CONFIG: dockerDir, PATH: `${bin}:${process.env.PATH}` });
  assert.deepEqual(await d.get("127.0.0.1:5000"), { username: "helped", password: "helperpw" }, "the registry's own helper first");
  assert.deepEqual(await d.get("quay.io"), { username: "q", password: "qpw" }, "then the store");
  assert.deepEqual(await d.get("docker.io"), { username: "<token>", password: "identity-token" }, "Docker Hub asks by its v1 address");
  assert.deepEqual(await d.get("ghcr.io"), { username: "gh", password: "ghpw" }, "a helper with nothing falls through to auths");
  const missing = new DockerConfigCredentialProvider(undefined, { DOCKER_CONFIG: dockerDir, PATH: "/nonexistent" });
  assert.deepEqual(await missing.get("127.0.0.1:5000"), { username: "inline", password: "inlinepw" }, "a helper that is not installed falls through");
});
