/**
 * V8's heap growth in a process that generates text.
 *
 * After an idle period, V8's memory reducer shrinks the heap and then lets its old generation grow
 * back only slowly, its limit a little above its size. A generation engine allocates steadily while
 * it runs (token text, stream chunks and their promises, step inputs), and in that state V8 starts
 * one incremental full (mark-compact) collection after another (`--trace-incremental-marking`:
 * "Start (task)", the limit 24 MB above a 34 MB heap): a burst of requests that followed an idle
 * period ran at about half speed, with a full collection every ~40 ms, and with traffic in bursts
 * it happened again after every idle period (the demo model, 32 streams after 3 s idle: ~3,000-4,000 tokens/s against ~7,500 back to back;
 * `node --no-memory-reducer` made the difference go away). A fixed growth factor of 2 per full
 * collection (V8's `--heap-growing-percent=100`, which V8 reads when it sets a new limit) keeps
 * room ahead of the allocation, at the cost of a heap up to twice its live size.
 *
 * Applied when a generation engine starts. `MLOS_V8_HEAP_GROWING_PERCENT` sets another
 * percentage; 0 leaves V8's own policy (for a process where it was never set).
 */
import v8 from "node:v8";

export const DEFAULT_HEAP_GROWING_PERCENT = 100;

/** The percentage this process set last (0: none). */
let current = 0;

/**
 * Sets V8's heap growing factor for generation (when the engine starts; again only when the
 * percentage changes); returns the percentage in effect, or 0 when V8's own policy is kept.
 */
export function applyGenerationHeapGrowth(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.MLOS_V8_HEAP_GROWING_PERCENT;
  const parsed = raw === undefined || raw === "" ? DEFAULT_HEAP_GROWING_PERCENT : Number(raw);
  const percent = Number.isSafeInteger(parsed) && parsed > 0 ? parsed : 0;
  if (percent > 0 && percent !== current) {
    v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
    current = percent;
  }
  return percent;
}
