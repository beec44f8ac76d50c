// The KServe v2 JSON fast path (native/src/ort/kserve_json.cc, ort_kserve_json.cc), end to end: a real
// `axon serve` child process driven with fetch and raw sockets. Its contract: whenever the codec
// answers a request, the body is byte-for-byte what the general JS path writes for it; whatever it
// declines, the JS path answers exactly as before.
//
// "fast" is a request body B; "general" is B with `"parameters":{}` added at the top level (the
// codec declines any top-level parameters, the JS path reads an empty object as none). The same
// codec also runs in this process (the model's kserve-v2-json capability, loaded with runMode
// "inline"), which says for each body whether the fast path takes it and what it answers, so that
// every comparison below is between the codec's bytes and the JS path's.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Axon, Runtime, Tensor, seedDemoModels, type Model } from "mlos";
import { tryLoadNative, tryLoadOrt } from "../bindings/native.js";
import { KSERVE_JSON_CODEC, type KserveNativeCodec } from "../src/protocol/kserve.js";
import { mulberry32 } from "../src/tools/make-demo-models.js";
import { freePort } from "./helpers/registry.js";
import { startServer, stop, type Served } from "./helpers/axon-serve.js";

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "bin", "run.js");
const native = tryLoadNative();
const skipNative = native && typeof native.kserveNumberText === "function" ? false : "the native addon (with kserveNumberText) is unavailable";
const skip = tryLoadOrt() ? false : "ONNX Runtime is unavailable";

// ---- numbers as the codec writes them ------------------------------------------------------------

describe("kserveNumberText: the codec's numbers are JSON.stringify's", { skip: skipNative }, () => {
  const text = (values: ArrayLike<number>) => native!.kserveNumberText(Float64Array.from(values));
  const js = (values: ArrayLike<number>) => JSON.stringify(Array.from(values)).slice(1, -1);

  /** Compares the two texts of `values`; on a mismatch, names the first value that differs. */
  function same(values: Float64Array, what: string): void {
    const a = native!.kserveNumberText(values);
    const b = js(values);
    if (a === b) return;
    const as = a.split(",");
    const bs = b.split(",");
    const view = new DataView(values.buffer, values.byteOffset, values.byteLength);
    for (let i = 0; i < values.length; i++) {
      if (as[i] !== bs[i]) {
        const bits = view.getBigUint64(i * 8, true).toString(16).padStart(16, "0");
        assert.fail(`${what}: value ${i} (bits 0x${bits}) is written "${as[i]}", JSON.stringify writes "${bs[i]}"`);
      }
    }
    assert.fail(`${what}: the texts differ (${a.length} vs ${b.length} characters) but no single value does`);
  }

  it("writes the switch points, signs and specials as JS does", () => {
    assert.equal(text([]), "");
    assert.equal(text([1e21, 1e20, 1e-7, 1e-6, -0, 0, NaN, Infinity, -Infinity, 0.1, 123.456, 5e-324, 2 ** 53 + 2]),
      "1e+21,100000000000000000000,1e-7,0.000001,0,0,null,null,null,0.1,123.456,5e-324,9007199254740994");
    assert.equal(text([Number.MAX_VALUE, -Number.MIN_VALUE, 1.7976931348623157e308]), js([Number.MAX_VALUE, -Number.MIN_VALUE, 1.7976931348623157e308]));
  });

  it("matches JSON.stringify on a million values: float32s, doubles, bit patterns, integers, powers of ten, denormals", () => {
    const r = mulberry32(20261201);
    const values: number[] = [];
    const sign = () => (r() < 0.5 ? -1 : 1);
    const bits64 = new DataView(new ArrayBuffer(8));
    const fromBits64 = (hi: number, lo: number) => {
      bits64.setUint32(0, lo >>> 0, true);
      bits64.setUint32(4, hi >>> 0, true);
      return bits64.getFloat64(0, true);
    };
    const bits32 = new DataView(new ArrayBuffer(4));
    const fromBits32 = (b: number) => {
      bits32.setUint32(0, b >>> 0, true);
      return bits32.getFloat32(0, true);
    };
    const next = (v: number, up: boolean) => {
      // The neighbouring double (v finite, not zero).
      bits64.setFloat64(0, v, true);
      const b = bits64.getBigUint64(0, true);
      bits64.setBigUint64(0, (v > 0) === up ? b + 1n : b - 1n, true);
      return bits64.getFloat64(0, true);
    };
    const r32 = () => Math.floor(r() * 4294967296);
    // Powers of ten and their neighbours (the 1e21 and 1e-7 switch points among them), as doubles and float32s.
    for (let e = -330; e <= 310; e++) {
      const p = Number(`1e${e}`);
      if (!Number.isFinite(p) || p === 0) continue;
      for (const v of [p, next(p, true), next(p, false), next(next(p, true), true), 9 * p, 9.999999999999999 * p, 1.5 * p, 1.0000000000000002 * p]) {
        values.push(v, -v, Math.fround(v), -Math.fround(v));
      }
    }
    for (const base of [1e21, 1e-7, 1e-6, 1e20]) {
      let lo = base;
      let hi = base;
      for (let i = 0; i < 2000; i++) {
        lo = next(lo, false);
        hi = next(hi, true);
        values.push(lo, hi, -lo, -hi);
      }
    }
    // The specials.
    const specials = [-0, 0, NaN, Infinity, -Infinity, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, -Number.MIN_VALUE,
      Number.EPSILON, 2 ** 53, 2 ** 53 - 1, 2 ** 53 + 1, 2 ** 53 + 2, -(2 ** 53 - 1), -(2 ** 53 + 2), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER,
      2.2250738585072014e-308, 2.225073858507201e-308, 4.9406564584124654e-324, 1e-323, 3.4028234663852886e38, 1.1754943508222875e-38, 1.401298464324817e-45,
      2 ** 63, 2 ** 64, -(2 ** 63), 1e21 - 65536, 999999999999999900000, 123456789012345680000, 0.000001, 0.0000001, 1.2345e-7, 5e-7, 0.1, 0.2, 0.30000000000000004, 1 / 3];
    for (const s of specials) values.push(s, Math.fround(s));
    // Float32 values over 80 decades (what an FP32 output holds), as the codec sees them: doubles.
    for (let i = 0; i < 235_000; i++) values.push(Math.fround(sign() * 10 ** (r() * 80 - 40) * (1 + r())));
    // Doubles: over the whole range, and the usual [0, 1) and [-1000, 1000) ones.
    for (let i = 0; i < 150_000; i++) values.push(sign() * 10 ** (r() * 616 - 308) * (1 + r()));
    for (let i = 0; i < 50_000; i++) values.push(r());
    for (let i = 0; i < 50_000; i++) values.push(r() * 2000 - 1000);
    // Random 64-bit and 32-bit patterns: NaNs, infinities, denormals and everything else.
    for (let i = 0; i < 200_000; i++) values.push(fromBits64(r32(), r32()));
    for (let i = 0; i < 100_000; i++) values.push(fromBits32(r32()));
    // Exponent all ones (NaN payloads, infinities) and all zeros (denormals, zeros), both signs.
    for (let i = 0; i < 20_000; i++) values.push(fromBits64((r() < 0.5 ? 0x7ff00000 : 0xfff00000) | (r32() & 0xfffff), i % 7 === 0 ? 0 : r32()));
    for (let i = 0; i < 30_000; i++) values.push(fromBits64((r() < 0.5 ? 0 : 0x80000000) | (r32() & 0xfffff), r32()));
    // Integers: small, up to 2^53, past it, and float32 integers.
    for (let i = 0; i < 40_000; i++) values.push(sign() * Math.floor(r() * 1000));
    for (let i = 0; i < 40_000; i++) values.push(sign() * Math.floor(r() * 2 ** 53));
    for (let i = 0; i < 20_000; i++) values.push(sign() * Math.floor(r() * 2 ** 53) * 2 ** Math.floor(r() * 30));
    for (let i = 0; i < 10_000; i++) values.push(Math.fround(sign() * Math.floor(r() * 2 ** 24)));
    while (values.length < 1_000_000) values.push(fromBits64(r32(), r32()));
    assert.ok(values.length <= 1_000_000, `${values.length}`);
    const all = Float64Array.from(values);
    assert.equal(all.length, 1_000_000);
    assert.ok(all.some((v) => Number.isNaN(v)) && all.some((v) => v === Infinity) && all.some((v) => Object.is(v, -0)) && all.some((v) => v !== 0 && Math.abs(v) < 2.2250738585072014e-308), "the sample holds NaN, Infinity, -0 and denormals");
    for (let at = 0; at < all.length; at += 100_000) same(all.subarray(at, at + 100_000), `values ${at}..${at + 100_000}`);
    assert.equal(native!.kserveNumberText(all).split(",").length, all.length);
  });
});

