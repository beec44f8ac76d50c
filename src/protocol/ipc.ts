/**
 * The shared-memory IPC door's wire format, as TypeScript reads and writes it: the request and
 * response messages of native/include/mlos_ipc.h (the C header is the reference; the addon's
 * `ipcLayout` gives the sizes, which the client checks against these offsets at connect).
 *
 * A request names a model, its input tensors (name, ONNX element type, shape, and where their
 * bytes lie in the client's arena) and a window of the arena for the outputs; the response lists
 * the outputs the server wrote there, or an error with a stable code.
 */
import { dtypeInfo, dtypeOfOnnx, type DType } from "../tensor/dtype.js";

/**
 * An error of the IPC door, with its stable code: the server's (IPC_BAD_TENSOR, IPC_OUT_OF_RANGE,
 * IPC_MODEL_NOT_FOUND, IPC_OUTPUT_TOO_SMALL, IPC_RUN_FAILED, or a model's own such as
 * INPUT_SHAPE) or the client's (IPC_CONNECT, IPC_DISCONNECTED, IPC_ARENA_FULL, IPC_TIMEOUT ...).
 */
export class IpcError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "IpcError";
    this.code = code;
  }
}

export const IPC_MAX_TENSORS = 8;
export const IPC_MAX_RANK = 8;
export const IPC_NAME_BYTES = 64;
export const IPC_MODEL_BYTES = 128;
/** Tensors the server writes start on this boundary of the arena. */
export const IPC_ALIGN = 64;

const TENSOR = { name: 0, dtype: 64, rank: 68, shape: 72, offset: 136, bytes: 144, size: 152 } as const;
export const REQUEST = { kind: 0, nInputs: 4, id: 8, model: 16, outOffset: 144, outBytes: 152, nOutputs: 160, outputs: 168, inputs: 680, size: 1896 } as const;
export const RESPONSE = { id: 0, status: 8, nOutputs: 12, computeNs: 16, neededBytes: 24, code: 32, message: 64, outputs: 320, size: 1536 } as const;
const INFER = 1;

/**
 * The model capability that lets the IPC door run a model natively (the plugin's native session
 * object, handed to the addon's IpcHost.setOrtModel); plugins without it are served through JS.
 */
export const IPC_NATIVE_SESSION = "ipc-native-ort-session";

/**
 * The model capability of plugins whose native part lives in another addon (the torch plugin): a
 * function that makes an mlos_ipc_runner (native/src/ipc/ipc_runner.h) for IpcHost.setRunnerModel.
 */
export const IPC_NATIVE_RUNNER = "ipc-native-runner";

/** One tensor of a request or response: where its bytes lie in the arena. */
export interface IpcTensorDesc {
  name: string;
  dtype: DType;
  shape: number[];
  offset: number;
  bytes: number;
}

export interface IpcRequest {
  id: number;
  model: string;
  inputs: IpcTensorDesc[];
  /** Output names (empty: all). */
  outputs: string[];
  outOffset: number;
  outBytes: number;
}

