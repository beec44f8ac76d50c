import { Flags } from "@oclif/core";
import { AxonCommand, formatBytes, parseSize } from "../../base.js";

export default class CachePrune extends AxonCommand {
  static override summary = "Free unreferenced blobs; with --max-size, evict least recently used downloaded models until the cache fits";
  static override description =
    "Only models that came from a registry or the hub are evicted (they can be fetched again); models packed here stay, since the local store is their only copy.";
  static override examples = ["<%= config.bin %> cache prune", "<%= config.bin %> cache prune --max-size 10G", "<%= config.bin %> cache prune --max-size 500MiB --json"];
  static override flags = {
    "max-size": Flags.string({ description: "target cache size (examples: 500M, 2G, 1GiB, 1048576)" }),
  };

  async run(): Promise<{ evicted: string[]; freedBytes: number; bytes: number }> {
    const { flags } = await this.parse(CachePrune);
    const maxSize = flags["max-size"] !== undefined ? parseSize(flags["max-size"]) : undefined;
    const axon = await this.axon();
    const r = await axon.cachePrune({ maxSize });
    for (const e of r.evicted) this.log(`evicted ${e}`);
    this.log(`freed ${formatBytes(r.freedBytes)}; cache is now ${formatBytes(r.bytes)}${maxSize !== undefined && r.bytes > maxSize ? ` (still above ${formatBytes(maxSize)}: the rest is packed or in use)` : ""}`);
    return { evicted: r.evicted, freedBytes: r.freedBytes, bytes: r.bytes };
  }
}
