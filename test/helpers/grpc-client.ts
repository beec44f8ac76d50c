/**
 * A KServe v2 gRPC client for the tests, as a user would write one: @grpc/grpc-js with the proto
 * files mlos ships, loaded with @grpc/proto-loader. Unary calls as promises.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "proto");

function load(file: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(path.join(PROTO, file), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }));
}

export type Unary = <T = Record<string, unknown>>(method: string, request: Record<string, unknown>, metadata?: Record<string, string>, options?: grpc.CallOptions) => Promise<T>;

export interface KserveGrpcClient {
  raw: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  health: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  call: Unary;
  check: (service: string) => Promise<{ status: string }>;
  close(): void;
}

export function kserveClient(address: string, credentials = grpc.credentials.createInsecure()): KserveGrpcClient {
  const inference = load("grpc_service.proto").inference as grpc.GrpcObject;
  const healthPkg = ((load("health.proto").grpc as grpc.GrpcObject).health as grpc.GrpcObject).v1 as grpc.GrpcObject;
  const raw = new (inference.GRPCInferenceService as grpc.ServiceClientConstructor)(address, credentials) as KserveGrpcClient["raw"];
  const health = new (healthPkg.Health as grpc.ServiceClientConstructor)(address, credentials) as KserveGrpcClient["health"];
  const unary = (client: KserveGrpcClient["raw"]): Unary => (method, request, metadata = {}, options = {}) =>
    new Promise((resolve, reject) => {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      (client[method] as (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void).call(client, request, md, options, (e, r) => (e ? reject(e) : resolve(r as never)));
    });
  return {
    raw,
    health,
    call: unary(raw),
    check: (service) => unary(health)("Check", { service }),
    close: () => {
      raw.close();
      health.close();
    },
  };
}

/** The stable error code a failed call carries in its trailers. */
export const errorCode = (e: unknown): string | undefined => (e as grpc.ServiceError).metadata?.get("mlos-error-code")[0] as string | undefined;
