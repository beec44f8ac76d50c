/**
 * A decoder graph rewrite that lets a run compute the vocabulary projection for the last position
 * of each row only.
 *
 * A language model exported in Hugging Face's layout computes `logits` for every position of its
 * input: a prompt of 500 tokens pays 500 vocabulary projections (on small models, most of the
 * prompt's work) although generation reads the last one only. The rewrite inserts a Slice on the
 * sequence axis in front of the LM head's MatMul. Its start is an overridable initializer,
 * `mlos_logits_from`: by default 0 (every position: the model computes exactly what the original
 * does, for `infer()` and any other caller), and a generation run feeds -1 (the last position:
 * `logits` is [batch, 1, vocabulary]).
 *
 * The edit works on the protobuf wire format: every field of the model that is not touched is
 * copied byte for byte (attributes, metadata, functions, external-data references, fields newer
 * than this code), so nothing is lost in a decode and re-encode. Only the graph's node list gains
 * a node, the LM head node gets a new first input, and the graph gains three initializers and one
 * input. A graph that does not have the recognised shape (logits of rank 3 from a MatMul with a
 * constant right-hand side, through element-wise ops at most) is left alone: the caller loads the
 * file as it is.
 */
import protobuf from "protobufjs";

/** The overridable initializer a run feeds to choose the first position whose logits are computed. */
export const LOGITS_FROM_INPUT = "mlos_logits_from";
const ENDS = "mlos_logits_to";
const AXES = "mlos_logits_axes";
const SLICED = "mlos_logits_hidden";

/** One field of a protobuf message: its number, wire type, and where it lies in the buffer. */
interface WireField {
  readonly no: number;
  readonly wire: number;
  /** The whole field, tag included. */
  readonly start: number;
  readonly end: number;
  /** Length-delimited fields: their payload. */
  readonly payload?: readonly [number, number];
  /** Varint fields: their value (exact up to 2^53). */
  readonly varint?: number;
}

function fieldsOf(buf: Uint8Array, start: number, end: number): WireField[] {
  const r = protobuf.Reader.create(buf.subarray(start, end));
  const out: WireField[] = [];
  while (r.pos < r.len) {
    const at = r.pos;
    const tag = r.uint32();
    const no = tag >>> 3;
    const wire = tag & 7;
    if (wire === 2) {
      const len = r.uint32();
      const p = r.pos;
      r.skip(len);
      out.push({ no, wire, start: start + at, end: start + r.pos, payload: [start + p, start + p + len] });
    } else if (wire === 0) {
      const v = r.uint64();
      out.push({ no, wire, start: start + at, end: start + r.pos, varint: typeof v === "number" ? v : Number(v.toString()) });
    } else {
      r.skipType(wire);
      out.push({ no, wire, start: start + at, end: start + r.pos });
    }
  }
  return out;
}

const utf8 = new TextDecoder();
const text = (buf: Uint8Array, f: WireField): string => utf8.decode(buf.subarray(f.payload![0], f.payload![1]));
const strings = (buf: Uint8Array, fs: readonly WireField[], no: number): string[] => fs.filter((f) => f.no === no && f.payload).map((f) => text(buf, f));

interface NodeView {
  readonly field: WireField;
  readonly fields: readonly WireField[];
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly op: string;
  readonly domain: string;
}

/** Element-wise ops that may follow the LM head (soft-capping, bias, scaling, casts): rank-preserving. */
const ELEMENTWISE = new Set(["Add", "Sub", "Mul", "Div", "Tanh", "Cast", "Identity"]);
/** Ops through which a constant right-hand side may be derived from an initializer, keeping its rank. */
const RANK_KEEPING = new Set(["Transpose", "Cast", "Identity", "DequantizeLinear"]);

/**
 * The rewritten model, or undefined when the graph is not one this rewrite recognises (the model
 * is then loaded unchanged). Throws only on bytes that are not a protobuf message.
 */
