/**
 * Build step: compiles the manifest JSON Schema (strict and draft forms) into standalone validator
 * code with ajv, so that no axon process pays for compiling it (~150 ms) at run time. The output
 * sits beside the compiled library (dist/schemas/manifest-validators.cjs); parse.ts falls back to
 * compiling at run time when it is missing.
 *
 *   node dist/src/tools/compile-schemas.js
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import standaloneCode from "ajv/dist/standalone/index.js";
import { draftSchema, manifestSchema, PRECOMPILED_VALIDATORS } from "../axon/manifest/parse.js";

const strict = manifestSchema();
const draft = draftSchema();
const ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true, code: { source: true } });
ajv.addSchema(strict, "strict");
ajv.addSchema(draft, "draft");
type Standalone = (ajv: Ajv2020, refs: Record<string, string>) => string;
const code = ((standaloneCode as unknown as { default?: Standalone }).default ?? standaloneCode) as unknown as Standalone;
mkdirSync(path.dirname(PRECOMPILED_VALIDATORS), { recursive: true });
writeFileSync(PRECOMPILED_VALIDATORS, code(ajv, { strict: "strict", draft: "draft" }));
