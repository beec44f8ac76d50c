/**
 * Tensors in the KServe v2 / Open Inference Protocol: datatype names, JSON tensors, and the binary
 * tensor extension (raw little-endian bytes after the JSON header; BYTES elements each prefixed
 * with a 4-byte little-endian length). Decoding writes straight into pool tensors; every problem
 * is an HttpError naming the tensor.
 */
import { byteSize, dtypeInfo, dtypeOfKserve, KSERVE_DATATYPES, type DType } from "../tensor/dtype.js";
import type { TensorPool } from "../tensor/pool.js";
import { Tensor } from "../tensor/tensor.js";
import type { KserveTensor } from "../protocol/kserve.js";
import { HttpError } from "./http-error.js";

/** The KServe datatype of a dtype (`float32` -> `FP32`). */
export function datatypeOf(dtype: DType): string {
  const d = dtypeInfo(dtype).kserve;
  if (!d) throw new HttpError(500, "UNSUPPORTED_DTYPE", `dtype ${dtype} has no KServe v2 datatype`);
  return d;
}

/** The dtype of a KServe datatype, or a 400 naming the tensor. */
export function dtypeOf(datatype: unknown, tensor: string): DType {
  const d = typeof datatype === "string" ? dtypeOfKserve(datatype) : undefined;
  if (!d) throw new HttpError(400, "BAD_DATATYPE", `tensor "${tensor}": unknown datatype ${JSON.stringify(datatype)}; one of ${KSERVE_DATATYPES.join(", ")}`);
  return d;
}

