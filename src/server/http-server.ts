/**
 * MLOS Core's HTTP front door on mlos's own HTTP/1.1 server (native/src/http): a router (http/router.ts) and one module per API:
 * KServe v2 / Open Inference Protocol (http/kserve.ts, with its native fast path), its model
 * repository (http/repository.ts), the MLOS v1 API (http/mlos-v1.ts), and `/health`, `/metrics`
 * (http/ops.ts). Request and response bodies are typed in src/protocol, which the client shares.
 */
import type { ModelTable } from "../core/model-table.js";
import type { Runtime } from "../core/runtime.js";
import { getDefaultPool, type TensorPool } from "../tensor/pool.js";
import { DEFAULT_HOST } from "./admin-policy.js";
import { HttpError } from "./http-error.js";
import { registerKserveRoutes } from "./http/kserve.js";
import { registerMlosV1Routes } from "./http/mlos-v1.js";
import { registerOpenAiRoutes } from "./http/openai.js";
import { registerOpsRoutes } from "./http/ops.js";
import { registerRepositoryRoutes } from "./http/repository.js";
import { registerSharedMemoryRoutes } from "./http/shared-memory.js";
import { HttpRouter } from "./http/router.js";
import { Serving } from "./serving.js";
import { ServerMetrics } from "./metrics.js";
import { loadNative, rebuildCommand } from "../../bindings/native.js";

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
  /** The server's shared request side (metrics included), when other doors serve beside this one; made here otherwise. */
  serving?: Serving;
}

export interface HttpServer {
  readonly port: number;
  readonly metrics: ServerMetrics;
  /** Stops listening and closes every connection; resolves once all are closed. */
  close(): Promise<void>;
}

/** Starts the server; resolves once it listens. */
export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const native = loadNative();
  const pool = options.pool ?? getDefaultPool();
  const serving = options.serving ?? new Serving(options.table, options.runtime, pool, new ServerMetrics(options.table, pool));
  const metrics = serving.metrics;
  const router = new HttpRouter({ apiKey: options.apiKey, adminKey: options.adminKey });
  registerOpsRoutes(router, serving);
  registerKserveRoutes(router, serving);
  registerRepositoryRoutes(router, serving);
  registerSharedMemoryRoutes(router, serving);
  registerMlosV1Routes(router, serving);
  registerOpenAiRoutes(router, serving);

  if (!native.HttpServer) throw new HttpError(500, "LISTEN_FAILED", `this build of the native addon has no HTTP server; build it with \`${rebuildCommand()}\``);
  const server = new native.HttpServer({
    onRequest: router.onRequest,
    onAbort: router.onAbort,
    maxBodyBytes: options.maxBodyBytes ?? 64 * 1024 * 1024,
    tls: options.tls,
  });
  router.attach(server);
  const host = options.host ?? DEFAULT_HOST;
  let port: number;
  try {
    port = server.listen(host, options.port ?? 8080);
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === "TLS_INVALID") throw new HttpError(500, "TLS_INVALID", err.message);
    throw new HttpError(500, "LISTEN_FAILED", err.message);
  }
  return {
    port,
    metrics,
    close: () => server.close(),
  };
}
