/**
 * What the benchmarks share: the median and spread of repetitions, CPU pinning with taskset, and
 * the CPU time a process has used (utime + stime of all its threads, live and exited, from
 * /proc/PID/stat).
 *
 * On this project's machines (2 cores, shared) a load generator and the server it measures compete
 * for the CPU, and which one the scheduler starves varies from run to run. The benchmarks
 * therefore pin the process under test to one core and whatever loads it to the other
 * (BENCH_PIN=0 turns that off), and report CPU time per unit of work beside wall-clock figures:
 * it moves least with the noise of the machine.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import os from "node:os";

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** "median (min..max)" of a series, each with `d` decimals (and a suffix). */
export function spread(xs: number[], d = 2, unit = ""): string {
  const f = (x: number) => x.toFixed(d) + unit;
  if (xs.length === 0) return "n/a";
  return `${f(median(xs))} (${f(Math.min(...xs))}..${f(Math.max(...xs))})`;
}

export const TASKSET = ["/usr/bin/taskset", "/bin/taskset"].find((p) => existsSync(p));
/** Whether to pin: taskset present, at least 2 CPUs, BENCH_PIN not 0. */
export const PIN = process.env.BENCH_PIN !== "0" && TASKSET !== undefined && os.cpus().length >= 2;
/** The CPU of the process under test, and the CPU of whatever loads it (BENCH_SERVER_CPU, BENCH_LOAD_CPU). */
export const SERVER_CPU = process.env.BENCH_SERVER_CPU ?? "0";
export const LOAD_CPU = process.env.BENCH_LOAD_CPU ?? "1";

/**
 * Runs the calling benchmark again pinned to LOAD_CPU (it is the load generator; the servers it
 * starts go to SERVER_CPU) and exits with its status; returns at once in the pinned run, or when
 * not pinning. `script` is the benchmark's import.meta.url.
 */
export function pinThisProcess(script: string): void {
  const marker = "MLOS_BENCH_PINNED";
  if (!PIN || process.env[marker] === "1") return;
  const r = spawnSync(TASKSET!, ["-c", LOAD_CPU, process.execPath, ...process.execArgv, new URL(script).pathname, ...process.argv.slice(2)], { stdio: "inherit", env: { ...process.env, [marker]: "1" } });
  process.exit(r.status ?? 1);
}

/** The `p` quantile (0..1) of an ascending series. */
export const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;

/** `n` sequential calls of `once`: their latencies in µs, ascending. */
export async function roundTrips(once: () => Promise<void>, n: number): Promise<number[]> {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    out[i] = (performance.now() - t0) * 1000;
  }
  return out.sort((a, b) => a - b);
}

/** `cmd args` prefixed with `taskset -c CPU` when pinning, as [command, args]. */
export function pinned(cpu: string, cmd: string, args: string[]): [string, string[]] {
  return PIN ? [TASKSET!, ["-c", cpu, cmd, ...args]] : [cmd, args];
}

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * CPU seconds (user + system) the process has used so far, all its threads together: fields 14
 * and 15 of /proc/PID/stat, which count the live threads and the ones that have exited.
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

export interface CpuTimes {
  /** Seconds the CPU ran anything (user, nice, system, irq, softirq). */
  busy: number;
  /** Seconds the hypervisor ran something else while this virtual CPU wanted to run. */
  steal: number;
}

/** One CPU's counters from /proc/stat (all CPUs together when `cpu` is undefined). */
export function cpuTimes(cpu?: string): CpuTimes {
  const name = cpu === undefined ? "cpu" : `cpu${cpu}`;
  const line = readFileSync("/proc/stat", "utf8").split("\n").find((l) => l.startsWith(name + " "));
  if (!line) return { busy: NaN, steal: NaN };
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
  const t = ticksPerSecond();
  return { busy: (user! + nice! + system! + irq! + softirq!) / t, steal: steal! / t };
}

/**
 * What else used a CPU over a window: its busy time less `own` (the CPU seconds of the processes
 * measured there), and the hypervisor's steal, each as a share of the window. A measurement whose
 * server CPU had more than a few per cent of either was disturbed by the machine, not the server.
 */
export function foreignShare(before: CpuTimes, after: CpuTimes, own: number, wallSeconds: number): { others: number; steal: number } {
  return { others: Math.max(0, after.busy - before.busy - own) / wallSeconds, steal: (after.steal - before.steal) / wallSeconds };
}

/** The CPUs each thread of the process may run on (from /proc/PID/task/TID/status), deduplicated. */
export function allowedCpus(pid: number): string[] {
  const seen = new Set<string>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"));
      if (m) seen.add(m[1]!);
    } catch {
      /* the thread exited */
    }
  }
  return [...seen];
}

/** The machine's load average and CPU count, for the header of a report. */
export function machineLine(): string {
  const [l1, l5] = os.loadavg();
  return `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? "?"}), load average ${l1!.toFixed(2)} / ${l5!.toFixed(2)} (1 / 5 min), ${PIN ? `pinned: process under test on CPU ${SERVER_CPU}, load on CPU ${LOAD_CPU}` : "not pinned"}`;
}
