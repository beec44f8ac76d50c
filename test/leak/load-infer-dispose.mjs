// Run under valgrind by test/valgrind.test.ts: loads, runs and disposes the demo MLP in a loop,
// through the library's public entry (argv: model folder, rounds), and the server's native KServe
// JSON fast path on it: single and batched runs, malformed bodies, a response larger than the
// reused buffer.
import { Runtime, Tensor } from "mlos";

const [dir, rounds = "5"] = process.argv.slice(2);
const runtime = new Runtime();
for (let round = 0; round < Number(rounds); round++) {
  const model = await runtime.load(dir, { intraOpThreads: 1, interOpThreads: 1 });
  for (let i = 0; i < 40; i++) {
    const x = Tensor.float32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
    const { y } = await model.infer({ x });
    y.dispose();
  }
  for (let i = 0; i < 10; i++) {
    const { y } = await model.infer({ x: Tensor.float32([1, 4]) }, { timeoutMs: 10_000 });
    y.dispose();
  }
  await model.dispose();

  const inline = await runtime.load(dir, { intraOpThreads: 1, interOpThreads: 1, runMode: "inline" });
  const body = (rows, extra = "") => Buffer.from(`{${extra}"inputs":[{"name":"x","shape":[${rows},4],"datatype":"FP32","data":[${Array.from({ length: rows * 4 }, (_, i) => (i % 7) / 3).join(",")}]}]}`);
  // The plugin's KServe JSON codec, the capability the server's fast path uses (src/protocol/kserve.ts).
  const codec = inline.capability("kserve-v2-json");
  if (!codec) throw new Error("the ONNX Runtime plugin offers no kserve-v2-json codec");
  const run = (b) => codec.runSync(b, "mlp", "1.0.0");
  const good = body(2, '"id":"r",');
  const bad = [Buffer.from("{"), Buffer.from('{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}'), good.subarray(0, good.length - 3), Buffer.alloc(0)];
  for (let i = 0; i < 20; i++) {
    if (!run(good)) throw new Error("the fast path declined a valid request");
    for (const b of bad) if (run(b)) throw new Error("the fast path took a malformed request");
    const batch = codec.runBatchSync([good, ...bad, body(1), body(3), body(6)], "mlp", "1.0.0", 8);
    if (!batch || !batch[0] || batch.slice(1, 5).some((r) => r)) throw new Error("batch answers are wrong");
  }
  if (!run(body(3000))) throw new Error("a large request was declined");
  await inline.dispose();
}
console.log("ok");
