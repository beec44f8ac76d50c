import { Args, Flags } from "@oclif/core";
import { AxonCommand, formatBytes } from "../base.js";

export default class Pack extends AxonCommand {
  static override summary = "Validate DIR/axon.yaml, hash the files and store the model in the local store";
  static override description =
    "axon.yaml may list files by path only: pack fills in their size and sha256. A folder without axon.yaml is packed from what its files are (an ONNX model, a language model in Hugging Face's layout with its tokenizer and chat template ...), named by --as. The model is stored as an OCI artifact in the local store ($AXON_HOME/store) and installed, ready for 'axon push' or 'axon serve'.";
  static override examples = ["<%= config.bin %> pack ./my-model", "<%= config.bin %> pack . --json", "<%= config.bin %> pack ./exported-llm --as nlp/my-llm@1.0.0"];
  static override args = { dir: Args.string({ description: "model folder (with an axon.yaml, or the files of a model)", required: true }) };
  static override flags = { ...AxonCommand.baseFlags, as: Flags.string({ description: "for a folder without axon.yaml: the model's NAMESPACE/NAME@VERSION [default: local/<folder>@1.0.0]" }) };

  async run(): Promise<{ reference: string; digest: string; files: number; size: number; path: string }> {
    const { args, flags } = await this.parse(Pack);
    const axon = await this.axon();
    const progress = this.progress(flags);
    await progress?.ready();
    let r: Awaited<ReturnType<typeof axon.pack>>;
    try {
      r = await axon.pack(args.dir, { onProgress: progress?.sink, as: flags.as });
    } finally {
      progress?.stop();
    }
    this.log(`packed ${r.reference} (${r.digest.slice(0, 19)}): ${r.files} file${r.files === 1 ? "" : "s"}, ${formatBytes(r.size)}`);
    return { reference: r.reference, digest: r.digest, files: r.files, size: r.size, path: r.record.path };
  }
}
