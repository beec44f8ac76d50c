import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../base.js";

export default class Push extends AxonCommand {
  static override summary = "Publish a packed or installed model to an OCI registry";
  static override description =
    "The model is pushed as an OCI artifact (CNCF ModelPack media types): one layer per file plus its axon.yaml. Blobs the registry already has are skipped. Repository defaults to NAMESPACE/NAME, the tag to the version.";
  static override examples = [
    "<%= config.bin %> push demo/mlp@1.0.0 --registry 127.0.0.1:5000",
    "<%= config.bin %> push demo/mlp --registry myreg --repository acme/mlp",
    "<%= config.bin %> push demo/mlp@1.0.0 --registry ghcr.io --mount-from acme/base-mlp",
  ];
  static override args = { ref: Args.string({ description: "model reference in the local store", required: true }) };
  static override flags = {
    registry: Flags.string({ char: "r", description: "registry to push to (a configured name, host:port or URL)", required: true }),
    repository: Flags.string({ description: "repository to push to (NAMESPACE/NAME; default: the model's)" }),
    "mount-from": Flags.string({ description: "repository on the same registry to mount existing blobs from" }),
  };

  async run(): Promise<{ registry: string; repository: string; tag: string; digest: string; uploaded: number; skipped: number; mounted: number }> {
    const { args, flags } = await this.parse(Push);
    const axon = await this.axon();
    const progress = this.progress(flags);
    await progress?.ready();
    let r: Awaited<ReturnType<typeof axon.push>>;
    try {
      r = await axon.push(args.ref, { registry: flags.registry, repository: flags.repository, mountFrom: flags["mount-from"], onProgress: progress?.sink });
    } finally {
      progress?.stop();
    }
    this.log(`pushed ${r.registry}/${r.repository}:${r.tag} (${r.digest.slice(0, 19)}): ${r.uploaded} uploaded, ${r.skipped} already there, ${r.mounted} mounted`);
    return r;
  }
}
