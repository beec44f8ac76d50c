import { MlosError } from "../core/errors.js";
import { arrayLength, byteSize, DTYPES, dtypeInfo, isDType, type DType, type TensorData } from "./dtype.js";

/** What a tensor can be made from: its own typed array (used in place), an ArrayBuffer, or plain values (copied). */
export type TensorSource<D extends DType = DType> =
  | TensorData<D>
  | ArrayBuffer
  | ArrayLike<number>
  | ArrayLike<bigint>
  | ArrayLike<boolean>
  | readonly string[];

const MAX_ELEMENTS = 2 ** 48;

function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return `an array of ${x.length}`;
  if (ArrayBuffer.isView(x)) return `a ${x.constructor.name} of ${(x as unknown as ArrayLike<unknown>).length ?? x.byteLength}`;
  if (x instanceof ArrayBuffer) return `an ArrayBuffer of ${x.byteLength} bytes`;
  return typeof x;
}

/** Checks a shape and returns its element count; throws TENSOR_INVALID naming `what`. */
export function elementCount(shape: unknown, what = "shape"): number {
  if (!Array.isArray(shape)) throw new MlosError("TENSOR_INVALID", `${what} must be an array of non-negative integers, got ${describe(shape)}`);
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i] as unknown;
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new MlosError("TENSOR_INVALID", `${what}[${i}] must be a non-negative integer, got ${typeof d === "number" ? d : describe(d)}`);
    }
    n *= d;
    if (n > MAX_ELEMENTS) throw new MlosError("TENSOR_INVALID", `${what} [${shape.join(", ")}] has too many elements`);
  }
  return n;
}

function fromValues(dtype: DType, values: ArrayLike<unknown>): TensorData {
  if (dtype === "string") {
    const out: string[] = new Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (typeof v !== "string") throw new MlosError("TENSOR_INVALID", `a string tensor needs strings; element ${i} is ${describe(v)}`);
      out[i] = v;
    }
    return out;
  }
  const Ctor = dtypeInfo(dtype).array!;
  const arr = new Ctor(values.length) as unknown as { [i: number]: unknown; length: number };
  const big = dtype === "int64" || dtype === "uint64";
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (big) {
      if (typeof v === "bigint") arr[i] = v;
      else if (typeof v === "number" && Number.isInteger(v)) arr[i] = BigInt(v);
      else throw new MlosError("TENSOR_INVALID", `a ${dtype} tensor needs integers or bigints; element ${i} is ${describe(v)}`);
    } else if (typeof v === "number") {
      arr[i] = v;
    } else if (typeof v === "boolean") {
      arr[i] = v ? 1 : 0;
    } else {
      throw new MlosError("TENSOR_INVALID", `a ${dtype} tensor needs numbers; element ${i} is ${describe(v)}`);
    }
  }
  return arr as unknown as TensorData;
}

