import type { KeySource } from '../hash/key.js';
import { murmur3 } from '../hash/murmur3.js';
import { LoadBound } from './bounded-load.js';
import { canonicalOrder, HashWalkPicker } from './hash-walk.js';
import type { PickerEndpoint, PickerFactory, PickRequest } from './picker.js';

/** Default virtual nodes per unit of weight; see docs/hashing.md for how it was chosen. */
export const DEFAULT_VNODES = 400;
/** Default cap on the ring's points, so huge weights cannot exhaust memory (NGINX issue 191). */
export const DEFAULT_MAX_RING_SIZE = 1 << 20;

/** Ring options after validation. */
export interface RingSettings {
  readonly vnodes: number;
  readonly maxRingSize: number;
  readonly boundedLoad: number | undefined;
}

/**
 * Consistent hashing on a ring (Karger et al. 1997; ketama style). Backend `id` places
 * round(vnodes x weight) points (at least 1) on a 32-bit circle, point v at `murmur3(id, v)`; if the
 * ring would exceed `maxRingSize` points every count is scaled down in proportion. A key goes to
 * the owner of the first point at or after `murmur3(key, 0)`, wrapping at the top; equal points are
 * ordered by id. Removing a backend moves only its keys; adding one moves keys only to it.
 *
 * Lookup is a binary search over a sorted `Uint32Array`, narrowed first by a 65,536-entry index
 * of the hashes' top 16 bits, so it costs about the same at 10 and at 1000 backends. Each
 * backend's point hashes are cached by id across rebuilds (and a weight change reuses the prefix),
 * so a membership change costs a sort of the ring, not a rehash of every backend.
 */
export function createRingHashFactory<B>(settings: RingSettings, keys: KeySource): PickerFactory<B> {
  const cache = new Map<string, Uint32Array>();
  // The last rings built (one per tier at most), from which a change is applied incrementally.
  let recent: BuiltRing[] = [];
  return (endpoints) => {
    const ordered = canonicalOrder(endpoints);
    const ids = ordered.map((ep) => ep.id);
    const counts = pointCounts(ordered, settings);
    const ring = buildRing(ids, counts, cache, recent);
    recent = [ring, ...recent.filter((r) => r !== ring)].slice(0, 2);
    const live = new Set(recent.flatMap((r) => r.ids));
    for (const id of cache.keys()) if (!live.has(id)) cache.delete(id);
    const bound = settings.boundedLoad === undefined ? undefined : new LoadBound(settings.boundedLoad, endpoints);
    return new RingHashPicker(ordered, ring, keys, bound);
  };
}

function pointCounts(endpoints: readonly PickerEndpoint[], settings: RingSettings): Uint32Array {
  const counts = new Uint32Array(endpoints.length);
  let total = 0;
  endpoints.forEach((ep, i) => {
    const c = Math.max(1, Math.round(settings.vnodes * ep.effectiveWeight));
    counts[i] = Math.min(c, settings.maxRingSize);
    total += counts[i] as number;
  });
  if (total > settings.maxRingSize) {
    const scale = settings.maxRingSize / total;
    for (let i = 0; i < counts.length; i++) counts[i] = Math.max(1, Math.floor((counts[i] as number) * scale));
  }
  return counts;
}

function cachedPoints(cache: Map<string, Uint32Array>, id: string, count: number): Uint32Array {
  const have = cache.get(id);
  if (have !== undefined && have.length >= count) return have;
  const points = new Uint32Array(count);
  const from = have === undefined ? 0 : have.length;
  if (have !== undefined) points.set(have);
  for (let v = from; v < count; v++) points[v] = murmur3(id, v);
  cache.set(id, points);
  return points;
}

/** A sorted ring: point hashes, their owners, and an index of where each 16-bit prefix starts. */
export interface Ring {
  readonly points: Uint32Array;
  readonly owners: Uint32Array;
  /** prefixStart[p] = first point whose hash >>> 16 is >= p; prefixStart[65536] = points.length. */
  readonly prefixStart: Uint32Array;
}

/** A ring with the ids (in owner-index order) and point counts it was built from. */
interface BuiltRing extends Ring {
  readonly ids: readonly string[];
  readonly counts: Uint32Array;
}

/** 2^20: a point sorts as hash x 2^20 + owner, exact below 2^53, so ties fall back to id order. */
const OWNER_SCALE = 1048576;

/**
 * Builds the ring for `ids` (sorted) with `counts` points each. When a recent ring shares most of
 * its backends, only the changed backends' points are removed and merged in: O(ring size) instead
 * of a sort of the whole ring.
 */
