// The CUDA allocators through their JS surface (bindings/native.ts). The detection and refusal
// tests run everywhere; the GPU tests are skipped, with the reason, where cudaInfo() finds no GPU.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { NativeError, loadNative, type NativeCudaDeviceBuffer } from "../bindings/native.js";

const native = loadNative();
const { CudaDeviceAllocator, PinnedHostAllocator, cudaInfo } = native;
const info = cudaInfo();
/** false where there is a GPU, else why not (node:test prints it with the skip). */
const noGpu: false | string = info.available ? false : (info.reason ?? "no GPU");

function errorOf(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  assert.fail("expected an error");
}

const MiB = 1 << 20;

describe("cudaInfo", () => {
  it("reports whether CUDA can be used, and why not", () => {
    assert.equal(typeof info.compiled, "boolean");
    assert.equal(typeof info.available, "boolean");
    assert.equal(typeof info.deviceCount, "number");
    assert.ok(Array.isArray(info.devices));
    assert.equal(info.devices.length, info.deviceCount);
    assert.equal(typeof info.runtimeVersion, "number");
    assert.equal(typeof info.driverVersion, "number");
    if (info.available) {
      assert.equal(info.compiled, true);
      assert.equal(info.reason, undefined);
      assert.ok(info.deviceCount > 0);
      info.devices.forEach((d, i) => {
        assert.equal(d.index, i);
        assert.ok(d.name.length > 0);
        assert.ok(d.totalMemory > 0);
        assert.ok(d.freeMemory === null || (d.freeMemory > 0 && d.freeMemory <= d.totalMemory));
        assert.match(d.computeCapability, /^\d+\.\d+$/);
      });
      return;
    }
    // No GPU here: a reason, and no devices.
    assert.equal(typeof info.reason, "string");
    assert.ok(info.reason!.length > 0);
    assert.equal(info.deviceCount, 0);
    if (!info.compiled) {
      assert.match(info.reason!, /^compiled without CUDA/);
      assert.equal(info.runtimeVersion, 0);
      return;
    }
    assert.match(info.reason!, /^no GPU: /);
    assert.ok(info.runtimeVersion >= 11000, "the runtime linked in reports its version");
    if (info.errorNumber !== undefined) {
      assert.ok(info.reason!.includes(`cudaGetDeviceCount failed: ${info.errorName} (${info.errorNumber})`), info.reason);
    }
    if (info.errorNumber === 35) {
      // No driver (this development machine): cudaErrorInsufficientDriver counts as "no GPU".
      assert.equal(info.errorName, "cudaErrorInsufficientDriver");
      assert.equal(info.driverVersion, 0);
      assert.match(info.reason!, /cudaErrorInsufficientDriver \(35\).*no NVIDIA driver is loaded/);
    }
  });

  it("answers the same on every call", () => {
    const again = cudaInfo();
    assert.equal(again.available, info.available);
    assert.equal(again.reason, info.reason);
    assert.equal(again.deviceCount, info.deviceCount);
  });
});

describe("CUDA allocators without a GPU", () => {
  it("refuse to be constructed with NativeError CUDA_UNAVAILABLE and the reason", { skip: info.available ? "there is a GPU" : false }, () => {
    for (const make of [
      () => new CudaDeviceAllocator(),
      () => new CudaDeviceAllocator(0, { limitBytes: 64 * MiB }),
      () => new CudaDeviceAllocator(7),
      () => new PinnedHostAllocator(),
      () => new PinnedHostAllocator({ limitBytes: MiB }),
    ]) {
      const e = errorOf(make);
      assert.ok(e instanceof NativeError, `a NativeError, got ${e}`);
      assert.equal(e.code, "CUDA_UNAVAILABLE");
      assert.ok(e.message.endsWith(info.reason!), e.message);
      assert.match(e.message, /^(CudaDeviceAllocator|PinnedHostAllocator): /);
    }
  });
});

