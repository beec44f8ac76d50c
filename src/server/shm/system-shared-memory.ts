/**
 * Triton-style system shared-memory regions: a client creates a POSIX shared-memory object
 * (`shm_open`, which Linux keeps under /dev/shm), registers a window of it under a name
 * (`{key, offset, byte_size}`), and then names that window in inference requests instead of
 * sending tensor bytes: the server reads inputs from it and writes outputs into it.
 *
 * How the server touches client memory: it never maps it. Each region holds an open file
 * descriptor, and every access is one `pread`/`pwrite` at a checked offset, after an `fstat` that
 * the object still holds the whole window. A client that shrinks, unlinks or remaps its object
 * therefore cannot crash the server: a mapped page past the end of a shrunken object would raise
 * SIGBUS in the server's thread, while a short read or write is an error the request reports.
 * It costs one copy per tensor, done by the kernel straight between the client's pages and the
 * request's pool tensor (the same single copy as a request body); co-located clients that want no
 * copy at all use the IPC door. An unlinked object stays valid for the registered region (the
 * descriptor keeps it alive) until the region is unregistered, as with Triton.
 */
import { closeSync, constants, fstatSync, openSync, readSync, writeSync } from "node:fs";
import path from "node:path";
import { byteSize, type DType } from "../../tensor/dtype.js";
import type { TensorPool } from "../../tensor/pool.js";
import type { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";

/** Where Linux keeps POSIX shared-memory objects. */
export const SHM_DIR = "/dev/shm";

export interface RegionStatus {
  name: string;
  key: string;
  offset: number;
  byte_size: number;
}

interface Region extends RegionStatus {
  fd: number;
}

/** Names a tensor's window in a region: `shared_memory_region`, `shared_memory_offset`, `shared_memory_byte_size`. */
export interface RegionRef {
  region: string;
  offset: number;
  byteSize: number;
}

export class SystemSharedMemory {
  readonly #regions = new Map<string, Region>();

  constructor(
    /** When false (the default), registration is refused: a client must not make the server open files on its say-so unless allowed. */
    readonly allowed: boolean,
    /** The directory of shared-memory objects (tests may point elsewhere). */
    readonly dir = SHM_DIR,
  ) {}

  #checkAllowed(): void {
    if (!this.allowed) throw new HttpError(403, "SHM_DISABLED", "system shared memory is off on this server; start it with --allow-shared-memory to let clients register regions");
  }

  /** Registers `name` as `byte_size` bytes at `offset` of the shared-memory object `key`. */
  register(name: unknown, key: unknown, offset: unknown, byteSize: unknown): void {
    this.#checkAllowed();
    if (typeof name !== "string" || name === "") throw new HttpError(400, "SHM_INVALID", "a region needs a non-empty name");
    if (typeof key !== "string" || !/^\/?[A-Za-z0-9._-]+$/.test(key) || key.replace(/^\//, "").startsWith(".")) {
      throw new HttpError(400, "SHM_INVALID", `region "${name}": key must name a POSIX shared-memory object ("/name": letters, digits, . _ -), got ${JSON.stringify(key)}`);
    }
    const off = integer(offset ?? 0, `region "${name}": offset`);
    const size = integer(byteSize, `region "${name}": byte_size`);
    if (size === 0) throw new HttpError(400, "SHM_INVALID", `region "${name}": byte_size must be above 0`);
    if (this.#regions.has(name)) throw new HttpError(409, "SHM_REGION_EXISTS", `region "${name}" is already registered; unregister it first`);
    const file = path.join(this.dir, key.replace(/^\//, ""));
    let fd: number;
    try {
      fd = openSync(file, constants.O_RDWR | constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") throw new HttpError(404, "SHM_KEY_NOT_FOUND", `region "${name}": no shared-memory object ${key} (${file})`);
      throw new HttpError(400, "SHM_INVALID", `region "${name}": cannot open shared-memory object ${key}: ${code ?? (e as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new HttpError(400, "SHM_INVALID", `region "${name}": ${key} is not a shared-memory object`);
      if (off + size > st.size) throw new HttpError(400, "SHM_OUT_OF_RANGE", `region "${name}": offset ${off} + byte_size ${size} runs past the ${st.size} bytes of ${key}`);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.#regions.set(name, { name, key, offset: off, byte_size: size, fd });
  }

  /** Unregisters `name`, or every region when no name is given; an unknown name is not an error (cleanup may repeat). */
  unregister(name?: string): void {
    for (const r of name ? [this.#regions.get(name)].filter((x) => x !== undefined) : [...this.#regions.values()]) {
      closeSync(r.fd);
      this.#regions.delete(r.name);
    }
  }

  /** The registered regions, or the one named (404 if none is). */
  status(name?: string): RegionStatus[] {
    if (name) {
      const r = this.#regions.get(name);
      if (!r) throw new HttpError(404, "SHM_REGION_NOT_FOUND", `no shared-memory region "${name}" is registered`);
      return [statusOf(r)];
    }
    return [...this.#regions.values()].map(statusOf);
  }

  /** The region and absolute file position of a tensor's window, checked against the region and the object's current size. */
  #window(ref: RegionRef, bytes: number, tensor: string, what: "input" | "output"): { fd: number; position: number } {
    const r = this.#regions.get(ref.region);
    if (!r) throw new HttpError(400, "SHM_REGION_NOT_FOUND", `${what} "${tensor}": no shared-memory region "${ref.region}" is registered`);
    if (ref.offset + ref.byteSize > r.byte_size) {
      throw new HttpError(400, "SHM_OUT_OF_RANGE", `${what} "${tensor}": shared_memory_offset ${ref.offset} + shared_memory_byte_size ${ref.byteSize} runs past region "${r.name}" (${r.byte_size} bytes)`);
    }
    if (bytes > ref.byteSize) throw new HttpError(400, "SHM_OUT_OF_RANGE", `${what} "${tensor}" is ${bytes} bytes, its shared_memory_byte_size is ${ref.byteSize}`);
    const size = fstatSync(r.fd).size;
    if (r.offset + ref.offset + bytes > size) {
      throw new HttpError(400, "SHM_REGION_CHANGED", `${what} "${tensor}": region "${r.name}" needs ${r.offset + ref.offset + bytes} bytes of ${r.key}, which now holds ${size} (shrunk by its owner?)`);
    }
    return { fd: r.fd, position: r.offset + ref.offset };
  }

  /** Reads an input's bytes from its window into `target` (a pool tensor's memory), which must be exactly the window's size. */
  read(ref: RegionRef, target: Uint8Array, tensor: string): void {
    if (target.byteLength !== ref.byteSize) throw new HttpError(400, "BAD_DATA", `input "${tensor}" needs ${target.byteLength} bytes, its shared_memory_byte_size is ${ref.byteSize}`);
    const { fd, position } = this.#window(ref, target.byteLength, tensor, "input");
    let done = 0;
    while (done < target.byteLength) {
      const n = readSync(fd, target, done, target.byteLength - done, position + done);
      if (n === 0) throw new HttpError(400, "SHM_REGION_CHANGED", `input "${tensor}": region "${ref.region}" ended after ${done} of ${target.byteLength} bytes (shrunk by its owner?)`);
      done += n;
    }
  }

  /** Writes an output's bytes into its window (at most the window's size). */
  write(ref: RegionRef, bytes: Uint8Array, tensor: string): void {
    const { fd, position } = this.#window(ref, bytes.byteLength, tensor, "output");
    let done = 0;
    while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
  }

  /** Closes every region. */
  close(): void {
    this.unregister();
  }
}

const statusOf = (r: Region): RegionStatus => ({ name: r.name, key: r.key, offset: r.offset, byte_size: r.byte_size });

function integer(v: unknown, what: string): number {
  const n = typeof v === "string" && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) throw new HttpError(400, "SHM_INVALID", `${what} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * A tensor's shared-memory window from its `parameters` (plain values: JSON, or gRPC parameters
 * already unwrapped), or undefined when it names no region.
 */
export function regionRefOf(parameters: Record<string, unknown> | undefined, tensor: string): RegionRef | undefined {
  const region = parameters?.shared_memory_region;
  if (region === undefined) return undefined;
  if (typeof region !== "string" || region === "") throw new HttpError(400, "SHM_INVALID", `tensor "${tensor}": shared_memory_region must be a region name`);
  if (parameters!.shared_memory_byte_size === undefined) throw new HttpError(400, "SHM_INVALID", `tensor "${tensor}": shared_memory_region needs shared_memory_byte_size`);
  return { region, offset: integer(parameters!.shared_memory_offset ?? 0, `tensor "${tensor}": shared_memory_offset`), byteSize: integer(parameters!.shared_memory_byte_size, `tensor "${tensor}": shared_memory_byte_size`) };
}

/**
 * An input tensor read from its shared-memory window into the pool: `bytes` of the window must be
 * exactly the tensor's size. BYTES tensors cannot come this way (their size is not known from the shape).
 */
export function tensorFromRegion(shm: SystemSharedMemory, name: string, dtype: DType, shape: number[], ref: RegionRef, pool: TensorPool): Tensor {
  if (dtype === "string") throw new HttpError(400, "SHM_INVALID", `input "${name}": BYTES tensors cannot be read from shared memory here; send them in the request`);
  const tensor = pool.tensor(dtype, shape);
  try {
    const d = tensor.data as unknown as ArrayBufferView;
    shm.read(ref, new Uint8Array(d.buffer, d.byteOffset, byteSize(dtype, shape.reduce((a, b) => a * b, 1))), name);
  } catch (e) {
    tensor.dispose();
    throw e;
  }
  return tensor;
}
