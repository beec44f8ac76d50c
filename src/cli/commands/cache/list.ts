import { AxonCommand, formatBytes } from "../../base.js";

export default class CacheList extends AxonCommand {
  static override summary = "List what the local store holds: repository, tag, size, source, whether installed";
  static override examples = ["<%= config.bin %> cache list", "<%= config.bin %> cache list --json"];

  async run(): Promise<{ entries: Array<{ repository: string; tag: string; digest: string; size: number; source: string; installed: boolean }> }> {
    await this.parse(CacheList);
    const axon = await this.axon();
    const entries = (await axon.cacheList()).map((e) => ({ repository: e.repository, tag: e.tag, digest: e.digest, size: e.size, source: e.source, installed: e.installed }));
    if (!entries.length) this.log("the local store is empty");
    else {
      const w = Math.max(...entries.map((e) => `${e.repository}:${e.tag}`.length), 10);
      const sw = Math.max(...entries.map((e) => e.source.length), 6);
      this.log(`${"REPOSITORY".padEnd(w)}  ${"SIZE".padStart(10)}  ${"SOURCE".padEnd(sw)}  ${"INSTALLED".padEnd(9)}  DIGEST`);
      for (const e of entries) {
        this.log(`${`${e.repository}:${e.tag}`.padEnd(w)}  ${formatBytes(e.size).padStart(10)}  ${e.source.padEnd(sw)}  ${(e.installed ? "yes" : "no").padEnd(9)}  ${e.digest.slice(0, 19)}`);
      }
    }
    return { entries };
  }
}
