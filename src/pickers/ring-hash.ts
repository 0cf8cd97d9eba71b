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
  return (endpoints) => {
    const ordered = canonicalOrder(endpoints);
    const counts = pointCounts(ordered, settings);
    const live = new Set<string>();
    const pointsOf = ordered.map((ep, i) => {
      live.add(ep.id);
      return cachedPoints(cache, ep.id, counts[i] as number);
    });
    for (const id of cache.keys()) if (!live.has(id)) cache.delete(id);
    const bound = settings.boundedLoad === undefined ? undefined : new LoadBound(settings.boundedLoad, endpoints);
    return new RingHashPicker(ordered, buildRing(pointsOf, counts), keys, bound);
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

function buildRing(pointsOf: readonly Uint32Array[], counts: Uint32Array): Ring {
  let total = 0;
  for (const c of counts) total += c;
  // Sort (hash, owner) pairs as one number: hash x 2^20 + owner index stays exact below 2^53,
  // and ties on hash fall back to owner index, i.e. to id order.
  const keyed = new Float64Array(total);
  let k = 0;
  pointsOf.forEach((points, owner) => {
    const c = counts[owner] as number;
    for (let v = 0; v < c; v++) keyed[k++] = (points[v] as number) * 1048576 + owner;
  });
  keyed.sort();
  const points = new Uint32Array(total);
  const owners = new Uint32Array(total);
  for (let i = 0; i < total; i++) {
    const x = keyed[i] as number;
    const hash = Math.floor(x / 1048576);
    points[i] = hash;
    owners[i] = x - hash * 1048576;
  }
  const prefixStart = new Uint32Array(65537);
  let i = 0;
  for (let p = 0; p <= 65536; p++) {
    while (i < total && (points[i] as number) >>> 16 < p) i++;
    prefixStart[p] = i;
  }
  return { points, owners, prefixStart };
}

/** Index of the first point >= hash, or 0 past the top of the ring. */
export function ringIndex(ring: Ring, hash: number): number {
  const { points, prefixStart } = ring;
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
