/** The Axon manifest, `axon.yaml`: types, parsing and validation, and the files of a model folder. */
export * from "./types.js";
export {
  parseManifest,
  readManifest,
  stringifyManifest,
  validateManifestObject,
  manifestSchema,
  manifestSchemaPath,
  type ParseOptions,
} from "./parse.js";
export {
  checkManifestSemantics,
  assertManifestSemantics,
  relativePathProblem,
  isSafeRelativePath,
  assertSafeRelativePath,
  isInlineChatTemplate,
  formatFieldPath,
  formatIssue,
  issuesError,
  type FieldPath,
  type SourcePos,
  type Locator,
  type ManifestIssue,
  type SemanticOptions,
} from "./validate.js";
export {
  hashFile,
  hashModelDir,
  listModelFiles,
  resolveModelFile,
  diffManifestFiles,
  checkManifestFiles,
  completeManifest,
  type HashOptions,
  type ModelDirEntry,
  type FileProblem,
} from "./files.js";
