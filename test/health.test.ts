/**
 * Unit tests of health tracking (DESIGN.md section 4): active checks (fall, rise, timeout, throw,
 * rejection, no overlap, spread, jitter, startDown), passive ejection (durations, the multiplier
 * earned back, maxEjectedPercent), slow start (the ramp, its tick, the share of picks), panic and
 * backups, markDown / markUp, events, stats, close() and the validation of `options.health`.
 *
 * Nothing waits for real: the balancer gets an injected clock and a deterministic fake scheduler
 * (`FakeScheduler`), and the probes are driven by the test (`Probes`). Probe results arrive in
 * microtasks, so `FakeScheduler.advance` lets every pending microtask and immediate run after each
 * timer it fires, before it looks for the next one, as a real event loop would.
 */
import { describe, expect, it } from 'vitest';
import {
  type BackendSpec,
  type Balancer,
  type BalancerEvents,
  type BalancerOptions,
  type CommonOptions,
  createBalancer,
  FairpickError,
  isFairpickError,
  type Slot,
} from '../src/index.js';
import { Scheduler as FakeScheduler } from './support/fake-time.js';
import { splitmix32 } from './support/util.js';

// ---------------------------------------------------------------------------------------------
// A deterministic scheduler, probes driven by the test, and a small harness

/** Lets every queued microtask (and the immediates they queue) run. */

/**
 * What the next probe of a backend does:
 * - `true` / `false`: returns that boolean synchronously;
 * - `'throw'`: throws synchronously; `'reject'`: returns a rejected promise;
 * - `'hang'`: returns a promise that settles only when the test settles it, ignoring the signal;
 * - `'abortable'`: like `'hang'`, but rejects with the signal's reason when the signal aborts.
 */
type ProbeMode = boolean | 'throw' | 'reject' | 'hang' | 'abortable';

interface ProbeCall {
  readonly id: string;
  readonly at: number;
  readonly signal: AbortSignal;
  /** Settles a `'hang'` or `'abortable'` call (no effect on the others). */
  resolve(ok: boolean): void;
  reject(error: unknown): void;
}

class Probes {
  readonly calls: ProbeCall[] = [];
  private readonly modes = new Map<string, ProbeMode>();

  constructor(
    private readonly scheduler: FakeScheduler,
    private readonly fallback: ProbeMode = true,
  ) {}

  set(id: string, mode: ProbeMode): void {
    this.modes.set(id, mode);
  }

  /** When each probe of `id` was called. */
  times(id: string): number[] {
    return this.calls.filter((c) => c.id === id).map((c) => c.at);
  }

  last(id: string): ProbeCall {
    const calls = this.calls.filter((c) => c.id === id);
    const call = calls[calls.length - 1];
    if (call === undefined) throw new Error(`no probe of ${id} yet`);
    return call;
  }

  readonly probe = (backend: Backend, signal: AbortSignal): boolean | Promise<boolean> => {
    const mode = this.modes.get(backend.id) ?? this.fallback;
    let resolve: (ok: boolean) => void = () => {};
    let reject: (error: unknown) => void = () => {};
    const call: ProbeCall = {
      id: backend.id,
      at: this.scheduler.clock,
      signal,
      resolve: (ok) => resolve(ok),
      reject: (error) => reject(error),
    };
    this.calls.push(call);
    if (typeof mode === 'boolean') return mode;
    if (mode === 'throw') throw new Error('probe exploded');
    if (mode === 'reject') return Promise.reject(new Error('connection refused'));
    return new Promise<boolean>((res, rej) => {
      resolve = res;
      reject = rej;
      if (mode === 'abortable') signal.addEventListener('abort', () => rej(signal.reason), { once: true });
    });
  };
}

interface Backend extends BackendSpec {
  readonly id: string;
  readonly weight?: number;
  readonly backup?: boolean;
}

type Health = NonNullable<CommonOptions<Backend>['health']>;
type ActiveWithoutProbe = Omit<NonNullable<Health['active']>, 'probe'>;
type HealthEvent = BalancerEvents<Backend>['health'];
type PanicEvent = BalancerEvents<Backend>['panic'];

interface SetupOptions {
  readonly backends?: readonly (Backend | string)[];
  /** Active checks; the probe is the harness's. Omit for none. */
  readonly active?: ActiveWithoutProbe;
  readonly passive?: Health['passive'];
  readonly slowStartMs?: number;
  readonly slowStartAggression?: number;
  /** 0 (never panic) unless a test says otherwise, so a state test is not blurred by panic. */
  readonly panicThreshold?: number;
  readonly algorithm?: 'round-robin' | 'least-connections' | 'random' | 'maglev' | 'ring-hash' | 'rendezvous';
  readonly random?: () => number;
  readonly probeFallback?: ProbeMode;
}

interface Harness {
  readonly lb: Balancer<Backend>;
  readonly scheduler: FakeScheduler;
  readonly probes: Probes;
  readonly events: HealthEvent[];
  readonly panics: PanicEvent[];
  /** The health events so far as 'id:from>to:reason@at', and forgets them. */
  take(): string[];
  stat(id: string): ReturnType<Balancer<Backend>['stats']>[number];
  state(id: string): string;
  /** Acquires `n` slots on `id` (every other backend excluded). */
  hold(id: string, n: number): Slot<Backend>[];
  /** n requests to `id` that end with `ok`. */
  release(id: string, ok: boolean, n?: number): void;
}

function setup(options: SetupOptions = {}): Harness {
  const scheduler = new FakeScheduler();
  const probes = new Probes(scheduler, options.probeFallback ?? true);
  const backends = (options.backends ?? ['a', 'b', 'c']).map((b) => (typeof b === 'string' ? { id: b } : b));
  const health: Health = {
    ...(options.active === undefined ? {} : { active: { ...options.active, probe: probes.probe } }),
    ...(options.passive === undefined ? {} : { passive: options.passive }),
    ...(options.slowStartMs === undefined ? {} : { slowStartMs: options.slowStartMs }),
    ...(options.slowStartAggression === undefined ? {} : { slowStartAggression: options.slowStartAggression }),
    panicThreshold: options.panicThreshold ?? 0,
  };
  const lb = createBalancer<Backend>({
    algorithm: options.algorithm ?? 'round-robin',
    backends,
    health,
    now: scheduler.now,
    timers: scheduler.timers,
    random: options.random ?? (() => 0),
  } as BalancerOptions<Backend>);
  const events: HealthEvent[] = [];
  const panics: PanicEvent[] = [];
  lb.on('health', (e) => events.push(e));
  lb.on('panic', (e) => panics.push(e));
  const stat = (id: string) => {
    const s = lb.stats().find((x) => x.id === id);
    if (s === undefined) throw new Error(`no backend ${id}`);
    return s;
  };
  const hold = (id: string, n: number) => {
    const exclude = new Set(lb.backends.map((b) => b.id).filter((x) => x !== id));
    return Array.from({ length: n }, () => {
      const slot = lb.acquire({ exclude, key: 'k' }); // the key is for the hash algorithms
      expect(slot.backend.id).toBe(id);
      return slot;
    });
  };
  return {
    lb,
    scheduler,
    probes,
    events,
    panics,
    take: () => events.splice(0).map((e) => `${e.id}:${e.from}>${e.to}:${e.reason}@${e.at}`),
    stat,
    state: (id) => stat(id).state,
    hold,
    release: (id, ok, n = 1) => {
      for (const slot of hold(id, n)) slot.release({ ok });
    },
  };
}

