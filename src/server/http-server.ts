/**
 * MLOS Core's HTTP front door on uWebSockets.js: the MLOS v1 API (the seed's), KServe v2 / Open
 * Inference Protocol (JSON tensors and the binary tensor extension, model metadata, health,
 * repository index/load/unload), `/health` and `/metrics`.
 *
 * uWS rules kept here: `onAborted` is attached before anything asynchronous; everything needed from
 * the request is copied synchronously; body chunks are copied (their memory is reused); responses
 * are written inside `cork`, and never after the client went away.
 */
import { createRequire } from "node:module";
import type { Model } from "../core/model.js";
import type { EncodedRequest } from "../core/plugin.js";
import type { ModelEntry, ModelTable, RegisterSpec } from "../core/model-table.js";
import type { Scheduler } from "../core/scheduler.js";
import { importPlugin, type Runtime } from "../core/runtime.js";
import type { TensorInfo } from "../core/signature.js";
import { getDefaultPool, type TensorPool } from "../tensor/pool.js";
import { Tensor } from "../tensor/tensor.js";
import { ADMIN_ROUTES, DEFAULT_HOST, isLoopback } from "./admin-policy.js";
import { HttpError, toHttpError } from "./http-error.js";
import { binaryData, datatypeOf, jsonData, tensorFromBinary, tensorFromJson } from "./kserve-codec.js";
import { mlosInputs, outputsToJson } from "./json-inputs.js";
import { ServerMetrics } from "./metrics.js";
import { loadUws, type HttpRequest, type HttpResponse, type TemplatedApp, type us_listen_socket } from "./uws.js";

export interface HttpServerOptions {
  table: ModelTable;
  runtime: Runtime;
  /** Default 8080; 0 picks a free port (see `port` on the result). */
  port?: number;
  /** Listen address; default 127.0.0.1 (this machine only). */
  host?: string;
  pool?: TensorPool;
  /** Largest request body accepted, in bytes (default 64 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** When set, every route but health needs `Authorization: Bearer <apiKey>` (or the admin key). */
  apiKey?: string;
  /**
   * When set, register/unregister/load/unload/plugins need `Authorization: Bearer <adminKey>`, from
   * any host. When not set, those routes answer loopback clients only (403 ADMIN_LOCAL_ONLY to
   * others), so that a server listening beyond this machine cannot be told to load arbitrary paths.
   */
  adminKey?: string;
  /** TLS: PEM certificate and key files. */
  tls?: { certFile: string; keyFile: string; passphrase?: string };
}

export interface HttpServer {
  readonly port: number;
  readonly metrics: ServerMetrics;
  close(): void;
}

const VERSION = (createRequire(import.meta.url)("../../../package.json") as { version: string }).version;
const JSON_TYPE = "application/json";
const JSON_HEADERS: Readonly<Record<string, string>> = Object.freeze({ "Content-Type": JSON_TYPE });

