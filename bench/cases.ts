// The measured work of bench/pick.bench.ts: backends, keys, balancers, the batched loops, the
// allocation probe and the rebuild timing. Every loop folds what it picked into an accumulator
// that ends in `sink`, so the engine cannot drop the work as dead code.

import { PerformanceObserver, performance } from 'node:perf_hooks';
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
  murmur3,
  type P2CLoad,
  type ReleaseResult,
  type Slot,
} from '../src/index.js';

export interface Backend {
  readonly id: string;
  readonly url: string;
  readonly weight: number;
}

/** Operations per tinybench iteration: the tinybench call and timer cost is spread over them. */
export const BATCH = 1000;
/** Backend counts measured for round-robin, random, least-connections and p2c. */
export const SIZES = [3, 10, 100, 1000] as const;
/** Backend counts measured for the hash pickers. */
export const HASH_SIZES = [10, 100, 1000] as const;
/** The pool size of the weighted cases and of the allocation probe. */
export const WEIGHTED_N = 10;
/** Pre-generated keys (or client addresses) per hash task, cycled: a power of two. */
export const KEY_COUNT = 4096;

/**
 * What a pick is given: nothing, a URL path as `ctx.key`, or a client address as `ctx.clientIp`.
 * Each kind of key has its own pre-generated set.
 */
export type KeyKind = 'none' | 'url' | 'ipv4' | 'ipv6';

/** One algorithm configuration: each runs in a process of its own. */
export interface Algorithm {
  readonly label: string;
  readonly options:
    | { readonly algorithm: 'round-robin' | 'random' | 'least-connections' }
    | { readonly algorithm: 'p2c'; readonly load: P2CLoad }
    | { readonly algorithm: 'ring-hash' | 'maglev' | 'rendezvous' | 'ip-hash' };
  /** Whether a weighted case (weights 1..5 cycling) is measured at n = 10. */
  readonly weighted: boolean;
  /** The key each pick carries; every hash picker gets a second floor, hashing those keys alone. */
  readonly keys: KeyKind;
  /** The pool sizes measured. */
  readonly sizes: readonly number[];
  /** Whether the cost of a rebuild (`add` + `remove` of one backend) is measured. */
  readonly rebuild: boolean;
}

export const FLOOR_LABEL = 'floor arr[i++ % n]';
/** The second floor of the hash pickers: the library's murmur3 over the same pre-generated keys. */
export const HASH_FLOOR_LABEL = 'floor murmur3(key)';

/** Where every loop's result ends up; printed at the end of the run. */
let sink = 0;

export function consume(value: number): void {
  sink += value;
}

export function sinkValue(): number {
  return sink;
}

const plain = { keys: 'none', sizes: SIZES, rebuild: false } as const;
const hashed = { weighted: false, keys: 'url', sizes: HASH_SIZES, rebuild: true } as const;

export const ALGORITHMS: readonly Algorithm[] = [
  { label: 'round-robin', options: { algorithm: 'round-robin' }, weighted: true, ...plain },
  { label: 'random', options: { algorithm: 'random' }, weighted: true, ...plain },
  { label: 'least-connections', options: { algorithm: 'least-connections' }, weighted: false, ...plain },
  { label: 'p2c in-flight', options: { algorithm: 'p2c', load: 'in-flight' }, weighted: true, ...plain },
  { label: 'p2c peak-ewma', options: { algorithm: 'p2c', load: 'peak-ewma' }, weighted: true, ...plain },
  { label: 'ring-hash', options: { algorithm: 'ring-hash' }, ...hashed },
  { label: 'maglev', options: { algorithm: 'maglev' }, ...hashed },
  { label: 'rendezvous', options: { algorithm: 'rendezvous' }, ...hashed },
  // ip-hash with its default method (maglev, 65537 slots) and prefixes (/32, /128). IPv6 is a
  // process of its own; its rebuild is the IPv4 one (the same table), so it is measured once.
  { label: 'ip-hash IPv4', options: { algorithm: 'ip-hash' }, ...hashed, keys: 'ipv4' },
  { label: 'ip-hash IPv6', options: { algorithm: 'ip-hash' }, ...hashed, keys: 'ipv6', rebuild: false },
];

