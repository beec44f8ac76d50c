/**
 * Starts a real registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on
 * 127.0.0.1 with a free port, filesystem storage in a temp dir, deletes enabled, and optionally
 * htpasswd (bcrypt) auth.
 */
import { createHash } from "node:crypto";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const REGISTRY_BIN = "/usr/bin/docker-registry";

export function registryAvailable(): boolean {
  return existsSync(REGISTRY_BIN);
}

export interface StartedRegistry {
  url: string;
  host: string;
  dataDir: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitUp(url: string, child: ChildProcess, stderr: () => string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}: ${stderr().slice(-2000)}`);
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer at ${url}/v2/ within ${timeoutMs} ms: ${stderr().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRegistry(opts: { htpasswd?: { user: string; password: string } } = {}): Promise<StartedRegistry> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "axon-registry-"));
  const dataDir = path.join(dir, "data");
  await fs.mkdir(dataDir);
  let lastErr: unknown;
  for (let tries = 0; tries < 3; tries++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const lines = [
      "version: 0.1",
      "log:",
      "  level: error",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${JSON.stringify(dataDir)}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: ${host}`,
      "  secret: axon-test-secret",
    ];
    if (opts.htpasswd) {
      const file = path.join(dir, "htpasswd");
      const line = execFileSync("htpasswd", ["-Bbn", opts.htpasswd.user, opts.htpasswd.password], { encoding: "utf8" });
      await fs.writeFile(file, line.trim() + "\n", { mode: 0o600 });
      lines.push("auth:", "  htpasswd:", "    realm: axon-test", `    path: ${JSON.stringify(file)}`);
    }
    const config = path.join(dir, "config.yml");
    await fs.writeFile(config, lines.join("\n") + "\n");
    const child = spawn(REGISTRY_BIN, ["serve", config], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      if (err.length > 20_000) err = err.slice(-10_000);
    });
    const url = `http://${host}`;
    try {
      await waitUp(url, child, () => err);
    } catch (e) {
      lastErr = e;
      child.kill("SIGKILL");
      continue;
    }
    let stopped = false;
    return {
      url,
      host,
      dataDir,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (child.exitCode === null) {
          const exited = new Promise<void>((r) => child.once("exit", () => r()));
          child.kill("SIGTERM");
          const t = setTimeout(() => child.kill("SIGKILL"), 3000);
          await exited;
          clearTimeout(t);
        }
        await fs.rm(dir, { recursive: true, force: true });
      },
    };
  }
  await fs.rm(dir, { recursive: true, force: true });
  throw lastErr;
}

// ------------------------------------------------------------------ a model artifact for tests


export function sha256(b: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(b).digest("hex");
}

export interface TestBlob {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
  annotations?: Record<string, string>;
}

export interface TestArtifact {
  config: TestBlob;
  layers: TestBlob[];
  manifest: Buffer;
  manifestDigest: string;
}

/** A small ModelPack-style artifact: config, an axon.yaml layer and a weights layer. */
export function modelArtifact(seed = "m", weightBytes = 4096): TestArtifact {
  const blob = (mediaType: string, bytes: Buffer, filepath?: string): TestBlob => ({
    mediaType,
    bytes,
    digest: sha256(bytes),
    size: bytes.length,
    annotations: filepath ? { "org.cncf.model.filepath": filepath } : undefined,
  });
  const config = blob(
    "application/vnd.cncf.model.config.v1+json",
    Buffer.from(JSON.stringify({ descriptor: { name: seed }, config: { format: "onnx" }, modelfs: { type: "layers", diffIds: [] } })),
  );
  const weights = Buffer.alloc(weightBytes);
  for (let i = 0; i < weights.length; i++) weights[i] = (i * 31 + seed.charCodeAt(0)) & 0xff;
  const layers = [
    blob("application/vnd.cncf.model.weight.config.v1.raw", Buffer.from(`apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata:\n  name: ${seed}\n`), "axon.yaml"),
    blob("application/vnd.cncf.model.weight.v1.raw", weights, "model.onnx"),
  ];
  const desc = (b: TestBlob): Record<string, unknown> => ({
    mediaType: b.mediaType,
    digest: b.digest,
    size: b.size,
    ...(b.annotations ? { annotations: b.annotations } : {}),
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: "application/vnd.cncf.model.manifest.v1+json",
      config: desc(config),
      layers: layers.map(desc),
      annotations: { "org.opencontainers.image.title": seed },
    }),
  );
  return { config, layers, manifest, manifestDigest: sha256(manifest) };
}
