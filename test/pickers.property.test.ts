/**
 * Property tests of the four built-in pickers, against the guarantees in
 * reference/algorithms.md sections 1-3 and 11.
 *
 * Reproducibility: every `fc.assert` runs with a pinned fast-check `seed`, and every balancer
 * gets an injected PRNG (splitmix32, below) seeded from a value fast-check generates, so each
 * run of this file performs exactly the same picks. Time is injected through `now`.
 *
 * Deterministic properties (zero tolerance) hold for any random source. Statistical properties
 * say "statistical" in their name and state their bound where they are asserted:
 * - share checks use Bernstein's inequality (rigorous for binomial counts, no normal
 *   approximation) at delta = 1e-6 / (runs x backends), so with an ideal random source the
 *   probability that ANY check of the property fails is below 1e-6 (Bonferroni union);
 * - the p2c balls-into-bins bounds are the ones of algorithms.md 11.6 (max <= 5 for n = m =
 *   10^4: fluid-limit P(max >= 5) ~ 1.3e-8 even with sampling with replacement; the heavy case
 *   max - m/n <= 6 against <= 3 observed), run on pinned seeds;
 * - the peak-ewma ordering test has a margin of more than 16 standard deviations.
 * The pinned seeds make every run identical; the bounds say how safe it is to change a seed.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Balancer, type CommonOptions, createBalancer, isFairpickError, type Slot } from '../src/index.js';
import { at, splitmix32 } from './support/util.js';

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * Half-width t such that P(|X - trials*p| >= t) <= delta for X ~ Binomial(trials, p), from
 * Bernstein's inequality: P(|X - EX| >= t) <= 2 exp(-t^2 / (2 (v + t/3))), v = trials p (1-p).
 * Rigorous for every p (no normal approximation).
 */
function bernstein(trials: number, p: number, delta: number): number {
  const l = Math.log(2 / delta);
  const v = trials * p * (1 - p);
  return l / 3 + Math.sqrt((l * l) / 9 + 2 * v * l);
}

/** A backend that carries its index, so picks count without a lookup. */
interface Backend {
  readonly id: string;
  readonly weight: number;
  readonly idx: number;
  readonly backup?: boolean;
  readonly maxInFlight?: number;
}

function backendsOf(weights: readonly number[]): Backend[] {
  return weights.map((weight, idx) => ({ id: `b${idx}`, weight, idx }));
}

/** Asserts that `fn` throws a FairpickError with code ERR_NO_BACKEND. */
function expectNoBackend(fn: () => unknown): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(isFairpickError(error, 'ERR_NO_BACKEND'), String(error)).toBe(true);
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** Acquires a slot on one given backend by excluding every other one. */
function acquireOn<B extends { readonly id: string }>(lb: Balancer<B>, id: string): Slot<B> {
  const exclude = new Set(lb.backends.map((b) => b.id).filter((x) => x !== id));
  const slot = lb.acquire({ exclude });
  if (slot.backend.id !== id) throw new Error(`acquireOn(${id}) got ${slot.backend.id}`);
  return slot;
}

function rrSequence(weights: readonly number[], count: number, random: () => number = () => 0): number[] {
  const lb = createBalancer<Backend>({ algorithm: 'round-robin', random, backends: backendsOf(weights) });
  return Array.from({ length: count }, () => lb.pick().idx);
}

/** The first window of `length` picks (at any offset) whose counts differ from `expected`, or null. */
function windowViolation(seq: readonly number[], expected: readonly number[], length: number): string | null {
  const counts = new Array<number>(expected.length).fill(0);
  for (let t = 0; t < length; t++) counts[at(seq, t)] = at(counts, at(seq, t)) + 1;
  for (let start = 0; ; start++) {
    for (let i = 0; i < expected.length; i++) {
      if (counts[i] !== expected[i]) {
        return `window at ${start}: backend ${i} appears ${counts[i]} times, expected ${expected[i]}`;
      }
    }
    if (start + length >= seq.length) return null;
    const out = at(seq, start);
    const inn = at(seq, start + length);
    counts[out] = at(counts, out) - 1;
    counts[inn] = at(counts, inn) + 1;
  }
}

/** Positive integer weights, n in 1..30, w in 1..100 (so W <= 3000 <= 10^4). */
const integerWeights = fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 1, maxLength: 30, size: 'max' });

