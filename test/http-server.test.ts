// mlos's HTTP/1.1 server (native/src/http), the transport under the HTTP door, driven by real
// clients (curl, fetch, raw sockets) against handlers written here: pipelining with late answers,
// limits, malformed input, slow and vanishing clients, backpressure, TLS.
import assert from "node:assert/strict";
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { tryLoadNative, type NativeHttpServer, type NativeHttpServerOptions } from "../bindings/native.js";

const native = tryLoadNative();
// The servers here run in this process: a client must not block its event loop (no execFileSync).
const run = async (cmd: string, args: string[]) => (await promisify(execFile)(cmd, args, { encoding: "utf8", maxBuffer: 1 << 26 })).stdout;
const skip = native?.HttpServer ? false : "the native addon is unavailable";

interface Seen {
  id: number;
  method: string;
  target: string;
  headers: string;
  body?: Buffer;
}

/** A server whose handler is `handle`; every request is recorded in `seen`, aborts in `aborted`. */
function start(handle: (s: NativeHttpServer, r: Seen) => void, options: Partial<NativeHttpServerOptions> = {}) {
  const seen: Seen[] = [];
  const aborted: number[] = [];
  const server: NativeHttpServer = new native!.HttpServer!({
    onRequest(id, method, target, headers, body) {
      const r = { id, method, target, headers, body };
      seen.push(r);
      handle(server, r);
    },
    onAbort(id) {
      aborted.push(id);
    },
    ...options,
  });
  const port = server.listen("127.0.0.1", 0);
  return { server, port, seen, aborted, base: `http://127.0.0.1:${port}` };
}

const text = (s: NativeHttpServer, r: Seen, body: string, status = "200 OK") => s.respond(r.id, status, "Content-Type: text/plain\r\n", body);

/** Writes `data` on a new connection and collects everything until the server closes it (or `ms`). */
function exchange(port: number, data: string | Buffer, ms = 5000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.write(data));
    const chunks: Buffer[] = [];
    sock.on("data", (d) => chunks.push(d));
    sock.on("error", reject);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: false });
    }, ms);
    sock.on("close", () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed: true });
    });
  });
}

const bodiesOf = (raw: string): string[] => {
  const out: string[] = [];
  let rest = raw;
  for (;;) {
    const split = rest.indexOf("\r\n\r\n");
    if (split < 0) return out;
    const length = Number(/content-length: *(\d+)/i.exec(rest.slice(0, split))?.[1] ?? 0);
    out.push(rest.slice(split + 4, split + 4 + length));
    rest = rest.slice(split + 4 + length);
  }
};

