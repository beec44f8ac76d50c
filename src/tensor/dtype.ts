/**
 * Tensor element types: every ONNX tensor element type, with how it is stored in JavaScript.
 * Names are ONNX's, lower case, as onnxruntime-node and `axon.yaml` spell them.
 */

/** Every element type a {@link Tensor} can hold. */
export const DTYPES = [
  "float32", "float64", "float16", "bfloat16",
  "int8", "int16", "int32", "int64",
  "uint8", "uint16", "uint32", "uint64",
  "bool", "string",
  "complex64", "complex128",
  "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz",
  "int4", "uint4",
] as const;
export type DType = (typeof DTYPES)[number];

/** The typed array (or string array) that holds a tensor's elements, per dtype. */
export interface TensorDataMap {
  float32: Float32Array;
  float64: Float64Array;
  /** IEEE half-precision bit patterns (Node 20 has no Float16Array). */
  float16: Uint16Array;
  /** bfloat16 bit patterns. */
  bfloat16: Uint16Array;
  int8: Int8Array;
  int16: Int16Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
  uint16: Uint16Array;
  uint32: Uint32Array;
  uint64: BigUint64Array;
  /** One byte per element, 0 or 1. */
  bool: Uint8Array;
  string: string[];
  /** Interleaved (real, imaginary) pairs: two numbers per element. */
  complex64: Float32Array;
  complex128: Float64Array;
  float8e4m3fn: Uint8Array;
  float8e4m3fnuz: Uint8Array;
  float8e5m2: Uint8Array;
  float8e5m2fnuz: Uint8Array;
  /** Two elements per byte, low nibble first (ONNX's packing). */
  int4: Uint8Array;
  uint4: Uint8Array;
}
export type TensorData<D extends DType = DType> = TensorDataMap[D];
export type NumericDType = Exclude<DType, "string">;

type TypedArrayCtor = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView; new (length: number): ArrayBufferView; BYTES_PER_ELEMENT: number };

export interface DTypeInfo {
  readonly name: DType;
  /** Bits per element (4 for int4/uint4; 0 for string). */
  readonly bits: number;
  /** The typed array class holding the elements (undefined for string). */
  readonly array: TypedArrayCtor | undefined;
  /** Array entries per element: 2 for complex types, 1 otherwise (0.5 for the packed 4-bit types). */
  readonly lanes: number;
  /** The KServe v2 / Open Inference Protocol datatype (`FP32`, `BYTES` ...), when it has one. */
  readonly kserve: string | undefined;
  /** ONNX's `TensorProto.DataType` number (the IPC wire format carries it). */
  readonly onnx: number;
}

const info = (name: DType, bits: number, array: TypedArrayCtor | undefined, kserve?: string, lanes = 1): DTypeInfo => ({ name, bits, array, lanes, kserve, onnx: ONNX_NUMBERS[name] });

const ONNX_NUMBERS: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, string: 8, bool: 9, float16: 10, float64: 11,
  uint32: 12, uint64: 13, complex64: 14, complex128: 15, bfloat16: 16, float8e4m3fn: 17, float8e4m3fnuz: 18,
  float8e5m2: 19, float8e5m2fnuz: 20, uint4: 21, int4: 22,
};

const TABLE: Record<DType, DTypeInfo> = {
  float32: info("float32", 32, Float32Array, "FP32"),
  float64: info("float64", 64, Float64Array, "FP64"),
  float16: info("float16", 16, Uint16Array, "FP16"),
  bfloat16: info("bfloat16", 16, Uint16Array, "BF16"),
  int8: info("int8", 8, Int8Array, "INT8"),
  int16: info("int16", 16, Int16Array, "INT16"),
  int32: info("int32", 32, Int32Array, "INT32"),
  int64: info("int64", 64, BigInt64Array as unknown as TypedArrayCtor, "INT64"),
  uint8: info("uint8", 8, Uint8Array, "UINT8"),
  uint16: info("uint16", 16, Uint16Array, "UINT16"),
  uint32: info("uint32", 32, Uint32Array, "UINT32"),
  uint64: info("uint64", 64, BigUint64Array as unknown as TypedArrayCtor, "UINT64"),
  bool: info("bool", 8, Uint8Array, "BOOL"),
  string: info("string", 0, undefined, "BYTES"),
  complex64: info("complex64", 64, Float32Array, undefined, 2),
  complex128: info("complex128", 128, Float64Array, undefined, 2),
  float8e4m3fn: info("float8e4m3fn", 8, Uint8Array),
  float8e4m3fnuz: info("float8e4m3fnuz", 8, Uint8Array),
  float8e5m2: info("float8e5m2", 8, Uint8Array),
  float8e5m2fnuz: info("float8e5m2fnuz", 8, Uint8Array),
  int4: info("int4", 4, Uint8Array, undefined, 0.5),
  uint4: info("uint4", 4, Uint8Array, undefined, 0.5),
};

export function isDType(x: unknown): x is DType {
  return typeof x === "string" && Object.prototype.hasOwnProperty.call(TABLE, x);
}

export function dtypeInfo(d: DType): DTypeInfo {
  return TABLE[d];
}

/** Bytes that `elements` elements of `d` occupy (4-bit types packed, rounded up; 0 for string). */
export function byteSize(d: DType, elements: number): number {
  return Math.ceil((elements * TABLE[d].bits) / 8);
}

/** Array entries that hold `elements` elements of `d`. */
export function arrayLength(d: DType, elements: number): number {
  const l = TABLE[d].lanes;
  return l === 0.5 ? Math.ceil(elements / 2) : elements * l;
}

/** The dtype of a KServe v2 datatype name (`FP32` -> `float32`, case-insensitive), or undefined. */
export function dtypeOfKserve(datatype: string): DType | undefined {
  return KSERVE_TO_DTYPE.get(datatype.toUpperCase());
}

/** The dtype of an ONNX `TensorProto.DataType` number, or undefined. */
export function dtypeOfOnnx(n: number): DType | undefined {
  return DTYPES.find((d) => ONNX_NUMBERS[d] === n);
}

/** Every KServe v2 datatype name, in the table's order. */
export const KSERVE_DATATYPES: readonly string[] = DTYPES.flatMap((d) => TABLE[d].kserve ?? []);

const KSERVE_TO_DTYPE = new Map(DTYPES.flatMap((d) => (TABLE[d].kserve ? [[TABLE[d].kserve!, d] as const] : [])));