describe("CUDA allocators everywhere", () => {
  it("round sizes to 512-byte classes up to 1 MiB, then to 2 MiB", () => {
    const r = CudaDeviceAllocator.roundSize;
    assert.equal(r(0), 0);
    assert.equal(r(1), 512);
    assert.equal(r(512), 512);
    assert.equal(r(513), 1024);
    assert.equal(r(MiB), MiB);
    assert.equal(r(MiB + 1), 2 * MiB);
    assert.equal(r(3 * MiB), 4 * MiB);
    assert.equal(errorOf(() => r(-1)).code, "BAD_ARGUMENT");
    assert.equal(errorOf(() => r("1" as unknown as number)).code, "BAD_ARGUMENT");
  });

  it("check arguments before anything else, and check receivers", () => {
    const bad = [
      () => new CudaDeviceAllocator(-1),
      () => new CudaDeviceAllocator(1.5),
      () => new CudaDeviceAllocator("0" as unknown as number),
      () => new CudaDeviceAllocator(0, 5 as never),
      () => new CudaDeviceAllocator(0, { limitBytes: -1 }),
      () => new PinnedHostAllocator({ limitBytes: Number.NaN }),
      () => new PinnedHostAllocator("big" as never),
    ];
    for (const make of bad) {
      const e = errorOf(make);
      assert.ok(e instanceof TypeError || e instanceof RangeError, String(e));
      assert.equal(e.code, "BAD_ARGUMENT");
    }
    assert.throws(() => (CudaDeviceAllocator as unknown as () => void)(), TypeError);
    const forged = Object.create(CudaDeviceAllocator.prototype) as InstanceType<typeof CudaDeviceAllocator>;
    for (const call of [() => forged.alloc(8), () => forged.stats(), () => forged.emptyCache(), () => CudaDeviceAllocator.prototype.free.call({} as never, {} as never)]) {
      const e = errorOf(call);
      assert.ok(e instanceof TypeError);
      assert.equal(e.code, "BAD_ARGUMENT");
    }
    const forgedPinned = Object.create(PinnedHostAllocator.prototype) as InstanceType<typeof PinnedHostAllocator>;
    assert.throws(() => forgedPinned.alloc(8), TypeError);
    const pool = new native.ShmPool({ size: 4096 });
    try {
      assert.throws(() => PinnedHostAllocator.prototype.stats.call(pool as never), TypeError);
    } finally {
      pool.close();
    }
  });
});