// ---- the server ------------------------------------------------------------------------------------


interface Answer {
  status: number;
  type: string | null;
  text: string;
}

/** `body` with `"parameters":{}` added at the top level: the same request, through the general path. */
function general(body: string): string {
  const m = /\}[ \t\r\n]*$/.exec(body);
  assert.ok(m, `not an object: ${body.slice(-40)}`);
  const inner = body.slice(0, m.index);
  const empty = /\{[ \t\r\n]*$/.test(inner);
  return `${inner}${empty ? "" : ","}"parameters":{}${body.slice(m.index)}`;
}

/** Prometheus text: the value of `name` with exactly `labels`, undefined when no such line. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const kv of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[kv[1]!] = kv[2]!;
    const keys = Object.keys(labels);
    if (Object.keys(got).length === keys.length && keys.every((k) => got[k] === labels[k])) return Number(m[3]);
  }
  return undefined;
}

// ---- request bodies --------------------------------------------------------------------------------

/** Writes JSON text with random whitespace, key order and number spellings (all valid JSON). */
class Writer {
  constructor(readonly r: () => number) {}
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }
  ws(): string {
    return this.r() < 0.6 ? "" : this.pick([" ", "\n", "\t", "\r\n", "  ", " \t ", "\n    "]);
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.r() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
  /** An object of pre-written values, its keys in this order. */
  object(entries: Array<[string, string]>): string {
    if (entries.length === 0) return `{${this.ws()}}`;
    return `{${entries.map(([k, v]) => `${this.ws()}${JSON.stringify(k)}${this.ws()}:${this.ws()}${v}${this.ws()}`).join(",")}}`;
  }
  array(items: string[]): string {
    if (items.length === 0) return `[${this.ws()}]`;
    return `[${items.map((v) => `${this.ws()}${v}${this.ws()}`).join(",")}]`;
  }
  /** A finite double in one of several spellings JSON allows. */
  number(v: number): string {
    const plain = JSON.stringify(v);
    if (Object.is(v, -0)) return this.pick(["-0", "-0.0", "-0e0", "-0E+3", "-0.000e-7"]);
    const k = this.r();
    if (k < 0.55) return plain;
    const exp = v.toExponential(); // d[.ddd]e±x: valid JSON
    if (k < 0.65) return exp;
    if (k < 0.7) return exp.toUpperCase();
    if (k < 0.8) return v.toPrecision(21 - Math.floor(this.r() * 4)); // long digit strings, correctly rounded by both
    if (k < 0.9) {
      // All the digits as an integer, the exponent shifted: 1.2345 -> 12345e-4.
      const [mant, e] = exp.split("e") as [string, string];
      const neg = mant.startsWith("-");
      const digits = mant.replace("-", "").replace(".", "");
      return `${neg ? "-" : ""}${digits}e${Number(e) - (digits.length - 1)}`;
    }
    return plain.includes(".") || plain.includes("e") ? plain.replace(/^(-?\d+\.\d+)(e.*)?$/, "$1000$2") : `${plain}.0`;
  }
  /** An integer in one of several spellings JSON allows (all integral once parsed). */
  integer(v: number): string {
    const k = this.r();
    if (k < 0.6 || !Number.isSafeInteger(v * 10)) return String(v);
    if (k < 0.7) return `${v}.0`;
    if (k < 0.8) return `${v}e0`;
    if (k < 0.9) return `${v * 10}e-1`;
    return v === 0 ? "-0" : `${v * 100}E-2`;
  }
  /** A random JSON value (for keys both paths ignore): escapes, unicode, nesting. */
  json(depth = 0): string {
    const k = this.r();
    if (depth > 3 || k < 0.45) {
      return this.pick<() => string>([
        () => "null", () => "true", () => "false",
        () => this.number(this.r() * 1e6 - 5e5),
        () => this.number((this.r() - 0.5) * 10 ** Math.floor(this.r() * 600 - 300)),
        () => JSON.stringify(this.pick(["", "plain", "tab\there", "quote\"q", "back\\slash", "nl\n", "é ü", "😀", "\u0000\u001f", "\u2028"])),
        () => `"\\u00e9\\ud83d\\ude00\\/\\b\\f\\r"`,
        () => `"raw é and 漢字"`,
      ])();
    }
    if (k < 0.7) return this.array(Array.from({ length: Math.floor(this.r() * 4) }, () => this.json(depth + 1)));
    return this.object(Array.from({ length: Math.floor(this.r() * 4) }, (_, i) => [this.pick(["a", "b", "inputs", "id", "parameters", "outputs", "name", "data", "shape"]) + i, this.json(depth + 1)]));
  }
  /** Flat data, rows, or random nesting (with empty arrays between): both paths flatten row-major. */
  data(cells: string[], rowLength: number): string {
    const k = this.r();
    if (k < 0.4) return this.array(cells);
    if (k < 0.8) {
      const rows: string[] = [];
      for (let i = 0; i < cells.length; i += rowLength) rows.push(this.array(cells.slice(i, i + rowLength)));
      return this.array(rows);
    }
    const group = (xs: string[], depth: number): string => {
      const items: string[] = [];
      let i = 0;
      while (i < xs.length) {
        const n = 1 + Math.floor(this.r() * 3);
        const part = xs.slice(i, i + n);
        items.push(depth < 3 && this.r() < 0.4 ? group(part, depth + 1) : part.join(","));
        if (this.r() < 0.1) items.push("[]");
        i += n;
      }
      return `[${items.join(",")}]`;
    };
    return group(cells, 0);
  }
}

