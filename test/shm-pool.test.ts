// The native shared-memory pool through its JS surface (bindings/native.ts).
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { NativeError, loadNative, type NativeShmPoolStats } from "../bindings/native.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(here, "fixtures", "shm-child.js");
const native = loadNative();
const { ShmPool, addressOf } = native;

const segmentsOf = (pid: number): string[] => readdirSync("/dev/shm").filter((f) => f.startsWith(`mlos-${pid}-`));
const exists = (name: string): boolean => existsSync(path.join("/dev/shm", name));

interface ChildResult<T> {
  pid: number;
  messages: T[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Forks the fixture; `onMessage` may act on the child (kill it) as messages arrive. */
function runChild<T>(args: string[], opts: { execArgv?: string[]; onMessage?: (m: T, pid: number) => void } = {}): Promise<ChildResult<T>> {
  return new Promise((resolve, reject) => {
    const child = fork(CHILD, args, { execArgv: opts.execArgv ?? [], stdio: ["ignore", "ignore", "pipe", "ipc"] });
    const messages: T[] = [];
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("message", (m) => {
      messages.push(m as T);
      opts.onMessage?.(m as T, child.pid!);
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve({ pid: child.pid!, messages, code, signal, stderr }));
  });
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  assert.fail("expected an error");
}

describe("ShmPool", () => {
  it("allocates zero-copy, 64-byte aligned ArrayBuffers and frees them", () => {
    const pool = new ShmPool({ size: 1 << 20 });
    try {
      assert.match(pool.name, new RegExp(`^/mlos-${process.pid}-\\d+$`));
      assert.equal(pool.size, 1 << 20);
      assert.equal(pool.attached, false);
      assert.ok(exists(pool.name.slice(1)));
      const sizes = [1, 63, 64, 65, 100, 1000, 4096, 70000, 300000];
      const bufs = sizes.map((n) => pool.alloc(n));
      bufs.forEach((ab, i) => {
        assert.equal(ab.byteLength, sizes[i]);
        assert.equal(addressOf(ab) % 64n, 0n, `alloc(${sizes[i]}) is 64-byte aligned`);
        new Uint8Array(ab).fill(i + 1);
      });
      // The buffers are the pool's memory: a view of the same offset sees the same bytes, and
      // addressOf agrees with offsetOf.
      const base = addressOf(bufs[0]!) - BigInt(pool.offsetOf(bufs[0]!));
      bufs.forEach((ab, i) => {
        const off = pool.offsetOf(ab);
        assert.equal(addressOf(ab), base + BigInt(off));
        assert.deepEqual(new Uint8Array(pool.view(off, ab.byteLength)), new Uint8Array(ab.byteLength).fill(i + 1));
      });
      const view = new Float32Array(bufs[6]!, 8, 4);
      assert.equal(addressOf(view), addressOf(bufs[6]!) + 8n);
      assert.equal(pool.offsetOf(view), pool.offsetOf(bufs[6]!) + 8);

      let s = pool.stats();
      assert.equal(s.live, sizes.length);
      assert.equal(s.requested, sizes.reduce((a, b) => a + b, 0));
      for (const ab of bufs) pool.free(ab);
      s = pool.stats();
      assert.equal(s.live, 0);
      assert.equal(s.used, 0);
      assert.equal(s.freeCount, sizes.length);
      // free detaches: the memory can no longer be reached through the old buffer.
      assert.equal(bufs[0]!.byteLength, 0);
      assert.equal(codeOf(() => pool.free(bufs[0]!)), "BAD_ARGUMENT");
      // A buffer that is not from this pool.
      assert.equal(codeOf(() => pool.free(new ArrayBuffer(8))), "BAD_ARGUMENT");
    } finally {
      pool.close();
    }
  });

  it("reports exhaustion with code SHM_EXHAUSTED and recovers after free", () => {
    const pool = new ShmPool({ size: 64 * 1024 });
    try {
      const held: ArrayBuffer[] = [];
      let err: unknown;
      try {
        for (;;) held.push(pool.alloc(4096));
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof NativeError, "a NativeError");
      assert.equal((err as NativeError).code, "SHM_EXHAUSTED");
      assert.equal(held.length, 16);
      assert.equal(codeOf(() => pool.alloc(1 << 20)), "SHM_EXHAUSTED");
      pool.free(held.pop()!);
      held.push(pool.alloc(4096));
      assert.equal(pool.stats().used, 64 * 1024);
      for (const ab of held) pool.free(ab);
    } finally {
      pool.close();
    }
  });

  it("keeps statistics", () => {
    const pool = new ShmPool({ size: 1 << 20 });
    try {
      const a = pool.alloc(100);
      const b = pool.alloc(200_000);
      const c = pool.alloc(64);
      let s: NativeShmPoolStats = pool.stats();
      assert.equal(s.capacity, 1 << 20);
      assert.equal(s.used, 128 + 200_704 + 64);
      assert.equal(s.highWater, s.used);
      assert.equal(s.allocCount, 3);
      assert.equal(s.freeBytes, s.capacity - s.used);
      pool.free(b);
      s = pool.stats();
      assert.equal(s.used, 128 + 64);
      assert.equal(s.highWater, 128 + 200_704 + 64);
      assert.equal(s.freeCount, 1);
      assert.ok(s.fragmentation >= 0 && s.fragmentation < 1);
      pool.free(a);
      pool.free(c);
      s = pool.stats();
      assert.equal(s.cachedBytes, 128 + 64);
    } finally {
      pool.close();
    }
  });

  it("checks arguments and receivers, and refuses use after close", () => {
    const pool = new ShmPool({ size: 1 << 16 });
    assert.equal(codeOf(() => pool.alloc(0)), "BAD_ARGUMENT");
    assert.equal(codeOf(() => pool.alloc(-1)), "BAD_ARGUMENT");
    assert.equal(codeOf(() => pool.alloc(1.5)), "BAD_ARGUMENT");
    assert.equal(codeOf(() => pool.alloc("8" as unknown as number)), "BAD_ARGUMENT");
    assert.equal(codeOf(() => pool.view(0, (1 << 16) + 1)), "BAD_ARGUMENT");
    assert.equal(codeOf(() => new ShmPool({ size: 0 })), "BAD_ARGUMENT");
    assert.equal(codeOf(() => new ShmPool({ size: 4096, name: "a/b" })), "BAD_ARGUMENT");
    assert.equal(codeOf(() => new ShmPool({ size: 4096, name: pool.name })), "SHM_FAIL");
    assert.equal(codeOf(() => ShmPool.attach("/mlos-no-such-segment")), "BAD_ARGUMENT");
    assert.equal(codeOf(() => addressOf({} as ArrayBuffer)), "BAD_ARGUMENT");
    // A forged receiver is a TypeError, not a crash.
    assert.throws(() => pool.alloc.call({} as never, 8), (e: unknown) => e instanceof TypeError && (e as NativeError).code === "BAD_ARGUMENT");
    assert.throws(() => pool.stats.call(Object.create(ShmPool.prototype) as never), TypeError);
    assert.throws(() => (ShmPool as unknown as () => void)(), TypeError);
    const ab = pool.alloc(8);
    pool.close();
    assert.equal(pool.isClosed(), true);
    assert.ok(!exists(pool.name.slice(1)), "close() unlinks");
    assert.equal(codeOf(() => pool.alloc(8)), "CLOSED");
    assert.equal(codeOf(() => pool.stats()), "CLOSED");
    pool.close(); // idempotent
    // The memory stays mapped while a buffer views it.
    new Uint8Array(ab).fill(9);
    assert.equal(new Uint8Array(ab)[7], 9);
  });

  it("lets a forked child attach by name and share the same bytes", async () => {
    const pool = new ShmPool({ size: 1 << 20 });
    try {
      const ab = pool.alloc(10_000);
      const bytes = new Uint8Array(ab);
      for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
      const r = await runChild<{ attached: boolean; size: number; same: boolean }>(["attach", pool.name, String(pool.offsetOf(ab)), String(ab.byteLength)]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.messages[0], { attached: true, size: 1 << 20, same: true });
      let written = true;
      for (let i = 0; i < bytes.length; i++) written &&= bytes[i] === 255 - (i % 251);
      assert.ok(written, "the child's writes are visible");
      assert.ok(exists(pool.name.slice(1)), "an attached pool's close does not unlink");
    } finally {
      pool.close();
    }
  });

  it("leaves no segment behind after a normal exit", async () => {
    const r = await runChild<{ name: string }>(["exit-normal"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.messages[0]!.name, new RegExp(`^/mlos-${r.pid}-`));
    assert.deepEqual(segmentsOf(r.pid), []);
  });

  it("leaves no segment behind after an uncaught error", async () => {
    const r = await runChild<{ name: string }>(["throw"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /deliberate uncaught error/);
    assert.match(r.messages[0]!.name, new RegExp(`^/mlos-${r.pid}-`));
    assert.deepEqual(segmentsOf(r.pid), []);
  });

  it("removes the segment of a SIGKILLed child when the next pool is created", async () => {
    const r = await runChild<{ name: string }>(["hang"], { onMessage: (_m, pid) => process.kill(pid, "SIGKILL") });
    assert.equal(r.signal, "SIGKILL");
    assert.equal(segmentsOf(r.pid).length, 1, "SIGKILL leaves the segment behind");
    const pool = new ShmPool({ size: 4096 });
    pool.close();
    assert.deepEqual(segmentsOf(r.pid), [], "creating a pool removed the stale segment");
  });

  it("returns slices to the pool when their ArrayBuffers are collected", async () => {
    const r = await runChild<{ recovered: number; stats: NativeShmPoolStats }>(["gc"], { execArgv: ["--expose-gc"] });
    assert.equal(r.code, 0, r.stderr);
    const { recovered, stats } = r.messages[0]!;
    assert.ok(recovered > 0, "allocation went on after collections");
    assert.equal(stats.allocCount, 20 * 1024);
    assert.equal(stats.live, 0);
    assert.equal(stats.used, 0);
    assert.equal(stats.freeCount, stats.allocCount);
  });
});