// ---------------------------------------------------------------------------------------------
describe('round-robin (smooth weighted, NGINX)', () => {
  it('weights 5,1,1 give exactly a a b a c a a, repeated', () => {
    const seq = rrSequence([5, 1, 1], 21).map((i) => 'abc'[i]);
    expect(seq.join(' ')).toBe(Array(3).fill('a a b a c a a').join(' '));
  });

  it('equal weights give 0..n-1 repeated (deterministic)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 100 }), (n, w) => {
        const seq = rrSequence(Array(n).fill(w), 3 * n);
        expect(seq).toEqual(Array.from({ length: 3 * n }, (_, t) => t % n));
      }),
      { seed: 0x5a11, numRuns: 100 },
    );
  });

  it('every window of W picks holds each backend exactly w times; pick t equals pick t+W; upper quota (deterministic)', () => {
    fc.assert(
      fc.property(integerWeights, (weights) => {
        const n = weights.length;
        const W = sum(weights);
        const seq = rrSequence(weights, 3 * W);
        expect(windowViolation(seq, weights, W)).toBeNull();
        for (let t = 0; t + W < seq.length; t++) {
          if (seq[t] !== seq[t + W]) expect.fail(`pick ${t} (${seq[t]}) differs from pick ${t + W} (${seq[t + W]})`);
        }
        // Upper quota count_i(t) <= ceil(t*w_i/W), and the lag bound t*w_i/W - count_i(t) <= n-1,
        // for every prefix t (integer arithmetic: count*W <= t*w + W - 1).
        const counts = new Array<number>(n).fill(0);
        for (let t = 1; t <= seq.length; t++) {
          const j = at(seq, t - 1);
          counts[j] = at(counts, j) + 1;
          for (let i = 0; i < n; i++) {
            const c = at(counts, i);
            const tw = t * at(weights, i);
            if (c * W > tw + W - 1) expect.fail(`prefix ${t}: backend ${i} has ${c} > ceil(${tw}/${W})`);
            if (tw - c * W > (n - 1) * W) expect.fail(`prefix ${t}: backend ${i} lags by more than n-1`);
          }
        }
      }),
      { seed: 0x5a12, numRuns: 100 },
    );
  });

  it('from any random start offset every window still holds exact counts, and the sequence is a rotation (deterministic)', () => {
    fc.assert(
      fc.property(integerWeights, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (weights, r) => {
        const W = sum(weights);
        const base = rrSequence(weights, 3 * W);
        const seq = rrSequence(weights, 2 * W, () => r);
        expect(windowViolation(seq, weights, W)).toBeNull();
        // seq[t] = base[t + k] for one shift k in [0, W).
        let shift = -1;
        for (let k = 0; k < W && shift < 0; k++) {
          let same = true;
          for (let t = 0; t < seq.length && same; t++) same = seq[t] === base[t + k];
          if (same) shift = k;
        }
        expect(shift).toBeGreaterThanOrEqual(0);
      }),
      { seed: 0x5a13, numRuns: 60 },
    );
  });

  it('weight-0 backends are never picked, on the table path and the live path (deterministic)', () => {
    const weight = fc.oneof(
      { weight: 1, arbitrary: fc.constant(0) },
      { weight: 2, arbitrary: fc.integer({ min: 1, max: 50 }) },
      { weight: 1, arbitrary: fc.double({ min: 0.01, max: 50, noNaN: true }) },
    );
    fc.assert(
      fc.property(
        fc.array(weight, { minLength: 1, maxLength: 20, size: 'max' }).filter((ws) => ws.some((w) => w > 0)),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (weights, r) => {
          const seq = rrSequence(weights, 500, () => r);
          const zero = seq.findIndex((i) => at(weights, i) === 0);
          if (zero >= 0) expect.fail(`pick ${zero} chose b${seq[zero]}, whose weight is 0`);
          // With integer weights (table path, period <= W) and W <= 500, 500 picks cover a full
          // cycle from any offset, so every positive-weight backend is picked.
          if (weights.every(Number.isInteger) && sum(weights) <= 500) {
            expect(new Set(seq).size).toBe(weights.filter((w) => w > 0).length);
          }
        },
      ),
      { seed: 0x5a14, numRuns: 100 },
    );
  });

  it('non-integer weights 1.5, 2.5 run the live path: b a b a b b a b repeated (as weights 3, 5)', () => {
    const seq = rrSequence([1.5, 2.5], 24).map((i) => 'ab'[i]);
    expect(seq.join(' ')).toBe(Array(3).fill('b a b a b b a b').join(' '));
    expect(rrSequence([3, 5], 24).map((i) => 'ab'[i])).toEqual(seq);
  });

  it('the live path (half-integer weights) picks exactly the table-path sequence of the doubled weights (deterministic)', () => {
    // Multiples of 0.5 are exact in binary floating point, so SWRR over w/2 makes the same
    // comparisons as SWRR over w: the live path must reproduce the table path from offset 0.
    fc.assert(
      fc.property(
        fc
          .array(fc.integer({ min: 1, max: 60 }), { minLength: 1, maxLength: 20, size: 'max' })
          .filter((ws) => ws.some((w) => w % 2)),
        (weights) => {
          const W = sum(weights);
          const live = rrSequence(
            weights.map((w) => w / 2),
            3 * W,
          );
          expect(live).toEqual(rrSequence(weights, 3 * W));
          expect(windowViolation(live, weights, W)).toBeNull();
        },
      ),
      { seed: 0x5a15, numRuns: 100 },
    );
  });

  it('live path, arbitrary real weights: |count_i(t) - t*w_i/W| < n for every prefix and every window (deterministic)', () => {
    // SWRR over real weights keeps every deficit t*w_i/W - count_i(t) in (-1, n-1) (the proof
    // of algorithms.md section 1 does not use integrality), so every prefix is within n of its
    // proportional share and every window of L picks within n of L*w_i/W. The tolerance 1e-6
    // only absorbs floating-point rounding of the running scores.
    const eps = 1e-6;
    fc.assert(
      fc.property(
        fc
          .array(fc.double({ min: 0.05, max: 50, noNaN: true }), { minLength: 1, maxLength: 12, size: 'max' })
          .filter((ws) => ws.some((w) => !Number.isInteger(w))),
        (weights) => {
          const n = weights.length;
          const W = sum(weights);
          const T = 3000;
          const L = 100;
          const seq = rrSequence(weights, T);
          const prefix: number[][] = [new Array<number>(n).fill(0)];
          for (let t = 1; t <= T; t++) {
            const row = [...at(prefix, t - 1)];
            const j = at(seq, t - 1);
            row[j] = at(row, j) + 1;
            prefix.push(row);
            for (let i = 0; i < n; i++) {
              const dev = at(row, i) - (t * at(weights, i)) / W;
              if (dev >= 1 + eps) expect.fail(`prefix ${t}: backend ${i} is ${dev} above its share (upper quota)`);
              if (-dev >= n - 1 + eps) expect.fail(`prefix ${t}: backend ${i} lags its share by ${-dev} >= n-1`);
            }
          }
          for (let start = 0; start + L <= T; start++) {
            const a = at(prefix, start);
            const b = at(prefix, start + L);
            for (let i = 0; i < n; i++) {
              const dev = Math.abs(at(b, i) - at(a, i) - (L * at(weights, i)) / W);
              if (dev >= n + eps) expect.fail(`window ${start}..${start + L}: backend ${i} off by ${dev}`);
            }
          }
        },
      ),
      { seed: 0x5a16, numRuns: 50 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
describe('random (weighted, alias method)', () => {
  const weight = fc.oneof(
    { weight: 1, arbitrary: fc.constant(0) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 100 }) },
    { weight: 1, arbitrary: fc.double({ min: 0.01, max: 100, noNaN: true }) },
  );
  const weights = fc.array(weight, { minLength: 1, maxLength: 10, size: 'max' }).filter((ws) => ws.some((w) => w > 0));

  it('shares follow the weights over 200,000 picks; weight 0 is never picked (statistical, pinned seed)', () => {
    // Bound: Bernstein at delta = 1e-6 / (20 runs x 10 backends), so P(any false failure) < 1e-6.
    const runs = 20;
    const picks = 200_000;
    const delta = 1e-6 / (runs * 10);
    fc.assert(
      fc.property(weights, fc.integer(), (ws, seed) => {
        const lb = createBalancer<Backend>({ algorithm: 'random', random: splitmix32(seed), backends: backendsOf(ws) });
        const counts = new Array<number>(ws.length).fill(0);
        for (let k = 0; k < picks; k++) {
          const i = lb.pick().idx;
          counts[i] = at(counts, i) + 1;
        }
        const W = sum(ws);
        ws.forEach((w, i) => {
          if (w === 0) {
            expect(counts[i]).toBe(0);
            return;
          }
          const p = w / W;
          expect(Math.abs(at(counts, i) - picks * p)).toBeLessThan(bernstein(picks, p, delta));
        });
      }),
      { seed: 0x7a01, numRuns: runs },
    );
  });

  it('with exclude (rejection then scan), shares follow the weights of the admitted backends (statistical, pinned seed)', () => {
    // Bound: Bernstein at delta = 1e-6 / (15 runs x 10 backends).
    const runs = 15;
    const picks = 60_000;
    const delta = 1e-6 / (runs * 10);
    fc.assert(
      fc.property(
        weights.chain((ws) =>
          fc.tuple(
            fc.constant(ws),
            fc
              .array(fc.boolean(), { minLength: ws.length, maxLength: ws.length, size: 'max' })
              .filter((ex) => ws.some((w, i) => w > 0 && !ex[i])),
          ),
        ),
        fc.integer(),
        ([ws, ex], seed) => {
          const lb = createBalancer<Backend>({
            algorithm: 'random',
            random: splitmix32(seed),
            backends: backendsOf(ws),
          });
          const exclude = new Set(ws.map((_, i) => `b${i}`).filter((_, i) => ex[i]));
          const counts = new Array<number>(ws.length).fill(0);
          for (let k = 0; k < picks; k++) {
            const i = lb.pick({ exclude }).idx;
            counts[i] = at(counts, i) + 1;
          }
          const admittedW = sum(ws.filter((_, i) => !ex[i]));
          ws.forEach((w, i) => {
            if (w === 0 || ex[i]) {
              expect(counts[i]).toBe(0);
              return;
            }
            const p = w / admittedW;
            expect(Math.abs(at(counts, i) - picks * p)).toBeLessThan(bernstein(picks, p, delta));
          });
        },
      ),
      { seed: 0x7a02, numRuns: runs },
    );
  });
});

// ---------------------------------------------------------------------------------------------
describe('least-connections', () => {
  type Op = { readonly kind: 'acquire' | 'pick' } | { readonly kind: 'release'; readonly k: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 3, arbitrary: fc.constant<Op>({ kind: 'acquire' }) },
    { weight: 1, arbitrary: fc.constant<Op>({ kind: 'pick' }) },
    { weight: 2, arbitrary: fc.nat().map<Op>((k) => ({ kind: 'release', k })) },
  );

  it('model-based: every acquire and pick minimises (inFlight+1)/weight; ties go to the one queued longest ago (deterministic)', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          // Unequal weights run the heap; equal weights run the per-count lists.
          fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 20 })), {
            minLength: 1,
            maxLength: 8,
            size: 'max',
          }),
          fc
            .tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 8 }))
            .map(([w, n]) => Array<number>(n).fill(w)),
        ),
        fc.array(op, { maxLength: 200, size: 'max' }),
        (weights, ops) => {
          const lb = createBalancer<Backend>({ algorithm: 'least-connections', backends: backendsOf(weights) });
          // The documented tie rule (HAProxy's): among equal keys, the endpoint queued longest ago,
          // where picking it or changing its load re-queues it; at first, list order (the snapshot
          // holds the weight > 0 backends, in list order).
          const eligible = weights.map((w, i) => (w > 0 ? i : -1)).filter((i) => i >= 0);
          const lastPick = new Map<number, number>(eligible.map((i, j) => [i, j - eligible.length]));
          let clock = 0;
          const slots: Slot<Backend>[] = [];
          for (const o of ops) {
            if (o.kind === 'release') {
              if (slots.length === 0) continue;
              const [slot] = slots.splice(o.k % slots.length, 1);
              expect(slot?.release()).toBe(true);
              if (slot !== undefined) lastPick.set(slot.backend.idx, clock++);
            } else {
              const stats = lb.stats();
              if (eligible.length === 0) {
                expectNoBackend(() => (o.kind === 'acquire' ? lb.acquire() : lb.pick()));
                expect(lb.stats()).toEqual(stats);
                continue;
              }
              const inFlight = stats.map((s) => s.inFlight);
              // Expected: the smallest (c+1)/w, compared exactly by cross-multiplying integers.
              let best = at(eligible, 0);
              for (const i of eligible) {
                const ki = (at(inFlight, i) + 1) * at(weights, best);
                const kb = (at(inFlight, best) + 1) * at(weights, i);
                if (ki < kb || (ki === kb && (lastPick.get(i) ?? 0) < (lastPick.get(best) ?? 0))) best = i;
              }
              let got: number;
              if (o.kind === 'acquire') {
                const slot = lb.acquire();
                slots.push(slot);
                got = slot.backend.idx;
              } else {
                got = lb.pick().idx;
              }
              // Minimality (whatever the tie rule): no eligible backend has a smaller key.
              for (const i of eligible) {
                if ((at(inFlight, got) + 1) * at(weights, i) > (at(inFlight, i) + 1) * at(weights, got)) {
                  expect.fail(
                    `${o.kind} chose b${got} (key ${(at(inFlight, got) + 1) / at(weights, got)}), but b${i} has key ${(at(inFlight, i) + 1) / at(weights, i)}`,
                  );
                }
              }
              if (got !== best)
                expect.fail(`${o.kind} chose b${got}; the tie rule (queued longest ago) gives b${best}`);
              lastPick.set(got, clock++);
            }
            const after = lb.stats().map((s) => s.inFlight);
            if (after.some((c) => c < 0) || sum(after) !== slots.length) {
              expect.fail(`in flight ${after.join(',')} with ${slots.length} slots outstanding`);
            }
          }
          for (const s of slots) s.release();
          expect(lb.stats().every((s) => s.inFlight === 0)).toBe(true);
        },
      ),
      { seed: 0x1c01, numRuns: 400 },
    );
  });

  it('equal weights, no releases: max - min inFlight <= 1 at all times (deterministic)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 9 }), fc.nat({ max: 300 }), (n, w, T) => {
        const lb = createBalancer<Backend>({ algorithm: 'least-connections', backends: backendsOf(Array(n).fill(w)) });
        for (let t = 0; t < T; t++) {
          lb.acquire();
          const c = lb.stats().map((s) => s.inFlight);
          expect(Math.max(...c) - Math.min(...c)).toBeLessThanOrEqual(1);
        }
      }),
      { seed: 0x1c02, numRuns: 60 },
    );
  });

  it("no releases: D'Hondt lower quota inFlight_i >= floor(T*w_i/W) after every T <= 1000 (deterministic)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 1, maxLength: 20, size: 'max' }),
        (weights) => {
          const lb = createBalancer<Backend>({ algorithm: 'least-connections', backends: backendsOf(weights) });
          const W = sum(weights);
          const c = new Array<number>(weights.length).fill(0);
          for (let T = 1; T <= 1000; T++) {
            const i = lb.acquire().backend.idx;
            c[i] = at(c, i) + 1;
            for (let j = 0; j < weights.length; j++) {
              if (at(c, j) < Math.floor((T * at(weights, j)) / W)) {
                expect.fail(`T=${T}: backend ${j} (w=${weights[j]}) has ${c[j]} < floor(${T}*${weights[j]}/${W})`);
              }
            }
          }
          expect(lb.stats().map((s) => s.inFlight)).toEqual(c);
        },
      ),
      { seed: 0x1c03, numRuns: 40 },
    );
  });

  it('ties rotate: equal weights, pick() only, every n consecutive picks visit all n backends (deterministic)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 9 }), (n, w) => {
        const lb = createBalancer<Backend>({ algorithm: 'least-connections', backends: backendsOf(Array(n).fill(w)) });
        const seq = Array.from({ length: 4 * n }, () => lb.pick().idx);
        expect(windowViolation(seq, Array(n).fill(1), n)).toBeNull();
      }),
      { seed: 0x1c04, numRuns: 60 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
describe('p2c', () => {
  it('in-flight: never picks a backend whose load is strictly greater than all others; n = 2 always takes the less loaded (deterministic)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ weight: fc.integer({ min: 1, max: 10 }), held: fc.nat({ max: 6 }) }), {
          minLength: 2,
          maxLength: 10,
          size: 'max',
        }),
        fc.integer(),
        (specs, seed) => {
          const lb = createBalancer<Backend>({
            algorithm: 'p2c',
            random: splitmix32(seed),
            backends: backendsOf(specs.map((s) => s.weight)),
          });
          specs.forEach((s, i) => {
            for (let k = 0; k < s.held; k++) acquireOn(lb, `b${i}`);
          });
          // Loads are frozen: pick() does not count in flight.
          const load = lb.stats().map((s) => s.inFlight);
          expect(load).toEqual(specs.map((s) => s.held));
          for (let k = 0; k < 10_000; k++) {
            const i = lb.pick().idx;
            const others = load.filter((_, j) => j !== i);
            if (at(load, i) > Math.max(...others)) expect.fail(`picked b${i}, the unique most loaded`);
            if (specs.length === 2 && at(load, i) > Math.min(...others))
              expect.fail(`n=2: picked the more loaded b${i}`);
          }
        },
      ),
      { seed: 0x2c01, numRuns: 30 },
    );
  });

  it('peak-ewma: never picks a backend whose latency x (inFlight+1) is strictly greater than all others (deterministic)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            weight: fc.integer({ min: 1, max: 10 }),
            held: fc.nat({ max: 4 }),
            latency: fc.integer({ min: 1, max: 500 }),
          }),
          { minLength: 2, maxLength: 10, size: 'max' },
        ),
        fc.integer(),
        (specs, seed) => {
          const lb = createBalancer<Backend>({
            algorithm: 'p2c',
            load: 'peak-ewma',
            now: () => 1_000,
            random: splitmix32(seed),
            backends: backendsOf(specs.map((s) => s.weight)),
          });
          specs.forEach((s, i) => {
            acquireOn(lb, `b${i}`).release({ latencyMs: s.latency });
            for (let k = 0; k < s.held; k++) acquireOn(lb, `b${i}`);
          });
          const stats = lb.stats();
          expect(stats.map((s) => s.ewmaMs)).toEqual(specs.map((s) => s.latency));
          const load = stats.map((s) => s.ewmaMs * (s.inFlight + 1));
          for (let k = 0; k < 10_000; k++) {
            const i = lb.pick().idx;
            const others = load.filter((_, j) => j !== i);
            if (at(load, i) > Math.max(...others)) expect.fail(`picked b${i}, the unique most loaded`);
          }
        },
      ),
      { seed: 0x2c02, numRuns: 30 },
    );
  });

  it('balls into bins: n = m = 10,000 acquires, equal weights, no releases: max inFlight <= 5 (statistical, pinned seeds)', () => {
    // algorithms.md 11.6: P(max >= 5) ~ 1.3e-8 in the fluid limit, P(max >= 6) ~ 1e-22.
    for (const seed of [1, 0x2c03, 0xdecafbad]) {
      const n = 10_000;
      const lb = createBalancer<Backend>({
        algorithm: 'p2c',
        random: splitmix32(seed),
        backends: backendsOf(Array(n).fill(1)),
      });
      for (let k = 0; k < n; k++) lb.acquire();
      const c = lb.stats().map((s) => s.inFlight);
      expect(sum(c)).toBe(n);
      expect(Math.max(...c)).toBeLessThanOrEqual(5);
    }
  });

  it('heavily loaded: n = 1000, m = 100,000, no releases: max - m/n <= 6 (statistical, pinned seed)', () => {
    // algorithms.md 11.6: observed <= 3 in 200 runs; one random choice would give ~25-49.
    const n = 1000;
    const lb = createBalancer<Backend>({
      algorithm: 'p2c',
      random: splitmix32(0x2c04),
      backends: backendsOf(Array(n).fill(1)),
    });
    for (let k = 0; k < 100 * n; k++) lb.acquire();
    expect(Math.max(...lb.stats().map((s) => s.inFlight)) - 100).toBeLessThanOrEqual(6);
  });

  const sampling = fc.tuple(
    fc.boolean(),
    fc.array(fc.integer({ min: 1, max: 100 }), { minLength: 2, maxLength: 10, size: 'max' }),
    fc.integer(),
  );

  /**
   * With every load equal the first draw wins, so 100,000 picks must follow the weights. Bound:
   * Bernstein at delta = 1e-6 / (15 runs x 10 backends); the fast-check seed is pinned.
   */
  function sharesFollowWeights(options: { load: 'in-flight' | 'peak-ewma' }, seed: number): void {
    const runs = 15;
    const picks = 100_000;
    const delta = 1e-6 / (runs * 10);
    fc.assert(
      fc.property(sampling, ([equal, ws0, random]) => {
        const ws = equal ? ws0.map(() => at(ws0, 0)) : ws0;
        const lb = createBalancer<Backend>({
          algorithm: 'p2c',
          load: options.load,
          now: () => 0,
          random: splitmix32(random),
          backends: backendsOf(ws),
        });
        const counts = new Array<number>(ws.length).fill(0);
        for (let k = 0; k < picks; k++) {
          const i = lb.pick().idx;
          counts[i] = at(counts, i) + 1;
        }
        const W = sum(ws);
        ws.forEach((w, i) => {
          expect(Math.abs(at(counts, i) - (picks * w) / W)).toBeLessThan(bernstein(picks, w / W, delta));
        });
      }),
      { seed, numRuns: runs },
    );
  }

  it('weighted sampling: with every load equal (peak-ewma, nothing reported) the first draw wins, so shares follow the weights (statistical, pinned seed)', () => {
    sharesFollowWeights({ load: 'peak-ewma' }, 0x2c05);
  });

  it('in-flight, pick() only: nothing in flight means equal loads, the first draw wins, so shares follow the weights (statistical, pinned seed)', () => {
    // Weights act through the draws only, so an idle pool is shared exactly by weight (dividing
    // the load by the weight too would give weights 2:1:1 an 83:8:8 split).
    sharesFollowWeights({ load: 'in-flight' }, 0x2c06);
  });

  it('in-flight, sequential acquire/release: the spread follows the weights, not all to the heaviest (statistical, pinned seed)', () => {
    // One request at a time: every backend is idle at each pick. Bound as above.
    const picks = 60_000;
    const ws = [2, 1, 1];
    const lb = createBalancer<Backend>({ algorithm: 'p2c', random: splitmix32(0x2c08), backends: backendsOf(ws) });
    const counts = [0, 0, 0];
    for (let k = 0; k < picks; k++) {
      const slot = lb.acquire();
      counts[slot.backend.idx] = at(counts, slot.backend.idx) + 1;
      slot.release({ ok: true });
    }
    ws.forEach((w, i) => {
      expect(Math.abs(at(counts, i) - (picks * w) / 4)).toBeLessThan(bernstein(picks, w / 4, 1e-6 / 3));
    });
  });

  it('peak-ewma: a backend reporting higher latency gets fewer picks (statistical, pinned seed)', () => {
    // Four backends, equal weights, nothing in flight: the one of latency rank r (0 = fastest)
    // wins against the 3 - r slower ones, so its expected share is (3 - r)/6: 4000, 2667, 1333
    // and exactly 0 of 8000 picks. Adjacent expected counts differ by 1333, while the standard
    // deviation of a difference is below 80: more than 16 sigma. The slowest is never picked.
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: 1000 }), { minLength: 4, maxLength: 4, size: 'max' }),
        fc.integer(),
        (latencies, seed) => {
          const lb = createBalancer<Backend>({
            algorithm: 'p2c',
            load: 'peak-ewma',
            now: () => 5_000,
            random: splitmix32(seed),
            backends: backendsOf([1, 1, 1, 1]),
          });
          latencies.forEach((latency, i) => {
            acquireOn(lb, `b${i}`).release({ ok: true, latencyMs: latency });
          });
          const counts = [0, 0, 0, 0];
          for (let k = 0; k < 8000; k++) {
            const i = lb.pick().idx;
            counts[i] = at(counts, i) + 1;
          }
          const bySpeed = [0, 1, 2, 3].sort((a, b) => at(latencies, a) - at(latencies, b)).map((i) => at(counts, i));
          expect(at(bySpeed, 0)).toBeGreaterThan(at(bySpeed, 1));
          expect(at(bySpeed, 1)).toBeGreaterThan(at(bySpeed, 2));
          expect(at(bySpeed, 2)).toBeGreaterThan(at(bySpeed, 3));
          expect(at(bySpeed, 3)).toBe(0);
        },
      ),
      { seed: 0x2c07, numRuns: 20 },
    );
  });

  describe('peak-ewma formula, read through stats().ewmaMs (injected clock, relative tolerance 1e-9)', () => {
    function ewmaBalancer(decayMs: number) {
      const clock = { t: 0 };
      const lb = createBalancer<Backend>({
        algorithm: 'p2c',
        load: 'peak-ewma',
        decayMs,
        now: () => clock.t,
        backends: backendsOf([1, 1]),
      });
      const report = (latencyMs: number) => acquireOn(lb, 'b0').release({ latencyMs });
      const ewma = () => at(lb.stats(), 0).ewmaMs;
      return { clock, lb, report, ewma };
    }
    const close = (actual: number, expected: number) => {
      expect(Math.abs(actual - expected)).toBeLessThanOrEqual(1e-9 * Math.abs(expected));
    };
    const decay = fc.double({ min: 1, max: 1e6, noNaN: true });
    const time = fc.double({ min: 0, max: 1e7, noNaN: true });
    const latency = fc.double({ min: 0.001, max: 1e5, noNaN: true });

    it('starts at 0; a report higher than the estimate sets it exactly', () => {
      fc.assert(
        fc.property(decay, time, latency, fc.double({ min: 1.000001, max: 100, noNaN: true }), (d, t0, c, f) => {
          const { clock, report, ewma } = ewmaBalancer(d);
          clock.t = t0;
          expect(ewma()).toBe(0);
          report(c);
          expect(ewma()).toBe(c);
          // Later, a report above the previous peak (hence above the decayed estimate too).
          clock.t = t0 + d / 3;
          report(c * f);
          expect(ewma()).toBe(c * f);
        }),
        { seed: 0xe001, numRuns: 200 },
      );
    });

    it('with no new report for decayMs * ln 2 the estimate halves', () => {
      fc.assert(
        fc.property(decay, time, latency, fc.integer({ min: 1, max: 5 }), (d, t0, c, k) => {
          const { clock, report, ewma } = ewmaBalancer(d);
          clock.t = t0;
          report(c);
          clock.t = t0 + d * Math.LN2;
          close(ewma(), c / 2);
          clock.t = t0 + k * d * Math.LN2;
          close(ewma(), c / 2 ** k);
          // Reading does not change the estimate, and a clock going back is clamped (dt >= 0).
          clock.t = t0 - d;
          expect(ewma()).toBe(c);
        }),
        { seed: 0xe002, numRuns: 200 },
      );
    });

    it('a lower report moves the decayed estimate towards it: e*w + rtt*(1 - w), e = cost*w, w = e^(-dt/tau)', () => {
      fc.assert(
        fc.property(
          decay,
          time,
          latency,
          fc.double({ min: 0, max: 5, noNaN: true }),
          fc.double({ min: 0, max: 1, noNaN: true }),
          (d, t0, c, ratio, f) => {
            const { clock, report, ewma } = ewmaBalancer(d);
            clock.t = t0;
            report(c);
            const dt = ratio * d;
            const w = Math.exp(-dt / d);
            // rtt at or below the decayed estimate e = c*w: the EWMA branch.
            const e = c * w;
            const rtt = f * e;
            clock.t = t0 + dt;
            report(rtt);
            close(ewma(), e * w + rtt * (1 - w));
            // The estimate never rises on a lower report.
            expect(ewma()).toBeLessThanOrEqual(e * (1 + 1e-12));
          },
        ),
        { seed: 0xe003, numRuns: 200 },
      );
    });

    it('a report between the decayed estimate and the stored peak becomes the estimate', () => {
      fc.assert(
        fc.property(
          decay,
          time,
          latency,
          fc.double({ min: 0.1, max: 3, noNaN: true }),
          fc.double({ min: 0.01, max: 0.99, noNaN: true }),
          (d, t0, c, ratio, f) => {
            const { clock, report, ewma } = ewmaBalancer(d);
            clock.t = t0;
            report(c);
            const dt = ratio * d;
            const e = c * Math.exp(-dt / d);
            const rtt = e + f * (c - e); // above what stats() shows, below the old peak
            clock.t = t0 + dt;
            report(rtt);
            expect(ewma()).toBe(rtt);
          },
        ),
        { seed: 0xe003, numRuns: 200 },
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
describe('every algorithm', () => {
  type Make = (o: CommonOptions<Backend>) => Balancer<Backend>;
  const ALGORITHMS: readonly (readonly [string, Make])[] = [
    ['round-robin', (o) => createBalancer({ ...o, algorithm: 'round-robin' })],
    ['random', (o) => createBalancer({ ...o, algorithm: 'random' })],
    ['least-connections', (o) => createBalancer({ ...o, algorithm: 'least-connections' })],
    ['p2c in-flight', (o) => createBalancer({ ...o, algorithm: 'p2c', load: 'in-flight' })],
    ['p2c peak-ewma', (o) => createBalancer({ ...o, algorithm: 'p2c', load: 'peak-ewma' })],
  ];

  const spec = fc.record({
    weight: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5 }), fc.constantFrom(0.5, 1.5, 2.25)),
    backup: fc.boolean(),
    maxInFlight: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
  });
  type Op =
    | { readonly kind: 'acquire' | 'pick'; readonly exclude: number }
    | { readonly kind: 'release'; readonly k: number; readonly ok: boolean; readonly latency: number }
    | { readonly kind: 'remove' | 'restore' | 'drain' | 'undrain'; readonly i: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('acquire' as const), exclude: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('pick' as const), exclude: fc.nat() }) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('release' as const),
        k: fc.nat(),
        ok: fc.boolean(),
        latency: fc.integer({ min: 0, max: 200 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constantFrom('remove' as const, 'restore' as const, 'drain' as const, 'undrain' as const),
        i: fc.nat(),
      }),
    },
  );

  for (const [name, make] of ALGORITHMS) {
    it(`${name}: never returns a removed, drained, excluded or full backend; backups only when no primary can be picked; ERR_NO_BACKEND otherwise; in-flight balances`, () => {
      fc.assert(
        fc.property(
          fc.array(spec, { minLength: 1, maxLength: 8, size: 'max' }),
          fc.array(op, { maxLength: 80, size: 'max' }),
          fc.integer(),
          (specs, ops, seed) => {
            const all: Backend[] = specs.map((s, idx) => {
              const b: { id: string; weight: number; idx: number; backup: boolean; maxInFlight?: number } = {
                id: `b${idx}`,
                weight: s.weight,
                idx,
                backup: s.backup,
              };
              if (s.maxInFlight !== undefined) b.maxInFlight = s.maxInFlight;
              return b;
            });
            const clock = { t: 0 };
            const lb = make({ backends: all, random: splitmix32(seed), now: () => clock.t });
            const slots: Slot<Backend>[] = [];
            const released: Slot<Backend>[] = [];
            const choose = (kind: 'acquire' | 'pick', mask: number) => {
              const exclude = new Set(all.filter((b) => (mask >> b.idx) & 1).map((b) => b.id));
              const before = lb.stats();
              const candidates = before.filter(
                (s) => s.pickable && !exclude.has(s.id) && s.inFlight < (s.maxInFlight ?? Number.POSITIVE_INFINITY),
              );
              const primaries = candidates.filter((s) => !s.backup);
              const tier = new Set((primaries.length > 0 ? primaries : candidates).map((s) => s.id));
              let got: Backend;
              try {
                if (kind === 'acquire') {
                  const slot = lb.acquire({ exclude });
                  slots.push(slot);
                  got = slot.backend;
                } else {
                  got = lb.pick({ exclude });
                }
              } catch (error) {
                if (!isFairpickError(error, 'ERR_NO_BACKEND')) throw error;
                expect(tier.size).toBe(0);
                expect(lb.stats()).toEqual(before);
                return;
              }
              const s = before.find((x) => x.id === got.id);
              const why =
                s === undefined
                  ? 'not in the pool (removed)'
                  : s.weight === 0 || !s.pickable
                    ? 'drained (weight 0)'
                    : exclude.has(got.id)
                      ? 'excluded'
                      : s.inFlight >= (s.maxInFlight ?? Number.POSITIVE_INFINITY)
                        ? 'full (maxInFlight reached)'
                        : !tier.has(got.id)
                          ? 'a backup while a primary was eligible'
                          : lb.backends.includes(got)
                            ? null
                            : 'not the object in lb.backends';
              if (why !== null) expect.fail(`${kind} returned ${got.id}, which is ${why}`);
            };
            for (const o of ops) {
              switch (o.kind) {
                case 'acquire':
                case 'pick':
                  choose(o.kind, o.exclude);
                  break;
                case 'release': {
                  if (slots.length === 0) break;
                  const [slot] = slots.splice(o.k % slots.length, 1);
                  if (slot === undefined) break;
                  clock.t += 7;
                  expect(slot.release({ ok: o.ok, latencyMs: o.latency })).toBe(true);
                  released.push(slot);
                  break;
                }
                case 'remove': {
                  const b = at(all, o.i % all.length);
                  if (lb.get(b.id) !== undefined) expect(lb.remove(b.id)).toBe(b);
                  break;
                }
                case 'restore': {
                  const b = at(all, o.i % all.length);
                  if (lb.get(b.id) === undefined) lb.add(b);
                  break;
                }
                case 'drain':
                case 'undrain': {
                  const b = at(all, o.i % all.length);
                  if (lb.get(b.id) !== undefined) lb.update(b.id, { weight: o.kind === 'drain' ? 0 : b.weight });
                  break;
                }
              }
              const negative = lb.stats().find((s) => s.inFlight < 0);
              if (negative !== undefined) expect.fail(`${negative.id} has inFlight ${negative.inFlight}`);
            }
            // Release twice: false, and nothing changes.
            for (const slot of released.slice(-5)) {
              const before = lb.stats();
              expect(slot.release({ ok: false, latencyMs: 1 })).toBe(false);
              expect(lb.stats()).toEqual(before);
            }
            for (const slot of slots) expect(slot.release()).toBe(true);
            for (const slot of slots) expect(slot.release()).toBe(false);
            for (const s of lb.stats()) expect(s.inFlight).toBe(0);
          },
        ),
        { seed: 0xa11, numRuns: 300 },
      );
    });
  }
});