/** A tensor's shape, or a 400 naming the tensor. */
export function checkShape(shape: unknown, name: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new HttpError(400, "BAD_SHAPE", `tensor "${name}": shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return shape as number[];
}

const elementsOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * Copies `data` (flat or nested, row-major) into `out` starting at `offset`; returns the next
 * offset. Throws on a non-number / non-boolean element or when more elements come than fit.
 */
function fill(data: unknown, out: ArrayLike<number | bigint> & { [i: number]: number | bigint }, offset: number, dtype: DType, name: string, limit: number): number {
  if (Array.isArray(data)) {
    for (const d of data) offset = fill(d, out, offset, dtype, name, limit);
    return offset;
  }
  if (offset >= limit) throw new HttpError(400, "BAD_DATA", `tensor "${name}": more data elements than its shape holds (${limit})`);
  if (dtype === "int64" || dtype === "uint64") {
    if (typeof data === "number" && Number.isInteger(data)) out[offset] = BigInt(data);
    else if (typeof data === "string" && /^-?\d+$/.test(data)) out[offset] = BigInt(data);
    else throw new HttpError(400, "BAD_DATA", `tensor "${name}": element ${offset} must be an integer, got ${JSON.stringify(data)}`);
  } else if (dtype === "bool") {
    if (typeof data !== "boolean" && data !== 0 && data !== 1) throw new HttpError(400, "BAD_DATA", `tensor "${name}": element ${offset} must be a boolean, got ${JSON.stringify(data)}`);
    out[offset] = data ? 1 : 0;
  } else {
    if (typeof data !== "number") throw new HttpError(400, "BAD_DATA", `tensor "${name}": element ${offset} must be a number, got ${JSON.stringify(data)}`);
    out[offset] = data;
  }
  return offset + 1;
}

/** The number of leaf elements of nested `data` (a scalar counts one). */
function countElements(data: unknown): number {
  if (!Array.isArray(data)) return 1;
  let n = 0;
  for (const d of data) n += Array.isArray(d) ? countElements(d) : 1;
  return n;
}

function flattenStrings(data: unknown, out: string[], name: string): void {
  if (Array.isArray(data)) {
    for (const d of data) flattenStrings(d, out, name);
    return;
  }
  if (typeof data !== "string") throw new HttpError(400, "BAD_DATA", `tensor "${name}": BYTES elements must be strings, got ${JSON.stringify(data)}`);
  out.push(data);
}

/**
 * A request tensor from its JSON form, its elements written straight into a pool tensor (one
 * pass over the parsed JSON; strings stay a JS array).
 */
export function tensorFromJson(input: unknown, pool: TensorPool, index: number): Tensor {
  if (input === null || typeof input !== "object" || Array.isArray(input)) throw new HttpError(400, "BAD_TENSOR", `inputs[${index}] must be an object { name, shape, datatype, data }`);
  const t = input as Partial<KserveTensor>;
  if (typeof t.name !== "string" || t.name === "") throw new HttpError(400, "BAD_TENSOR", `inputs[${index}].name must be a non-empty string`);
  const name = t.name;
  const shape = checkShape(t.shape, name);
  const dtype = dtypeOf(t.datatype, name);
  const n = elementsOf(shape);
  if (t.data === undefined) throw new HttpError(400, "BAD_DATA", `tensor "${name}": no data (and no binary_data_size parameter)`);
  if (dtype === "string") {
    const strings: string[] = [];
    flattenStrings(t.data, strings, name);
    if (strings.length !== n) throw new HttpError(400, "BAD_DATA", `tensor "${name}": shape [${shape.join(", ")}] needs ${n} elements, data has ${strings.length}`);
    return Tensor.string(shape, strings);
  }
  // Count before reserving: a shape that disagrees with its data is the client's mistake, not a
  // lack of memory (and a huge shape must not reserve anything).
  const given = countElements(t.data);
  if (given !== n) throw new HttpError(400, "BAD_DATA", `input "${name}": shape [${shape.join(", ")}] needs ${n} elements, data has ${given}`);
  const tensor = pool.tensor(dtype, shape);
  try {
    const written = fill(t.data, tensor.data as never, 0, dtype, name, n);
    if (written !== n) throw new HttpError(400, "BAD_DATA", `tensor "${name}": shape [${shape.join(", ")}] needs ${n} elements, data has ${written}`);
  } catch (e) {
    tensor.dispose();
    throw e;
  }
  return tensor;
}

/** A request tensor from the binary extension: `bytes` are its raw contents (copied into the pool once, from the socket's buffers). */
export function tensorFromBinary(name: string, datatype: unknown, shapeValue: unknown, bytes: Uint8Array, pool: TensorPool): Tensor {
  const shape = checkShape(shapeValue, name);
  const dtype = dtypeOf(datatype, name);
  const n = elementsOf(shape);
  if (dtype === "string") {
    const strings: string[] = [];
    let at = 0;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    while (at < bytes.byteLength) {
      if (at + 4 > bytes.byteLength) throw new HttpError(400, "BAD_DATA", `tensor "${name}": truncated BYTES element length at byte ${at}`);
      const len = view.getUint32(at, true);
      at += 4;
      if (at + len > bytes.byteLength) throw new HttpError(400, "BAD_DATA", `tensor "${name}": BYTES element ${strings.length} runs past the tensor's ${bytes.byteLength} bytes`);
      strings.push(Buffer.from(bytes.buffer, bytes.byteOffset + at, len).toString("utf8"));
      at += len;
    }
    if (strings.length !== n) throw new HttpError(400, "BAD_DATA", `tensor "${name}": shape [${shape.join(", ")}] needs ${n} elements, binary data has ${strings.length}`);
    return Tensor.string(shape, strings);
  }
  const need = byteSize(dtype, n);
  if (bytes.byteLength !== need) throw new HttpError(400, "BAD_DATA", `tensor "${name}": ${dtype} [${shape.join(", ")}] needs ${need} bytes, binary_data_size is ${bytes.byteLength}`);
  const tensor = pool.tensor(dtype, shape);
  const d = tensor.data as unknown as ArrayBufferView;
  new Uint8Array(d.buffer, d.byteOffset, need).set(bytes);
  return tensor;
}

/** JSON `data` for a response tensor (int64 as numbers when they fit, else strings). */
export function jsonData(t: Tensor): unknown[] {
  if (t.dtype === "string") return t.data as string[];
  if (t.dtype === "bool") return Array.from(t.data as Uint8Array, (v) => v !== 0);
  if (t.dtype === "int64" || t.dtype === "uint64") {
    return Array.from(t.data as BigInt64Array, (v) => (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v.toString()));
  }
  return Array.from(t.data as Float32Array);
}

/** The raw bytes of a response tensor for the binary extension (a view, no copy, for numeric tensors). */
export function binaryData(t: Tensor): Uint8Array {
  if (t.dtype === "string") {
    const parts = (t.data as string[]).map((s) => Buffer.from(s, "utf8"));
    const out = Buffer.alloc(parts.reduce((a, p) => a + 4 + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.writeUInt32LE(p.length, at);
      p.copy(out, at + 4);
      at += 4 + p.length;
    }
    return out;
  }
  const d = t.data as unknown as ArrayBufferView;
  return new Uint8Array(d.buffer, d.byteOffset, t.byteLength);
}
