/**
 * Inputs and outputs as the MLOS v1 API and `axon infer` write them in JSON.
 */
import type { Axon } from "../axon/axon.js";
import type { Model } from "../core/model.js";
import { Runtime } from "../core/runtime.js";
import "../plugins/index.js"; // the built-in plugins, as every Runtime's defaults
import type { DType } from "../tensor/dtype.js";
import { getDefaultPool, type TensorPool } from "../tensor/pool.js";
import type { Tensor } from "../tensor/tensor.js";
import { HttpError } from "./http-error.js";
import { datatypeOf, jsonData, tensorFromJson } from "./kserve-codec.js";

/**
 * The MLOS v1 inference body: `inputs` as `{name: nested array}` (dtype and shape from the model's
 * signature and the array's nesting), `{name: {data, shape?, dtype?}}`, or a KServe-style list; or
 * `input`, one nested array, for a model with a single input.
 */
export function mlosInputs(model: Model, raw: unknown, pool: TensorPool): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  const sig = model.inputs;
  try {
    if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => x !== null && typeof x === "object" && !Array.isArray(x) && "name" in x)) {
      raw.forEach((t, i) => {
        const tensor = tensorFromJson(t, pool, i);
        out[(t as { name: string }).name] = tensor;
      });
      return out;
    }
    let named: Record<string, unknown>;
    if (Array.isArray(raw) || typeof raw === "number") {
      if (sig.length !== 1) throw new HttpError(400, "BAD_REQUEST", `inference: "input" (one array) needs a single-input model; this one has inputs ${sig.map((s) => s.name).join(", ")}: use "inputs": {name: array}`);
      named = { [sig[0]!.name]: raw };
    } else if (raw !== null && typeof raw === "object") {
      named = raw as Record<string, unknown>;
    } else {
      throw new HttpError(400, "BAD_REQUEST", 'inference: give "inputs" ({name: array}) or "input" (an array)');
    }
    for (const [name, value] of Object.entries(named)) {
      const spec = sig.find((s) => s.name === name);
      const v = value !== null && typeof value === "object" && !Array.isArray(value) ? (value as { data?: unknown; shape?: unknown; dtype?: unknown }) : { data: value };
      const dtype = (typeof v.dtype === "string" ? v.dtype : spec?.dtype) as DType | undefined;
      if (!dtype) throw new HttpError(400, "BAD_REQUEST", `input "${name}": the model has no such input (its inputs are ${sig.map((s) => s.name).join(", ")}) and no dtype was given`);
      const shape = Array.isArray(v.shape) ? v.shape : shapeOf(v.data);
      out[name] = tensorFromJson({ name, datatype: datatypeOf(dtype), shape, data: v.data }, pool, 0);
    }
    return out;
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  }
}

/** The shape of a nested array ([[1,2],[3,4]] -> [2, 2]); a scalar is []. */
function shapeOf(data: unknown): number[] {
  const shape: number[] = [];
  let d = data;
  while (Array.isArray(d)) {
    shape.push(d.length);
    d = d[0];
  }
  return shape;
}


/** Outputs as JSON: `{name: {dtype, shape, data}}`. */
export function outputsToJson(outputs: Record<string, Tensor>): Record<string, { dtype: string; shape: number[]; data: unknown[] }> {
  const out: Record<string, { dtype: string; shape: number[]; data: unknown[] }> = {};
  for (const [name, t] of Object.entries(outputs)) out[name] = { dtype: t.dtype, shape: [...t.shape], data: jsonData(t) };
  return out;
}

/** `axon infer` in-process: loads `target`, runs the JSON body's inputs, returns JSON outputs. */
export async function inferFromJson(target: string, body: Record<string, unknown>, axon: Axon): Promise<Record<string, unknown>> {
  const runtime = new Runtime({ axon });
  const model = await runtime.load(target);
  try {
    const inputs = mlosInputs(model, body.inputs ?? body.input, getDefaultPool());
    const outputs = await model.infer(inputs, Array.isArray(body.outputs) ? { outputs: body.outputs as string[] } : {});
    return outputsToJson(outputs);
  } finally {
    await model.dispose();
  }
}
