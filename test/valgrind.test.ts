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

test("no leak and no memory error in a load/infer/dispose loop under valgrind", { skip, timeout: 300_000 }, () => {
  const r = spawnSync(
    valgrind!,
    [
      "--leak-check=full",
      "--show-leak-kinds=definite,indirect",
      "--errors-for-leak-kinds=definite,indirect",
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
  const summary = (r.stderr.match(/(definitely|indirectly) lost: .*|ERROR SUMMARY: .*/g) ?? []).join("; ");
  assert.equal(r.stdout.trim(), "ok", `the loop did not finish: ${r.stderr.slice(-3000)}`);
  assert.equal(r.status, 0, `valgrind found problems (${summary}):\n${r.stderr.slice(-6000)}`);
  assert.match(r.stderr, /definitely lost: 0 bytes|All heap blocks were freed/);
  assert.match(r.stderr, /ERROR SUMMARY: 0 errors/);
});
