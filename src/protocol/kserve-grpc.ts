/**
 * The KServe v2 gRPC messages (proto/grpc_service.proto) as JavaScript objects, in the form the
 * server decodes them (@grpc/proto-loader with `keepCase`, `longs: String`, `defaults`, `oneofs`):
 * 64-bit integers as decimal strings, bytes as Buffers, absent repeated fields as empty arrays.
 * Objects written back may use numbers where strings are read.
 */

/** One of a bool, an int64, a string, a double or a uint64; `parameter_choice` names the one set. */
export interface InferParameter {
  bool_param?: boolean;
  int64_param?: string | number;
  string_param?: string;
  double_param?: number;
  uint64_param?: string | number;
  parameter_choice?: "bool_param" | "int64_param" | "string_param" | "double_param" | "uint64_param";
}

/** Typed tensor elements: one list per element type; BYTES elements are Buffers. */
export interface InferTensorContents {
  bool_contents?: boolean[];
  int_contents?: number[];
  int64_contents?: Array<string | number>;
  uint_contents?: number[];
  uint64_contents?: Array<string | number>;
  fp32_contents?: number[];
  fp64_contents?: number[];
  bytes_contents?: Uint8Array[];
}

export interface InferInputTensor {
  name: string;
  datatype: string;
  shape: Array<string | number>;
  parameters?: Record<string, InferParameter>;
  contents?: InferTensorContents | null;
}

export interface InferRequestedOutputTensor {
  name: string;
  parameters?: Record<string, InferParameter>;
}

export interface ModelInferRequest {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, InferParameter>;
  inputs: InferInputTensor[];
  outputs?: InferRequestedOutputTensor[];
  /** One entry per input, in order, when the inputs travel as raw little-endian bytes. */
  raw_input_contents?: Uint8Array[];
}

export interface InferOutputTensor {
  name: string;
  datatype: string;
  shape: Array<string | number>;
  parameters?: Record<string, InferParameter>;
  contents?: InferTensorContents | null;
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters?: Record<string, InferParameter>;
  outputs: InferOutputTensor[];
  /** One entry per output, in order: the server always answers with raw little-endian bytes, as Triton does. */
  raw_output_contents: Uint8Array[];
}

export interface ModelStreamInferResponse {
  error_message: string;
  infer_response: ModelInferResponse | null;
}

/**
 * The model a ModelInferRequest message names (`model_name`, field 1, and `model_version`, field 2;
 * the last of each counts, as in any protobuf decoder), read from its bytes without decoding the
 * rest, so that the server can route a request before deciding who decodes it. Undefined when the
 * bytes are not a well-formed sequence of protobuf fields or name no model.
 */
export function modelOfInferRequest(bytes: Uint8Array): { name: string; version: string } | undefined {
  let at = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let scale = 1; at < bytes.length && scale <= 2 ** 63; scale *= 128) {
      const b = bytes[at++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
    }
    return undefined; // past the end, or more than ten bytes
  };
  const text = (start: number, end: number) => Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString("utf8");
  let name: string | undefined;
  let version = "";
  while (at < bytes.length) {
    const key = varint();
    if (key === undefined) return undefined;
    const field = Math.floor(key / 8);
    switch (key % 8) {
      case 0:
        if (varint() === undefined) return undefined;
        break;
      case 1:
        at += 8;
        break;
      case 2: {
        const length = varint();
        if (length === undefined || at + length > bytes.length) return undefined;
        if (field === 1) name = text(at, at + length);
        else if (field === 2) version = text(at, at + length);
        at += length;
        break;
      }
      case 5:
        at += 4;
        break;
      default:
        return undefined;
    }
    if (at > bytes.length) return undefined;
  }
  return name ? { name, version } : undefined;
}