/** What a handler knows of its request: everything is copied from uWS before the handler returns. */
class Ctx {
  aborted = false;
  #controller: AbortController | undefined;
  constructor(
    readonly method: string,
    readonly url: string,
    /** The request headers the routes read (authorization, content-length, inference-header-content-length), lower-case. */
    readonly headers: Readonly<Record<string, string | undefined>>,
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

/** The headers any route reads; uWS gives "" for a missing one. */
const READ_HEADERS = ["authorization", "content-length", "inference-header-content-length"] as const;

/** Starts the server; resolves once it listens. */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const uws = loadUws();
  const { table, runtime } = options;
  const pool = options.pool ?? getDefaultPool();
  const maxBody = options.maxBodyBytes ?? 64 * 1024 * 1024;
  const metrics = new ServerMetrics(table, pool);
  const app: TemplatedApp = options.tls
    ? uws.SSLApp({ cert_file_name: options.tls.certFile, key_file_name: options.tls.keyFile, passphrase: options.tls.passphrase })
    : uws.App();

  type Handler = (ctx: Ctx, body: Buffer | undefined) => Reply | Promise<Reply>;
  interface Reply {
    status?: number;
    body?: unknown;
    /** Pre-encoded body parts (binary tensor responses). */
    parts?: Uint8Array[];
    headers?: Record<string, string>;
    after?: () => void;
  }

  function authorize(ctx: Ctx, admin: boolean): void {
    const key = admin ? options.adminKey ?? options.apiKey : options.apiKey;
    if (!key) return;
    const auth = ctx.headers.authorization ?? "";
    const given = auth.startsWith("Bearer ") ? auth.slice(7) : undefined;
    if (given === undefined) throw new HttpError(401, "UNAUTHORIZED", "this route needs Authorization: Bearer <key>", { "WWW-Authenticate": 'Bearer realm="mlos"' });
    const ok = given === key || (!admin && options.adminKey !== undefined && given === options.adminKey);
    if (!ok) throw new HttpError(admin ? 403 : 401, admin ? "FORBIDDEN" : "UNAUTHORIZED", admin ? "this route needs the admin key" : "the API key is not valid");
  }

  const controllers: AbortController[] = [];
  function send(res: HttpResponse, ctx: Ctx, reply: Reply): void {
    if (ctx.aborted) {
      reply.after?.(); // the client went away: nothing to write, but the outputs' memory goes back
      return;
    }
    ctx.release();
    const status = reply.status ?? 200;
    res.cork(() => {
      res.writeStatus(`${status} ${STATUS_TEXT[status] ?? ""}`.trim());
      for (const [k, v] of Object.entries(reply.headers ?? {})) res.writeHeader(k, v);
      if (reply.parts) {
        if (!reply.headers?.["Content-Type"]) res.writeHeader("Content-Type", "application/octet-stream");
        if (reply.parts.length === 1) {
          res.end(reply.parts[0]!);
        } else {
          const body = Buffer.allocUnsafe(reply.parts.reduce((a, p) => a + p.byteLength, 0));
          let at = 0;
          for (const p of reply.parts) {
            body.set(p, at);
            at += p.byteLength;
          }
          res.end(body);
        }
      } else if (reply.body === undefined) {
        res.end();
      } else {
        res.writeHeader("Content-Type", JSON_TYPE);
        res.end(JSON.stringify(reply.body));
      }
    });
    reply.after?.();
  }

  function route(method: "get" | "post" | "del", pattern: string, withBody: boolean, handler: Handler, admin?: boolean): void {
    const paramCount = (pattern.match(/:/g) ?? []).length;
    app[method](pattern, (res: HttpResponse, req: HttpRequest) => {
      const headers: Record<string, string | undefined> = {};
      for (const name of READ_HEADERS) {
        const v = req.getHeader(name);
        if (v !== "") headers[name] = v;
      }
      const params: string[] = [];
      for (let i = 0; i < paramCount; i++) params.push(decodeURIComponent(req.getParameter(i) ?? ""));
      const ctx = new Ctx(req.getMethod(), req.getUrl(), headers, params, controllers);
      res.onAborted(() => ctx.abort());
      if (admin === true && options.adminKey === undefined && !isLoopback(Buffer.from(res.getRemoteAddressAsText()).toString())) {
        send(res, ctx, { status: 403, body: { error: `${ctx.method.toUpperCase()} ${ctx.url} is an admin route (${ADMIN_ROUTES}): without an admin key (--admin-key) the server answers it for clients on this machine only`, code: "ADMIN_LOCAL_ONLY" } });
        return;
      }
      const fail = (e: unknown): void => {
        const h = toHttpError(e);
        send(res, ctx, { status: h.status, body: { error: h.message, code: h.code }, headers: h.headers });
      };
      try {
        if (admin !== undefined) authorize(ctx, admin);
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
        if (reply instanceof Promise) reply.then((r) => send(res, ctx, r), fail);
        else send(res, ctx, reply);
      };
      if (!withBody) {
        run(undefined);
        return;
      }
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
          fail(new HttpError(declared !== undefined ? 400 : 413, declared !== undefined ? "BAD_REQUEST" : "BODY_TOO_LARGE", declared !== undefined ? `the body is longer than its Content-Length ${declared}` : `the body is larger than the limit of ${maxBody} bytes`));
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
    });
  }

  // ---- helpers ------------------------------------------------------------------------------------

  function parseJson(body: Buffer | undefined, what: string): Record<string, unknown> {
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

  /** Runs one request through the model's scheduler (queue limit, batching); counts it. */
  /** A request's `priority` (higher first) and `timeout` (ms) from KServe-style `parameters` or the MLOS body. */
  function requestParameters(p: unknown): { priority?: number; timeoutMs?: number } {
    if (p === undefined || p === null) return {};
    if (typeof p !== "object" || Array.isArray(p)) throw new HttpError(400, "BAD_REQUEST", '"parameters" must be an object');
    const { priority, timeout } = p as { priority?: unknown; timeout?: unknown };
    if (priority !== undefined && !Number.isSafeInteger(priority)) throw new HttpError(400, "BAD_REQUEST", `parameters.priority must be an integer, got ${JSON.stringify(priority)}`);
    if (timeout !== undefined && !(typeof timeout === "number" && timeout > 0 && Number.isFinite(timeout))) throw new HttpError(400, "BAD_REQUEST", `parameters.timeout must be a positive number of milliseconds, got ${JSON.stringify(timeout)}`);
    return { ...(priority !== undefined ? { priority: priority as number } : {}), ...(timeout !== undefined ? { timeoutMs: timeout as number } : {}) };
  }

  /**
   * A model's bound metric children, made once per model and route: label lookups hash their
   * label objects on every call. Also hooks the scheduler's timings (queue, compute, batch size).
   */
  interface ModelMetrics {
    ok: { inc(): void };
    total: { observe(v: number): void };
  }
  /** Per scheduler (a model version as loaded now), per route: found without building a string. */
  const modelMetrics = new WeakMap<Scheduler, Map<string, ModelMetrics>>();
  function metricsFor(entry: ModelEntry & { scheduler: Scheduler }, routeName: string): ModelMetrics {
    let byRoute = modelMetrics.get(entry.scheduler);
    if (!byRoute) modelMetrics.set(entry.scheduler, (byRoute = new Map()));
    const found = byRoute.get(routeName);
    if (found) return found;
    const label = `${entry.name}@${entry.version}`;
    if (!entry.scheduler.onTimings) {
      const queueHist = metrics.latency.labels({ model: label, phase: "queue" });
      const computeHist = metrics.latency.labels({ model: label, phase: "compute" });
      const batchHist = metrics.batchSize.labels({ model: label });
      entry.scheduler.onTimings = (queue, compute, batch) => {
        queueHist.observe(queue);
        computeHist.observe(compute);
        batchHist.observe(batch);
      };
    }
    const m = { ok: metrics.requests.labels({ model: label, route: routeName, outcome: "ok" }), total: metrics.latency.labels({ model: label, phase: "total" }) };
    byRoute.set(routeName, m);
    return m;
  }

  /** Counts a failed request by its outcome, and rethrows it. */
  function countFailure(entry: ModelEntry, routeName: string, e: unknown): never {
    const h = toHttpError(e);
    metrics.requests.inc({ model: `${entry.name}@${entry.version}`, route: routeName, outcome: h.code === "QUEUE_FULL" ? "rejected" : h.status >= 500 ? "server_error" : "client_error" });
    throw e;
  }

  /** `infer` on the calling thread when the model's scheduler can run it at once inline; else undefined. */
  function inferSync(entry: ModelEntry & { scheduler: Scheduler }, inputs: Record<string, Tensor>, routeName: string, ctx: Ctx, outputs?: string[], params: { priority?: number; timeoutMs?: number } = {}): Record<string, Tensor> | undefined {
    if (params.timeoutMs !== undefined) return undefined;
    const m = metricsFor(entry, routeName);
    let out: Record<string, Tensor> | undefined;
    try {
      // No signal: nothing can abort a run that holds the thread, and the client was there when it started.
      out = table.trySubmitSync(entry.name, entry.version, inputs, outputs ? { outputs } : {});
    } catch (e) {
      countFailure(entry, routeName, e);
    }
    if (out) m.ok.inc();
    return out;
  }

  /**
   * The fast path: the plugin decodes the KServe JSON body, runs it inline and encodes the response
   * itself (LoadedModel.runEncodedSync); undefined when it declines (nothing ran).
   */
  function inferEncodedSync(entry: ModelEntry & { scheduler: Scheduler }, request: EncodedRequest, routeName: string): Uint8Array | undefined {
    try {
      return table.trySubmitEncodedSync(entry.name, entry.version, request);
    } catch (e) {
      countFailure(entry, routeName, e);
    }
  }

  async function infer(entry: ModelEntry & { scheduler: Scheduler }, inputs: Record<string, Tensor>, routeName: string, ctx: Ctx, outputs?: string[], params: { priority?: number; timeoutMs?: number } = {}): Promise<Record<string, Tensor>> {
    entry.lastUsed = new Date();
    const m = metricsFor(entry, routeName);
    let out: Record<string, Tensor>;
    try {
      out = await table.submit(entry.name, entry.version, inputs, { signal: ctx.signal, ...(outputs ? { outputs } : {}), ...params });
    } catch (e) {
      countFailure(entry, routeName, e);
    }
    m.ok.inc();
    return out;
  }

  const disposeAll = (ts: Iterable<Tensor>): void => {
    for (const t of ts) t.dispose();
  };

  const kserveTensorInfo = (t: TensorInfo) => ({ name: t.name, datatype: datatypeOf(t.dtype), shape: t.shape.map((d) => (typeof d === "number" ? d : -1)) });

  function platformOf(m: Model): string {
    return m.plugin === "onnxruntime" ? "onnxruntime_onnx" : m.plugin === "torch" ? "pytorch_libtorch" : m.plugin === "tensorflow" ? "tensorflow_tfjs" : m.plugin;
  }

  // ---- health, metadata, metrics ----------------------------------------------------------------------

  route("get", "/health", false, async () => ({ body: { status: "ok", models: table.list().length, ready: table.list().filter((e) => e.state === "ready").length } }));
  route("get", "/v2/health/live", false, async () => ({ body: { live: true } }));
  route("get", "/v2/health/ready", false, async () => {
    const ready = table.list().every((e) => e.state === "ready" || e.state === "unloaded" || e.state === "evicted" || e.state === "failed");
    return { status: ready ? 200 : 503, body: { ready } };
  });
  route("get", "/metrics", false, async () => {
    const text = await metrics.registry.metrics();
    return { parts: [Buffer.from(text)], headers: { "Content-Type": metrics.registry.contentType } };
  }, false);
  route("get", "/v2", false, async () => ({ body: { name: "mlos", version: VERSION, extensions: ["binary_tensor_data", "model_repository"] } }), false);

  const modelMetadata = async (ctx: Ctx) => {
    const e = table.get(ctx.params[0]!, ctx.params[1]);
    const versions = table.list().filter((x) => x.name === e.name).map((x) => x.version);
    if (!e.model) throw new HttpError(503, "MODEL_NOT_READY", `model "${e.name}" version ${e.version} is ${e.state}`);
    return { body: { name: e.name, versions, platform: platformOf(e.model), inputs: e.model.inputs.map(kserveTensorInfo), outputs: e.model.outputs.map(kserveTensorInfo) } };
  };
  route("get", "/v2/models/:name", false, modelMetadata, false);
  route("get", "/v2/models/:name/versions/:version", false, modelMetadata, false);
  const modelReady = async (ctx: Ctx) => {
    const e = table.get(ctx.params[0]!, ctx.params[1]);
    const ready = e.state === "ready";
    return { status: ready ? 200 : 503, body: { name: e.name, version: e.version, ready } };
  };
  route("get", "/v2/models/:name/ready", false, modelReady, false);
  route("get", "/v2/models/:name/versions/:version/ready", false, modelReady, false);

  // ---- KServe v2 inference ----------------------------------------------------------------------------

  /**
   * KServe v2 infer. Not `async`: when the model is ready and runs inline (a microsecond model
   * with a free instance), the whole request is answered synchronously, with no promise between
   * the request and the response; otherwise it goes through the scheduler.
   */
  const kserveInfer = (ctx: Ctx, body: Buffer | undefined): Reply | Promise<Reply> => {
    const total = performance.now();
    const found = table.get(ctx.params[0]!, ctx.params[1]);
    if (found.state !== "ready" || !found.scheduler) return table.acquire(found.name, found.version).then(() => kserveInfer(ctx, body));
    const entry = found as ModelEntry & { model: Model; scheduler: Scheduler };
    const headerLength = ctx.headers["inference-header-content-length"];
    let jsonPart = body;
    let binary: Buffer | undefined;
    if (headerLength !== undefined) {
      const n = Number(headerLength);
      if (!Number.isSafeInteger(n) || n < 0 || !body || n > body.byteLength) {
        throw new HttpError(400, "BAD_REQUEST", `Inference-Header-Content-Length ${headerLength} does not fit the ${body?.byteLength ?? 0}-byte body`);
      }
      jsonPart = body.subarray(0, n);
      binary = body.subarray(n);
    }
    if (binary === undefined && body !== undefined && body.byteLength > 0) {
      // The fast path: the plugin decodes, runs and encodes; alone at once, or batched with the
      // requests of this event-loop turn. Whatever it declines takes the general path below.
      const m = metricsFor(entry, "kserve"); // (before the run: it hooks the scheduler's timings)
      const encodedReply = (encoded: Uint8Array): Reply => {
        m.ok.inc();
        return { parts: [encoded], headers: JSON_HEADERS, after: () => m.total.observe((performance.now() - total) / 1000) };
      };
      const request: EncodedRequest = { format: "kserve-v2-json", body, modelName: entry.name, modelVersion: entry.version };
      const encoded = inferEncodedSync(entry, request, "kserve");
      if (encoded) return encodedReply(encoded);
      const batched = table.submitEncoded(entry.name, entry.version, request);
      if (batched) return batched.then((r) => (r ? encodedReply(r) : kserveInferGeneral(ctx, entry, body, jsonPart, binary, total)));
    }
    return kserveInferGeneral(ctx, entry, body, jsonPart, binary, total);
  };

  /** KServe v2 infer through JS tensors: binary data, outputs selection, parameters, and every request the fast path declines. */
  const kserveInferGeneral = (ctx: Ctx, entry: ModelEntry & { model: Model; scheduler: Scheduler }, body: Buffer | undefined, jsonPart: Buffer | undefined, binary: Buffer | undefined, total: number): Reply | Promise<Reply> => {
    const request = parseJson(jsonPart, "infer");
    if (!Array.isArray(request.inputs)) throw new HttpError(400, "BAD_REQUEST", 'infer: "inputs" must be an array of tensors');
    const inputs: Record<string, Tensor> = {};
    let at = 0;
    try {
      request.inputs.forEach((raw: unknown, i: number) => {
        const t = raw as { name?: unknown; datatype?: unknown; shape?: unknown; parameters?: { binary_data_size?: unknown } };
        const name = typeof t?.name === "string" ? t.name : `inputs[${i}]`;
        if (typeof t?.name === "string" && inputs[t.name]) throw new HttpError(400, "BAD_REQUEST", `input "${t.name}" is given twice`);
        const size = t?.parameters?.binary_data_size;
        if (size !== undefined) {
          if (!binary) throw new HttpError(400, "BAD_REQUEST", `input "${name}" has binary_data_size but the request has no Inference-Header-Content-Length`);
          if (!Number.isSafeInteger(size) || (size as number) < 0 || at + (size as number) > binary.byteLength) {
            throw new HttpError(400, "BAD_DATA", `input "${name}": binary_data_size ${JSON.stringify(size)} runs past the ${binary.byteLength} bytes of binary data`);
          }
          inputs[name] = tensorFromBinary(name, t.datatype, t.shape, binary.subarray(at, at + (size as number)), pool);
          at += size as number;
        } else {
          inputs[name] = tensorFromJson(raw, pool, i);
        }
      });
      if (binary && at !== binary.byteLength) throw new HttpError(400, "BAD_DATA", `the request has ${binary.byteLength} bytes of binary data, its inputs use ${at}`);
    } catch (e) {
      disposeAll(Object.values(inputs));
      throw e;
    }
    const wanted = Array.isArray(request.outputs) ? (request.outputs as Array<{ name?: unknown; parameters?: { binary_data?: unknown } }>) : undefined;
    const defaultBinary = (request.parameters as { binary_data_output?: unknown } | undefined)?.binary_data_output === true;
    let params: { priority?: number; timeoutMs?: number };
    try {
      params = requestParameters(request.parameters);
    } catch (e) {
      disposeAll(Object.values(inputs));
      throw e;
    }
    const names = wanted?.map((o, i) => {
      if (typeof o?.name !== "string") throw new HttpError(400, "BAD_REQUEST", `outputs[${i}].name must be a string`);
      return o.name;
    });
    let sync: Record<string, Tensor> | undefined;
    try {
      sync = inferSync(entry, inputs, "kserve", ctx, names, params);
    } catch (e) {
      disposeAll(Object.values(inputs));
      throw e;
    }
    if (sync) {
      disposeAll(Object.values(inputs));
      return kserveReply(entry, request, sync, wanted, defaultBinary, total);
    }
    return infer(entry, inputs, "kserve", ctx, names, params).then(
      (outputs) => {
        disposeAll(Object.values(inputs));
        return kserveReply(entry, request, outputs, wanted, defaultBinary, total);
      },
      (e: unknown) => {
        disposeAll(Object.values(inputs));
        throw e;
      },
    );
  };

  function kserveReply(
    entry: ModelEntry,
    request: Record<string, unknown>,
    outputs: Record<string, Tensor>,
    wanted: Array<{ name?: unknown; parameters?: { binary_data?: unknown } }> | undefined,
    defaultBinary: boolean,
    total: number,
  ): Reply {
    const binaryOut = (name: string) => {
      const o = wanted?.find((w) => w.name === name);
      const b = o?.parameters?.binary_data;
      return b === undefined ? defaultBinary : b === true;
    };
    const parts: Uint8Array[] = [];
    const json = {
      model_name: entry.name,
      model_version: entry.version,
      ...(typeof request.id === "string" ? { id: request.id } : {}),
      outputs: Object.entries(outputs).map(([name, t]) => {
        if (binaryOut(name)) {
          const bytes = binaryData(t);
          parts.push(bytes);
          return { name, datatype: datatypeOf(t.dtype), shape: [...t.shape], parameters: { binary_data_size: bytes.byteLength } };
        }
        return { name, datatype: datatypeOf(t.dtype), shape: [...t.shape], data: jsonData(t) };
      }),
    };
    const totalHist = metricsFor(entry as ModelEntry & { scheduler: Scheduler }, "kserve").total;
    const after = () => {
      disposeAll(Object.values(outputs));
      totalHist.observe((performance.now() - total) / 1000);
    };
    if (parts.length === 0) return { body: json, after };
    const header = Buffer.from(JSON.stringify(json));
    return { parts: [header, ...parts], headers: { "Inference-Header-Content-Length": String(header.byteLength), "Content-Type": "application/octet-stream" }, after };
  }
  route("post", "/v2/models/:name/infer", true, kserveInfer, false);
  route("post", "/v2/models/:name/versions/:version/infer", true, kserveInfer, false);

  // ---- KServe v2 repository --------------------------------------------------------------------------

  route("post", "/v2/repository/index", true, async () => ({
    body: table.list().map((e) => ({ name: e.name, version: e.version, state: e.state === "ready" ? "READY" : e.state === "failed" ? "UNAVAILABLE" : e.state.toUpperCase(), reason: e.error ?? "" })),
  }), false);
  route("post", "/v2/repository/models/:name/load", true, async (ctx) => {
    const e = await table.load(ctx.params[0]!);
    return { body: { name: e.name, version: e.version, state: e.state } };
  }, true);
  route("post", "/v2/repository/models/:name/unload", true, async (ctx) => {
    const e = await table.unload(ctx.params[0]!);
    return { body: { name: e.name, version: e.version, state: e.state } };
  }, true);

  // ---- MLOS v1 ------------------------------------------------------------------------------------------

  route("post", "/api/v1/models/register", true, async (_ctx, body) => {
    const req = parseJson(body, "register");
    const { model_id: id, path, plugin_id: plugin, framework } = req as { model_id?: unknown; path?: unknown; plugin_id?: unknown; framework?: unknown };
    if (typeof id !== "string" || id === "") throw new HttpError(400, "BAD_REQUEST", 'register: "model_id" must be a non-empty string (a name, or an Axon reference when no "path" is given)');
    if (path !== undefined && typeof path !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "path" must be a string');
    if (plugin !== undefined && typeof plugin !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "plugin_id" must be a string');
    if (framework !== undefined && typeof framework !== "string") throw new HttpError(400, "BAD_REQUEST", 'register: "framework" must be a string');
    const named = { plugin: plugin as string | undefined, framework: framework as string | undefined };
    const spec: RegisterSpec = path ? { id, target: path, ...named } : { target: id, ...named };
    const entry = await table.register(spec);
    return { status: 201, body: { model_id: entry.name, status: entry.state, ...table.summary(entry) } };
  }, true);
  route("get", "/api/v1/models", false, async () => ({ body: { models: table.list().map((e) => table.summary(e)) } }), false);
  route("get", "/api/v1/models/:id", false, async (ctx) => ({ body: table.summary(table.get(ctx.params[0]!)) }), false);
  route("del", "/api/v1/models/:id", false, async (ctx) => {
    const removed = await table.unregister(ctx.params[0]!);
    return { body: { removed: removed.map((e) => `${e.name}@${e.version}`) } };
  }, true);
  route("get", "/api/v1/plugins", false, async () => ({
    body: {
      plugins: runtime.plugins().map((p) => {
        const a = p.availability();
        return { id: p.id, version: p.version, frameworks: p.frameworks, formats: p.formats, available: a.available, ...(a.available ? {} : { reason: a.reason }) };
      }),
    },
  }), false);
  route("post", "/api/v1/plugins/register", true, async (_ctx, body) => {
    const req = parseJson(body, "plugins/register");
    const spec = req.path ?? req.package;
    if (typeof spec !== "string" || spec === "") throw new HttpError(400, "BAD_REQUEST", 'plugins/register: give "path" (a module file or folder on the server) or "package" (an npm package name)');
    const plugin = await importPlugin(spec);
    const replaced = runtime.plugins().some((p) => p.id === plugin.id);
    runtime.registerPlugin(plugin);
    const reloaded = replaced ? await table.reloadPlugin(plugin.id) : [];
    return { status: 201, body: { id: plugin.id, version: plugin.version, replaced, reloaded } };
  }, true);
  route("post", "/api/v1/inference", true, async (ctx, body) => {
    const req = parseJson(body, "inference");
    const id = req.model_id;
    if (typeof id !== "string" || id === "") throw new HttpError(400, "BAD_REQUEST", 'inference: "model_id" must be the name a model was registered with');
    const entry = await table.acquire(id);
    const inputs = mlosInputs(entry.model, req.inputs ?? req.input, pool);
    let outputs: Record<string, Tensor>;
    try {
      outputs = await infer(entry, inputs, "mlos", ctx, Array.isArray(req.outputs) ? (req.outputs as string[]) : undefined, requestParameters(req.parameters ?? { priority: req.priority, timeout: req.timeout_ms }));
    } finally {
      disposeAll(Object.values(inputs));
    }
    return { body: { model_id: entry.name, model_version: entry.version, outputs: outputsToJson(outputs) }, after: () => disposeAll(Object.values(outputs)) };
  }, false);

  app.any("/*", (res, req) => {
    const url = req.getUrl();
    const method = req.getMethod().toUpperCase();
    res.cork(() => {
      res.writeStatus("404 Not Found").writeHeader("Content-Type", JSON_TYPE).end(JSON.stringify({ error: `no route ${method} ${url}`, code: "NOT_FOUND" }));
    });
  });

  const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
    const cb = (s: us_listen_socket | false) => (s ? resolve(s) : reject(new HttpError(500, "LISTEN_FAILED", `cannot listen on ${options.host ?? DEFAULT_HOST}:${options.port ?? 8080} (in use, or not permitted)`)));
    app.listen(options.host ?? DEFAULT_HOST, options.port ?? 8080, cb);
  });
  const port = uws.us_socket_local_port(listenSocket);
  return {
    port,
    metrics,
    close() {
      uws.us_listen_socket_close(listenSocket);
      (app as unknown as { close?: () => void }).close?.();
    },
  };
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

