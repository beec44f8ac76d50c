import { Args } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { CONFIG_KEYS, type ConfigKey } from "../../../axon/config.js";
import { AxonError } from "../../../axon/errors.js";

export function configKey(key: string): ConfigKey {
  if (!Object.hasOwn(CONFIG_KEYS, key)) {
    throw new AxonError("BAD_ARGUMENT", `unknown setting '${key}' (known: ${Object.keys(CONFIG_KEYS).join(", ")}; registries: use 'axon registry')`);
  }
  return key as ConfigKey;
}

export default class ConfigGet extends AxonCommand {
  static override summary = "Print one setting's value";
  static override examples = ["<%= config.bin %> config get concurrency", "<%= config.bin %> config get default_registry --json"];
  static override args = { key: Args.string({ description: `setting: ${Object.keys(CONFIG_KEYS).join(", ")}`, required: true }) };

  async run(): Promise<{ key: string; value: string | number; isDefault: boolean }> {
    const { args } = await this.parse(ConfigGet);
    const key = configKey(args.key);
    const axon = await this.axon();
    const value = await axon.config.get(key);
    const isDefault = (await axon.config.read())[key] === undefined;
    this.log(String(value));
    return { key, value, isDefault };
  }
}
