import { Args } from "@oclif/core";
import { AxonCommand, formatBytes } from "../base.js";

interface TensorInfo {
  name: string;
  dtype: string;
  shape: Array<number | string>;
}

export interface InfoResult {
  reference: string;
  namespace: string;
  name: string;
  version: string;
  digest: string;
  source: string;
  path: string;
  size: number;
  installedAt: string;
  lastUsed: string;
  description?: string;
  license?: string;
  tags?: string[];
  framework: { name: string; version?: string };
  format: { type: string; entrypoint?: string };
  files: Array<{ path: string; size: number; sha256: string }>;
  io?: { inputs: TensorInfo[]; outputs: TensorInfo[] };
}

export default class Info extends AxonCommand {
  static override summary = "Show an installed model: manifest, files, size, digest";
  static override examples = [
    "<%= config.bin %> info demo/mlp",
    "<%= config.bin %> info demo/mlp@1.0.0 --json",
    "<%= config.bin %> info demo/mlp@sha256:0123abcd...",
  ];
  static override args = { ref: Args.string({ description: "model reference ([REGISTRY/]NAMESPACE/NAME[@VERSION])", required: true }) };

  async run(): Promise<InfoResult> {
    const { args } = await this.parse(Info);
    const axon = await this.axon();
    const { record, manifest, lastUsed } = await axon.info(args.ref);
    const m = manifest.metadata;
    const tensor = (t: TensorInfo): TensorInfo => ({ name: t.name, dtype: t.dtype, shape: t.shape });
    const result: InfoResult = {
      reference: `${record.namespace}/${record.name}@${record.version}`,
      namespace: record.namespace,
      name: record.name,
      version: record.version,
      digest: record.digest,
      source: record.source,
      path: record.path,
      size: record.size,
      installedAt: record.installedAt,
      lastUsed,
      ...(m.description !== undefined ? { description: m.description } : {}),
      ...(m.license !== undefined ? { license: m.license } : {}),
      ...(m.tags?.length ? { tags: m.tags } : {}),
      framework: { name: manifest.spec.framework.name, ...(manifest.spec.framework.version ? { version: manifest.spec.framework.version } : {}) },
      format: { type: manifest.spec.format.type, ...(manifest.spec.format.entrypoint ? { entrypoint: manifest.spec.format.entrypoint } : {}) },
      files: record.files.map((f) => ({ path: f.path, size: f.size, sha256: f.digest })),
      ...(manifest.spec.io ? { io: { inputs: manifest.spec.io.inputs.map(tensor), outputs: manifest.spec.io.outputs.map(tensor) } } : {}),
    };

    const fw = `${result.framework.name}${result.framework.version ? ` ${result.framework.version}` : ""}`;
    const rows: Array<[string, string | undefined]> = [
      ["reference", result.reference],
      ["digest", result.digest],
      ["source", result.source],
      ["path", result.path],
      ["size", `${formatBytes(result.size)} (${result.size} bytes)`],
      ["installed", result.installedAt],
      ["last used", result.lastUsed],
      ["description", result.description],
      ["license", result.license],
      ["tags", result.tags?.join(", ")],
      ["framework", fw],
      ["format", `${result.format.type}${result.format.entrypoint ? ` (entrypoint ${result.format.entrypoint})` : ""}`],
    ];
    for (const [k, v] of rows) if (v !== undefined) this.log(`${`${k}:`.padEnd(13)}${v}`);
    this.log(`files (${result.files.length}):`);
    const w = Math.max(...result.files.map((f) => f.path.length), 4);
    for (const f of result.files) this.log(`  ${f.path.padEnd(w)}  ${formatBytes(f.size).padStart(10)}  ${f.sha256}`);
    if (result.io) {
      const shape = (t: TensorInfo) => `[${t.shape.join(", ")}]`;
      for (const [label, list] of [["inputs", result.io.inputs], ["outputs", result.io.outputs]] as const) {
        this.log(`${label}:`);
        for (const t of list) this.log(`  ${t.name}  ${t.dtype}  ${shape(t)}`);
      }
    }
    return result;
  }
}