export type Kind = 'pick' | 'acquire+release' | 'floor' | 'hash floor';

export function isFloor(kind: Kind): boolean {
  return kind === 'floor' || kind === 'hash floor';
}

// ---- keys ---------------------------------------------------------------------------------

/** mulberry32: a small seeded generator, so every run (and every process) uses the same keys. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A flat (sequential) copy of a string. Concatenation builds ropes (ConsStrings) that V8 reads
 * through an indirection; a key from an HTTP parser is flat, so the generated keys are too.
 */
function flat(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}

const PATH_WORDS = [
  'api',
  'v1',
  'v2',
  'users',
  'orders',
  'products',
  'items',
  'cart',
  'checkout',
  'search',
  'catalog',
  'images',
  'static',
  'assets',
  'accounts',
  'profile',
  'settings',
  'reviews',
  'sessions',
  'media',
  'docs',
  'blog',
  'posts',
  'comments',
  'feed',
  'inventory',
  'payments',
  'invoices',
  'thumbnails',
  'categories',
  'shipping',
  'notifications',
];
const PATH_ROOTS = ['/api/v1', '/api/v2', '/static', '/media', '/shop', '/blog', '/account', '/cdn'];

/**
 * `count` distinct URL paths of 20 to 60 characters, as a service sees them: a root, words,
 * numeric and hex ids, file names, sometimes a query string. Deterministic for a seed.
 */
export function urlPaths(count: number, seed = 0x5eed): string[] {
  const rand = seededRandom(seed);
  const int = (k: number) => Math.floor(rand() * k);
  const word = () => PATH_WORDS[int(PATH_WORDS.length)] as string;
  const segment = (): string => {
    const r = rand();
    if (r < 0.5) return word();
    if (r < 0.75) return String(1 + int(r < 0.6 ? 9999 : 99_999_999));
    if (r < 0.85) return (int(0x100000000) >>> 0).toString(16).padStart(8, '0');
    if (r < 0.95) return `${word()}-${int(1000)}`;
    return `${word()}_${int(100)}.${['jpg', 'png', 'webp', 'css', 'js'][int(5)]}`;
  };
  const seen = new Set<string>();
  const out: string[] = [];
  while (out.length < count) {
    const target = 20 + int(41);
    let path = PATH_ROOTS[int(PATH_ROOTS.length)] as string;
    while (path.length < target) path += `/${segment()}`;
    if (rand() < 0.2) path += rand() < 0.5 ? `?page=${1 + int(50)}` : `?q=${word()}`;
    if (path.length < 20 || path.length > 60 || seen.has(path)) continue;
    seen.add(path);
    out.push(flat(path));
  }
  return out;
}

const IPV6_PREFIXES = ['2001:db8', '2a00:1450', '2606:4700', '2a02:6b8', '2400:cb00', '2804:14c', '2600:1f18'];

/**
 * `count` distinct client addresses, deterministic for a seed. IPv4: dotted quads with a first
 * octet from 1 to 223. IPv6: global unicast, 60% written out in full (8 groups), 40% with `::`.
 */
export function clientAddresses(count: number, family: 4 | 6, seed = 0xad0d): string[] {
  const rand = seededRandom(seed + family);
  const int = (k: number) => Math.floor(rand() * k);
  const group = () => int(65536).toString(16);
  const seen = new Set<string>();
  const out: string[] = [];
  while (out.length < count) {
    let a: string;
    if (family === 4) {
      a = `${1 + int(223)}.${int(256)}.${int(256)}.${int(256)}`;
    } else {
      const prefix = IPV6_PREFIXES[int(IPV6_PREFIXES.length)] as string;
      a =
        rand() < 0.6
          ? `${prefix}:${Array.from({ length: 6 }, group).join(':')}`
          : `${prefix}:${group()}:${group()}::${Array.from({ length: 1 + int(2) }, group).join(':')}`;
    }
    if (seen.has(a)) continue;
    seen.add(a);
    out.push(flat(a));
  }
  return out;
}

