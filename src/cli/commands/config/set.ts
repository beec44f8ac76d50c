import { Args } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { CONFIG_KEYS } from "../../../axon/config.js";
import { configKey } from "./get.js";

export default class ConfigSet extends AxonCommand {
  static override summary = "Change one setting in $AXON_HOME/config.yaml";
  static override examples = [
    "<%= config.bin %> config set concurrency 8",
    "<%= config.bin %> config set retries 3",
    "<%= config.bin %> config set hf_endpoint https://hf-mirror.example.com",
  ];
  static override args = {
    key: Args.string({ description: `setting: ${Object.keys(CONFIG_KEYS).join(", ")}`, required: true }),
    value: Args.string({ description: "new value", required: true }),
  };

  async run(): Promise<{ key: string; value: string | number; previous: string | number }> {
    const { args } = await this.parse(ConfigSet);
    const key = configKey(args.key);
    const axon = await this.axon();
    const previous = await axon.config.get(key);
    await axon.config.set(key, args.value);
    const value = await axon.config.get(key);
    this.log(`${key} = ${value}${previous !== value ? ` (was ${previous})` : ""}`);
    return { key, value, previous };
  }
}
