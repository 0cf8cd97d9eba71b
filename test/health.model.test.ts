/**
 * Model-based test of health tracking (DESIGN.md section 4) with fast-check `commands`.
 *
 * The commands: set what a backend's next checks return (true, false, a throw, a rejection, or a
 * promise that hangs until the test settles it), settle a hung check, acquire and release requests
 * with ok true / false, advance the clock, markDown / markUp, add and remove backends. At the end
 * of every run the balancer is closed.
 *
 * The model is a small discrete-event simulation of the state machine, written from the rules:
 * a backend's state follows from its flags (manual drain or failed checks -> down; else an ejection
 * that lasts -> ejected; else a ramp -> slow-start; else healthy); checks run every intervalMs
 * after the previous one ends (first at i/n x intervalMs, or random() x intervalMs for a backend
 * added later), fail on false, a throw, a rejection, a timeout or a previous check still pending;
 * fall / rise consecutive results flip the check state; consecutiveFailures failed releases eject
 * for min(base x level, max) within maxEjectedPercent; the ramp advances in ticks of
 * max(slowStartMs / 20, 10) ms; panic and backups follow panicThreshold. The model keeps its own
 * timers on a second fake scheduler, so events due at the same instant run in creation order, as
 * the balancer's timers do on the real fake scheduler.
 *
 * After every command: each backend's stats (state, manualDown, consecutive counters, passive
 * failures, ejections, ejectedForMs, lastCheck, effectiveWeight, pickable, inFlight), the health
 * and panic events emitted since the previous command, the probe calls made, `panicking`, and
 * picks (every pick is a backend the model allows). Invariants checked on the system alone: a
 * down or ejected backend is never picked outside panic; an ejection never leaves more than
 * maxEjectedPercent of the pool ejected, except a single one; every event is a change of state
 * that continues the backend's previous state (at most one event per transition); a check that
 * timed out has its signal aborted. After close(): no timer remains, every check in progress is
 * aborted, and an hour later no probe ran and no event fired.
 *
 * Reproducible: pinned fast-check seed, a constant `random`, and injected `now` and `timers`.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BackendSpec,
  type Balancer,
  createBalancer,
  type HealthState,
  isFairpickError,
  type Slot,
} from '../src/index.js';
import { Scheduler as FakeScheduler } from './support/fake-time.js';

// ---------------------------------------------------------------------------------------------
// Fake scheduler (shared by the system and, separately, by the model)

/** Lets the probes' promise reactions run (each needs one or two microtask turns). */
async function flush(): Promise<void> {
  for (let i = 0; i < 6; i++) await Promise.resolve();
}

// ---------------------------------------------------------------------------------------------
// Configuration

const IDS = ['a', 'b', 'c', 'd', 'e', 'f', 'g'] as const;
const INTERVAL_MS = 1000;
const TIMEOUT_MS = 400;
const RISE = 2;
const FALL = 2;
const CONSECUTIVE_FAILURES = 3;
const BASE_EJECTION_MS = 3000;
const MAX_EJECTION_MS = 9000;
const PICKS_PER_STEP = 24;

interface Spec extends BackendSpec {
  readonly id: string;
  readonly weight: number;
  readonly backup: boolean;
}

interface Config {
  readonly initial: readonly Spec[];
  readonly maxEjectedPercent: number;
  readonly panicThreshold: number;
  /** 0 (off) or a ramp time; the ramp advances in ticks of max(slowStartMs / 20, 10) ms. */
  readonly slowStartMs: number;
  readonly aggression: number;
  /** The constant `random()`: a backend added later is first checked random() x intervalMs after. */
  readonly random: number;
}

type Mode = boolean | 'throw' | 'reject' | 'hang';

// ---------------------------------------------------------------------------------------------
// The model

interface LastCheck {
  readonly ok: boolean;
  readonly at: number;
  readonly durationMs: number;
}

/** A check whose probe hangs until the test settles it. */
interface HungCall {
  readonly owner: MB;
  readonly start: number;
  /** Index in the list of all probe calls (the same in the system's list). */
  readonly index: number;
  timeoutTimer: unknown;
  timedOut: boolean;
  settled: boolean;
  /** Its signal must be aborted by now (timeout, removal or close). */
  aborted: boolean;
}

