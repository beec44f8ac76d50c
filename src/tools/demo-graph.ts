/**
 * The small vocabulary the demo language models' graphs are written in (tiny-gpt, tiny-embed): a
 * builder with the demo models' IR version and opset, and helpers that name every node after its
 * single output, add scalar and int64 constants, and build a LayerNorm or a linear layer (MatMul +
 * bias) with its weights, under a prefix. Calls add nodes and initializers in call order, so the
 * same calls give the same bytes.
 */
import { DEMO_IR_VERSION, DEMO_OPSET } from "./make-demo-models.js";
import { OnnxModelBuilder, type AttrValue } from "./onnx-builder.js";

export interface DemoGraph {
  readonly m: OnnxModelBuilder;
  /** A node of one output, named after it; returns the output's name. */
  op(type: string, inputs: string[], output: string, attrs?: Record<string, AttrValue>): string;
  /** A float32 scalar constant. */
  f32(name: string, value: number): string;
  /** An int64 constant (a scalar with `dims` []). */
  i64(name: string, values: number[], dims?: number[]): string;
  /** LayerNormalization over the last axis, its `prefix.weight` and `prefix.bias` added. */
  layerNorm(x: string, prefix: string, gamma: Float32Array, beta: Float32Array): string;
  /** x · W + b, with `prefix.weight` [inDim, outDim] and `prefix.bias` [outDim] added. */
  linear(x: string, prefix: string, w: Float32Array, b: Float32Array, inDim: number, outDim: number): string;
}

export function demoGraph(opts: { graphName: string; docString: string; hidden: number; layerNormEpsilon: number }): DemoGraph {
  const m = new OnnxModelBuilder({
    irVersion: DEMO_IR_VERSION,
    opset: DEMO_OPSET,
    graphName: opts.graphName,
    producerName: "mlos make-demo-models",
    producerVersion: "1",
    docString: opts.docString,
  });
  const op = (type: string, inputs: string[], output: string, attrs?: Record<string, AttrValue>): string => {
    m.node(type, inputs, [output], attrs, output);
    return output;
  };
  return {
    m,
    op,
    f32(name, value) {
      m.initializer(name, new Float32Array([value]), []);
      return name;
    },
    i64(name, values, dims = [values.length]) {
      m.int64Initializer(name, values, dims);
      return name;
    },
    layerNorm(x, prefix, gamma, beta) {
      m.initializer(`${prefix}.weight`, gamma, [opts.hidden]);
      m.initializer(`${prefix}.bias`, beta, [opts.hidden]);
      return op("LayerNormalization", [x, `${prefix}.weight`, `${prefix}.bias`], `${prefix}.out`, { axis: -1, epsilon: opts.layerNormEpsilon });
    },
    linear(x, prefix, w, b, inDim, outDim) {
      m.initializer(`${prefix}.weight`, w, [inDim, outDim]);
      m.initializer(`${prefix}.bias`, b, [outDim]);
      return op("Add", [op("MatMul", [x, `${prefix}.weight`], `${prefix}.matmul`), `${prefix}.bias`], `${prefix}.out`);
    },
  };
}
