import { loadNative, type NativeShmPool, type NativeShmPoolStats } from "../../bindings/native.js";
import { MlosError } from "../core/errors.js";
import { arrayLength, byteSize, dtypeInfo, isDType, type NumericDType, type TensorData } from "./dtype.js";
import { elementCount, Tensor } from "./tensor.js";

export interface TensorPoolOptions {
  /** Capacity in bytes (rounded up to whole pages). Default 256 MiB. */
  size?: number;
  /** Segment name in /dev/shm; default `/mlos-<pid>-<n>`. */
  name?: string;
  /**
   * Reserve the whole capacity up front (posix_fallocate). Default false: pages are taken from
   * /dev/shm as they are first written.
   */
  reserve?: boolean;
}

export type TensorPoolStats = NativeShmPoolStats;

const DEFAULT_POOL_SIZE = 256 * 1024 * 1024;

/**
 * Tensor memory in a named POSIX shared-memory segment: the zero-copy path. A tensor from
 * `pool.tensor()` is handed to the native runtimes as it is (ONNX Runtime reads and writes the
 * slice in place), and another process can map the same bytes by the pool's name. Slices are
 * 64-byte aligned; a tensor's slice returns to the pool on `dispose()` or, failing that, when the
 * tensor is garbage-collected. The segment is unlinked on `close()` and at process exit.
 */
export class TensorPool {
  readonly #native: NativeShmPool;

  constructor(options: TensorPoolOptions = {}) {
    const { ShmPool } = loadNative();
    this.#native = new ShmPool({ size: options.size ?? DEFAULT_POOL_SIZE, name: options.name, reserve: options.reserve ?? false });
  }

  /** The segment name (for another process to attach). */
  get name(): string {
    return this.#native.name;
  }

  /** Capacity in bytes. */
  get capacity(): number {
    return this.#native.size;
  }

  /**
   * A tensor over a new slice. Its contents are not cleared (like `Buffer.allocUnsafe`) unless
   * `zero` is set. Throws POOL_EXHAUSTED when the pool has no room.
   */
  tensor<D extends NumericDType>(dtype: D, shape: readonly number[], options: { zero?: boolean } = {}): Tensor<D> {
    if (!isDType(dtype) || (dtype as string) === "string") {
      throw new MlosError("TENSOR_INVALID", `pool tensors need a numeric dtype, got ${JSON.stringify(dtype)}`);
    }
    const elements = elementCount(shape);
    const bytes = byteSize(dtype, elements);
    if (bytes === 0) return Tensor.zeros(dtype, shape); // nothing to hold: no slice
    let buffer: ArrayBuffer;
    try {
      buffer = this.#native.alloc(bytes);
    } catch (e) {
      if ((e as { code?: string }).code === "SHM_EXHAUSTED") {
        throw new MlosError("POOL_EXHAUSTED", `tensor pool ${this.name} has no room for ${bytes} bytes (${dtype} [${shape.join(", ")}])`, { pool: this.name, bytes }, { cause: e });
      }
      throw e;
    }
    const data = new (dtypeInfo(dtype).array!)(buffer, 0, arrayLength(dtype, elements)) as unknown as TensorData<D>;
    if (options.zero) new Uint8Array(buffer).fill(0);
    const native = this.#native;
    return new Tensor(dtype, shape, data, () => native.free(buffer));
  }

  /** A pool tensor holding a copy of `t` (the one copy that puts outside data on the zero-copy path). */
  copyOf<D extends NumericDType>(t: Tensor<D>): Tensor<D> {
    const out = this.tensor(t.dtype, t.shape);
    const src = t.data as unknown as ArrayBufferView;
    new Uint8Array((out.data as unknown as ArrayBufferView).buffer, (out.data as unknown as ArrayBufferView).byteOffset, out.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
    copyCounter.bytes += out.byteLength;
    return out;
  }

  /** True when `data` is memory of this pool. */
  owns(data: ArrayBufferView | ArrayBuffer): boolean {
    try {
      this.#native.offsetOf(data);
      return true;
    } catch {
      return false;
    }
  }

  /** Where `data` lies in the segment (for handing a slice to another process by name + offset). */
  offsetOf(data: ArrayBufferView | ArrayBuffer): number {
    return this.#native.offsetOf(data);
  }

  stats(): TensorPoolStats {
    return this.#native.stats();
  }

  /** Unlinks the segment and stops allocation; tensors already handed out stay readable until disposed. */
  close(): void {
    this.#native.close();
  }

  get closed(): boolean {
    return this.#native.isClosed();
  }
}

/**
 * Bytes the library copied while moving tensor data (into pools, between layouts); the
 * benchmarks read it to show that pool tensors and known-shape outputs cost no copy per call.
 */
export const copyCounter = { bytes: 0 };

let defaultPool: TensorPool | undefined;

/**
 * The process-wide pool the runtime allocates outputs from: `MLOS_POOL_SIZE` bytes (default
 * 256 MiB, taken from /dev/shm only as it is used).
 */
export function getDefaultPool(): TensorPool {
  if (!defaultPool || defaultPool.closed) {
    const env = Number(process.env.MLOS_POOL_SIZE);
    defaultPool = new TensorPool({ size: Number.isFinite(env) && env > 0 ? env : DEFAULT_POOL_SIZE });
  }
  return defaultPool;
}
