/**
 * mlos as a dependency, the way a user gets it: `npm pack` of this repository, then a fresh project
 * that runs `npm install <tarball>` (offline where the npm cache allows: `--prefer-offline`, and
 * `ONNXRUNTIME_NODE_INSTALL=skip` so that onnxruntime-node's postinstall does not reach out for
 * CUDA parts). The install builds the native addon in the consumer's node_modules (the addon only:
 * no C++ tests). Then, from that project:
 *   - the library (`import { load, Tensor } from "mlos"`, in a child node process) runs the demo
 *     MLP copied out of the package and gives the numbers this repository's build gives;
 *   - `npx axon serve --demo` seeds the demo models and answers a KServe v2 request over HTTP;
 *   - TF.js is not installed (an optional peer), and the tensorflow plugin says what to install;
 *   - node_modules stays within 450 MB.
 * The install takes 1-3 minutes on 2 cores (mostly the C++ build); the torch addon is skipped
 * (MLOS_TORCH=0) since it is optional and adds over a minute where libtorch is installed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { DEMO_MODELS_DIR, Tensor, load } from "mlos";
import { kserveClient } from "./helpers/grpc-client.js";
import { freePort } from "./helpers/registry.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FOOTPRINT_LIMIT_MB = 450;
const TF_HINT = "npm install @tensorflow/tfjs@^4.22.0 @tensorflow/tfjs-backend-wasm@^4.22.0";
const MLP_INPUT = [5.1, 3.5, 1.4, 0.2];

function which(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

const skip = !existsSync(path.join(ROOT, "dist", "src", "index.js")) || !existsSync(path.join(DEMO_MODELS_DIR, "mlp", "model.onnx"))
  ? "mlos is not built (npm run build)"
  : !which("npm") ? "npm is not on PATH"
  : !which("cmake") || !(which("g++") || which("clang++")) ? "the consumer's native build needs cmake and a C++ compiler (apt-get install cmake g++)"
  : false;

/**
 * The environment for npm in the consumer project: ours, without what an enclosing `npm test` set
 * for this repository (npm_package_*, npm_config_local_prefix, INIT_CWD would point npm and the
 * install scripts at the wrong project); the cache stays.
 */
function consumerEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && k.toLowerCase() !== "npm_config_cache") continue;
    if (k === "INIT_CWD") continue;
    env[k] = v;
  }
  return { ...env, AXON_HOME: home, ONNXRUNTIME_NODE_INSTALL: "skip", MLOS_TORCH: "0" };
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): { out: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20 });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} exited with ${r.status ?? r.signal}${r.error ? ` (${r.error.message})` : ""}:\n${out.slice(-6000)}`);
  return { out, ms: Date.now() - t0 };
}

describe("mlos installed from its npm tarball", { skip, timeout: 20 * 60_000 }, () => {
  let tmp = "";
  let project = "";
  let home = "";
  let env: NodeJS.ProcessEnv = {};
  const timings: string[] = [];
  let expected: number[] = [];

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "mlos-package-"));
    project = path.join(tmp, "project");
    home = path.join(tmp, "axon-home");
    mkdirSync(project);
    env = consumerEnv(home);

    // The reference numbers: the demo MLP through this repository's own build.
    const model = await load(path.join(DEMO_MODELS_DIR, "mlp"));
    try {
      const { y } = await model.infer({ x: Tensor.float32([1, 4], MLP_INPUT) });
      expected = Array.from(y!.data as Float32Array);
    } finally {
      await model.dispose();
    }

    // --ignore-scripts: `prepare` (npm run build) would rebuild this tree; the suite runs after a build.
    const pack = run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", tmp], ROOT, consumerEnv(home), 120_000);
    timings.push(`npm pack ${pack.ms} ms`);
    const tarball = readdirSync(tmp).find((f) => /^mlos-.*\.tgz$/.test(f));
    assert.ok(tarball, `npm pack wrote no tarball: ${pack.out.slice(-2000)}`);

    writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "mlos-consumer", version: "1.0.0", private: true, type: "module" }, null, 2));
    const install = run("npm", ["install", path.join(tmp, tarball), "--prefer-offline", "--no-audit", "--no-fund"], project, env, 15 * 60_000);
    timings.push(`npm install ${install.ms} ms`);
  }, { timeout: 18 * 60_000 });

  after(() => {
    if (!tmp) return;
    spawnSync("chmod", ["-R", "u+w", tmp]); // the store's blobs are read-only
    rmSync(tmp, { recursive: true, force: true });
  });

  it("installs the runtime dependencies and the built addon, not TF.js, the C++ tests or devDependencies, within the footprint", (t) => {
    const nm = path.join(project, "node_modules");
    t.diagnostic(timings.join(", "));
    assert.ok(existsSync(path.join(nm, "mlos", "build", "Release", "mlos_native.node")), "the addon was built in the consumer");
    assert.ok(!existsSync(path.join(nm, "mlos", "build", "native-tests")), "no C++ test binaries in a consumer install");
    assert.ok(existsSync(path.join(nm, "onnxruntime-node", "bin")), "onnxruntime-node is a runtime dependency");
    assert.ok(existsSync(path.join(nm, "mlos", "dist", "demo-models", "mlp", "axon.yaml")), "the demo models ship in the package");
    for (const pkg of ["@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@tensorflow/tfjs-core", "typescript", "oclif", "autocannon"]) {
      assert.ok(!existsSync(path.join(nm, pkg)), `${pkg} must not be installed by a plain install`);
    }
    const du = spawnSync("du", ["-sk", nm], { encoding: "utf8" });
    const mb = Number(du.stdout.split(/\s/)[0]) / 1024;
    t.diagnostic(`node_modules: ${mb.toFixed(0)} MB`);
    assert.ok(mb > 0 && mb <= FOOTPRINT_LIMIT_MB, `node_modules is ${mb.toFixed(0)} MB, over ${FOOTPRINT_LIMIT_MB} MB`);
  });

  it("imports the library from the project and runs the demo model; the tensorflow plugin names what to install", async () => {
    const modelDir = path.join(project, "models", "mlp");
    cpSync(path.join(project, "node_modules", "mlos", "dist", "demo-models", "mlp"), modelDir, { recursive: true });
    const script = path.join(project, "check.mjs");
    writeFileSync(
      script,
      `import { load, Tensor, getDefaultRuntime } from "mlos";
