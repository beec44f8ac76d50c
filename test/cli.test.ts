/**
 * The `axon` CLI end to end: every test runs the real binary (`bin/run.js`) as a child process
 * with its own AXON_HOME, and checks exit status, stderr (one line `error[CODE]: ...` on failure)
 * and, with --json, that stdout is one JSON document and nothing else.
 * The groups below are independent and run concurrently (each spawn costs ~0.4 s).
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, registryAvailable, startRegistry, type StartedRegistry } from "./helpers/registry.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "run.js");
const skipRegistry = registryAvailable() ? false : "/usr/bin/docker-registry is not installed";

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `axon-cli-${prefix}-`));
  cleanups.push(async () => {
    // Blobs are read-only: make the tree writable so it can be removed.
    await chmodTree(dir);
    await fs.rm(dir, { recursive: true, force: true });
  });
  return dir;
}

async function chmodTree(dir: string): Promise<void> {
  for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      await fs.chmod(p, 0o755).catch(() => undefined);
      await chmodTree(p);
    } else if (e.isFile()) await fs.chmod(p, 0o644).catch(() => undefined);
  }
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `axon ARGS` with AXON_HOME=home, isolated from the caller's credentials and Docker config. */
function axon(home: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, AXON_HOME: home, DOCKER_CONFIG: path.join(home, ".docker-none"), NO_COLOR: "1", ...opts.env };
  for (const k of Object.keys(env)) if (k.startsWith("AXON_REGISTRY_") && !(opts.env && k in opts.env)) delete env[k];
  delete env.AXON_DEBUG;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, cwd: ROOT, stdio: [opts.input !== undefined ? "pipe" : "ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

function show(r: Run): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** stdout of a --json run: exactly one JSON document (JSON.parse rejects anything around it). */
function json<T = any>(r: Run): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    assert.fail(`stdout is not one JSON document:\n${show(r)}`);
  }
}

function ok(r: Run): Run {
  assert.equal(r.code, 0, show(r));
  return r;
}

/** A failure: non-zero exit and exactly one line on stderr, `error[CODE]: ...` (CODE checked when given). */
function failed(r: Run, code?: string, exit?: number): string {
  assert.notEqual(r.code, 0, show(r));
  if (exit !== undefined) assert.equal(r.code, exit, show(r));
  const lines = r.stderr.split("\n").filter((l) => l.length > 0);
  assert.equal(lines.length, 1, `expected one stderr line:\n${show(r)}`);
  if (code) assert.match(lines[0]!, new RegExp(`^error\\[${code}\\]: \\S`), show(r));
  return lines[0]!;
}

const AXON_YAML = (ns: string, name: string, version = "1.0.0") => `apiVersion: axon.mlos.io/v1
kind: Model
metadata:
  namespace: ${ns}
  name: ${name}
  version: ${version}
  description: a tiny model for the CLI tests
  tags: [cli-test]
spec:
  framework:
    name: onnx
  format:
    type: onnx
    entrypoint: model.onnx
    files:
      - path: model.onnx
  io:
    inputs:
      - name: x
        dtype: float32
        shape: [-1, 4]
    outputs:
      - name: y
        dtype: float32
        shape: [-1, 2]
`;

async function modelDir(ns: string, name: string, bytes = "not really onnx, but bytes all the same"): Promise<string> {
  const dir = await tempDir(`model-${name}`);
  await fs.writeFile(path.join(dir, "axon.yaml"), AXON_YAML(ns, name));
  await fs.writeFile(path.join(dir, "model.onnx"), bytes);
  return dir;
}

