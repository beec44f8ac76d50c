import type { ProgressEvent } from "../axon/axon.js";

/**
 * Per-file and total progress (bytes, rate, ETA) on a TTY. Redraws at most every 100 ms on
 * stderr; cli-progress is loaded only when a display is actually shown.
 */
export class ProgressDisplay {
  readonly #stream: NodeJS.WriteStream;
  #bars: import("cli-progress").MultiBar | undefined;
  #total: import("cli-progress").SingleBar | undefined;
  readonly #files = new Map<string, { bar: import("cli-progress").SingleBar; done: number; total: number }>();
  #done = 0;
  #grand = 0;
  #loading: Promise<typeof import("cli-progress")> | undefined;
  #lib: typeof import("cli-progress") | undefined;

  constructor(stream: NodeJS.WriteStream) {
    this.#stream = stream;
    this.#loading = import("cli-progress").then((m) => (this.#lib = (m as unknown as { default: typeof import("cli-progress") }).default ?? m));
  }

  /** The sink to hand to Axon operations. */
  readonly sink = (e: ProgressEvent): void => {
    if (!this.#lib) return;
    if (!this.#bars) {
      this.#bars = new this.#lib.MultiBar(
        {
          stream: this.#stream,
          fps: 10,
          barsize: 20,
          clearOnComplete: false,
          hideCursor: true,
          format: "{name} |{bar}| {pct}% {have}/{size} {rate} ETA {eta_formatted}",
          formatValue: (v, _o, type) => (type === "eta" ? String(v) : String(v)),
        },
        this.#lib.Presets.shades_classic,
      );
      this.#total = this.#bars.create(1, 0, this.#payload("total", 0, 1, 0));
    }
    let f = this.#files.get(e.file);
    if (!f) {
      const total = e.total ?? 0;
      f = { bar: this.#bars.create(Math.max(total, 1), 0, this.#payload(e.file, 0, total, 0)), done: 0, total };
      this.#files.set(e.file, f);
      this.#grand += total;
      this.#total!.setTotal(Math.max(this.#grand, 1));
    }
    f.done += e.delta;
    this.#done += e.delta;
    const elapsed = (Date.now() - this.#started) / 1000;
    const rate = elapsed > 0 ? this.#done / elapsed : 0;
    f.bar.update(f.done, this.#payload(e.file, f.done, f.total, rate));
    this.#total!.update(this.#done, this.#payload("total", this.#done, this.#grand, rate));
  };

  readonly #started = Date.now();

  async ready(): Promise<void> {
    await this.#loading;
  }

  #payload(name: string, have: number, size: number, rate: number) {
    const short = name.length > 28 ? `…${name.slice(-27)}` : name.padEnd(28);
    return { name: short, have: human(have), size: human(size), rate: `${human(rate)}/s`, pct: size ? Math.floor((have / size) * 100) : 100 };
  }

  stop(): void {
    this.#bars?.stop();
  }
}

function human(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