const keyCache = new Map<KeyKind, string[]>();

/** The pre-generated keys of a kind (the same in every process). */
export function keysOf(kind: KeyKind): string[] {
  let keys = keyCache.get(kind);
  if (keys === undefined) {
    keys =
      kind === 'url' ? urlPaths(KEY_COUNT) : kind === 'none' ? [] : clientAddresses(KEY_COUNT, kind === 'ipv4' ? 4 : 6);
    keyCache.set(kind, keys);
  }
  return keys;
}

/** A task's state and loop: `run(count)` performs `count` operations and returns their accumulated result. */
export interface Runner {
  run(count: number): number;
}

/** One benchmark task; `build` creates its balancer and state (only for the tasks selected). */
export interface Case {
  readonly name: string;
  readonly label: string;
  readonly n: number;
  readonly weighted: boolean;
  readonly kind: Kind;
  readonly build: () => Runner;
}

export function caseName(label: string, n: number, weighted: boolean, kind: Kind): string {
  if (kind === 'floor') return `${label} n=${n}`;
  return `${label}${weighted ? ' weighted' : ''} n=${n} ${kind}`;
}

/** Realistic backends: ids and URLs as a service registry would list them. */
export function makeBackends(n: number, weighted: boolean): Backend[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `web${i}`,
    url: `http://10.0.${i >> 8}.${i & 255}:8080`,
    weight: weighted ? (i % 5) + 1 : 1,
  }));
}

/** Latencies reported on release, cycled so peak-EWMA estimates keep moving. */
const RESULTS: readonly ReleaseResult[] = [4, 12, 7, 30, 5, 9, 18, 6].map((latencyMs) => ({ ok: true, latencyMs }));

// The loops are methods reading their state from `this`, and the bench calls them through a
// closure shared by every task. A closure that captured its balancer directly would, when it is
// the only closure of its literal (a filtered run), be compiled with that balancer as a constant
// (V8 specialises such functions to their context) and fold away loads a real caller pays for;
// the floor's `% n` would become a multiply by a constant. This way every run measures the same code.

/** The floor: read the next element of an array, as a hand-written round robin would. */
class FloorRunner implements Runner {
  private readonly arr: Backend[];
  private i = 0;

  constructor(private readonly n: number) {
    this.arr = makeBackends(n, false);
  }

  run(count: number): number {
    const arr = this.arr;
    const n = this.n;
    let i = this.i;
    let acc = 0;
    for (let k = 0; k < count; k++) acc += (arr[i++ % n] as Backend).weight;
    this.i = i % n;
    return acc;
  }
}

function balancer(algorithm: Algorithm, n: number, weighted: boolean): Balancer<Backend> {
  return createBalancer<Backend>({
    ...algorithm.options,
    backends: makeBackends(n, weighted),
  } as BalancerOptions<Backend>);
}

/**
 * `pick()` in a loop, nothing in flight. Every backend first serves a few requests with latencies,
 * as in a running service, so peak-EWMA compares real estimates (not the all-zero start).
 */
class PickRunner implements Runner {
  private readonly lb: Balancer<Backend>;

  constructor(algorithm: Algorithm, n: number, weighted: boolean) {
    this.lb = balancer(algorithm, n, weighted);
    for (let r = 0; r < 4 * n; r++) this.lb.acquire().release(RESULTS[r & 7] as ReleaseResult);
  }

  run(count: number): number {
    const lb = this.lb;
    let acc = 0;
    for (let k = 0; k < count; k++) acc += lb.pick().weight;
    return acc;
  }
}

/**
 * `acquire()` + `release()` with requests kept in flight: a ring of max(1, n/2) outstanding
 * slots. Each operation releases the oldest slot (with a result: ok and a latency) and acquires
 * a new one into its place, so in-flight counts, the least-connections heap and the p2c loads
 * keep changing. Every algorithm runs the same loop.
 */
class AcquireRunner implements Runner {
  private readonly lb: Balancer<Backend>;
  private readonly ring: Slot<Backend>[] = [];
  private j = 0;
  private q = 0;

