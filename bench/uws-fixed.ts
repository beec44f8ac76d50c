/**
 * The serving benchmark's calibration: uWebSockets.js (the same native build mlos serves with)
 * answering every POST with a fixed body after reading the request's, no model and no JSON. Its
 * CPU time per request is the floor that the kernel's TCP work and uWS's HTTP parsing set for any
 * server on this machine.
 *
 *   node dist/bench/uws-fixed.js PORT [RESPONSE_BYTES]
 */
import { loadUws } from "./uws.js";

const [portText, sizeText = "90"] = process.argv.slice(2);
const uws = loadUws();
const body = Buffer.from(JSON.stringify({ model_name: "fixed", outputs: [{ name: "y", datatype: "FP32", shape: [1, 3], data: [0] }] }).padEnd(Number(sizeText), " "));

uws
  .App()
  .post("/*", (res) => {
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    res.onData((_chunk, last) => {
      if (!last || aborted) return;
      res.cork(() => {
        res.writeHeader("Content-Type", "application/json").end(body);
      });
    });
  })
  .listen("127.0.0.1", Number(portText), (socket) => {
    if (!socket) {
      console.error(`uws-fixed: cannot listen on ${portText}`);
      process.exit(1);
    }
    process.send?.("ready");
  });
process.on("SIGTERM", () => process.exit(0));
