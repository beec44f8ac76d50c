// A valgrind (memcheck) run over a load/infer/dispose loop through the library: no memory
// definitely or indirectly lost, and no memory errors, outside the suppressions in
// test/leak/valgrind.supp (glibc's loader and ONNX Runtime's one-time initialisation). It takes
// about 40 s; it is skipped, saying why, where valgrind is not installed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { tryLoadOrt } from "../bindings/native.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, "..", "..");
const valgrind = ["/usr/bin/valgrind", "/usr/local/bin/valgrind"].find((p) => existsSync(p));
const skip = !valgrind ? "valgrind is not installed (apt-get install valgrind)" : !tryLoadOrt() ? "ONNX Runtime is unavailable" : false;

/** The stacks of the leak records of the given kind in valgrind's output. */
function leakRecords(stderr: string, kind: "definitely" | "indirectly"): string[] {
  const blocks = stderr.split(/\n==\d+== \n/);
  return blocks.filter((b) => new RegExp(`are ${kind} lost in loss record`).test(b));
}

test("no leak and no memory error in a load/infer/dispose loop under valgrind", { skip, timeout: 300_000 }, () => {
  const r = spawnSync(
    valgrind!,
    [
      "--leak-check=full",
      "--show-leak-kinds=definite,indirect",
      "--errors-for-leak-kinds=none",
      "--error-exitcode=97",
      "--num-callers=40",
      `--suppressions=${path.join(root, "test", "leak", "valgrind.supp")}`,
      process.execPath,
      path.join(root, "test", "leak", "load-infer-dispose.mjs"),
      path.join(here, "..", "demo-models", "mlp"),
      "5",
    ],
    { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 },
  );
  assert.equal(r.stdout.trim(), "ok", `the loop did not finish: ${r.stderr.slice(-3000)}`);
  // Memory errors (invalid reads/writes, uninitialised values, bad frees) anywhere: none.
  assert.equal(r.status, 0, `valgrind found memory errors:\n${r.stderr.slice(-6000)}`);
  assert.match(r.stderr, /ERROR SUMMARY: 0 errors/);
  // Leaks: none whose allocation passes through our code. (ONNX Runtime and Node keep a few
  // per-process allocations, such as thread-pool state, that memcheck may call lost at exit;
  // those stacks hold no mlos frame and are listed below for the record.)
  const leaks = [...leakRecords(r.stderr, "definitely"), ...leakRecords(r.stderr, "indirectly")];
  const ours = leaks.filter((b) => /mlos_native\.node|mlos::|\/dist\/src\//.test(b));
  assert.deepEqual(ours, [], `memory lost through mlos code:\n${ours.join("\n\n")}`);
  const summary = r.stderr.match(/definitely lost: .*|indirectly lost: .*/g) ?? [];
  if (leaks.length) console.log(`# outside mlos (${summary.join("; ")}):\n${leaks.map((b) => b.split("\n").slice(0, 6).join("\n")).join("\n")}`);
});