/** One backend of the model. */
interface MB {
  readonly id: string;
  readonly weight: number;
  readonly backup: boolean;
  attached: boolean;
  state: HealthState;
  manualDown: boolean;
  probeDown: boolean;
  ejectedUntil: number;
  ejectionLevel: number;
  restoredAt: number | undefined;
  ejections: number;
  passiveFailures: number;
  consecutiveSuccesses: number;
  consecutiveFailures: number;
  rampStart: number | undefined;
  rampFactor: number;
  lastCheck: LastCheck | null;
  checkTimer: unknown;
  ejectionTimer: unknown;
  /** A probe call has not settled yet. */
  pending: boolean;
  /** The check in progress (a hung probe within its timeout). */
  inFlight: HungCall | undefined;
  /** Requests acquired and not released. */
  inFlightRequests: number;
}

class Model {
  readonly scheduler = new FakeScheduler();
  readonly backends = new Map<string, MB>();
  readonly modes = new Map<string, Mode>();
  readonly hung: HungCall[] = [];
  panic = false;
  closed = false;
  probeCalls = 0;
  /** Since the last verification. */
  healthEvents: string[] = [];
  panicEvents: string[] = [];
  calls: string[] = [];
  private rampTimer: unknown;

  constructor(readonly config: Config) {
    const n = config.initial.length;
    config.initial.forEach((spec, i) => {
      const b = this.create(spec);
      this.backends.set(spec.id, b);
      this.schedule(b, (i / n) * INTERVAL_MS);
    });
    this.panic = this.tiers().panic;
  }

  get now(): number {
    return this.scheduler.clock;
  }

  advance(ms: number): void {
    this.scheduler.advanceSync(ms);
  }

  // --- membership and operators

  add(spec: Spec): void {
    const b = this.create(spec);
    this.backends.set(spec.id, b);
    this.schedule(b, this.config.random * INTERVAL_MS);
    this.startRamp(b); // joins a running pool: slow start
    b.state = this.derive(b);
    this.recomputePanic();
  }

  remove(id: string): void {
    const b = this.get(id);
    this.backends.delete(id);
    b.attached = false;
    this.scheduler.timers.clearTimeout(b.checkTimer);
    if (b.inFlight !== undefined) b.inFlight.aborted = true; // its timeout timer stays (see close)
    this.scheduler.timers.clearTimeout(b.ejectionTimer);
    this.recomputePanic();
  }

  markDown(id: string): void {
    const b = this.get(id);
    b.manualDown = true;
    this.update(b, 'manual');
  }

  markUp(id: string): void {
    const b = this.get(id);
    const wasUp = b.state === 'healthy' || b.state === 'slow-start';
    b.manualDown = false;
    b.probeDown = false;
    b.consecutiveFailures = 0;
    this.endEjection(b);
    if (!wasUp) this.startRamp(b);
    this.update(b, 'manual');
  }

  /** A request on `b` ended with `ok`. */
  release(b: MB, ok: boolean): void {
    b.inFlightRequests--;
    if (this.closed) return;
    if (ok) {
      b.passiveFailures = 0;
      return;
    }
    b.passiveFailures++;
    if (b.passiveFailures < CONSECUTIVE_FAILURES) return;
    b.passiveFailures = 0; // restarts whether or not this ejects
    if (b.state !== 'healthy' && b.state !== 'slow-start') return;
    if (!this.mayEject()) return;
    if (b.restoredAt !== undefined) {
      const earned = Math.floor((this.now - b.restoredAt) / BASE_EJECTION_MS);
      b.ejectionLevel = Math.max(0, b.ejectionLevel - earned);
    }
    b.ejectionLevel++;
    b.ejections++;
    const duration = Math.min(BASE_EJECTION_MS * b.ejectionLevel, MAX_EJECTION_MS);
    b.ejectedUntil = this.now + duration;
    b.ejectionTimer = this.scheduler.timers.setTimeout(() => this.restore(b), duration);
    this.update(b, 'passive');
  }

  /** Settles the oldest hung probe of `id`. */
  settle(id: string, ok: boolean): void {
    const call = this.hung.find((c) => c.owner.id === id && !c.settled);
    if (call === undefined) return;
    call.settled = true;
    const b = call.owner;
    b.pending = false;
    count(call.timedOut ? 'settled after its timeout' : 'settled within its timeout');
    if (call.timedOut) return; // too late: its check already failed
    this.scheduler.timers.clearTimeout(call.timeoutTimer);
    b.inFlight = undefined;
    if (this.closed || !b.attached) return;
    this.result(b, ok, this.now - call.start);
    this.schedule(b, INTERVAL_MS);
  }