describe("the HTTP/1.1 server", { skip }, () => {
  const open: NativeHttpServer[] = [];
  after(async () => {
    for (const s of open) await s.close();
  });
  const track = <T extends { server: NativeHttpServer }>(x: T): T => {
    open.push(x.server);
    return x;
  };

  it("answers pipelined requests in order when later ones are answered first", async () => {
    // Answered in reverse: each response waits for the ones before it.
    const pending: Array<() => void> = [];
    const { port } = track(start((s, r) => {
      if (r.target === "/6") return void text(s, r, "answer to /6");
      pending.push(() => text(s, r, `answer to ${r.target}`));
      if (pending.length === 5) for (const p of pending.reverse()) p();
    }));
    const req = (p: string) => `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const got = await exchange(port, ["/1", "/2", "/3", "/4", "/5"].map(req).join("") + "GET /6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const bodies = bodiesOf(got.text);
    assert.ok(got.closed, "the connection closed after the Connection: close request's answer");
    assert.deepEqual(bodies, ["answer to /1", "answer to /2", "answer to /3", "answer to /4", "answer to /5", "answer to /6"]);
  });

  it("gives a handler the method, target, lower-cased headers and the whole body, chunked or not", async () => {
    const { port, seen } = track(start((s, r) => text(s, r, "ok")));
    await exchange(port, "POST /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing: One Two\r\nContent-Length: 5\r\n\r\nhello" +
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    assert.equal(seen.length, 2);
    assert.equal(seen[0]!.method, "POST");
    assert.equal(seen[0]!.target, "/a/b?x=1");
    assert.match(seen[0]!.headers, /^x-thing: One Two$/m);
    assert.equal(seen[0]!.body!.toString(), "hello");
    assert.equal(seen[1]!.body!.toString(), "abcdefg");
  });

  it("refuses a body over the limit with 413 and a malformed request with 400, in one line with a code, then closes", async () => {
    const { port } = track(start((s, r) => text(s, r, "ok"), { maxBodyBytes: 100 }));
    const big = await exchange(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + "x".repeat(101));
    assert.match(big.text, /^HTTP\/1\.1 413 Payload Too Large\r\n/);
    assert.match(big.text, /Connection: close/);
    assert.deepEqual(JSON.parse(bodiesOf(big.text)[0]!), { error: "the body is 101 bytes; the limit is 100", code: "BODY_TOO_LARGE" });
    assert.ok(big.closed);
    const chunked = await exchange(port, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + "y".repeat(64) + "\r\n40\r\n" + "y".repeat(64) + "\r\n0\r\n\r\n");
    assert.match(chunked.text, /^HTTP\/1\.1 413 /);
    const bad = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
    assert.match(bad.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
    const error = JSON.parse(bodiesOf(bad.text)[0]!) as { error: string; code: string };
    assert.equal(error.code, "BAD_HTTP");
    assert.match(error.error, /^malformed HTTP request: HPE_\w+ \(.+\)$/);
    assert.ok(bad.closed);
    // The requests before a malformed one are still answered, in order.
    const mixed = await exchange(port, "GET /fine HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n");
    assert.match(mixed.text, /^HTTP\/1\.1 200 OK[\s\S]*\r\n\r\nokHTTP\/1\.1 400 /);
  });

  it("answers Expect: 100-continue (curl sends it for larger bodies) and HEAD without a body", async () => {
    const { base } = track(start((s, r) => text(s, r, `got ${r.body?.length ?? 0} bytes`)));
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-http-"));
    writeFileSync(path.join(dir, "body"), "z".repeat(200_000));
    const t0 = Date.now();
    const out = await run("curl", ["-s", "-i", "--data-binary", `@${path.join(dir, "body")}`, "-H", "Expect: 100-continue", `${base}/up`]);
    assert.match(out, /HTTP\/1\.1 100 Continue/);
    assert.match(out, /got 200000 bytes$/);
    assert.ok(Date.now() - t0 < 900, "curl did not wait out its 1 s Expect timeout");
    const head = await run("curl", ["-s", "-I", `${base}/h`]);
    assert.match(head, /^HTTP\/1\.1 200 OK/);
    assert.match(head, /Content-Length: 11\r\n/i, "HEAD says how long the body (\"got 0 bytes\") would be");
    assert.match(head, /\r\n\r\n$/, "and sends none of it");
  });

  it("closes after the response for HTTP/1.0 and Connection: close", async () => {
    const { port } = track(start((s, r) => text(s, r, "bye")));
    const old = await exchange(port, "GET / HTTP/1.0\r\n\r\n");
    assert.ok(old.closed);
    assert.deepEqual(bodiesOf(old.text), ["bye"]);
    const close = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /not-read HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.ok(close.closed);
    assert.deepEqual(bodiesOf(close.text), ["bye"], "nothing after a Connection: close request is answered");
  });

  it("reports the requests of a client that went away to onAbort, and answers after that are refused", async () => {
    const held: Seen[] = [];
    const { server, port, aborted } = track(start((_s, r) => held.push(r)));
    const sock = net.connect(port, "127.0.0.1", () => sock.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"));
    while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
    sock.destroy();
    for (let i = 0; i < 100 && aborted.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(aborted, held.map((r) => r.id));
    assert.equal(server.respond(held[0]!.id, "200 OK", "", "late"), false);
  });

  it("closes a connection whose request head does not complete (a slow client cannot hold it)", async () => {
    const { server, port } = track(start((s, r) => text(s, r, "ok"), { idleTimeoutMs: 300 }));
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const closed = new Promise<number>((resolve) => sock.once("close", () => resolve(Date.now())));
    const t0 = Date.now();
    const drip = setInterval(() => sock.write("X"), 100); // a byte at a time, never a whole head
    sock.write("GET / HTTP/1.1\r\nX-Slow: ");
    const at = await closed;
    clearInterval(drip);
    assert.ok(at - t0 < 3000, `closed after ${at - t0} ms`);
    assert.equal(server.openConnections(), 0);
  });

  it("stops reading a client that does not read its answers, and answers everything once it does", async () => {
    const { port, seen } = track(start((s, r) => text(s, r, "x".repeat(64 * 1024)), { maxWriteQueueBytes: 1 << 20 }));
    const n = 400; // 25 MiB of answers
    const sock = net.connect(port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    sock.pause();
    sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(n));
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(seen.length < n, `the server stopped taking requests (${seen.length} of ${n}) while the client read nothing`);
    // Counts complete responses (head and all of its body).
    let responses = 0;
    let buf = Buffer.alloc(0);
    await new Promise<void>((resolve) => {
      sock.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const split = buf.indexOf("\r\n\r\n");
          if (split < 0) break;
          const length = Number(/content-length: *(\d+)/i.exec(buf.subarray(0, split).toString("latin1"))?.[1]);
          if (buf.length < split + 4 + length) break;
          assert.equal(length, 64 * 1024);
          buf = buf.subarray(split + 4 + length);
          responses++;
        }
        if (responses === n) resolve();
      });
      sock.resume();
    });
    assert.equal(seen.length, n);
    sock.destroy();
  });

  it("serves TLS with the certificate and key files, and does not answer plain HTTP on that port", async (t) => {
    if (spawnSync("openssl", ["version"]).status !== 0) return t.skip("no openssl command");
    if (native!.httpTlsUnavailable) return t.skip(native!.httpTlsUnavailable);
    const dir = mkdtempSync(path.join(tmpdir(), "mlos-tls-"));
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=localhost"], { stdio: "ignore" });
    const { port } = track(start((s, r) => text(s, r, `secure ${r.body?.length ?? 0}`), { tls: { certFile: path.join(dir, "cert.pem"), keyFile: path.join(dir, "key.pem") } }));
    writeFileSync(path.join(dir, "body"), "x".repeat(100_000));
    const out = await run("curl", ["-s", "--cacert", path.join(dir, "cert.pem"), "--data-binary", `@${path.join(dir, "body")}`, `https://localhost:${port}/`]);
    assert.equal(out, "secure 100000");
    const plain = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2000);
    assert.doesNotMatch(plain.text, /200 OK/);
    assert.throws(() => new native!.HttpServer!({ onRequest() {}, onAbort() {}, tls: { certFile: path.join(dir, "nope.pem"), keyFile: path.join(dir, "key.pem") } }).listen("127.0.0.1", 0), (e: Error & { code?: string }) => e.code === "TLS_INVALID" && /cannot load the TLS certificate .*nope\.pem/.test(e.message));
  });

  it("says why it cannot listen, and close() ends every connection", async () => {
    const a = track(start((s, r) => text(s, r, "ok")));
    const other = new native!.HttpServer!({ onRequest() {}, onAbort() {} });
    assert.throws(() => other.listen("127.0.0.1", a.port), (e: Error & { code?: string }) => e.code === "LISTEN_FAILED" && /cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/.test(e.message));
    await other.close();
    const held: Seen[] = [];
    const b = start((_s, r) => held.push(r));
    const sock = net.connect(b.port, "127.0.0.1", () => sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const closed = new Promise((r) => sock.once("close", r));
    while (held.length < 1) await new Promise((r) => setTimeout(r, 10));
    await b.server.close();
    await closed;
    assert.deepEqual(b.aborted, [held[0]!.id]);
    assert.equal(b.server.openConnections(), 0);
  });
});
