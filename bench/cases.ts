// The measured work of bench/pick.bench.ts: backends, balancers, the batched loops and the
// allocation probe. Every loop folds what it picked into an accumulator that ends in `sink`, so
// the engine cannot drop the work as dead code.

import { PerformanceObserver, performance } from 'node:perf_hooks';
import {
  type Balancer,
  type BalancerOptions,
  createBalancer,
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
/** Backend counts measured. */
export const SIZES = [3, 10, 100, 1000] as const;
/** The pool size of the weighted cases and of the allocation probe. */
export const WEIGHTED_N = 10;

/** One algorithm configuration: each runs in a process of its own. */
export interface Algorithm {
  readonly label: string;
  readonly options:
    | { readonly algorithm: 'round-robin' | 'random' | 'least-connections' }
    | { readonly algorithm: 'p2c'; readonly load: P2CLoad };
  /** Whether a weighted case (weights 1..5 cycling) is measured at n = 10. */
  readonly weighted: boolean;
}

export const FLOOR_LABEL = 'floor arr[i++ % n]';

/** Where every loop's result ends up; printed at the end of the run. */
let sink = 0;

export function consume(value: number): void {
  sink += value;
}

export function sinkValue(): number {
  return sink;
}

export const ALGORITHMS: readonly Algorithm[] = [
  { label: 'round-robin', options: { algorithm: 'round-robin' }, weighted: true },
  { label: 'random', options: { algorithm: 'random' }, weighted: true },
  { label: 'least-connections', options: { algorithm: 'least-connections' }, weighted: false },
  { label: 'p2c in-flight', options: { algorithm: 'p2c', load: 'in-flight' }, weighted: true },
  { label: 'p2c peak-ewma', options: { algorithm: 'p2c', load: 'peak-ewma' }, weighted: true },
];

export type Kind = 'pick' | 'acquire+release' | 'floor';

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
 * Every case of one algorithm, ordered by n, each n's floor first: the floor is measured in the
 * same process and minutes as the picks it is compared with.
 */
export function casesFor(algorithm: Algorithm): Case[] {
  const out: Case[] = [];
  for (const n of SIZES) {
    out.push({
      name: caseName(FLOOR_LABEL, n, false, 'floor'),
      label: FLOOR_LABEL,
      n,
      weighted: false,
      kind: 'floor',
      build: () => new FloorRunner(n),
    });
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
            kind === 'pick' ? new PickRunner(algorithm, n, weighted) : new AcquireRunner(algorithm, n, weighted),
        });
      }
    }
  }
  return out;
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