/**
 * An n-dimensional array: `dtype`, `shape` and `data`, a typed array view over the elements
 * (row-major). A tensor made over an existing typed array or ArrayBuffer uses that memory in place;
 * one made from plain values copies them once. Tensors from a {@link TensorPool} live in shared
 * memory and are the zero-copy path to the native runtimes: `dispose()` (or `using`) hands their
 * memory back at once instead of at garbage collection.
 *
 * ```ts
 * const x = Tensor.float32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
 * using y = pool.tensor("float32", [1, 3, 224, 224]);
 * ```
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  #data: TensorData<D> | null;
  #release: (() => void) | undefined;

  /**
   * `data` must hold exactly the elements of `shape` (two numbers per element for complex types,
   * two elements per byte for int4/uint4); a typed array of the dtype's own class or an
   * ArrayBuffer is used in place, anything else is copied. `release` runs once, on dispose().
   */
  constructor(dtype: D, shape: readonly number[], data: TensorSource<D>, release?: () => void) {
    if (!isDType(dtype)) throw new MlosError("TENSOR_INVALID", `unknown dtype ${JSON.stringify(dtype)}; one of ${DTYPES.join(", ")}`);
    const elements = elementCount(shape);
    const expected = arrayLength(dtype, elements);
    const info = dtypeInfo(dtype);
    let view: TensorData;
    if (info.array && data instanceof info.array) {
      view = data as unknown as TensorData;
    } else if (info.array && data instanceof ArrayBuffer) {
      const bytes = byteSize(dtype, elements);
      if (data.byteLength !== bytes) {
        throw new MlosError("TENSOR_INVALID", `${dtype} [${shape.join(", ")}] needs ${bytes} bytes, the ArrayBuffer has ${data.byteLength}`);
      }
      view = new info.array(data, 0, expected) as unknown as TensorData;
    } else if (data !== null && typeof data === "object" && typeof (data as ArrayLike<unknown>).length === "number" && !(data instanceof ArrayBuffer)) {
      if (ArrayBuffer.isView(data) && info.array) {
        throw new MlosError("TENSOR_INVALID", `a ${dtype} tensor takes a ${info.array.name}, got ${describe(data)} (use Tensor.fromBytes for raw bytes)`);
      }
      view = fromValues(dtype, data as ArrayLike<unknown>);
    } else {
      throw new MlosError("TENSOR_INVALID", `a ${dtype} tensor's data must be ${info.array ? `a ${info.array.name}, an ArrayBuffer or an array` : "an array of strings"}, got ${describe(data)}`);
    }
    if (view.length !== expected) {
      throw new MlosError("TENSOR_INVALID", `${dtype} [${shape.join(", ")}] needs ${expected} ${dtype === "string" ? "strings" : "values"}, got ${view.length}`);
    }
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.#data = view as TensorData<D>;
    this.#release = release;
  }

  /** A tensor over raw bytes (e.g. a binary request body): in place when aligned, else copied. */
  static fromBytes<D extends Exclude<DType, "string">>(dtype: D, shape: readonly number[], bytes: ArrayBufferView | ArrayBuffer): Tensor<D> {
    if (!isDType(dtype) || (dtype as string) === "string") throw new MlosError("TENSOR_INVALID", `fromBytes needs a numeric dtype, got ${JSON.stringify(dtype)}`);
    const u8 = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const elements = elementCount(shape);
    const need = byteSize(dtype, elements);
    if (u8.byteLength !== need) throw new MlosError("TENSOR_INVALID", `${dtype} [${shape.join(", ")}] needs ${need} bytes, got ${u8.byteLength}`);
    const info = dtypeInfo(dtype);
    const align = info.array!.BYTES_PER_ELEMENT;
    const src = u8.byteOffset % align === 0 ? u8 : new Uint8Array(u8); // a misaligned view cannot be typed in place
    return new Tensor(dtype, shape, new info.array!(src.buffer, src.byteOffset, arrayLength(dtype, elements)) as unknown as TensorData<D>);
  }

  /** A tensor of zeros (empty strings for string tensors). */
  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    if (!isDType(dtype)) throw new MlosError("TENSOR_INVALID", `unknown dtype ${JSON.stringify(dtype)}`);
    const n = arrayLength(dtype, elementCount(shape));
    const data = dtype === "string" ? new Array<string>(n).fill("") : new (dtypeInfo(dtype).array!)(n);
    return new Tensor(dtype, shape, data as TensorData<D>);
  }

  /** `new Tensor(dtype, shape, data)`. */
  static from<D extends DType>(dtype: D, shape: readonly number[], data: TensorSource<D>): Tensor<D> {
    return new Tensor(dtype, shape, data);
  }

  static float32(shape: readonly number[], data?: Float32Array | ArrayBuffer | ArrayLike<number>): Tensor<"float32"> { return data === undefined ? Tensor.zeros("float32", shape) : new Tensor("float32", shape, data); }
  static float64(shape: readonly number[], data?: Float64Array | ArrayBuffer | ArrayLike<number>): Tensor<"float64"> { return data === undefined ? Tensor.zeros("float64", shape) : new Tensor("float64", shape, data); }
  /** Half-precision bit patterns (Uint16Array). */
  static float16(shape: readonly number[], data?: Uint16Array | ArrayBuffer | ArrayLike<number>): Tensor<"float16"> { return data === undefined ? Tensor.zeros("float16", shape) : new Tensor("float16", shape, data); }
  static bfloat16(shape: readonly number[], data?: Uint16Array | ArrayBuffer | ArrayLike<number>): Tensor<"bfloat16"> { return data === undefined ? Tensor.zeros("bfloat16", shape) : new Tensor("bfloat16", shape, data); }
  static int8(shape: readonly number[], data?: Int8Array | ArrayBuffer | ArrayLike<number>): Tensor<"int8"> { return data === undefined ? Tensor.zeros("int8", shape) : new Tensor("int8", shape, data); }
  static int16(shape: readonly number[], data?: Int16Array | ArrayBuffer | ArrayLike<number>): Tensor<"int16"> { return data === undefined ? Tensor.zeros("int16", shape) : new Tensor("int16", shape, data); }
  static int32(shape: readonly number[], data?: Int32Array | ArrayBuffer | ArrayLike<number>): Tensor<"int32"> { return data === undefined ? Tensor.zeros("int32", shape) : new Tensor("int32", shape, data); }
  static int64(shape: readonly number[], data?: BigInt64Array | ArrayBuffer | ArrayLike<number> | ArrayLike<bigint>): Tensor<"int64"> { return data === undefined ? Tensor.zeros("int64", shape) : new Tensor("int64", shape, data); }
  static uint8(shape: readonly number[], data?: Uint8Array | ArrayBuffer | ArrayLike<number>): Tensor<"uint8"> { return data === undefined ? Tensor.zeros("uint8", shape) : new Tensor("uint8", shape, data); }
  static uint16(shape: readonly number[], data?: Uint16Array | ArrayBuffer | ArrayLike<number>): Tensor<"uint16"> { return data === undefined ? Tensor.zeros("uint16", shape) : new Tensor("uint16", shape, data); }
  static uint32(shape: readonly number[], data?: Uint32Array | ArrayBuffer | ArrayLike<number>): Tensor<"uint32"> { return data === undefined ? Tensor.zeros("uint32", shape) : new Tensor("uint32", shape, data); }
  static uint64(shape: readonly number[], data?: BigUint64Array | ArrayBuffer | ArrayLike<number> | ArrayLike<bigint>): Tensor<"uint64"> { return data === undefined ? Tensor.zeros("uint64", shape) : new Tensor("uint64", shape, data); }
  static bool(shape: readonly number[], data?: Uint8Array | ArrayBuffer | ArrayLike<boolean> | ArrayLike<number>): Tensor<"bool"> { return data === undefined ? Tensor.zeros("bool", shape) : new Tensor("bool", shape, data); }
  static string(shape: readonly number[], data?: readonly string[]): Tensor<"string"> { return data === undefined ? Tensor.zeros("string", shape) : new Tensor("string", shape, data); }

  /** The elements, as a typed array view (or string array). Throws TENSOR_DISPOSED after dispose(). */
  get data(): TensorData<D> {
    if (this.#data === null) throw new MlosError("TENSOR_DISPOSED", `this ${this.dtype} [${this.shape.join(", ")}] tensor was disposed`);
    return this.#data;
  }

  /** Number of elements. */
  get size(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  /** Bytes of element data (0 for string tensors). */
  get byteLength(): number {
    return byteSize(this.dtype, this.size);
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  /** The elements as plain values: numbers, bigints (int64/uint64), booleans or strings. */
  toArray(): number[] | bigint[] | boolean[] | string[] {
    const d = this.data;
    if (this.dtype === "bool") return Array.from(d as Uint8Array, (v) => v !== 0);
    return Array.from(d as ArrayLike<number>) as number[];
  }

  /** A tensor with another shape over the same elements (no copy); it does not own them. */
  reshape(shape: readonly number[]): Tensor<D> {
    const n = elementCount(shape);
    if (n !== this.size) throw new MlosError("TENSOR_INVALID", `cannot reshape ${this.size} elements [${this.shape.join(", ")}] to [${shape.join(", ")}]`);
    return new Tensor(this.dtype, shape, this.data);
  }

  /** Releases the tensor's memory now (a pool slice goes back to its pool); later reads throw. Idempotent. */
  dispose(): void {
    if (this.#data === null) return;
    this.#data = null;
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype} [${this.shape.join(", ")}]${this.disposed ? ", disposed" : ""})`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}
