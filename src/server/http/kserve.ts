/**
 * KServe v2 / Open Inference Protocol over HTTP: health, server and model metadata, model
 * readiness, and inference with JSON tensors and the binary tensor extension
 * (`Inference-Header-Content-Length`, `binary_data_size`, `binary_data` / `binary_data_output`).
 */
import { ModelTable, type ModelEntry, type ReadyEntry } from "../../core/model-table.js";
import { KSERVE_JSON_CODEC, type KserveInferResponse, type KserveModelReady, type KserveTensor } from "../../protocol/kserve.js";
import type { Tensor } from "../../tensor/tensor.js";
import { HttpError } from "../http-error.js";
import { binaryData, checkShape, datatypeOf, dtypeOf, jsonData, tensorFromBinary, tensorFromJson } from "../kserve-codec.js";
import { regionRefOf, tensorFromRegion } from "../shm/system-shared-memory.js";
import { modelMetadata, serverMetadata, serverReady } from "../kserve-common.js";
import { KserveFastPath } from "../kserve-fast-path.js";
import { JSON_HEADERS, parseJson, type Ctx, type HttpRouter, type Reply } from "./router.js";
import { disposeAll, requestParameters, type RequestParameters, type Serving } from "../serving.js";

type WantedOutputs = Array<{ name?: unknown; parameters?: { binary_data?: unknown } }>;

