/**
 * The client's allocator for its IPC arena: first fit over a sorted free list, blocks rounded to
 * IPC_ALIGN bytes, neighbours merged on free. Arenas hold a handful of live tensors at a time, so
 * a list is simpler and as fast as anything cleverer.
 */
import { IPC_ALIGN } from "../protocol/ipc.js";

export class ArenaAllocator {
  readonly bytes: number;
  /** Free blocks [offset, size], sorted by offset, never adjacent. */
  readonly #free: Array<[number, number]>;
  readonly #sizes = new Map<number, number>();
  #used = 0;

  constructor(bytes: number) {
    this.bytes = bytes - (bytes % IPC_ALIGN);
    this.#free = [[0, this.bytes]];
  }

  /** Bytes allocated now. */
  get used(): number {
    return this.#used;
  }

  /** The largest block that could be allocated now. */
  get largestFree(): number {
    return this.#free.reduce((m, [, n]) => Math.max(m, n), 0);
  }

  /** The offset of a block of at least `n` bytes, or -1 when none is free. */
  alloc(n: number): number {
    const size = Math.max(IPC_ALIGN, Math.ceil(n / IPC_ALIGN) * IPC_ALIGN);
    for (let i = 0; i < this.#free.length; i++) {
      const block = this.#free[i]!;
      if (block[1] < size) continue;
      const offset = block[0];
      if (block[1] === size) this.#free.splice(i, 1);
      else {
        block[0] += size;
        block[1] -= size;
      }
      this.#sizes.set(offset, size);
      this.#used += size;
      return offset;
    }
    return -1;
  }

  /** Frees a block alloc returned (a second free of the same block is ignored). */
  free(offset: number): void {
    const size = this.#sizes.get(offset);
    if (size === undefined) return;
    this.#sizes.delete(offset);
    this.#used -= size;
    let i = 0;
    while (i < this.#free.length && this.#free[i]![0] < offset) i++;
    this.#free.splice(i, 0, [offset, size]);
    // Merge with the next, then with the previous.
    const cur = this.#free[i]!;
    const next = this.#free[i + 1];
    if (next && cur[0] + cur[1] === next[0]) {
      cur[1] += next[1];
      this.#free.splice(i + 1, 1);
    }
    const prev = this.#free[i - 1];
    if (prev && prev[0] + prev[1] === cur[0]) {
      prev[1] += cur[1];
      this.#free.splice(i, 1);
    }
  }
}
