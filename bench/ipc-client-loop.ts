/**
 * One load-generating IPC client for bench/ipc.bench.ts: connects to the socket in argv[2], runs
 * the demo MLP ([1, 4] in) back to back until argv[3] (epoch ms), then prints how many it ran.
 */
import { connect } from "../src/ipc/client.js";

const [socket, until] = process.argv.slice(2);
const c = await connect(socket!, { arenaBytes: 1 << 20 });
const x = c.tensor("float32", [1, 4], [5.1, 3.5, 1.4, 0.2]);
// Start together: wait for the parent's start signal on stdin.
await new Promise((r) => process.stdin.once("data", r));
const end = Number(until);
let n = 0;
while (Date.now() < end) {
  for (let i = 0; i < 64; i++) (await c.infer("mlp", { x })).y!.dispose();
  n += 64;
}
process.stdout.write(`${n}\n`);
c.close();
process.exit(0);
