/**
 * Property tests of the consistent-hashing pickers ('ring-hash', 'maglev', 'rendezvous'), against
 * DESIGN.md sections 3 and 8 and reference/algorithms.md sections 4, 5, 7, 8 and 11 (items 8-11,
 * 13-15 and 18).
 *
 * Reproducibility: every `fc.assert` runs with a pinned fast-check `seed`; key sets are fixed lists
 * of URL-like strings; the hash pickers use no randomness. So every run of this file performs
 * exactly the same picks, and a failure replays from the seed and path fast-check prints.
 *
 * Exact models. The properties compare the balancer with small independent models written from
 * the documented layout (ring-hash.ts, maglev.ts, rendezvous.ts, hash-walk.ts):
 * - ring: backend `id` places max(1, round(vnodes x weight)) points at murmur3(id, v), v = 0, 1, ...
 *   (scaled down in proportion when the ring would exceed maxRingSize); a key goes to the owner of
 *   the first point >= murmur3(key, 0), wrapping; equal points are ordered by id. A key's next
 *   choices are the owners of the next points clockwise.
 * - maglev: a table populated as the paper's Pseudocode 1 with the weighted turns of maglev.ts,
 *   over the backends sorted by id (an independent implementation, checked against the library's
 *   `buildMaglevTable`); a key goes to table[murmur3(key, 0) mod M]; its next choices are the
 *   owners of the next slots.
 * - rendezvous: score = -w / ln((x + 0.5) / 2^32), x = fmix32(k ^ imul(murmur3(id, 0x72647a76),
 *   0x9e3779b1)); the highest score wins, ties to the lower id; next choices by decreasing score.
 *
 * Deterministic properties have zero tolerance. The few statistical ones say how their bound is
 * justified where they are asserted: either the probability of a false failure, over the choice
 * of keys and ids, is below 1e-6 for an ideal hash, or the ids and the key set are fixed, so the
 * result is a constant that this file pins (and the observed value is noted beside it).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
  fmix32,
  isFairpickError,
  murmur3,
  murmur3Bytes,
  type PickerEndpoint,
  type Slot,
} from '../src/index.js';
import { buildMaglevTable } from '../src/pickers/maglev.js';
import { at } from './support/util.js';

// ---------------------------------------------------------------------------------------------
// Helpers

type HashAlgorithm = 'ring-hash' | 'maglev' | 'rendezvous';
const HASH_ALGORITHMS: readonly HashAlgorithm[] = ['ring-hash', 'maglev', 'rendezvous'];

interface Backend {
  readonly id: string;
  readonly weight: number;
  readonly backup?: boolean;
}

interface HashSettings {
  readonly vnodes?: number;
  readonly maxRingSize?: number;
  /** Maglev table size; this file uses the small prime 1009 unless a property is about another size. */
  readonly tableSize?: number;
  readonly boundedLoad?: number;
}

const TWO_32 = 4294967296;
const DEFAULT_VNODES = 400;
const DEFAULT_MAX_RING_SIZE = 1 << 20;
const DEFAULT_TABLE = 65537;
const SMALL_TABLE = 1009;
const RENDEZVOUS_SEED = 0x72647a76;
const GOLDEN = 0x9e3779b1;

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byId<T extends { readonly id: string }>(xs: readonly T[]): T[] {
  return [...xs].sort((a, b) => compareIds(a.id, b.id));
}

/** A balancer of one hash algorithm; Maglev gets the small table unless `tableSize` says otherwise. */
function hashBalancer(
  algorithm: HashAlgorithm,
  backends: readonly Backend[],
  settings: HashSettings = {},
): Balancer<Backend> {
  const options: Record<string, unknown> = { algorithm, backends };
  if (algorithm === 'ring-hash') {
    if (settings.vnodes !== undefined) options.vnodes = settings.vnodes;
    if (settings.maxRingSize !== undefined) options.maxRingSize = settings.maxRingSize;
  }
  if (algorithm === 'maglev') options.tableSize = settings.tableSize ?? SMALL_TABLE;
  if (settings.boundedLoad !== undefined) options.boundedLoad = settings.boundedLoad;
  return createBalancer<Backend>(options as unknown as BalancerOptions<Backend>);
}

function mapping(lb: Balancer<Backend>, keys: readonly string[]): string[] {
  return keys.map((key) => lb.pick({ key }).id);
}

/** Asserts that the balancer maps every key as `owner` says (one assertion for the whole list). */
function expectMapping(lb: Balancer<Backend>, keys: readonly string[], owner: (key: string) => string): void {
  expect(mapping(lb, keys)).toEqual(keys.map(owner));
}

/** The fixed key set: URL-like strings, all distinct. */
function urlKey(i: number): string {
  return `https://shop.example.com/api/v2/items/${i}?ref=campaign-${i % 97}&page=${i % 13}`;
}
const KEYS: readonly string[] = Array.from({ length: 20_000 }, (_, i) => urlKey(i));
const SAMPLE: readonly string[] = KEYS.slice(0, 2_000);

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}

function expectFairpickError(fn: () => unknown, code: 'ERR_INVALID_ARGUMENT' | 'ERR_NO_BACKEND'): Error {
  const error = caught(fn);
  expect(isFairpickError(error, code), String(error)).toBe(true);
  return error as Error;
}

// Arbitraries. Ids mix realistic names, arbitrary strings and arbitrary code points, so the
// UTF-8 hashing of ids and the id order (UTF-16 code units) are both exercised.
const idArb = fc.oneof(
  fc.integer({ min: 0, max: 99_999 }).map((i) => `backend-${i}`),
  fc.string({ minLength: 1, maxLength: 8 }),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 4 }),
);

/**
 * Ids made of lone surrogates: distinct strings whose UTF-8 encodings coincide (each lone
 * surrogate encodes as U+FFFD), so they hash identically and exercise the tie-breaks by id. Used
 * only by exact properties: statistical ones assume distinct hashes.
 */
const twinIdArb = fc.oneof(
  idArb,
  fc
    .array(fc.integer({ min: 0xd800, max: 0xdfff }), { minLength: 1, maxLength: 2 })
    .map((units) => String.fromCharCode(...units)),
);

function backendsArb(
  minLength: number,
  maxLength: number,
  weight: fc.Arbitrary<number> = fc.integer({ min: 1, max: 4 }),
  id: fc.Arbitrary<string> = idArb,
): fc.Arbitrary<Backend[]> {
  return fc.uniqueArray(fc.record({ id, weight }), { minLength, maxLength, selector: (b) => b.id, size: 'max' });
}