  constructor(algorithm: Algorithm, n: number, weighted: boolean) {
    this.lb = balancer(algorithm, n, weighted);
    const size = Math.max(1, n >> 1);
    for (let r = 0; r < size; r++) this.ring.push(this.lb.acquire());
  }

  run(count: number): number {
    const lb = this.lb;
    const ring = this.ring;
    const size = ring.length;
    let j = this.j;
    let q = this.q;
    let acc = 0;
    for (let k = 0; k < count; k++) {
      (ring[j] as Slot<Backend>).release(RESULTS[q] as ReleaseResult);
      const slot = lb.acquire();
      ring[j] = slot;
      acc += slot.backend.weight;
      j = j + 1 === size ? 0 : j + 1;
      q = (q + 1) & 7;
    }
    this.j = j;
    this.q = q;
    return acc;
  }
}

/**
 * The context a keyed pick is given: one object, its key (or address) replaced before each pick.
 * The field the algorithm does not read stays ''.
 */
interface KeyedContext {
  key: string;
  clientIp: string;
}

/**
 * The hash pickers' second floor: the library's `murmur3(key, 0)` over the same pre-generated
 * keys, cycled the same way, alone. (For ip-hash the keys are the address strings: the picker
 * parses them to bytes and hashes those, so this floor is only indicative there.)
 */
class HashFloorRunner implements Runner {
  private readonly keys: string[];
  private j = 0;

  constructor(kind: KeyKind) {
    this.keys = keysOf(kind);
  }

  run(count: number): number {
    const keys = this.keys;
    let j = this.j;
    let acc = 0;
    for (let k = 0; k < count; k++) {
      acc += murmur3(keys[j] as string, 0);
      j = (j + 1) & (KEY_COUNT - 1);
    }
    this.j = j;
    return acc;
  }
}

/**
 * `pick({ key })` (or `pick({ clientIp })`) in a loop, nothing in flight, cycling through the
 * pre-generated keys. One context object is reused, its field replaced before each pick, so the
 * loop itself allocates nothing and the allocation probe sees only what `pick` allocates.
 */
class KeyedPickRunner implements Runner {
  private readonly lb: Balancer<Backend>;
  private readonly keys: string[];
  private readonly ip: boolean;
  private readonly ctx: KeyedContext = { key: '', clientIp: '' };
  private j = 0;

  constructor(algorithm: Algorithm, n: number) {
    this.lb = balancer(algorithm, n, false);
    this.keys = keysOf(algorithm.keys);
    this.ip = algorithm.keys !== 'url';
    for (let r = 0; r < 4 * n; r++) {
      this.next();
      this.lb.acquire(this.ctx).release(RESULTS[r & 7] as ReleaseResult);
    }
  }

  private next(): void {
    const key = this.keys[this.j] as string;
    if (this.ip) this.ctx.clientIp = key;
    else this.ctx.key = key;
    this.j = (this.j + 1) & (KEY_COUNT - 1);
  }

  run(count: number): number {
    const lb = this.lb;
    const keys = this.keys;
    const ctx = this.ctx;
    const ip = this.ip;
    let j = this.j;
    let acc = 0;
    for (let k = 0; k < count; k++) {
      const key = keys[j] as string;
      if (ip) ctx.clientIp = key;
      else ctx.key = key;
      j = (j + 1) & (KEY_COUNT - 1);
      acc += lb.pick(ctx).weight;
    }
    this.j = j;
    return acc;
  }
}

/** {@link AcquireRunner} with a key: each acquire carries the next pre-generated key. */
class KeyedAcquireRunner implements Runner {
  private readonly lb: Balancer<Backend>;
  private readonly keys: string[];
  private readonly ip: boolean;
  private readonly ctx: KeyedContext = { key: '', clientIp: '' };
  private readonly ring: Slot<Backend>[] = [];
  private j = 0;
  private q = 0;
  private kj = 0;

