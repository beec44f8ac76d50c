/**
 * A small typed builder for ONNX models.
 *
 * The ONNX protobuf subset needed to describe a model (ModelProto, GraphProto, NodeProto,
 * AttributeProto, TensorProto, ValueInfoProto, TypeProto, TensorShapeProto,
 * OperatorSetIdProto, StringStringEntryProto) is declared here with protobufjs's reflection
 * API, by field number, from the ONNX IR specification. Only the fields this builder writes
 * (and a few that a reader may want to look at) are declared; unknown fields are skipped
 * when decoding.
 *
 * Encoding is deterministic: the same builder calls give the same bytes on every run
 * (fields are written in field-number order, initializer data is written little-endian
 * into `raw_data`).
 */
import protobuf from "protobufjs";

/** Element types by their ONNX `TensorProto.DataType` numbers. */
export const ONNX_DATA_TYPES = {
  float32: 1,
  uint8: 2,
  int8: 3,
  uint16: 4,
  int16: 5,
  int32: 6,
  int64: 7,
  string: 8,
  bool: 9,
  float16: 10,
  float64: 11,
  uint32: 12,
  uint64: 13,
  bfloat16: 16,
} as const;
export type OnnxDType = keyof typeof ONNX_DATA_TYPES;

/** `AttributeProto.AttributeType` numbers. */
export const ONNX_ATTRIBUTE_TYPES = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

/** A dimension: a fixed size, or a symbolic name (`"batch"`) for a dynamic one. */
export type Dim = number | string;

export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** An attribute value with an explicit ONNX attribute type. */
export type TypedAttr =
  | { type: "float"; value: number }
  | { type: "int"; value: number | bigint }
  | { type: "string"; value: string | Uint8Array }
  | { type: "floats"; value: readonly number[] }
  | { type: "ints"; value: ReadonlyArray<number | bigint> }
  | { type: "strings"; value: ReadonlyArray<string | Uint8Array> }
  | { type: "tensor"; value: TensorInit };

/**
 * An attribute value. Untagged values are inferred: an integer number or a bigint is an INT,
 * any other number a FLOAT, a string or Uint8Array a STRING, an array of integers INTS, an
 * array with any non-integer FLOATS, an array of strings STRINGS. Use {@link attr} to force a
 * type (`attr.float(1)` for a float attribute whose value happens to be whole).
 */
export type AttrValue =
  | TypedAttr
  | number
  | bigint
  | string
  | Uint8Array
  | ReadonlyArray<number | bigint>
  | readonly string[];

/** Helpers that tag attribute values with their ONNX type. */
export const attr = {
  float: (value: number): TypedAttr => ({ type: "float", value }),
  int: (value: number | bigint): TypedAttr => ({ type: "int", value }),
  string: (value: string | Uint8Array): TypedAttr => ({ type: "string", value }),
  floats: (value: readonly number[]): TypedAttr => ({ type: "floats", value }),
  ints: (value: ReadonlyArray<number | bigint>): TypedAttr => ({ type: "ints", value }),
  strings: (value: ReadonlyArray<string | Uint8Array>): TypedAttr => ({ type: "strings", value }),
  tensor: (value: TensorInit): TypedAttr => ({ type: "tensor", value }),
};

/** A constant tensor (an initializer, or the value of a TENSOR attribute). */
export interface TensorInit {
  name?: string;
  dims: readonly number[];
  data: TensorData;
  /** Needed only where the typed array does not say it (bool, float16, bfloat16). */
  dtype?: OnnxDType;
}

export interface ValueInfo {
  name: string;
  dtype: OnnxDType;
  shape: readonly Dim[];
  docString?: string;
}

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: Record<string, AttrValue>;
  name?: string;
  domain?: string;
}

export interface OnnxModelOptions {
  /** `ModelProto.ir_version`; default 8. */
  irVersion?: number;
  /** Opset of the default (ai.onnx) domain; default 17. */
  opset?: number;
  /** Further opsets, e.g. `{ "com.microsoft": 1 }`. */
  extraOpsets?: Record<string, number>;
  graphName?: string;
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  /** `ModelProto.metadata_props`, written in key order. */
  metadata?: Record<string, string>;
}

// ---------------------------------------------------------------------------------------
// The protobuf schema, by field number (ONNX IR, onnx.proto).

