/**
 * The server's configuration file (`axon serve --config FILE`): YAML, validated by
 * schemas/server-config.schema.json. Errors name the file, line, column and field path:
 * `mlos.yaml:3:9 http.port: must be <= 65535`. Environment variables and flags override it.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { LineCounter, parseDocument } from "yaml";
import { AxonError } from "../axon/errors.js";

export interface ServerConfig {
  http?: { port?: number; host?: string; max_body?: number | string; tls?: { cert: string; key: string } };
  grpc?: { port?: number };
  shared_memory?: { allow_clients?: boolean };
  ipc?: { name?: string; max_arena?: number | string; max_clients?: number; lease_ms?: number };
  security?: { api_key?: string; admin_key?: string };
  scheduling?: { max_queue?: number; instances?: number; intra_op_threads?: number; threads?: number; batching?: { enabled?: boolean; max_batch_size?: number; max_queue_delay_us?: number } };
  resources?: { max_memory?: number | string; keep_alive?: number; pool_size?: number | string };
  generation?: { max_num_seqs?: number; max_batched_tokens?: number; kv_cache_memory?: number | string; gpu?: "off" | "cuda" | "vulkan" | "auto" };
  models?: Array<{ target: string; id?: string; plugin?: string }>;
  plugins?: string[];
}

type Validate = ((v: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }> | null };
let validator: Validate | undefined;

function validate(): Validate {
  if (!validator) {
    const require = createRequire(import.meta.url);
    const Ajv2020 = (require("ajv/dist/2020.js") as { default: new (o: object) => { compile(s: object): Validate } }).default;
    validator = new Ajv2020({ allErrors: false, strict: true }).compile(require("../../../schemas/server-config.schema.json") as object);
  }
  return validator;
}

/** Reads and validates a server configuration file; throws CONFIG_INVALID naming where. */
export function loadServerConfig(file: string): ServerConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new AxonError("CONFIG_INVALID", `cannot read the server configuration ${file}: ${(e as Error).message}`, { file });
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, keepSourceTokens: false });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    const pos = lc.linePos(err.pos[0]);
    throw new AxonError("CONFIG_INVALID", `${file}:${pos.line}:${pos.col} ${err.message.split("\n")[0]}`, { file, line: pos.line, col: pos.col });
  }
  const data = doc.toJS() ?? {};
  const v = validate();
  if (!v(data)) {
    const e = v.errors![0]!;
    const segs = e.instancePath.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
    const extra = e.params?.additionalProperty ? String(e.params.additionalProperty) : undefined;
    const keyPath = segs.map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    // An unknown field is pointed at by its key; anything else by its value.
    const parent = extra ? (doc.getIn(keyPath, true) as { items?: Array<{ key?: { value?: unknown; range?: [number, number, number] } }> } | undefined) : undefined;
    const node = (extra ? parent?.items?.find((i) => i.key?.value === extra)?.key : doc.getIn(keyPath, true)) as { range?: [number, number, number] } | undefined;
    const pos = node?.range ? lc.linePos(node.range[0]) : { line: 1, col: 1 };
    const field = [...segs, ...(extra ? [extra] : [])].map((s, i) => (/^\d+$/.test(s) ? `[${s}]` : i === 0 ? s : `.${s}`)).join("") || "(top level)";
    const message = extra ? `unknown field "${extra}"` : e.message ?? "is not valid";
    throw new AxonError("CONFIG_INVALID", `${file}:${pos.line}:${pos.col} ${field}: ${message}`, { file, line: pos.line, col: pos.col, path: field });
  }
  return data as ServerConfig;
}

/** What `axon serve`'s flags (and their environment variables) gave; undefined: not given. */
export interface ServeFlags {
  httpPort?: number;
  grpcPort?: number;
  allowSharedMemory?: boolean;
  ipcName?: string;
  host?: string;
  models?: string[];
  plugins?: string[];
  apiKey?: string;
  adminKey?: string;
  tlsCert?: string;
  tlsKey?: string;
  maxBody?: string;
  maxQueue?: number;
  instances?: number;
  intraOpThreads?: number;
  threads?: number;
  batching?: boolean;
  maxBatchSize?: number;
  maxQueueDelayUs?: number;
  maxMemory?: string;
  keepAlive?: number;
  poolSize?: string;
  maxNumSeqs?: number;
  maxBatchedTokens?: number;
  kvCacheMemory?: string;
  gpu?: "off" | "cuda" | "vulkan" | "auto";
}