  constructor(algorithm: Algorithm, n: number) {
    this.lb = balancer(algorithm, n, false);
    this.keys = keysOf(algorithm.keys);
    this.ip = algorithm.keys !== 'url';
    const size = Math.max(1, n >> 1);
    for (let r = 0; r < size; r++) {
      const key = this.keys[this.kj++] as string;
      if (this.ip) this.ctx.clientIp = key;
      else this.ctx.key = key;
      this.ring.push(this.lb.acquire(this.ctx));
    }
  }

  run(count: number): number {
    const lb = this.lb;
    const ring = this.ring;
    const size = ring.length;
    const keys = this.keys;
    const ctx = this.ctx;
    const ip = this.ip;
    let j = this.j;
    let q = this.q;
    let kj = this.kj;
    let acc = 0;
    for (let k = 0; k < count; k++) {
      (ring[j] as Slot<Backend>).release(RESULTS[q] as ReleaseResult);
      const key = keys[kj] as string;
      if (ip) ctx.clientIp = key;
      else ctx.key = key;
      kj = (kj + 1) & (KEY_COUNT - 1);
      const slot = lb.acquire(ctx);
      ring[j] = slot;
      acc += slot.backend.weight;
      j = j + 1 === size ? 0 : j + 1;
      q = (q + 1) & 7;
    }
    this.j = j;
    this.q = q;
    this.kj = kj;
    return acc;
  }
}

/**
 * Every case of one algorithm, ordered by n, each n's floors first: the floors are measured in the
 * same process and minutes as the picks they are compared with.
 */
export function casesFor(algorithm: Algorithm): Case[] {
  const out: Case[] = [];
  const keyed = algorithm.keys !== 'none';
  for (const n of algorithm.sizes) {
    out.push({
      name: caseName(FLOOR_LABEL, n, false, 'floor'),
      label: FLOOR_LABEL,
      n,
      weighted: false,
      kind: 'floor',
      build: () => new FloorRunner(n),
    });
    if (keyed) {
      out.push({
        name: caseName(HASH_FLOOR_LABEL, n, false, 'hash floor'),
        label: HASH_FLOOR_LABEL,
        n,
        weighted: false,
        kind: 'hash floor',
        build: () => new HashFloorRunner(algorithm.keys),
      });
    }
    const variants: boolean[] = algorithm.weighted && n === WEIGHTED_N ? [false, true] : [false];
    for (const kind of ['pick', 'acquire+release'] as const) {
      for (const weighted of variants) {
        out.push({
          name: caseName(algorithm.label, n, weighted, kind),
          label: algorithm.label,
          n,
          weighted,
          kind,
          build: () =>
            keyed
              ? kind === 'pick'
                ? new KeyedPickRunner(algorithm, n)
                : new KeyedAcquireRunner(algorithm, n)
              : kind === 'pick'
                ? new PickRunner(algorithm, n, weighted)
                : new AcquireRunner(algorithm, n, weighted),
        });
      }
    }
  }
  return out;
}

// ---- rebuild cost -----------------------------------------------------------------------

/** Rebuild timing: untimed warm-up pairs, then at least MIN and at most MAX pairs, or until BUDGET. */
export const REBUILD_WARMUP = 3;
export const REBUILD_MIN_REPS = 15;
export const REBUILD_MAX_REPS = 101;
export const REBUILD_BUDGET_MS = 300;

export interface RebuildResult {
  readonly label: string;
  readonly n: number;
  /** Timed add + remove pairs. */
  readonly reps: number;
  /** Medians over the pairs, in milliseconds: `add`, `remove`, and their sum per pair. */
  readonly addMs: number;
  readonly removeMs: number;
  readonly pairMs: number;
  /** The fastest and slowest pair. */
  readonly pairMinMs: number;
  readonly pairMaxMs: number;
}

function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export function rebuildCaseName(label: string, n: number): string {
  return `${label} n=${n} add+remove`;
}

/**
 * The cost of a membership change: `lb.add()` of one new backend and then `lb.remove()` of it, on
 * a pool of n. Each call rebuilds the picker (ring, table or score array) over the new pool.
 */
