import { Args } from "@oclif/core";
import { AxonCommand } from "../base.js";
import type { VerifyProblem } from "../../axon/axon.js";

export interface VerifyResult {
  ok: boolean;
  checked: number;
  problems: VerifyProblem[];
  /** Present when problems were found (the exit status is then 1). */
  error?: string;
  code?: "VERIFY_FAILED";
}

export default class Verify extends AxonCommand {
  static override summary = "Re-hash installed files against their digests";
  static override description =
    "Checks one model (or every installed one). Exits 1 with error[VERIFY_FAILED] when a file is missing, has the wrong size or hashes to the wrong digest; every problem is listed first (and, with --json, in the result's 'problems').";
  static override examples = ["<%= config.bin %> verify", "<%= config.bin %> verify demo/mlp@1.0.0", "<%= config.bin %> verify --json"];
  static override args = { ref: Args.string({ description: "model reference (default: every installed model)", required: false }) };

  async run(): Promise<VerifyResult> {
    const { args, flags } = await this.parse(Verify);
    const axon = await this.axon();
    const progress = this.progress(flags);
    await progress?.ready();
    let r: Awaited<ReturnType<typeof axon.verify>>;
    try {
      r = await axon.verify(args.ref, { onProgress: progress?.sink });
    } finally {
      progress?.stop();
    }
    if (!r.problems.length) {
      this.log(`ok: ${r.checked} file${r.checked === 1 ? "" : "s"} verified`);
      return { ok: true, checked: r.checked, problems: [] };
    }
    for (const p of r.problems) this.log(`${p.model}: ${p.file}: ${p.problem}`);
    const first = r.problems[0]!;
    const n = r.problems.length;
    const error = `${first.model}: ${first.file}: ${first.problem}${n > 1 ? ` (and ${n - 1} more)` : ""}; ${n} problem${n === 1 ? "" : "s"} in ${r.checked} file${r.checked === 1 ? "" : "s"}`;
    // The result is still printed (with --json) so scripts see every problem; the exit status says it failed.
    process.stderr.write(`error[VERIFY_FAILED]: ${error}\n`);
    process.exitCode = 1;
    return { ok: false, checked: r.checked, problems: r.problems, error, code: "VERIFY_FAILED" };
  }
}
