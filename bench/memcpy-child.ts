/**
 * For bench/ipc.bench.ts: copies argv[2] bytes from one buffer to another (memcpy, through
 * Buffer.set) each time a line arrives on stdin, and answers the milliseconds it took. Started
 * pinned to the server's CPU, so that the IPC door's copy and this baseline run on the same core.
 */
import { createInterface } from "node:readline";

const bytes = Number(process.argv[2]);
const src = Buffer.alloc(bytes, 7);
const dst = Buffer.alloc(bytes);
dst.set(src); // first touch
for await (const _ of createInterface({ input: process.stdin })) {
  const t0 = performance.now();
  dst.set(src);
  process.stdout.write(`${performance.now() - t0}\n`);
}