export type IpcResponse =
  | { id: number; ok: true; computeNs: number; outputs: IpcTensorDesc[] }
  | { id: number; ok: false; code: string; message: string; neededBytes: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Names are few and repeat with every request: their encodings are kept. */
const encoded = new Map<string, Uint8Array>();

function nameBytes(text: string): Uint8Array {
  let bytes = encoded.get(text);
  if (!bytes) {
    bytes = encoder.encode(text);
    if (encoded.size < 4096) encoded.set(text, bytes);
  }
  return bytes;
}

function writeName(buf: Uint8Array, at: number, capacity: number, text: string, what: string): void {
  const bytes = nameBytes(text);
  if (bytes.length === 0 || bytes.length >= capacity) throw new IpcError("IPC_BAD_REQUEST", `${what} ${JSON.stringify(text)} must be 1..${capacity - 1} bytes of UTF-8`);
  buf.set(bytes, at);
  buf[at + bytes.length] = 0;
}

function readName(buf: Uint8Array, at: number, capacity: number): string {
  let end = at;
  let ascii = true;
  while (end < at + capacity && buf[end] !== 0) {
    if (buf[end]! >= 0x80) ascii = false;
    end++;
  }
  if (!ascii || end - at > 64) return decoder.decode(buf.subarray(at, end));
  let s = "";
  for (let i = at; i < end; i++) s += String.fromCharCode(buf[i]!);
  return s;
}

// 64-bit fields hold values below 2^53 here: written and read as two 32-bit halves (no BigInt).
function setU64(view: DataView, at: number, v: number): void {
  view.setUint32(at, v >>> 0, true);
  view.setUint32(at + 4, Math.floor(v / 2 ** 32), true);
}
function getU64(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
}
function getI64(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getInt32(at + 4, true) * 2 ** 32;
}

function writeTensor(view: DataView, buf: Uint8Array, at: number, t: IpcTensorDesc, what: string): void {
  writeName(buf, at + TENSOR.name, IPC_NAME_BYTES, t.name, what);
  if (t.shape.length > IPC_MAX_RANK) throw new IpcError("IPC_BAD_TENSOR", `${what} '${t.name}' has rank ${t.shape.length}; the IPC door carries up to ${IPC_MAX_RANK}`);
  view.setUint32(at + TENSOR.dtype, dtypeInfo(t.dtype).onnx, true);
  view.setUint32(at + TENSOR.rank, t.shape.length, true);
  for (let k = 0; k < t.shape.length; k++) setU64(view, at + TENSOR.shape + 8 * k, t.shape[k]!);
  setU64(view, at + TENSOR.offset, t.offset);
  setU64(view, at + TENSOR.bytes, t.bytes);
}

function readTensor(view: DataView, buf: Uint8Array, at: number): IpcTensorDesc {
  const rank = Math.min(view.getUint32(at + TENSOR.rank, true), IPC_MAX_RANK);
  const code = view.getUint32(at + TENSOR.dtype, true);
  const dtype = dtypeOfOnnx(code);
  if (!dtype) throw new IpcError("IPC_CORRUPT", `the server sent element type ${code}, which this client does not know`);
  const shape: number[] = [];
  for (let k = 0; k < rank; k++) shape.push(getI64(view, at + TENSOR.shape + 8 * k));
  return { name: readName(buf, at + TENSOR.name, IPC_NAME_BYTES), dtype, shape, offset: getU64(view, at + TENSOR.offset), bytes: getU64(view, at + TENSOR.bytes) };
}

/** Writes `r` into `buf` (REQUEST.size bytes, reused from request to request). */
export function encodeRequest(buf: Uint8Array, r: IpcRequest): void {
  if (r.inputs.length === 0 || r.inputs.length > IPC_MAX_TENSORS) throw new IpcError("IPC_BAD_REQUEST", `a request carries 1..${IPC_MAX_TENSORS} inputs, not ${r.inputs.length}`);
  if (r.outputs.length > IPC_MAX_TENSORS) throw new IpcError("IPC_BAD_REQUEST", `a request names at most ${IPC_MAX_TENSORS} outputs, not ${r.outputs.length}`);
  const view = viewOf(buf);
  view.setUint32(REQUEST.kind, INFER, true);
  view.setUint32(REQUEST.nInputs, r.inputs.length, true);
  setU64(view, REQUEST.id, r.id);
  writeName(buf, REQUEST.model, IPC_MODEL_BYTES, r.model, "model name");
  setU64(view, REQUEST.outOffset, r.outOffset);
  setU64(view, REQUEST.outBytes, r.outBytes);
  view.setUint32(REQUEST.nOutputs, r.outputs.length, true);
  r.outputs.forEach((o, i) => writeName(buf, REQUEST.outputs + IPC_NAME_BYTES * i, IPC_NAME_BYTES, o, "output name"));
  r.inputs.forEach((t, i) => writeTensor(view, buf, REQUEST.inputs + TENSOR.size * i, t, "input"));
}

/** Reads a response the server wrote into `buf` (RESPONSE.size bytes). */
export function decodeResponse(buf: Uint8Array): IpcResponse {
  const view = viewOf(buf);
  const id = getU64(view, RESPONSE.id);
  if (view.getInt32(RESPONSE.status, true) !== 0) {
    return { id, ok: false, code: readName(buf, RESPONSE.code, 32), message: readName(buf, RESPONSE.message, 256), neededBytes: getU64(view, RESPONSE.neededBytes) };
  }
  const n = Math.min(view.getUint32(RESPONSE.nOutputs, true), IPC_MAX_TENSORS);
  const outputs: IpcTensorDesc[] = [];
  for (let i = 0; i < n; i++) outputs.push(readTensor(view, buf, RESPONSE.outputs + TENSOR.size * i));
  return { id, ok: true, computeNs: getU64(view, RESPONSE.computeNs), outputs };
}

const views = new WeakMap<Uint8Array, DataView>();
/** The DataView over a message buffer (buffers are reused from message to message; so are their views). */
function viewOf(buf: Uint8Array): DataView {
  let v = views.get(buf);
  if (!v) views.set(buf, (v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)));
  return v;
}

/** The socket path of a server name, as the native side computes it (include/mlos_ipc.h). */
export function ipcSocketPath(name: string): string {
  if (name.includes("/")) return name;
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return `${runtime}/mlos/${name}.sock`;
  return `/tmp/mlos-${process.geteuid?.() ?? 0}/${name}.sock`;
}
