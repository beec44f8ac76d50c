// The decoder rewrite that lets generation compute logits for the last position only
// (src/plugins/onnxruntime/last-position-logits.ts): by default the rewritten model computes
// exactly what the original does; fed -1 it computes the last position's row; every field it does
// not touch survives; graphs it does not recognise are left alone; external data still loads.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadOrt, type NativeOrtSession } from "../bindings/native.js";
import { load } from "../src/index.js";
import { OnnxRuntimePlugin } from "../src/plugins/onnxruntime/index.js";
import { LOGITS_FROM_INPUT, rewriteForLastPositionLogits } from "../src/plugins/onnxruntime/last-position-logits.js";
import { Tensor } from "../src/tensor/tensor.js";
import { decodeModel, onnxType, OnnxModelBuilder, type OnnxModelOptions } from "../src/tools/onnx-builder.js";
import { TINY_GPT } from "../src/tools/make-tiny-gpt.js";
import { generatedDemoModel } from "./helpers/demo-language-models.js";

const { generated } = generatedDemoModel(TINY_GPT.name);
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const tempDir = async () => {
  const d = await mkdtemp(path.join(tmpdir(), "mlos-lastpos-"));
  dirs.push(d);
  return d;
};

const H = 8;
const V = 40;
const E = 30; // embedding rows (token ids below it)

/** Deterministic weights: a small hash of the index. */
const weights = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => (((i * 2654435761 + seed * 40503) >>> 0) % 1000) / 1000 - 0.5);

/**
 * A decoder-shaped toy: embeddings, then `head` builds logits from the [batch, seq, H] hidden
 * states (the LM head's weight is `lm_head` [H, V]).
 */
function toyModel(head: (m: OnnxModelBuilder, hidden: string) => void, options: OnnxModelOptions = {}): OnnxModelBuilder {
  const m = new OnnxModelBuilder({ opset: 17, metadata: { kept: "yes" }, docString: "a toy decoder", ...options });
  m.input("input_ids", "int64", ["batch_size", "sequence_length"]);
  m.initializer("embed", weights(E * H, 1), [E, H]);
  m.initializer("lm_head", weights(H * V, 2), [H, V]);
  m.node("Gather", ["embed", "input_ids"], ["hidden"], { axis: 0 }, "embed_tokens");
  m.node("Tanh", ["hidden"], ["hidden_act"], {}, "act");
  head(m, "hidden_act");
  m.output("logits", "float32", ["batch_size", "sequence_length", V]);
  return m;
}

const plainHead = (m: OnnxModelBuilder, hidden: string) => m.node("MatMul", [hidden, "lm_head"], ["logits"], {}, "lm_head_matmul");
/** Gemma-style soft-capping after the head: cap * tanh(x / cap), plus a bias. */
const cappedHead = (m: OnnxModelBuilder, hidden: string) => {
  m.initializer("cap", new Float32Array([30]), []);
  m.initializer("bias", weights(V, 3), [V]);
  m.node("MatMul", [hidden, "lm_head"], ["raw"], {}, "lm_head_matmul");
  m.node("Add", ["raw", "bias"], ["biased"], {}, "bias_add");
  m.node("Div", ["biased", "cap"], ["scaled"], {}, "cap_div");
  m.node("Tanh", ["scaled"], ["capped"], {}, "cap_tanh");
  m.node("Mul", ["capped", "cap"], ["logits"], {}, "cap_mul");
};

const ids = (rows: number[][]) => ({ dtype: "int64", shape: [rows.length, rows[0]!.length], data: BigInt64Array.from(rows.flat(), BigInt) });
const ROWS = [
  [1, 5, 9, 3, 7],
  [2, 4, 6, 8, 29],
];

async function open(file: string, bytes?: Uint8Array): Promise<NativeOrtSession> {
  return loadOrt().OrtSession.open(file, bytes ? { modelBytes: bytes } : undefined);
}

async function logitsOf(session: NativeOrtSession, feeds: Record<string, unknown>): Promise<{ shape: number[]; data: Float32Array }> {
  const out = (await session.run(feeds as never, ["logits"])) as unknown as Record<string, { shape: number[]; data: Float32Array }>;
  return { shape: [...out.logits!.shape], data: new Float32Array(out.logits!.data) };
}

