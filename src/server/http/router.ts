/**
 * The HTTP door's plumbing on uWebSockets.js, which every API module (KServe v2, repository,
 * MLOS v1, operations) registers its routes on: a request context, the body reader (with its
 * limits), authentication, and the one place responses are written.
 *
 * uWS rules kept here: `onAborted` is attached before anything asynchronous; everything needed from
 * the request is copied synchronously; body chunks are copied (their memory is reused); responses
 * are written inside `cork`, and never after the client went away.
 */
import { ADMIN_ROUTES, isLoopback } from "../admin-policy.js";
import { HttpError, toHttpError } from "../http-error.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";

export const JSON_TYPE = "application/json";
export const JSON_HEADERS: Readonly<Record<string, string>> = Object.freeze({ "Content-Type": JSON_TYPE });

/** What a handler knows of its request: everything is copied from uWS before the handler returns. */
export class Ctx {
  aborted = false;
  #controller: AbortController | undefined;
  constructor(
    readonly method: string,
    readonly url: string,
    /** The request headers the routes read (authorization, content-length, inference-header-content-length), lower-case. */
    readonly headers: Readonly<Record<string, string | undefined>>,
    /** The route's `:name` parameters, URL-decoded, in order. */
    readonly params: string[],
    readonly controllers: AbortController[],
  ) {}
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
}

/**
 * A route handler. It may answer synchronously (no promise between the request and the response,
 * which shows on microsecond models) or with a promise.
 */
export type Handler = (ctx: Ctx, body: Buffer | undefined) => Reply | Promise<Reply>;

/** Who may call a route: anyone (health), API-key holders, or admins (see admin-policy.ts). */
export type Access = "open" | "api" | "admin";

export interface RouterOptions {
  /** Largest request body accepted, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  apiKey?: string;
  adminKey?: string;
}

/** The headers any route reads; uWS gives "" for a missing one. */
const READ_HEADERS = ["authorization", "content-length", "inference-header-content-length"] as const;

export class HttpRouter {
  readonly #app: TemplatedApp;
  readonly #options: RouterOptions;
  readonly #controllers: AbortController[] = [];

  constructor(app: TemplatedApp, options: RouterOptions) {
    this.#app = app;
    this.#options = options;
  }

  /** Registers `handler` for `method pattern`; `withBody` reads the request body first. */
  route(method: "get" | "post" | "del", pattern: string, access: Access, withBody: boolean, handler: Handler): void {
    const paramCount = (pattern.match(/:/g) ?? []).length;
    this.#app[method](pattern, (res: HttpResponse, req: HttpRequest) => {
      const headers: Record<string, string | undefined> = {};
      for (const name of READ_HEADERS) {
        const v = req.getHeader(name);
        if (v !== "") headers[name] = v;
      }
      const params: string[] = [];
      for (let i = 0; i < paramCount; i++) params.push(decodeURIComponent(req.getParameter(i) ?? ""));
      const ctx = new Ctx(req.getMethod(), req.getUrl(), headers, params, this.#controllers);
      res.onAborted(() => ctx.abort());
      const fail = (e: unknown): void => {
        const h = toHttpError(e);
        this.send(res, ctx, { status: h.status, body: { error: h.message, code: h.code }, headers: h.headers });
      };
      try {
        this.#authorize(ctx, access, res);
      } catch (e) {
        fail(e);
        return;
      }
      const run = (body: Buffer | undefined): void => {
        let reply: Reply | Promise<Reply>;
        try {
          reply = handler(ctx, body);
        } catch (e) {
          fail(e);
          return;
        }
        if (reply instanceof Promise) reply.then((r) => this.send(res, ctx, r), fail);
        else this.send(res, ctx, reply);
      };
      if (withBody) this.#readBody(res, headers, run, fail);
      else run(undefined);
    });
  }

