/**
 * The HTTP door's plumbing, which every API module (KServe v2, repository, MLOS v1, operations)
 * registers its routes on: route matching, a request context, authentication, and the one place
 * responses are written. Under it is mlos's own HTTP/1.1 server (native/src/http: libuv, llhttp,
 * TLS through Node's OpenSSL), which reads whole requests, enforces the body limit, and writes
 * responses in request order however late each is answered, so pipelined requests are served.
 */
import type { NativeHttpServer } from "../../../bindings/native.js";
import { authorize, type Access } from "../admin-policy.js";
import { HttpError, toHttpError } from "../http-error.js";

export type { Access };

export const JSON_TYPE = "application/json";
export const JSON_HEADERS: Readonly<Record<string, string>> = Object.freeze({ "Content-Type": JSON_TYPE });

/** What a handler knows of its request. */
export class Ctx {
  aborted = false;
  #controller: AbortController | undefined;
  #headers: Record<string, string | undefined> | undefined;
  constructor(
    /** The server's id of this request (for the response and the peer address). */
    readonly id: number,
    /** Lower case: "get", "post", "delete", ... */
    readonly method: string,
    /** The path, without the query. */
    readonly url: string,
    readonly rawHeaders: string,
    /** The route's `:name` parameters, URL-decoded, in order. */
    readonly params: string[],
    readonly controllers: AbortController[],
  ) {}
  /** The request headers by lower-case name (repeated headers joined with ", "); parsed on first use. */
  get headers(): Readonly<Record<string, string | undefined>> {
    if (!this.#headers) this.#headers = parseHeaders(this.rawHeaders);
    return this.#headers;
  }
  /**
   * Aborted when the client goes away. Made on first use only: a request answered synchronously
   * never needs one (AbortControllers cost microseconds; unused ones are reused).
   */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = this.controllers.pop() ?? new AbortController();
      if (this.aborted) this.#controller.abort(new Error("the client went away"));
    }
    return this.#controller.signal;
  }
  abort(): void {
    this.aborted = true;
    this.#controller?.abort(new Error("the client went away"));
  }
  /** Hands an unaborted controller back for reuse. */
  release(): void {
    if (this.#controller && !this.aborted && this.controllers.length < 4096) this.controllers.push(this.#controller);
    this.#controller = undefined;
  }
}

function parseHeaders(raw: string): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const line of raw.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    const prev = out[name];
    out[name] = prev === undefined ? value : `${prev}, ${value}`;
  }
  return out;
}

/** A handler's answer. */
export interface Reply {
  status?: number;
  /** Sent as JSON. */
  body?: unknown;
  /** Pre-encoded body parts (binary tensor responses, a native codec's response). */
  parts?: Uint8Array[];
  headers?: Readonly<Record<string, string>>;
  /** Called once the response is written (or the client is gone): releases what the body viewed. */
  after?: () => void;
  /**
   * A streamed body (Server-Sent Events ...): sent chunked as `stream` writes it; the response
   * ends when its promise settles. `write` returns false once the client is gone (then stop).
   * The request's `signal` stays live until it ends.
   */
  stream?: (write: (chunk: string) => boolean) => Promise<void>;
}

/**
 * A route handler. It may answer synchronously (no promise between the request and the response,
 * which shows on microsecond models) or with a promise.
 */
export type Handler = (ctx: Ctx, body: Buffer | undefined) => Reply | Promise<Reply>;

export interface RouterOptions {
  apiKey?: string;
  adminKey?: string;
}

interface Route {
  /** The pattern's segments; null where a `:name` parameter goes. */
  segments: (string | null)[];
  access: Access;
  withBody: boolean;
  handler: Handler;
  /** How this route answers a failure (its API's error envelope); default `{error, code}`. */
  errorReply?: (e: unknown) => Reply;
}

const METHODS = { get: "GET", post: "POST", del: "DELETE" } as const;

export class HttpRouter {
  readonly #options: RouterOptions;
  readonly #controllers: AbortController[] = [];
  /** "METHOD segment-count" -> routes, in registration order. */
  readonly #routes = new Map<string, Route[]>();
  /** Requests answered asynchronously and not yet answered, for the client-went-away signal. */
  readonly #pending = new Map<number, Ctx>();
  #server: NativeHttpServer | undefined;

  constructor(options: RouterOptions) {
    this.#options = options;
  }

  /** The server the router answers through; set once, before the first request. */
  attach(server: NativeHttpServer): void {
    this.#server = server;
  }

  /** Registers `handler` for `method pattern`; `withBody` routes take the request body. */
  route(method: "get" | "post" | "del", pattern: string, access: Access, withBody: boolean, handler: Handler, errorReply?: (e: unknown) => Reply): void {
    const segments = pattern.split("/").slice(1).map((s) => (s.startsWith(":") ? null : s));
    const key = `${METHODS[method]} ${segments.length}`;
    let list = this.#routes.get(key);
    if (!list) this.#routes.set(key, (list = []));
    list.push({ segments, access, withBody, handler, errorReply });
  }

