import { Flags } from "@oclif/core";
import type { ModelsResponse } from "../../protocol/mlos-v1.js";
import { AxonCommand, formatBytes } from "../base.js";

export default class Ps extends AxonCommand {
  static override summary = "Models on a running server: state, memory, last use";
  static override examples = ["<%= config.bin %> ps", "<%= config.bin %> ps --endpoint http://10.0.0.5:8080 --json"];
  static override flags = {
    endpoint: Flags.string({ description: "server address (default $MLOS_ENDPOINT or http://127.0.0.1:8080)", env: "MLOS_ENDPOINT" }),
  };

  async run(): Promise<ModelsResponse> {
    const { flags } = await this.parse(Ps);
    const { MlosHttpClient } = await import("../../client/http-client.js");
    const r = await new MlosHttpClient({ endpoint: flags.endpoint }).models();
    const rows = [["MODEL", "VERSION", "STATE", "PLUGIN", "MEMORY", "PENDING", "LAST USED"]];
    for (const m of r.models) {
      rows.push([m.name, m.version, m.state, m.plugin ?? "-", typeof m.memoryBytes === "number" ? formatBytes(m.memoryBytes) : "-", String(m.pending ?? 0), m.lastUsed ?? "never"]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
    for (const row of rows) this.log(row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
    return r;
  }
}