const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).filter((c) => c !== '"' && c !== "\\");

/** A request as the random generator makes it: the body, and what it should run. */
interface Made {
  body: string;
  shape: number[];
  values: number[];
  id: string | undefined;
}

function randomRequest(w: Writer, input: { name: string; datatype: string }, cell: () => string, rows: number, cols: number): Made {
  const r = w.r;
  const cells = Array.from({ length: rows * cols }, cell);
  const shape = [rows, cols];
  const tensor: Array<[string, string]> = [
    ["name", JSON.stringify(input.name)],
    ["datatype", JSON.stringify(input.datatype)],
    ["shape", w.array(shape.map((d) => w.integer(d)))],
    ["data", w.data(cells, cols)],
  ];
  for (let i = 0, n = r() < 0.3 ? 1 + Math.floor(r() * 2) : 0; i < n; i++) tensor.push([w.pick(["extra", "note", "tags", "contents_hint"]) + i, w.json()]);
  const top: Array<[string, string]> = [["inputs", w.array([w.object(w.shuffle(tensor))])]];
  let id: string | undefined;
  const k = r();
  if (k < 0.45) {
    id = Array.from({ length: Math.floor(r() * 24) }, () => w.pick(PRINTABLE)).join("");
    top.push(["id", JSON.stringify(id)]);
  } else if (k < 0.6) {
    top.push(["id", w.pick(["7", "null", "true", "[1,\"a\"]", "{\"x\":\"y\"}", "-1.5e3"])]);
  }
  for (let i = 0, n = Math.floor(r() * 3.5); i < n; i++) top.push([w.pick(["meta", "trace", "request_id", "Inputs", "ID", "OUTPUTS", "Parameters", "_", "x"]) + `_${i}`, w.json()]);
  const body = `${w.ws()}${w.object(w.shuffle(top))}${w.ws()}`;
  // What JSON.parse makes of it: the values the model runs on.
  const parsed = JSON.parse(body) as { inputs: Array<{ data: unknown }> };
  const values = (parsed.inputs[0]!.data as unknown[]).flat(Infinity) as number[];
  assert.equal(values.length, rows * cols);
  return { body, shape, values, id };
}

/** A cell of an FP32 input: everyday values, tiny and huge magnitudes, zeros, past float32's range. */
function floatCell(w: Writer): string {
  const r = w.r;
  const s = r() < 0.5 ? -1 : 1;
  const k = r();
  let v: number;
  if (k < 0.4) v = r() * 2 - 1;
  else if (k < 0.55) v = r() * 200 - 100;
  else if (k < 0.65) v = Math.floor(r() * 21) - 10;
  else if (k < 0.75) v = s * 10 ** (r() * 25 - 45); // float32 denormals and below
  else if (k < 0.85) v = s * 10 ** (r() * 19 + 20); // up to past float32's largest
  else if (k < 0.9) v = r() < 0.5 ? 0 : -0;
  else v = s * 10 ** (r() * 600 - 300); // any double: infinities and zeros in float32
  return w.number(v);
}