  /** The server's onRequest: one complete request. */
  readonly onRequest = (id: number, method: string, target: string, rawHeaders: string, body: Buffer | undefined): void => {
    const q = target.indexOf("?");
    const path = q < 0 ? target : target.slice(0, q);
    const parts = path.split("/").slice(1);
    const list = this.#routes.get(`${method} ${parts.length}`);
    let route: Route | undefined;
    const params: string[] = [];
    if (list) {
      for (const r of list) {
        let ok = true;
        for (let i = 0; i < parts.length; i++) {
          const seg = r.segments[i];
          if (seg !== null && seg !== parts[i]) {
            ok = false;
            break;
          }
        }
        if (ok) {
          route = r;
          break;
        }
      }
    }
    const ctx = new Ctx(id, method.toLowerCase(), path, rawHeaders, params, this.#controllers);
    if (!route) {
      this.send(ctx, { status: 404, body: { error: `no route ${method} ${path}`, code: "NOT_FOUND" } });
      return;
    }
    try {
      for (let i = 0; i < parts.length; i++) if (route.segments[i] === null) params.push(decodeURIComponent(parts[i]!));
      this.#authorize(ctx, route.access);
    } catch (e) {
      this.#fail(ctx, e instanceof URIError ? new HttpError(400, "BAD_REQUEST", `the path ${path} is not valid percent-encoding`) : e, route);
      return;
    }
    let reply: Reply | Promise<Reply>;
    try {
      reply = route.handler(ctx, route.withBody ? body : undefined);
    } catch (e) {
      this.#fail(ctx, e, route);
      return;
    }
    if (reply instanceof Promise) {
      this.#pending.set(id, ctx);
      reply.then(
        (r) => {
          this.#pending.delete(id);
          this.send(ctx, r);
        },
        (e) => {
          this.#pending.delete(id);
          this.#fail(ctx, e, route);
        },
      );
    } else {
      this.send(ctx, reply);
    }
  };

  /** The server's onAbort: the client of request `id` went away before its answer. */
  readonly onAbort = (id: number): void => {
    const ctx = this.#pending.get(id);
    if (!ctx) return;
    this.#pending.delete(id);
    ctx.abort();
  };

  #fail(ctx: Ctx, e: unknown, route?: Route): void {
    if (route?.errorReply) {
      this.send(ctx, route.errorReply(e));
      return;
    }
    const h = toHttpError(e);
    this.send(ctx, { status: h.status, body: { error: h.message, code: h.code }, headers: h.headers });
  }

  /** Writes `reply` (unless the client went away), then calls its `after`. */
  send(ctx: Ctx, reply: Reply): void {
    if (ctx.aborted || !this.#server) {
      reply.after?.(); // the client went away: nothing to write, but the outputs' memory goes back
      return;
    }
    const status = reply.status ?? 200;
    let head = "";
    if (reply.headers) for (const k in reply.headers) head += `${k}: ${reply.headers[k]}\r\n`;
    if (reply.stream) {
      this.#stream(ctx, STATUS_LINE[status] ?? String(status), head, reply);
      return;
    }
    ctx.release();
    let body: string | Uint8Array | undefined;
    if (reply.parts) {
      if (!reply.headers?.["Content-Type"]) head += "Content-Type: application/octet-stream\r\n";
      body = reply.parts.length === 1 ? reply.parts[0]! : Buffer.concat(reply.parts);
    } else if (reply.body !== undefined) {
      head += "Content-Type: application/json\r\n";
      body = JSON.stringify(reply.body);
    }
    this.#server.respond(ctx.id, STATUS_LINE[status] ?? String(status), head, body);
    reply.after?.();
  }

  #stream(ctx: Ctx, statusLine: string, head: string, reply: Reply): void {
    const server = this.#server!;
    const id = ctx.id;
    this.#pending.set(id, ctx); // so that the client going away aborts what feeds the stream
    server.respondStart(id, statusLine, head);
    const write = (chunk: string) => !ctx.aborted && server.respondChunk(id, chunk);
    const done = () => {
      this.#pending.delete(id);
      if (!ctx.aborted) server.respondEnd(id);
      ctx.release();
      reply.after?.();
    };
    reply.stream!(write).then(done, done); // a failing stream ends its body; the producer reports its error in the stream
  }

  #authorize(ctx: Ctx, access: Access): void {
    // Decided here without building the caller's description: the common case, on every request.
    if (access === "open" || (access === "api" && this.#options.apiKey === undefined)) return;
    authorize(access, this.#options, {
      what: `${ctx.method.toUpperCase()} ${ctx.url}`,
      kind: "route",
      authorization: ctx.headers.authorization,
      credentialHint: "Authorization: Bearer <key>",
      peerAddress: () => this.#server?.peerAddress(ctx.id) ?? "",
    });
  }
}

/** A JSON object body, or a 400 saying what is wrong with it (`what` names the route). */
export function parseJson(body: Buffer | undefined, what: string): Record<string, unknown> {
  if (!body || body.byteLength === 0) throw new HttpError(400, "BAD_REQUEST", `${what}: the body is empty; send a JSON object`);
  let v: unknown;
  try {
    v = JSON.parse(body.toString("utf8"));
  } catch (e) {
    throw new HttpError(400, "BAD_JSON", `${what}: the body is not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new HttpError(400, "BAD_REQUEST", `${what}: the body must be a JSON object`);
  return v as Record<string, unknown>;
}

/** "200 OK" and the rest, by status. */
const STATUS_LINE: Record<number, string> = {
  200: "200 OK",
  201: "201 Created",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  409: "409 Conflict",
  413: "413 Payload Too Large",
  422: "422 Unprocessable Entity",
  429: "429 Too Many Requests",
  499: "499 Client Closed Request",
  500: "500 Internal Server Error",
  501: "501 Not Implemented",
  502: "502 Bad Gateway",
  503: "503 Service Unavailable",
  504: "504 Gateway Timeout",
};
