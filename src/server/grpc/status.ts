/**
 * Failures as gRPC statuses: every error the server's core raises (an HttpError, an MlosError, an
 * AxonError) keeps its one-line message as the status details and its stable code as the
 * `mlos-error-code` trailer, under the gRPC status code that means the same as its HTTP status.
 */
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { toHttpError } from "../http-error.js";

/** The trailer that carries an error's stable code (`MODEL_NOT_FOUND`, `BAD_DATA` ...). */
export const ERROR_CODE_TRAILER = "mlos-error-code";

/** The gRPC status for an HTTP status, as the KServe v2 and gRPC specifications pair them. */
export function grpcStatusOf(httpStatus: number): GrpcStatus {
  switch (httpStatus) {
    case 400:
    case 413:
    case 422:
      return GrpcStatus.INVALID_ARGUMENT;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.NOT_FOUND;
    case 409:
      return GrpcStatus.ALREADY_EXISTS;
    case 429:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 499:
      return GrpcStatus.CANCELLED;
    case 501:
      return GrpcStatus.UNIMPLEMENTED;
    case 502:
    case 503:
      return GrpcStatus.UNAVAILABLE;
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    default:
      return httpStatus >= 400 && httpStatus < 500 ? GrpcStatus.FAILED_PRECONDITION : GrpcStatus.INTERNAL;
  }
}

/** Any error as a gRPC service error: status code, one-line details, and the stable code in the trailers. */
export function toGrpcError(e: unknown): Partial<ServiceError> & { code: GrpcStatus; details: string; metadata: Metadata } {
  const h = toHttpError(e);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, h.code);
  return { code: grpcStatusOf(h.status), details: h.message, metadata, name: "ServiceError", message: h.message };
}