describe("CUDA allocators on a GPU", () => {
  it("allocate, round-trip bytes, reuse freed blocks and empty the cache", { skip: noGpu }, () => {
    const dev = new CudaDeviceAllocator(0);
    assert.equal(dev.device, 0);
    assert.equal(dev.limitBytes, 0);
    const buf = dev.alloc(1000);
    assert.equal(typeof buf.address, "bigint");
    assert.ok(buf.address !== 0n);
    assert.equal(buf.address % 256n, 0n);
    assert.equal(buf.byteLength, 1000);
    assert.equal(buf.size, 1024);
    assert.equal(buf.device, 0);
    assert.ok(Object.isFrozen(buf));

    const src = new Uint8Array(1000).map((_, i) => (i * 7 + 3) & 0xff);
    dev.copyToDevice(buf, src);
    const back = new Uint8Array(1000);
    dev.copyFromDevice(buf, back);
    assert.deepEqual(back, src);
    // Offsets and views.
    dev.copyToDevice(buf, new Float32Array([1.5, -2, 3.25]), 100);
    const f = new Float32Array(3);
    dev.copyFromDevice(buf, f, 100);
    assert.deepEqual([...f], [1.5, -2, 3.25]);
    const part = new Uint8Array(16);
    dev.copyFromDevice(buf, new DataView(part.buffer, 4, 8), 0);
    assert.deepEqual([...part.subarray(4, 12)], [...src.subarray(0, 8)]);
    // Out of bounds.
    assert.ok(errorOf(() => dev.copyToDevice(buf, new Uint8Array(1001))) instanceof RangeError);
    assert.equal(errorOf(() => dev.copyFromDevice(buf, new Uint8Array(10), 995)).code, "BAD_ARGUMENT");
    assert.equal(errorOf(() => dev.copyToDevice({ address: buf.address } as NativeCudaDeviceBuffer, src)).code, "BAD_ARGUMENT");

    dev.free(buf);
    assert.ok(errorOf(() => dev.free(buf)) instanceof RangeError, "a double free is a RangeError");
    assert.equal(errorOf(() => dev.copyToDevice(buf, src)).code, "BAD_ARGUMENT");
    const again = dev.alloc(600); // the same size class: the cached block
    assert.equal(again.address, buf.address);
    let s = dev.stats();
    assert.equal(s.cacheHits, 1);
    assert.equal(s.cacheMisses, 1);
    assert.equal(s.backendAllocs, 1);
    assert.equal(s.liveBlocks, 1);
    assert.equal(s.allocatedBytes, 1024);
    assert.equal(s.requestedBytes, 600);
    dev.free(again);
    s = dev.stats();
    assert.equal(s.cachedBytes, 1024);
    assert.equal(s.reservedBytes, 1024);
    assert.equal(dev.emptyCache(), 1024);
    s = dev.stats();
    assert.equal(s.reservedBytes, 0);
    assert.equal(s.backendFrees, 1);
    assert.equal(s.peakAllocatedBytes, 1024);

    // A buffer of another allocator.
    const other = new CudaDeviceAllocator(0);
    const ob = other.alloc(10);
    assert.ok(errorOf(() => dev.free(ob)) instanceof RangeError);
    other.free(ob);
  });

  it("report CUDA_OOM past the limit and for more than the device has", { skip: noGpu }, () => {
    const dev = new CudaDeviceAllocator(0, { limitBytes: 16 * MiB });
    assert.equal(dev.limitBytes, 16 * MiB);
    const held: NativeCudaDeviceBuffer[] = [];
    let err: (Error & { code?: string }) | undefined;
    try {
      for (;;) held.push(dev.alloc(4 * MiB));
    } catch (e) {
      err = e as Error & { code?: string };
    }
    assert.ok(err instanceof NativeError);
    assert.equal(err.code, "CUDA_OOM");
    assert.match(err.message, /limit/);
    assert.equal(held.length, 4);
    assert.equal(dev.stats().oomCount, 1);
    for (const b of held) dev.free(b);

    const big = new CudaDeviceAllocator(0);
    const e = errorOf(() => big.alloc(info.devices[0]!.totalMemory * 2));
    assert.equal(e.code, "CUDA_OOM");
    assert.match(e.message, /cudaMalloc failed: cudaErrorMemoryAllocation \(2\)/);
    big.free(big.alloc(MiB)); // usable afterwards
  });

  it("returns pinned host memory as ArrayBuffers that cudaMemcpy moves both ways", { skip: noGpu }, () => {
    const pinned = new PinnedHostAllocator();
    const dev = new CudaDeviceAllocator(0);
    const n = 3 * MiB + 5;
    const a = pinned.alloc(n);
    const b = pinned.alloc(n);
    assert.ok(a instanceof ArrayBuffer);
    assert.equal(a.byteLength, n);
    assert.equal(native.addressOf(a) % 256n, 0n);
    const av = new Uint8Array(a);
    for (let i = 0; i < n; i++) av[i] = (i * 31 + 7) & 0xff;
    const d = dev.alloc(n);
    dev.copyToDevice(d, a);
    dev.copyFromDevice(d, b);
    assert.ok(Buffer.from(a).equals(Buffer.from(b)), "the bytes came back");
    const addr = native.addressOf(a);
    pinned.free(a);
    assert.equal(a.byteLength, 0, "free detaches");
    assert.equal(errorOf(() => pinned.free(a)).code, "BAD_ARGUMENT");
    assert.equal(errorOf(() => pinned.free(new ArrayBuffer(8))).code, "BAD_ARGUMENT");
    const c = pinned.alloc(n - 5);
    assert.equal(native.addressOf(c), addr, "the cached block is reused");
    const s = pinned.stats();
    assert.equal(s.cacheHits, 1);
    assert.equal(s.liveBlocks, 2);
    pinned.free(new Uint8Array(c, 0, 10)); // a view frees its buffer's block
    pinned.free(b);
    assert.equal(pinned.emptyCache(), 2 * CudaDeviceAllocator.roundSize(n));
    dev.free(d);
  });

  it("returns blocks to the cache when their buffers are collected", { skip: noGpu }, async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const dev = new CudaDeviceAllocator(0);
    const pinned = new PinnedHostAllocator();
    (() => {
      for (let i = 0; i < 100; i++) {
        dev.alloc(4096);
        pinned.alloc(4096);
      }
    })();
    for (let i = 0; i < 10 && (dev.stats().liveBlocks > 0 || pinned.stats().liveBlocks > 0); i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    assert.equal(dev.stats().liveBlocks, 0);
    assert.equal(pinned.stats().liveBlocks, 0);
    assert.equal(dev.stats().freeCount, 100);
    assert.equal(dev.stats().backendAllocs <= 100, true);
  });
});