export function rewriteForLastPositionLogits(model: Uint8Array): Uint8Array | undefined {
  const top = fieldsOf(model, 0, model.length);
  const ir = top.find((f) => f.no === 1)?.varint ?? 0;
  // Overridable initializers (an initializer that is also a graph input) need IR version 4.
  if (ir < 4) return undefined;
  const opset = top
    .filter((f) => f.no === 8 && f.payload)
    .map((f) => fieldsOf(model, f.payload![0], f.payload![1]))
    .find((fs) => ["", "ai.onnx"].includes(strings(model, fs, 1)[0] ?? ""));
  // Slice takes its starts, ends and axes as inputs from opset 10.
  if ((opset?.find((f) => f.no === 2)?.varint ?? 0) < 10) return undefined;
  const graphFields = top.filter((f) => f.no === 7 && f.payload);
  if (graphFields.length !== 1) return undefined;
  const graphField = graphFields[0]!;
  const graph = fieldsOf(model, graphField.payload![0], graphField.payload![1]);

  const nodes: NodeView[] = graph
    .filter((f) => f.no === 1 && f.payload)
    .map((field) => {
      const fields = fieldsOf(model, field.payload![0], field.payload![1]);
      return { field, fields, inputs: strings(model, fields, 1), outputs: strings(model, fields, 2), op: strings(model, fields, 4)[0] ?? "", domain: strings(model, fields, 7)[0] ?? "" };
    });
  const initializerDims = new Map<string, number>();
  for (const f of graph.filter((g) => g.no === 5 && g.payload)) {
    const fs = fieldsOf(model, f.payload![0], f.payload![1]);
    const name = strings(model, fs, 8)[0];
    // dims (field 1): repeated int64, unpacked (varints) or packed (one length-delimited run).
    let rank = fs.filter((x) => x.no === 1 && x.wire === 0).length;
    for (const packed of fs.filter((x) => x.no === 1 && x.wire === 2)) {
      const r = protobuf.Reader.create(model.subarray(packed.payload![0], packed.payload![1]));
      while (r.pos < r.len) (r.int64(), rank++);
    }
    if (name !== undefined) initializerDims.set(name, rank);
  }
  const valueInfoName = (f: WireField) => strings(model, fieldsOf(model, f.payload![0], f.payload![1]), 1)[0];
  const graphInputs = new Set(graph.filter((f) => f.no === 11 && f.payload).map(valueInfoName));
  const names = new Set<string>([...initializerDims.keys(), ...graphInputs, ...nodes.flatMap((n) => [...n.inputs, ...n.outputs])]);
  if ([LOGITS_FROM_INPUT, ENDS, AXES, SLICED].some((n) => names.has(n))) return undefined;

  // logits: a graph output of rank 3 whose sequence dimension is not a fixed size other than 1.
  const logitsOut = graph.find((f) => f.no === 12 && f.payload && valueInfoName(f) === "logits");
  if (!logitsOut) return undefined;
  const dims = logitsDims(model, logitsOut);
  if (dims !== undefined && (dims.length !== 3 || (typeof dims[1] === "number" && dims[1] !== 1))) return undefined;

  // Constant values: initializers that are not graph inputs, and what nodes compute from them alone.
  const producer = new Map<string, NodeView>();
  for (const n of nodes) for (const o of n.outputs) producer.set(o, n);
  const constant = new Set([...initializerDims.keys()].filter((n) => !graphInputs.has(n)));
  for (let changed = true; changed; ) {
    changed = false;
    for (const n of nodes) {
      if (n.outputs.every((o) => constant.has(o))) continue;
      const real = n.inputs.filter((i) => i !== "");
      if (n.op === "Constant" || (real.length > 0 && real.every((i) => constant.has(i)))) {
        for (const o of n.outputs) constant.add(o);
        changed = true;
      }
    }
  }
  const constantRank = (name: string, depth = 0): number | undefined => {
    if (initializerDims.has(name)) return initializerDims.get(name);
    const p = producer.get(name);
    return p && depth < 8 && RANK_KEEPING.has(p.op) && p.inputs[0] !== undefined ? constantRank(p.inputs[0], depth + 1) : undefined;
  };

  // From logits back through element-wise ops to the LM head.
  let head: NodeView | undefined;
  let at = "logits";
  for (let hops = 0; hops < 8 && !head; hops++) {
    const p = producer.get(at);
    if (!p) return undefined;
    const isMatMul = p.op === "MatMul" && p.domain === "" && constantRank(p.inputs[1] ?? "") === 2;
    const isNBits = p.op === "MatMulNBits" && p.domain === "com.microsoft" && constant.has(p.inputs[1] ?? "");
    if ((isMatMul || isNBits) && p.inputs[0] !== undefined && !constant.has(p.inputs[0])) {
      head = p;
      break;
    }
    if (!ELEMENTWISE.has(p.op) || p.domain !== "") return undefined;
    const varying = p.inputs.filter((i) => i !== "" && !constant.has(i));
    if (varying.length !== 1) return undefined;
    at = varying[0]!;
  }
  if (!head) return undefined;

  // The rewritten graph: the Slice node just before the head (node order stays topological), the
  // head reading the sliced hidden states, then the new initializers and the overridable input.
  const hidden = head.inputs[0]!;
  const pieces: Uint8Array[] = [];
  let cursor = graphField.payload![0];
  const copyTo = (end: number) => {
    if (end > cursor) pieces.push(model.subarray(cursor, end));
    cursor = end;
  };
  copyTo(head.field.start);
  pieces.push(field(1, sliceNode(hidden)));
  pieces.push(field(1, withFirstInput(model, head, SLICED)));
  cursor = head.field.end;
  copyTo(graphField.payload![1]);
  pieces.push(field(5, int64Initializer(LOGITS_FROM_INPUT, 0n)));
  pieces.push(field(5, int64Initializer(ENDS, 0x7fffffffffffffffn)));
  pieces.push(field(5, int64Initializer(AXES, 1n)));
  pieces.push(field(11, int64VectorInput(LOGITS_FROM_INPUT)));
  const newGraph = concat(pieces);

  return concat([model.subarray(0, graphField.start), field(7, newGraph), model.subarray(graphField.end)]);
}

