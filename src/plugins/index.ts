/**
 * The built-in plugins, registered as every Runtime's defaults when this module is imported (the
 * library's entry point and the server import it). Each one loads its framework only when a model
 * needs it, so registering them costs nothing.
 */
import { registerDefaultPlugin } from "../core/plugin-registry.js";
import { LlamaCppPlugin } from "./llamacpp/index.js";
import { OnnxRuntimePlugin } from "./onnxruntime/index.js";
import { TensorflowPlugin } from "./tensorflow/index.js";
import { TorchPlugin } from "./torch/index.js";

registerDefaultPlugin("onnxruntime", () => new OnnxRuntimePlugin());
registerDefaultPlugin("torch", () => new TorchPlugin());
registerDefaultPlugin("tensorflow", () => new TensorflowPlugin());
registerDefaultPlugin("llamacpp", () => new LlamaCppPlugin());

export { LlamaCppPlugin, OnnxRuntimePlugin, TensorflowPlugin, TorchPlugin };
