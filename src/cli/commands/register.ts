import { Args, Flags } from "@oclif/core";
import type { RegisterResponse } from "../../protocol/mlos-v1.js";
import { AxonCommand } from "../base.js";

export default class Register extends AxonCommand {
  static override summary = "Add a model to a running server";
  static override description = "REF is an Axon reference (installed by the server when missing) or, with --path, the served name for a model folder or file on the server's machine.";
  static override examples = ["<%= config.bin %> register demo/tiny-cnn@1", "<%= config.bin %> register classifier --path /models/classifier --endpoint http://10.0.0.5:8080"];
  static override args = { ref: Args.string({ description: "model reference, or the served name with --path", required: true }) };
  static override flags = {
    path: Flags.string({ description: "model folder or file on the server's machine (REF is then its served name)" }),
    plugin: Flags.string({ description: "plugin to use, by id or the name people use (onnx, pytorch, tfjs ...; default: from the manifest or the format)" }),
    framework: Flags.string({ description: "the framework the model was made with, when it has no manifest to say so (onnx, pytorch, tensorflow ...)" }),
    endpoint: Flags.string({ description: "server address (default $MLOS_ENDPOINT or http://127.0.0.1:8080)", env: "MLOS_ENDPOINT" }),
    "admin-key": Flags.string({ description: "the server's admin key (default $MLOS_ADMIN_KEY, then $MLOS_API_KEY)", env: "MLOS_ADMIN_KEY" }),
  };

  async run(): Promise<RegisterResponse> {
    const { args, flags } = await this.parse(Register);
    const { MlosHttpClient } = await import("../../client/http-client.js");
    const client = new MlosHttpClient({ endpoint: flags.endpoint, apiKey: flags["admin-key"] });
    const r = await client.register(args.ref, { path: flags.path, plugin: flags.plugin, framework: flags.framework });
    this.log(`registered ${r.name}@${r.version}: ${r.state}`);
    return r;
  }
}
