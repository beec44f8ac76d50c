/**
 * mlos: the library. Today it exposes Axon, the model package manager (install, pack, push,
 * verify, search and the cache, as the `axon` CLI does); the runtime (`load`, `infer`, `Tensor`)
 * is added by MLOS Core.
 *
 * ```ts
 * import { Axon } from "mlos";
 * const axon = new Axon();                        // $AXON_HOME or ~/.axon
 * const { record } = await axon.install("demo/mlp@^1");
 * console.log(record.path);                       // a folder of files any framework can open
 * ```
 */
export { Axon, type InstallOptions, type InstallResult, type ModelInfo, type ProgressEvent, type ProgressSink, type SearchHit, type VerifyProblem } from "./axon/axon.js";
export { AxonError, isAxonError, type AxonErrorCode } from "./axon/errors.js";
export { AxonPaths } from "./axon/paths.js";
export { parseReference, formatReference, type ModelReference } from "./axon/reference.js";
export type { InstallRecord, InstalledFile } from "./axon/store/installs.js";
export type { AxonManifest, TensorSpec, TensorDType, ManifestFile } from "./axon/manifest/types.js";
export { parseManifest, stringifyManifest } from "./axon/manifest/parse.js";
export { seedDemoModels, DEMO_MODELS_DIR } from "./axon/demo.js";
