// Run under valgrind by test/native-blob-fetch.test.ts: native blob fetches against a local
// node:http server (a full body with progress, a 404, an abort mid-body, an onProgress that
// throws), then one transfer still running at exit. Prints "ok".
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { tryLoadNative } from "../../dist/bindings/native.js";

const addon = tryLoadNative();
if (!addon?.BlobFetch) throw new Error("no native blob fetcher");
const dir = mkdtempSync(path.join(os.tmpdir(), "blob-fetch-leak-"));
const body = Buffer.alloc(3 << 20, 7);
const srv = http.createServer((req, res) => {
  if (req.url === "/404") {
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"errors":[]}');
  } else if (req.url === "/stall") {
    res.writeHead(200, { "content-length": String(body.length) });
    res.write(body.subarray(0, 1 << 20));
  } else {
    res.writeHead(200, { "content-length": String(body.length) });
    res.end(body);
  }
});
await new Promise((r) => srv.listen(0, "127.0.0.1", r));
const port = srv.address().port;
const fetch = (p, file) => new addon.BlobFetch({ host: "127.0.0.1", port, path: p, file: path.join(dir, file) });

const ok = await fetch("/ok", "a").start(() => {});
const notFound = await fetch("/404", "b").start();
const stalled = fetch("/stall", "c");
const pending = stalled.start();
setTimeout(() => stalled.abort(), 300);
const aborted = await pending;
let threw = false;
await fetch("/ok", "d")
  .start(() => {
    throw new Error("from onProgress");
  })
  .catch(() => (threw = true));
if (!ok.complete || notFound.status !== 404 || aborted.code !== "ECANCELED" || !threw) {
  throw new Error(`unexpected: ${JSON.stringify([ok.complete, notFound.status, aborted.code, threw])}`);
}
void fetch("/stall", "e").start(); // left running: exit must stop it
await new Promise((r) => setTimeout(r, 200));
rmSync(dir, { recursive: true, force: true });
srv.closeAllConnections();
srv.close();
console.log("ok");
process.exit(0);
