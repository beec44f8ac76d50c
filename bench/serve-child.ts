/**
 * MLOS Core for the serving benchmark, in a process of its own like the reference server:
 *   node dist/bench/serve-child.js AXON_HOME PORT BATCHING(0|1) TARGET...
 */
import { Axon } from "../src/axon/axon.js";
import { serve } from "../src/server/serve.js";

const [home, port, batching, ...targets] = process.argv.slice(2);
const server = await serve({
  axon: new Axon({ home }),
  httpPort: Number(port),
  host: "127.0.0.1",
  models: targets,
  batching: batching === "1" ? { maxBatchSize: 32, maxQueueDelayUs: 500 } : false,
});
process.send?.("ready");
process.on("SIGTERM", () => void server.close().then(() => process.exit(0)));
