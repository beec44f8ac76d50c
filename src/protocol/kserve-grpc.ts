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