describe("the KServe v2 JSON fast path over HTTP", { skip }, () => {
  let home: string;
  let server: Served;
  let runtime: Runtime;
  let mlp: Model; // in this process, runMode "inline": the same codec, run directly
  let embedder: Model;

  const post = async (p: string, body: string | Uint8Array): Promise<Answer> => {
    const res = await fetch(`${server.base}${p}`, { method: "POST", body });
    return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
  };
  /** The fast path's answer to `body` in this process, or undefined when the codec declines it. */
  const encoded = (model: Model, name: string, body: string | Uint8Array, version = "1.0.0"): string | undefined => {
    const out = model.capability<KserveNativeCodec>(KSERVE_JSON_CODEC)!.runSync(typeof body === "string" ? Buffer.from(body) : body, name, version);
    return out === undefined ? undefined : Buffer.from(out).toString("utf8"); // a view of a reused buffer: copied now
  };
  const details = async (name: string) => ((await (await fetch(`${server.base}/api/v1/models/${name}`)).json()) as { details: { inline?: boolean } }).details;
  const metricsText = async () => (await fetch(`${server.base}/metrics`)).text();
  const poolBytes = async (kind: "used" | "high_water") => metric(await metricsText(), "mlos_pool_bytes", { kind })!;

  /** Sends `body` until the server's run policy keeps the model on the calling thread (where the fast path is taken). */
  async function ensureInline(name: string, body: string): Promise<void> {
    for (let i = 0; i < 400; i++) {
      if (i % 4 === 0 && (await details(name)).inline === true) return;
      const a = await post(`/v2/models/${name}/infer`, body);
      assert.equal(a.status, 200, a.text);
    }
    assert.fail(`model ${name} never went inline: ${JSON.stringify(await details(name))}`);
  }

  const mlpBody = (rows: number, seed: number) => {
    const r = mulberry32(seed);
    return `{"inputs":[{"name":"x","shape":[${rows},4],"datatype":"FP32","data":[${Array.from({ length: rows }, () => `[${[0, 1, 2, 3].map(() => Math.floor(r() * 10)).join(",")}]`).join(",")}]}]}`;
  };
  const SMALL = '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1,2,0.25]}]}';
  const SMALL_IDS = '{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","data":[[1,2,3]]}]}';

  /** Checks an MLP answer against the library's own run of the same values. */
  async function checkMlp(text: string, made: { shape: number[]; values: number[]; id: string | undefined }, name = "mlp"): Promise<void> {
    const body = JSON.parse(text) as { model_name: string; model_version: string; id?: string; outputs: Array<{ name: string; datatype: string; shape: number[]; data: Array<number | null> }> };
    assert.equal(body.model_name, name);
    assert.equal(body.model_version, "1.0.0");
    assert.equal(body.id, made.id);
    assert.equal(body.outputs.length, 1);
    const y = body.outputs[0]!;
    assert.equal(y.name, "y");
    assert.equal(y.datatype, "FP32");
    assert.deepEqual(y.shape, [made.shape[0], 3]);
    const direct = await mlp.infer({ x: Tensor.float32(made.shape, Float32Array.from(made.values)) });
    const want = Float32Array.from(direct.y!.data as Float32Array); // copied: a pool tensor's view goes with it
    direct.y!.dispose();
    assert.equal(y.data.length, want.length);
    y.data.forEach((v, i) => {
      const w = want[i]!;
      if (!Number.isFinite(w)) assert.equal(v, null, `element ${i}: ${w} is written null`);
      else assert.ok(v !== null && Math.abs(v - w) <= 1e-6 * Math.max(1, Math.abs(w)), `element ${i}: ${v} vs the library's ${w}`);
    });
  }

  before(async () => {
    home = mkdtempSync(path.join(tmpdir(), "mlos-fast-"));
    await seedDemoModels(new Axon({ home }));
    // No batching: a batched model's requests wait for others, and the fast path runs only inline.
    // "classifier" is the same model (one session) under a second name.
    server = await startServer(home, ["--no-batching", "--model", "demo/mlp@1", "--model", "demo/embedder@1", "--model", "classifier=demo/mlp@1"]);
    runtime = new Runtime({ axon: new Axon({ home }) });
    mlp = await runtime.load("demo/mlp@1.0.0", { runMode: "inline" });
    embedder = await runtime.load("demo/embedder@1.0.0", { runMode: "inline" });
    // The run policy measures 16 runs before it goes inline, and takes inline requests up to 4x the
    // largest input it measured: a 3000-row request among them lets the large-response tests run inline.
    assert.equal((await post("/v2/models/mlp/infer", mlpBody(3000, 1))).status, 200);
    await ensureInline("mlp", SMALL);
    await ensureInline("embedder", SMALL_IDS);
  });
  after(async () => {
    await mlp?.dispose();
    await embedder?.dispose();
    if (server) assert.equal(await stop(server), 0, `serve exits cleanly on SIGTERM: ${server.stderr()}`);
  });

  it("serves the demo models with the signatures the requests below are made for", async () => {
    const meta = async (n: string) => (await (await fetch(`${server.base}/v2/models/${n}`)).json()) as { inputs: unknown; outputs: unknown };
    const m = await meta("mlp");
    assert.deepEqual(m.inputs, [{ name: "x", datatype: "FP32", shape: [-1, 4] }]);
    assert.deepEqual(m.outputs, [{ name: "y", datatype: "FP32", shape: [-1, 3] }]);
    const e = await meta("embedder");
    assert.deepEqual(e.inputs, [{ name: "input_ids", datatype: "INT64", shape: [-1, -1] }]);
    assert.deepEqual(e.outputs, [{ name: "embedding", datatype: "FP32", shape: [-1, 128] }]);
    assert.equal((await details("mlp")).inline, true);
    assert.equal((await details("embedder")).inline, true);
  });

  it("answers 300 random MLP requests exactly as the general path does, with the library's outputs", async () => {
    await ensureInline("mlp", SMALL);
    const w = new Writer(mulberry32(7));
    for (let i = 0; i < 300; i++) {
      const made = randomRequest(w, { name: "x", datatype: "FP32" }, () => floatCell(w), 1 + Math.floor(w.r() * 8), 4);
      const mine = encoded(mlp, "mlp", made.body);
      assert.ok(mine !== undefined, `the codec takes request ${i}: ${made.body}`);
      const [fast, gen] = await Promise.all([post("/v2/models/mlp/infer", made.body), post("/v2/models/mlp/infer", general(made.body))]);
      assert.equal(fast.status, 200, `${made.body}\n-> ${fast.text}`);
      assert.equal(gen.status, 200, `${general(made.body)}\n-> ${gen.text}`);
      assert.equal(fast.type, "application/json");
      assert.equal(gen.type, "application/json");
      assert.equal(fast.text, gen.text, `request ${i}: ${made.body}`);
      assert.equal(mine, gen.text, `request ${i}: the codec's bytes are the general path's: ${made.body}`);
      await checkMlp(fast.text, made);
    }
  });

  it("answers 120 random embedder requests (INT64 inputs) exactly as the general path does", async () => {
    await ensureInline("embedder", SMALL_IDS);
    const w = new Writer(mulberry32(11));
    for (let i = 0; i < 120; i++) {
      const id = () => w.integer(w.r() < 0.85 ? Math.floor(w.r() * 2000) : -1 - Math.floor(w.r() * 2000)); // negative ids count from the end in Gather
      const rows = 1 + Math.floor(w.r() * 4);
      const seq = 1 + Math.floor(w.r() * 10);
      const made = randomRequest(w, { name: "input_ids", datatype: "INT64" }, id, rows, seq);
      const mine = encoded(embedder, "embedder", made.body);
      assert.ok(mine !== undefined, `the codec takes request ${i}: ${made.body}`);
      const [fast, gen] = await Promise.all([post("/v2/models/embedder/infer", made.body), post("/v2/models/embedder/infer", general(made.body))]);
      assert.equal(fast.status, 200, fast.text);
      assert.equal(gen.status, 200, gen.text);
      assert.equal(fast.text, gen.text, `request ${i}: ${made.body}`);
      assert.equal(mine, gen.text, `request ${i}: ${made.body}`);
      const body = JSON.parse(fast.text) as { id?: string; outputs: Array<{ name: string; datatype: string; shape: number[]; data: number[] }> };
      assert.equal(body.id, made.id);
      const out = body.outputs[0]!;
      assert.deepEqual([out.name, out.datatype, out.shape], ["embedding", "FP32", [rows, 128]]);
      const direct = await embedder.infer({ input_ids: Tensor.int64(made.shape, BigInt64Array.from(made.values, (v) => BigInt(v))) });
      const want = Float32Array.from(direct.embedding!.data as Float32Array);
      direct.embedding!.dispose();
      out.data.forEach((v, j) => assert.ok(Math.abs(v - want[j]!) <= 1e-6 * Math.max(1, Math.abs(want[j]!)), `request ${i} element ${j}: ${v} vs ${want[j]}`));
    }
  });

  it("takes the edge cases the codec accepts: empty batches, empty ids, skipped values with invalid UTF-8 or deep nesting", async () => {
    await ensureInline("mlp", SMALL);
    await ensureInline("embedder", SMALL_IDS);
    const cases: Array<[string, string | Uint8Array]> = [
      ["mlp", '{"inputs":[{"name":"x","shape":[0,4],"datatype":"FP32","data":[]}]}'],
      ["mlp", '{"inputs":[{"name":"x","shape":[-0,4],"datatype":"FP32","data":[[],[]]}]}'],
      ["mlp", '{"id":"","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'],
      ["mlp", '{"id":"\x7f~ !#$%&\'()*+,-./:;<=>?@[]^_`{|}","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'],
      ["mlp", '{"id":5,"id":"second","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'],
      ["mlp", '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5e-324,-1e-310,3.4028235677973366e38,-3.4028234663852886e38]}]}'],
      ["mlp", '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1e39,-1e39,1e308,-1.7976931348623157e308]}]}'],
      ["mlp", '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.1000000000000000055511151231257827021181583404541015625,1.00000005960464477539062500000001,0.99999997019767761230468749999999,2.5e-1]}]}'],
      ["mlp", `{"deep":${"[".repeat(60)}${"]".repeat(60)},"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":${"[".repeat(60)}1,2,3,4${"]".repeat(60)}}]}`],
      ["mlp", Buffer.concat([Buffer.from('{"note":"'), Buffer.from([0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]), Buffer.from('","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}')])],
      ["mlp", '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"contents":{"fp32_contents":[9,9,9,9]}}]}'],
      ["classifier", '{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}],"id":"c"}'],
      ["embedder", '{"inputs":[{"name":"input_ids","shape":[1,0],"datatype":"INT64","data":[]}]}'],
      ["embedder", '{"inputs":[{"name":"input_ids","shape":[0,5],"datatype":"INT64","data":[]}]}'],
      ["embedder", '{"inputs":[{"name":"input_ids","shape":[2,2],"datatype":"INT64","data":[-2000,1999,-0,1.0e3]}]}'],
    ];
    for (const [model, body] of cases) {
      const shown = Buffer.from(body).toString("latin1");
      const mine = encoded(model === "embedder" ? embedder : mlp, model, body);
      assert.ok(mine !== undefined, `the codec takes ${shown}`);
      const gBody = typeof body === "string" ? general(body) : Buffer.concat([body.subarray(0, body.length - 1), Buffer.from(',"parameters":{}}')]);
      const [fast, gen] = await Promise.all([post(`/v2/models/${model}/infer`, body), post(`/v2/models/${model}/infer`, gBody)]);
      assert.equal(fast.status, 200, `${shown} -> ${fast.text}`);
      assert.equal(fast.text, gen.text, shown);
      assert.equal(mine, gen.text, shown);
    }
  });

  it("leaves what it declines to the general path, which answers exactly as for the same request with parameters", async () => {
    await ensureInline("mlp", SMALL);
    await ensureInline("embedder", SMALL_IDS);
    const X = '"name":"x","shape":[2,4],"datatype":"FP32"';
    const V = `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}]}`;
    const ok = await post("/v2/models/mlp/infer", V);
    assert.equal(ok.status, 200);
    assert.equal(encoded(mlp, "mlp", V), ok.text);
    // What the general path writes with a string id: JSON.stringify of its object, keys in its order.
    const withId = (id: string) => {
      const o = JSON.parse(ok.text) as { model_name: string; model_version: string; outputs: unknown };
      return JSON.stringify({ model_name: o.model_name, model_version: o.model_version, id, outputs: o.outputs });
    };
    const ids = '{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","data":[1,2,3]}]}';
    const idsOk = await post("/v2/models/embedder/infer", ids);
    assert.equal(idsOk.status, 200);
    const E = (data: string) => `{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","data":${data}}]}`;

    // [model, body, status, code or the exact body expected, whether `general(body)` is the same request]
    const cases: Array<[string, string, number, string, boolean]> = [
      // Valid, but outside the codec: the general path answers them, as the codec would have.
      ["mlp", `{"inputs":[{"name":"\\u0078","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inp\\u0075ts":[{${X},"d\\u0061ta":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"fp32","data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP\\u0033\\u0032","data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8],"parameters":{}}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"outputs":[{"name":"y"}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"parameters":{"binary_data_output":false,"priority":3}}`, 200, ok.text, false],
      ["mlp", `{"inputs":[{"name":"z"}],"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{"name":"z",${X},"data":[9],"data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":${"[".repeat(70)}1,2,3,4,5,6,7,8${"]".repeat(70)}}]}`, 200, ok.text, true],
      ["mlp", `{"deep":${"[".repeat(70)}${"]".repeat(70)},"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}]}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"a","id":7}`, 200, ok.text, true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"a\\"b"}`, 200, withId('a"b'), true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"tab\\there\\u0001"}`, 200, withId("tab\there\u0001"), true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"\\u00e9t\\u00e9"}`, 200, withId("été"), true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"été 😀"}`, 200, withId("été 😀"), true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"a","id":"b"}`, 200, withId("b"), true],
      ["embedder", E('["1","2","3"]'), 200, idsOk.text, true],
      ["embedder", `{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"int64","data":[1,2,3]}]}`, 200, idsOk.text, true],
      // Errors: the general path's status and code.
      ["mlp", "{bad", 400, "BAD_JSON", false],
      ["mlp", V.slice(0, -7), 400, "BAD_JSON", false],
      ["mlp", `\ufeff${V}`, 400, "BAD_JSON", false],
      ["mlp", `${V} x`, 400, "BAD_JSON", false],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8],}]}`, 400, "BAD_JSON", false],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,NaN]}]}`, 400, "BAD_JSON", false],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,08]}]}`, 400, "BAD_JSON", false],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"id":"raw\ttab"}`, 400, "BAD_JSON", false],
      ["mlp", "[]", 400, "BAD_REQUEST", false],
      ["mlp", '{"id":"q"}', 400, "BAD_REQUEST", true],
      ["mlp", '{"inputs":{}}', 400, "BAD_REQUEST", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,5],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10]}]}`, 400, "INPUT_SHAPE", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "INPUT_RANK", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"INT32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "INPUT_DTYPE", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64","data":[1,2,3,4,5,6,7,8]}]}`, 400, "INPUT_DTYPE", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"BYTES","data":["1","2","3","4","5","6","7","8"]}]}`, 400, "INPUT_DTYPE", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP99","data":[1,2,3,4,5,6,7,8]}]}`, 400, "BAD_DATATYPE", true],
      ["mlp", `{"inputs":[{"name":"z","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "INPUT_UNKNOWN", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]},{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}`, 400, "INPUT_UNKNOWN", true],
      ["mlp", '{"inputs":[]}', 400, "INPUT_MISSING", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]},{${X},"data":[1,2,3,4,5,6,7,8]}]}`, 400, "BAD_REQUEST", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8,9]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":[true,false,true,false,true,false,true,false]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,true]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":["1","2","3","4","5","6","7","8"]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,null]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,{"v":8}]}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{${X}}]}`, 400, "BAD_DATA", true],
      ["mlp", `{"inputs":[{"shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "BAD_TENSOR", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[-2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "BAD_SHAPE", true],
      ["mlp", `{"inputs":[{"name":"x","shape":[1.5,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "BAD_SHAPE", true],
      ["mlp", `{"inputs":[{${X},"parameters":{"binary_data_size":32}}]}`, 400, "BAD_REQUEST", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"outputs":[{"name":"nope"}]}`, 400, "OUTPUT_UNKNOWN", true],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"parameters":{"priority":"high"}}`, 400, "BAD_REQUEST", false],
      ["mlp", `{"inputs":[{${X},"data":[1,2,3,4,5,6,7,8]}],"parameters":{"timeout":1e-9}}`, 504, "RUN_TIMEOUT", false],
      ["embedder", E("[1.5,2,3]"), 400, "BAD_DATA", true],
      ["embedder", E("[1,2,true]"), 400, "BAD_DATA", true],
      ["embedder", E('[1,2,"3.0"]'), 400, "BAD_DATA", true],
      ["embedder", E("[1,2,5000]"), 500, "RUN_FAILED", true],
      ["embedder", E("[1,2,9223372036854775808]"), 500, "RUN_FAILED", true],
      ["embedder", `{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT32","data":[1,2,3]}]}`, 400, "INPUT_DTYPE", true],
    ];
    for (const [model, body, status, expected, twin] of cases) {
      assert.equal(encoded(model === "embedder" ? embedder : mlp, model, body), undefined, `the codec declines ${body}`);
      const a = await post(`/v2/models/${model}/infer`, body);
      assert.equal(a.status, status, `${body}\n-> ${a.text}`);
      assert.equal(a.type, "application/json");
      if (status === 200) {
        assert.equal(a.text, expected, body);
      } else {
        const err = JSON.parse(a.text) as { error: string; code: string };
        assert.equal(err.code, expected, `${body}\n-> ${a.text}`);
        assert.ok(typeof err.error === "string" && err.error.length > 0 && !err.error.includes("\n"));
      }
      if (twin) {
        const g = await post(`/v2/models/${model}/infer`, general(body));
        assert.equal(g.status, a.status, `${general(body)}\n-> ${g.text}`);
        assert.equal(g.text, a.text, `the general path says the same of ${body}`);
      }
    }
    assert.equal((await post("/v2/models/mlp/infer", "")).status, 400, "an empty body is the general path's BAD_REQUEST");
    // And the codec still answers the valid request afterwards (nothing from the declined ones stuck).
    assert.equal(encoded(mlp, "mlp", V), ok.text);
    assert.equal((await post("/v2/models/mlp/infer", V)).text, ok.text);
  });

  it("stays correct and healthy through 3000 concurrent requests, and counts every one in /metrics", async () => {
    await ensureInline("mlp", SMALL);
    await ensureInline("classifier", SMALL);
    const w = new Writer(mulberry32(21));
    const pool: Array<{ name: string; body: string; want: string }> = [];
    for (let i = 0; i < 64; i++) {
      const name = i % 5 === 4 ? "classifier" : "mlp";
      const made = randomRequest(w, { name: "x", datatype: "FP32" }, () => floatCell(w), 1 + Math.floor(w.r() * 8), 4);
      const want = encoded(mlp, name, made.body);
      assert.ok(want !== undefined, made.body);
      pool.push({ name, body: made.body, want });
    }
    const labels = (model: string) => ({ model: `${model}@1.0.0`, route: "kserve", outcome: "ok" });
    const counts = (text: string, model: string) => ({
      ok: metric(text, "mlos_requests_total", labels(model)) ?? 0,
      clientError: metric(text, "mlos_requests_total", { ...labels(model), outcome: "client_error" }) ?? 0,
      serverError: metric(text, "mlos_requests_total", { ...labels(model), outcome: "server_error" }) ?? 0,
      total: metric(text, "mlos_request_duration_seconds_count", { model: `${model}@1.0.0`, phase: "total" }) ?? 0,
      compute: metric(text, "mlos_request_duration_seconds_count", { model: `${model}@1.0.0`, phase: "compute" }) ?? 0,
      batches: metric(text, "mlos_batch_size_count", { model: `${model}@1.0.0` }) ?? 0,
    });
    const before = await metricsText();
    const beforeUsed = metric(before, "mlos_pool_bytes", { kind: "used" });
    const N = 3000;
    const sent = { mlp: 0, classifier: 0 };
    let next = 0;
    const wrong: string[] = [];
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < N) {
        const p = pool[next++ % pool.length]!;
        const a = await post(`/v2/models/${p.name}/infer`, p.body);
        sent[p.name as "mlp" | "classifier"]++;
        if (a.status !== 200 || a.text !== p.want) wrong.push(`${p.name} ${p.body}\n-> ${a.status} ${a.text}\n   want ${p.want}`);
      }
    }));
    assert.deepEqual(wrong.slice(0, 3), [], `${wrong.length} of ${N} answers were wrong`);
    assert.equal(sent.mlp + sent.classifier, N);
    const afterText = await metricsText();
    for (const model of ["mlp", "classifier"] as const) {
      const b = counts(before, model);
      const a = counts(afterText, model);
      assert.ok(metric(afterText, "mlos_requests_total", labels(model)) !== undefined, `${model}: mlos_requests_total{outcome="ok"} is exported`);
      assert.equal(a.ok - b.ok, sent[model], `${model}: every successful request is counted ok`);
      assert.equal(a.total - b.total, sent[model], `${model}: every request's total time is observed`);
      assert.equal(a.compute - b.compute, sent[model], `${model}: every run's compute time is observed`);
      assert.equal(a.batches - b.batches, sent[model], `${model}: every run's batch size is observed`);
      assert.equal(a.clientError - b.clientError, 0);
      assert.equal(a.serverError - b.serverError, 0);
    }
    assert.equal(metric(afterText, "mlos_pool_bytes", { kind: "used" }), beforeUsed, "no pool memory held");
    const health = await fetch(`${server.base}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok", models: 3, ready: 3 });
    assert.equal((await fetch(`${server.base}/v2/health/ready`)).status, 200);
    const last = await post("/v2/models/mlp/infer", pool[0]!.body);
    assert.equal(last.text, pool[0]!.want);
  });

  it("answers the versioned route the same way, model_version and all", async () => {
    await ensureInline("mlp", SMALL);
    const w = new Writer(mulberry32(5));
    for (let i = 0; i < 25; i++) {
      const made = randomRequest(w, { name: "x", datatype: "FP32" }, () => floatCell(w), 1 + Math.floor(w.r() * 8), 4);
      const mine = encoded(mlp, "mlp", made.body);
      assert.ok(mine !== undefined, made.body);
      const versioned = await post("/v2/models/mlp/versions/1.0.0/infer", made.body);
      const gen = await post("/v2/models/mlp/versions/1.0.0/infer", general(made.body));
      const plain = await post("/v2/models/mlp/infer", made.body);
      assert.equal(versioned.status, 200, versioned.text);
      assert.equal(versioned.text, gen.text, made.body);
      assert.equal(versioned.text, plain.text, made.body);
      assert.equal(versioned.text, mine, made.body);
      assert.equal((JSON.parse(versioned.text) as { model_version: string }).model_version, "1.0.0");
      await checkMlp(versioned.text, made);
    }
    const missing = await post("/v2/models/mlp/versions/9.9.9/infer", SMALL);
    assert.equal(missing.status, 404, missing.text);
    assert.equal((JSON.parse(missing.text) as { code: string }).code, "MODEL_NOT_FOUND");
    assert.equal((await post("/v2/models/mlp/versions/9.9.9/infer", general(SMALL))).text, missing.text);
  });

  it("writes responses past its 16 KiB buffer (growing it, and past 1 MiB on their own) and small ones after them cleanly", async () => {
    await ensureInline("mlp", SMALL);
    // A 9000-row request: a 520 KB response. The general path would take 9000 x 28 bytes of pool
    // for its tensors (input and output), far more than it took before: the pool's high-water
    // mark staying put says the server's fast path answered it.
    const big = mlpBody(9000, 2);
    const bigWant = encoded(mlp, "mlp", big);
    assert.ok(bigWant !== undefined && bigWant.length > 16 * 1024, `${bigWant?.length}`);
    const high = await poolBytes("high_water");
    assert.ok(high < 9000 * 16, `the pool's high-water mark ${high} is below what the general path would take`);
    const fast = await post("/v2/models/mlp/infer", big);
    assert.equal(fast.status, 200);
    assert.equal(fast.text, bigWant);
    assert.equal(await poolBytes("high_water"), high, "the server's fast path answered the large request (no pool memory taken)");
    const gen = await post("/v2/models/mlp/infer", general(big));
    assert.equal(gen.text, fast.text);
    const taken = await poolBytes("high_water");
    assert.ok(taken > high && taken >= 9000 * 16, `the general path does take pool memory (what the check above relies on): ${high} -> ${taken}`);
    await checkMlp(fast.text, { shape: [9000, 4], values: (JSON.parse(big) as { inputs: Array<{ data: number[][] }> }).inputs[0]!.data.flat(), id: undefined });

    // Then, in this process and over HTTP: small, larger than the grown buffer, smaller again,
    // past 1 MiB, small; every answer whole and the general path's.
    const sequence = [1, 2, 12000, 3, 1, 500, 4000, 1, 20000, 2, 1, 7000, 1];
    for (const [i, rows] of sequence.entries()) {
      const body = mlpBody(rows, 100 + i);
      const mine = encoded(mlp, "mlp", body);
      assert.ok(mine !== undefined, `rows ${rows}`);
      const a = await post("/v2/models/mlp/infer", body);
      const g = await post("/v2/models/mlp/infer", general(body));
      assert.equal(a.status, 200);
      assert.equal(a.text.length, g.text.length, `rows ${rows}: the length`);
      assert.equal(a.text, g.text, `rows ${rows}`);
      assert.equal(mine, g.text, `rows ${rows} (in this process)`);
      const parsed = JSON.parse(a.text) as { outputs: Array<{ shape: number[]; data: number[] }> };
      assert.deepEqual(parsed.outputs[0]!.shape, [rows, 3]);
      assert.equal(parsed.outputs[0]!.data.length, rows * 3);
    }
    assert.ok(encoded(mlp, "mlp", mlpBody(20000, 1))!.length > 1 << 20, "the 20000-row response is past 1 MiB");
  });

  /**
   * A client that is not reading, with `batches` of requests written on their sockets at once;
   * other requests then overwrite the server's reused buffer before the clients read.
   */
  async function lateReaders(batches: string[][]): Promise<void> {
    await ensureInline("mlp", SMALL);
    // Grow the server's buffer, then answer large responses (from that reused buffer) to clients
    // that are not reading: the socket takes part of each, the server must keep the rest.
    assert.equal((await post("/v2/models/mlp/infer", mlpBody(9000, 3))).status, 200);
    const request = (body: string) => `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const opened = await Promise.all(batches.map(async (bodies) => {
      const sock = net.connect(server.port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => {
        sock.once("connect", resolve);
        sock.once("error", reject);
      });
      sock.pause();
      sock.write(bodies.map(request).join(""));
      return { sock, bodies };
    }));
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 20; i++) {
      const other = mlpBody(1 + (i % 4) * 1000, 50 + i);
      const a = await post("/v2/models/mlp/infer", other);
      assert.equal(a.text, encoded(mlp, "mlp", other));
    }
    for (const { sock, bodies } of opened) {
      try {
        const responses = await readResponses(sock, bodies.length);
        bodies.forEach((body, i) => {
          const want = encoded(mlp, "mlp", body) ?? encoded(mlp, "mlp", body.replace(',"parameters":{}', ""))!;
          assert.equal(responses[i]!.status, 200);
          assert.equal(responses[i]!.text.length, want.length, `response ${i} of ${bodies.length}: the length`);
          assert.equal(responses[i]!.text, want, `response ${i} of ${bodies.length} is its own, not the buffer's later contents`);
        });
      } finally {
        sock.destroy();
      }
    }
  }

  it("keeps responses intact for clients that read late", async () => {
    await lateReaders([[mlpBody(8000, 4)], [mlpBody(6000, 10)]]);
  });

  // The first request is answered asynchronously whenever the run policy has the MLP on worker
  // threads (a 3000-row request can send it there) or when it joins a batch; the requests behind
  // it on the connection must wait for it and be answered in order.
  it("answers pipelined requests sent in one packet, in order", async () => {
    await lateReaders([[mlpBody(3000, 5), SMALL, mlpBody(40, 6), general(mlpBody(2, 7)), mlpBody(1500, 8), mlpBody(1, 9)]]);
  });

  it("answers 64 connections pipelining large, small and invalid requests for 12 rounds, in order, and holds no pool memory after", async () => {
    await ensureInline("mlp", SMALL);
    const request = (body: string) => `POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    // The kinds of request, each with the answer it must get: the codec's bytes (fast path), the
    // same bytes through the general path, or a 400 naming what is wrong.
    const kinds: Array<{ body: string; status: number; want: string | RegExp }> = [];
    for (let i = 0; i < 4; i++) {
      const large = mlpBody(2000 + 500 * i, 300 + i);
      kinds.push({ body: large, status: 200, want: encoded(mlp, "mlp", large)! });
      const small = mlpBody(1 + i, 400 + i);
      kinds.push({ body: small, status: 200, want: encoded(mlp, "mlp", small)! });
      kinds.push({ body: general(small), status: 200, want: encoded(mlp, "mlp", small)! });
    }
    const invalid = [
      { body: '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2]}]}', status: 400, want: /needs 4 elements/ },
      { body: '{"inputs":[{"name":"x","shape":[100000000000,4],"datatype":"FP32","data":[1,2,3,4]}]}', status: 400, want: /shape \[100000000000, 4\] needs 400000000000 elements/ },
      { body: '{"inputs":[', status: 400, want: /not valid JSON|BAD_JSON|malformed/i },
    ];
    const before = await metricsText();
    const beforeUsed = metric(before, "mlos_pool_bytes", { kind: "used" });
    const w = mulberry32(64);
    const pick = <T,>(xs: T[]) => xs[Math.floor(w() * xs.length)]!;
    const ROUNDS = 12;
    let answered = 0;
    await Promise.all(Array.from({ length: 64 }, async (_, c) => {
      const sock = net.connect(server.port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => {
        sock.once("connect", resolve);
        sock.once("error", reject);
      });
      try {
        for (let round = 0; round < ROUNDS; round++) {
          // [large, small, invalid, small, large, small], the shape outside checks used.
          const large = () => kinds.filter((_, i) => i % 3 === 0);
          const small = () => kinds.filter((_, i) => i % 3 !== 0);
          const batch = [pick(large()), pick(small()), pick(invalid), pick(small()), pick(large()), pick(small())];
          sock.write(batch.map((k) => request(k.body)).join(""));
          const responses = await readResponses(sock, batch.length);
          sock.removeAllListeners("data");
          sock.removeAllListeners("close");
          sock.removeAllListeners("error");
          batch.forEach((k, i) => {
            const where = `connection ${c}, round ${round}, request ${i}`;
            assert.equal(responses[i]!.status, k.status, `${where}: ${responses[i]!.text.slice(0, 200)}`);
            if (typeof k.want === "string") assert.equal(responses[i]!.text, k.want, `${where}: its own answer, in order`);
            else assert.match(responses[i]!.text, k.want, where);
          });
          answered += batch.length;
        }
      } finally {
        sock.destroy();
      }
    }));
    assert.equal(answered, 64 * ROUNDS * 6);
    assert.equal(metric(await metricsText(), "mlos_pool_bytes", { kind: "used" }), beforeUsed, "the pool is back at its baseline");
    assert.equal((await post("/v2/models/mlp/infer", SMALL)).text, encoded(mlp, "mlp", SMALL));
  });
});

/** Reads `n` HTTP/1.1 responses (with Content-Length) from a socket, resuming it. */
function readResponses(sock: net.Socket, n: number): Promise<Array<{ status: number; text: string }>> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const out: Array<{ status: number; text: string }> = [];
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const split = buf.indexOf("\r\n\r\n");
        if (split < 0) return;
        const head = buf.subarray(0, split).toString("latin1");
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1]);
        if (!Number.isSafeInteger(length)) return reject(new Error(`no Content-Length in ${head}`));
        if (buf.length < split + 4 + length) return;
        out.push({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), text: buf.subarray(split + 4, split + 4 + length).toString("utf8") });
        buf = buf.subarray(split + 4 + length);
        if (out.length === n) return resolve(out);
      }
    });
    sock.once("error", reject);
    sock.once("close", () => reject(new Error(`the connection closed after ${out.length} of ${n} responses`)));
    // A response that never comes fails the test instead of hanging it.
    const timer = setTimeout(() => reject(new Error(`only ${out.length} of ${n} responses in 20 s (${buf.length} bytes pending: ${buf.subarray(0, 200).toString("latin1")})`)), 20_000);
    timer.unref();
    sock.resume();
  });
}
