/**
 * A small reverse proxy (node:http) in front of a registry that injects failures for matching
 * requests: HTTP 500/503, 429 with Retry-After, a connection reset, or a body cut off mid-stream.
 * The Host header passes through unchanged, so the registry's Location headers point at the proxy.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type net from "node:net";

export type FaultKind = "500" | "503" | "429" | "reset" | "truncate";

export interface FaultRule {
  /** Matched against `req.url` (path + query). */
  match: RegExp | ((req: IncomingMessage) => boolean);
  method?: string;
  kind: FaultKind;
  /** How many matching requests fail (then the rule is spent). */
  times: number;
  /** Retry-After value for 429 (default "0"). */
  retryAfter?: string;
}

export interface SeenRequest {
  method: string;
  url: string;
  authorization?: string;
  fault?: FaultKind;
}

export interface FaultProxy {
  url: string;
  host: string;
  requests: SeenRequest[];
  addFault(rule: FaultRule): void;
  clearFaults(): void;
  /** Faults still pending (times not yet used up). */
  pending(): number;
  stop(): Promise<void>;
}

export interface FaultProxyOptions {
  /** Handle a request here instead of forwarding it: return true when it answered. */
  intercept?: (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>;
}

function matches(rule: FaultRule, req: IncomingMessage): boolean {
  if (rule.times <= 0) return false;
  if (rule.method && rule.method !== req.method) return false;
  return typeof rule.match === "function" ? rule.match(req) : rule.match.test(req.url ?? "");
}

function reset(socket: net.Socket): void {
  const s = socket as net.Socket & { resetAndDestroy?: () => void };
  if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
  else s.destroy();
}

export async function startFaultProxy(target: string, opts: FaultProxyOptions = {}): Promise<FaultProxy> {
  const upstream = new URL(target);
  const rules: FaultRule[] = [];
  const requests: SeenRequest[] = [];
  const sockets = new Set<net.Socket>();

  const server = http.createServer(async (req, res) => {
    const seen: SeenRequest = { method: req.method ?? "GET", url: req.url ?? "/", authorization: req.headers.authorization };
    requests.push(seen);
    try {
      if (opts.intercept && (await opts.intercept(req, res))) return;
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
      return;
    }
    const rule = rules.find((r) => matches(r, req));
    if (rule && rule.kind !== "truncate") {
      rule.times--;
      seen.fault = rule.kind;
      if (rule.kind === "reset") {
        reset(req.socket);
        return;
      }
      req.resume();
      const status = Number(rule.kind);
      const body = JSON.stringify({ errors: [{ code: status === 429 ? "TOOMANYREQUESTS" : "UNKNOWN", message: `injected ${status}` }] });
      const headers: Record<string, string> = { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) };
      if (status === 429) headers["retry-after"] = rule.retryAfter ?? "0";
      res.writeHead(status, headers);
      res.end(body);
      return;
    }
    const up = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (ures) => {
        if (rule && rule.kind === "truncate" && (ures.statusCode === 200 || ures.statusCode === 206)) {
          rule.times--;
          seen.fault = "truncate";
          res.writeHead(ures.statusCode ?? 200, ures.headers);
          const len = Number(ures.headers["content-length"] ?? "0");
          const keep = Math.max(1, Math.floor(len / 2));
          let sent = 0;
          ures.on("data", (d: Buffer) => {
            if (sent >= keep) return;
            const part = d.subarray(0, keep - sent);
            sent += part.length;
            res.write(part, () => {
              if (sent >= keep) {
                ures.destroy();
                setTimeout(() => reset(req.socket), 20);
              }
            });
          });
          return;
        }
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
        // an upstream body that ends short (distribution's 416 has Content-Length but no body) must not hang the client
        ures.on("close", () => {
          if (!ures.complete) res.destroy();
        });
        ures.on("error", () => res.destroy());
      },
    );
    up.on("error", (e) => {
      if (!res.headersSent) {
        res.statusCode = 502;
        res.end(String(e));
      } else res.destroy();
    });
    req.pipe(up);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  return {
    url: `http://${host}`,
    host,
    requests,
    addFault(rule) {
      rules.push({ ...rule });
    },
    clearFaults() {
      rules.length = 0;
    },
    pending() {
      return rules.reduce((n, r) => n + Math.max(0, r.times), 0);
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