function buildRing(
  ids: readonly string[],
  counts: Uint32Array,
  cache: Map<string, Uint32Array>,
  recent: readonly BuiltRing[],
): BuiltRing {
  const index = new Map<string, number>();
  for (let i = 0; i < ids.length; i++) index.set(ids[i] as string, i);
  let base: BuiltRing | undefined;
  let baseKept = 0;
  for (const r of recent) {
    let kept = 0;
    r.ids.forEach((id, j) => {
      const i = index.get(id);
      if (i !== undefined && counts[i] === r.counts[j]) kept++;
    });
    if (kept > baseKept) {
      base = r;
      baseKept = kept;
    }
  }
  // Merging pays off while most of the ring stays; otherwise sort everything afresh.
  if (base === undefined || baseKept * 2 < ids.length) return sortedRing(ids, counts, cache);
  const remap = new Int32Array(base.ids.length);
  const kept = new Uint8Array(ids.length);
  base.ids.forEach((id, j) => {
    const i = index.get(id);
    const keep = i !== undefined && counts[i] === base.counts[j];
    remap[j] = keep ? (i as number) : -1;
    if (keep) kept[i as number] = 1;
  });
  const added = sortedPoints(ids, counts, cache, (i) => kept[i] === 0);
  let total = added.length;
  for (let i = 0; i < ids.length; i++) if (kept[i] === 1) total += counts[i] as number;
  const points = new Uint32Array(total);
  const owners = new Uint32Array(total);
  const old = base;
  let a = 0; // next point of the old ring
  let b = 0; // next added point
  for (let k = 0; k < total; k++) {
    while (a < old.points.length && remap[old.owners[a] as number] === -1) a++;
    let takeOld = a < old.points.length;
    if (takeOld && b < added.length) {
      const x = (old.points[a] as number) * OWNER_SCALE + (remap[old.owners[a] as number] as number);
      takeOld = x < (added[b] as number);
    }
    if (takeOld) {
      points[k] = old.points[a] as number;
      owners[k] = remap[old.owners[a] as number] as number;
      a++;
    } else {
      const x = added[b++] as number;
      const hash = Math.floor(x / OWNER_SCALE);
      points[k] = hash;
      owners[k] = x - hash * OWNER_SCALE;
    }
  }
  return { points, owners, prefixStart: prefixIndex(points), ids, counts };
}

/** Every point sorted from scratch. */
function sortedRing(ids: readonly string[], counts: Uint32Array, cache: Map<string, Uint32Array>): BuiltRing {
  const keyed = sortedPoints(ids, counts, cache, () => true);
  const points = new Uint32Array(keyed.length);
  const owners = new Uint32Array(keyed.length);
  for (let i = 0; i < keyed.length; i++) {
    const x = keyed[i] as number;
    const hash = Math.floor(x / OWNER_SCALE);
    points[i] = hash;
    owners[i] = x - hash * OWNER_SCALE;
  }
  return { points, owners, prefixStart: prefixIndex(points), ids, counts };
}

/** The points of the selected owners as sorted (hash x 2^20 + owner) numbers. */
function sortedPoints(
  ids: readonly string[],
  counts: Uint32Array,
  cache: Map<string, Uint32Array>,
  select: (owner: number) => boolean,
): Float64Array {
  let total = 0;
  for (let i = 0; i < ids.length; i++) if (select(i)) total += counts[i] as number;
  const keyed = new Float64Array(total);
  let k = 0;
  ids.forEach((id, owner) => {
    if (!select(owner)) return;
    const c = counts[owner] as number;
    const points = cachedPoints(cache, id, c);
    for (let v = 0; v < c; v++) keyed[k++] = (points[v] as number) * OWNER_SCALE + owner;
  });
  keyed.sort();
  return keyed;
}

function prefixIndex(points: Uint32Array): Uint32Array {
  const prefixStart = new Uint32Array(65537);
  let i = 0;
  for (let p = 0; p <= 65536; p++) {
    while (i < points.length && (points[i] as number) >>> 16 < p) i++;
    prefixStart[p] = i;
  }
  return prefixStart;
}

/** Index of the first point >= hash, or 0 past the top of the ring. */
export function ringIndex(ring: Ring, signedHash: number): number {
  const { points, prefixStart } = ring;
  const hash = signedHash >>> 0;
  const p = hash >>> 16;
  let lo = prefixStart[p] as number;
  let hi = prefixStart[p + 1] as number;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((points[mid] as number) < hash) lo = mid + 1;
    else hi = mid;
  }
  return lo === points.length ? 0 : lo;
}

class RingHashPicker<B> extends HashWalkPicker<B> {
  constructor(
    endpoints: readonly PickerEndpoint<B>[],
    private readonly ring: Ring,
    keys: KeySource,
    bound: LoadBound | undefined,
  ) {
    super(endpoints, keys, bound);
  }

  protected first(hash: number): number {
    return this.ring.owners[ringIndex(this.ring, hash)] as number;
  }

  protected walk(hash: number, request: PickRequest): PickerEndpoint<B> | undefined {
    const { owners } = this.ring;
    let j = ringIndex(this.ring, hash);
    for (let step = 0; step < owners.length && !this.exhausted; step++) {
      const owner = owners[j] as number;
      if (this.offer(owner, request)) return this.endpoints[owner];
      j = j + 1 === owners.length ? 0 : j + 1;
    }
    return undefined;
  }
}
