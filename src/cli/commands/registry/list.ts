import { AxonCommand } from "../../base.js";
import { hostOf } from "../../../axon/config.js";
import { CredentialStore, hostAliases } from "../../../axon/registry/credentials.js";

export interface RegistryListEntry {
  name: string;
  url: string;
  insecure: boolean;
  default: boolean;
  /** Whether `axon registry login` stored credentials for its host (passwords are never shown). */
  credentials: boolean;
  username?: string;
}

export default class RegistryList extends AxonCommand {
  static override summary = "List configured registries, the default, and which have stored credentials";
  static override examples = ["<%= config.bin %> registry list", "<%= config.bin %> registry list --json"];

  async run(): Promise<{ default: string; registries: RegistryListEntry[]; logins: Array<{ host: string; username: string }> }> {
    await this.parse(RegistryList);
    const axon = await this.axon();
    const def = String(await axon.config.get("default_registry"));
    const logins = await new CredentialStore(axon.paths.credentials).list();
    const byHost = new Map(logins.map((l) => [l.host, l.username]));
    const registries: RegistryListEntry[] = (await axon.config.registries()).map((r) => {
      const host = hostOf(r.url);
      const user = hostAliases(host).map((h) => byHost.get(h)).find((u) => u !== undefined);
      return { name: r.name, url: r.url, insecure: r.insecure ?? false, default: r.name === def, credentials: user !== undefined, ...(user !== undefined ? { username: user } : {}) };
    });
    const rows = [
      { name: "local", url: `(local store in ${axon.paths.store})`, def: def === "local", login: "-" },
      ...registries.map((r) => ({ name: r.name, url: `${r.url}${r.insecure ? " (insecure)" : ""}`, def: r.default, login: r.username ?? "-" })),
    ];
    const nw = Math.max(...rows.map((r) => r.name.length), 4);
    const uw = Math.max(...rows.map((r) => r.url.length), 3);
    this.log(`  ${"NAME".padEnd(nw)}  ${"URL".padEnd(uw)}  LOGIN`);
    for (const r of rows) this.log(`${r.def ? "*" : " "} ${r.name.padEnd(nw)}  ${r.url.padEnd(uw)}  ${r.login}`);
    const configured = new Set(registries.map((r) => hostOf(r.url)));
    const others = logins.filter((l) => !hostAliases(l.host).some((h) => configured.has(h)));
    if (others.length) this.log(`logged in to: ${others.map((l) => `${l.host} (${l.username})`).join(", ")}`);
    return { default: def, registries, logins };
  }
}