  close(): void {
    this.closed = true;
    for (const b of this.backends.values()) {
      this.scheduler.timers.clearTimeout(b.checkTimer);
      if (b.inFlight !== undefined) b.inFlight.aborted = true;
      this.scheduler.timers.clearTimeout(b.ejectionTimer);
    }
    this.scheduler.timers.clearTimeout(this.rampTimer);
    this.rampTimer = undefined;
  }

  // --- what can be picked

  tiers(): { panic: boolean; pickable: Set<string>; picks: Set<string> } {
    const all = [...this.backends.values()];
    const takes = (b: MB) => b.weight * b.rampFactor > 0 && (b.state === 'healthy' || b.state === 'slow-start');
    const counted = all.filter((b) => !b.backup && b.weight > 0 && !b.manualDown);
    const primaries = all.filter((b) => !b.backup && takes(b));
    const backups = all.filter((b) => b.backup && takes(b));
    const ids = (bs: MB[]) => new Set(bs.map((b) => b.id));
    // Panic only when no backup is healthy: backups come first, and still only when no primary can be picked.
    if (counted.length > 0 && primaries.length < this.config.panicThreshold * counted.length && backups.length === 0) {
      const everyone = ids(counted);
      return { panic: true, pickable: everyone, picks: everyone };
    }
    return {
      panic: false,
      pickable: ids([...primaries, ...backups]),
      picks: primaries.length > 0 ? ids(primaries) : ids(backups),
    };
  }

  get(id: string): MB {
    const b = this.backends.get(id);
    if (b === undefined) throw new Error(`model: no backend ${id}`);
    return b;
  }

  // --- the state machine

  private create(spec: Spec): MB {
    return {
      id: spec.id,
      weight: spec.weight,
      backup: spec.backup,
      attached: true,
      state: 'healthy',
      manualDown: false,
      probeDown: false,
      ejectedUntil: 0,
      ejectionLevel: 0,
      restoredAt: undefined,
      ejections: 0,
      passiveFailures: 0,
      consecutiveSuccesses: 0,
      consecutiveFailures: 0,
      rampStart: undefined,
      rampFactor: 1,
      lastCheck: null,
      checkTimer: undefined,
      ejectionTimer: undefined,
      pending: false,
      inFlight: undefined,
      inFlightRequests: 0,
    };
  }

  private derive(b: MB): HealthState {
    if (b.manualDown || b.probeDown) return 'down';
    if (b.ejectedUntil > 0) return 'ejected';
    if (b.rampStart !== undefined) return 'slow-start';
    return 'healthy';
  }

  private update(b: MB, reason: string): void {
    const from = b.state;
    const to = this.derive(b);
    if (to !== from) {
      b.state = to;
      this.healthEvents.push(`${b.id}:${from}>${to}:${reason}@${this.now}`);
    }
    this.recomputePanic();
  }

  private recomputePanic(): void {
    const { panic } = this.tiers();
    if (panic === this.panic) return;
    this.panic = panic;
    this.panicEvents.push(`${panic}@${this.now}`);
  }

  private mayEject(): boolean {
    const total = this.backends.size;
    const ejected = [...this.backends.values()].filter((b) => b.ejectedUntil > 0).length;
    return (ejected + 1) * 100 <= this.config.maxEjectedPercent * total || (ejected === 0 && total >= 2);
  }

  private restore(b: MB): void {
    b.ejectionTimer = undefined;
    if (this.closed) return;
    this.endEjection(b);
    if (!b.manualDown && !b.probeDown) this.startRamp(b);
    this.update(b, 'recovered');
  }

  private endEjection(b: MB): void {
    if (b.ejectedUntil === 0) return;
    this.scheduler.timers.clearTimeout(b.ejectionTimer);
    b.ejectionTimer = undefined;
    b.ejectedUntil = 0;
    b.restoredAt = this.now;
  }

  private schedule(b: MB, ms: number): void {
    b.checkTimer = this.scheduler.timers.setTimeout(() => this.check(b), ms);
  }

