import { Args, Flags } from "@oclif/core";
import { AxonCommand, formatBytes } from "../base.js";

export default class Uninstall extends AxonCommand {
  static override summary = "Remove an installed model version (or all its versions with --all) and free blobs nothing else uses";
  static override examples = [
    "<%= config.bin %> uninstall demo/mlp@1.0.0",
    "<%= config.bin %> uninstall demo/mlp --all",
    "<%= config.bin %> uninstall demo/mlp@^1 --json",
  ];
  static override args = { ref: Args.string({ description: "model reference ([REGISTRY/]NAMESPACE/NAME[@VERSION])", required: true }) };
  static override flags = {
    all: Flags.boolean({ description: "remove every installed version of the model", default: false }),
  };

  async run(): Promise<{ removed: string[]; freedBytes: number }> {
    const { args, flags } = await this.parse(Uninstall);
    const axon = await this.axon();
    const { removed, freedBytes } = await axon.uninstall(args.ref, { all: flags.all });
    for (const r of removed) this.log(`removed ${r}`);
    this.log(`freed ${formatBytes(freedBytes)}`);
    return { removed, freedBytes };
  }
}
