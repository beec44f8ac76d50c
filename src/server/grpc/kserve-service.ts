/**
 * `inference.GRPCInferenceService`, the KServe v2 protocol over gRPC: health, metadata, the model
 * repository, and inference (unary and bidirectional streaming) on the same model table,
 * scheduler, tensor pool and metrics as the HTTP door (route label `grpc`). Handlers take decoded
 * request objects and return response objects; grpc-server.ts wires them to calls.
 */
import { ModelTable, type ModelEntry, type ReadyEntry } from "../../core/model-table.js";
import { KSERVE_GRPC_CODEC } from "../../protocol/kserve.js";
import { modelOfInferRequest, type ModelInferRequest, type ModelInferResponse } from "../../protocol/kserve-grpc.js";
import type { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";
import { modelMetadata, repositoryState, serverMetadata, serverReady } from "../kserve-common.js";
import { KserveFastPath } from "../kserve-fast-path.js";
import { disposeAll, type Serving } from "../serving.js";
import { decodeInputs, encodeOutputs, inferParameters } from "./tensors.js";

/** The protocol extensions this door serves. */
export const GRPC_EXTENSIONS = ["model_repository", "system_shared_memory"];

const versionOf = (v: string | undefined) => (v ? v : undefined);

export class KserveGrpcService {
  readonly #fastPath = new KserveFastPath(KSERVE_GRPC_CODEC);

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
   * One inference from its ModelInferRequest message's bytes. For a model with a native gRPC codec
   * (microsecond ONNX models), the bytes go to it whole (kserve-fast-path.ts): decoded, run and
   * encoded in C++, batched with the other requests of the event-loop turn, and answered as
   * ModelInferResponse bytes. Everything the codec declines, and every other model, is decoded
   * here (`decode`) and takes {@link modelInfer}. Returns a promise only when the answer is not
   * given synchronously; `signal` is asked for only on the general path.
   */
  modelInferMessage(
    body: Uint8Array,
    decode: (body: Uint8Array) => ModelInferRequest,
    signal: () => AbortSignal,
    reply: (res: ModelInferResponse | Uint8Array) => void,
  ): Promise<void> | undefined {
    const start = performance.now();
    const entry = this.#readyEntryFor(body);
    if (entry) {
      entry.lastUsed = new Date();
      const m = this.serving.metricsFor(entry, "grpc");
      const answer = (bytes: Uint8Array) => {
        m.ok.inc();
        reply(bytes);
        m.total.observe((performance.now() - start) / 1000);
      };
      const fast = this.#fastPath.answer(entry, body);
      // (A synchronous answer is a view of the codec's reused buffer: the reply takes a copy.)
      if (fast instanceof Uint8Array) return void answer(Buffer.from(fast));
      if (fast) return fast.then((r) => (r ? answer(r) : this.modelInfer(decode(body), signal(), reply)));
    }
    return this.modelInfer(decode(body), signal(), reply);
  }

  /** The model the message names when it is loaded and has a native gRPC codec; else undefined (the general path answers). */
  #readyEntryFor(body: Uint8Array): ReadyEntry | undefined {
    const route = modelOfInferRequest(body);
    if (!route) return undefined;
    try {
      const found = this.serving.table.get(route.name, versionOf(route.version));
      if (found.state !== "ready" || !found.scheduler || !found.model?.capability(KSERVE_GRPC_CODEC)) return undefined;
      return ModelTable.ready(found);
    } catch {
      return undefined; // (an unknown model: the general path reports it, after decoding the whole message)
    }
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
