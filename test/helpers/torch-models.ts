/**
 * TorchScript models for the tests: a `.pt` file made by the torch addon's test-model tool
 * (bindings/torch.ts torchTestModelTool), put in a folder of its own with an axon.yaml, as a user
 * would package it.
 */
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

/**
 * Makes `folder` (created) a TorchScript model package: `pt` copied in as model.pt and a manifest
 * for `name` (namespace test, version 1.0.0) whose `spec.io` lists `inputs` and `outputs` (YAML
 * flow lists). Returns the folder.
 */
export function torchModelFolder(pt: string, folder: string, name: string, io: { inputs: string; outputs: string }): string {
  mkdirSync(folder);
  copyFileSync(pt, path.join(folder, "model.pt"));
  writeFileSync(path.join(folder, "axon.yaml"), [
    "apiVersion: axon.mlos.io/v1", "kind: Model", `metadata: { namespace: test, name: ${name}, version: 1.0.0 }`,
    "spec:", "  framework: { name: pytorch }", "  format: { type: torchscript, entrypoint: model.pt, files: [{ path: model.pt }] }",
    "  io:", `    inputs: ${io.inputs}`, `    outputs: ${io.outputs}`, "",
  ].join("\n"));
  return folder;
}
