/**
 * A client of a running MLOS Core server's HTTP API (what `axon register/unregister/infer/ps
 * --endpoint` use). Errors come back as MlosError-shaped objects: the server's `{error, code}`.
 * Bodies are typed by src/protocol, which the server writes them with.
 */
import type { ErrorBody, InferenceRequest, InferenceResponse, ModelsResponse, RegisterRequest, RegisterResponse, UnregisterResponse } from "../protocol/mlos-v1.js";

export class ServerError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ServerError";
    this.code = code;
    this.status = status;
  }
}

export interface ClientOptions {
  /** Default $MLOS_ENDPOINT or http://127.0.0.1:8080. */
  endpoint?: string;
  /** Sent as `Authorization: Bearer`; default $MLOS_API_KEY. */
  apiKey?: string;
}

export class MlosHttpClient {
  readonly endpoint: string;
  readonly #apiKey: string | undefined;

  constructor(options: ClientOptions = {}) {
    this.endpoint = (options.endpoint ?? process.env.MLOS_ENDPOINT ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    this.#apiKey = options.apiKey ?? process.env.MLOS_API_KEY;
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.endpoint + path, {
        method,
        headers: { ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...(this.#apiKey ? { Authorization: `Bearer ${this.#apiKey}` } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ServerError(0, "NETWORK", `cannot reach the server at ${this.endpoint} (${cause?.code ?? cause?.message ?? (e as Error).message}); is 'axon serve' running?`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ServerError(res.status, "BAD_RESPONSE", `${method} ${path}: the server answered ${res.status} with a body that is not JSON`);
    }
    if (!res.ok) {
      const j = json as Partial<ErrorBody> | undefined;
      throw new ServerError(res.status, j?.code ?? `HTTP_${res.status}`, j?.error ?? `${method} ${path}: HTTP ${res.status}`);
    }
    return json as T;
  }

  register(modelId: string, options: { path?: string; plugin?: string; framework?: string } = {}): Promise<RegisterResponse> {
    const body: RegisterRequest = { model_id: modelId, ...(options.path ? { path: options.path } : {}), ...(options.plugin ? { plugin_id: options.plugin } : {}), ...(options.framework ? { framework: options.framework } : {}) };
    return this.#call("POST", "/api/v1/models/register", body);
  }

  unregister(id: string): Promise<UnregisterResponse> {
    return this.#call("DELETE", `/api/v1/models/${encodeURIComponent(id)}`);
  }

  models(): Promise<ModelsResponse> {
    return this.#call("GET", "/api/v1/models");
  }

  infer(modelId: string, body: Omit<InferenceRequest, "model_id">): Promise<InferenceResponse> {
    return this.#call("POST", "/api/v1/inference", { ...body, model_id: modelId });
  }
}