  private check(b: MB): void {
    if (this.closed || !b.attached) return;
    if (b.pending) {
      // The previous probe has still not settled: this check fails without a second probe.
      count('check while a probe is pending');
      this.result(b, false, 0);
      this.schedule(b, INTERVAL_MS);
      return;
    }
    const mode = this.modes.get(b.id) ?? true;
    const start = this.now;
    const index = this.probeCalls++;
    this.calls.push(`${b.id}@${start}`);
    const call: HungCall = {
      owner: b,
      start,
      index,
      timeoutTimer: undefined,
      timedOut: false,
      settled: false,
      aborted: false,
    };
    call.timeoutTimer = this.scheduler.timers.setTimeout(() => this.timeout(call), TIMEOUT_MS);
    if (mode === 'hang') {
      b.pending = true;
      b.inFlight = call;
      this.hung.push(call);
      return;
    }
    this.scheduler.timers.clearTimeout(call.timeoutTimer);
    this.result(b, mode === true, 0);
    this.schedule(b, INTERVAL_MS);
  }

  private timeout(call: HungCall): void {
    call.timedOut = true;
    call.aborted = true;
    count('check timed out');
    const b = call.owner;
    if (b.inFlight === call) b.inFlight = undefined;
    if (this.closed || !b.attached) return;
    this.result(b, false, this.now - call.start);
    this.schedule(b, INTERVAL_MS);
  }

  private result(b: MB, ok: boolean, durationMs: number): void {
    b.lastCheck = { ok, at: this.now, durationMs };
    if (ok) {
      b.consecutiveSuccesses++;
      b.consecutiveFailures = 0;
      if (b.probeDown && b.consecutiveSuccesses >= RISE) {
        b.probeDown = false;
        if (!b.manualDown && b.ejectedUntil === 0) this.startRamp(b);
        this.update(b, 'probe');
      }
    } else {
      b.consecutiveFailures++;
      b.consecutiveSuccesses = 0;
      if (!b.probeDown && b.consecutiveFailures >= FALL) {
        b.probeDown = true;
        b.rampStart = undefined; // a backend that fails its checks stops ramping
        b.rampFactor = 1;
        this.update(b, 'probe');
      }
    }
  }

  private startRamp(b: MB): void {
    if (this.config.slowStartMs <= 0) return;
    b.rampStart = this.now;
    b.rampFactor = 0.1;
    this.ensureRampTimer();
  }

  private ensureRampTimer(): void {
    if (this.rampTimer !== undefined || this.closed) return;
    this.rampTimer = this.scheduler.timers.setTimeout(
      () => {
        this.rampTimer = undefined;
        this.rampTick();
      },
      Math.max(this.config.slowStartMs / 20, 10),
    );
  }

  private rampTick(): void {
    if (this.closed) return;
    let ramping = false;
    for (const b of this.backends.values()) {
      if (b.rampStart === undefined) continue;
      const t = (this.now - b.rampStart) / this.config.slowStartMs;
      if (t >= 1) {
        b.rampStart = undefined;
        b.rampFactor = 1;
        this.update(b, 'recovered');
        continue;
      }
      b.rampFactor = 0.1 + 0.9 * Math.max(0, t) ** (1 / this.config.aggression);
      ramping = true;
    }
    if (ramping) this.ensureRampTimer();
  }
}

// ---------------------------------------------------------------------------------------------
// The system

interface ProbeCall {
  readonly id: string;
  readonly at: number;
  readonly signal: AbortSignal;
  readonly hangs: boolean;
  settled: boolean;
  resolve(ok: boolean): void;
}

class Real {
  readonly scheduler = new FakeScheduler();
  readonly calls: ProbeCall[] = [];
  readonly modes = new Map<string, Mode>();
  readonly lb: Balancer<Spec>;
  readonly slots = new Map<string, Slot<Spec>[]>();
  healthEvents: { id: string; from: HealthState; to: HealthState; text: string }[] = [];
  panicEvents: string[] = [];
  /** How many probe calls the previous verification saw. */
  seenCalls = 0;
  /** Each backend's state at the previous verification. */
  states = new Map<string, HealthState>();

