import { Args } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import type { AxonConfig } from "../../../axon/config.js";
import { AxonError } from "../../../axon/errors.js";

export default class RegistryRemove extends AxonCommand {
  static override summary = "Remove a configured registry";
  static override description = "Stored credentials for its host are kept (remove them with 'axon registry logout'). If it was the default, the default becomes 'local'.";
  static override examples = ["<%= config.bin %> registry remove local5000", "<%= config.bin %> registry remove ghcr --json"];
  static override args = { name: Args.string({ description: "registry name", required: true }) };

  async run(): Promise<{ removed: string; url: string; defaultReset: boolean }> {
    const { args } = await this.parse(RegistryRemove);
    const axon = await this.axon();
    const cfg = await axon.config.read();
    const registries = cfg.registries ?? [];
    const found = registries.find((r) => r.name === args.name);
    if (!found) {
      throw new AxonError("BAD_ARGUMENT", `no registry named '${args.name}' (configured: ${registries.map((r) => r.name).join(", ") || "none"})`);
    }
    const next: AxonConfig = { ...cfg, registries: registries.filter((r) => r.name !== args.name) };
    const defaultReset = cfg.default_registry === args.name;
    if (defaultReset) delete next.default_registry;
    if (!next.registries?.length) delete next.registries;
    await axon.config.write(next);
    this.log(`removed registry ${args.name} (${found.url})${defaultReset ? "; the default is now 'local'" : ""}`);
    return { removed: args.name, url: found.url, defaultReset };
  }
}
