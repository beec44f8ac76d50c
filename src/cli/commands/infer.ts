import { readFile } from "node:fs/promises";
import { Args, Flags } from "@oclif/core";
import { AxonError } from "../../axon/errors.js";
import { AxonCommand } from "../base.js";

export default class Infer extends AxonCommand {
  static override summary = "Run one inference, in-process or on a server (--endpoint)";
  static override description =
    'The input file is JSON: {"inputs": {"x": [[1,2,3,4]]}} (dtype and shape from the model and the nesting), {"inputs": {"x": {"data": [...], "shape": [1,4], "dtype": "float32"}}}, or {"input": [[...]]} for a single-input model. Prints the outputs as JSON ({name: {dtype, shape, data}}). In-process, REF is an Axon reference or a path; with --endpoint, the served name.';
  static override examples = ["<%= config.bin %> infer demo/mlp@1 --input x.json", "echo '{\"input\": [[1,2,3,4]]}' | <%= config.bin %> infer mlp --input - --endpoint http://127.0.0.1:8080"];
  static override args = { ref: Args.string({ description: "model reference or path (or served name with --endpoint)", required: true }) };
  static override flags = {
    input: Flags.string({ char: "i", description: "JSON input file, or - for stdin", required: true }),
    endpoint: Flags.string({ description: "run on this server instead of in-process", env: "MLOS_ENDPOINT" }),
  };

  async run(): Promise<Record<string, unknown>> {
    const { args, flags } = await this.parse(Infer);
    const text = flags.input === "-" ? await readStdin() : await readFile(flags.input, "utf8").catch((e: Error) => {
      throw new AxonError("BAD_ARGUMENT", `cannot read --input ${flags.input}: ${e.message}`);
    });
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new AxonError("BAD_ARGUMENT", `--input ${flags.input} is not valid JSON: ${(e as Error).message}`);
    }
    let outputs: Record<string, unknown>;
    if (flags.endpoint) {
      const { MlosHttpClient } = await import("../../client/http-client.js");
      outputs = (await new MlosHttpClient({ endpoint: flags.endpoint }).infer(args.ref, body)).outputs;
    } else {
      const { inferFromJson } = await import("../../server/json-inputs.js");
      outputs = await inferFromJson(args.ref, body, await this.axon());
    }
    this.log(JSON.stringify(outputs, null, 2));
    return { outputs };
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
