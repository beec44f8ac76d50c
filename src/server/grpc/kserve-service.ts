/**
 * `inference.GRPCInferenceService`, the KServe v2 protocol over gRPC: health, metadata, the model
 * repository, and inference (unary and bidirectional streaming) on the same model table,
 * scheduler, tensor pool and metrics as the HTTP door (route label `grpc`). Handlers take decoded
 * request objects and return response objects; grpc-server.ts wires them to calls.
 */
import { ModelTable, type ModelEntry } from "../../core/model-table.js";
import type { ModelInferRequest, ModelInferResponse } from "../../protocol/kserve-grpc.js";
import type { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";
import { modelMetadata, repositoryState, serverMetadata, serverReady } from "../kserve-common.js";
import { disposeAll, type Serving } from "../serving.js";
import { decodeInputs, encodeOutputs, inferParameters } from "./tensors.js";

/** The protocol extensions this door serves. */
export const GRPC_EXTENSIONS = ["model_repository", "system_shared_memory"];

const versionOf = (v: string | undefined) => (v ? v : undefined);

export class KserveGrpcService {
  constructor(readonly serving: Serving) {}

  serverLive() {
    return { live: true };
  }

  serverReady() {
    return { ready: serverReady(this.serving.table) };
  }

  serverMetadata() {
    return serverMetadata(GRPC_EXTENSIONS);
  }

  modelReady(req: { name: string; version?: string }) {
    return { ready: this.serving.table.get(req.name, versionOf(req.version)).state === "ready" };
  }

  modelMetadata(req: { name: string; version?: string }) {
    const { table } = this.serving;
    return modelMetadata(table, table.get(req.name, versionOf(req.version)));
  }

  repositoryIndex(req: { ready?: boolean }) {
    const models = this.serving.table.list().filter((e) => !req.ready || e.state === "ready");
    return { models: models.map((e) => ({ name: e.name, version: e.version, state: repositoryState(e), reason: e.error ?? "" })) };
  }

  async repositoryModelLoad(req: { model_name: string }) {
    await this.serving.table.load(this.#modelName(req.model_name));
    return {};
  }

  async repositoryModelUnload(req: { model_name: string }) {
    await this.serving.table.unload(this.#modelName(req.model_name));
    return {};
  }

  systemSharedMemoryStatus(req: { name: string }) {
    const regions: Record<string, { name: string; key: string; offset: number; byte_size: number }> = {};
    for (const r of this.serving.shm.status(req.name || undefined)) regions[r.name] = r;
    return { regions };
  }

  systemSharedMemoryRegister(req: { name: string; key: string; offset: string; byte_size: string }) {
    this.serving.shm.register(req.name, req.key, req.offset, req.byte_size);
    return {};
  }

  systemSharedMemoryUnregister(req: { name: string }) {
    this.serving.shm.unregister(req.name || undefined);
    return {};
  }

  #modelName(name: string): string {
    if (!name) throw new HttpError(400, "BAD_REQUEST", "model_name must be a non-empty string");
    return name;
  }

  /**
   * One inference: the model is looked up (and loaded if it was unloaded), the inputs decoded into
   * the pool, the request run at once when the model's scheduler can, else queued; `reply` gets the
   * response while the output tensors are still alive (their bytes are serialized straight from
   * them), and they are disposed when it returns.
   */
  async modelInfer(req: ModelInferRequest, signal: AbortSignal | undefined, reply: (res: ModelInferResponse) => void): Promise<void> {
    const start = performance.now();
    const { table, pool } = this.serving;
    if (!req.model_name) throw new HttpError(400, "BAD_REQUEST", "model_name must be a non-empty string");
    let found: ModelEntry = table.get(req.model_name, versionOf(req.model_version));
    if (found.state !== "ready" || !found.scheduler) found = await table.acquire(found);
    const entry = ModelTable.ready(found);
    entry.lastUsed = new Date();
    const params = inferParameters(req.parameters);
    const names = req.outputs && req.outputs.length > 0 ? req.outputs.map((o, i) => {
      if (!o.name) throw new HttpError(400, "BAD_REQUEST", `outputs[${i}].name must be a non-empty string`);
      return o.name;
    }) : undefined;
    const inputs = decodeInputs(req, pool, this.serving.shm);
    let outputs: Record<string, Tensor> | undefined;
    try {
      outputs = this.serving.inferSync(entry, inputs, "grpc", names, params) ?? (await this.serving.infer(entry, inputs, "grpc", signal, names, params));
    } finally {
      disposeAll(Object.values(inputs));
    }
    try {
      reply({ model_name: entry.name, model_version: entry.version, id: req.id ?? "", ...encodeOutputs(outputs, req, this.serving.shm) });
    } finally {
      disposeAll(Object.values(outputs));
      this.serving.metricsFor(entry, "grpc").total.observe((performance.now() - start) / 1000);
    }
  }
}
