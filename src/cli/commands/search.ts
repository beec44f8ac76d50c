import { Args, Flags } from "@oclif/core";
import { AxonCommand } from "../base.js";
import type { SearchHit } from "../../axon/axon.js";

export default class Search extends AxonCommand {
  static override summary = "Search installed models, the local store and registry catalogs, ranked";
  static override description =
    "Every query word must match a model's name, tags or description. Name matches rank highest. Registries that cannot be reached are reported as warnings on stderr; the search still succeeds with what it found.";
  static override examples = [
    "<%= config.bin %> search mlp",
    "<%= config.bin %> search image classifier --local",
    "<%= config.bin %> search embed --json",
  ];
  static override strict = false;
  static override args = { query: Args.string({ description: "search words", required: true }) };
  static override flags = {
    local: Flags.boolean({ description: "search only installed models and the local store (no registry catalogs)", default: false }),
  };

  async run(): Promise<{ query: string; hits: SearchHit[]; errors: Array<{ registry: string; error: string }> }> {
    const { argv, flags } = await this.parse(Search);
    const query = (argv as string[]).join(" ");
    const axon = await this.axon();
    const { hits, errors } = await axon.search(query, { remote: !flags.local });
    for (const e of errors) process.stderr.write(`warning: registry ${e.registry}: ${e.error.split("\n")[0]}\n`);
    if (!hits.length) this.log(`no models match '${query}'`);
    else {
      const w = Math.max(...hits.map((h) => h.reference.length), 9);
      const ww = Math.max(...hits.map((h) => h.where.length), 5);
      this.log(`${"REFERENCE".padEnd(w)}  ${"WHERE".padEnd(ww)}  ${"SCORE".padStart(5)}  ${"INSTALLED".padEnd(9)}  DESCRIPTION`);
      for (const h of hits) {
        this.log(`${h.reference.padEnd(w)}  ${h.where.padEnd(ww)}  ${String(h.score).padStart(5)}  ${(h.installed ? "yes" : "").padEnd(9)}  ${h.description ?? ""}`.trimEnd());
      }
    }
    return { query, hits, errors };
  }
}
