import { AxonCommand, formatBytes } from "../../base.js";

export interface CacheStatsResult {
  home: string;
  blobs: number;
  bytes: number;
  referencedBytes: number;
  unreferencedBytes: number;
  partialBytes: number;
  models: number;
  installedBytes: number;
  savedByDedup: number;
}

export default class CacheStats extends AxonCommand {
  static override summary = "Show cache totals: blobs, bytes, unreferenced and partial bytes, deduplication savings";
  static override examples = ["<%= config.bin %> cache stats", "<%= config.bin %> cache stats --json"];

  async run(): Promise<CacheStatsResult> {
    await this.parse(CacheStats);
    const axon = await this.axon();
    const s = { home: axon.paths.home, ...(await axon.cacheStats()) };
    const rows: Array<[string, string]> = [
      ["home", s.home],
      ["blobs", `${s.blobs} (${formatBytes(s.bytes)})`],
      ["referenced", formatBytes(s.referencedBytes)],
      ["unreferenced", `${formatBytes(s.unreferencedBytes)}${s.unreferencedBytes ? " (free with 'axon cache prune')" : ""}`],
      ["partial", `${formatBytes(s.partialBytes)}${s.partialBytes ? " (free with 'axon cache clean')" : ""}`],
      ["models", `${s.models} installed (${formatBytes(s.installedBytes)})`],
      ["dedup saves", formatBytes(s.savedByDedup)],
    ];
    for (const [k, v] of rows) this.log(`${`${k}:`.padEnd(14)}${v}`);
    return s;
  }
}