const model = await load(${JSON.stringify(modelDir)});
const { y } = await model.infer({ x: Tensor.float32([1, 4], ${JSON.stringify(MLP_INPUT)}) });
const tf = getDefaultRuntime().findPlugin("tensorflow")?.availability();
console.log(JSON.stringify({ resolved: import.meta.resolve("mlos"), plugin: model.plugin, shape: y.shape, data: Array.from(y.data), tf }));
model.dispose();
`,
    );
    const r = run(process.execPath, [script], project, env, 60_000);
    const res = JSON.parse(r.out.trim().split("\n").pop()!) as { resolved: string; plugin: string; shape: number[]; data: number[]; tf?: { available: boolean; reason?: string } };
    assert.ok(fileURLToPath(res.resolved).startsWith(path.join(project, "node_modules", "mlos") + path.sep), `mlos resolved from the project: ${res.resolved}`);
    assert.equal(res.plugin, "onnxruntime");
    assert.deepEqual(res.shape, [1, 3]);
    assert.equal(res.data.length, 3);
    res.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `y[${i}] = ${v}, expected ${expected[i]}`));
    assert.ok(Math.abs(res.data.reduce((a, b) => a + b, 0) - 1) < 1e-5, "softmax sums to 1");
    assert.equal(res.tf?.available, false);
    assert.ok(res.tf?.reason?.includes(TF_HINT), `the tensorflow plugin's reason names the install: ${res.tf?.reason}`);
  });

  it("npx axon serve --demo serves the demo models over HTTP, gRPC and shared-memory IPC", async () => {
    const port = await freePort();
    const grpcPort = await freePort();
    const ipcSocket = path.join(project, "mlos-ipc.sock");
    // Its own process group, so that npx and the server it starts stop together.
    const child: ChildProcess = spawn("npx", ["--no", "axon", "serve", "--demo", "--http-port", String(port), "--grpc-port", String(grpcPort), "--ipc-name", ipcSocket, "--json"], { cwd: project, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        const timer = setTimeout(() => reject(new Error(`axon serve did not start in 60 s: ${err}`)), 60_000);
        child.stdout!.on("data", (d: Buffer) => {
          out += d.toString();
          const nl = out.indexOf("\n");
          if (nl >= 0) {
            clearTimeout(timer);
            resolve(out.slice(0, nl));
          }
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`axon serve exited with ${code}: ${err}`));
        });
      });
      const info = JSON.parse(line) as { http: number; grpc: number; ipc: string; models: string[] };
      assert.equal(info.http, port);
      assert.equal(info.grpc, grpcPort);
      assert.equal(info.ipc, ipcSocket);
      assert.deepEqual([...info.models].sort(), ["embedder@1.0.0", "mlp@1.0.0", "tiny-cnn@1.0.0", "tiny-embed@1.0.0", "tiny-gpt@1.0.0"]);

      const res = await fetch(`http://127.0.0.1:${port}/v2/models/mlp/infer`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 4], datatype: "FP32", data: MLP_INPUT }] }),
      });
      const body = (await res.json()) as { model_name: string; outputs: Array<{ name: string; datatype: string; shape: number[]; data: number[] }> };
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.model_name, "mlp");
      const y = body.outputs.find((o) => o.name === "y");
      assert.ok(y, JSON.stringify(body));
      assert.equal(y.datatype, "FP32");
      assert.deepEqual(y.shape, [1, 3]);
      y.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `y[${i}] = ${v}, expected ${expected[i]}`));

      // The bundled language model generates, through the dependencies a consumer install has
      // (the tokenizer and template packages).
      const chat = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "tiny-gpt", messages: [{ role: "user", content: "Hello!" }], max_tokens: 5, temperature: 0 }),
      });
      const answer = (await chat.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }>; usage: { completion_tokens: number } };
      assert.equal(chat.status, 200, JSON.stringify(answer));
      assert.equal(answer.usage.completion_tokens, 5);
      assert.equal(answer.choices[0]!.finish_reason, "length");

      // The gRPC door, from the proto files the package ships.
      const grpcClient = kserveClient(`127.0.0.1:${grpcPort}`);
      try {
        const inferred = await grpcClient.call<{ outputs: Array<{ name: string; shape: number[] }>; raw_output_contents: Buffer[] }>("ModelInfer", {
          model_name: "mlp",
          inputs: [{ name: "x", datatype: "FP32", shape: [1, 4] }],
          raw_input_contents: [Buffer.from(new Float32Array(MLP_INPUT).buffer)],
        });
        assert.deepEqual(inferred.outputs.map((o) => [o.name, o.shape]), [["y", [1, 3]]]);
        const raw = inferred.raw_output_contents[0]!;
        new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)).forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `gRPC y[${i}] = ${v}`));
      } finally {
        grpcClient.close();
      }
      assert.ok(existsSync(path.join(project, "node_modules", "mlos", "proto", "grpc_service.proto")), "the package ships its proto files for clients");

      // The IPC door, from a script in the project importing mlos/ipc; and the C example client's
      // source and header ship for other languages.
      const ipcScript = path.join(project, "ipc.mjs");
      writeFileSync(
        ipcScript,
        `import { connect } from "mlos/ipc";
const c = await connect(${JSON.stringify(ipcSocket)});
const x = c.tensor("float32", [1, 4], ${JSON.stringify(MLP_INPUT)});
const { y } = await c.infer("mlp", { x });
console.log(JSON.stringify({ resolved: import.meta.resolve("mlos/ipc"), shape: y.shape, data: Array.from(y.data) }));
c.close();
`,
      );
      const ipcRun = run(process.execPath, [ipcScript], project, env, 60_000);
      const viaIpc = JSON.parse(ipcRun.out.trim().split("\n").pop()!) as { resolved: string; shape: number[]; data: number[] };
      assert.ok(fileURLToPath(viaIpc.resolved).startsWith(path.join(project, "node_modules", "mlos") + path.sep), viaIpc.resolved);
      assert.deepEqual(viaIpc.shape, [1, 3]);
      viaIpc.data.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `IPC y[${i}] = ${v}, expected ${expected[i]}`));
      for (const f of ["native/include/mlos_ipc.h", "examples/ipc-client.c"]) assert.ok(existsSync(path.join(project, "node_modules", "mlos", f)), `the package ships ${f}`);

      const plugins = await (await fetch(`http://127.0.0.1:${port}/api/v1/plugins`)).text();
      assert.ok(plugins.includes(TF_HINT), `GET /api/v1/plugins names the TF.js install: ${plugins}`);
    } finally {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {
        // already gone
      }
      const code = await Promise.race([exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 15_000).unref())]);
      if (code === "timeout") process.kill(-child.pid!, "SIGKILL");
    }
  });
});
