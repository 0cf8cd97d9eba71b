import type { KeySource } from '../hash/key.js';
import { murmur3 } from '../hash/murmur3.js';
import { LoadBound } from './bounded-load.js';
import { canonicalOrder, HashWalkPicker } from './hash-walk.js';
import type { PickerEndpoint, PickerFactory, PickRequest } from './picker.js';

/** The default table size: a prime, as the Maglev paper and Envoy use. */
export const DEFAULT_TABLE_SIZE = 65537;
/** Envoy's upper limit on the table size. */
export const MAX_TABLE_SIZE = 5000011;
/** Seeds of the two hashes that give each backend its permutation of the table. */
const OFFSET_SEED = 0x6d61676c;
const SKIP_SEED = 0x65766a6c;

/** Maglev options after validation. */
export interface MaglevSettings {
  readonly tableSize: number;
  readonly boundedLoad: number | undefined;
}

/**
 * Maglev hashing (Eisenbud et al., NSDI 2016). Each backend has its own permutation of the M table
 * slots, offset = murmur3(id, 0x6d61676c) mod M and skip = murmur3(id, 0x65766a6c) mod (M - 1) + 1;
 * backends take turns, in id order, claiming their next free preferred slot until the table is
 * full. Weights change how often a backend takes its turn, as Envoy does: in round r backend i
 * takes a turn only when r x w_i / W has reached its running target, which then grows by the
 * largest w / W; and a backend stops claiming once it owns its quota, M w_i / W rounded by largest
 * remainder. Every backend so owns within one slot of M w_i / W (unweighted: floor(M/N) or ceil(M/N)). A key goes to `table[murmur3(key, 0) mod M]`: O(1) whatever the pool size.
 *
 * A change rebuilds the table: expected O(M log M), a few milliseconds at M = 65537 (see
 * docs/hashing.md). Removing a backend moves its keys and, unlike the ring, a few others too
 * (at most about twice the minimum).
 */
export function createMaglevFactory<B>(settings: MaglevSettings, keys: KeySource): PickerFactory<B> {
  return (endpoints) => {
    const ordered = canonicalOrder(endpoints);
    const bound = settings.boundedLoad === undefined ? undefined : new LoadBound(settings.boundedLoad, endpoints);
    return new MaglevPicker(ordered, buildMaglevTable(ordered, settings.tableSize), keys, bound);
  };
}

/** Fills a table of `size` slots with indexes into `endpoints` (in the order given). */
export function buildMaglevTable(endpoints: readonly PickerEndpoint[], size: number): Int32Array {
  const n = endpoints.length;
  const table = new Int32Array(size).fill(-1);
  const position = new Float64Array(n);
  const skip = new Float64Array(n);
  const share = new Float64Array(n);
  const target = new Float64Array(n);
  const quota = slotQuotas(endpoints, size);
  const owned = new Float64Array(n);
  let total = 0;
  for (const ep of endpoints) total += ep.effectiveWeight;
  let maxShare = 0;
  endpoints.forEach((ep, i) => {
    position[i] = murmur3(ep.id, OFFSET_SEED) % size;
    skip[i] = (murmur3(ep.id, SKIP_SEED) % (size - 1)) + 1;
    share[i] = ep.effectiveWeight / total;
    maxShare = Math.max(maxShare, share[i] as number);
  });
  let filled = 0;
  for (let round = 1; filled < size; round++) {
    for (let i = 0; i < n && filled < size; i++) {
      if (round * (share[i] as number) < (target[i] as number)) continue;
      target[i] = (target[i] as number) + maxShare;
      if ((owned[i] as number) >= (quota[i] as number)) continue;
      let slot = position[i] as number;
      while ((table[slot] as number) >= 0) {
        slot += skip[i] as number;
        if (slot >= size) slot -= size;
      }
      table[slot] = i;
      owned[i] = (owned[i] as number) + 1;
      slot += skip[i] as number;
      position[i] = slot >= size ? slot - size : slot;
      filled++;
    }
  }
  return table;
}

/**
 * Each backend's number of slots: M w_i / W rounded by largest remainder (ties to the earlier
 * backend), so every backend owns within one slot of its exact share. Envoy's turn skipping alone
 * lets rounding add up: one heavy backend among many light ones can fall 8 slots short.
 */
function slotQuotas(endpoints: readonly PickerEndpoint[], size: number): Float64Array {
  const n = endpoints.length;
  const quota = new Float64Array(n);
  let total = 0;
  for (const ep of endpoints) total += ep.effectiveWeight;
  let given = 0;
  const remainders: number[] = [];
  endpoints.forEach((ep, i) => {
    const exact = (size * ep.effectiveWeight) / total;
    quota[i] = Math.floor(exact);
    given += quota[i] as number;
    remainders.push(i);
  });
  const rest = (i: number) => (size * (endpoints[i] as PickerEndpoint).effectiveWeight) / total - (quota[i] as number);
  remainders.sort((a, b) => rest(b) - rest(a) || a - b);
  for (let k = 0; given < size; k++, given++) {
    const i = remainders[k % n] as number;
    quota[i] = (quota[i] as number) + 1;
  }
  return quota;
}

class MaglevPicker<B> extends HashWalkPicker<B> {
  constructor(
    endpoints: readonly PickerEndpoint<B>[],
    private readonly table: Int32Array,
    keys: KeySource,
    bound: LoadBound | undefined,
  ) {
    super(endpoints, keys, bound);
  }

  protected first(hash: number): number {
    return this.table[(hash >>> 0) % this.table.length] as number;
  }

  protected walk(hash: number, request: PickRequest): PickerEndpoint<B> | undefined {
    const table = this.table;
    const size = table.length;
    let slot = (hash >>> 0) % size;
    for (let step = 0; step < size && !this.exhausted; step++) {
      const i = table[slot] as number;
      if (this.offer(i, request)) return this.endpoints[i];
      slot = slot + 1 === size ? 0 : slot + 1;
    }
    // With more backends than slots some own none: they come last, in id order.
    for (let i = 0; i < this.endpoints.length && !this.exhausted; i++) {
      if (this.offer(i, request)) return this.endpoints[i];
    }
    return undefined;
  }
}
