// Run under valgrind by test/valgrind.test.ts: loads, runs and disposes the demo MLP in a loop,
// through the library's public entry (argv: model folder, rounds).
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
}
console.log("ok");
