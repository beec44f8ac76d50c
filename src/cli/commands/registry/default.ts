import { Args } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { AxonError } from "../../../axon/errors.js";

export default class RegistryDefault extends AxonCommand {
  static override summary = "Set (or show) the registry tried after the local store: a configured name, or 'local' for none";
  static override examples = ["<%= config.bin %> registry default ghcr", "<%= config.bin %> registry default local", "<%= config.bin %> registry default"];
  static override args = { name: Args.string({ description: "a configured registry name, or 'local'", required: false }) };

  async run(): Promise<{ default: string; previous: string }> {
    const { args } = await this.parse(RegistryDefault);
    const axon = await this.axon();
    const previous = String(await axon.config.get("default_registry"));
    if (args.name === undefined) {
      this.log(previous);
      return { default: previous, previous };
    }
    const regs = await axon.config.registries();
    if (args.name !== "local" && !regs.some((r) => r.name === args.name)) {
      throw new AxonError("BAD_ARGUMENT", `no registry named '${args.name}' (configured: ${regs.map((r) => r.name).join(", ") || "none"}; or 'local')`);
    }
    await axon.config.set("default_registry", args.name);
    this.log(`default registry: ${args.name}${previous !== args.name ? ` (was ${previous})` : ""}`);
    return { default: args.name, previous };
  }
}
