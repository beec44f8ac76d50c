/**
 * Where a model's runs execute: on a native worker thread ("async", the event loop stays free) or
 * inline on the calling thread. For a model whose whole run takes a few microseconds, handing it to
 * a worker thread and back costs more than the run itself (on the demo MLP, ~50 µs of hand-off for
 * a 10 µs run), so running it inline is both faster and harmless to the event loop.
 *
 * "auto" decides per model from measurements: the first runs go async, and each reports how long
 * Session::Run took (`runMicros`) next to the wall time of the whole hand-off. Once `SAMPLES` runs
 * are in, the model runs inline when its median run is shorter than the median hand-off overhead
 * and under `INLINE_MAX_US` (so an inline run never holds the event loop for long). Inline runs
 * keep being timed: when their moving average passes `INLINE_MAX_US` (bigger batches, a loaded
 * machine), or one run takes longer than `INLINE_EVICT_US`, the model goes back to async runs and
 * to measuring. (One slow run from a preempted thread moves the average little.) A request whose
 * inputs are much larger than those measured (`INLINE_SIZE_FACTOR` times the largest) goes to a
 * worker thread without being tried inline: run time grows with input size.
 */
export const SAMPLES = 16;
export const INLINE_MAX_US = 200;
export const INLINE_EVICT_US = 20_000;
export const INLINE_SIZE_FACTOR = 4;
const EMA_WEIGHT = 1 / 32;
/**
 * The longest a stacked (batched) inline run may hold the event loop, in µs: batches are capped
 * at the rows that fit, at the measured time per row.
 */
export const BATCH_MAX_US = 1000;
const BATCH_EMA_WEIGHT = 1 / 8;

export type RunMode = "auto" | "inline" | "async";

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[s.length >> 1]!;
};

export class RunPolicy {
  readonly mode: RunMode;
  #inline: boolean;
  #run: number[] = [];
  #hop: number[] = [];
  #decisions = 0;
  #inlineAverage = 0;
  /** A batched inline run's Session::Run time per row (moving average); undefined until one ran. */
  #batchRowMicros: number | undefined;
  /** The largest input size (bytes) seen while measuring; inline runs take up to INLINE_SIZE_FACTOR times it. */
  #measuredBytes = 0;

  constructor(mode: RunMode = "auto") {
    this.mode = mode;
    this.#inline = mode === "inline";
  }

  /** True when the next run should execute on the calling thread. */
  get inline(): boolean {
    return this.#inline;
  }

  /** Whether a run with `inputBytes` of inputs should execute on the calling thread. */
  inlineFor(inputBytes: number): boolean {
    return this.#inline && (this.mode === "inline" || inputBytes <= this.#measuredBytes * INLINE_SIZE_FACTOR);
  }

  /** Records an async run: Session::Run's own time, the caller-observed wall time (µs), and the inputs' size. */
  recordAsync(runMicros: number, wallMicros: number, inputBytes = 0): void {
    if (this.mode !== "auto" || this.#inline) return;
    this.#measuredBytes = Math.max(this.#measuredBytes, inputBytes);
    this.#run.push(runMicros);
    this.#hop.push(Math.max(0, wallMicros - runMicros));
    if (this.#run.length < SAMPLES) return;
    const run = median(this.#run);
    const hop = median(this.#hop);
    this.#run = [];
    this.#hop = [];
    this.#decisions++;
    this.#inline = run < hop && run < INLINE_MAX_US;
    this.#inlineAverage = run;
    this.#last = { runMicros: run, hopMicros: hop };
  }

  /** Records an inline run's duration (µs); a slow one returns the model to async runs. */
  recordInline(runMicros: number): void {
    if (this.mode !== "auto") return;
    this.#inlineAverage += (runMicros - this.#inlineAverage) * EMA_WEIGHT;
    if (runMicros > INLINE_EVICT_US || this.#inlineAverage > INLINE_MAX_US) this.#inline = false;
  }

  #last: { runMicros: number; hopMicros: number } | undefined;

  /**
   * How many rows a batched inline run may stack (at most `maxRows`): those that fit in
   * BATCH_MAX_US at the time per row batched runs took, or single runs' average before any did.
   * A preempted run only nudges the average, and never sends the model off the thread: batches
   * just get smaller.
   */
  batchRows(maxRows: number): number {
    const perRow = this.#batchRowMicros ?? this.#inlineAverage;
    if (!(perRow > 0)) return maxRows;
    return Math.max(1, Math.min(maxRows, Math.floor(BATCH_MAX_US / perRow)));
  }

  /** Records a batched inline run: Session::Run's time (µs) and the rows it stacked. */
  recordBatch(runMicros: number, rows: number): void {
    if (!(rows > 0) || !Number.isFinite(runMicros)) return;
    const perRow = runMicros / rows;
    this.#batchRowMicros = this.#batchRowMicros === undefined ? perRow : this.#batchRowMicros + (perRow - this.#batchRowMicros) * BATCH_EMA_WEIGHT;
  }

  /** What was measured and decided, for `describe()`. */
  describe(): Record<string, unknown> {
    return { runMode: this.mode, inline: this.#inline, decisions: this.#decisions, measured: this.#last, inlineAverageMicros: this.#inline ? this.#inlineAverage : undefined, batchRowMicros: this.#batchRowMicros };
  }
}
