// The onnxruntime plugin's run policy: where runs execute (inline or on a worker thread), and how
// many rows a batched inline run may stack so that it never holds the event loop for long.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BATCH_MAX_US, INLINE_MAX_US, RunPolicy } from "../src/core/run-policy.js";

describe("RunPolicy", () => {
  it("auto mode runs off the thread until measured, then inline for a microsecond model", () => {
    const p = new RunPolicy("auto");
    assert.equal(p.inline, false);
    // Runs of 10 µs against a 60 µs hand-off: cheaper where they are called.
    for (let i = 0; i < 64 && !p.inline; i++) p.recordAsync(10, 70, 16);
    assert.equal(p.inline, true);
    assert.equal(p.inlineFor(16 * 4), true, "inputs up to 4x those measured stay inline");
    assert.equal(p.inlineFor(16 * 5), false, "larger ones go to a worker thread");
  });

  it("caps batched inline runs at the rows that fit in BATCH_MAX_US", () => {
    const p = new RunPolicy("inline");
    assert.equal(p.batchRows(64), 64, "nothing measured in the forced mode: the model's own limit");
    p.recordBatch(1000, 10); // 100 µs a row
    assert.equal(p.batchRows(64), Math.floor(BATCH_MAX_US / 100));
    assert.equal(p.batchRows(4), 4, "never above the model's max_batch_size");
    p.recordBatch(5, 0); // no rows: ignored
    p.recordBatch(Number.NaN, 3);
    assert.equal(p.batchRows(64), 10);
    // One preempted run nudges the average (1/8 of the way) and never sends the model off the thread.
    p.recordBatch(200_000, 10);
    assert.equal(p.inline, true);
    const capped = p.batchRows(64);
    assert.ok(capped >= 1 && capped < 10, `a slower average shrinks batches (${capped})`);
    for (let i = 0; i < 64; i++) p.recordBatch(100_000, 1);
    assert.equal(p.batchRows(64), 1, "at least one row always runs");
  });

  it("before any batch ran, single runs' average sets the cap", () => {
    const p = new RunPolicy("auto");
    for (let i = 0; i < 64 && !p.inline; i++) p.recordAsync(20, 200, 16);
    assert.equal(p.inline, true);
    for (let i = 0; i < 200; i++) p.recordInline(50);
    assert.ok(50 < INLINE_MAX_US);
    const rows = p.batchRows(1000);
    assert.ok(rows >= Math.floor(BATCH_MAX_US / 60) && rows <= Math.floor(BATCH_MAX_US / 20), `${rows} rows at ~50 µs a run`);
  });
});