function type(name: string, fields: Array<[string, number, string, ("repeated" | undefined)?]>): protobuf.Type {
  const t = new protobuf.Type(name);
  for (const [fname, id, ftype, rule] of fields) t.add(new protobuf.Field(fname, id, ftype, rule));
  return t;
}

function buildSchema(): protobuf.Root {
  const ns = new protobuf.Namespace("onnx");
  ns.add(type("OperatorSetIdProto", [
    ["domain", 1, "string"],
    ["version", 2, "int64"],
  ]));
  ns.add(type("StringStringEntryProto", [
    ["key", 1, "string"],
    ["value", 2, "string"],
  ]));
  ns.add(type("TensorProto", [
    ["dims", 1, "int64", "repeated"],
    ["data_type", 2, "int32"],
    ["float_data", 4, "float", "repeated"],
    ["int32_data", 5, "int32", "repeated"],
    ["string_data", 6, "bytes", "repeated"],
    ["int64_data", 7, "int64", "repeated"],
    ["name", 8, "string"],
    ["raw_data", 9, "bytes"],
    ["double_data", 10, "double", "repeated"],
    ["uint64_data", 11, "uint64", "repeated"],
    ["doc_string", 12, "string"],
    ["external_data", 13, "onnx.StringStringEntryProto", "repeated"],
    ["data_location", 14, "int32"],
  ]));
  const dimension = type("Dimension", [
    ["dim_value", 1, "int64"],
    ["dim_param", 2, "string"],
    ["denotation", 3, "string"],
  ]);
  const shape = type("TensorShapeProto", [["dim", 1, "Dimension", "repeated"]]);
  shape.add(dimension);
  ns.add(shape);
  const tensorType = type("Tensor", [
    ["elem_type", 1, "int32"],
    ["shape", 2, "onnx.TensorShapeProto"],
  ]);
  const typeProto = type("TypeProto", [
    ["tensor_type", 1, "Tensor"],
    ["denotation", 6, "string"],
  ]);
  typeProto.add(tensorType);
  ns.add(typeProto);
  ns.add(type("ValueInfoProto", [
    ["name", 1, "string"],
    ["type", 2, "onnx.TypeProto"],
    ["doc_string", 3, "string"],
  ]));
  ns.add(type("AttributeProto", [
    ["name", 1, "string"],
    ["f", 2, "float"],
    ["i", 3, "int64"],
    ["s", 4, "bytes"],
    ["t", 5, "onnx.TensorProto"],
    ["g", 6, "onnx.GraphProto"],
    ["floats", 7, "float", "repeated"],
    ["ints", 8, "int64", "repeated"],
    ["strings", 9, "bytes", "repeated"],
    ["tensors", 10, "onnx.TensorProto", "repeated"],
    ["graphs", 11, "onnx.GraphProto", "repeated"],
    ["doc_string", 13, "string"],
    ["type", 20, "int32"],
    ["ref_attr_name", 21, "string"],
  ]));
  ns.add(type("NodeProto", [
    ["input", 1, "string", "repeated"],
    ["output", 2, "string", "repeated"],
    ["name", 3, "string"],
    ["op_type", 4, "string"],
    ["attribute", 5, "onnx.AttributeProto", "repeated"],
    ["doc_string", 6, "string"],
    ["domain", 7, "string"],
  ]));
  ns.add(type("GraphProto", [
    ["node", 1, "onnx.NodeProto", "repeated"],
    ["name", 2, "string"],
    ["initializer", 5, "onnx.TensorProto", "repeated"],
    ["doc_string", 10, "string"],
    ["input", 11, "onnx.ValueInfoProto", "repeated"],
    ["output", 12, "onnx.ValueInfoProto", "repeated"],
    ["value_info", 13, "onnx.ValueInfoProto", "repeated"],
  ]));
  ns.add(type("ModelProto", [
    ["ir_version", 1, "int64"],
    ["producer_name", 2, "string"],
    ["producer_version", 3, "string"],
    ["domain", 4, "string"],
    ["model_version", 5, "int64"],
    ["doc_string", 6, "string"],
    ["graph", 7, "onnx.GraphProto"],
    ["opset_import", 8, "onnx.OperatorSetIdProto", "repeated"],
    ["metadata_props", 14, "onnx.StringStringEntryProto", "repeated"],
  ]));
  const root = new protobuf.Root();
  root.add(ns);
  root.resolveAll();
  return root;
}

