import { Flags } from "@oclif/core";
import { AxonCommand } from "../../base.js";

export interface CacheVerifyResult {
  ok: boolean;
  checked: number;
  corrupt: Array<{ digest: string; actual?: string }>;
  /** True when the corrupt blobs were removed (--fix). */
  fixed: boolean;
  error?: string;
  code?: "VERIFY_FAILED";
}

export default class CacheVerify extends AxonCommand {
  static override summary = "Re-hash every blob in the cache against its digest";
  static override description =
    "Exits 1 with error[VERIFY_FAILED] when a blob is corrupt, after listing them all. With --fix, corrupt blobs are removed instead (exit 0); models that used them then fail 'axon verify' and need reinstalling.";
  static override examples = ["<%= config.bin %> cache verify", "<%= config.bin %> cache verify --fix", "<%= config.bin %> cache verify --json"];
  static override flags = {
    fix: Flags.boolean({ description: "remove corrupt blobs", default: false }),
  };

  async run(): Promise<CacheVerifyResult> {
    const { flags } = await this.parse(CacheVerify);
    const axon = await this.axon();
    const r = await axon.cacheVerify({ fix: flags.fix });
    for (const c of r.corrupt) this.log(`${flags.fix ? "removed corrupt" : "corrupt"} blob ${c.digest}${c.actual ? ` (hashes to ${c.actual})` : ""}`);
    if (!r.corrupt.length) {
      this.log(`ok: ${r.checked} blob${r.checked === 1 ? "" : "s"} verified`);
      return { ok: true, checked: r.checked, corrupt: [], fixed: false };
    }
    if (flags.fix) {
      this.log(`removed ${r.corrupt.length} corrupt blob${r.corrupt.length === 1 ? "" : "s"} of ${r.checked}; run 'axon verify' to find models to reinstall`);
      return { ok: true, checked: r.checked, corrupt: r.corrupt, fixed: true };
    }
    const n = r.corrupt.length;
    const error = `blob ${r.corrupt[0]!.digest} is corrupt${n > 1 ? ` (and ${n - 1} more)` : ""}; ${n} of ${r.checked} blobs (remove them with 'axon cache verify --fix')`;
    process.stderr.write(`error[VERIFY_FAILED]: ${error}\n`);
    process.exitCode = 1;
    return { ok: false, checked: r.checked, corrupt: r.corrupt, fixed: false, error, code: "VERIFY_FAILED" };
  }
}
