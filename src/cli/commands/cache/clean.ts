import { AxonCommand, formatBytes } from "../../base.js";

export default class CacheClean extends AxonCommand {
  static override summary = "Remove partial downloads, leftovers of interrupted installs and unreferenced blobs";
  static override examples = ["<%= config.bin %> cache clean", "<%= config.bin %> cache clean --json"];

  async run(): Promise<{ removed: number; freedBytes: number }> {
    await this.parse(CacheClean);
    const axon = await this.axon();
    const r = await axon.cacheClean();
    this.log(`removed ${r.removed} item${r.removed === 1 ? "" : "s"}, freed ${formatBytes(r.freedBytes)}`);
    return { removed: r.removed, freedBytes: r.freedBytes };
  }
}
