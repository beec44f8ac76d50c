/**
 * MLOS Core's gRPC front door (@grpc/grpc-js): `inference.GRPCInferenceService` of the KServe v2
 * protocol (kserve-service.ts) and the standard `grpc.health.v1.Health`, from the proto files in
 * proto/. The same keys as HTTP (metadata `authorization: Bearer <key>`; the repository's load and
 * unload are admin calls, answered for clients on this machine only when no admin key is set),
 * TLS from the same PEM files, and the body limit as the largest message received.
 */
import { setMaxListeners } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ModelInferRequest, ModelInferResponse, ModelStreamInferResponse } from "../../protocol/kserve-grpc.js";
import { authorize, DEFAULT_HOST, type Access } from "../admin-policy.js";
import { HttpError, toHttpError } from "../http-error.js";
import type { Serving } from "../serving.js";
import { KserveGrpcService } from "./kserve-service.js";
import { toGrpcError } from "./status.js";

/** proto/ of the installed package (dist/src/server/grpc -> the package root). */
export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "proto");

export interface GrpcServerOptions {
  serving: Serving;
  /** Default 8081; 0 picks a free port (see `port` on the result). */
  port?: number;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Largest request message accepted, in bytes (default 64 MiB); larger ones get RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  apiKey?: string;
  adminKey?: string;
  tls?: { certFile: string; keyFile: string };
}

export interface GrpcServer {
  readonly port: number;
  /** Ends health watches, stops accepting calls, lets running ones finish (up to 5 s), then closes every connection. */
  close(): Promise<void>;
}

const SERVICE = "inference.GRPCInferenceService";