/** How many times each id was returned by `n` picks. */
function pickCounts(lb: Balancer<Backend>, n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const id = lb.pick().id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

const picked = (lb: Balancer<Backend>, n: number): string[] => [...pickCounts(lb, n).keys()].sort();

function expectInvalid(call: () => unknown, field: string, received?: string): void {
  let error: unknown;
  try {
    call();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(FairpickError);
  expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
  const message = (error as Error).message;
  expect(message).toContain(field);
  if (received !== undefined) expect(message).toContain(received);
}

// ---------------------------------------------------------------------------------------------
// Active checks

describe('active checks', () => {
  // Two backends, interval 1000: 'a' is checked at 0, 1000, 2000, ...; 'b' at 500, 1500, ...
  const active = { intervalMs: 1000, timeoutMs: 400 };

  it.each([1, 3, 5])('fall = %i consecutive failures mark a backend down, not one fewer', async (fall) => {
    const h = setup({ backends: ['a', 'b'], active: { ...active, fall } });
    h.probes.set('a', false);
    await h.scheduler.advance(0); // the check at 0
    for (let k = 1; k < fall; k++) {
      expect(h.state('a')).toBe('healthy');
      expect(h.stat('a').consecutiveFailures).toBe(k);
      await h.scheduler.advance(1000);
    }
    const at = (fall - 1) * 1000;
    expect(h.take()).toEqual([`a:healthy>down:probe@${at}`]);
    expect(h.stat('a')).toMatchObject({
      state: 'down',
      pickable: false,
      consecutiveFailures: fall,
      consecutiveSuccesses: 0,
      lastCheck: { ok: false, at, durationMs: 0 },
    });
    expect(picked(h.lb, 10)).toEqual(['b']);
    // More failures change nothing and report nothing.
    await h.scheduler.advance(5000);
    expect(h.take()).toEqual([]);
    expect(h.stat('a').consecutiveFailures).toBe(fall + 5);
  });

  it.each([1, 2, 4])('rise = %i consecutive successes bring a down backend back', async (rise) => {
    const h = setup({ backends: ['a', 'b'], active: { ...active, fall: 1, rise } });
    h.probes.set('a', false);
    await h.scheduler.advance(0);
    expect(h.take()).toEqual(['a:healthy>down:probe@0']);
    h.probes.set('a', true);
    for (let k = 1; k < rise; k++) {
      await h.scheduler.advance(1000);
      expect(h.state('a')).toBe('down');
      expect(h.stat('a').consecutiveSuccesses).toBe(k);
    }
    await h.scheduler.advance(1000);
    expect(h.take()).toEqual([`a:down>healthy:probe@${rise * 1000}`]);
    expect(h.stat('a')).toMatchObject({ state: 'healthy', pickable: true, consecutiveFailures: 0 });
    expect(picked(h.lb, 10)).toEqual(['a', 'b']);
  });

  it('counts consecutive results only: a success resets the failures and a failure the successes', async () => {
    const h = setup({ backends: ['a', 'b'], active: { ...active, fall: 3, rise: 2 } });
    // Checks at 0, 1000, ..., 7000.
    for (const [k, ok] of [false, false, true, false, false, true, false, false].entries()) {
      h.probes.set('a', ok);
      await h.scheduler.to(k * 1000);
    }
    expect(h.state('a')).toBe('healthy');
    expect(h.take()).toEqual([]);
    h.probes.set('a', false);
    await h.scheduler.advance(1000); // third failure in a row, at 8000
    expect(h.take()).toEqual(['a:healthy>down:probe@8000']);
    for (const ok of [true, false, true, false, true]) {
      h.probes.set('a', ok);
      await h.scheduler.advance(1000);
    }
    expect(h.state('a')).toBe('down');
    h.probes.set('a', true);
    await h.scheduler.advance(1000);
    expect(h.take()).toEqual(['a:down>healthy:probe@14000']);
  });

  it('applies the defaults: interval 2000, timeout 1000, fall 3, rise 2', async () => {
    const h = setup({ backends: ['a'], active: {} });
    h.probes.set('a', false);
    await h.scheduler.to(4000);
    expect(h.probes.times('a')).toEqual([0, 2000, 4000]);
    expect(h.take()).toEqual(['a:healthy>down:probe@4000']);
    h.probes.set('a', true);
    await h.scheduler.to(8000);
    expect(h.take()).toEqual(['a:down>healthy:probe@8000']);
    // A check that does not settle fails after the default timeout, 1000 ms.
    h.probes.set('a', 'abortable');
    await h.scheduler.to(10_999);
    expect(h.stat('a').lastCheck).toEqual({ ok: true, at: 8000, durationMs: 0 });
    await h.scheduler.to(11_000);
    expect(h.stat('a').lastCheck).toEqual({ ok: false, at: 11_000, durationMs: 1000 });
  });

  it('defaults timeoutMs to half a short interval', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 600 } });
    h.probes.set('a', 'abortable');
    await h.scheduler.to(299);
    expect(h.probes.last('a').signal.aborted).toBe(false);
    await h.scheduler.to(300);
    expect(h.probes.last('a').signal.aborted).toBe(true);
    expect(h.stat('a').lastCheck).toEqual({ ok: false, at: 300, durationMs: 300 });
  });

  it('a check running past timeoutMs fails, its signal aborts, and the next starts intervalMs after', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 1000, timeoutMs: 300, fall: 2 } });
    h.probes.set('a', 'abortable');
    await h.scheduler.advance(0);
    const first = h.probes.last('a');
    await h.scheduler.to(299);
    expect(first.signal.aborted).toBe(false);
    expect(h.stat('a').lastCheck).toBeNull();
    await h.scheduler.to(300);
    expect(first.signal.aborted).toBe(true);
    expect(String(first.signal.reason)).toMatch(/timed out/);
    expect(h.stat('a')).toMatchObject({
      consecutiveFailures: 1,
      state: 'healthy',
      lastCheck: { ok: false, at: 300, durationMs: 300 },
    });
    await h.scheduler.to(1600);
    expect(h.probes.times('a')).toEqual([0, 1300]);
    expect(h.take()).toEqual(['a:healthy>down:probe@1600']);
  });

  it('a check that settles true within the timeout succeeds, with its duration, and the next follows its end', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 1000, timeoutMs: 300 } });
    h.probes.set('a', 'hang');
    await h.scheduler.advance(0);
    await h.scheduler.to(250);
    h.probes.last('a').resolve(true);
    await h.scheduler.advance(0);
    expect(h.stat('a')).toMatchObject({ consecutiveSuccesses: 1, lastCheck: { ok: true, at: 250, durationMs: 250 } });
    expect(h.probes.last('a').signal.aborted).toBe(false);
    await h.scheduler.to(1250);
    expect(h.probes.times('a')).toEqual([0, 1250]);
    // A late false is a failure like a synchronous one.
    await h.scheduler.to(1400);
    h.probes.last('a').resolve(false);
    await h.scheduler.advance(0);
    expect(h.stat('a')).toMatchObject({ consecutiveFailures: 1, lastCheck: { ok: false, at: 1400, durationMs: 150 } });
  });

  it.each<[string, ProbeMode]>([
    ['returns false', false],
    ['throws', 'throw'],
    ['rejects', 'reject'],
  ])('a probe that %s fails the check', async (_label, mode) => {
    const h = setup({ backends: ['a', 'b'], active: { ...active, fall: 3 } });
    h.probes.set('a', mode);
    await h.scheduler.to(2000);
    expect(h.probes.times('a')).toEqual([0, 1000, 2000]);
    expect(h.take()).toEqual(['a:healthy>down:probe@2000']);
    expect(h.stat('a').lastCheck).toEqual({ ok: false, at: 2000, durationMs: 0 });
    // The balancer keeps checking after a throw or a rejection.
    h.probes.set('a', true);
    await h.scheduler.to(4000);
    expect(h.take()).toEqual(['a:down>healthy:probe@4000']);
  });

  it('never runs two checks of a backend at once: a hung check makes the next ones fail without a probe', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 1000, timeoutMs: 400, fall: 3 } });
    h.probes.set('a', 'hang'); // ignores its signal and never settles by itself
    await h.scheduler.advance(0);
    const hung = h.probes.last('a');
    await h.scheduler.to(400);
    expect(hung.signal.aborted).toBe(true);
    expect(h.stat('a').consecutiveFailures).toBe(1);
    await h.scheduler.to(1400); // due while the first probe is still pending
    expect(h.stat('a')).toMatchObject({ consecutiveFailures: 2, lastCheck: { ok: false, at: 1400 } });
    await h.scheduler.to(2400);
    expect(h.take()).toEqual(['a:healthy>down:probe@2400']);
    expect(h.probes.times('a')).toEqual([0]);
    // It settles at last, too late to count; the next check runs a probe again.
    h.probes.set('a', true);
    await h.scheduler.to(2500);
    hung.resolve(true);
    await h.scheduler.advance(0);
    expect(h.stat('a')).toMatchObject({ consecutiveFailures: 3, consecutiveSuccesses: 0, state: 'down' });
    await h.scheduler.to(3400);
    expect(h.probes.times('a')).toEqual([0, 3400]);
    expect(h.stat('a').consecutiveSuccesses).toBe(1);
  });

  it('spreads the first checks of n backends over one interval, at i/n x intervalMs', async () => {
    const h = setup({ backends: ['a', 'b', 'c', 'd'], active: { intervalMs: 1000, timeoutMs: 400 } });
    await h.scheduler.to(2999);
    expect(h.probes.times('a')).toEqual([0, 1000, 2000]);
    expect(h.probes.times('b')).toEqual([250, 1250, 2250]);
    expect(h.probes.times('c')).toEqual([500, 1500, 2500]);
    expect(h.probes.times('d')).toEqual([750, 1750, 2750]);
  });

  it('places the first check of a backend added later at random() x intervalMs', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 1000, timeoutMs: 400 }, random: () => 0.3 });
    await h.scheduler.to(10_000);
    h.lb.add({ id: 'e' });
    await h.scheduler.to(12_000);
    expect(h.probes.times('e')).toEqual([10_300, 11_300]);
    h.lb.set([{ id: 'a' }, { id: 'e' }, { id: 'f' }]);
    await h.scheduler.to(13_500);
    expect(h.probes.times('f')).toEqual([12_300, 13_300]);
  });

  it.each([
    [0, 800],
    [0.25, 900],
    [0.5, 1000],
    [0.75, 1100],
  ])('with jitter 0.2 and random() = %f the interval is %f ms', async (r, gap) => {
    const h = setup({
      backends: ['a', 'b'],
      active: { intervalMs: 1000, timeoutMs: 400, jitter: 0.2 },
      random: () => r,
    });
    await h.scheduler.to(5 * gap + 1);
    // The first checks are spread over one interval whatever the jitter; the next ones jitter.
    const times = h.probes.times('a');
    expect(times).toHaveLength(6);
    for (const [k, t] of times.entries()) expect(t).toBeCloseTo(k * gap, 6);
    expect(h.probes.times('b')[0]).toBe(500);
  });

  it('keeps jittered intervals within intervalMs x (1 +- jitter) and uses that range', async () => {
    const h = setup({
      backends: ['a'],
      active: { intervalMs: 1000, timeoutMs: 400, jitter: 0.2 },
      random: splitmix32(42),
    });
    await h.scheduler.to(300_000);
    const times = h.probes.times('a');
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    expect(gaps.length).toBeGreaterThan(250);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(800);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1200);
    // 250+ uniform draws: the extremes reach the outer tenth of each side (a miss has probability < 1e-11).
    expect(Math.min(...gaps)).toBeLessThan(840);
    expect(Math.max(...gaps)).toBeGreaterThan(1160);
  });

  it('startDown: backends start down, are not picked, and come back after rise successes', async () => {
    const h = setup({
      backends: ['a', 'b'],
      active: { intervalMs: 1000, timeoutMs: 400, rise: 2, startDown: true },
      slowStartMs: 1000,
    });
    expect(h.lb.stats().map((s) => [s.state, s.pickable])).toEqual([
      ['down', false],
      ['down', false],
    ]);
    expect(() => h.lb.pick()).toThrowError(expect.objectContaining({ code: 'ERR_NO_BACKEND' }));
    h.probes.set('b', false);
    await h.scheduler.to(1000);
    expect(h.take()).toEqual(['a:down>slow-start:probe@1000']);
    expect(h.lb.pick().id).toBe('a');
    // A backend added later starts down too, and does not slow-start while down.
    h.lb.add({ id: 'c' });
    expect(h.stat('c')).toMatchObject({ state: 'down', pickable: false });
    await h.scheduler.to(1500);
    expect(h.state('c')).toBe('down');
    expect(h.take()).toEqual([]);
    await h.scheduler.to(2000); // c: checks at 1000 and 2000 (random() = 0); a ends its ramp
    // c's check (scheduled at 1000) fires before the ramp tick due at the same time (scheduled at 1950).
    expect(h.take()).toEqual(['c:down>slow-start:probe@2000', 'a:slow-start>healthy:recovered@2000']);
  });
});