describe("axon CLI", { concurrency: true }, () => {
  it("pack, list, info, verify, detects a corrupt blob, cache commands, uninstall", async () => {
    const home = await tempDir("home");
    const dir = await modelDir("clitest", "tiny");

    const packed = json(ok(await axon(home, ["pack", dir, "--json"])));
    assert.equal(packed.reference, "clitest/tiny@1.0.0");
    assert.match(packed.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(packed.files, 1);

    const list = json(ok(await axon(home, ["list", "--json"])));
    assert.deepEqual(list.models.map((m: { reference: string }) => m.reference), ["clitest/tiny@1.0.0"]);

    const info = json(ok(await axon(home, ["info", "clitest/tiny", "--json"])));
    assert.equal(info.reference, "clitest/tiny@1.0.0");
    assert.equal(info.digest, packed.digest);
    assert.equal(info.source, "local");
    assert.equal(info.description, "a tiny model for the CLI tests");
    assert.deepEqual(info.framework, { name: "onnx" });
    assert.equal(info.format.type, "onnx");
    assert.deepEqual(info.io.inputs, [{ name: "x", dtype: "float32", shape: [-1, 4] }]);
    assert.deepEqual(info.io.outputs, [{ name: "y", dtype: "float32", shape: [-1, 2] }]);
    const weights = info.files.find((f: { path: string }) => f.path === "model.onnx");
    assert.ok(weights, JSON.stringify(info.files));
    assert.match(weights.sha256, /^sha256:[0-9a-f]{64}$/);
    assert.equal(weights.size, 39);

    const good = json(ok(await axon(home, ["verify", "--json"])));
    assert.equal(good.ok, true);
    assert.deepEqual(good.problems, []);
    assert.ok(good.checked >= 1);

    // Corrupt one byte of the weights' blob, in place (the installed view is a hard link to it).
    const blob = path.join(home, "store", "blobs", "sha256", weights.sha256.slice(7));
    await fs.chmod(blob, 0o644);
    const fh = await fs.open(blob, "r+");
    await fh.write(Buffer.from("N"), 0, 1, 0);
    await fh.close();

    const [bad, badJson, cacheBad] = await Promise.all([
      axon(home, ["verify"]),
      axon(home, ["verify", "clitest/tiny@1.0.0", "--json"]),
      axon(home, ["cache", "verify", "--json"]),
    ]);
    const line = failed(bad, "VERIFY_FAILED", 1);
    assert.match(line, /clitest\/tiny@1\.0\.0: model\.onnx: hashes to sha256:/);
    assert.match(line, /1 problem/);
    assert.match(bad.stdout, /model\.onnx/); // every problem is printed before the failure
    assert.equal(badJson.code, 1);
    const bj = json(badJson);
    assert.equal(bj.ok, false);
    assert.equal(bj.code, "VERIFY_FAILED");
    assert.deepEqual(bj.problems.map((p: { model: string; file: string }) => `${p.model}:${p.file}`), ["clitest/tiny@1.0.0:model.onnx"]);
    assert.equal(cacheBad.code, 1, show(cacheBad));
    const cj = json(cacheBad);
    assert.deepEqual(cj.corrupt.map((c: { digest: string }) => c.digest), [weights.sha256]);
    assert.match(cacheBad.stderr, /^error\[VERIFY_FAILED\]: blob sha256:/);

    const [stats, cacheList, search] = await Promise.all([
      axon(home, ["cache", "stats", "--json"]),
      axon(home, ["cache", "list", "--json"]),
      axon(home, ["search", "tiny", "--local", "--json"]),
    ]);
    const st = json(ok(stats));
    assert.equal(st.models, 1);
    assert.ok(st.blobs >= 3 && st.bytes > 0, JSON.stringify(st));
    const cl = json(ok(cacheList));
    assert.deepEqual(cl.entries.map((e: { repository: string; tag: string; installed: boolean }) => [e.repository, e.tag, e.installed]), [["clitest/tiny", "1.0.0", true]]);
    const sr = json(ok(search));
    assert.equal(sr.hits[0]?.reference, "clitest/tiny@1.0.0");
    assert.equal(sr.hits[0]?.installed, true);

    const un = json(ok(await axon(home, ["uninstall", "clitest/tiny@1.0.0", "--json"])));
    assert.deepEqual(un.removed, ["clitest/tiny@1.0.0"]);
    assert.equal(typeof un.freedBytes, "number");

    const [clean, prune] = await Promise.all([
      axon(home, ["cache", "clean", "--json"]),
      axon(home, ["cache", "prune", "--max-size", "0", "--json"]),
    ]);
    assert.equal(typeof json(ok(clean)).freedBytes, "number");
    const pr = json(ok(prune));
    assert.deepEqual(pr.evicted, []); // packed models are never evicted: the local store is their only copy
    assert.equal(typeof pr.bytes, "number");
  });

  it("config get/set/list and registry add/list/default/remove; search warns about unreachable registries", async () => {
    const home = await tempDir("config");
    const port = await freePort(); // nothing listens there

    const set = json(ok(await axon(home, ["config", "set", "retries", "0", "--json"])));
    assert.deepEqual(set, { key: "retries", value: 0, previous: 5 });
    const [get, listed, add] = await Promise.all([
      axon(home, ["config", "get", "retries", "--json"]),
      axon(home, ["config", "list", "--json"]),
      axon(home, ["registry", "add", "dead", `127.0.0.1:${port}`, "--default", "--json"]),
    ]);
    assert.deepEqual(json(ok(get)), { key: "retries", value: 0, isDefault: false });
    const settings = json(ok(listed)).settings as Array<{ key: string; value: unknown; isDefault: boolean }>;
    assert.deepEqual(settings.map((s) => s.key).sort(), ["concurrency", "default_registry", "hf_endpoint", "retries"]);
    assert.deepEqual(settings.find((s) => s.key === "retries"), { ...settings.find((s) => s.key === "retries"), value: 0, isDefault: false });
    assert.equal(settings.find((s) => s.key === "concurrency")?.isDefault, true);
    assert.deepEqual(json(ok(add)).registry, { name: "dead", url: `http://127.0.0.1:${port}` });

    const [dup, regList, search] = await Promise.all([
      axon(home, ["registry", "add", "dead", "127.0.0.1:1"]),
      axon(home, ["registry", "list", "--json"]),
      axon(home, ["search", "anything", "--json"]),
    ]);
    failed(dup, "BAD_ARGUMENT", 1);
    const rl = json(ok(regList));
    assert.equal(rl.default, "dead");
    assert.deepEqual(rl.registries, [{ name: "dead", url: `http://127.0.0.1:${port}`, insecure: false, default: true, credentials: false }]);
    // A registry that cannot be reached is a warning on stderr, not a failure.
    const sj = json(ok(search));
    assert.deepEqual(sj.hits, []);
    assert.equal(sj.errors[0]?.registry, "dead");
    assert.match(search.stderr, /^warning: registry dead: /);

    const def = json(ok(await axon(home, ["registry", "default", "local", "--json"])));
    assert.deepEqual(def, { default: "local", previous: "dead" });
    const [removed, badValue] = await Promise.all([
      axon(home, ["registry", "remove", "dead", "--json"]),
      axon(home, ["config", "set", "concurrency", "many"]),
    ]);
    assert.deepEqual(json(ok(removed)), { removed: "dead", url: `http://127.0.0.1:${port}`, defaultReset: false });
    failed(badValue, "CONFIG_INVALID", 1);
    const cfg = await fs.readFile(path.join(home, "config.yaml"), "utf8");
    assert.doesNotMatch(cfg, /dead/);
    assert.match(cfg, /retries: 0/);
  });

  it("bad input: one line on stderr and a non-zero exit (with --json, the error as JSON on stdout)", async () => {
    const home = await tempDir("bad");
    const badDir = await tempDir("malformed");
    await fs.writeFile(path.join(badDir, "axon.yaml"), "apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata:\n  name: [unclosed\n  namespace: x\n");
    await fs.writeFile(path.join(badDir, "model.onnx"), "x");

    const [unknownCmd, unknownFlag, pack, packJson, notInstalled, badSize] = await Promise.all([
      axon(home, ["definitely-not-a-command"]),
      axon(home, ["list", "--no-such-flag"]),
      axon(home, ["pack", badDir]),
      axon(home, ["pack", badDir, "--json"]),
      axon(home, ["info", "nobody/nothing", "--json"]),
      axon(home, ["cache", "prune", "--max-size", "12 parsecs"]),
    ]);
    failed(unknownCmd);
    failed(unknownFlag, "BAD_ARGUMENT");
    const line = failed(pack, "MANIFEST_PARSE", 1);
    assert.match(line, /axon\.yaml:\d+:\d+/);
    failed(packJson, "MANIFEST_PARSE", 1);
    assert.equal(json(packJson).code, "MANIFEST_PARSE");
    failed(notInstalled, "NOT_INSTALLED", 1);
    assert.equal(json(notInstalled).code, "NOT_INSTALLED");
    failed(badSize, "BAD_ARGUMENT", 1);
  });

  it("push to a registry, then install from it into a fresh AXON_HOME", { skip: skipRegistry }, async () => {
    const reg = await startRegistry();
    cleanups.push(() => reg.stop());
    const home = await tempDir("push");
    const home2 = await tempDir("pull");
    const dir = await modelDir("clitest", "pushed", "weights to publish");

    json(ok(await axon(home, ["pack", dir, "--json"])));
    const pushed = json(ok(await axon(home, ["push", "clitest/pushed@1.0.0", "--registry", reg.host, "--json"])));
    assert.equal(pushed.repository, "clitest/pushed");
    assert.equal(pushed.tag, "1.0.0");
    assert.equal(pushed.registry, reg.host);
    assert.ok(pushed.uploaded >= 2, JSON.stringify(pushed));

    const inst = json(ok(await axon(home2, ["install", "clitest/pushed@^1", "--registry", reg.host, "--json"])));
    assert.equal(inst.installed[0].reference, "clitest/pushed@1.0.0");
    assert.equal(inst.installed[0].digest, pushed.digest);
    assert.equal(await fs.readFile(path.join(inst.installed[0].path, "model.onnx"), "utf8"), "weights to publish");
  });

  it("registry login checks the password, keeps nothing it rejects, and never prints it", { skip: skipRegistry }, async () => {
    const PASSWORD = "c0rrect-h0rse";
    const reg = await startRegistry({ htpasswd: { user: "alice", password: PASSWORD } });
    cleanups.push(() => reg.stop());
    const home = await tempDir("login");
    const creds = path.join(home, "credentials.json");

    const wrong = await axon(home, ["registry", "login", reg.host, "--username", "alice", "--password-stdin"], { input: "wrong-password\n" });
    failed(wrong, "REGISTRY_AUTH", 1);
    const stored = JSON.parse(await fs.readFile(creds, "utf8").catch(() => '{"auths":{}}'));
    assert.deepEqual(stored.auths, {});

    const right = await axon(home, ["registry", "login", reg.host, "--username", "alice", "--json"], { env: { AXON_REGISTRY_PASSWORD: PASSWORD } });
    assert.deepEqual(json(ok(right)), { host: reg.host, username: "alice", checked: true, accepted: true });
    assert.equal(JSON.parse(await fs.readFile(creds, "utf8")).auths[reg.host].username, "alice");
    assert.equal((await fs.stat(creds)).mode & 0o777, 0o600);

    const [listed, listedJson] = await Promise.all([axon(home, ["registry", "list"]), axon(home, ["registry", "list", "--json"])]);
    for (const r of [wrong, right, listed, listedJson]) assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), show(r));
    assert.match(ok(listed).stdout, new RegExp(`${reg.host.replace(/\./g, "\\.")} \\(alice\\)`));
    assert.deepEqual(json(ok(listedJson)).logins, [{ host: reg.host, username: "alice" }]);

    const out = json(ok(await axon(home, ["registry", "logout", reg.host, "--json"])));
    assert.deepEqual(out, { host: reg.host, removed: true });
    assert.deepEqual(JSON.parse(await fs.readFile(creds, "utf8")).auths, {});
  });
});