for (const [name, head] of [["a plain MatMul head", plainHead], ["a soft-capped head with a bias", cappedHead]] as const) {
  test(`${name}: by default the same logits as the original; fed -1, the last position's row`, async () => {
    const dir = await tempDir();
    const file = path.join(dir, "model.onnx");
    const original = toyModel(head).toBytes();
    await writeFile(file, original);
    const rewritten = rewriteForLastPositionLogits(original);
    assert.ok(rewritten, "the graph is recognised");
    const a = await open(file);
    const b = await open(file, rewritten);
    try {
      // The signature is the original's: the new input is an overridable initializer.
      assert.deepEqual(b.inputs, a.inputs);
      assert.deepEqual(b.outputs, a.outputs);
      assert.deepEqual(b.overridable.map((o) => [o.name, o.dtype, o.shape]), [[LOGITS_FROM_INPUT, "int64", [1]]]);
      const full = await logitsOf(a, { input_ids: ids(ROWS) });
      assert.deepEqual(full.shape, [2, 5, V]);
      assert.deepEqual(await logitsOf(b, { input_ids: ids(ROWS) }), full);
      const last = await logitsOf(b, { input_ids: ids(ROWS), [LOGITS_FROM_INPUT]: { dtype: "int64", shape: [1], data: new BigInt64Array([-1n]) } });
      assert.deepEqual(last.shape, [2, 1, V]);
      for (let r = 0; r < 2; r++) assert.deepEqual(last.data.subarray(r * V, (r + 1) * V), full.data.subarray((r * 5 + 4) * V, (r * 5 + 5) * V));
    } finally {
      a.release();
      b.release();
    }
  });
}

test("every field the rewrite does not touch survives byte for byte", () => {
  const original = toyModel(cappedHead, { producerName: "toy", modelVersion: 7 }).toBytes();
  const a = decodeModel(original) as Record<string, any>;
  const b = decodeModel(Buffer.from(rewriteForLastPositionLogits(original)!)) as Record<string, any>;
  for (const k of ["ir_version", "producer_name", "model_version", "doc_string", "opset_import", "metadata_props"]) assert.deepEqual(b[k], a[k], k);
  assert.deepEqual(b.graph.output, a.graph.output);
  assert.deepEqual(b.graph.input.slice(0, -1), a.graph.input);
  assert.deepEqual(b.graph.initializer.slice(0, -3), a.graph.initializer);
  // One node more (the Slice, just before the head), the head reading its output.
  const ops = (g: any) => g.node.map((n: any) => n.op_type);
  const at = a.graph.node.findIndex((n: any) => n.name === "lm_head_matmul");
  assert.deepEqual(ops(b.graph), [...ops(a.graph).slice(0, at), "Slice", ...ops(a.graph).slice(at)]);
  assert.deepEqual(b.graph.node[at + 1].input, ["mlos_logits_hidden", "lm_head"]);
  assert.deepEqual(b.graph.node[at].input, ["hidden_act", LOGITS_FROM_INPUT, "mlos_logits_to", "mlos_logits_axes"]);
});

test("graphs it does not recognise are left alone", () => {
  // The head behind a Reshape to 2-D (the sequence axis is gone): slicing would be wrong.
  const reshaped = toyModel((m, hidden) => {
    m.initializer("flat", new BigInt64Array([-1n, BigInt(H)]), [2]);
    m.initializer("shape3", new BigInt64Array([0n, -1n, BigInt(V)]), [3]);
    m.node("Reshape", [hidden, "flat"], ["flat_hidden"]);
    m.node("MatMul", ["flat_hidden", "lm_head"], ["flat_logits"]);
    m.node("Reshape", ["flat_logits", "shape3"], ["logits"]);
  });
  assert.equal(rewriteForLastPositionLogits(reshaped.toBytes()), undefined);
  // A head whose right-hand side is not a constant.
  const dynamic = toyModel((m, hidden) => {
    m.node("Transpose", [hidden], ["hidden_t"], { perm: [0, 2, 1] });
    m.node("MatMul", [hidden, "hidden_t"], ["logits"]);
  });
  assert.equal(rewriteForLastPositionLogits(dynamic.toBytes()), undefined);
  // Old IR (no overridable initializers), old opset (Slice without inputs), a name already taken.
  assert.equal(rewriteForLastPositionLogits(toyModel(plainHead, { irVersion: 3 }).toBytes()), undefined);
  assert.equal(rewriteForLastPositionLogits(toyModel(plainHead, { opset: 9 }).toBytes()), undefined);
  const taken = toyModel((m, hidden) => {
    m.node("Identity", [hidden], [LOGITS_FROM_INPUT]);
    m.node("MatMul", [LOGITS_FROM_INPUT, "lm_head"], ["logits"]);
  });
  assert.equal(rewriteForLastPositionLogits(taken.toBytes()), undefined);
  // No logits output at all.
  const mlp = new OnnxModelBuilder({ opset: 17 });
  mlp.input("x", "float32", ["batch", H]).initializer("w", weights(H * 3, 4), [H, 3]).node("MatMul", ["x", "w"], ["y"]).output("y", "float32", ["batch", 3]);
  assert.equal(rewriteForLastPositionLogits(mlp.toBytes()), undefined);
  // Bytes that are not a model.
  assert.throws(() => rewriteForLastPositionLogits(new Uint8Array([0xff, 0xff, 0xff])));
});

