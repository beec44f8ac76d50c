/**
 * The per-request metric families (request counts, latency and batch-size histograms), registered
 * in a prom-client Registry and written by it in the Prometheus text format like its own metrics.
 *
 * Why not prom-client's Counter and Histogram here: their bound children (`labels(...)`) still
 * build and hash a label string on every `inc` and `observe`, about a microsecond each, and a
 * request records five of them. These families resolve the labels once per child; recording is a
 * bucket search over a small array and three additions. Everything else (gauges, process metrics,
 * the exposition itself) stays prom-client's.
 */
import type client from "prom-client";

type LabelValues<L extends string> = Readonly<Record<L, string>>;

/** The shape prom-client's Registry reads from a metric (`get()`), as its own metrics give it. */
interface MetricSnapshot {
  name: string;
  help: string;
  type: "counter" | "histogram";
  aggregator: "sum";
  values: Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>;
}

abstract class Family<L extends string, C> {
  readonly aggregator = "sum" as const;
  readonly #labelNames: readonly L[];
  readonly #children = new Map<string, { labels: LabelValues<L>; child: C }>();

  constructor(
    readonly name: string,
    readonly help: string,
    labelNames: readonly L[],
    registers: readonly client.Registry[],
  ) {
    this.#labelNames = labelNames;
    for (const r of registers) r.registerMetric(this as unknown as client.Metric);
  }

  /** The child for these label values, made once; keep it to record without any lookup. */
  labels(labels: LabelValues<L>): C {
    const key = this.#labelNames.map((n) => labels[n]).join("\u0000");
    let found = this.#children.get(key);
    if (!found) {
      for (const n of this.#labelNames) {
        if (typeof labels[n] !== "string") throw new TypeError(`metric ${this.name}: label "${n}" needs a string value`);
      }
      found = { labels: { ...labels }, child: this.newChild() };
      this.#children.set(key, found);
    }
    return found.child;
  }

  protected abstract newChild(): C;

  protected children(): Iterable<{ labels: LabelValues<L>; child: C }> {
    return this.#children.values();
  }

  /** Registry.resetMetrics(): forgets every child. */
  reset(): void {
    this.#children.clear();
  }
}

/** A counter child. */
export class CounterChild {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

/** A monotonic counter by labels (prom-client's Counter, for the request path). */
export class CounterFamily<L extends string> extends Family<L, CounterChild> {
  readonly type = "counter" as const;

  inc(labels: LabelValues<L>, by = 1): void {
    this.labels(labels).inc(by);
  }

  protected newChild(): CounterChild {
    return new CounterChild();
  }

  async get(): Promise<MetricSnapshot> {
    const values: MetricSnapshot["values"] = [];
    for (const { labels, child } of this.children()) values.push({ labels: { ...labels }, value: child.value });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** A histogram child: counts per bucket (the last one is +Inf), sum and count. */
export class HistogramChild {
  readonly #bounds: readonly number[];
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/** A histogram by labels, with the bucket bounds given (prom-client's Histogram, for the request path). */
export class HistogramFamily<L extends string> extends Family<L, HistogramChild> {
  readonly type = "histogram" as const;
  readonly #bounds: readonly number[];

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[], registers: readonly client.Registry[]) {
    super(name, help, labelNames, registers);
    this.#bounds = [...buckets].sort((a, b) => a - b);
  }

  observe(labels: LabelValues<L>, value: number): void {
    this.labels(labels).observe(value);
  }

  protected newChild(): HistogramChild {
    return new HistogramChild(this.#bounds);
  }

  async get(): Promise<MetricSnapshot> {
    const values: MetricSnapshot["values"] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, child } of this.children()) {
      let cumulative = 0;
      this.#bounds.forEach((le, i) => {
        cumulative += child.counts[i]!;
        values.push({ labels: { le, ...labels }, value: cumulative, metricName: bucket });
      });
      values.push({ labels: { le: "+Inf", ...labels }, value: child.count, metricName: bucket });
      values.push({ labels: { ...labels }, value: child.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: child.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
