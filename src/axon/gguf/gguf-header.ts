/**
 * Reading a GGUF file's metadata (its key-value header) without llama.cpp: what `axon pack`
 * writes into a GGUF model's manifest (architecture, context length, chat template, name), and
 * what Axon checks of a GGUF blob. Only the header is read, in buffered positional reads, so a
 * multi-gigabyte file costs a few reads; arrays other than short ones are skipped, not decoded
 * (a vocabulary is hundreds of thousands of strings).
 *
 * The format (version 2 and 3, little-endian): "GGUF", u32 version, u64 tensor count, u64 key
 * count, then per key: a string key, a u32 value type and the value. Strings are a u64 length and
 * UTF-8 bytes; arrays are a u32 element type, a u64 count and the elements.
 */
import { open, type FileHandle } from "node:fs/promises";
import { AxonError } from "../errors.js";

export type GgufValue = number | bigint | boolean | string | GgufValue[] | { type: "array"; elementType: number; length: number };

export interface GgufHeader {
  version: number;
  tensorCount: bigint;
  /** Every key's value; arrays longer than `maxArray` (default 64) are `{ type: "array", elementType, length }`. */
  metadata: Map<string, GgufValue>;
}

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
/** Most header bytes read before giving up: a corrupt length could otherwise walk a huge file. */
const MAX_HEADER_BYTES = 256 << 20;

enum T {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
}
const FIXED_SIZE: Partial<Record<number, number>> = { [T.U8]: 1, [T.I8]: 1, [T.U16]: 2, [T.I16]: 2, [T.U32]: 4, [T.I32]: 4, [T.F32]: 4, [T.BOOL]: 1, [T.U64]: 8, [T.I64]: 8, [T.F64]: 8 };

/** Buffered reads at increasing positions of a file. */
class Reader {
  #buf = Buffer.alloc(0);
  #bufAt = 0;
  pos = 0;
  constructor(
    private readonly fh: FileHandle,
    private readonly size: number,
    private readonly file: string,
  ) {}