// ---------------------------------------------------------------------------------------------
// Passive ejection

describe('passive ejection', () => {
  it('ejects after consecutiveFailures failed releases; a success resets the count', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: true });
    await h.scheduler.to(1000);
    h.release('a', false, 4);
    expect(h.stat('a')).toMatchObject({ passiveFailures: 4, state: 'healthy' });
    h.release('a', true);
    expect(h.stat('a').passiveFailures).toBe(0);
    h.release('a', false, 2);
    // A release without an outcome neither counts nor resets.
    h.hold('a', 1)[0]?.release();
    h.hold('a', 1)[0]?.release({ latencyMs: 5 });
    h.release('a', false, 2);
    expect(h.state('a')).toBe('healthy');
    expect(h.take()).toEqual([]);
    h.release('a', false);
    expect(h.take()).toEqual(['a:healthy>ejected:passive@1000']);
    expect(h.stat('a')).toMatchObject({
      state: 'ejected',
      pickable: false,
      ejections: 1,
      ejectedForMs: 30_000,
      passiveFailures: 0,
    });
    expect(picked(h.lb, 30)).toEqual(['b', 'c']);
    await h.scheduler.to(11_000);
    expect(h.stat('a').ejectedForMs).toBe(20_000);
    await h.scheduler.to(30_999);
    expect(h.state('a')).toBe('ejected');
    await h.scheduler.to(31_000);
    expect(h.take()).toEqual(['a:ejected>healthy:recovered@31000']);
    expect(h.stat('a')).toMatchObject({ state: 'healthy', pickable: true, ejectedForMs: 0, ejections: 1 });
  });

  it('grows back-to-back ejections 30 s, 60 s, 90 s, ... up to maxEjectionMs', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: { baseEjectionMs: 30_000, maxEjectionMs: 300_000 } });
    const durations: number[] = [];
    for (let k = 1; k <= 13; k++) {
      h.release('a', false, 5);
      const { ejectedForMs, ejections } = h.stat('a');
      expect(ejections).toBe(k);
      durations.push(ejectedForMs);
      await h.scheduler.advance(ejectedForMs);
      expect(h.state('a')).toBe('healthy');
    }
    expect(durations).toEqual([30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300].map((s) => s * 1000));
    expect(h.events.every((e) => e.id === 'a')).toBe(true);
    expect(h.take()).toHaveLength(26);
  });

  /** Ejects 'a' three times back to back (level 3), then leaves it healthy for `healthyMs`. */
  async function thirdEjectionThenWait(healthyMs: number): Promise<Harness> {
    const h = setup({ backends: ['a', 'b', 'c'], passive: { baseEjectionMs: 30_000 } });
    for (let k = 0; k < 3; k++) {
      h.release('a', false, 5);
      await h.scheduler.advance(h.stat('a').ejectedForMs);
    }
    await h.scheduler.advance(healthyMs);
    h.release('a', false, 5);
    return h;
  }

  it.each([
    [0, 120_000],
    [29_999, 120_000],
    [30_000, 90_000],
    [59_999, 90_000],
    [60_000, 60_000],
    [90_000, 30_000],
    [3_000_000, 30_000],
  ])(
    'earns one step of the multiplier back per baseEjectionMs healthy: %i ms healthy -> next ejection %i ms',
    async (healthyMs, expected) => {
      const h = await thirdEjectionThenWait(healthyMs);
      expect(h.stat('a')).toMatchObject({ state: 'ejected', ejectedForMs: expected, ejections: 4 });
    },
  );

  it.each([
    // [pool size, maxEjectedPercent, most ejected at once]
    [1, 10, 0],
    [2, 10, 1],
    [10, 10, 1],
    [20, 10, 2],
    [10, 50, 5],
    [4, 0, 1],
    [1, 100, 1],
    [3, 100, 3],
  ])('a pool of %i with maxEjectedPercent %i ejects at most %i at once', async (n, maxEjectedPercent, most) => {
    const ids = Array.from({ length: n }, (_, i) => `s${i}`);
    const h = setup({ backends: ids, passive: { maxEjectedPercent } });
    for (const id of ids) h.release(id, false, 5);
    const ejected = ids.filter((id) => h.state(id) === 'ejected');
    expect(ejected).toEqual(ids.slice(0, most));
    // The refused ones stay healthy and are picked; their count restarts (as Envoy's consecutive_5xx).
    for (const id of ids.slice(most)) expect(h.stat(id)).toMatchObject({ state: 'healthy', passiveFailures: 0 });
    if (most > 0 && most < n) {
      // When an ejection ends, room opens for another one.
      await h.scheduler.advance(30_000);
      expect(ids.filter((id) => h.state(id) === 'ejected')).toEqual([]);
      const next = ids[most] as string;
      h.release(next, true);
      h.release(next, false, 5);
      expect(h.state(next)).toBe('ejected');
    }
  });

  it('passive: true means 5 failures and 30 s; passive: false or omitted means no ejection', async () => {
    const on = setup({ backends: ['a', 'b'], passive: true });
    on.release('a', false, 5);
    expect(on.stat('a')).toMatchObject({ state: 'ejected', ejectedForMs: 30_000 });
    for (const passive of [false, undefined]) {
      const off = setup({ backends: ['a', 'b'], passive });
      off.release('a', false, 50);
      expect(off.stat('a')).toMatchObject({ state: 'healthy', ejections: 0 });
    }
  });

  it('ejects a backend in slow start, and brings it back through slow start', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: true, slowStartMs: 1000 });
    h.lb.add({ id: 'd' });
    expect(h.state('d')).toBe('slow-start');
    await h.scheduler.to(200);
    h.release('d', false, 5);
    expect(h.take()).toEqual(['d:slow-start>ejected:passive@200']);
    await h.scheduler.to(30_200);
    expect(h.take()).toEqual(['d:ejected>slow-start:recovered@30200']);
    expect(h.stat('d').effectiveWeight).toBeCloseTo(0.1, 12);
    await h.scheduler.to(31_300);
    expect(h.take()).toEqual(['d:slow-start>healthy:recovered@31200']);
  });

  it('does not eject a backend that is down, nor eject again one already ejected', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: { consecutiveFailures: 2, maxEjectedPercent: 100 } });
    const slots = h.hold('a', 4);
    h.lb.markDown('a');
    for (const s of slots) s.release({ ok: false });
    expect(h.stat('a')).toMatchObject({ state: 'down', ejections: 0 });
    const more = h.hold('b', 4);
    for (const s of more) s.release({ ok: false });
    expect(h.stat('b')).toMatchObject({ state: 'ejected', ejections: 1, ejectedForMs: 30_000 });
    expect(h.take()).toEqual(['a:healthy>down:manual@0', 'b:healthy>ejected:passive@0']);
  });
});

