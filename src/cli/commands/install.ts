import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../base.js";
import { runInstall, type InstallJson } from "../render.js";

export default class Install extends AxonCommand {
  static override summary = "Resolve, download (parallel, resumable, verified) and install models into the cache";
  static override description = `A reference is [REGISTRY/]NAMESPACE/NAME[@VERSION] (VERSION: a semver version or range, 'latest', or sha256:<digest>), hf/ORG/NAME[@REVISION] for the Hugging Face hub, or a path to a folder with an axon.yaml. The local store is searched first, then the default registry and the other configured ones.`;
  static override examples = [
    "<%= config.bin %> install demo/mlp",
    "<%= config.bin %> install demo/mlp@^1.0 demo/embedder@1.0.0",
    "<%= config.bin %> install 127.0.0.1:5000/acme/resnet@latest",
    "<%= config.bin %> install hf/acme/tinynet@main --include '*.onnx' --include config.json",
    "<%= config.bin %> install ./my-model",
  ];
  static override strict = false;
  static override args = { ref: Args.string({ description: "model reference(s)", required: true }) };
  static override flags = {
    registry: Flags.string({ char: "r", description: "registry to install from (a configured name, host:port or URL)" }),
    include: Flags.string({ description: "Hugging Face: only files matching this glob (repeatable)", multiple: true }),
    exclude: Flags.string({ description: "Hugging Face: skip files matching this glob (repeatable)", multiple: true }),
  };

  async run(): Promise<InstallJson> {
    const { argv, flags } = await this.parse(Install);
    const options = { registry: flags.registry, include: flags.include, exclude: flags.exclude };
    return runInstall(await this.axon(), argv as string[], options, this.progress(flags), (l) => this.log(l));
  }
}
