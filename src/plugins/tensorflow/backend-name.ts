/**
 * The TensorFlow.js backends the plugin can run on, in a module that imports nothing from
 * TensorFlow.js: the plugin's public types use it, so that the library's declarations type-check
 * in a project without the optional TF.js packages.
 */
export type TfBackendName = "tensorflow" | "wasm" | "cpu";