  constructor(config: Config) {
    this.lb = createBalancer<Spec>({
      algorithm: 'round-robin',
      backends: config.initial,
      now: this.scheduler.now,
      timers: this.scheduler.timers,
      random: () => config.random,
      health: {
        active: { probe: this.probe, intervalMs: INTERVAL_MS, timeoutMs: TIMEOUT_MS, rise: RISE, fall: FALL },
        passive: {
          consecutiveFailures: CONSECUTIVE_FAILURES,
          baseEjectionMs: BASE_EJECTION_MS,
          maxEjectionMs: MAX_EJECTION_MS,
          maxEjectedPercent: config.maxEjectedPercent,
        },
        slowStartMs: config.slowStartMs,
        slowStartAggression: config.aggression,
        panicThreshold: config.panicThreshold,
      },
    });
    this.lb.on('health', (e) =>
      this.healthEvents.push({
        id: e.id,
        from: e.from,
        to: e.to,
        text: `${e.id}:${e.from}>${e.to}:${e.reason}@${e.at}`,
      }),
    );
    this.lb.on('panic', (e) => this.panicEvents.push(`${e.active}@${e.at}`));
    for (const s of this.lb.stats()) this.states.set(s.id, s.state);
  }

  readonly probe = (backend: Spec, signal: AbortSignal): boolean | Promise<boolean> => {
    const mode = this.modes.get(backend.id) ?? true;
    const call: ProbeCall = {
      id: backend.id,
      at: this.scheduler.clock,
      signal,
      hangs: mode === 'hang',
      settled: mode !== 'hang',
      resolve: () => {},
    };
    this.calls.push(call);
    if (mode === 'throw') throw new Error('probe exploded');
    if (mode === 'reject') return Promise.reject(new Error('connection refused'));
    if (mode !== 'hang') return mode;
    return new Promise<boolean>((resolve) => {
      call.resolve = resolve; // ignores the signal, as a careless probe would
    });
  };

  /** Acquires a request on `id` alone (every other backend excluded). */
  acquire(id: string): Slot<Spec> {
    const exclude = new Set(this.lb.backends.map((b) => b.id).filter((x) => x !== id));
    return this.lb.acquire({ exclude });
  }
}

// ---------------------------------------------------------------------------------------------
// Verification

function fail(message: string): never {
  expect.fail(message);
}

function close(a: number, b: number): boolean {
  return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));
}

