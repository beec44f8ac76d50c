import { AxonCommand, formatBytes } from "../base.js";

export default class List extends AxonCommand {
  static override summary = "List installed models";
  static override examples = ["<%= config.bin %> list", "<%= config.bin %> list --json"];

  async run(): Promise<{ models: Array<{ reference: string; digest: string; size: number; source: string; path: string; lastUsed: string }> }> {
    await this.parse(List);
    const axon = await this.axon();
    const models = (await axon.list()).map((r) => ({ reference: `${r.namespace}/${r.name}@${r.version}`, digest: r.digest, size: r.size, source: r.source, path: r.path, lastUsed: r.lastUsed }));
    if (!models.length) this.log("no models installed (try 'axon install demo/mlp' after 'npm start', or 'axon pack DIR')");
    else {
      const w = Math.max(...models.map((m) => m.reference.length), 9);
      this.log(`${"REFERENCE".padEnd(w)}  ${"SIZE".padStart(10)}  ${"SOURCE".padEnd(16)}  DIGEST`);
      for (const m of models) this.log(`${m.reference.padEnd(w)}  ${formatBytes(m.size).padStart(10)}  ${m.source.padEnd(16)}  ${m.digest.slice(0, 19)}`);
    }
    return { models };
  }
}