let schema: protobuf.Root | undefined;
/** The reflected ONNX schema (types `onnx.ModelProto`, `onnx.GraphProto`, ...). */
export function onnxSchema(): protobuf.Root {
  schema ??= buildSchema();
  return schema;
}
export function onnxType(name: "ModelProto" | "GraphProto" | "NodeProto" | "TensorProto" | "ValueInfoProto" | "AttributeProto"): protobuf.Type {
  return onnxSchema().lookupType(`onnx.${name}`);
}

/** Decodes ONNX model bytes into a plain object (int64 as numbers, bytes as Uint8Array). */
export function decodeModel(bytes: Uint8Array): Record<string, unknown> {
  const t = onnxType("ModelProto");
  return t.toObject(t.decode(bytes), { longs: Number, defaults: false, arrays: true });
}

// ---------------------------------------------------------------------------------------
// Conversions to protobuf plain objects.

function toInt(v: number | bigint, what: string): number {
  const n = typeof v === "bigint" ? Number(v) : v;
  if (!Number.isSafeInteger(n)) throw new RangeError(`${what}: ${String(v)} is not a safe integer`);
  return n;
}

function dtypeOf(data: TensorData, explicit: OnnxDType | undefined): OnnxDType {
  const inferred: OnnxDType | undefined =
    data instanceof Float32Array ? "float32"
    : data instanceof Float64Array ? "float64"
    : data instanceof Int8Array ? "int8"
    : data instanceof Uint8Array ? "uint8"
    : data instanceof Int16Array ? "int16"
    : data instanceof Uint16Array ? "uint16"
    : data instanceof Int32Array ? "int32"
    : data instanceof Uint32Array ? "uint32"
    : data instanceof BigInt64Array ? "int64"
    : data instanceof BigUint64Array ? "uint64"
    : undefined;
  if (explicit === undefined) {
    if (inferred === undefined) throw new TypeError("unsupported tensor data");
    return inferred;
  }
  // Reinterpretations that keep the element size: bool over Uint8Array, (b)float16 over Uint16Array.
  const ok =
    explicit === inferred ||
    (explicit === "bool" && data instanceof Uint8Array) ||
    ((explicit === "float16" || explicit === "bfloat16") && data instanceof Uint16Array);
  if (!ok) throw new TypeError(`tensor dtype ${explicit} does not match ${data.constructor.name}`);
  return explicit;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The tensor's elements as little-endian bytes (ONNX `raw_data`). */
function rawBytes(data: TensorData): Uint8Array {
  const out = new Uint8Array(data.byteLength);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  const size = data.BYTES_PER_ELEMENT;
  if (!LITTLE_ENDIAN && size > 1) {
    for (let i = 0; i < out.length; i += size) out.subarray(i, i + size).reverse();
  }
  return out;
}

function tensorObject(t: TensorInit, name?: string): Record<string, unknown> {
  const dtype = dtypeOf(t.data, t.dtype);
  if (dtype === "string") throw new TypeError("string tensors are not supported");
  const count = t.dims.reduce((a, d) => a * d, 1);
  if (count !== t.data.length) {
    throw new RangeError(`tensor ${name ?? t.name ?? ""}: dims [${t.dims.join(", ")}] hold ${count} elements, data has ${t.data.length}`);
  }
  const o: Record<string, unknown> = {
    dims: t.dims.map((d) => toInt(d, "dim")),
    data_type: ONNX_DATA_TYPES[dtype],
  };
  const n = name ?? t.name;
  if (n !== undefined) o.name = n;
  o.raw_data = rawBytes(t.data);
  return o;
}

function valueInfoObject(v: ValueInfo): Record<string, unknown> {
  const dim = v.shape.map((d) => {
    if (typeof d === "string") {
      if (d.length === 0) throw new TypeError(`${v.name}: empty symbolic dimension`);
      return { dim_param: d };
    }
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`${v.name}: bad dimension ${d}`);
    return { dim_value: d };
  });
  const o: Record<string, unknown> = {
    name: v.name,
    type: { tensor_type: { elem_type: ONNX_DATA_TYPES[v.dtype], shape: { dim } } },
  };
  if (v.docString !== undefined) o.doc_string = v.docString;
  return o;
}

