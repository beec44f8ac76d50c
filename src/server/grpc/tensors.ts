/**
 * Tensors and parameters of the KServe v2 gRPC messages: inputs from `raw_input_contents` (raw
 * little-endian bytes, copied once into the pool) or from typed `contents`, outputs always as
 * `raw_output_contents` (views of the output tensors, serialized straight into the response),
 * and the request parameters mlos reads (`priority`, `timeout`). Problems are HttpErrors naming the
 * tensor, as over HTTP.
 */
import type { InferParameter, InferInputTensor, InferTensorContents, ModelInferRequest, InferOutputTensor } from "../../protocol/kserve-grpc.js";
import type { TensorPool } from "../../tensor/pool.js";
import { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";
import { binaryData, datatypeOf, dtypeOf, tensorFromBinary, tensorFromJson } from "../kserve-codec.js";
import { requestParameters, type RequestParameters } from "../serving.js";
import { regionRefOf, tensorFromRegion, type SystemSharedMemory } from "../shm/system-shared-memory.js";

/** Which typed `contents` list carries each KServe datatype (FP16 and BF16 travel raw only). */
const CONTENTS_FIELD: Partial<Record<string, keyof InferTensorContents>> = {
  BOOL: "bool_contents",
  INT8: "int_contents",
  INT16: "int_contents",
  INT32: "int_contents",
  INT64: "int64_contents",
  UINT8: "uint_contents",
  UINT16: "uint_contents",
  UINT32: "uint_contents",
  UINT64: "uint64_contents",
  FP32: "fp32_contents",
  FP64: "fp64_contents",
  BYTES: "bytes_contents",
};

/** A message's int64 shape (decimal strings) as numbers, or a 400 naming the tensor. */
function shapeOf(t: { name: string; shape: Array<string | number> }): number[] {
  return t.shape.map((d) => {
    const n = Number(d);
    if (!Number.isSafeInteger(n) || n < 0) throw new HttpError(400, "BAD_SHAPE", `tensor "${t.name}": shape must hold non-negative integers, got [${t.shape.join(", ")}]`);
    return n;
  });
}

/** One input from its typed contents, through the same checks as a JSON tensor. */
function tensorFromContents(t: InferInputTensor, pool: TensorPool, index: number): Tensor {
  const dtype = dtypeOf(t.datatype, t.name || `inputs[${index}]`);
  const field = CONTENTS_FIELD[t.datatype];
  if (!field) throw new HttpError(400, "BAD_DATA", `input "${t.name}": ${t.datatype} (${dtype}) has no typed contents field; send it in raw_input_contents`);
  const list = (t.contents?.[field] ?? []) as unknown[];
  const data = field === "bytes_contents" ? (list as Uint8Array[]).map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("utf8")) : list;
  return tensorFromJson({ name: t.name, datatype: t.datatype, shape: shapeOf(t), data }, pool, index);
}

/**
 * The request's inputs, in the pool. Raw contents, when given, must cover every input in order
 * (the protocol's rule); on any failure the tensors already made are disposed.
 */
export function decodeInputs(req: ModelInferRequest, pool: TensorPool, shm: SystemSharedMemory): Record<string, Tensor> {
  const raw = req.raw_input_contents ?? [];
  if (raw.length > 0 && raw.length !== req.inputs.length) {
    throw new HttpError(400, "BAD_DATA", `raw_input_contents has ${raw.length} entries for ${req.inputs.length} inputs; give one per input, in order, or none`);
  }
  const inputs: Record<string, Tensor> = {};
  try {
    req.inputs.forEach((t, i) => {
      if (!t.name) throw new HttpError(400, "BAD_TENSOR", `inputs[${i}].name must be a non-empty string`);
      if (inputs[t.name]) throw new HttpError(400, "BAD_REQUEST", `input "${t.name}" is given twice`);
      const region = regionRefOf(plainParameters(t.parameters), t.name);
      if (region) {
        if (hasContents(t.contents) || (raw[i]?.byteLength ?? 0) > 0) throw new HttpError(400, "BAD_DATA", `input "${t.name}" names a shared-memory region and also carries data`);
        inputs[t.name] = tensorFromRegion(shm, t.name, dtypeOf(t.datatype, t.name), shapeOf(t), region, pool);
      } else if (raw.length > 0) {
        if (hasContents(t.contents)) throw new HttpError(400, "BAD_DATA", `input "${t.name}" has both contents and raw_input_contents`);
        inputs[t.name] = tensorFromBinary(t.name, t.datatype, shapeOf(t), raw[i]!, pool);
      } else {
        inputs[t.name] = tensorFromContents(t, pool, i);
      }
    });
  } catch (e) {
    for (const t of Object.values(inputs)) t.dispose();
    throw e;
  }
  return inputs;
}

function hasContents(c: InferTensorContents | null | undefined): boolean {
  return !!c && Object.values(c).some((v) => Array.isArray(v) && v.length > 0);
}

/** A parameter's value (bool, number or string; 64-bit integers as numbers when they fit). */
export function parameterValue(p: InferParameter): boolean | number | string | undefined {
  switch (p.parameter_choice) {
    case "bool_param":
      return p.bool_param;
    case "string_param":
      return p.string_param;
    case "double_param":
      return p.double_param;
    case "int64_param":
    case "uint64_param": {
      const v = p[p.parameter_choice];
      const n = Number(v);
      return Number.isSafeInteger(n) ? n : String(v);
    }
    default:
      return undefined;
  }
}

/** A parameters map as plain values. */
export function plainParameters(parameters: Record<string, InferParameter> | undefined): Record<string, unknown> | undefined {
  if (!parameters) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, p] of Object.entries(parameters)) out[k] = parameterValue(p);
  return out;
}

/** `priority` and `timeout` (ms) from the request's parameters, checked as over HTTP. */
export function inferParameters(parameters: Record<string, InferParameter> | undefined): RequestParameters {
  if (!parameters) return {};
  const get = (k: string) => (parameters[k] ? parameterValue(parameters[k]) : undefined);
  return requestParameters({ priority: get("priority"), timeout: get("timeout") });
}

/**
 * The response's outputs: metadata per tensor and its bytes in `raw_output_contents`, in the same
 * order. An output the request asked into a shared-memory region is written there; its entry in
 * `raw_output_contents` stays empty (so that the entries still line up with `outputs`), and its
 * parameters say where it went and how many bytes it took.
 */
export function encodeOutputs(outputs: Record<string, Tensor>, req: ModelInferRequest, shm: SystemSharedMemory): { outputs: InferOutputTensor[]; raw_output_contents: Uint8Array[] } {
  const meta: InferOutputTensor[] = [];
  const raw: Uint8Array[] = [];
  for (const [name, t] of Object.entries(outputs)) {
    const region = regionRefOf(plainParameters(req.outputs?.find((o) => o.name === name)?.parameters), name);
    const bytes = binaryData(t);
    if (region) {
      shm.write(region, bytes, name);
      meta.push({ name, datatype: datatypeOf(t.dtype), shape: [...t.shape], parameters: { shared_memory_region: { string_param: region.region }, shared_memory_offset: { uint64_param: region.offset }, shared_memory_byte_size: { uint64_param: bytes.byteLength } } });
      raw.push(new Uint8Array(0));
    } else {
      meta.push({ name, datatype: datatypeOf(t.dtype), shape: [...t.shape] });
      raw.push(bytes);
    }
  }
  return { outputs: meta, raw_output_contents: raw };
}
