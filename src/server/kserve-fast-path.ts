/**
 * The KServe v2 fast path, for the HTTP door's JSON bodies and the gRPC door's ModelInfer messages.
 * For ONNX models that run in microseconds, the JavaScript around a run (parsing the request into
 * objects, tensors, result objects, encoding the response) costs several times the run, so an
 * infer request's raw bytes go to the plugin's native codec for that wire format (the
 * `kserve-v2-json` and `kserve-v2-grpc` capabilities, src/protocol/kserve.ts), which decodes, runs
 * and encodes in one call. Whatever the codec declines takes the door's general path, which
 * answers it and owns every error message.
 *
 * Runs go through the model's scheduler (`runInline`): they count against its instances and never
 * overtake a queued request. A batched model runs the first request of an event-loop turn at once
 * (a lone client pays no batching), and those read after it in the same turn are stacked by the
 * codec into one run at the end of the turn (setImmediate, no added delay), each getting its own
 * rows back.
 */
import type { ReadyEntry } from "../core/model-table.js";
import type { Scheduler } from "../core/scheduler.js";
import { LATER, type KSERVE_GRPC_CODEC, type KSERVE_JSON_CODEC, type KserveNativeCodec } from "../protocol/kserve.js";

interface Waiting {
  body: Uint8Array;
  enqueued: number;
  resolve: (r: Uint8Array | undefined) => void;
  release: () => void;
}

/** Per loaded model (its scheduler): this turn's batch. */
interface Turn {
  /** Set while the event-loop turn whose first request ran at once lasts. */
  active: boolean;
  waiting: Waiting[];
  flush: NodeJS.Immediate | undefined;
  /** Set once the codec said it cannot batch this model at all. */
  unbatchable: boolean;
}

export class KserveFastPath {
  readonly #turns = new WeakMap<Scheduler, Turn>();

  /** `capability`: the wire format's codec, as plugins offer it. */
  constructor(readonly capability: typeof KSERVE_JSON_CODEC | typeof KSERVE_GRPC_CODEC) {}

  /**
   * The response to `body` from the model's codec: bytes at once, a promise when the request
   * joined this turn's batch (resolving to undefined if the codec declined it), or undefined when
   * the fast path does not take it (no codec, the model busy or queued, or the codec declined):
   * then nothing ran and the caller takes the general path. Synchronous bytes are valid until the
   * codec's next call.
   */
  answer(entry: ReadyEntry, body: Uint8Array): Uint8Array | Promise<Uint8Array | undefined> | undefined {
    const codec = entry.model.capability<KserveNativeCodec>(this.capability);
    if (!codec) return undefined;
    const scheduler = entry.scheduler;
    if (!scheduler.batching) return this.#runOne(entry, codec, body);
    const turn = this.#turnOf(scheduler);
    if (!turn.active && turn.waiting.length === 0) {
      // The first request of this turn runs at once; the ones that come after it in the turn are batched.
      turn.active = true;
      setImmediate(() => (turn.active = false));
      const out = this.#runOne(entry, codec, body);
      if (out) return out;
    }
    return this.#join(entry, codec, turn, body);
  }

  /**
   * Batched models: `body` joins this turn's batch, which runs at the end of the turn; resolves
   * with its response, or undefined where the codec declined it. Undefined (synchronously) when
   * the model has no codec, is not batched, cannot be batched by its codec, or its queue is full.
   */
  join(entry: ReadyEntry, body: Uint8Array): Promise<Uint8Array | undefined> | undefined {
    const codec = entry.model.capability<KserveNativeCodec>(this.capability);
    if (!codec || !entry.scheduler.batching) return undefined;
    return this.#join(entry, codec, this.#turnOf(entry.scheduler), body);
  }

  #turnOf(scheduler: Scheduler): Turn {
    let turn = this.#turns.get(scheduler);
    if (!turn) this.#turns.set(scheduler, (turn = { active: false, waiting: [], flush: undefined, unbatchable: false }));
    return turn;
  }

  #join(entry: ReadyEntry, codec: KserveNativeCodec, turn: Turn, body: Uint8Array): Promise<Uint8Array | undefined> | undefined {
    if (turn.unbatchable) return undefined;
    const release = entry.scheduler.hold();
    if (!release) return undefined; // the queue limit: the general path answers QUEUE_FULL
    return new Promise((resolve) => {
      turn.waiting.push({ body, enqueued: performance.now(), resolve, release });
      turn.flush ??= setImmediate(() => this.#flush(entry, codec, turn));
    });
  }

  #runOne(entry: ReadyEntry, codec: KserveNativeCodec, body: Uint8Array): Uint8Array | undefined {
    const started = performance.now();
    const out = entry.scheduler.runInline(() => codec.runSync(body, entry.name, entry.version));
    if (out) entry.scheduler.onTimings?.(0, (performance.now() - started) / 1000, 1);
    return out;
  }

  /** Runs the turn's requests, batch after batch, until each has run or was declined. */
  #flush(entry: ReadyEntry, codec: KserveNativeCodec, turn: Turn): void {
    turn.flush = undefined;
    let waiting = turn.waiting.splice(0);
    const scheduler = entry.scheduler;
    const maxRows = scheduler.maxBatchSize;
    const answer = (w: Waiting, r: Uint8Array | undefined) => {
      w.release();
      w.resolve(r);
    };
    while (waiting.length > 0) {
      const started = performance.now();
      const bodies = waiting.map((w) => w.body);
      let out: Array<Uint8Array | typeof LATER | undefined> | undefined | null = scheduler.runInline(() => {
        try {
          return codec.runBatchSync(bodies, entry.name, entry.version, maxRows) ?? null;
        } catch {
          return []; // (a model unloaded meanwhile, say): the general path reports it
        }
      });
      if (out === null) {
        turn.unbatchable = true;
        out = [];
      }
      // undefined: the model is busy or has queued requests; they take the general path.
      const compute = (performance.now() - started) / 1000;
      let ran = 0;
      for (const o of out ?? []) if (o instanceof Uint8Array) ran++;
      scheduler.recordBatch(ran);
      const later: Waiting[] = [];
      waiting.forEach((w, i) => {
        const r = out?.[i];
        if (r === LATER && ran > 0) {
          later.push(w);
          return;
        }
        if (r instanceof Uint8Array) scheduler.onTimings?.((started - w.enqueued) / 1000, compute, ran);
        answer(w, r instanceof Uint8Array ? r : undefined);
      });
      waiting = later;
    }
  }
}
