/**
 * A model's signature (its inputs and outputs) and the checks every request passes before anything
 * runs: unknown or missing inputs, dtype, rank, each dimension (including symbolic dimensions that
 * several inputs share), and data length. Errors are {@link InputError}s that name the input, the
 * expected and the received.
 */
import { arrayLength, isDType, type DType } from "../tensor/dtype.js";
import { Tensor } from "../tensor/tensor.js";
import { InputError, MlosError } from "./errors.js";

/** One input or output: a dimension is a size, or a name / -1 where it is dynamic. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly (number | string)[];
}

export interface Signature {
  readonly inputs: readonly TensorInfo[];
  readonly outputs: readonly TensorInfo[];
}

export const formatShape = (shape: readonly (number | string)[]): string => `[${shape.join(", ")}]`;

/** Symbolic dimension values bound by a request's inputs (`batch` -> 8). */
export type DimBindings = Map<string, number>;

/**
 * Checks `inputs` against `signature.inputs`; returns the symbolic dimensions they bind. Accepts
 * anything (a caller's mistake is an error, never a crash).
 */
export function checkInputs(signature: Signature, inputs: unknown): DimBindings {
  // The hot path of every request: no strings are built unless something is wrong.
  const names = (): string => signature.inputs.map((i) => i.name).join(", ");
  if (inputs === null || typeof inputs !== "object" || Array.isArray(inputs) || inputs instanceof Tensor) {
    throw new MlosError("INPUT_INVALID", `inputs must be an object { name: Tensor }; the model's inputs are: ${names()}`);
  }
  const given = inputs as Record<string, unknown>;
  for (const key in given) {
    if (!Object.prototype.hasOwnProperty.call(given, key)) continue;
    if (!signature.inputs.some((i) => i.name === key)) {
      throw new InputError("INPUT_UNKNOWN", key, names(), key, `unknown input "${key}"; the model's inputs are: ${names()}`);
    }
  }
  const bindings: DimBindings = new Map();
  for (const spec of signature.inputs) {
    const t = Object.prototype.hasOwnProperty.call(given, spec.name) ? given[spec.name] : undefined;
    const expected = (): string => `${spec.dtype} ${formatShape(spec.shape)}`;
    if (t === undefined) {
      throw new InputError("INPUT_MISSING", spec.name, expected(), "nothing", `input "${spec.name}" is missing: the model expects ${expected()}`);
    }
    if (!(t instanceof Tensor)) {
      throw new InputError("INPUT_INVALID", spec.name, `a Tensor of ${expected()}`, describeValue(t), `input "${spec.name}" must be a Tensor of ${expected()}, got ${describeValue(t)}`);
    }
    if (t.disposed) {
      throw new InputError("INPUT_INVALID", spec.name, expected(), "a disposed tensor", `input "${spec.name}" is a disposed tensor`);
    }
    if (t.dtype !== spec.dtype) {
      throw new InputError("INPUT_DTYPE", spec.name, spec.dtype, t.dtype, `input "${spec.name}": expected dtype ${spec.dtype}, received ${t.dtype}`);
    }
    const shape = t.shape;
    if (shape.length !== spec.shape.length) {
      throw new InputError("INPUT_RANK", spec.name, formatShape(spec.shape), formatShape(shape), `input "${spec.name}": expected rank ${spec.shape.length} ${formatShape(spec.shape)}, received rank ${shape.length} ${formatShape(shape)}`);
    }
    for (let d = 0; d < shape.length; d++) {
      const want = spec.shape[d]!;
      const got = shape[d]!;
      if (typeof want === "number") {
        if (want >= 0 && want !== got) {
          throw new InputError("INPUT_SHAPE", spec.name, formatShape(spec.shape), formatShape(shape), `input "${spec.name}": dimension ${d} must be ${want}, received ${got} (expected ${formatShape(spec.shape)}, received ${formatShape(shape)})`);
        }
      } else {
        const bound = bindings.get(want);
        if (bound === undefined) {
          bindings.set(want, got);
        } else if (bound !== got) {
          const other = signature.inputs.find((i) => i.shape.includes(want))!.name;
          throw new InputError("INPUT_SHAPE", spec.name, formatShape(spec.shape), formatShape(shape), `input "${spec.name}": dimension ${d} ("${want}") is ${got}, but input "${other}" has ${want} = ${bound}`);
        }
      }
    }
    const length = (t.data as ArrayLike<unknown>).length;
    const need = arrayLength(t.dtype, t.size);
    if (length !== need) {
      throw new InputError("INPUT_SIZE", spec.name, `${need} values`, `${length}`, `input "${spec.name}": ${expected()} needs ${need} values, its data has ${length}`);
    }
  }
  return bindings;
}

/** The concrete shape of an output under `bindings`, or undefined when a dimension is not known before the run. */
export function concreteShape(info: TensorInfo, bindings: DimBindings): number[] | undefined {
  const out: number[] = [];
  for (const d of info.shape) {
    if (typeof d === "number") {
      if (d < 0) return undefined;
      out.push(d);
    } else {
      const v = bindings.get(d);
      if (v === undefined) return undefined;
      out.push(v);
    }
  }
  return out;
}

function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === "object") return `an object${v && "dtype" in v ? " that is not a Tensor" : ""}`;
  return typeof v;
}

/**
 * Merges a framework's view of the signature (authoritative for names and dtypes) with the
 * manifest's (which may name dynamic dimensions the framework leaves anonymous). Dimensions the
 * framework fixes win; a dynamic one takes the manifest's name, else the framework's symbol, else
 * stays -1. Throws MODEL_INVALID when the manifest disagrees with the model file.
 */
export function mergeSignature(framework: Signature, manifest: Signature | undefined, where: string): Signature {
  if (!manifest) return framework;
  const merge = (kind: "input" | "output", fw: readonly TensorInfo[], mf: readonly TensorInfo[]): TensorInfo[] =>
    fw.map((f) => {
      const m = mf.find((x) => x.name === f.name);
      if (!m) return f;
      if (isDType(m.dtype) && m.dtype !== f.dtype) {
        throw new MlosError("MODEL_INVALID", `${where}: the manifest says ${kind} "${f.name}" is ${m.dtype}, the model file says ${f.dtype}`);
      }
      if (m.shape.length !== f.shape.length) {
        throw new MlosError("MODEL_INVALID", `${where}: the manifest gives ${kind} "${f.name}" shape ${formatShape(m.shape)}, the model file ${formatShape(f.shape)}`);
      }
      const shape = f.shape.map((d, i) => {
        const md = m.shape[i]!;
        if (typeof d === "number" && d >= 0) {
          if (typeof md === "number" && md >= 0 && md !== d) {
            throw new MlosError("MODEL_INVALID", `${where}: the manifest gives ${kind} "${f.name}" shape ${formatShape(m.shape)}, the model file ${formatShape(f.shape)}`);
          }
          return d;
        }
        return typeof md === "string" ? md : md >= 0 ? md : d;
      });
      return { name: f.name, dtype: f.dtype, shape };
    });
  return { inputs: merge("input", framework.inputs, manifest.inputs), outputs: merge("output", framework.outputs, manifest.outputs) };
}