  /** Answers every request no route took with 404 NOT_FOUND. */
  notFound(): void {
    this.#app.any("/*", (res, req) => {
      const url = req.getUrl();
      const method = req.getMethod().toUpperCase();
      res.cork(() => {
        res.writeStatus("404 Not Found").writeHeader("Content-Type", JSON_TYPE).end(JSON.stringify({ error: `no route ${method} ${url}`, code: "NOT_FOUND" }));
      });
    });
  }

  /** Writes `reply` (unless the client went away), then calls its `after`. */
  send(res: HttpResponse, ctx: Ctx, reply: Reply): void {
    if (ctx.aborted) {
      reply.after?.(); // the client went away: nothing to write, but the outputs' memory goes back
      return;
    }
    ctx.release();
    const status = reply.status ?? 200;
    res.cork(() => {
      res.writeStatus(`${status} ${STATUS_TEXT[status] ?? ""}`.trim());
      if (reply.headers) for (const k in reply.headers) res.writeHeader(k, reply.headers[k]!);
      if (reply.parts) {
        if (!reply.headers?.["Content-Type"]) res.writeHeader("Content-Type", "application/octet-stream");
        res.end(reply.parts.length === 1 ? reply.parts[0]! : Buffer.concat(reply.parts));
      } else if (reply.body === undefined) {
        res.end();
      } else {
        res.writeHeader("Content-Type", JSON_TYPE);
        res.end(JSON.stringify(reply.body));
      }
    });
    reply.after?.();
  }

  #authorize(ctx: Ctx, access: Access, res: HttpResponse): void {
    if (access === "open") return;
    const admin = access === "admin";
    const { apiKey, adminKey } = this.#options;
    if (admin && adminKey === undefined && !isLoopback(Buffer.from(res.getRemoteAddressAsText()).toString())) {
      throw new HttpError(403, "ADMIN_LOCAL_ONLY", `${ctx.method.toUpperCase()} ${ctx.url} is an admin route (${ADMIN_ROUTES}): without an admin key (--admin-key) the server answers it for clients on this machine only`);
    }
    const key = admin ? adminKey ?? apiKey : apiKey;
    if (!key) return;
    const auth = ctx.headers.authorization ?? "";
    const given = auth.startsWith("Bearer ") ? auth.slice(7) : undefined;
    if (given === undefined) throw new HttpError(401, "UNAUTHORIZED", "this route needs Authorization: Bearer <key>", { "WWW-Authenticate": 'Bearer realm="mlos"' });
    const ok = given === key || (!admin && adminKey !== undefined && given === adminKey);
    if (!ok) throw new HttpError(admin ? 403 : 401, admin ? "FORBIDDEN" : "UNAUTHORIZED", admin ? "this route needs the admin key" : "the API key is not valid");
  }

  /** Reads the whole body (checked against Content-Length and the limit), then calls `run` with it. */
  #readBody(res: HttpResponse, headers: Record<string, string | undefined>, run: (body: Buffer) => void, fail: (e: unknown) => void): void {
    const maxBody = this.#options.maxBodyBytes;
    const declared = headers["content-length"] !== undefined ? Number(headers["content-length"]) : undefined;
    if (declared !== undefined && (!Number.isSafeInteger(declared) || declared < 0)) {
      fail(new HttpError(400, "BAD_REQUEST", `Content-Length ${headers["content-length"]} is not a byte count`));
      return;
    }
    if (declared !== undefined && declared > maxBody) {
      fail(new HttpError(413, "BODY_TOO_LARGE", `the body is ${declared} bytes; the limit is ${maxBody}`));
      return;
    }
    let buf = declared !== undefined ? Buffer.allocUnsafe(declared) : Buffer.alloc(0);
    let got = 0;
    let done = false;
    res.onData((chunk, last) => {
      if (done) return;
      const c = new Uint8Array(chunk);
      if (got + c.byteLength > (declared ?? maxBody)) {
        done = true;
        fail(declared !== undefined
          ? new HttpError(400, "BAD_REQUEST", `the body is longer than its Content-Length ${declared}`)
          : new HttpError(413, "BODY_TOO_LARGE", `the body is larger than the limit of ${maxBody} bytes`));
        return;
      }
      if (declared === undefined) {
        const grown = Buffer.allocUnsafe(got + c.byteLength);
        buf.copy(grown, 0, 0, got);
        buf = grown;
      }
      buf.set(c, got); // the chunk's memory is reused by uWS: copy it now
      got += c.byteLength;
      if (last) {
        done = true;
        run(buf.subarray(0, got));
      }
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

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  201: "Created",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  413: "Payload Too Large",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
  499: "Client Closed Request",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};