/** A backend list and a permutation of it. */
function withPermutation(list: fc.Arbitrary<Backend[]>): fc.Arbitrary<[Backend[], Backend[]]> {
  return list.chain((backends) =>
    fc.tuple(
      fc.constant(backends),
      fc.shuffledSubarray(backends, { minLength: backends.length, maxLength: backends.length }),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Exact models of the documented layouts

interface RingModel {
  /** Point hashes, sorted; ties ordered by owner id. */
  readonly points: Float64Array;
  readonly owners: readonly string[];
  readonly size: number;
}

function ringModel(
  backends: readonly Backend[],
  vnodes = DEFAULT_VNODES,
  maxRingSize = DEFAULT_MAX_RING_SIZE,
): RingModel {
  const sorted = byId(backends);
  let counts = sorted.map((b) => Math.min(Math.max(1, Math.round(vnodes * b.weight)), maxRingSize));
  const total = counts.reduce((a, c) => a + c, 0);
  if (total > maxRingSize) {
    const scale = maxRingSize / total;
    counts = counts.map((c) => Math.max(1, Math.floor(c * scale)));
  }
  const entries: { point: number; rank: number }[] = [];
  sorted.forEach((b, rank) => {
    for (let v = 0; v < at(counts, rank); v++) entries.push({ point: murmur3(b.id, v), rank });
  });
  entries.sort((a, b) => a.point - b.point || a.rank - b.rank);
  return {
    points: Float64Array.from(entries, (e) => e.point),
    owners: entries.map((e) => at(sorted, e.rank).id),
    size: sorted.length,
  };
}

/** Index of the first point >= hash, wrapping to 0. */
function ringStart(ring: RingModel, hash: number): number {
  let lo = 0;
  let hi = ring.points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (at(ring.points, mid) < hash) lo = mid + 1;
    else hi = mid;
  }
  return lo === ring.points.length ? 0 : lo;
}

/** The key's preference order: distinct owners of the points clockwise from the key. */
function ringPreference(ring: RingModel, hash: number): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  let j = ringStart(ring, hash);
  for (let step = 0; step < ring.owners.length && order.length < ring.size; step++) {
    const owner = at(ring.owners, j);
    if (!seen.has(owner)) {
      seen.add(owner);
      order.push(owner);
    }
    j = j + 1 === ring.owners.length ? 0 : j + 1;
  }
  return order;
}

/** Each backend's exact share of the 2^32 hash values: the arcs ending at its points. */
function ringShares(ring: RingModel): Map<string, number> {
  const shares = new Map<string, number>();
  const n = ring.points.length;
  for (let i = 0; i < n; i++) {
    const arc =
      i === 0 ? at(ring.points, 0) + TWO_32 - at(ring.points, n - 1) : at(ring.points, i) - at(ring.points, i - 1);
    const owner = at(ring.owners, i);
    shares.set(owner, (shares.get(owner) ?? 0) + arc);
  }
  return shares;
}

function endpointsOf(backends: readonly Backend[]): PickerEndpoint<Backend>[] {
  return byId(backends).map((b, index) => ({
    id: b.id,
    backend: b,
    effectiveWeight: b.weight,
    inFlight: 0,
    maxInFlight: Number.POSITIVE_INFINITY,
    index,
    latencyAt: () => 0,
  }));
}

interface MaglevModel {
  readonly table: Int32Array;
  /** Ids in id order: the table holds indexes into it. */
  readonly ids: readonly string[];
}

/**
 * An independent Maglev population, written from the paper's Pseudocode 1 (permutation[i][j] =
 * (offset_i + j skip_i) mod M, next[i] counting j) and the weighted turns maglev.ts documents:
 * backends in id order; in round r backend i takes a turn when r w_i / W has reached its running
 * target, which then grows by max w / W; a backend that owns its quota (M w / W rounded by largest
 * remainder, ties to the earlier id) takes no more slots; offset = murmur3(id, 0x6d61676c) mod M,
 * skip = murmur3(id, 0x65766a6c) mod (M - 1) + 1.
 */
function maglevModel(backends: readonly Backend[], size: number): MaglevModel {
  const sorted = byId(backends);
  const n = sorted.length;
  const weightSum = sorted.reduce((a, b) => a + b.weight, 0);
  const exact = sorted.map((b) => (size * b.weight) / weightSum);
  const quota = exact.map(Math.floor);
  const order = sorted
    .map((_, i) => i)
    .sort((a, b) => at(exact, b) - at(quota, b) - (at(exact, a) - at(quota, a)) || a - b);
  for (let k = 0, given = quota.reduce((a, q) => a + q, 0); given < size; k++, given++) {
    const i = at(order, k % n);
    quota[i] = at(quota, i) + 1;
  }
  const owned = new Array<number>(n).fill(0);
  const offset = Float64Array.from(sorted, (b) => murmur3(b.id, 0x6d61676c) % size);
  const skip = Float64Array.from(sorted, (b) => (murmur3(b.id, 0x65766a6c) % (size - 1)) + 1);
  const total = sorted.reduce((a, b) => a + b.weight, 0);
  const share = Float64Array.from(sorted, (b) => b.weight / total);
  const maxShare = Math.max(...share);
  const target = new Float64Array(n);
  const next = new Float64Array(n); // j, the position in backend i's permutation
  const table = new Int32Array(size).fill(-1);
  const permutation = (i: number): number => ((offset[i] as number) + (next[i] as number) * (skip[i] as number)) % size;
  let filled = 0;
  for (let round = 1; filled < size; round++) {
    for (let i = 0; i < n && filled < size; i++) {
      if (round * (share[i] as number) < (target[i] as number)) continue;
      target[i] = (target[i] as number) + maxShare;
      if (at(owned, i) >= at(quota, i)) continue;
      owned[i] = at(owned, i) + 1;
      let slot = permutation(i);
      while ((table[slot] as number) >= 0) {
        next[i] = (next[i] as number) + 1;
        slot = permutation(i);
      }
      table[slot] = i;
      next[i] = (next[i] as number) + 1;
      filled++;
    }
  }
  return { table, ids: sorted.map((b) => b.id) };
}

/**
 * The key's preference order: distinct owners of the table slots from the key's slot on, then
 * (more backends than slots) the backends that own none, in id order.
 */
function maglevPreference(model: MaglevModel, hash: number): string[] {
  const { table, ids } = model;
  const order: string[] = [];
  const seen = new Set<number>();
  let slot = hash % table.length;
  for (let step = 0; step < table.length && order.length < ids.length; step++) {
    const i = at(table, slot);
    if (!seen.has(i)) {
      seen.add(i);
      order.push(at(ids, i));
    }
    slot = slot + 1 === table.length ? 0 : slot + 1;
  }
  ids.forEach((id, i) => {
    if (!seen.has(i)) order.push(id);
  });
  return order;
}

function maglevCounts(model: MaglevModel): number[] {
  const counts = new Array<number>(model.ids.length).fill(0);
  for (const i of model.table) counts[i] = at(counts, i) + 1;
  return counts;
}

/** Table owners by id, slot by slot. */
function maglevIds(backends: readonly Backend[], size: number): string[] {
  const model = maglevModel(backends, size);
  return Array.from(model.table, (i) => at(model.ids, i));
}

/**
 * The key's rendezvous preference order: backends by decreasing score, ties to the lower id. The
 * weighted score is used even for equal weights: it is strictly increasing in x, so it orders as
 * the picker's equal-weight shortcut (comparing x) does.
 */
function rendezvousPreference(backends: readonly Backend[], hash: number): string[] {
  const scored = backends.map((b) => {
    const x = fmix32(hash ^ Math.imul(murmur3(b.id, RENDEZVOUS_SEED), GOLDEN));
    return { id: b.id, score: -b.weight / Math.log((x + 0.5) / TWO_32) };
  });
  scored.sort((a, b) => b.score - a.score || compareIds(a.id, b.id));
  return scored.map((s) => s.id);
}

/** A function from a key to its full preference order under the model of `algorithm`. */
function preferenceModel(
  algorithm: HashAlgorithm,
  backends: readonly Backend[],
  settings: HashSettings = {},
): (key: string) => string[] {
  if (algorithm === 'ring-hash') {
    const ring = ringModel(backends, settings.vnodes, settings.maxRingSize);
    return (key) => ringPreference(ring, murmur3(key, 0));
  }
  if (algorithm === 'maglev') {
    const model = maglevModel(backends, settings.tableSize ?? SMALL_TABLE);
    return (key) => maglevPreference(model, murmur3(key, 0));
  }
  return (key) => rendezvousPreference(backends, murmur3(key, 0));
}

// ---------------------------------------------------------------------------------------------

describe('hash pickers follow their documented layout (exact models)', () => {
  it('ring-hash: picks equal the ring model for any vnodes, weights and maxRingSize', () => {
    fc.assert(
      fc.property(
        backendsArb(1, 24, fc.constantFrom(0.5, 1, 1.5, 2, 3, 7), twinIdArb),
        fc.integer({ min: 1, max: 300 }),
        fc.option(fc.integer({ min: 1, max: 4_000 }), { nil: undefined }),
        (backends, vnodes, maxRingSize) => {
          const settings = maxRingSize === undefined ? { vnodes } : { vnodes, maxRingSize };
          const lb = hashBalancer('ring-hash', backends, settings);
          const ring = ringModel(backends, vnodes, maxRingSize);
          expectMapping(lb, SAMPLE.slice(0, 1_000), (key) => at(ring.owners, ringStart(ring, murmur3(key, 0))));
        },
      ),
      { seed: 0x5eed0001, numRuns: 40 },
    );
  });

  it('maglev: picks equal table[murmur3(key) mod M] for tables built over the id order', () => {
    fc.assert(
      fc.property(
        backendsArb(1, 40, fc.integer({ min: 1, max: 5 }), twinIdArb),
        fc.constantFrom(1009, 10007),
        (backends, M) => {
          const lb = hashBalancer('maglev', backends, { tableSize: M });
          const model = maglevModel(backends, M);
          // The library's own table builder agrees with the independent population.
          expect(buildMaglevTable(endpointsOf(backends), M)).toEqual(model.table);
          expectMapping(lb, SAMPLE.slice(0, 1_000), (key) => at(model.ids, at(model.table, murmur3(key, 0) % M)));
        },
      ),
      { seed: 0x5eed0002, numRuns: 30 },
    );
  });

  it('maglev: the default table size is 65537', () => {
    const backends = Array.from({ length: 20 }, (_, i) => ({ id: `backend-${i}`, weight: 1 + (i % 3) }));
    const lb = createBalancer<Backend>({ algorithm: 'maglev', backends });
    const model = maglevModel(backends, DEFAULT_TABLE);
    expectMapping(lb, SAMPLE, (key) => at(model.ids, at(model.table, murmur3(key, 0) % DEFAULT_TABLE)));
  });

  it('rendezvous: picks are the highest -w / ln(u) score, for equal and unequal weights', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          backendsArb(1, 30, fc.constant(1), twinIdArb),
          backendsArb(1, 30, fc.constantFrom(0.25, 1, 2, 3.5, 10, 100), twinIdArb),
        ),
        (backends) => {
          const lb = hashBalancer('rendezvous', backends);
          expectMapping(lb, SAMPLE.slice(0, 1_000), (key) => at(rendezvousPreference(backends, murmur3(key, 0)), 0));
        },
      ),
      { seed: 0x5eed0003, numRuns: 40 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('ties between ids that hash alike go to the lower id', () => {
  it('lone surrogates encode alike (U+FFFD): ring and rendezvous always pick the lower id', () => {
    // '\uD800' < '\uDC00' in UTF-16 order; both hash as the UTF-8 bytes EF BF BD.
    expect(murmur3('\uD800', 7)).toBe(murmur3('\uDC00', 7));
    const twins = [
      { id: '\uDC00', weight: 1 },
      { id: '\uD800', weight: 1 },
    ];
    for (const algorithm of ['ring-hash', 'rendezvous'] as const) {
      const lb = hashBalancer(algorithm, twins);
      expect(new Set(mapping(lb, SAMPLE))).toEqual(new Set(['\uD800']));
      // The twin is the next choice of every key.
      expect(new Set(SAMPLE.map((key) => lb.pick({ key, exclude: new Set(['\uD800']) }).id))).toEqual(
        new Set(['\uDC00']),
      );
    }
    // Maglev: identical permutations, turns in id order; the table still splits floor/ceil(M / 2).
    const model = maglevModel(twins, SMALL_TABLE);
    expect(maglevCounts(model).sort()).toEqual([504, 505]);
    expectMapping(hashBalancer('maglev', twins), SAMPLE, (key) =>
      at(model.ids, at(model.table, murmur3(key, 0) % SMALL_TABLE)),
    );
  });
});

describe('determinism (algorithms.md 11.11, 11.18)', () => {
  for (const algorithm of HASH_ALGORITHMS) {
    it(`${algorithm}: same key and membership, same backend: across calls, instances, orders, add and set`, () => {
      const keys = SAMPLE.slice(0, 1_000);
      fc.assert(
        fc.property(
          withPermutation(backendsArb(1, 30, fc.integer({ min: 1, max: 4 }), twinIdArb)),
          fc.integer({ min: 0, max: 2 ** 31 - 1 }),
          ([backends, permuted], subsetSeed) => {
            const lb = hashBalancer(algorithm, backends);
            const reference = mapping(lb, keys);
            // Across calls, interleaved with other keys.
            expect(mapping(lb, [...keys].reverse()).reverse()).toEqual(reference);
            expect(mapping(lb, keys)).toEqual(reference);
            // Across fresh instances built in another order.
            expect(mapping(hashBalancer(algorithm, permuted), keys)).toEqual(reference);
            // Built by add() in the permuted order.
            const added = hashBalancer(algorithm, []);
            for (const b of permuted) added.add(b);
            expect(mapping(added, keys)).toEqual(reference);
            // set() reconciling to the same list in another order.
            lb.set(permuted);
            expect(mapping(lb, keys)).toEqual(reference);
            // A subset reached by removal equals the subset built fresh, in either order.
            const subset = permuted.filter((_, i) => ((subsetSeed >>> (i % 31)) & 1) === 1 || i === 0);
            const bySet = hashBalancer(algorithm, backends);
            bySet.set(subset);
            const byRemove = hashBalancer(algorithm, backends);
            const kept = new Set(subset.map((b) => b.id));
            for (const b of backends) if (!kept.has(b.id)) byRemove.remove(b.id);
            const fresh = mapping(hashBalancer(algorithm, byId(subset)), keys);
            expect(mapping(bySet, keys)).toEqual(fresh);
            expect(mapping(byRemove, keys)).toEqual(fresh);
            expect(mapping(hashBalancer(algorithm, [...subset].reverse()), keys)).toEqual(fresh);
          },
        ),
        { seed: 0x5eed0010 + HASH_ALGORITHMS.indexOf(algorithm), numRuns: 20 },
      );
    });
  }

  it('shuffledSubarray: any subset in any order maps every key as the subset in id order does', () => {
    const pool = Array.from({ length: 40 }, (_, i) => ({ id: `srv-${(i * 7919) % 1000}`, weight: 1 + (i % 4) }));
    fc.assert(
      fc.property(
        fc.constantFrom(...HASH_ALGORITHMS),
        fc.shuffledSubarray(pool, { minLength: 1 }),
        (algorithm, subset) => {
          const keys = SAMPLE.slice(0, 500);
          expect(mapping(hashBalancer(algorithm, subset), keys)).toEqual(
            mapping(hashBalancer(algorithm, byId(subset)), keys),
          );
        },
      ),
      { seed: 0x5eed0014, numRuns: 40 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('disruption: ring-hash and rendezvous move only what they must (algorithms.md 11.10, 11.14)', () => {
  for (const algorithm of ['ring-hash', 'rendezvous'] as const) {
    it(`${algorithm}: remove, re-add, add and reweight on ${KEYS.length} fixed keys`, () => {
      fc.assert(
        fc.property(backendsArb(3, 25), fc.nat(), fc.integer({ min: 1, max: 6 }), (all, removeAt, newWeight) => {
          const newcomer = at(all, all.length - 1);
          const backends = all.slice(0, -1);
          const victim = at(backends, removeAt % backends.length);
          const lb = hashBalancer(algorithm, backends);
          const base = mapping(lb, KEYS);

          // Removing a backend moves exactly the keys it owned (violations are collected as key
          // indexes and asserted once: 20,000 separate expects would dominate the runtime).
          lb.remove(victim.id);
          const removed = mapping(lb, KEYS);
          const badRemove = KEYS.flatMap((_, i) =>
            base[i] === victim.id ? (removed[i] === victim.id ? [i] : []) : removed[i] !== base[i] ? [i] : [],
          );
          expect(badRemove).toEqual([]);
          const fresh = (list: readonly Backend[]) => mapping(hashBalancer(algorithm, list), SAMPLE);
          expect(removed.slice(0, SAMPLE.length)).toEqual(fresh(backends.filter((b) => b !== victim)));

          // Re-adding it restores the original mapping exactly.
          lb.add(victim);
          expect(mapping(lb, KEYS)).toEqual(base);

          // Adding a backend moves keys only to it.
          lb.add(newcomer);
          const grown = mapping(lb, KEYS);
          const moved = KEYS.flatMap((_, i) => (grown[i] !== base[i] ? [i] : []));
          expect(moved.filter((i) => grown[i] !== newcomer.id)).toEqual([]);
          expect(grown.slice(0, SAMPLE.length)).toEqual(fresh([...backends, newcomer]));
          lb.remove(newcomer.id);
          expect(mapping(lb, KEYS)).toEqual(base);
          // Statistical companion: the moved count is Binomial(K, p) for an ideal key hash, p the
          // newcomer's exact arc share (ring) or w / (W + w) (rendezvous). z = 6.2 gives a two-sided
          // tail of 5.6e-10 per run, 15 runs: < 1e-8 (the key set is fixed as well).
          const p =
            algorithm === 'ring-hash'
              ? (ringShares(ringModel([...backends, newcomer])).get(newcomer.id) ?? 0) / TWO_32
              : newcomer.weight / (backends.reduce((a, b) => a + b.weight, 0) + newcomer.weight);
          expect(Math.abs(moved.length - KEYS.length * p)).toBeLessThanOrEqual(
            6.2 * Math.sqrt(KEYS.length * p * (1 - p)),
          );

          // Changing one backend's weight moves keys only to or from it (for the ring, its
          // points at the new weight are a prefix or an extension of those at the old one).
          const target = at(backends, (removeAt + 1) % backends.length);
          lb.update(target.id, { weight: newWeight });
          const reweighted = mapping(lb, KEYS);
          const badReweight = KEYS.flatMap((_, i) =>
            reweighted[i] !== base[i] && reweighted[i] !== target.id && base[i] !== target.id ? [i] : [],
          );
          expect(badReweight).toEqual([]);
          const shifted = backends.map((b) => (b === target ? { ...b, weight: newWeight } : b));
          expect(reweighted.slice(0, SAMPLE.length)).toEqual(fresh(shifted));
        }),
        { seed: algorithm === 'ring-hash' ? 0x5eed0020 : 0x5eed0021, numRuns: 15 },
      );
    });
  }
});

describe('disruption: maglev (regression bound, algorithms.md 11.13)', () => {
  // A regression bound, not a theorem: Maglev's disruption is not minimal. With random names,
  // M = 65537 and N <= 100, removing one backend changed at most 1.82x the minimum 1/N, and adding
  // one at most 1.87x 1/(N+1), over 1,350 configurations explored while writing this test; the ids
  // here come from a pinned seed, so the asserted values are fixed.
  it('M = 65537: removing 1 of N <= 100 changes <= 2/N of the entries, adding one <= 2/(N+1)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(idArb, { minLength: 3, maxLength: 101, size: 'max' }), fc.nat(), (ids, removeAt) => {
        // The last id is the newcomer of the adding half.
        const all = ids.map((id) => ({ id, weight: 1 }));
        const backends = all.slice(0, -1);
        const n = backends.length;
        const victim = at(backends, removeAt % n);
        const before = maglevIds(backends, DEFAULT_TABLE);

        const after = maglevIds(
          backends.filter((b) => b !== victim),
          DEFAULT_TABLE,
        );
        let changed = 0;
        let kept = 0; // entries of the removed backend that did not change: must be none
        for (let s = 0; s < DEFAULT_TABLE; s++) {
          if (before[s] === victim.id && after[s] === victim.id) kept++;
          if (before[s] !== after[s]) changed++;
        }
        expect(kept).toBe(0);
        expect(changed / DEFAULT_TABLE).toBeLessThanOrEqual(2 / n);

        const grown = maglevIds(all, DEFAULT_TABLE);
        let changedByAdd = 0;
        for (let s = 0; s < DEFAULT_TABLE; s++) if (before[s] !== grown[s]) changedByAdd++;
        expect(changedByAdd / DEFAULT_TABLE).toBeLessThanOrEqual(2 / (n + 1));
      }),
      { seed: 0x5eed0030, numRuns: 20 },
    );
  });

  it('through the balancer: remove() moves every key of the removed backend and agrees with the table', () => {
    const backends = Array.from({ length: 30 }, (_, i) => ({ id: `backend-${i}`, weight: 1 }));
    const lb = createBalancer<Backend>({ algorithm: 'maglev', backends });
    const base = mapping(lb, KEYS);
    lb.remove('backend-7');
    const after = mapping(lb, KEYS);
    const model = maglevIds(
      backends.filter((b) => b.id !== 'backend-7'),
      DEFAULT_TABLE,
    );
    expect(after).toEqual(KEYS.map((key) => model[murmur3(key, 0) % DEFAULT_TABLE]));
    expect(after.filter((id) => id === 'backend-7')).toEqual([]);
    expect(base.filter((id) => id === 'backend-7').length).toBeGreaterThan(0);
    const changed = KEYS.filter((_, i) => after[i] !== base[i]).length;
    // Keys are a sample of the table: 2/N of the table plus 6 sigma of sampling noise (fixed keys).
    const p = 2 / backends.length;
    expect(changed).toBeLessThanOrEqual(KEYS.length * p + 6 * Math.sqrt(KEYS.length * p * (1 - p)));
  });
});

// ---------------------------------------------------------------------------------------------

describe('balance (DESIGN.md section 8)', () => {
  it('maglev unweighted: every backend owns floor(M/N) or ceil(M/N) entries (M in 1009, 10007, 65537)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1009, 10007, 65537),
        fc.uniqueArray(idArb, { minLength: 1, maxLength: 200, size: 'max' }),
        (M, ids) => {
          const model = maglevModel(
            ids.map((id) => ({ id, weight: 1 })),
            M,
          );
          const counts = maglevCounts(model);
          const lo = Math.floor(M / ids.length);
          const hi = Math.ceil(M / ids.length);
          for (const c of counts) expect(c === lo || c === hi, `${c} not in {${lo}, ${hi}}`).toBe(true);
          expect(counts.reduce((a, c) => a + c, 0)).toBe(M);
        },
      ),
      { seed: 0x5eed0040, numRuns: 30 },
    );
    // N = M: one entry each.
    const full = maglevCounts(
      maglevModel(
        Array.from({ length: SMALL_TABLE }, (_, i) => ({ id: `b${i}`, weight: 1 })),
        SMALL_TABLE,
      ),
    );
    expect(full.every((c) => c === 1)).toBe(true);
  });

  it('maglev weighted 1:2 at M = 65537 gives exactly 21846 and 43691 entries (Envoy figures)', () => {
    const backends = [
      { id: 'a', weight: 1 },
      { id: 'b', weight: 2 },
    ];
    expect(maglevCounts(maglevModel(backends, DEFAULT_TABLE))).toEqual([21846, 43691]);
    // And the default balancer uses that table: keys split by it exactly.
    const lb = createBalancer<Backend>({ algorithm: 'maglev', backends: [...backends].reverse() });
    const model = maglevModel(backends, DEFAULT_TABLE);
    expectMapping(lb, SAMPLE, (key) => at(model.ids, at(model.table, murmur3(key, 0) % DEFAULT_TABLE)));
  });

  it('maglev weighted 1..10: every backend owns within one entry of M w / W (DESIGN.md section 8 allows 2)', () => {
    // Deterministic: the slot quotas are M w / W rounded by largest remainder. Envoy's turn
    // skipping alone let one heavy backend among light ones fall 7.97 entries short (the example).
    fc.assert(
      fc.property(
        fc.constantFrom(1009, 10007, 65537),
        backendsArb(1, 50, fc.integer({ min: 1, max: 10 })),
        (M, backends) => {
          const counts = maglevCounts(maglevModel(backends, M));
          const sorted = byId(backends);
          const W = sorted.reduce((a, b) => a + b.weight, 0);
          sorted.forEach((b, i) => {
            expect(Math.abs(at(counts, i) - (M * b.weight) / W)).toBeLessThan(1);
          });
          expect(counts.reduce((a, c) => a + c, 0)).toBe(M);
          // And the library's table is that table.
          expect(Array.from(buildMaglevTable(endpointsOf(sorted), M))).toEqual(
            Array.from(maglevModel(backends, M).table),
          );
        },
      ),
      {
        seed: 0x5eed0041,
        numRuns: 40,
        examples: [
          [
            65537,
            [{ id: 'heavy', weight: 10 }, ...Array.from({ length: 49 }, (_, i) => ({ id: `light-${i}`, weight: 1 }))],
          ],
        ],
      },
    );
  });

  it('maglev with more backends than slots still reaches every backend through exclude', () => {
    const backends = ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id, weight: 1 }));
    const lb = createBalancer<Backend>({ algorithm: 'maglev', tableSize: 3, backends });
    const owners = new Set(Array.from(maglevModel(backends, 3).table, (i) => at(['a', 'b', 'c', 'd', 'e'], i)));
    expect(owners.size).toBe(3);
    const slotless = ['a', 'b', 'c', 'd', 'e'].filter((id) => !owners.has(id));
    const picked = lb.pick({ key: 'k1', exclude: owners });
    expect(slotless).toContain(picked.id);
    expect(lb.pick({ key: 'k1', exclude: owners }).id).toBe(picked.id);
  });

  const NAMINGS: Record<string, (i: number) => string> = {
    'backend-i': (i) => `backend-${i}`,
    'ip:port': (i) => `10.0.${i >> 8}.${i & 255}:8080`,
    'host name': (i) => `web${i}.example.com`,
    'pod name': (i) => `api-7f9c${((i * 2654435761) >>> 0).toString(16)}-x${i}`,
  };
  for (const [naming, name] of Object.entries(NAMINGS)) {
    it(`ring-hash, default vnodes, n = 100 (${naming}): exact max/mean share <= 1.25`, () => {
      // Fixed ids, so the shares are constants (observed max/mean 1.12-1.20, min/mean 0.83-0.89).
      // For random ids, V = 400 gives a share CV of about 1/sqrt(400) = 0.05 (algorithms.md 4).
      const backends = Array.from({ length: 100 }, (_, i) => ({ id: name(i), weight: 1 }));
      const ring = ringModel(backends);
      expect(ring.points.length).toBe(100 * DEFAULT_VNODES);
      const shares = [...ringShares(ring).values()];
      expect(shares.length).toBe(100);
      expect(shares.reduce((a, s) => a + s, 0)).toBe(TWO_32);
      const mean = TWO_32 / 100;
      expect(Math.max(...shares) / mean).toBeLessThanOrEqual(1.25);
      expect(Math.min(...shares) / mean).toBeGreaterThanOrEqual(0.75);
      // Cross-check the model against the balancer at its defaults.
      const lb = createBalancer<Backend>({ algorithm: 'ring-hash', backends });
      expectMapping(lb, KEYS.slice(0, 3_000), (key) => at(ring.owners, ringStart(ring, murmur3(key, 0))));
    });
  }

  it('rendezvous, 1,000,000 fixed keys at n = 100: max/mean <= 1.06', () => {
    // Fixed ids and keys. For an ideal hash each count is Binomial(10^6, 0.01): sd 99.5, and
    // 1.06 x mean is +600 = 6.03 sd. P(one count >= 10600) ~ 1e-9 (normal tail with the skewness
    // correction); over 100 backends < 1e-7, so a false failure has probability < 1e-6. The lower
    // tail is lighter, so min/mean >= 0.94 has the same guarantee. Observed: 1.021 and 0.976.
    const backends = Array.from({ length: 100 }, (_, i) => ({ id: `backend-${i}`, weight: 1 }));
    const lb = createBalancer<Backend>({ algorithm: 'rendezvous', backends });
    const counts = new Map<string, number>();
    const K = 1_000_000;
    for (let i = 0; i < K; i++) {
      const id = lb.pick({ key: `/objects/${i}` }).id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const mean = K / 100;
    expect(counts.size).toBe(100);
    expect(Math.max(...counts.values()) / mean).toBeLessThanOrEqual(1.06);
    expect(Math.min(...counts.values()) / mean).toBeGreaterThanOrEqual(0.94);
  });

  /** Weighted rendezvous shares of K fixed keys, within p +- z sqrt(p (1 - p) / K). */
  function checkWeightedShares(backends: readonly Backend[], K: number, z: number): void {
    const lb = hashBalancer('rendezvous', backends);
    const counts = new Map<string, number>();
    for (let i = 0; i < K; i++) {
      const id = lb.pick({ key: urlKey(i) }).id;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const W = backends.reduce((a, b) => a + b.weight, 0);
    for (const b of backends) {
      const p = b.weight / W;
      const share = (counts.get(b.id) ?? 0) / K;
      expect(Math.abs(share - p), `${b.id}: share ${share} vs ${p}`).toBeLessThanOrEqual(
        z * Math.sqrt((p * (1 - p)) / K),
      );
    }
  }

  it('rendezvous weighted [1, 2, 3, 10], K = 200,000: shares within p +- 5.45 sqrt(p(1-p)/K)', () => {
    // z = 5.45: two-sided normal tail 5.0e-8 per backend; over 4 backends 2e-7 < 1e-6.
    checkWeightedShares(
      [1, 2, 3, 10].map((weight, i) => ({ id: `backend-${i}`, weight })),
      200_000,
      5.45,
    );
  });

  it('rendezvous weighted, random weights 1..100 and n <= 20, K = 200,000: shares within z = 6.2', () => {
    // z = 6.2 (algorithms.md 11.14, alpha = 1e-8 over 20 backends) because fast-check runs several
    // configurations: 5 runs x 20 backends x 5.6e-10 < 1e-7. Counts as small as K/2000 = 100 have a
    // heavier upper tail than the normal; the Cornish-Fisher correction moves z = 6.2 to about
    // 5.6, still < 1e-8 per backend, so the total stays < 1e-6. The key set is fixed.
    fc.assert(
      fc.property(backendsArb(2, 20, fc.integer({ min: 1, max: 100 })), (backends) => {
        checkWeightedShares(backends, 200_000, 6.2);
      }),
      { seed: 0x5eed0042, numRuns: 5 },
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('exclude: a retry goes to the key’s next choice', () => {
  for (const algorithm of HASH_ALGORITHMS) {
    it(`${algorithm}: the second choice is stable and is the next in the key's preference order`, () => {
      fc.assert(
        fc.property(
          backendsArb(2, 20, fc.integer({ min: 1, max: 4 }), twinIdArb),
          fc.array(fc.nat(), { minLength: 1, maxLength: 19 }),
          (backends, drop) => {
            const lb = hashBalancer(algorithm, backends);
            const prefer = preferenceModel(algorithm, backends);
            const excludeSome = new Set(drop.map((d) => at(backends, d % backends.length).id));
            if (excludeSome.size === backends.length) excludeSome.delete(at(backends, 0).id);
            const withoutSome = hashBalancer(
              algorithm,
              backends.filter((b) => !excludeSome.has(b.id)),
            );
            const keys = SAMPLE.slice(0, 300);
            const orders = keys.map(prefer);
            const firsts = mapping(lb, keys);
            expect(firsts).toEqual(orders.map((o) => at(o, 0)));
            const secondChoices = () => keys.map((key, i) => lb.pick({ key, exclude: new Set([at(firsts, i)]) }).id);
            const seconds = secondChoices();
            // Never the excluded one; the key's next choice; the same on every call.
            expect(seconds.filter((id, i) => id === firsts[i])).toEqual([]);
            expect(seconds).toEqual(orders.map((o) => at(o, 1)));
            expect(mapping(lb, keys)).toEqual(firsts);
            expect(secondChoices()).toEqual(seconds);
            // Any exclusion set (not all): the first non-excluded backend in the key's order.
            const chosen = keys.map((key) => lb.pick({ key, exclude: excludeSome }).id);
            expect(chosen).toEqual(orders.map((o) => o.find((id) => !excludeSome.has(id))));
            if (algorithm === 'rendezvous') {
              // Rendezvous: excluding equals removing.
              const pools = new Map<string, Balancer<Backend>>();
              const poolWithout = (id: string): Balancer<Backend> => {
                let pool = pools.get(id);
                if (pool === undefined) {
                  pool = hashBalancer(
                    algorithm,
                    backends.filter((b) => b.id !== id),
                  );
                  pools.set(id, pool);
                }
                return pool;
              };
              expect(keys.map((key, i) => poolWithout(at(firsts, i)).pick({ key }).id)).toEqual(seconds);
              expect(mapping(withoutSome, keys)).toEqual(chosen);
            }
            // Excluding everything: ERR_NO_BACKEND.
            const all = new Set(backends.map((b) => b.id));
            expectFairpickError(() => lb.pick({ key: 'k', exclude: all }), 'ERR_NO_BACKEND');
            expectFairpickError(() => lb.acquire({ key: 'k', exclude: all }), 'ERR_NO_BACKEND');
            expect(lb.stats().every((s) => s.inFlight === 0)).toBe(true);
          },
        ),
        { seed: 0x5eed0050 + HASH_ALGORITHMS.indexOf(algorithm), numRuns: 25 },
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------

type Op =
  | { readonly kind: 'acquire'; readonly key: number; readonly exclude: number }
  | { readonly kind: 'release'; readonly which: number }
  | { readonly kind: 'reweight'; readonly which: number; readonly weight: number }
  | { readonly kind: 'toggle'; readonly which: number };

/** A small skewed key set: three hot keys take most requests, so they overflow their backends. */
const LOAD_KEYS: readonly string[] = Array.from({ length: 40 }, (_, i) => `/hot/${i}/profile`);
const keyIndexArb = fc.oneof(
  { arbitrary: fc.constantFrom(0, 1, 2), weight: 6 },
  { arbitrary: fc.integer({ min: 0, max: LOAD_KEYS.length - 1 }), weight: 4 },
);
const plainAcquireArb: fc.Arbitrary<Op> = keyIndexArb.map((key) => ({ kind: 'acquire', key, exclude: 0 }));
const mixedOpArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: plainAcquireArb, weight: 10 },
  {
    arbitrary: fc
      .tuple(keyIndexArb, fc.integer({ min: 1, max: 255 }))
      .map(([key, exclude]): Op => ({ kind: 'acquire', key, exclude })),
    weight: 2,
  },
  { arbitrary: fc.nat().map((which): Op => ({ kind: 'release', which })), weight: 9 },
  {
    arbitrary: fc
      .tuple(fc.nat(), fc.integer({ min: 1, max: 3 }))
      .map(([which, weight]): Op => ({ kind: 'reweight', which, weight })),
    weight: 1,
  },
  { arbitrary: fc.nat().map((which): Op => ({ kind: 'toggle', which })), weight: 1 },
);

interface ModelBackend {
  weight: number;
  inFlight: number;
  generation: number;
}

/**
 * Runs `ops` against a balancer with `boundedLoad` (or none) and against an exact model: loads,
 * membership, and the key's preference order; `plain` is the same membership without the bound.
 */
function runBoundedLoadModel(
  algorithm: HashAlgorithm,
  c: number | undefined,
  initial: readonly Backend[],
  acquiresOnly: readonly Op[],
  mixed: readonly Op[],
): void {
  const settings = c === undefined ? {} : { boundedLoad: c };
  const lb = hashBalancer(algorithm, initial, settings);
  const plain = hashBalancer(algorithm, initial);
  const objects = new Map(initial.map((b) => [b.id, b]));
  const ids = byId(initial).map((b) => b.id);
  const live = new Map<string, ModelBackend>(
    initial.map((b) => [b.id, { weight: b.weight, inFlight: 0, generation: 0 }]),
  );
  const slots: { slot: Slot<Backend>; id: string; generation: number }[] = [];
  let generation = 0;
  let prefer = preferenceModel(algorithm, initial);
  let orders = LOAD_KEYS.map((k) => prefer(k));
  const rebuildModel = (): void => {
    const members = [...live].map(([id, m]) => ({ id, weight: m.weight }));
    prefer = preferenceModel(algorithm, members);
    orders = LOAD_KEYS.map((k) => prefer(k));
  };
  const totals = (): { m: number; W: number } => {
    let m = 0;
    let W = 0;
    for (const b of live.values()) {
      m += b.inFlight;
      W += b.weight;
    }
    return { m, W };
  };
  /** ceil(c x total x w / W), computed in the order the library computes it. */
  const cap = (total: number, w: number, W: number): number =>
    c === undefined ? Number.POSITIVE_INFINITY : Math.ceil((c * total * w) / W);

  let checkEveryBackend = true;
  const step = (op: Op): void => {
    switch (op.kind) {
      case 'acquire': {
        const key = LOAD_KEYS[op.key] as string;
        const order = orders[op.key] as string[];
        const exclude = new Set(ids.filter((id, i) => live.has(id) && ((op.exclude >>> i) & 1) === 1));
        if (exclude.size === live.size) exclude.delete(at(order, 0));
        const first = plain.pick({ key }).id;
        expect(first).toBe(at(order, 0));
        const { m, W } = totals();
        const room = (id: string): boolean => {
          const b = live.get(id) as ModelBackend;
          return b.inFlight < cap(m + 1, b.weight, W);
        };
        const admitted = order.filter((id) => !exclude.has(id));
        const expected = admitted.find(room) ?? at(admitted, 0);
        const slot = exclude.size === 0 ? lb.acquire({ key }) : lb.acquire({ key, exclude });
        const chosen = slot.backend.id;
        expect(chosen).toBe(expected);
        // Locality: a key whose first choice has room (and is not excluded) goes there.
        if (!exclude.has(first) && room(first)) expect(chosen).toBe(first);
        if (c === undefined && exclude.size === 0) expect(chosen).toBe(first);
        const target = live.get(chosen) as ModelBackend;
        const hadRoom = room(chosen);
        target.inFlight++;
        slots.push({ slot, id: chosen, generation: target.generation });
        // The cap: the chosen backend stays within ceil(c m w / W), m counting this request
        // (unless every admitted backend was full and the bound yielded, possible only with exclude).
        if (hadRoom) expect(target.inFlight).toBeLessThanOrEqual(cap(m + 1, target.weight, W));
        else {
          expect(exclude.size).toBeGreaterThan(0);
          checkEveryBackend = false;
        }
        if (checkEveryBackend) {
          for (const b of live.values()) expect(b.inFlight).toBeLessThanOrEqual(cap(m + 1, b.weight, W));
        }
        break;
      }
      case 'release': {
        checkEveryBackend = false;
        if (slots.length === 0) return;
        const [held] = slots.splice(op.which % slots.length, 1);
        if (held === undefined) return;
        expect(held.slot.release()).toBe(true);
        expect(held.slot.release()).toBe(false); // idempotent: counted out once
        const b = live.get(held.id);
        if (b !== undefined && b.generation === held.generation) b.inFlight--;
        break;
      }
      case 'reweight': {
        checkEveryBackend = false;
        const id = at([...live.keys()], op.which % live.size);
        lb.update(id, { weight: op.weight });
        plain.update(id, { weight: op.weight });
        (live.get(id) as ModelBackend).weight = op.weight;
        rebuildModel();
        break;
      }
      case 'toggle': {
        // Removes a backend (its requests in flight still release) or re-adds a removed one.
        checkEveryBackend = false;
        const id = at(ids, op.which % ids.length);
        const b = objects.get(id) as Backend;
        if (live.has(id)) {
          if (live.size === 1) return;
          lb.remove(id);
          plain.remove(id);
          live.delete(id);
        } else {
          lb.add(b);
          plain.add(b);
          live.set(id, { weight: b.weight, inFlight: 0, generation: ++generation });
        }
        rebuildModel();
        break;
      }
    }
    const stats = new Map(lb.stats().map((s) => [s.id, s.inFlight]));
    for (const [id, b] of live) expect(stats.get(id)).toBe(b.inFlight);
  };
  for (const op of acquiresOnly) step(op);
  for (const op of mixed) step(op);
}

describe('bounded loads, model-based (algorithms.md 8, 11.15)', () => {
  // The cap "every backend <= ceil(c m w / W) after every acquire" is checked for every backend
  // while no request has been released, and for the chosen backend always. After releases it
  // cannot hold for every backend: loads placed under an earlier, larger m stay (there is no
  // re-placement on departure). E.g. ring-hash, c = 1.25, backends a and b: 16 acquires leave
  // a = 8, b = 8; releasing b's 8 and acquiring once more gives a = 8, b = 1, m = 9, while
  // ceil(1.25 x 9 / 2) = 6. Every acquire still respects the cap for the backend it chooses.
  const backendsForLoad = fc.oneof(
    backendsArb(2, 8, fc.constant(1)),
    backendsArb(2, 8, fc.integer({ min: 1, max: 3 })),
  );
  for (const algorithm of HASH_ALGORITHMS) {
    for (const c of [1.25, 1.5, 2]) {
      it(`${algorithm}, boundedLoad ${c}: caps, locality and the walk to the next choice`, () => {
        fc.assert(
          fc.property(
            backendsForLoad,
            fc.array(plainAcquireArb, { maxLength: 60, size: 'max' }),
            fc.array(mixedOpArb, { maxLength: 200, size: 'max' }),
            (backends, acquiresOnly, mixed) => {
              runBoundedLoadModel(algorithm, c, backends, acquiresOnly, mixed);
            },
          ),
          { seed: 0x5eed0060 + HASH_ALGORITHMS.indexOf(algorithm) * 16 + c * 4, numRuns: 40 },
        );
      });
    }
    it(`${algorithm}: without boundedLoad, or with a bound that never binds, acquire is plain consistent hashing`, () => {
      fc.assert(
        fc.property(
          backendsForLoad,
          fc.constantFrom(undefined, 1e9),
          fc.array(plainAcquireArb, { maxLength: 30, size: 'max' }),
          fc.array(mixedOpArb, { maxLength: 100, size: 'max' }),
          (backends, c, acquiresOnly, mixed) => {
            runBoundedLoadModel(algorithm, c, backends, acquiresOnly, mixed);
            // And whatever the loads, pick() is the plain mapping.
            const lb = hashBalancer(algorithm, backends, c === undefined ? {} : { boundedLoad: c });
            const plain = hashBalancer(algorithm, backends);
            for (let i = 0; i < 50; i++) lb.acquire({ key: LOAD_KEYS[0] as string });
            expect(mapping(lb, SAMPLE.slice(0, 300))).toEqual(mapping(plain, SAMPLE.slice(0, 300)));
          },
        ),
        { seed: 0x5eed0070 + HASH_ALGORITHMS.indexOf(algorithm), numRuns: 25 },
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('keys', () => {
  for (const algorithm of HASH_ALGORITHMS) {
    it(`${algorithm}: a missing or invalid key throws ERR_INVALID_ARGUMENT naming ctx.key, and changes nothing`, () => {
      const lb = hashBalancer(algorithm, [
        { id: 'a', weight: 1 },
        { id: 'b', weight: 2 },
      ]);
      const attempts: (() => unknown)[] = [
        () => lb.pick(),
        () => lb.pick({}),
        () => lb.pick({ key: 5 as never }),
        () => lb.pick({ key: null as never }),
        () => lb.pick({ key: [1, 2] as never }),
        () => lb.pick({ clientIp: '10.0.0.1' }),
        () => lb.acquire(),
        () => lb.acquire({ key: 5 as never }),
      ];
      for (const attempt of attempts) {
        const error = expectFairpickError(attempt, 'ERR_INVALID_ARGUMENT');
        expect(error.message).toContain('ctx.key');
      }
      expect(lb.stats().map((s) => [s.inFlight, s.picks])).toEqual([
        [0, 0],
        [0, 0],
      ]);
      // A valid key after the failures works, and pick() without a key still fails afterwards.
      expect(['a', 'b']).toContain(lb.pick({ key: '' }).id);
      expectFairpickError(() => lb.pick(), 'ERR_INVALID_ARGUMENT');
    });

    it(`${algorithm}: a Uint8Array key equals the string with the same UTF-8 bytes`, () => {
      const backends = Array.from({ length: 12 }, (_, i) => ({ id: `backend-${i}`, weight: 1 + (i % 3) }));
      const lb = hashBalancer(algorithm, backends);
      const encoder = new TextEncoder();
      const text = fc.oneof(
        fc.string({ unit: 'grapheme', maxLength: 30, size: 'max' }),
        fc.string({ unit: 'binary', maxLength: 30, size: 'max' }),
        // Arbitrary UTF-16 code units, lone surrogates included (encoded as U+FFFD).
        fc
          .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 20, size: 'max' })
          .map((units) => String.fromCharCode(...units)),
      );
      fc.assert(
        fc.property(text, fc.nat({ max: 7 }), (key, offset) => {
          const bytes = encoder.encode(key);
          expect(murmur3Bytes(bytes, 0)).toBe(murmur3(key, 0));
          const expected = lb.pick({ key }).id;
          expect(lb.pick({ key: bytes }).id).toBe(expected);
          // A view into a larger buffer hashes only its own bytes.
          const buffer = new Uint8Array(offset + bytes.length + 5).fill(0xaa);
          buffer.set(bytes, offset);
          expect(lb.pick({ key: buffer.subarray(offset, offset + bytes.length) }).id).toBe(expected);
          expect(lb.acquire({ key: bytes }).backend.id).toBe(expected);
        }),
        { seed: 0x5eed0080 + HASH_ALGORITHMS.indexOf(algorithm), numRuns: 200 },
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('drained backends and backup tiers with hash pickers', () => {
  for (const algorithm of HASH_ALGORITHMS) {
    it(`${algorithm}: weight 0 is never picked (as if absent); backups only when no primary can be`, () => {
      fc.assert(
        fc.property(
          backendsArb(2, 14, fc.integer({ min: 0, max: 3 })),
          fc.array(fc.boolean(), { minLength: 14, maxLength: 14 }),
          (all, backupFlags) => {
            const tagged: Backend[] = all.map((b, i) => (backupFlags[i] === true ? { ...b, backup: true } : b));
            const primaries = tagged.filter((b) => b.backup !== true);
            const backups = tagged.filter((b) => b.backup === true);
            const activePrimaries = primaries.filter((b) => b.weight > 0);
            const activeBackups = backups.filter((b) => b.weight > 0).map((b) => ({ id: b.id, weight: b.weight }));
            const lb = hashBalancer(algorithm, tagged);
            const keys = SAMPLE.slice(0, 300);
            if (activePrimaries.length > 0) {
              // Primaries only, and exactly as a pool of the active primaries alone.
              expect(mapping(lb, keys)).toEqual(mapping(hashBalancer(algorithm, activePrimaries), keys));
              if (activeBackups.length > 0) {
                // Excluding every primary falls back to the backup tier's own hashing.
                const exclude = new Set(activePrimaries.map((b) => b.id));
                const backupOnly = hashBalancer(algorithm, activeBackups);
                expect(keys.map((key) => lb.pick({ key, exclude }).id)).toEqual(mapping(backupOnly, keys));
              }
              // Draining every primary by update() moves all keys to the backups.
              for (const b of activePrimaries) lb.update(b.id, { weight: 0 });
            }
            if (activeBackups.length > 0) {
              expect(mapping(lb, keys)).toEqual(mapping(hashBalancer(algorithm, activeBackups), keys));
            } else {
              expectFairpickError(() => lb.pick({ key: 'k' }), 'ERR_NO_BACKEND');
            }
            // Restoring one primary takes every key back from the backups.
            const revived = primaries[0];
            if (revived !== undefined) {
              lb.update(revived.id, { weight: 1 });
              expect(mapping(lb, keys).filter((id) => id !== revived.id)).toEqual([]);
            }
          },
        ),
        { seed: 0x5eed0090 + HASH_ALGORITHMS.indexOf(algorithm), numRuns: 30 },
      );
    });
  }
});
