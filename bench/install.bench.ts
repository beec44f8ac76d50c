/**
 * Axon install benchmarks (issue: "Speed"). Run: `npm run bench` (after `npm run build`).
 *
 * 1. A 1 GiB model (4 files) from a local docker-registry: `axon install` (hash, write, link,
 *    all included) vs `curl` fetching the same blobs in parallel to disk without verifying them,
 *    alternating, several repetitions; reports each median with its min..max, the median of
 *    per-pair ratios with theirs, each client's CPU time (user + sys) beside its wall time, and
 *    the peak RSS of the axon process. The registry is a second process competing for the 2
 *    cores: it is pinned to CPU 0 and the client (curl or axon, all their threads) to CPU 1
 *    (BENCH_PIN=0: neither is pinned), so the registry's share of the machine is the same for both.
 * 2. Installing an already-cached model, and `axon list` with 100 models installed: wall time
 *    of the whole command, Node's start included (median of many runs).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync, writeSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Axon } from "../src/axon/axon.js";
import { startRegistry } from "../test/helpers/registry.js";
import { LOAD_CPU, PIN, SERVER_CPU, TASKSET, allowedCpus, machineLine, median, pinned, spread } from "./measure.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const REPS = Number(process.env.BENCH_REPS ?? 5);
const FILES = 4;
const FILE_SIZE = Number(process.env.BENCH_FILE_MB ?? 256) << 20;

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { ms: number; stdout: string; stderr: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env, encoding: "utf8", maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr}`);
  return { ms, stdout: r.stdout, stderr: r.stderr };
}

function modelDir(ns: string, name: string, version: string, files: Array<[string, number]>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "bench-model-"));
  const chunk = Buffer.alloc(8 << 20);
  for (const [p, size] of files) {
    const fd = openSync(path.join(dir, p), "w");
    for (let left = size; left > 0; left -= chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, left));
    }
    closeSync(fd);
  }
  writeFileSync(
    path.join(dir, "axon.yaml"),
    `apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata: { namespace: ${ns}, name: ${name}, version: ${version} }\nspec:\n  framework: { name: onnx }\n  format:\n    type: onnx\n    files:\n${files.map(([p]) => `      - path: ${p}`).join("\n")}\n`,
  );
  return dir;
}

/** The docker-registry process serving `dataDir` (its config sits beside the data folder). */
function registryPid(dataDir: string): number | undefined {
  const config = path.join(path.dirname(dataDir), "config.yml");
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").includes(config)) return Number(entry);
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/** Wall time and CPU time (user + sys, all threads, children included) of a command, via /usr/bin/time, pinned to LOAD_CPU. */
function measured(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { ms: number; cpuMs: number; rssMb: number } {
  const [c, a] = pinned(LOAD_CPU, cmd, args);
  const r = timed("/usr/bin/time", ["-f", "MLOSTIME %U %S %M", c, ...a], env);
  const m = /MLOSTIME (\S+) (\S+) (\d+)/.exec(r.stderr);
  if (!m) throw new Error(`no /usr/bin/time figures: ${r.stderr}`);
  return { ms: r.ms, cpuMs: (Number(m[1]) + Number(m[2])) * 1000, rssMb: Number(m[3]) / 1024 };
}

async function bigInstall(): Promise<void> {
  const registry = await startRegistry();
  if (PIN) {
    const pid = registryPid(registry.dataDir);
    if (pid === undefined) throw new Error("cannot find the docker-registry process to pin it");
    execFileSync(TASKSET!, ["-a", "-p", "-c", SERVER_CPU, String(pid)], { stdio: "ignore" });
    const cpus = allowedCpus(pid);
    if (cpus.length !== 1 || cpus[0] !== SERVER_CPU) throw new Error(`docker-registry is not pinned to CPU ${SERVER_CPU}: ${cpus.join(" / ")}`);
  }
  const work = mkdtempSync(path.join(tmpdir(), "bench-"));
  try {
    const publisher = new Axon({ home: path.join(work, "publisher") });
    const dir = modelDir("bench", "big", "1.0.0", Array.from({ length: FILES }, (_, i) => [`weights-${i}.bin`, FILE_SIZE] as [string, number]));
    const packed = await publisher.pack(dir);
    rmSync(dir, { recursive: true, force: true });
    await publisher.push("bench/big@1.0.0", { registry: registry.host });
    await publisher.close();
    const blobs = packed.manifest.spec.format.files.map((f) => f.sha256);
    const total = packed.manifest.spec.format.files.reduce((s, f) => s + f.size, 0);
    const { nativeBlobFetch } = await import("../src/axon/registry/native-blob-fetch.js");
    const via = nativeBlobFetch() ? "native (BlobFetch: receive, SHA-256 and write on native threads)" : "JS (MLOS_NATIVE_FETCH=0, or no native fetcher)";
    console.log(`model: ${FILES} files, ${(total / 2 ** 30).toFixed(2)} GiB, registry ${registry.host}; ${REPS} repetitions, alternating (the order swaps each repetition); download path: ${via}`);
    console.log(`  ${machineLine().replace("process under test", "docker-registry").replace("load on", "curl / axon on")}`);

    const curl: Array<{ ms: number; cpuMs: number }> = [];
    const ax: Array<{ ms: number; cpuMs: number; rssMb: number }> = [];
    const runCurl = () => {
      const out = path.join(work, "curl");
      mkdirSync(out, { recursive: true });
      const args = ["-sS", "--fail", "-Z", "--parallel-max", String(FILES)];
      blobs.forEach((d, i) => args.push("-o", path.join(out, `f${i}`), `${registry.url}/v2/bench/big/blobs/${d}`));
      curl.push(measured("curl", args));
      rmSync(out, { recursive: true, force: true });
    };
    const runAxon = (rep: number) => {
      const home = path.join(work, `home-${rep}`);
      ax.push(measured(process.execPath, [CLI, "install", "bench/big@1.0.0", "--registry", registry.host, "--quiet"], { ...process.env, AXON_HOME: home }));
      rmSync(home, { recursive: true, force: true });
    };
    // Unmeasured: the registry's first answers (its runtime warming up, its blobs read) took twice as long.
    runCurl();
    curl.pop();
    for (let rep = 0; rep < REPS; rep++) {
      if (rep % 2) {
        runAxon(rep);
        runCurl();
      } else {
        runCurl();
        runAxon(rep);
      }
      const c = curl.at(-1)!;
      const a = ax.at(-1)!;
      console.log(`  rep ${rep + 1}: curl ${c.ms.toFixed(0)} ms (CPU ${c.cpuMs.toFixed(0)} ms), axon ${a.ms.toFixed(0)} ms (CPU ${a.cpuMs.toFixed(0)} ms), ratio ${(a.ms / c.ms).toFixed(2)}, axon peak RSS ${a.rssMb.toFixed(0)} MB`);
    }
    const ratios = ax.map((a, i) => a.ms / curl[i]!.ms);
    const rss = ax.map((a) => a.rssMb);
    console.log(`${(total / 2 ** 30).toFixed(2)} GiB install, median (min..max) over ${REPS} reps: curl ${spread(curl.map((c) => c.ms), 0, " ms")}, axon ${spread(ax.map((a) => a.ms), 0, " ms")}; ratio ${spread(ratios, 2, "x")} (target <= 1.5x: ${median(ratios) <= 1.5 ? "MET" : "NOT MET"})`);
    console.log(`  client CPU (user + sys): curl ${spread(curl.map((c) => c.cpuMs), 0, " ms")}, axon ${spread(ax.map((a) => a.cpuMs), 0, " ms")}, ratio ${spread(ax.map((a, i) => a.cpuMs / curl[i]!.cpuMs), 2, "x")}`);
    // What verification alone costs on this machine: curl does not hash, axon must.
    const block = Buffer.alloc(64 << 20, 7);
    const t = process.hrtime.bigint();
    const h = createHash("sha256");
    for (let left = total; left > 0; left -= block.length) h.update(left >= block.length ? block : block.subarray(0, left));
    h.digest();
    console.log(`  for scale: SHA-256 of ${(total / 2 ** 30).toFixed(2)} GiB in this process (Node's OpenSSL, one core) takes ${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(0)} ms`);
    console.log(`  axon peak RSS ${spread(rss, 0, " MB")} (target < 150 MB: ${Math.max(...rss) < 150 ? "MET" : "NOT MET"})`);
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

async function smallCommands(): Promise<void> {
  const home = mkdtempSync(path.join(tmpdir(), "bench-home-"));
  try {
    const axon = new Axon({ home });
    for (let i = 0; i < 100; i++) {
      const dir = modelDir("bench", `m${String(i).padStart(3, "0")}`, "1.0.0", [["model.onnx", 1024]]);
      await axon.pack(dir);
      rmSync(dir, { recursive: true, force: true });
    }
    await axon.close();
    const env = { ...process.env, AXON_HOME: home };
    const runs = Number(process.env.BENCH_SMALL_RUNS ?? 21);
    const node: number[] = [];
    const cached: number[] = [];
    const list: number[] = [];
    for (let i = 0; i < runs; i++) {
      node.push(timed(process.execPath, ["-e", "0"]).ms);
      cached.push(timed(process.execPath, [CLI, "install", "bench/m050@1.0.0"], env).ms);
      const l = timed(process.execPath, [CLI, "list", "--json"], env);
      list.push(l.ms);
      if (i === 0 && JSON.parse(l.stdout).models.length !== 100) throw new Error("list did not show 100 models");
    }
    console.log(`median (min..max) of ${runs} runs: already-cached install ${spread(cached, 0, " ms")}; axon list (100 models) ${spread(list, 0, " ms")}; bare 'node -e 0' ${spread(node, 0, " ms")} (target < 200 ms each, Node's start included: ${median(cached) < 200 && median(list) < 200 ? "MET" : "NOT MET"})`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

const which = process.argv[2] ?? "all";
if (which === "all" || which === "small") await smallCommands();
if (which === "all" || which === "big") await bigInstall();