test("a model whose weights are external data still loads from the rewritten bytes", async () => {
  const dir = await tempDir();
  const obj = toyModel(plainHead).toObject() as Record<string, any>;
  // lm_head's bytes move to weights.bin, as exporters write large models.
  const init = obj.graph.initializer.find((i: any) => i.name === "lm_head");
  const raw: Uint8Array = init.raw_data;
  await writeFile(path.join(dir, "weights.bin"), Buffer.concat([Buffer.alloc(64), raw]));
  delete init.raw_data;
  init.data_location = 1;
  init.external_data = [{ key: "location", value: "weights.bin" }, { key: "offset", value: "64" }, { key: "length", value: String(raw.length) }];
  const bytes = onnxType("ModelProto").encode(obj).finish();
  const file = path.join(dir, "model.onnx");
  await writeFile(file, bytes);
  const plain = path.join(dir, "plain.onnx");
  await writeFile(plain, toyModel(plainHead).toBytes());
  const rewritten = rewriteForLastPositionLogits(bytes)!;
  assert.ok(rewritten);
  const a = await open(plain);
  const b = await open(file, rewritten);
  try {
    const full = await logitsOf(a, { input_ids: ids(ROWS) });
    assert.deepEqual(await logitsOf(b, { input_ids: ids(ROWS) }), full);
  } finally {
    a.release();
    b.release();
  }
});

test("tiny-gpt loads rewritten: infer() still gives every position's logits, generation reads the last", async () => {
  const dir = await generated();
  const original = await readFile(path.join(dir, "onnx", "model.onnx"));
  assert.ok(rewriteForLastPositionLogits(original), "tiny-gpt's head is recognised");
  const loaded = await new OnnxRuntimePlugin().load({ dir, entrypoint: path.join(dir, "onnx", "model.onnx"), manifest: undefined, format: "onnx" }, {});
  assert.equal(loaded.lastPositionLogits, true);
  await loaded.unload();
  await using model = await load(dir);
  const S = 3;
  const inputs: Record<string, Tensor> = {
    input_ids: new Tensor("int64", [1, S], new BigInt64Array([15496n, 995n, 11n])),
    attention_mask: new Tensor("int64", [1, S], new BigInt64Array([1n, 1n, 1n])),
    position_ids: new Tensor("int64", [1, S], new BigInt64Array([0n, 1n, 2n])),
  };
  for (let l = 0; l < TINY_GPT.layers; l++) {
    for (const kv of ["key", "value"]) inputs[`past_key_values.${l}.${kv}`] = new Tensor("float32", [1, TINY_GPT.heads, 0, TINY_GPT.headDim], new Float32Array(0));
  }
  const out = await model.infer(inputs);
  assert.deepEqual(out.logits!.shape, [1, S, TINY_GPT.vocabSize]);
  // The engine's greedy continuation equals the argmax of the full run's last row.
  const row = (out.logits!.data as Float32Array).subarray((S - 1) * TINY_GPT.vocabSize);
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  const gen = await model.generate([15496, 995, 11], { maxTokens: 1, temperature: 0, ignoreEos: true });
  assert.deepEqual(gen.choices[0]!.tokenIds, [best]);
});

test("a language model folder whose decoder is truncated: MODEL_INVALID naming the file, nothing else changes", async () => {
  const src = await generated();
  const dir = await tempDir();
  for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]) await writeFile(path.join(dir, f), await readFile(path.join(src, f)));
  const bytes = await readFile(path.join(src, "onnx", "model.onnx"));
  await mkdir(path.join(dir, "onnx"));
  const file = path.join(dir, "onnx", "model.onnx");
  await writeFile(file, bytes.subarray(0, bytes.length >> 1));
  await assert.rejects(load(dir), (e: Error & { code?: string }) => e.code === "MODEL_INVALID" && e.message.includes(file));
  // The file is left as it was.
  assert.equal((await readFile(file)).length, bytes.length >> 1);
});
