/**
 * `axon serve` in a child process for the end-to-end server tests: started on a free port with
 * `--json` (its first stdout line says the ports), stopped with SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./registry.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");

export interface Served {
  child: ChildProcess;
  base: string;
  port: number;
  stderr: () => string;
  /** The first stdout line of `--json`: ports, listen address, admin policy, models. */
  info: { http: number; grpc?: number; ipc?: string; host: string; admin: string; models: string[] };
}

/**
 * Starts `axon serve --http-port <free> --json ...args` with AXON_HOME=home; resolves once it
 * listens. No gRPC or IPC door unless `args` ask for one (`--grpc-port`, `--ipc-name`): tests
 * run side by side.
 */
export async function startServer(home: string, args: string[]): Promise<Served> {
  const grpc = [...(args.includes("--grpc-port") ? [] : ["--grpc-port", "0"]), ...(args.includes("--ipc-name") ? [] : ["--ipc-name", "off"])];
  const child = spawn(process.execPath, [CLI, "serve", "--http-port", String(await freePort()), ...grpc, "--json", ...args], { env: { ...process.env, AXON_HOME: home }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    child.once("exit", (code) => reject(new Error(`axon serve exited with ${code}: ${err}`)));
  });
  const info = JSON.parse(line) as Served["info"];
  return { child, base: `http://127.0.0.1:${info.http}`, port: info.http, stderr: () => err, info };
}

/** SIGTERM; resolves with the exit code. */
export async function stop(s: Served): Promise<number | null> {
  s.child.kill("SIGTERM");
  return new Promise((resolve) => s.child.once("exit", (code) => resolve(code)));
}

/** POSTs a streaming /v1/completions request on a raw socket and drops the connection after `events` server-sent events. */
export async function disconnectMidStream(port: number, body: unknown, events = 3): Promise<void> {
  const { connect } = await import("node:net");
  const text = JSON.stringify(body);
  await new Promise<void>((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () => s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`));
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString();
      if ((got.match(/data: /g) ?? []).length >= events) {
        s.destroy(); // gone mid-stream
        resolve();
      }
    });
    s.on("error", reject);
  });
}

/** Bytes of the server's tensor pool in use, from /metrics: back at its baseline once every request is answered. */
export async function poolUsed(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(/^mlos_pool_bytes\{kind="used"\} (\d+)/m.exec(text)![1]);
}
