import { AxonCommand } from "../../base.js";
import { CONFIG_KEYS, type ConfigKey } from "../../../axon/config.js";

export interface ConfigListEntry {
  key: string;
  value: string | number;
  isDefault: boolean;
  defaultValue: string | number;
  description: string;
}

export default class ConfigList extends AxonCommand {
  static override summary = "List every setting with its value and whether it is the default";
  static override examples = ["<%= config.bin %> config list", "<%= config.bin %> config list --json"];

  async run(): Promise<{ file: string; settings: ConfigListEntry[] }> {
    await this.parse(ConfigList);
    const axon = await this.axon();
    const cfg = await axon.config.read();
    const settings: ConfigListEntry[] = [];
    for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
      const spec = CONFIG_KEYS[key];
      settings.push({ key, value: await axon.config.get(key), isDefault: cfg[key] === undefined, defaultValue: spec.default, description: spec.describe });
    }
    const kw = Math.max(...settings.map((s) => s.key.length));
    const vw = Math.max(...settings.map((s) => String(s.value).length));
    for (const s of settings) this.log(`${s.key.padEnd(kw)}  ${String(s.value).padEnd(vw)}  ${s.isDefault ? "(default)" : "(set)    "}  ${s.description}`);
    this.log(`file: ${axon.paths.config}`);
    return { file: axon.paths.config, settings };
  }
}
