/**
 * A client of a running MLOS Core server's HTTP API (what `axon register/unregister/infer/ps
 * --endpoint` use). Errors come back as MlosError-shaped objects: the server's `{error, code}`.
 */
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
      const j = json as { error?: string; code?: string } | undefined;
      throw new ServerError(res.status, j?.code ?? `HTTP_${res.status}`, j?.error ?? `${method} ${path}: HTTP ${res.status}`);
    }
    return json as T;
  }

  register(modelId: string, options: { path?: string; plugin?: string } = {}): Promise<Record<string, unknown>> {
    return this.#call("POST", "/api/v1/models/register", { model_id: modelId, ...(options.path ? { path: options.path } : {}), ...(options.plugin ? { plugin_id: options.plugin } : {}) });
  }

  unregister(id: string): Promise<{ removed: string[] }> {
    return this.#call("DELETE", `/api/v1/models/${encodeURIComponent(id)}`);
  }

  models(): Promise<{ models: Array<Record<string, unknown>> }> {
    return this.#call("GET", "/api/v1/models");
  }

  infer(modelId: string, body: Record<string, unknown>): Promise<{ model_id: string; model_version: string; outputs: Record<string, { dtype: string; shape: number[]; data: unknown[] }> }> {
    return this.#call("POST", "/api/v1/inference", { ...body, model_id: modelId });
  }
}