const utf8 = new TextEncoder();
const asBytes = (s: string | Uint8Array): Uint8Array => (typeof s === "string" ? utf8.encode(s) : s);

function tagAttr(v: AttrValue): TypedAttr {
  if (typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && "type" in v) {
    return v as TypedAttr;
  }
  if (typeof v === "bigint") return { type: "int", value: v };
  if (typeof v === "number") return Number.isInteger(v) ? { type: "int", value: v } : { type: "float", value: v };
  if (typeof v === "string" || v instanceof Uint8Array) return { type: "string", value: v };
  const arr = v as ReadonlyArray<number | bigint | string>;
  if (arr.length > 0 && arr.every((x) => typeof x === "string")) return { type: "strings", value: arr as string[] };
  if (arr.every((x) => typeof x === "bigint" || (typeof x === "number" && Number.isInteger(x)))) {
    return { type: "ints", value: arr as Array<number | bigint> };
  }
  if (arr.every((x) => typeof x === "number")) return { type: "floats", value: arr as number[] };
  throw new TypeError("attribute arrays must be all numbers or all strings");
}

function attributeObject(name: string, value: AttrValue): Record<string, unknown> {
  const a = tagAttr(value);
  const o: Record<string, unknown> = { name };
  switch (a.type) {
    case "float": o.f = a.value; o.type = ONNX_ATTRIBUTE_TYPES.FLOAT; break;
    case "int": o.i = toInt(a.value, name); o.type = ONNX_ATTRIBUTE_TYPES.INT; break;
    case "string": o.s = asBytes(a.value); o.type = ONNX_ATTRIBUTE_TYPES.STRING; break;
    case "floats": o.floats = [...a.value]; o.type = ONNX_ATTRIBUTE_TYPES.FLOATS; break;
    case "ints": o.ints = a.value.map((x) => toInt(x, name)); o.type = ONNX_ATTRIBUTE_TYPES.INTS; break;
    case "strings": o.strings = a.value.map(asBytes); o.type = ONNX_ATTRIBUTE_TYPES.STRINGS; break;
    case "tensor": o.t = tensorObject(a.value); o.type = ONNX_ATTRIBUTE_TYPES.TENSOR; break;
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// The builder.

/**
 * Builds one ONNX model (a single graph).
 *
 * ```ts
 * const m = new OnnxModelBuilder({ graphName: "mlp", opset: 17 });
 * m.input("x", "float32", ["batch", 4]);
 * m.initializer("W", new Float32Array(12), [3, 4]);
 * m.node("Gemm", ["x", "W"], ["y"], { transB: 1 });
 * m.output("y", "float32", ["batch", 3]);
 * const bytes = m.toBytes();
 * ```
 */
export class OnnxModelBuilder {
  readonly options: Readonly<OnnxModelOptions>;
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly valueInfos: ValueInfo[] = [];
  private readonly initializers: Array<{ name: string; tensor: TensorInit }> = [];
  private readonly nodes: NodeSpec[] = [];
  private readonly names = new Set<string>();

  constructor(options: OnnxModelOptions = {}) {
    this.options = { ...options };
  }

  private claim(name: string, what: string): void {
    if (!name) throw new TypeError(`${what} needs a name`);
    if (this.names.has(name)) throw new Error(`${what} ${JSON.stringify(name)}: name already defined`);
    this.names.add(name);
  }

  /** Declares a graph input. */
  input(name: string, dtype: OnnxDType, shape: readonly Dim[], docString?: string): this {
    this.claim(name, "input");
    this.inputs.push({ name, dtype, shape: [...shape], ...(docString !== undefined ? { docString } : {}) });
    return this;
  }

  /** Declares a graph output (a value some node produces, or an input/initializer). */
  output(name: string, dtype: OnnxDType, shape: readonly Dim[], docString?: string): this {
    this.outputs.push({ name, dtype, shape: [...shape], ...(docString !== undefined ? { docString } : {}) });
    return this;
  }

  /** Declares the type and shape of an intermediate value (optional in ONNX). */
  valueInfo(name: string, dtype: OnnxDType, shape: readonly Dim[]): this {
    this.valueInfos.push({ name, dtype, shape: [...shape] });
    return this;
  }

  /**
   * Adds a constant tensor. The dtype follows the typed array (Float32Array: float32,
   * BigInt64Array: int64, ...); pass `dtype` for bool (Uint8Array) or float16 (Uint16Array).
   */
  initializer(name: string, data: TensorData, dims: readonly number[], dtype?: OnnxDType): this {
    this.claim(name, "initializer");
    // Checks the dtype and element count now, so that mistakes show where they are made.
    tensorObject({ data, dims, ...(dtype !== undefined ? { dtype } : {}) }, name);
    this.initializers.push({ name, tensor: { data, dims: [...dims], ...(dtype !== undefined ? { dtype } : {}) } });
    return this;
  }

  /** Int64 initializer from plain numbers (shapes, axes, indices). */
  int64Initializer(name: string, values: ReadonlyArray<number | bigint>, dims: readonly number[] = [values.length]): this {
    return this.initializer(name, BigInt64Array.from(values, (v) => BigInt(v)), dims);
  }

  /** Adds a node. Returns the builder; outputs are named by the caller. */
  node(opType: string, inputs: readonly string[], outputs: readonly string[], attributes?: Record<string, AttrValue>, name?: string, domain?: string): this {
    for (const o of outputs) if (o !== "") this.claim(o, `output of ${opType}`);
    this.nodes.push({
      opType,
      inputs: [...inputs],
      outputs: [...outputs],
      ...(attributes !== undefined ? { attributes: { ...attributes } } : {}),
      name: name ?? `${opType.toLowerCase()}_${this.nodes.length}`,
      ...(domain !== undefined ? { domain } : {}),
    });
    return this;
  }

  /** The ModelProto as a protobufjs plain object. */
  toObject(): Record<string, unknown> {
    const o = this.options;
    const known = new Set<string>([...this.inputs.map((i) => i.name), ...this.initializers.map((i) => i.name)]);
    for (const n of this.nodes) {
      for (const i of n.inputs) {
        if (i !== "" && !known.has(i)) throw new Error(`node ${n.name} (${n.opType}) reads ${JSON.stringify(i)}, which nothing defines before it`);
      }
      for (const out of n.outputs) known.add(out);
    }
    for (const out of this.outputs) {
      if (!known.has(out.name)) throw new Error(`graph output ${JSON.stringify(out.name)} is not produced by any node`);
    }
    if (this.outputs.length === 0) throw new Error("a graph needs at least one output");

    const graph: Record<string, unknown> = {
      node: this.nodes.map((n) => {
        const node: Record<string, unknown> = { input: n.inputs, output: n.outputs, name: n.name, op_type: n.opType };
        const attrs = Object.entries(n.attributes ?? {});
        if (attrs.length > 0) node.attribute = attrs.map(([k, v]) => attributeObject(k, v));
        if (n.domain !== undefined) node.domain = n.domain;
        return node;
      }),
      name: o.graphName ?? "graph",
      initializer: this.initializers.map((i) => tensorObject(i.tensor, i.name)),
      input: this.inputs.map(valueInfoObject),
      output: this.outputs.map(valueInfoObject),
    };
    if (this.valueInfos.length > 0) graph.value_info = this.valueInfos.map(valueInfoObject);

    const opsets = [{ domain: "", version: o.opset ?? 17 }];
    for (const [domain, version] of Object.entries(o.extraOpsets ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      opsets.push({ domain, version });
    }
    const model: Record<string, unknown> = {
      ir_version: o.irVersion ?? 8,
      producer_name: o.producerName ?? "mlos",
      graph,
      opset_import: opsets,
    };
    if (o.producerVersion !== undefined) model.producer_version = o.producerVersion;
    if (o.domain !== undefined) model.domain = o.domain;
    if (o.modelVersion !== undefined) model.model_version = o.modelVersion;
    if (o.docString !== undefined) model.doc_string = o.docString;
    if (o.metadata !== undefined) {
      model.metadata_props = Object.keys(o.metadata).sort().map((key) => ({ key, value: o.metadata![key] }));
    }
    return model;
  }

  /** The serialized ModelProto. */
  toBytes(): Uint8Array {
    const t = onnxType("ModelProto");
    const obj = this.toObject();
    const err = t.verify(obj);
    if (err) throw new Error(`invalid ONNX model: ${err}`);
    return t.encode(obj).finish();
  }
}
