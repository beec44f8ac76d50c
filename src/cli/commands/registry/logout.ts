import { Args } from "@oclif/core";
import { AxonCommand } from "../../base.js";
import { hostOf, registryUrl } from "../../../axon/config.js";
import { CredentialStore } from "../../../axon/registry/credentials.js";

export default class RegistryLogout extends AxonCommand {
  static override summary = "Remove the stored credentials of a registry";
  static override examples = ["<%= config.bin %> registry logout ghcr.io", "<%= config.bin %> registry logout myreg --json"];
  static override args = { registry: Args.string({ description: "a configured registry name, or host[:port]", required: true }) };

  async run(): Promise<{ host: string; removed: boolean }> {
    const { args } = await this.parse(RegistryLogout);
    const axon = await this.axon();
    const reg = await axon.config.registry(args.registry);
    const host = hostOf(registryUrl(reg.url, reg.insecure));
    const removed = await new CredentialStore(axon.paths.credentials).logout(host);
    this.log(removed ? `removed credentials for ${host}` : `no credentials stored for ${host}`);
    return { host, removed };
  }
}