function loadProto(file: string): grpc.GrpcObject {
  const def = protoLoader.loadSync(path.join(PROTO_DIR, file), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(def);
}

/** Starts the gRPC door; resolves once it listens. */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const inference = loadProto("grpc_service.proto").inference as grpc.GrpcObject;
  const health = ((loadProto("health.proto").grpc as grpc.GrpcObject).health as grpc.GrpcObject).v1 as grpc.GrpcObject;
  const maxMessageBytes = options.maxMessageBytes ?? 64 * 1024 * 1024;
  // Channelz (call tracing for debugging tools) costs every call; mlos has /metrics instead.
  const server = new grpc.Server({ "grpc.max_receive_message_length": maxMessageBytes, "grpc.max_send_message_length": -1, "grpc.enable_channelz": 0 });
  const kserve = new KserveGrpcService(options.serving);
  const { apiKey, adminKey } = options;

  /** The HTTP router's policy (admin-policy.ts), with the key in the `authorization` metadata. */
  const check = (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>, method: string, access: Access) =>
    authorize(access, { apiKey, adminKey }, {
      what: `${SERVICE}/${method}`,
      kind: "call",
      authorization: call.metadata.get("authorization")[0] as string | undefined,
      credentialHint: "metadata authorization: Bearer <key>",
      peerAddress: () => {
        const peer = call.getPeer(); // "127.0.0.1:5000", "::1:5000", "[::1]:5000"
        return peer.includes(":") ? peer.slice(0, peer.lastIndexOf(":")).replace(/^\[|\]$/g, "") : peer;
      },
    });

  /** A unary handler: authorization, then `fn`, its answer or its error as a status. */
  const unary = <Req, Res>(method: string, access: Access, fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      try {
        check(call, method, access);
        Promise.resolve(fn(call.request, call)).then((res) => callback(null, res), (e: unknown) => callback(toGrpcError(e)));
      } catch (e) {
        callback(toGrpcError(e));
      }
    };

  /** Aborted when the client cancels the call or its deadline passes (or already, when that happened). */
  const signalOf = (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>): AbortSignal => {
    const controller = new AbortController();
    const cancel = () => controller.abort(new Error("the client cancelled the call"));
    if (call.cancelled) cancel();
    else call.once("cancelled", cancel);
    return controller.signal;
  };

  /**
   * ModelInfer takes its request as the message's bytes (see `service` below): the fast path may
   * answer from them without decoding them in JS.
   */
  const modelInfer: grpc.handleUnaryCall<Buffer, ModelInferResponse | Uint8Array> = (call, callback) => {
    try {
      check(call, "ModelInfer", "api");
      const pending = kserve.modelInferMessage(call.request, decodeInferRequest, () => signalOf(call), (res) => callback(null, res));
      pending?.catch((e: unknown) => callback(toGrpcError(e)));
    } catch (e) {
      callback(toGrpcError(e));
    }
  };

  /**
   * Requests on one stream run concurrently (batched with everything else); each answer is written
   * when ready, in completion order, with the request's `id` to match it; a failed request answers
   * `error_message` ("CODE: message") and the stream goes on. The stream ends once the client has
   * half-closed and every answer is written.
   */
  const modelStreamInfer: grpc.handleBidiStreamingCall<Buffer, ModelStreamInferResponse | Uint8Array> = (call) => {
    try {
      check(call, "ModelStreamInfer", "api");
    } catch (e) {
      call.emit("error", toGrpcError(e));
      return;
    }
    const signal = signalOf(call);
    // A client that goes away mid-stream cancels the call (the signal stops its runs); an error on
    // the stream must not become an unhandled 'error' event that takes the server down.
    call.on("error", () => {});
    // Every request in flight on the stream listens on its one signal.
    setMaxListeners(0, signal);
    let pending = 0;
    let ended = false;
    const settle = () => {
      if (--pending === 0 && ended) call.end();
    };
    // A stream's writes may wait in its buffer (flow control) until after the outputs are
    // disposed: an answer takes copies of their bytes (the fast path's bytes are copied already).
    const answer = (res: ModelInferResponse | Uint8Array) =>
      call.write(res instanceof Uint8Array ? streamAnswer(res) : { error_message: "", infer_response: { ...res, raw_output_contents: res.raw_output_contents.map((b) => Buffer.from(b)) } });
    call.on("data", (body: Buffer) => {
      pending++;
      let answered: Promise<void> | undefined;
      try {
        answered = kserve.modelInferMessage(body, decodeInferRequest, () => signal, answer);
      } catch (e) {
        answered = Promise.reject(e);
      }
      Promise.resolve(answered)
        .catch((e: unknown) => {
          if (signal.aborted) return;
          const h = toHttpError(e);
          call.write({ error_message: `${h.code}: ${h.message}`, infer_response: null });
        })
        .finally(settle);
    });
    call.on("end", () => {
      ended = true;
      if (pending === 0) call.end();
    });
  };

  // ModelInfer's and ModelStreamInfer's messages: a request arrives as its bytes (decoded by
  // decodeInferRequest only where the native codec declines it), and a response may be given as
  // bytes the codec wrote.
  const definition = (inference.GRPCInferenceService as grpc.ServiceClientConstructor).service;
  const inferDefinition = definition.ModelInfer!;
  const decodeInferRequest = (bytes: Uint8Array): ModelInferRequest => {
    try {
      return inferDefinition.requestDeserialize(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as ModelInferRequest;
    } catch (e) {
      throw new HttpError(400, "BAD_REQUEST", `ModelInferRequest: not a valid message (${(e as Error).message})`);
    }
  };
  const streamDefinition = definition.ModelStreamInfer!;
  const asBuffer = (b: Uint8Array) => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  const service: grpc.ServiceDefinition = {
    ...definition,
    ModelInfer: {
      ...inferDefinition,
      requestDeserialize: (bytes: Buffer) => bytes,
      responseSerialize: (res: ModelInferResponse | Uint8Array) => (res instanceof Uint8Array ? asBuffer(res) : inferDefinition.responseSerialize(res)),
    },
    ModelStreamInfer: {
      ...streamDefinition,
      requestDeserialize: (bytes: Buffer) => bytes,
      responseSerialize: (res: ModelStreamInferResponse | Uint8Array) => (res instanceof Uint8Array ? asBuffer(res) : streamDefinition.responseSerialize(res)),
    },
  };
  server.addService(service, {
    ServerLive: unary("ServerLive", "open", () => kserve.serverLive()),
    ServerReady: unary("ServerReady", "open", () => kserve.serverReady()),
    ModelReady: unary("ModelReady", "api", (req: { name: string; version: string }) => kserve.modelReady(req)),
    ServerMetadata: unary("ServerMetadata", "api", () => kserve.serverMetadata()),
    ModelMetadata: unary("ModelMetadata", "api", (req: { name: string; version: string }) => kserve.modelMetadata(req)),
    ModelInfer: modelInfer,
    ModelStreamInfer: modelStreamInfer,
    RepositoryIndex: unary("RepositoryIndex", "api", (req: { ready: boolean }) => kserve.repositoryIndex(req)),
    RepositoryModelLoad: unary("RepositoryModelLoad", "admin", (req: { model_name: string }) => kserve.repositoryModelLoad(req)),
    RepositoryModelUnload: unary("RepositoryModelUnload", "admin", (req: { model_name: string }) => kserve.repositoryModelUnload(req)),
    SystemSharedMemoryStatus: unary("SystemSharedMemoryStatus", "api", (req: { name: string }) => kserve.systemSharedMemoryStatus(req)),
    SystemSharedMemoryRegister: unary("SystemSharedMemoryRegister", "api", (req: { name: string; key: string; offset: string; byte_size: string }) => kserve.systemSharedMemoryRegister(req)),
    SystemSharedMemoryUnregister: unary("SystemSharedMemoryUnregister", "api", (req: { name: string }) => kserve.systemSharedMemoryUnregister(req)),
  });

  // grpc.health.v1: "" (the server) and the inference service are SERVING while the server runs.
  const watches = new Set<grpc.ServerWritableStream<{ service: string }, { status: string }>>();
  const known = (service: string) => service === "" || service === SERVICE;
  server.addService((health.Health as grpc.ServiceClientConstructor).service, {
    Check: unary("Check", "open", (req: { service: string }) => {
      if (!known(req.service)) throw new HttpError(404, "SERVICE_UNKNOWN", `no service "${req.service}" here; "" and "${SERVICE}" are`);
      return { status: "SERVING" };
    }),
    Watch: (call: grpc.ServerWritableStream<{ service: string }, { status: string }>) => {
      call.write({ status: known(call.request.service) ? "SERVING" : "SERVICE_UNKNOWN" });
      watches.add(call);
      call.once("cancelled", () => watches.delete(call));
    },
  });

  const credentials = options.tls ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: readPem(options.tls.certFile), private_key: readPem(options.tls.keyFile) }], false) : grpc.ServerCredentials.createInsecure();
  const host = options.host ?? DEFAULT_HOST;
  const address = `${host.includes(":") ? `[${host}]` : host}:${options.port ?? 8081}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, credentials, (err, p) => (err ? reject(new HttpError(500, "LISTEN_FAILED", `gRPC: cannot listen on ${address}: ${err.message}`)) : resolve(p))),
  );
  return {
    port,
    close: async () => {
      for (const w of watches) {
        w.write({ status: "NOT_SERVING" });
        w.end();
      }
      watches.clear();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 5000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      // A graceful shutdown can leave the socket of a session whose client cancelled streams
      // open (and the process alive); whatever is left now goes.
      server.forceShutdown();
    },
  };
}

/**
 * A ModelStreamInferResponse around a ModelInferResponse's bytes: `error_message` (field 1) empty,
 * as the general path writes it, then `infer_response` (field 2).
 */
function streamAnswer(inferResponse: Uint8Array): Buffer {
  const length: number[] = [];
  for (let n = inferResponse.byteLength; ; n = Math.floor(n / 128)) {
    if (n < 128) {
      length.push(n);
      break;
    }
    length.push((n % 128) | 0x80);
  }
  const head = Buffer.from([0x0a, 0x00, 0x12, ...length]);
  return Buffer.concat([head, inferResponse], head.byteLength + inferResponse.byteLength);
}

function readPem(file: string): Buffer {
  if (!existsSync(file)) throw new HttpError(500, "TLS_INVALID", `TLS: no file ${file}`);
  return readFileSync(file);
}