  async #need(n: number): Promise<void> {
    if (this.pos + n > this.size) throw new AxonError("MANIFEST_FILE", `${this.file}: the GGUF header is truncated (needs ${this.pos + n} bytes, the file has ${this.size})`, { path: this.file });
    if (this.pos + n > MAX_HEADER_BYTES) throw new AxonError("MANIFEST_FILE", `${this.file}: the GGUF header runs past ${MAX_HEADER_BYTES} bytes (corrupt lengths?)`, { path: this.file });
    if (this.pos >= this.#bufAt && this.pos + n <= this.#bufAt + this.#buf.length) return;
    const len = Math.max(n, 1 << 20);
    const buf = Buffer.alloc(Math.min(len, this.size - this.pos));
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, this.pos);
    this.#buf = buf.subarray(0, bytesRead);
    this.#bufAt = this.pos;
  }
  async bytes(n: number): Promise<Buffer> {
    await this.#need(n);
    const off = this.pos - this.#bufAt;
    this.pos += n;
    return this.#buf.subarray(off, off + n);
  }
  /** Skips one string when it lies wholly in the buffer (no await: a vocabulary has 100k+ of them); false when it does not. */
  skipBufferedString(): boolean {
    const off = this.pos - this.#bufAt;
    if (off < 0 || off + 8 > this.#buf.length) return false;
    const n = this.#buf.readBigUInt64LE(off);
    if (BigInt(off + 8) + n > BigInt(this.#buf.length)) return false;
    this.pos += 8 + Number(n);
    return true;
  }
  async u32(): Promise<number> {
    return (await this.bytes(4)).readUInt32LE(0);
  }
  async u64(): Promise<bigint> {
    return (await this.bytes(8)).readBigUInt64LE(0);
  }
  async length(what: string): Promise<number> {
    const n = await this.u64();
    if (n > BigInt(MAX_HEADER_BYTES)) throw new AxonError("MANIFEST_FILE", `${this.file}: a GGUF ${what} claims ${n} elements (corrupt header)`, { path: this.file });
    return Number(n);
  }
  async string(): Promise<string> {
    const n = await this.length("string");
    return (await this.bytes(n)).toString("utf8");
  }
}

async function readValue(r: Reader, type: number, maxArray: number, file: string): Promise<GgufValue> {
  switch (type) {
    case T.U8:
      return (await r.bytes(1)).readUInt8(0);
    case T.I8:
      return (await r.bytes(1)).readInt8(0);
    case T.U16:
      return (await r.bytes(2)).readUInt16LE(0);
    case T.I16:
      return (await r.bytes(2)).readInt16LE(0);
    case T.U32:
      return r.u32();
    case T.I32:
      return (await r.bytes(4)).readInt32LE(0);
    case T.F32:
      return (await r.bytes(4)).readFloatLE(0);
    case T.BOOL:
      return (await r.bytes(1)).readUInt8(0) !== 0;
    case T.STRING:
      return r.string();
    case T.U64: {
      const v = await r.u64();
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case T.I64: {
      const v = (await r.bytes(8)).readBigInt64LE(0);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case T.F64:
      return (await r.bytes(8)).readDoubleLE(0);
    case T.ARRAY: {
      const elementType = await r.u32();
      const length = await r.length("array");
      if (length > maxArray) {
        // Skipped: fixed-size elements in one jump, strings one by one.
        const fixed = FIXED_SIZE[elementType];
        if (fixed !== undefined) await r.bytes(fixed * length);
        else if (elementType === T.STRING) {
          for (let i = 0; i < length; i++) if (!r.skipBufferedString()) await r.string();
        } else for (let i = 0; i < length; i++) await readValue(r, elementType, 0, file);
        return { type: "array", elementType, length };
      }
      const out: GgufValue[] = [];
      for (let i = 0; i < length; i++) out.push(await readValue(r, elementType, maxArray, file));
      return out;
    }
    default:
      throw new AxonError("MANIFEST_FILE", `${file}: unknown GGUF value type ${type} at byte ${r.pos - 4}`, { path: file });
  }
}

/** Reads `file`'s GGUF header; MANIFEST_FILE for a file that is not GGUF or whose header is cut short. */
export async function readGgufHeader(file: string, opts: { maxArray?: number } = {}): Promise<GgufHeader> {
  const fh = await open(file, "r");
  try {
    const size = (await fh.stat()).size;
    const r = new Reader(fh, size, file);
    if (size < 4 || (await r.u32()) !== MAGIC) throw new AxonError("MANIFEST_FILE", `${file}: not a GGUF file (it does not start with "GGUF")`, { path: file });
    const version = await r.u32();
    if (version < 2 || version > 3) throw new AxonError("MANIFEST_FILE", `${file}: GGUF version ${version} is not supported (2 and 3 are)`, { path: file });
    const tensorCount = await r.u64();
    const keys = await r.length("key count");
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < keys; i++) {
      const key = await r.string();
      const type = await r.u32();
      metadata.set(key, await readValue(r, type, opts.maxArray ?? 64, file));
    }
    return { version, tensorCount, metadata };
  } finally {
    await fh.close();
  }
}

/** What a manifest takes from a GGUF header. */
export interface GgufSummary {
  architecture?: string;
  /** `general.name`. */
  name?: string;
  contextLength?: number;
  chatTemplate?: string;
  /** `general.file_type` as llama.cpp names it (Q4_K_M, F16 ...), when known. */
  quantization?: string;
  license?: string;
}

const FILE_TYPES: Record<number, string> = { 0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16" };

export function summarizeGguf(h: GgufHeader): GgufSummary {
  const str = (k: string) => (typeof h.metadata.get(k) === "string" ? (h.metadata.get(k) as string) : undefined);
  const num = (k: string) => (typeof h.metadata.get(k) === "number" ? (h.metadata.get(k) as number) : undefined);
  const architecture = str("general.architecture");
  const fileType = num("general.file_type");
  const out: GgufSummary = {};
  if (architecture) out.architecture = architecture;
  const name = str("general.name");
  if (name) out.name = name;
  const ctx = architecture ? num(`${architecture}.context_length`) : undefined;
  if (ctx && Number.isSafeInteger(ctx) && ctx > 0) out.contextLength = ctx;
  const template = str("tokenizer.chat_template");
  if (template) out.chatTemplate = template;
  if (fileType !== undefined && FILE_TYPES[fileType]) out.quantization = FILE_TYPES[fileType];
  const license = str("general.license");
  if (license) out.license = license;
  return out;
}

/** What a GGUF model file contributes to its manifest: the LLM spec, tags and license. */
export interface GgufManifestFacts {
  llm: { task: "text-generation"; context_length?: number; chat_template?: string };
  tags: string[];
  license?: string;
}

/** Reads `file`'s header and turns it into manifest facts (see GgufManifestFacts). */
export async function ggufManifestFacts(file: string): Promise<GgufManifestFacts> {
  const g = summarizeGguf(await readGgufHeader(file));
  const llm: GgufManifestFacts["llm"] = { task: "text-generation" };
  if (g.contextLength) llm.context_length = g.contextLength;
  if (g.chatTemplate) llm.chat_template = g.chatTemplate;
  const tags = ["text-generation", ...(g.architecture ? [g.architecture] : []), ...(g.quantization ? [g.quantization.toLowerCase()] : [])];
  return { llm, tags, ...(g.license ? { license: g.license } : {}) };
}