/** The declared dims of a ValueInfoProto (numbers, names, or undefined each), or undefined when it has no shape. */
function logitsDims(buf: Uint8Array, valueInfo: WireField): Array<number | string | undefined> | undefined {
  const vi = fieldsOf(buf, valueInfo.payload![0], valueInfo.payload![1]);
  const type = vi.find((f) => f.no === 2 && f.payload);
  if (!type) return undefined;
  const tensorType = fieldsOf(buf, type.payload![0], type.payload![1]).find((f) => f.no === 1 && f.payload);
  if (!tensorType) return undefined;
  const shape = fieldsOf(buf, tensorType.payload![0], tensorType.payload![1]).find((f) => f.no === 2 && f.payload);
  if (!shape) return undefined;
  return fieldsOf(buf, shape.payload![0], shape.payload![1])
    .filter((f) => f.no === 1 && f.payload)
    .map((d) => {
      const fs = fieldsOf(buf, d.payload![0], d.payload![1]);
      const v = fs.find((f) => f.no === 1);
      if (v?.varint !== undefined) return v.varint;
      const p = fs.find((f) => f.no === 2 && f.payload);
      return p ? text(buf, p) : undefined;
    });
}

function field(no: number, payload: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((no << 3) | 2).uint32(payload.length);
  return concat([w.finish(), payload]);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** NodeProto: Slice(hidden, mlos_logits_from, mlos_logits_to, mlos_logits_axes) -> mlos_logits_hidden. */
function sliceNode(hidden: string): Uint8Array {
  const w = protobuf.Writer.create();
  for (const i of [hidden, LOGITS_FROM_INPUT, ENDS, AXES]) w.uint32((1 << 3) | 2).string(i);
  w.uint32((2 << 3) | 2).string(SLICED);
  w.uint32((3 << 3) | 2).string("mlos_last_position_slice");
  w.uint32((4 << 3) | 2).string("Slice");
  return w.finish();
}

/** The head node with its first input renamed; every other field copied as it was. */
function withFirstInput(buf: Uint8Array, node: NodeView, name: string): Uint8Array {
  const parts: Uint8Array[] = [];
  let replaced = false;
  for (const f of node.fields) {
    if (f.no === 1 && !replaced) {
      const w = protobuf.Writer.create();
      w.uint32((1 << 3) | 2).string(name);
      parts.push(w.finish());
      replaced = true;
    } else {
      parts.push(buf.subarray(f.start, f.end));
    }
  }
  return concat(parts);
}

/** TensorProto: an int64 tensor of shape [1]. */
function int64Initializer(name: string, value: bigint): Uint8Array {
  const raw = new Uint8Array(8);
  new DataView(raw.buffer).setBigInt64(0, value, true);
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 0).int64(1); // dims: [1]
  w.uint32((2 << 3) | 0).int32(7); // data_type: INT64
  w.uint32((8 << 3) | 2).string(name);
  w.uint32((9 << 3) | 2).bytes(raw); // raw_data, little-endian
  return w.finish();
}

/** ValueInfoProto: name, tensor(int64) of shape [1]. */
function int64VectorInput(name: string): Uint8Array {
  const dim = protobuf.Writer.create().uint32((1 << 3) | 0).int64(1).finish();
  const shape = protobuf.Writer.create().uint32((1 << 3) | 2).bytes(dim).finish();
  const tensorType = protobuf.Writer.create().uint32((1 << 3) | 0).int32(7).uint32((2 << 3) | 2).bytes(shape).finish();
  const type = protobuf.Writer.create().uint32((1 << 3) | 2).bytes(tensorType).finish();
  return protobuf.Writer.create().uint32((1 << 3) | 2).string(name).uint32((2 << 3) | 2).bytes(type).finish();
}
