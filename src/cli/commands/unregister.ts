import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../base.js";

export default class Unregister extends AxonCommand {
  static override summary = "Remove a model from a running server";
  static override examples = ["<%= config.bin %> unregister tiny-cnn", "<%= config.bin %> unregister mlp@1.0.0"];
  static override args = { id: Args.string({ description: "served name, or name@version for one version", required: true }) };
  static override flags = {
    endpoint: Flags.string({ description: "server address (default $MLOS_ENDPOINT or http://127.0.0.1:8080)", env: "MLOS_ENDPOINT" }),
    "admin-key": Flags.string({ description: "the server's admin key (default $MLOS_ADMIN_KEY, then $MLOS_API_KEY)", env: "MLOS_ADMIN_KEY" }),
  };

  async run(): Promise<{ removed: string[] }> {
    const { args, flags } = await this.parse(Unregister);
    const { MlosHttpClient } = await import("../../client/http-client.js");
    const r = await new MlosHttpClient({ endpoint: flags.endpoint, apiKey: flags["admin-key"] }).unregister(args.id);
    this.log(`unregistered ${r.removed.join(", ")}`);
    return r;
  }
}
