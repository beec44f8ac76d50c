/**
 * Calibration for the serving benchmark: mlos's own HTTP/1.1 server (native/src/http, the HTTP
 * door's transport) answering every POST with a fixed body from a JS handler, as the door's
 * router does, with no model. Its CPU time per request is what the transport and one call into JS
 * cost; beside uWebSockets.js doing the same (bench/uws-fixed.ts) it places the server's floor.
 *
 *   node dist/bench/door-fixed.js PORT [RESPONSE_BYTES]
 */
import { loadNative } from "../bindings/native.js";

const [portText, sizeText = "90"] = process.argv.slice(2);
const body = Buffer.from(JSON.stringify({ model_name: "fixed", outputs: [{ name: "y", datatype: "FP32", shape: [1, 3], data: [0] }] }).padEnd(Number(sizeText), " "));
const native = loadNative();
if (!native.HttpServer) throw new Error("this build of the addon has no HTTP server");
const server = new native.HttpServer({
  onRequest(id) {
    server.respond(id, "200 OK", "Content-Type: application/json\r\n", body);
  },
  onAbort() {},
});
server.listen("127.0.0.1", Number(portText));
process.send?.("ready");
process.on("SIGTERM", () => process.exit(0));
