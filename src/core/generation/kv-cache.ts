/**
 * The KV cache of a decoder: keys and values of every token the running sequences have computed,
 * in fixed-size blocks (16 tokens) from the shared-memory tensor pool, under a memory budget.
 *
 * Each sequence holds a table of blocks. A full block is also registered under a hash of all the
 * tokens up to its end, so that a later sequence whose prompt starts with the same tokens reuses
 * it instead of recomputing it (the prefix cache); blocks are reference-counted, and a released
 * block that is cached stays readable until its memory is needed (least recently used first).
 *
 * A decoder exported in Hugging Face's layout takes its past as dense tensors
 * [batch, heads, past, headDim] per layer; `gather` builds them from the blocks (left-padded so
 * that every row's next token lands in the same column) and `scatter` copies the new tokens'
 * keys and values out of the `present` outputs into the blocks.
 */
import { MlosError } from "../errors.js";
import type { TensorPool } from "../../tensor/pool.js";
import type { Tensor } from "../../tensor/tensor.js";

export interface KvCacheShape {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly blockSize: number;
}

/** A row of a dense past tensor: which blocks hold its tokens, and how many tokens. */
export interface KvRow {
  readonly blocks: readonly number[];
  readonly length: number;
}

/**
 * Copies `count` floats from `src` at `from` into `dst` at `to`. A loop rather than
 * `dst.set(src.subarray(...))`: the copies here are short (a head's keys for a few tokens) and
 * hundreds per step, and a subarray is a new object each, which the garbage collector then has to
 * sweep (after an idle period V8 collects the whole heap every few young-generation collections).
 */
function copyFloats(src: Float32Array, from: number, dst: Float32Array, to: number, count: number): void {
  if (count > 256) dst.set(src.subarray(from, from + count), to); // long enough for memcpy to pay for the view
  else for (let i = 0; i < count; i++) dst[to + i] = src[from + i]!;
}

/** FNV-1a over the block's tokens, chained with the previous block's hash. */
function blockHash(prev: number, tokens: readonly number[], from: number, to: number): number {
  let h = (prev ^ 0x811c9dc5) >>> 0;
  for (let i = from; i < to; i++) {
    let t = tokens[i]!;
    for (let b = 0; b < 4; b++) {
      h ^= t & 0xff;
      h = Math.imul(h, 0x01000193) >>> 0;
      t >>>= 8;
    }
  }
  return h;
}

interface CachedBlock {
  readonly hash: string;
  /** The tokens of the whole prefix up to this block's end: compared on a hit, so a hash collision cannot serve wrong keys. */
  readonly prefix: readonly number[];
}

export class KvCache {
  readonly shape: KvCacheShape;
  readonly numBlocks: number;
  /** Per layer: keys and values, each [numBlocks, heads, blockSize, headDim]. */
  readonly #keys: Float32Array[] = [];
  readonly #values: Float32Array[] = [];
  readonly #tensors: Tensor[] = [];
  readonly #refs: Uint32Array;
  readonly #free: number[] = [];
  /** Blocks with no reference that still hold a cached prefix, least recently used first (Map keeps insertion order). */
  readonly #evictable = new Map<number, true>();
  readonly #byHash = new Map<string, number>();
  readonly #cached = new Map<number, CachedBlock>();
  /** Prefix-cache hits and lookups, in tokens. */
  hitTokens = 0;
  queriedTokens = 0;

  constructor(shape: KvCacheShape, budgetBytes: number, pool: TensorPool) {
    this.shape = shape;
    const perBlock = shape.layers * 2 * shape.heads * shape.blockSize * shape.headDim * 4;
    this.numBlocks = Math.floor(budgetBytes / perBlock);
    if (this.numBlocks < 1) throw new MlosError("KV_CACHE_TOO_SMALL", `a KV cache of ${budgetBytes} bytes holds no block of ${perBlock} bytes (${shape.layers} layers x 2 x ${shape.heads} heads x ${shape.blockSize} tokens x ${shape.headDim} x 4 bytes)`);
    const per = this.numBlocks * shape.heads * shape.blockSize * shape.headDim;
    try {
      for (let l = 0; l < shape.layers; l++) {
        const k = pool.tensor("float32", [per]);
        const v = pool.tensor("float32", [per]);
        this.#tensors.push(k, v);
        this.#keys.push(k.data as Float32Array);
        this.#values.push(v.data as Float32Array);
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
    this.#refs = new Uint32Array(this.numBlocks);
    for (let b = this.numBlocks - 1; b >= 0; b--) this.#free.push(b);
  }

  /** Blocks that can be handed out now (free, or cached and unreferenced). */
  get available(): number {
    return this.#free.length + this.#evictable.size;
  }

  /** Blocks in use by sequences. */
  get used(): number {
    return this.numBlocks - this.available;
  }

  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.shape.blockSize);
  }