// ---------------------------------------------------------------------------------------------
// Slow start

describe('slow start', () => {
  it('ramps an added backend from 10% to 100% of its weight in ticks of slowStartMs / 20', async () => {
    const h = setup({ backends: [{ id: 'a', weight: 2 }], slowStartMs: 2000 });
    h.lb.add({ id: 'b', weight: 4 });
    expect(h.stat('b')).toMatchObject({ state: 'slow-start', pickable: true });
    expect(h.stat('b').effectiveWeight).toBeCloseTo(0.4, 12);
    expect(h.stat('a')).toMatchObject({ state: 'healthy', effectiveWeight: 2 });
    for (let k = 1; k < 20; k++) {
      await h.scheduler.to(100 * k - 1);
      expect(h.stat('b').effectiveWeight).toBeCloseTo(4 * (0.1 + (0.9 * (k - 1)) / 20), 9);
      await h.scheduler.to(100 * k);
      expect(h.stat('b').effectiveWeight).toBeCloseTo(4 * (0.1 + (0.9 * k) / 20), 9);
      expect(h.state('b')).toBe('slow-start');
    }
    await h.scheduler.to(2000);
    expect(h.stat('b')).toMatchObject({ state: 'healthy', effectiveWeight: 4 });
    expect(h.take()).toEqual(['b:slow-start>healthy:recovered@2000']);
    expect(h.scheduler.pending).toBe(0); // the ramp timer stops with the last ramp
  });

  it.each([0.5, 2, 3])(
    'shapes the ramp with aggression %f: 0.1 + 0.9 x (t / T)^(1 / aggression)',
    async (aggression) => {
      const h = setup({ backends: ['a'], slowStartMs: 1000, slowStartAggression: aggression });
      h.lb.add({ id: 'b', weight: 10 });
      for (let k = 1; k < 20; k++) {
        await h.scheduler.to(50 * k);
        expect(h.stat('b').effectiveWeight).toBeCloseTo(10 * (0.1 + 0.9 * (k / 20) ** (1 / aggression)), 9);
      }
      await h.scheduler.to(1000);
      expect(h.state('b')).toBe('healthy');
    },
  );

  it('ticks at least 10 ms apart', async () => {
    const h = setup({ backends: ['a'], slowStartMs: 100 });
    h.lb.add({ id: 'b', weight: 1 });
    await h.scheduler.to(9);
    expect(h.stat('b').effectiveWeight).toBeCloseTo(0.1, 12);
    await h.scheduler.to(10);
    expect(h.stat('b').effectiveWeight).toBeCloseTo(0.19, 12);
    await h.scheduler.to(100);
    expect(h.take()).toEqual(['b:slow-start>healthy:recovered@100']);
  });

  it('gives a ramping backend a share of round-robin picks that follows its effective weight', async () => {
    // Two backends of weight 1, 'b' ramping over 2000 ms (ticks of 100 ms). In each tick window,
    // smooth weighted round robin over weights 1 and f gives 'b' within one pick of N f / (1 + f)
    // (its deficit counter stays within one total weight), so the tolerance is 1 pick of 200.
    const h = setup({ backends: ['a'], slowStartMs: 2000 });
    h.lb.add({ id: 'b', weight: 1 });
    const N = 200;
    const shares: number[] = [];
    for (let k = 0; k < 20; k++) {
      await h.scheduler.to(100 * k);
      const f = h.stat('b').effectiveWeight;
      expect(f).toBeCloseTo(0.1 + (0.9 * k) / 20, 9);
      const b = pickCounts(h.lb, N).get('b') ?? 0;
      expect(Math.abs(b - (N * f) / (1 + f))).toBeLessThanOrEqual(1);
      shares.push(b / N);
    }
    expect(shares[0]).toBeCloseTo(0.1 / 1.1, 2);
    for (let k = 1; k < 20; k++) expect(shares[k]).toBeGreaterThanOrEqual(shares[k - 1] as number);
    await h.scheduler.to(2000);
    expect(pickCounts(h.lb, N).get('b')).toBe(N / 2);
  });

  it('brings a backend back through slow start after a probe rise, an ejection and markUp', async () => {
    const h = setup({
      backends: ['a', 'b', 'c'],
      active: { intervalMs: 1000, timeoutMs: 400, fall: 1, rise: 1 },
      passive: true,
      slowStartMs: 500,
    });
    h.probes.set('a', false);
    await h.scheduler.to(0);
    h.probes.set('a', true);
    await h.scheduler.to(1000);
    await h.scheduler.to(1500);
    expect(h.take()).toEqual([
      'a:healthy>down:probe@0',
      'a:down>slow-start:probe@1000',
      'a:slow-start>healthy:recovered@1500',
    ]);
    h.release('b', false, 5);
    await h.scheduler.to(1500 + 30_000 + 500);
    expect(h.take()).toEqual([
      'b:healthy>ejected:passive@1500',
      'b:ejected>slow-start:recovered@31500',
      'b:slow-start>healthy:recovered@32000',
    ]);
    h.lb.markDown('c');
    h.lb.markUp('c');
    expect(h.stat('c').effectiveWeight).toBeCloseTo(0.1, 12);
    await h.scheduler.advance(500);
    expect(h.take()).toEqual([
      'c:healthy>down:manual@32000',
      'c:down>slow-start:manual@32000',
      'c:slow-start>healthy:recovered@32500',
    ]);
  });

  it('does not slow-start the backends of the initial pool', () => {
    const h = setup({ backends: ['a', 'b'], slowStartMs: 1000 });
    expect(h.lb.stats().map((s) => [s.state, s.effectiveWeight])).toEqual([
      ['healthy', 1],
      ['healthy', 1],
    ]);
    expect(h.scheduler.pending).toBe(0);
  });

  it.each(['maglev', 'ring-hash', 'rendezvous'] as const)(
    '%s (a hash algorithm) never slow-starts',
    async (algorithm) => {
      const h = setup({
        algorithm,
        backends: ['a', 'b', 'c'],
        active: { intervalMs: 1000, timeoutMs: 400, fall: 1, rise: 1 },
        passive: true,
        slowStartMs: 5000,
      });
      h.lb.add({ id: 'd', weight: 3 });
      expect(h.stat('d')).toMatchObject({ state: 'healthy', effectiveWeight: 3 });
      h.lb.markDown('d');
      h.lb.markUp('d');
      expect(h.stat('d')).toMatchObject({ state: 'healthy', effectiveWeight: 3 });
      h.probes.set('a', false);
      await h.scheduler.to(0);
      h.probes.set('a', true);
      await h.scheduler.to(1000);
      h.release('b', false, 5);
      await h.scheduler.to(31_000);
      expect(h.take()).toEqual([
        'd:healthy>down:manual@0',
        'd:down>healthy:manual@0',
        'a:healthy>down:probe@0',
        'a:down>healthy:probe@1000',
        'b:healthy>ejected:passive@1000',
        'b:ejected>healthy:recovered@31000',
      ]);
      expect(h.lb.stats().every((s) => s.effectiveWeight === s.weight)).toBe(true);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Panic and backups

describe('panic and backups', () => {
  const active = { intervalMs: 1000, timeoutMs: 400, fall: 1, rise: 1 };

  it('panics below panicThreshold (0.5) of the primaries: picks go to all of them, down or not', async () => {
    // Checks: a at 0, b at 250, c at 500, d at 750 (+ k x 1000).
    const h = setup({ backends: ['a', 'b', 'c', 'd'], active, panicThreshold: 0.5 });
    for (const id of ['b', 'c', 'd']) h.probes.set(id, false);
    await h.scheduler.to(500);
    expect(h.lb.panicking).toBe(false);
    expect(h.panics).toEqual([]);
    expect(picked(h.lb, 40)).toEqual(['a', 'd']); // 2 of 4 pickable: not below one half
    await h.scheduler.to(750);
    expect(h.panics).toEqual([{ active: true, at: 750 }]);
    expect(h.lb.panicking).toBe(true);
    expect(picked(h.lb, 40)).toEqual(['a', 'b', 'c', 'd']);
    expect(h.lb.stats().every((s) => s.pickable)).toBe(true);
    expect(h.lb.stats().map((s) => s.state)).toEqual(['healthy', 'down', 'down', 'down']);
    h.probes.set('c', true);
    await h.scheduler.to(1500);
    expect(h.panics).toEqual([
      { active: true, at: 750 },
      { active: false, at: 1500 },
    ]);
    expect(h.lb.panicking).toBe(false);
    expect(picked(h.lb, 40)).toEqual(['a', 'c']);
  });

  it('counts neither drained (markDown) nor weight-0 primaries, and never picks them in panic', async () => {
    const h = setup({
      backends: ['a', 'b', 'c', 'd', { id: 'z', weight: 0 }],
      active,
      panicThreshold: 0.5,
    });
    h.lb.markDown('a');
    h.lb.markDown('b');
    expect(h.lb.panicking).toBe(false); // c and d are all of P
    // Checks: a 0, b 200, c 400, d 600, z 800.
    h.probes.set('c', false);
    await h.scheduler.to(400);
    expect(h.lb.panicking).toBe(false); // 1 of 2
    h.probes.set('d', false);
    await h.scheduler.to(600);
    expect(h.panics).toEqual([{ active: true, at: 600 }]);
    expect(picked(h.lb, 40)).toEqual(['c', 'd']);
    expect(h.lb.stats().map((s) => s.pickable)).toEqual([false, false, true, true, false]);
  });

  it('panicThreshold 0 never panics: with every backend down, pick throws ERR_NO_BACKEND', async () => {
    const h = setup({ backends: ['a', 'b'], active, panicThreshold: 0, probeFallback: false });
    await h.scheduler.to(600);
    expect(h.lb.stats().map((s) => s.state)).toEqual(['down', 'down']);
    expect(h.lb.panicking).toBe(false);
    expect(h.panics).toEqual([]);
    expect(() => h.lb.pick()).toThrowError(expect.objectContaining({ code: 'ERR_NO_BACKEND' }));
  });

  it('panicThreshold 1 panics as soon as one primary is not pickable', async () => {
    const h = setup({ backends: ['a', 'b', 'c', 'd'], passive: { maxEjectedPercent: 100 }, panicThreshold: 1 });
    h.release('c', false, 5);
    expect(h.panics).toEqual([{ active: true, at: 0 }]);
    expect(picked(h.lb, 40)).toEqual(['a', 'b', 'c', 'd']);
    await h.scheduler.to(30_000);
    expect(h.panics).toEqual([
      { active: true, at: 0 },
      { active: false, at: 30_000 },
    ]);
  });

  it('the default threshold is 0.5', async () => {
    const scheduler = new FakeScheduler();
    const lb = createBalancer<Backend>({
      backends: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
      health: {},
      now: scheduler.now,
      timers: scheduler.timers,
    });
    lb.markDown('a');
    lb.markDown('b');
    expect(lb.panicking).toBe(false); // P = { c }
    const lb2 = createBalancer<Backend>({
      backends: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
      health: { passive: { maxEjectedPercent: 100 } },
      now: scheduler.now,
      timers: scheduler.timers,
    });
    for (const id of ['a', 'b']) {
      const exclude = new Set(['a', 'b', 'c'].filter((x) => x !== id));
      for (let i = 0; i < 5; i++) lb2.acquire({ exclude }).release({ ok: false });
      if (id === 'a') expect(lb2.panicking).toBe(false); // 2 of 3 >= 1.5
    }
    expect(lb2.panicking).toBe(true); // 1 of 3 < 1.5
  });

  it('below the threshold a healthy backup prevents panic, and is still used only when no primary can be picked', async () => {
    const h = setup({
      backends: ['a', 'b', 'c', 'd', { id: 'x', backup: true }, { id: 'y', backup: true }],
      active,
      panicThreshold: 0.5,
    });
    // Checks: a 0, b 166.7, c 333.3, d 500, x 666.7, y 833.3.
    expect(picked(h.lb, 60)).toEqual(['a', 'b', 'c', 'd']);
    h.probes.set('b', false);
    h.probes.set('c', false);
    h.probes.set('d', false);
    h.probes.set('y', false);
    await h.scheduler.to(1500);
    expect(h.lb.stats().map((s) => s.state)).toEqual(['healthy', 'down', 'down', 'down', 'healthy', 'down']);
    // 1 of 4 primaries is below the threshold, but backup x is healthy: no panic, and the one
    // healthy primary takes the traffic (HAProxy's backup rule); x serves only what a cannot.
    expect(h.lb.panicking).toBe(false);
    expect(h.panics).toEqual([]);
    expect(picked(h.lb, 60)).toEqual(['a']);
    expect(h.lb.pick({ exclude: new Set(['a']) }).id).toBe('x');
    // The last backup goes down too: now panic, over the primaries only.
    h.probes.set('x', false);
    await h.scheduler.to(1700);
    expect(h.panics).toEqual([{ active: true, at: h.probes.times('x')[1] }]);
    expect(h.probes.times('x')[1]).toBeCloseTo(1666.667, 2);
    expect(picked(h.lb, 60)).toEqual(['a', 'b', 'c', 'd']);
  });
});

// ---------------------------------------------------------------------------------------------
// markDown / markUp, events, stats

describe('markDown and markUp', () => {
  const active = { intervalMs: 1000, timeoutMs: 400, fall: 2, rise: 2 };

  it('markDown holds a backend down while its checks go on; only markUp brings it back', async () => {
    const h = setup({ backends: ['a', 'b'], active });
    await h.scheduler.to(100);
    h.lb.markDown('a');
    expect(h.take()).toEqual(['a:healthy>down:manual@100']);
    expect(h.stat('a')).toMatchObject({ state: 'down', manualDown: true, pickable: false });
    expect(picked(h.lb, 10)).toEqual(['b']);
    await h.scheduler.to(5000);
    expect(h.probes.times('a')).toEqual([0, 1000, 2000, 3000, 4000, 5000]);
    expect(h.stat('a')).toMatchObject({ state: 'down', consecutiveSuccesses: 6 });
    expect(h.take()).toEqual([]);
    h.lb.markUp('a');
    expect(h.take()).toEqual(['a:down>healthy:manual@5000']);
    expect(h.stat('a')).toMatchObject({ state: 'healthy', manualDown: false, pickable: true });
  });

  it('markUp clears a failed-check state; the next down takes fall new failures', async () => {
    const h = setup({ backends: ['a', 'b'], active });
    h.probes.set('a', false);
    await h.scheduler.to(1000);
    expect(h.take()).toEqual(['a:healthy>down:probe@1000']);
    h.lb.markUp('a');
    expect(h.take()).toEqual(['a:down>healthy:manual@1000']);
    expect(h.stat('a')).toMatchObject({ state: 'healthy', consecutiveFailures: 0 });
    await h.scheduler.to(2000);
    expect(h.state('a')).toBe('healthy');
    await h.scheduler.to(3000);
    expect(h.take()).toEqual(['a:healthy>down:probe@3000']);
  });

  it('markUp ends an ejection at once, and its timer with it', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: true });
    h.release('a', false, 5);
    await h.scheduler.to(1000);
    h.lb.markUp('a');
    expect(h.stat('a')).toMatchObject({ state: 'healthy', ejectedForMs: 0, ejections: 1 });
    expect(h.scheduler.pending).toBe(0);
    await h.scheduler.to(100_000);
    expect(h.take()).toEqual(['a:healthy>ejected:passive@0', 'a:ejected>healthy:manual@1000']);
  });

  it('markDown of an ejected backend holds it down past the end of the ejection', async () => {
    const h = setup({ backends: ['a', 'b', 'c'], passive: true });
    h.release('a', false, 5);
    h.lb.markDown('a');
    await h.scheduler.to(60_000);
    expect(h.stat('a')).toMatchObject({ state: 'down', ejectedForMs: 0 });
    h.lb.markUp('a');
    expect(h.take()).toEqual(['a:healthy>ejected:passive@0', 'a:ejected>down:manual@0', 'a:down>healthy:manual@60000']);
  });

  it('rejects an unknown id with ERR_INVALID_ARGUMENT', () => {
    const h = setup({ backends: ['a'] });
    expectInvalid(() => h.lb.markDown('nope'), 'id', '"nope"');
    expectInvalid(() => h.lb.markUp('nope'), 'id', '"nope"');
    expectInvalid(() => h.lb.markDown(''), 'id');
  });
});

describe('events', () => {
  it('carry the backend object, id, from, to, reason and the balancer clock', async () => {
    const h = setup({ backends: [{ id: 'a', weight: 3 }, 'b'], passive: true });
    await h.scheduler.to(1234);
    h.lb.markDown('a');
    expect(h.events).toEqual([
      { backend: h.lb.get('a'), id: 'a', from: 'healthy', to: 'down', reason: 'manual', at: 1234 },
    ]);
    expect(h.events[0]?.backend).toBe(h.lb.get('a'));
  });

  it('are not emitted for a non-transition', async () => {
    const h = setup({
      backends: ['a', 'b', 'c'],
      active: { intervalMs: 1000, timeoutMs: 400, fall: 2, rise: 2 },
      passive: { consecutiveFailures: 2 },
      slowStartMs: 1000,
    });
    h.lb.markUp('a'); // already healthy
    h.lb.markDown('a');
    h.lb.markDown('a'); // already drained
    expect(h.take()).toEqual(['a:healthy>down:manual@0']);
    h.probes.set('a', false);
    await h.scheduler.to(5000); // checks fail while drained: probe-down too, still 'down'
    expect(h.stat('a').consecutiveFailures).toBe(6);
    h.probes.set('a', true);
    await h.scheduler.to(9000); // and succeed: probe-up, still drained
    expect(h.take()).toEqual([]);
    // Ejected, then failures of requests still in flight, then checks that fail and succeed.
    const slots = h.hold('b', 6);
    for (const s of slots.slice(0, 2)) s.release({ ok: false });
    expect(h.take()).toEqual(['b:healthy>ejected:passive@9000']);
    for (const s of slots.slice(2)) s.release({ ok: false });
    expect(h.take()).toEqual([]);
    // A slow-start backend marked up stays in slow start, silently.
    h.lb.add({ id: 'd' });
    h.lb.markUp('d');
    expect(h.take()).toEqual([]);
    expect(h.state('d')).toBe('slow-start');
    // A listener added later sees only later transitions.
    const late: string[] = [];
    h.lb.on('health', (e) => late.push(`${e.id}:${e.to}`));
    await h.scheduler.to(10_000);
    expect(late).toEqual(['d:healthy']);
  });

  it('stop after unsubscribing', () => {
    const h = setup({ backends: ['a', 'b'] });
    const seen: string[] = [];
    const off = h.lb.on('health', (e) => seen.push(e.to));
    h.lb.markDown('a');
    off();
    h.lb.markUp('a');
    expect(seen).toEqual(['down']);
  });
});

describe('stats', () => {
  it('reports every health field, from rest to a check, an ejection and a drain', async () => {
    const h = setup({
      backends: ['a', 'b', 'c'],
      active: { intervalMs: 1000, timeoutMs: 400 },
      passive: true,
    });
    expect(h.stat('a')).toMatchObject({
      state: 'healthy',
      effectiveWeight: 1,
      manualDown: false,
      consecutiveSuccesses: 0,
      consecutiveFailures: 0,
      passiveFailures: 0,
      ejections: 0,
      ejectedForMs: 0,
      lastCheck: null,
      pickable: true,
    });
    await h.scheduler.to(10);
    expect(h.stat('a')).toMatchObject({ consecutiveSuccesses: 1, lastCheck: { ok: true, at: 0, durationMs: 0 } });
    h.release('b', false, 3);
    expect(h.stat('b').passiveFailures).toBe(3);
    h.release('b', false, 2);
    await h.scheduler.to(5010);
    expect(h.stat('b')).toMatchObject({ state: 'ejected', ejections: 1, ejectedForMs: 25_000, pickable: false });
    h.lb.markDown('c');
    expect(h.stat('c')).toMatchObject({ state: 'down', manualDown: true, pickable: false });
  });
});

// ---------------------------------------------------------------------------------------------
// close()

describe('close()', () => {
  it('clears every timer (checks, ejections, slow start) and aborts the checks in progress', async () => {
    const h = setup({
      backends: ['a', 'b', 'c', 'd'],
      active: { intervalMs: 1000, timeoutMs: 400 },
      passive: { maxEjectedPercent: 50 },
      slowStartMs: 5000,
    });
    h.probes.set('a', 'abortable');
    await h.scheduler.to(1500); // a's first check timed out at 400; the next, at 1400, is in flight
    h.lb.add({ id: 'e' }); // ramping
    h.release('b', false, 5); // ejected
    const inFlight = h.probes.last('a');
    expect(inFlight.signal.aborted).toBe(false);
    expect(h.scheduler.pending).toBeGreaterThan(4);
    h.lb.close();
    await h.scheduler.advance(0);
    expect(inFlight.signal.aborted).toBe(true);
    expect(h.scheduler.pending).toBe(0);
    // With no timer left, close() finishes the ramp and the ejection at once.
    expect(h.stat('e')).toMatchObject({ state: 'healthy', effectiveWeight: 1 });
    expect(h.stat('b')).toMatchObject({ state: 'healthy', ejectedForMs: 0 });
    const calls = h.probes.calls.length;
    h.take();
    await h.scheduler.advance(10 * 60_000);
    expect(h.probes.calls.length).toBe(calls);
    expect(h.take()).toEqual([]);
    // Picks keep working on the last known state; close is idempotent.
    expect(picked(h.lb, 100)).toEqual(['a', 'b', 'c', 'd', 'e']);
    h.lb.close();
    expect(h.scheduler.pending).toBe(0);
  });

  it('is what Symbol.dispose does', async () => {
    const h = setup({ backends: ['a', 'b'], active: { intervalMs: 1000, timeoutMs: 400 } });
    {
      using lb = h.lb;
      expect(lb.algorithm).toBe('round-robin');
    }
    expect(h.scheduler.pending).toBe(0);
    await h.scheduler.advance(10_000);
    expect(h.probes.calls).toEqual([]);
  });

  it('aborts a check in progress whose probe ignores the signal, and runs no check after it', async () => {
    const h = setup({ backends: ['a'], active: { intervalMs: 1000, timeoutMs: 400 } });
    h.probes.set('a', 'hang');
    await h.scheduler.to(100);
    const hung = h.probes.last('a');
    h.lb.close();
    expect(hung.signal.aborted).toBe(true);
    expect(h.scheduler.pending).toBe(0);
    await h.scheduler.advance(10_000);
    hung.resolve(true);
    await h.scheduler.advance(10_000);
    expect(h.probes.times('a')).toEqual([0]);
    expect(h.take()).toEqual([]);
    expect(h.stat('a').lastCheck).toBeNull();
  });

  it('removing a backend stops its checks and aborts the one in progress', async () => {
    const h = setup({ backends: ['a', 'b'], active: { intervalMs: 1000, timeoutMs: 400 } });
    h.probes.set('a', 'abortable');
    await h.scheduler.to(100);
    const inFlight = h.probes.last('a');
    h.lb.remove('a');
    await h.scheduler.advance(0);
    expect(inFlight.signal.aborted).toBe(true);
    await h.scheduler.to(10_000);
    expect(h.probes.times('a')).toEqual([0]);
    expect(h.scheduler.pendingDue()).toEqual([10_500]); // b's next check only
  });
});

// ---------------------------------------------------------------------------------------------
// Validation

describe('invalid health options', () => {
  const probe = () => true;
  it.each<[string, string, unknown, string?]>([
    ['health not an object', 'options.health', 'yes', '"yes"'],
    ['unknown key', 'options.health.retries', { active: { probe }, retries: 3 }],
    ['active not an object', 'options.health.active', { active: true }, 'true'],
    ['probe missing', 'options.health.active.probe', { active: {} }, 'undefined'],
    ['probe not a function', 'options.health.active.probe', { active: { probe: 'GET /' } }, '"GET /"'],
    ['active unknown key', 'options.health.active.interval', { active: { probe, interval: 5 } }],
    ['intervalMs 0', 'options.health.active.intervalMs', { active: { probe, intervalMs: 0 } }, '0'],
    ['intervalMs NaN', 'options.health.active.intervalMs', { active: { probe, intervalMs: Number.NaN } }, 'NaN'],
    [
      'timeoutMs = intervalMs',
      'options.health.active.timeoutMs',
      { active: { probe, intervalMs: 1000, timeoutMs: 1000 } },
      '1000',
    ],
    [
      'timeoutMs > intervalMs',
      'options.health.active.timeoutMs',
      { active: { probe, intervalMs: 500, timeoutMs: 800 } },
      '800',
    ],
    [
      'timeoutMs >= default intervalMs',
      'options.health.active.timeoutMs',
      { active: { probe, timeoutMs: 2000 } },
      '2000',
    ],
    ['timeoutMs negative', 'options.health.active.timeoutMs', { active: { probe, timeoutMs: -1 } }, '-1'],
    ['rise 0', 'options.health.active.rise', { active: { probe, rise: 0 } }, '0'],
    ['rise 1.5', 'options.health.active.rise', { active: { probe, rise: 1.5 } }, '1.5'],
    ['fall -1', 'options.health.active.fall', { active: { probe, fall: -1 } }, '-1'],
    ['fall "3"', 'options.health.active.fall', { active: { probe, fall: '3' } }, '"3"'],
    ['jitter 1', 'options.health.active.jitter', { active: { probe, jitter: 1 } }, '1'],
    ['jitter -0.1', 'options.health.active.jitter', { active: { probe, jitter: -0.1 } }, '-0.1'],
    ['startDown "yes"', 'options.health.active.startDown', { active: { probe, startDown: 'yes' } }, '"yes"'],
    ['passive a string', 'options.health.passive', { passive: 'on' }, '"on"'],
    ['passive unknown key', 'options.health.passive.ejectionMs', { passive: { ejectionMs: 5 } }],
    [
      'consecutiveFailures 0',
      'options.health.passive.consecutiveFailures',
      { passive: { consecutiveFailures: 0 } },
      '0',
    ],
    ['baseEjectionMs -1', 'options.health.passive.baseEjectionMs', { passive: { baseEjectionMs: -1 } }, '-1'],
    [
      'maxEjectionMs < base',
      'options.health.passive.maxEjectionMs',
      { passive: { baseEjectionMs: 1000, maxEjectionMs: 999 } },
      '999',
    ],
    [
      'maxEjectedPercent 101',
      'options.health.passive.maxEjectedPercent',
      { passive: { maxEjectedPercent: 101 } },
      '101',
    ],
    ['maxEjectedPercent -1', 'options.health.passive.maxEjectedPercent', { passive: { maxEjectedPercent: -1 } }, '-1'],
    ['panicThreshold 1.5', 'options.health.panicThreshold', { panicThreshold: 1.5 }, '1.5'],
    ['panicThreshold -0.1', 'options.health.panicThreshold', { panicThreshold: -0.1 }, '-0.1'],
    ['slowStartMs -1', 'options.health.slowStartMs', { slowStartMs: -1 }, '-1'],
    ['slowStartMs Infinity', 'options.health.slowStartMs', { slowStartMs: Number.POSITIVE_INFINITY }, 'Infinity'],
    ['slowStartAggression 0', 'options.health.slowStartAggression', { slowStartAggression: 0 }, '0'],
  ])('%s -> ERR_INVALID_ARGUMENT naming %s', (_label, field, health, received) => {
    const scheduler = new FakeScheduler();
    expectInvalid(
      () =>
        createBalancer<Backend>({
          backends: [{ id: 'a' }],
          health: health as Health,
          now: scheduler.now,
          timers: scheduler.timers,
        }),
      field,
      received,
    );
    expect(scheduler.pending).toBe(0); // a failed call schedules nothing
  });

  it('rejects timers that are not a pair of functions', () => {
    expectInvalid(() => createBalancer({ backends: [], timers: { setTimeout: () => 0 } as never }), 'options.timers');
  });

  it.each<[string, Health]>([
    ['rise and fall 1', { active: { probe, rise: 1, fall: 1 } }],
    ['timeoutMs just below intervalMs', { active: { probe, intervalMs: 1000, timeoutMs: 999 } }],
    ['jitter 0.99 and startDown', { active: { probe, jitter: 0.99, startDown: true } }],
    ['maxEjectedPercent 0', { passive: { maxEjectedPercent: 0 } }],
    ['maxEjectedPercent 100', { passive: { maxEjectedPercent: 100, maxEjectionMs: 30_000 } }],
    ['passive false', { passive: false }],
    ['panicThreshold 0', { panicThreshold: 0 }],
    ['panicThreshold 1', { panicThreshold: 1 }],
    ['slowStartMs 0', { slowStartMs: 0, slowStartAggression: 0.5 }],
    ['an empty object', {}],
  ])('accepts %s', (_label, health) => {
    const scheduler = new FakeScheduler();
    const lb = createBalancer<Backend>({
      backends: [{ id: 'a' }],
      health,
      now: scheduler.now,
      timers: scheduler.timers,
    });
    lb.close();
    expect(scheduler.pending).toBe(0);
  });
});
