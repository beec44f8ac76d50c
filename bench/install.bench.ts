/**
 * Axon install benchmarks (issue: "Speed"). Run: `npm run bench` (after `npm run build`).
 *
 * 1. A 1 GiB model (4 files) from a local docker-registry: `axon install` (hash, write, link,
 *    all included) vs `curl` fetching the same blobs in parallel to disk without verifying them,
 *    alternating, several repetitions; reports each median and the median of per-pair ratios,
 *    and the peak RSS of the axon process.
 * 2. Installing an already-cached model, and `axon list` with 100 models installed: wall time
 *    of the whole command, Node's start included (median of many runs).
 */
import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Axon } from "../src/axon/axon.js";
import { startRegistry } from "../test/helpers/registry.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const REPS = Number(process.env.BENCH_REPS ?? 5);
const FILES = 4;
const FILE_SIZE = Number(process.env.BENCH_FILE_MB ?? 256) << 20;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

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

async function bigInstall(): Promise<void> {
  const registry = await startRegistry();
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
    console.log(`model: ${FILES} files, ${(total / 2 ** 30).toFixed(2)} GiB, registry ${registry.host}; ${REPS} repetitions, alternating; download path: ${via}`);

    const curlMs: number[] = [];
    const axonMs: number[] = [];
    const rss: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const out = path.join(work, "curl");
      mkdirSync(out, { recursive: true });
      const args = ["-sS", "--fail", "-Z", "--parallel-max", String(FILES)];
      blobs.forEach((d, i) => args.push("-o", path.join(out, `f${i}`), `${registry.url}/v2/bench/big/blobs/${d}`));
      curlMs.push(timed("curl", args).ms);
      rmSync(out, { recursive: true, force: true });

      const home = path.join(work, `home-${rep}`);
      const r = timed("/usr/bin/time", ["-f", "%M", process.execPath, CLI, "install", "bench/big@1.0.0", "--registry", registry.host, "--quiet"], { ...process.env, AXON_HOME: home });
      axonMs.push(r.ms);
      rss.push(Number(r.stderr.trim().split("\n").pop()) / 1024);
      rmSync(home, { recursive: true, force: true });
      console.log(`  rep ${rep + 1}: curl ${curlMs.at(-1)!.toFixed(0)} ms, axon ${axonMs.at(-1)!.toFixed(0)} ms (ratio ${(axonMs.at(-1)! / curlMs.at(-1)!).toFixed(2)}), axon peak RSS ${rss.at(-1)!.toFixed(0)} MB`);
    }
    const ratios = axonMs.map((a, i) => a / curlMs[i]!);
    console.log(`1 GiB install: curl median ${median(curlMs).toFixed(0)} ms, axon median ${median(axonMs).toFixed(0)} ms, median ratio ${median(ratios).toFixed(2)}x (target <= 1.5x); peak RSS median ${median(rss).toFixed(0)} MB, max ${Math.max(...rss).toFixed(0)} MB (target < 150 MB)`);
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
    console.log(`already-cached install: median ${median(cached).toFixed(0)} ms; axon list (100 models): median ${median(list).toFixed(0)} ms; bare 'node -e 0': median ${median(node).toFixed(0)} ms (target < 200 ms each, Node's start included)`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

const which = process.argv[2] ?? "all";
if (which === "all" || which === "small") await smallCommands();
if (which === "all" || which === "big") await bigInstall();