export function rebuildCost(algorithm: Algorithm, n: number): RebuildResult {
  const lb = balancer(algorithm, n, false);
  const extra: Backend = { id: `web${n}`, url: `http://10.0.${n >> 8}.${n & 255}:8080`, weight: 1 };
  const add: number[] = [];
  const remove: number[] = [];
  const pair: number[] = [];
  const once = (record: boolean) => {
    const t0 = performance.now();
    lb.add(extra);
    const t1 = performance.now();
    lb.remove(extra.id);
    const t2 = performance.now();
    sink += lb.backends.length;
    if (!record) return;
    add.push(t1 - t0);
    remove.push(t2 - t1);
    pair.push(t2 - t0);
  };
  for (let w = 0; w < REBUILD_WARMUP; w++) once(false);
  const started = performance.now();
  while (
    pair.length < REBUILD_MAX_REPS &&
    (pair.length < REBUILD_MIN_REPS || performance.now() - started < REBUILD_BUDGET_MS)
  ) {
    once(true);
  }
  return {
    label: algorithm.label,
    n,
    reps: pair.length,
    addMs: medianOf(add),
    removeMs: medianOf(remove),
    pairMs: medianOf(pair),
    pairMinMs: Math.min(...pair),
    pairMaxMs: Math.max(...pair),
  };
}

export interface AllocResult {
  readonly name: string;
  /** Bytes of heap per operation, over the chunks no GC ran in. */
  readonly bytesPerOp: number;
  readonly ops: number;
  /** Operations in chunks that a GC overlapped and that were left out. */
  readonly skippedOps: number;
}

/**
 * Heap bytes allocated per operation in steady state. Node 20's V8 has no allocated-bytes
 * counter, so this reads `heapUsed` around chunks of 10,000 operations after a full `gc()`:
 * with no GC inside a chunk the growth is exactly what the chunk allocated. Chunks that a GC
 * overlapped (seen by a `gc` PerformanceObserver) are left out; the cost of reading
 * `memoryUsage()` itself is measured on empty chunks and subtracted.
 */
export async function allocPerOp(
  cases: readonly { readonly name: string; readonly runner: Runner }[],
  ops = 1_000_000,
  chunk = 10_000,
): Promise<AllocResult[]> {
  const gc = globalThis.gc;
  if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench does)');
  const gcWindows: [number, number][] = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcWindows.push([e.startTime, e.startTime + e.duration]);
  });
  observer.observe({ entryTypes: ['gc'] });

  const measure = (runner: Runner, count: number, chunks: number) => {
    const out: { start: number; end: number; bytes: number }[] = [];
    for (let c = 0; c < chunks; c++) {
      const start = performance.now();
      const before = process.memoryUsage().heapUsed;
      sink += runner.run(count);
      const after = process.memoryUsage().heapUsed;
      out.push({ start, end: performance.now(), bytes: after - before });
    }
    return out;
  };

  const raw: { name: string; chunks: ReturnType<typeof measure>; baseline: ReturnType<typeof measure> }[] = [];
  for (const c of cases) {
    c.runner.run(chunk); // already warm from the timed run; one more chunk to settle
    gc();
    const baseline = measure(c.runner, 0, 20);
    gc();
    raw.push({ name: c.name, chunks: measure(c.runner, chunk, Math.ceil(ops / chunk)), baseline });
  }
  // GC entries reach the observer asynchronously.
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();

  const overlapsGc = (w: { start: number; end: number }) => gcWindows.some(([s, e]) => s <= w.end && e >= w.start);
  return raw.map(({ name, chunks, baseline }) => {
    const clean = baseline.filter((w) => !overlapsGc(w) && w.bytes >= 0).map((w) => w.bytes);
    clean.sort((a, b) => a - b);
    const base = clean[clean.length >> 1] ?? 0;
    let bytes = 0;
    let measured = 0;
    let skipped = 0;
    for (const w of chunks) {
      if (overlapsGc(w) || w.bytes < 0) {
        skipped += chunk;
        continue;
      }
      bytes += w.bytes - base;
      measured += chunk;
    }
    return { name, bytesPerOp: measured > 0 ? bytes / measured : Number.NaN, ops: measured, skippedOps: skipped };
  });
}