/** How often each transition, panic change and check path occurred over the whole run. */
const coverage = new Map<string, number>();
const count = (key: string): void => {
  coverage.set(key, (coverage.get(key) ?? 0) + 1);
};
function verify(m: Model, r: Real): void {
  // Stats against the model.
  const stats = r.lb.stats();
  const { panic, pickable, picks } = m.tiers();
  const ids = stats.map((s) => s.id);
  const modelIds = [...m.backends.keys()];
  if (ids.join() !== modelIds.join()) expect(ids).toEqual(modelIds);
  for (const s of stats) {
    const b = m.get(s.id);
    const expected = {
      state: b.state,
      manualDown: b.manualDown,
      consecutiveSuccesses: b.consecutiveSuccesses,
      consecutiveFailures: b.consecutiveFailures,
      passiveFailures: b.passiveFailures,
      ejections: b.ejections,
      pickable: pickable.has(b.id),
      inFlight: b.inFlightRequests,
    };
    const actual = {
      state: s.state,
      manualDown: s.manualDown,
      consecutiveSuccesses: s.consecutiveSuccesses,
      consecutiveFailures: s.consecutiveFailures,
      passiveFailures: s.passiveFailures,
      ejections: s.ejections,
      pickable: s.pickable,
      inFlight: s.inFlight,
    };
    if (JSON.stringify(actual) !== JSON.stringify(expected))
      expect({ id: s.id, ...actual }).toEqual({ id: s.id, ...expected });
    const ejectedForMs = b.ejectedUntil > 0 ? Math.max(0, b.ejectedUntil - m.now) : 0;
    if (!close(s.ejectedForMs, ejectedForMs)) fail(`${s.id}: ejectedForMs ${s.ejectedForMs}, model ${ejectedForMs}`);
    const weight = b.weight * b.rampFactor;
    if (!close(s.effectiveWeight, weight)) fail(`${s.id}: effectiveWeight ${s.effectiveWeight}, model ${weight}`);
    const lc = s.lastCheck;
    const mlc = b.lastCheck;
    const same =
      (lc === null && mlc === null) ||
      (lc !== null && mlc !== null && lc.ok === mlc.ok && close(lc.at, mlc.at) && close(lc.durationMs, mlc.durationMs));
    if (!same) expect({ id: s.id, lastCheck: lc }).toEqual({ id: s.id, lastCheck: mlc });
  }

  // Events and probe calls since the previous step.
  const health = r.healthEvents.map((e) => e.text);
  if (health.join() !== m.healthEvents.join()) expect(health).toEqual(m.healthEvents);
  if (r.panicEvents.join() !== m.panicEvents.join()) expect(r.panicEvents).toEqual(m.panicEvents);
  if (r.lb.panicking !== panic) fail(`panicking ${r.lb.panicking}, model ${panic}`);
  const calls = r.calls.slice(r.seenCalls).map((c) => `${c.id}@${c.at}`);
  if (calls.join() !== m.calls.join()) expect(calls).toEqual(m.calls);

  // Invariants on the system alone: each event changes the state its backend was in.
  for (const e of r.healthEvents) {
    if (e.from === e.to) fail(`event without a change: ${e.text}`);
    const before = r.states.get(e.id);
    if (before !== undefined && before !== e.from) fail(`event ${e.text} does not continue state ${before}`);
    r.states.set(e.id, e.to);
  }
  for (const s of stats) {
    const before = r.states.get(s.id);
    if (before !== undefined && before !== s.state) fail(`${s.id} went ${before} -> ${s.state} without an event`);
  }
  r.states = new Map(stats.map((s) => [s.id, s.state]));
  // A check that timed out, or was aborted by a removal, has its signal aborted.
  for (const c of m.hung) {
    if (c.aborted && !r.calls[c.index]?.signal.aborted) fail(`probe call ${c.index} of ${c.owner.id} not aborted`);
  }

  // Picks: only what the model allows; never a down or ejected backend outside panic.
  const state = new Map(stats.map((s) => [s.id, s.state]));
  if (picks.size === 0) {
    let error: unknown;
    try {
      r.lb.pick();
    } catch (e) {
      error = e;
    }
    if (!isFairpickError(error, 'ERR_NO_BACKEND')) fail(`pick should throw ERR_NO_BACKEND, got ${String(error)}`);
  } else {
    for (let i = 0; i < PICKS_PER_STEP; i++) {
      const id = r.lb.pick().id;
      if (!picks.has(id)) fail(`picked ${id}; the model allows ${[...picks].join(', ')}`);
      const st = state.get(id);
      if (!r.lb.panicking && st !== 'healthy' && st !== 'slow-start') fail(`picked ${id} (${st}) outside panic`);
    }
  }

  for (const e of r.healthEvents) count(e.text.replace(/^[a-z]+:/, '').replace(/@.*/, ''));
  for (const p of r.panicEvents) count(`panic ${p.split('@')[0]}`);
  count('steps');
  r.healthEvents = [];
  r.panicEvents = [];
  r.seenCalls = r.calls.length;
  m.healthEvents = [];
  m.panicEvents = [];
  m.calls = [];
}

// ---------------------------------------------------------------------------------------------
// Commands. Targets are chosen by index among the ids present when the command runs.

type Cmd = fc.AsyncCommand<Model, Real>;

const present = (m: Model): string[] => [...m.backends.keys()].sort();
const absent = (m: Model): string[] => IDS.filter((id) => !m.backends.has(id));
const nth = <T>(xs: readonly T[], i: number): T => xs[i % xs.length] as T;

class Advance implements Cmd {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    m.advance(this.ms);
    await r.scheduler.advance(this.ms);
    verify(m, r);
  }
  toString = () => `advance(${this.ms})`;
}

class SetProbe implements Cmd {
  constructor(
    readonly index: number,
    readonly mode: Mode,
  ) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    m.modes.set(id, this.mode);
    r.modes.set(id, this.mode);
    verify(m, r);
  }
  toString = () => `probe(#${this.index}) = ${String(this.mode)}`;
}

class Settle implements Cmd {
  constructor(
    readonly index: number,
    readonly ok: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.hung.some((c) => !c.settled);
  async run(m: Model, r: Real): Promise<void> {
    const ids = [...new Set(m.hung.filter((c) => !c.settled).map((c) => c.owner.id))].sort();
    const id = nth(ids, this.index);
    m.settle(id, this.ok);
    const call = r.calls.find((c) => c.id === id && c.hangs && !c.settled);
    if (call === undefined) fail(`no hung probe of ${id} to settle`);
    call.settled = true;
    call.resolve(this.ok);
    await flush();
    verify(m, r);
  }
  toString = () => `settle(#${this.index}, ${this.ok})`;
}

/** Acquires a request on one backend and keeps it in flight. */
class Hold implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    acquire(m, r, id);
    verify(m, r);
  }
  toString = () => `hold(#${this.index})`;
}

