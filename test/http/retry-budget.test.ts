/**
 * RetryBudget on a fake clock: the floor (minPerSecond x window), the percentage of requests, the
 * sliding window ageing a tenth at a time, and the option validation (including `false`).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RetryBudget, retryBudgetSettings } from '../../src/http/retry-budget.js';
import { isFairpickError } from '../../src/index.js';

/** A budget on a clock the test moves by hand. */
function budget(options: { percent?: number; minPerSecond?: number; windowMs?: number }, start = 0) {
  const settings = retryBudgetSettings(options, 'retryBudget');
  if (settings === null) throw new Error('no budget');
  const clock = { t: start };
  return { b: new RetryBudget(settings, () => clock.t), clock };
}

/** Spends retries while the budget allows, up to `max`; returns how many it allowed. */
function drain(b: RetryBudget, max = 10_000): number {
  let n = 0;
  while (n < max && b.allows()) {
    b.spend();
    n++;
  }
  return n;
}

function requests(b: RetryBudget, n: number): void {
  for (let i = 0; i < n; i++) b.request();
}

describe('RetryBudget', () => {
  it('allows the floor of minPerSecond x window seconds with no requests at all', () => {
    const { b } = budget({ minPerSecond: 3, windowMs: 10_000 });
    expect(drain(b)).toBe(30);
    expect(b.allows()).toBe(false);
  });

  it('allows percent of the requests in the window when that is above the floor', () => {
    const { b } = budget({ percent: 20, minPerSecond: 0 });
    expect(b.allows()).toBe(false); // no floor, no requests
    requests(b, 4);
    expect(b.allows()).toBe(false); // 20% of 4 is 0.8
    requests(b, 1);
    expect(drain(b)).toBe(1);
    requests(b, 95);
    expect(drain(b)).toBe(19); // 20 in all for 100 requests
    expect(b.allows()).toBe(false);
  });

  it('takes the larger of the floor and the percentage', () => {
    const { b } = budget({ percent: 50, minPerSecond: 1, windowMs: 10_000 });
    requests(b, 10);
    expect(drain(b)).toBe(10); // floor 10, 50% of 10 is 5
    requests(b, 30);
    expect(drain(b)).toBe(10); // 50% of 40 is 20
  });

  it('percent 0 leaves only the floor; percent 100 allows one retry per request', () => {
    const none = budget({ percent: 0, minPerSecond: 0.5, windowMs: 4_000 }).b;
    requests(none, 1_000);
    expect(drain(none)).toBe(2);
    const all = budget({ percent: 100, minPerSecond: 0 }).b;
    requests(all, 7);
    expect(drain(all)).toBe(7);
  });

  it('ages counts out of the sliding window a tenth at a time', () => {
    const { b, clock } = budget({ percent: 50, minPerSecond: 0, windowMs: 10_000 }, 100);
    requests(b, 10); // bucket [100, 1100)
    clock.t = 5_100;
    requests(b, 10); // bucket [5100, 6100)
    clock.t = 10_099; // still inside the window of the first bucket
    expect(drain(b)).toBe(10); // 50% of 20
    clock.t = 10_100; // the first bucket ages out: 10 requests left, and the 10 retries remain
    expect(b.allows()).toBe(false);
    requests(b, 10); // 20 requests again
    expect(b.allows()).toBe(false); // 10 retries already spent
    requests(b, 2);
    expect(drain(b)).toBe(1);
    clock.t = 15_100; // the requests at 5100 age out
    expect(b.allows()).toBe(false);
    clock.t = 19_100; // the retries spent at 10099 age out
    expect(drain(b)).toBe(5); // the 12 requests of [10100, 11100): 6, minus the one spent then
    clock.t = 20_100; // the 12 requests age out; the 5 retries spent at 19100 remain
    expect(b.allows()).toBe(false);
    requests(b, 2);
    expect(b.allows()).toBe(false);
    clock.t = 29_100; // only the 2 requests of [20100, 21100) are left
    expect(drain(b)).toBe(1);
  });

  it('refills the floor when the window has passed, however long the gap', () => {
    const { b, clock } = budget({ minPerSecond: 2, windowMs: 1_000 });
    expect(drain(b)).toBe(2);
    clock.t = 999;
    expect(b.allows()).toBe(false);
    clock.t = 1_000;
    expect(drain(b)).toBe(2);
    clock.t = 1e12;
    expect(drain(b)).toBe(2);
  });

  it('does not break when the clock steps back', () => {
    const { b, clock } = budget({ percent: 10, minPerSecond: 1, windowMs: 5_000 }, 50_000);
    requests(b, 100);
    expect(drain(b)).toBe(10);
    clock.t = 10;
    expect(b.allows()).toBe(false);
    requests(b, 10);
    expect(drain(b)).toBe(1);
  });

  it('property: spends fit the budget of the trailing window, and a retry that fits is never refused', () => {
    // The window is ten buckets, the current one partly elapsed: it always covers the last 0.9 x
    // window and never more than the last window. So, at every retry at time t:
    //   spends in [t - 0.9w, t] + 1 <= max(floor, percent x requests in (t - w, t])   (never over)
    // and when spends in (t - w, t] + 1 <= max(floor, percent x requests in [t - 0.9w, t]) the
    // retry must be allowed (never needlessly refused).
    const op = fc.oneof(
      fc.record({ kind: fc.constant('request' as const), n: fc.integer({ min: 1, max: 5 }) }),
      fc.record({ kind: fc.constant('retry' as const), n: fc.integer({ min: 1, max: 5 }) }),
      fc.record({ kind: fc.constant('wait' as const), n: fc.integer({ min: 0, max: 3_000 }) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100 }),
        fc.constantFrom(0, 0.5, 1, 3),
        fc.constantFrom(1_000, 2_000, 10_000),
        fc.integer({ min: 0, max: 1e6 }),
        fc.array(op, { maxLength: 150 }),
        (percent, minPerSecond, windowMs, start, ops) => {
          const { b, clock } = budget({ percent, minPerSecond, windowMs }, start);
          const floor = (minPerSecond * windowMs) / 1000;
          const ratio = percent / 100;
          const requestTimes: number[] = [];
          const spendTimes: number[] = [];
          const count = (times: number[], from: number, inclusive: boolean) =>
            times.filter((x) => (inclusive ? x >= from : x > from) && x <= clock.t).length;
          for (const o of ops) {
            if (o.kind === 'wait') clock.t += o.n;
            else if (o.kind === 'request') {
              for (let i = 0; i < o.n; i++) {
                b.request();
                requestTimes.push(clock.t);
              }
            } else {
              for (let i = 0; i < o.n; i++) {
                const t = clock.t;
                const allowed = b.allows();
                const upper = Math.max(floor, count(requestTimes, t - windowMs, false) * ratio);
                const lower = Math.max(floor, count(requestTimes, t - 0.9 * windowMs, true) * ratio);
                if (allowed) {
                  expect(count(spendTimes, t - 0.9 * windowMs, true) + 1).toBeLessThanOrEqual(upper);
                  b.spend();
                  spendTimes.push(t);
                } else {
                  expect(count(spendTimes, t - windowMs, false) + 1).toBeGreaterThan(lower);
                }
              }
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('retryBudgetSettings', () => {
  it('fills in the defaults (20%, 3/s, 10 s) and turns off with false', () => {
    expect(retryBudgetSettings(undefined, 'x')).toEqual({ percent: 20, minPerSecond: 3, windowMs: 10_000 });
    expect(retryBudgetSettings(true, 'x')).toEqual({ percent: 20, minPerSecond: 3, windowMs: 10_000 });
    expect(retryBudgetSettings({ percent: 5 }, 'x')).toEqual({ percent: 5, minPerSecond: 3, windowMs: 10_000 });
    expect(retryBudgetSettings(false, 'x')).toBeNull();
  });

  it.each([
    [{ percent: -1 }, 'options.retryBudget.percent'],
    [{ percent: 101 }, 'options.retryBudget.percent'],
    [{ percent: Number.NaN }, 'options.retryBudget.percent'],
    [{ minPerSecond: -1 }, 'options.retryBudget.minPerSecond'],
    [{ minPerSecond: Number.POSITIVE_INFINITY }, 'options.retryBudget.minPerSecond'],
    [{ windowMs: 999 }, 'options.retryBudget.windowMs'],
    [{ windowMs: '10s' }, 'options.retryBudget.windowMs'],
    [{ ratio: 0.2 }, 'options.retryBudget.ratio'],
    ['20%', 'options.retryBudget'],
  ])('rejects %j naming %s', (value, field) => {
    let thrown: unknown;
    try {
      retryBudgetSettings(value, 'options.retryBudget');
    } catch (error) {
      thrown = error;
    }
    expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
    expect((thrown as Error).message).toContain(field);
  });
});