/** The IPC door's options, or undefined when its name turns it off ("off", "0" or ""). */
function ipcOptions(name: string, config: ServerConfig["ipc"], parseSize: (s: string) => number): import("./serve.js").ServeOptions["ipc"] {
  if (name === "" || name === "off" || name === "0") return undefined;
  return { name, maxArenaBytes: toBytes(config?.max_arena, parseSize), maxClients: config?.max_clients, leaseMs: config?.lease_ms };
}

const toBytes = (v: number | string | undefined, parse: (s: string) => number): number | undefined => (v === undefined ? undefined : typeof v === "number" ? v : parse(v));

/**
 * The server's options: each from its flag (or environment variable) when given, else the
 * configuration file, else the default. Models from the file come first, then --model ones.
 */
export function serveOptionsFrom(flags: ServeFlags, config: ServerConfig, parseSize: (s: string) => number): import("./serve.js").ServeOptions {
  const b = config.scheduling?.batching;
  const batchingOn = flags.batching ?? b?.enabled ?? true;
  const maxBatch = flags.maxBatchSize ?? b?.max_batch_size ?? 1;
  const delay = flags.maxQueueDelayUs ?? b?.max_queue_delay_us ?? 500;
  const cert = flags.tlsCert ?? config.http?.tls?.cert;
  const key = flags.tlsKey ?? config.http?.tls?.key;
  const keepAlive = flags.keepAlive ?? config.resources?.keep_alive;
  return {
    httpPort: flags.httpPort ?? config.http?.port ?? 8080,
    grpcPort: flags.grpcPort ?? config.grpc?.port ?? 8081,
    allowSharedMemory: flags.allowSharedMemory ?? config.shared_memory?.allow_clients ?? false,
    ipc: ipcOptions(flags.ipcName ?? config.ipc?.name ?? "mlos", config.ipc, parseSize),
    host: flags.host ?? config.http?.host,
    models: [...(config.models ?? []).map((m) => (m.id ? `${m.id}=${m.target}` : m.target)), ...(flags.models ?? [])],
    plugins: [...(config.plugins ?? []), ...(flags.plugins ?? [])],
    apiKey: flags.apiKey ?? config.security?.api_key,
    adminKey: flags.adminKey ?? config.security?.admin_key,
    tls: cert && key ? { certFile: cert, keyFile: key } : undefined,
    maxBodyBytes: toBytes(flags.maxBody ?? config.http?.max_body ?? "64M", parseSize),
    maxQueueDepth: flags.maxQueue ?? config.scheduling?.max_queue ?? 1024,
    instances: flags.instances ?? config.scheduling?.instances,
    intraOpThreads: flags.intraOpThreads ?? config.scheduling?.intra_op_threads ?? 1,
    threads: flags.threads ?? config.scheduling?.threads,
    batching: !batchingOn ? false : maxBatch > 1 ? { maxBatchSize: maxBatch, maxQueueDelayUs: delay } : undefined,
    poolBytes: toBytes(flags.poolSize ?? config.resources?.pool_size ?? "256M", parseSize),
    maxMemoryBytes: toBytes(flags.maxMemory ?? config.resources?.max_memory, parseSize),
    keepAliveMs: keepAlive ? keepAlive * 1000 : undefined,
    generation: {
      maxNumSeqs: flags.maxNumSeqs ?? config.generation?.max_num_seqs,
      maxBatchedTokens: flags.maxBatchedTokens ?? config.generation?.max_batched_tokens,
      kvCacheBytes: toBytes(flags.kvCacheMemory ?? config.generation?.kv_cache_memory, parseSize),
    },
    gpu: flags.gpu ?? config.generation?.gpu,
  };
}