/**
 * Ends `count` requests on one backend (those held before first, then new ones while it can be
 * acquired) with ok true or false.
 */
class Release implements Cmd {
  constructor(
    readonly index: number,
    readonly ok: boolean,
    readonly count: number,
  ) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    for (let k = 0; k < this.count; k++) {
      const held = r.slots.get(id) ?? [];
      const slot = held.shift() ?? acquire(m, r, id, false);
      if (slot === undefined) break;
      const ejectionsBefore = r.lb.stats().reduce((n, s) => n + s.ejections, 0);
      m.release(m.get(id), this.ok);
      if (slot.release({ ok: this.ok }) !== true) fail('release returned false');
      const after = r.lb.stats();
      if (after.reduce((n, s) => n + s.ejections, 0) > ejectionsBefore) {
        // An ejection happened: within maxEjectedPercent of the pool, or the only one.
        const ejected = after.filter((s) => s.ejectedForMs > 0).length;
        if (!(ejected * 100 <= m.config.maxEjectedPercent * after.length || ejected === 1)) {
          fail(`${ejected} of ${after.length} ejected with maxEjectedPercent ${m.config.maxEjectedPercent}`);
        }
      }
    }
    verify(m, r);
  }
  toString = () => `release(#${this.index}, ok: ${this.ok}, x${this.count})`;
}

/** Acquires a request on `id`; it must succeed exactly when the model calls `id` pickable. */
function acquire(m: Model, r: Real, id: string, keep = true): Slot<Spec> | undefined {
  const expected = m.tiers().pickable.has(id);
  let slot: Slot<Spec> | undefined;
  let error: unknown;
  try {
    slot = r.acquire(id);
  } catch (e) {
    error = e;
  }
  if (!expected) {
    if (!isFairpickError(error, 'ERR_NO_BACKEND'))
      fail(`acquire(${id}) should throw ERR_NO_BACKEND, got ${String(error)}`);
    return undefined;
  }
  if (slot === undefined) fail(`acquire(${id}) failed: ${String(error)}`);
  if (slot.backend.id !== id) fail(`acquire(${id}) returned ${slot.backend.id}`);
  m.get(id).inFlightRequests++;
  if (keep) {
    const held = r.slots.get(id) ?? [];
    held.push(slot);
    r.slots.set(id, held);
  }
  return slot;
}

class MarkDown implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    m.markDown(id);
    r.lb.markDown(id);
    verify(m, r);
  }
  toString = () => `markDown(#${this.index})`;
}

class MarkUp implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    m.markUp(id);
    r.lb.markUp(id);
    verify(m, r);
  }
  toString = () => `markUp(#${this.index})`;
}

class Add implements Cmd {
  constructor(
    readonly index: number,
    readonly weight: number,
    readonly backup: boolean,
  ) {}
  check = (m: Readonly<Model>) => m.backends.size < IDS.length;
  async run(m: Model, r: Real): Promise<void> {
    const spec: Spec = { id: nth(absent(m), this.index), weight: this.weight, backup: this.backup };
    m.add(spec);
    r.lb.add(spec);
    r.states.set(spec.id, r.lb.stats().find((s) => s.id === spec.id)?.state ?? 'healthy');
    verify(m, r);
  }
  toString = () => `add(#${this.index}, weight ${this.weight}${this.backup ? ', backup' : ''})`;
}

class Remove implements Cmd {
  constructor(readonly index: number) {}
  check = (m: Readonly<Model>) => m.backends.size > 0;
  async run(m: Model, r: Real): Promise<void> {
    const id = nth(present(m), this.index);
    m.remove(id);
    r.lb.remove(id);
    // Its requests in flight end, failed: a removed backend must not be ejected (no event, no timer).
    for (const slot of r.slots.get(id) ?? []) slot.release({ ok: false });
    r.slots.delete(id);
    r.states.delete(id);
    verify(m, r);
  }
  toString = () => `remove(#${this.index})`;
}

const index = fc.nat({ max: 20 });
const advance = fc
  .oneof(
    fc.integer({ min: 1, max: 600 }),
    fc.integer({ min: 600, max: 4000 }),
    fc.constantFrom(100, INTERVAL_MS, TIMEOUT_MS, BASE_EJECTION_MS, 12_000),
  )
  .map((ms) => new Advance(ms));