  /** `n` blocks, or undefined (and nothing taken) when there are not that many. */
  allocate(n: number): number[] | undefined {
    if (n > this.available) return undefined;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      let b = this.#free.pop();
      if (b === undefined) {
        // Evict the least recently used cached block.
        b = this.#evictable.keys().next().value as number;
        this.#evictable.delete(b);
        const c = this.#cached.get(b)!;
        this.#cached.delete(b);
        this.#byHash.delete(c.hash);
      }
      this.#refs[b] = 1;
      out.push(b);
    }
    return out;
  }

  /** Drops one reference to each block; a cached block stays readable until evicted. */
  release(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.#refs[b] === 0) continue;
      if (--this.#refs[b]! > 0) continue;
      if (this.#cached.has(b)) this.#evictable.set(b, true);
      else this.#free.push(b);
    }
  }

  /**
   * The longest run of cached full blocks that holds a prefix of `tokens[0..limit)`; each block
   * returned is referenced for the caller (release it like an allocated one).
   */
  matchPrefix(tokens: readonly number[], limit: number): number[] {
    const bs = this.shape.blockSize;
    const out: number[] = [];
    let h = 0;
    const full = Math.floor(limit / bs);
    for (let i = 0; i < full; i++) {
      h = blockHash(h, tokens, i * bs, (i + 1) * bs);
      const key = `${i}:${h}`;
      const b = this.#byHash.get(key);
      if (b === undefined) break;
      const c = this.#cached.get(b)!;
      const end = (i + 1) * bs;
      let same = c.prefix.length === end;
      for (let j = 0; same && j < end; j++) if (c.prefix[j] !== tokens[j]) same = false;
      if (!same) break;
      out.push(b);
    }
    for (const b of out) {
      if (this.#refs[b] === 0) this.#evictable.delete(b);
      this.#refs[b]!++;
    }
    this.queriedTokens += limit;
    this.hitTokens += out.length * bs;
    return out;
  }

  /**
   * Registers the full blocks of a sequence whose keys and values are computed, so that later
   * prompts with the same prefix reuse them. `computed` is how many of `tokens` are in the cache.
   */
  commitPrefix(tokens: readonly number[], blocks: readonly number[], computed: number): void {
    const bs = this.shape.blockSize;
    let h = 0;
    const full = Math.floor(computed / bs);
    for (let i = 0; i < full; i++) {
      h = blockHash(h, tokens, i * bs, (i + 1) * bs);
      const b = blocks[i]!;
      if (this.#cached.has(b)) continue;
      const key = `${i}:${h}`;
      if (this.#byHash.has(key)) continue; // the same prefix is cached in another block already
      this.#byHash.set(key, b);
      this.#cached.set(b, { hash: key, prefix: tokens.slice(0, (i + 1) * bs) });
    }
  }

  /**
   * Fills dense past tensors for `rows` (pastK[l], pastV[l]: [rows, heads, P, headDim]), each
   * row's tokens right-aligned at column P (left padding is zeroed: masked keys must not hold NaN,
   * which would reach the output through a zero attention weight).
   */
  gather(rows: readonly KvRow[], P: number, pastK: readonly Float32Array[], pastV: readonly Float32Array[]): void {
    const { layers, heads, headDim: D, blockSize: bs } = this.shape;
    const blockStride = heads * bs * D;
    for (let l = 0; l < layers; l++) {
      for (const [src, dst] of [
        [this.#keys[l]!, pastK[l]!],
        [this.#values[l]!, pastV[l]!],
      ] as const) {
        for (let r = 0; r < rows.length; r++) {
          const { blocks, length } = rows[r]!;
          const pad = P - length;
          for (let h = 0; h < heads; h++) {
            const rowBase = ((r * heads + h) * P) * D;
            if (pad > 0) dst.fill(0, rowBase, rowBase + pad * D);
            let col = pad;
            for (let bi = 0; bi < blocks.length && col < P; bi++) {
              const n = Math.min(bs, P - col);
              const from = blocks[bi]! * blockStride + h * bs * D;
              copyFloats(src, from, dst, rowBase + col * D, n * D);
              col += n;
            }
          }
        }
      }
    }
  }

  /**
   * Copies `count` tokens of each row out of the present tensors ([rows, heads, T, headDim], the
   * row's new tokens in columns [T - count, T)) into its blocks, at token positions
   * [start, start + count).
   */
  scatter(rows: ReadonlyArray<{ blocks: readonly number[]; start: number; count: number }>, T: number, presentK: readonly Float32Array[], presentV: readonly Float32Array[]): void {
    const { layers, heads, headDim: D, blockSize: bs } = this.shape;
    const blockStride = heads * bs * D;
    for (let l = 0; l < layers; l++) {
      for (const [dst, src] of [
        [this.#keys[l]!, presentK[l]!],
        [this.#values[l]!, presentV[l]!],
      ] as const) {
        for (let r = 0; r < rows.length; r++) {
          const { blocks, start, count } = rows[r]!;
          for (let h = 0; h < heads; h++) {
            const srcBase = ((r * heads + h) * T + (T - count)) * D;
            let done = 0;
            while (done < count) {
              const pos = start + done;
              const bi = Math.floor(pos / bs);
              const off = pos % bs;
              const n = Math.min(bs - off, count - done);
              const to = blocks[bi]! * blockStride + h * bs * D + off * D;
              copyFloats(src, srcBase + done * D, dst, to, n * D);
              done += n;
            }
          }
        }
      }
    }
  }

  /** Returns the blocks' memory to the pool. */
  dispose(): void {
    for (const t of this.#tensors) t.dispose();
    this.#tensors.length = 0;
  }
}