export function registerKserveRoutes(router: HttpRouter, serving: Serving): void {
  const { table, pool } = serving;
  const fastPath = new KserveFastPath(KSERVE_JSON_CODEC);

  router.route("get", "/v2/health/live", "open", false, () => ({ body: { live: true } }));
  router.route("get", "/v2/health/ready", "open", false, () => {
    const ready = serverReady(table);
    return { status: ready ? 200 : 503, body: { ready } };
  });
  router.route("get", "/v2", "api", false, () => ({ body: serverMetadata(["binary_tensor_data", "model_repository", "system_shared_memory"]) }));

  const metadata = (ctx: Ctx): Reply => ({ body: modelMetadata(table, table.get(ctx.params[0]!, ctx.params[1])) });
  router.route("get", "/v2/models/:name", "api", false, metadata);
  router.route("get", "/v2/models/:name/versions/:version", "api", false, metadata);
  const modelReady = (ctx: Ctx): Reply => {
    const e = table.get(ctx.params[0]!, ctx.params[1]);
    const ready = e.state === "ready";
    return { status: ready ? 200 : 503, body: { name: e.name, version: e.version, ready } satisfies KserveModelReady };
  };
  router.route("get", "/v2/models/:name/ready", "api", false, modelReady);
  router.route("get", "/v2/models/:name/versions/:version/ready", "api", false, modelReady);

  /**
   * Not `async`: when the model is ready and runs inline (a microsecond model with a free
   * instance), the whole request is answered synchronously, with no promise between the request
   * and the response; otherwise it goes through the scheduler. The model is looked up once.
   */
  const infer = (ctx: Ctx, body: Buffer | undefined): Reply | Promise<Reply> => {
    const found = table.get(ctx.params[0]!, ctx.params[1]);
    return inferOn(found, ctx, body, performance.now());
  };
  const inferOn = (found: ModelEntry, ctx: Ctx, body: Buffer | undefined, total: number): Reply | Promise<Reply> => {
    if (found.state !== "ready" || !found.scheduler) return table.acquire(found).then((e) => inferOn(e, ctx, body, total));
    const entry = ModelTable.ready(found);
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
      const m = serving.metricsFor(entry, "kserve"); // (before the run: it hooks the scheduler's timings)
      const encodedReply = (encoded: Uint8Array): Reply => {
        m.ok.inc();
        return { parts: [encoded], headers: JSON_HEADERS, after: () => m.total.observe((performance.now() - total) / 1000) };
      };
      entry.lastUsed = new Date();
      const fast = fastPath.answer(entry, body);
      if (fast instanceof Uint8Array) return encodedReply(fast);
      if (fast) return fast.then((r) => (r ? encodedReply(r) : inferGeneral(ctx, entry, jsonPart, binary, total)));
    }
    return inferGeneral(ctx, entry, jsonPart, binary, total);
  };

  /** Inference through JS tensors: binary data, outputs selection, parameters, and every request the fast path declines. */
  const inferGeneral = (ctx: Ctx, entry: ReadyEntry, jsonPart: Buffer | undefined, binary: Buffer | undefined, total: number): Reply | Promise<Reply> => {
    const request = parseJson(jsonPart, "infer");
    if (!Array.isArray(request.inputs)) throw new HttpError(400, "BAD_REQUEST", 'infer: "inputs" must be an array of tensors');
    const inputs: Record<string, Tensor> = {};
    let wanted: WantedOutputs | undefined;
    let params: RequestParameters;
    let names: string[] | undefined;
    try {
      decodeInputs(request.inputs, binary, inputs);
      wanted = Array.isArray(request.outputs) ? (request.outputs as WantedOutputs) : undefined;
      params = requestParameters(request.parameters);
      names = wanted?.map((o, i) => {
        if (typeof o?.name !== "string") throw new HttpError(400, "BAD_REQUEST", `outputs[${i}].name must be a string`);
        return o.name;
      });
    } catch (e) {
      disposeAll(Object.values(inputs));
      throw e;
    }
    const defaultBinary = (request.parameters as { binary_data_output?: unknown } | undefined)?.binary_data_output === true;
    let sync: Record<string, Tensor> | undefined;
    try {
      sync = serving.inferSync(entry, inputs, "kserve", names, params);
    } catch (e) {
      disposeAll(Object.values(inputs));
      throw e;
    }
    if (sync) {
      disposeAll(Object.values(inputs));
      return reply(entry, request, sync, wanted, defaultBinary, total);
    }
    return serving.infer(entry, inputs, "kserve", ctx.signal, names, params).then(
      (outputs) => {
        disposeAll(Object.values(inputs));
        return reply(entry, request, outputs, wanted, defaultBinary, total);
      },
      (e: unknown) => {
        disposeAll(Object.values(inputs));
        throw e;
      },
    );
  };

  /** The request's input tensors into `inputs` (JSON data, or slices of the binary part), in the pool. */
  function decodeInputs(list: unknown[], binary: Buffer | undefined, inputs: Record<string, Tensor>): void {
    let at = 0;
    list.forEach((raw: unknown, i: number) => {
      const t = raw as { name?: unknown; datatype?: unknown; shape?: unknown; parameters?: { binary_data_size?: unknown } };
      const name = typeof t?.name === "string" ? t.name : `inputs[${i}]`;
      if (typeof t?.name === "string" && inputs[t.name]) throw new HttpError(400, "BAD_REQUEST", `input "${t.name}" is given twice`);
      const size = t?.parameters?.binary_data_size;
      const region = regionRefOf(t?.parameters as Record<string, unknown> | undefined, name);
      if (region) {
        if (size !== undefined || (t as { data?: unknown }).data !== undefined) throw new HttpError(400, "BAD_DATA", `input "${name}" names a shared-memory region and also carries data`);
        inputs[name] = tensorFromRegion(serving.shm, name, dtypeOf(t.datatype, name), checkShape(t.shape, name), region, pool);
      } else if (size !== undefined) {
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
  }

  /** The response; the outputs are disposed once it is written (or at once if it cannot be made: a shared-memory window too small). */
  function reply(entry: ReadyEntry, request: Record<string, unknown>, outputs: Record<string, Tensor>, wanted: WantedOutputs | undefined, defaultBinary: boolean, total: number): Reply {
    try {
      return makeReply(entry, request, outputs, wanted, defaultBinary, total);
    } catch (e) {
      disposeAll(Object.values(outputs));
      throw e;
    }
  }

  function makeReply(entry: ReadyEntry, request: Record<string, unknown>, outputs: Record<string, Tensor>, wanted: WantedOutputs | undefined, defaultBinary: boolean, total: number): Reply {
    const binaryOut = (name: string) => {
      const o = wanted?.find((w) => w.name === name);
      const b = o?.parameters?.binary_data;
      return b === undefined ? defaultBinary : b === true;
    };
    const parts: Uint8Array[] = [];
    const json: KserveInferResponse = {
      model_name: entry.name,
      model_version: entry.version,
      ...(typeof request.id === "string" ? { id: request.id } : {}),
      outputs: Object.entries(outputs).map(([name, t]): KserveTensor => {
        const region = regionRefOf(wanted?.find((w) => w.name === name)?.parameters as Record<string, unknown> | undefined, name);
        if (region) {
          const bytes = binaryData(t);
          serving.shm.write(region, bytes, name);
          return { name, datatype: datatypeOf(t.dtype), shape: [...t.shape], parameters: { shared_memory_region: region.region, shared_memory_offset: region.offset, shared_memory_byte_size: bytes.byteLength } };
        }
        if (binaryOut(name)) {
          const bytes = binaryData(t);
          parts.push(bytes);
          return { name, datatype: datatypeOf(t.dtype), shape: [...t.shape], parameters: { binary_data_size: bytes.byteLength } };
        }
        return { name, datatype: datatypeOf(t.dtype), shape: [...t.shape], data: jsonData(t) };
      }),
    };
    const totalHist = serving.metricsFor(entry, "kserve").total;
    const after = () => {
      disposeAll(Object.values(outputs));
      totalHist.observe((performance.now() - total) / 1000);
    };
    if (parts.length === 0) return { body: json, after };
    const header = Buffer.from(JSON.stringify(json));
    return { parts: [header, ...parts], headers: { "Inference-Header-Content-Length": String(header.byteLength), "Content-Type": "application/octet-stream" }, after };
  }

  router.route("post", "/v2/models/:name/infer", "api", true, infer);
  router.route("post", "/v2/models/:name/versions/:version/infer", "api", true, infer);
}