const setProbe = fc.tuple(index, fc.boolean()).map(([i, ok]) => new SetProbe(i, ok));
const commands = [
  // Repeated entries weigh more: time and plain probe results drive most transitions.
  advance,
  advance,
  advance,
  setProbe,
  setProbe,
  fc.tuple(index, fc.constantFrom<Mode>('throw', 'reject', 'hang')).map(([i, mode]) => new SetProbe(i, mode)),
  fc.tuple(index, fc.boolean()).map(([i, ok]) => new Settle(i, ok)),
  index.map((i) => new Hold(i)),
  fc.tuple(index, fc.boolean(), fc.integer({ min: 1, max: 4 })).map(([i, ok, n]) => new Release(i, ok, n)),
  fc.tuple(index, fc.integer({ min: 1, max: 4 })).map(([i, n]) => new Release(i, false, n)),
  index.map((i) => new MarkDown(i)),
  index.map((i) => new MarkUp(i)),
  fc
    .tuple(index, fc.constantFrom(0, 1, 1, 2, 3), fc.constantFrom(false, false, false, true))
    .map(([i, w, backup]) => new Add(i, w, backup)),
  index.map((i) => new Remove(i)),
];

const specArb: fc.Arbitrary<Omit<Spec, 'id'>> = fc.record({
  weight: fc.constantFrom(0, 1, 1, 1, 2, 3),
  backup: fc.constantFrom(false, false, false, true),
});

const configArb: fc.Arbitrary<Config> = fc.record({
  initial: fc
    .array(specArb, { minLength: 1, maxLength: 6 })
    .map((specs) => specs.map((s, i) => ({ id: IDS[i] as string, ...s }))),
  maxEjectedPercent: fc.constantFrom(0, 10, 34, 50, 100),
  panicThreshold: fc.constantFrom(0, 0.5, 0.5, 1),
  slowStartMs: fc.constantFrom(0, 2000, 2000, 500),
  aggression: fc.constantFrom(1, 1, 2, 0.5),
  random: fc.double({ min: 0, max: 0.999, noNaN: true }),
});

describe('health tracking against a model', () => {
  it('follows the model step by step, and close() leaves nothing running', async () => {
    await fc.assert(
      fc.asyncProperty(configArb, fc.commands(commands, { maxCommands: 80, size: 'max' }), async (config, cmds) => {
        const m = new Model(config);
        const r = new Real(config);
        verify(m, r);
        await fc.asyncModelRun(() => ({ model: m, real: r }), cmds);

        // close(): every timer stops, every check in progress is aborted, nothing runs after.
        const inProgress = m.hung.filter((c) => !c.settled && !c.timedOut && c.owner.attached);
        m.close();
        r.lb.close();
        await flush();
        for (const c of inProgress) {
          if (!r.calls[c.index]?.signal.aborted) fail(`check ${c.index} of ${c.owner.id} not aborted by close()`);
        }
        expect(r.scheduler.pending).toBe(0);
        const calls = r.calls.length;
        r.healthEvents = [];
        r.panicEvents = [];
        await r.scheduler.advance(3_600_000);
        for (const c of r.calls) if (!c.settled) c.resolve(true);
        await r.scheduler.advance(3_600_000);
        expect(r.calls.length).toBe(calls);
        expect(r.healthEvents).toEqual([]);
        expect(r.panicEvents).toEqual([]);
        expect(r.scheduler.pending).toBe(0);
      }),
      { seed: 0x4ea17, numRuns: 500, endOnFailure: true },
    );
    // The pinned seed reaches every path below, so the run above is not vacuous (set
    // HEALTH_MODEL_COVERAGE=1 to print how often each occurred).
    if (process.env.HEALTH_MODEL_COVERAGE) console.log(Object.fromEntries([...coverage].sort()));
    for (const key of [
      'healthy>down:probe',
      'healthy>down:manual',
      'healthy>ejected:passive',
      'slow-start>healthy:recovered',
      'slow-start>down:probe',
      'slow-start>ejected:passive',
      'down>slow-start:probe',
      'down>healthy:probe',
      'down>slow-start:manual',
      'ejected>slow-start:recovered',
      'ejected>healthy:recovered',
      'ejected>down:probe',
      'ejected>slow-start:manual',
      'panic true',
      'panic false',
      'check timed out',
      'check while a probe is pending',
      'settled within its timeout',
      'settled after its timeout',
    ]) {
      expect(coverage.get(key) ?? 0, key).toBeGreaterThan(0);
    }
  });
});
