/**
 * Model-based test of the balancer's public API with fast-check `commands`.
 *
 * A plain model (id -> settings and counters, plus the outstanding slots) predicts `stats()`,
 * `backends`, `get()` and the `added` / `removed` events after every command. Every pick and
 * acquire must return a backend the model calls eligible: present, weight > 0, not excluded, not
 * at `maxInFlight`, and primary unless no primary is eligible (least-connections must also
 * return a minimum of (inFlight + 1) / weight within that tier). When the model says nothing is
 * eligible the call must throw ERR_NO_BACKEND, and an invalid call ERR_INVALID_ARGUMENT; both
 * must change nothing (same stats, same `backends` array, no event).
 *
 * Everything is reproducible: fast-check runs with a pinned seed, the balancer gets a seeded
 * PRNG (splitmix32) built from a generated seed, and time comes from an injected clock.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BackendUpdate,
  type Balancer,
  type CommonOptions,
  createBalancer,
  type FairpickErrorCode,
  isFairpickError,
  type ReleaseResult,
  type Slot,
} from '../src/index.js';
import { at, splitmix32 } from './support/util.js';

// ---------------------------------------------------------------------------------------------
// The system and its model

/** A backend object as a user gives it; `label` is a user field fairpick must not touch. */
interface Spec {
  readonly id: string;
  readonly label: string;
  readonly weight?: number;
  readonly backup?: boolean;
  readonly maxInFlight?: number;
}

interface Entry {
  readonly id: string;
  backend: Spec;
  weight: number;
  backup: boolean;
  maxInFlight: number | null;
  inFlight: number;
  picks: number;
  successes: number;
  failures: number;
}

interface Outstanding {
  /** The model entry the slot counts on; it may have left the pool since. */
  readonly entry: Entry;
  /** The backend object the slot was acquired with. */
  readonly backend: Spec;
}

interface Model {
  entries: Map<string, Entry>;
  /** Parallel to Real.slots. */
  outstanding: Outstanding[];
  /** How many slots were released (Real.released holds them). */
  releasedCount: number;
}

interface BalancerEvent {
  readonly type: 'added' | 'removed';
  readonly backend: Spec;
}

interface Real {
  readonly lb: Balancer<Spec>;
  readonly slots: Slot<Spec>[];
  readonly released: Slot<Spec>[];
  readonly events: BalancerEvent[];
  readonly clock: { t: number };
  readonly algorithm: string;
}

type Cmd = fc.Command<Model, Real>;

function entryOf(spec: Spec): Entry {
  return {
    id: spec.id,
    backend: spec,
    weight: spec.weight ?? 1,
    backup: spec.backup ?? false,
    maxInFlight: spec.maxInFlight ?? null,
    inFlight: 0,
    picks: 0,
    successes: 0,
    failures: 0,
  };
}

function describeSpec(s: Spec): string {
  const parts = [`id: '${s.id}'`];
  if (s.weight !== undefined) parts.push(`weight: ${s.weight}`);
  if (s.backup !== undefined) parts.push(`backup: ${s.backup}`);
  if (s.maxInFlight !== undefined) parts.push(`maxInFlight: ${s.maxInFlight}`);
  return `{ ${parts.join(', ')} }`;
}

/**
 * After every command: stats, backends, get and the events equal the model's prediction.
 * (Compared by hand first and through `expect` only on a mismatch, for a readable diff: this
 * runs after every command and `toEqual` on every call would dominate the file's runtime.)
 */
function verify(m: Model, r: Real, expectedEvents: readonly BalancerEvent[]): void {
  const entries = [...m.entries.values()];
  const actual = r.lb.stats().map(({ ewmaMs, ...rest }) => {
    if (!(Number.isFinite(ewmaMs) && ewmaMs >= 0)) expect.fail(`${rest.id}: ewmaMs ${ewmaMs}`);
    return rest;
  });
  const expected = entries.map((e) => ({
    id: e.id,
    weight: e.weight,
    effectiveWeight: e.weight,
    backup: e.backup,
    maxInFlight: e.maxInFlight,
    inFlight: e.inFlight,
    picks: e.picks,
    successes: e.successes,
    failures: e.failures,
    state: 'healthy',
    pickable: e.weight > 0,
    // No health tracking is configured: the health fields stay at rest.
    manualDown: false,
    consecutiveSuccesses: 0,
    consecutiveFailures: 0,
    passiveFailures: 0,
    ejections: 0,
    ejectedForMs: 0,
    lastCheck: null,
  }));
  if (JSON.stringify(actual) !== JSON.stringify(expected)) expect(actual).toEqual(expected);
  const backends = r.lb.backends;
  if (!Object.isFrozen(backends)) expect.fail('backends is not frozen');
  if (backends.length !== entries.length) expect(backends.map((b) => b.id)).toEqual(entries.map((e) => e.id));
  entries.forEach((e, i) => {
    if (backends[i] !== e.backend) expect(backends[i]).toBe(e.backend);
    if (r.lb.get(e.id) !== e.backend) expect(r.lb.get(e.id)).toBe(e.backend);
  });
  const same =
    r.events.length === expectedEvents.length &&
    expectedEvents.every((e, i) => r.events[i]?.type === e.type && r.events[i]?.backend === e.backend);
  if (!same) {
    const show = (es: readonly BalancerEvent[]) => es.map((e) => `${e.type} ${describeSpec(e.backend)}`);
    expect(show(r.events)).toEqual(show(expectedEvents));
    expect.fail('events carry other objects than the model expects');
  }
  r.events.length = 0;
}

/** A call that must throw `code` and change nothing. */
function failsCleanly(m: Model, r: Real, code: FairpickErrorCode, call: () => unknown): void {
  const stats = r.lb.stats();
  const backends = r.lb.backends;
  let error: unknown;
  try {
    call();
  } catch (e) {
    error = e;
  }
  if (!isFairpickError(error, code)) expect.fail(`expected a FairpickError ${code}, got ${String(error)}`);
  const after = r.lb.stats();
  if (JSON.stringify(after) !== JSON.stringify(stats)) expect(after).toEqual(stats);
  if (r.lb.backends !== backends) expect.fail('a failed call replaced the backends array');
  verify(m, r, []);
}

/** The backends a pick may return: eligible ones of the first tier (primary, else backup) that has any. */
function tierOf(m: Model, exclude: ReadonlySet<string>): Entry[] {
  const eligible = [...m.entries.values()].filter(
    (e) => e.weight > 0 && !exclude.has(e.id) && (e.maxInFlight === null || e.inFlight < e.maxInFlight),
  );
  const primaries = eligible.filter((e) => !e.backup);
  return primaries.length > 0 ? primaries : eligible;
}

// ---------------------------------------------------------------------------------------------
// Commands

class AddCmd implements Cmd {
  constructor(readonly spec: Spec) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    if (m.entries.has(this.spec.id)) {
      failsCleanly(m, r, 'ERR_INVALID_ARGUMENT', () => r.lb.add(this.spec));
      return;
    }
    r.lb.add(this.spec);
    m.entries.set(this.spec.id, entryOf(this.spec));
    verify(m, r, [{ type: 'added', backend: this.spec }]);
  }
  toString(): string {
    return `add(${describeSpec(this.spec)})`;
  }
}

class InvalidAddCmd implements Cmd {
  constructor(readonly bad: Record<string, unknown>) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    failsCleanly(m, r, 'ERR_INVALID_ARGUMENT', () => r.lb.add(this.bad as unknown as Spec));
  }
  toString(): string {
    return `add(${JSON.stringify(this.bad)}) [invalid]`;
  }
}

class RemoveCmd implements Cmd {
  constructor(readonly id: string) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const entry = m.entries.get(this.id);
    if (entry === undefined) {
      failsCleanly(m, r, 'ERR_INVALID_ARGUMENT', () => r.lb.remove(this.id));
      return;
    }
    expect(r.lb.remove(this.id)).toBe(entry.backend);
    m.entries.delete(this.id);
    verify(m, r, [{ type: 'removed', backend: entry.backend }]);
  }
  toString(): string {
    return `remove('${this.id}')`;
  }
}

class UpdateCmd implements Cmd {
  constructor(
    readonly id: string,
    readonly patch: Record<string, unknown>,
    readonly validPatch: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const entry = m.entries.get(this.id);
    const patch = this.patch as BackendUpdate;
    if (entry === undefined || !this.validPatch) {
      failsCleanly(m, r, 'ERR_INVALID_ARGUMENT', () => r.lb.update(this.id, patch));
      return;
    }
    r.lb.update(this.id, patch);
    if (patch.weight !== undefined) entry.weight = patch.weight;
    if (patch.backup !== undefined) entry.backup = patch.backup;
    if (patch.maxInFlight !== undefined) entry.maxInFlight = patch.maxInFlight;
    verify(m, r, []);
  }
  toString(): string {
    return `update('${this.id}', ${JSON.stringify(this.patch)})${this.validPatch ? '' : ' [invalid patch]'}`;
  }
}

class SetCmd implements Cmd {
  constructor(
    readonly list: readonly Spec[],
    readonly valid: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    if (!this.valid) {
      failsCleanly(m, r, 'ERR_INVALID_ARGUMENT', () => r.lb.set(this.list));
      return;
    }
    r.lb.set(this.list);
    const next = new Map<string, Entry>();
    const added: BalancerEvent[] = [];
    for (const spec of this.list) {
      const kept = m.entries.get(spec.id);
      if (kept === undefined) {
        next.set(spec.id, entryOf(spec));
        added.push({ type: 'added', backend: spec });
        continue;
      }
      kept.backend = spec;
      kept.weight = spec.weight ?? 1;
      kept.backup = spec.backup ?? false;
      kept.maxInFlight = spec.maxInFlight ?? null;
      next.set(spec.id, kept);
    }
    const removed: BalancerEvent[] = [...m.entries.values()]
      .filter((e) => !next.has(e.id))
      .map((e) => ({ type: 'removed', backend: e.backend }));
    m.entries = next;
    verify(m, r, [...removed, ...added]);
  }
  toString(): string {
    return `set([${this.list.map(describeSpec).join(', ')}])${this.valid ? '' : ' [invalid]'}`;
  }
}

/** A setting a reconcile may change; `undefined` keeps the current one. */
interface Variation {
  readonly weight?: number;
  readonly backup?: boolean;
  readonly maxInFlight?: number | null;
}

/**
 * Service discovery delivering the current membership again, as new objects, in the same order
 * (or rotated), with some settings changed: the kept backends' counters survive, their settings
 * and objects are replaced, and no event fires.
 */
class ReconcileCmd implements Cmd {
  constructor(
    readonly variations: readonly Variation[],
    readonly rotate: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const current = [...m.entries.values()];
    const order = this.rotate && current.length > 1 ? [...current.slice(1), ...current.slice(0, 1)] : current;
    const list = order.map((e, i) => {
      const v = this.variations[i] ?? {};
      const w = v.weight ?? e.weight;
      const backup = v.backup ?? e.backup;
      const max = v.maxInFlight === undefined ? e.maxInFlight : v.maxInFlight;
      return makeSpec(e.id, 'reconciled', w, backup, max ?? undefined);
    });
    r.lb.set(list);
    const next = new Map<string, Entry>();
    list.forEach((spec, i) => {
      const e = at(order, i);
      e.backend = spec;
      e.weight = spec.weight ?? 1;
      e.backup = spec.backup ?? false;
      e.maxInFlight = spec.maxInFlight ?? null;
      next.set(e.id, e);
    });
    m.entries = next;
    verify(m, r, []);
  }
  toString(): string {
    return `reconcile(${JSON.stringify(this.variations)}${this.rotate ? ', rotated' : ''})`;
  }
}

class ChooseCmd implements Cmd {
  constructor(
    readonly kind: 'acquire' | 'pick',
    readonly exclude: readonly string[] | undefined,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, r: Real): void {
    const exclude = this.exclude === undefined ? undefined : new Set(this.exclude);
    const ctx = exclude === undefined ? undefined : { exclude };
    const tier = tierOf(m, exclude ?? new Set());
    if (tier.length === 0) {
      failsCleanly(m, r, 'ERR_NO_BACKEND', () => (this.kind === 'acquire' ? r.lb.acquire(ctx) : r.lb.pick(ctx)));
      return;
    }
    let backend: Spec;
    let slot: Slot<Spec> | undefined;
    if (this.kind === 'acquire') {
      slot = r.lb.acquire(ctx);
      backend = slot.backend;
    } else {
      backend = r.lb.pick(ctx);
    }
    const chosen = tier.find((e) => e.id === backend.id);
    if (chosen === undefined) {
      expect.fail(`${this} returned '${backend.id}', not one of the eligible [${tier.map((e) => e.id).join(', ')}]`);
    }
    expect(backend).toBe(chosen.backend);
    if (r.algorithm === 'least-connections') {
      // The lowest (inFlight + 1) / weight in the tier, compared by cross-multiplying.
      for (const e of tier) {
        expect((chosen.inFlight + 1) * e.weight).toBeLessThanOrEqual((e.inFlight + 1) * chosen.weight);
      }
    }
    chosen.picks++;
    if (slot !== undefined) {
      chosen.inFlight++;
      m.outstanding.push({ entry: chosen, backend: chosen.backend });
      r.slots.push(slot);
    }
    verify(m, r, []);
  }
  toString(): string {
    return `${this.kind}(${this.exclude === undefined ? '' : `{ exclude: [${this.exclude.join(', ')}] }`})`;
  }
}

class ReleaseCmd implements Cmd {
  constructor(
    readonly k: number,
    readonly result: ReleaseResult | undefined,
    readonly advanceMs: number,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.outstanding.length > 0;
  }
  run(m: Model, r: Real): void {
    const i = this.k % m.outstanding.length;
    const [held] = m.outstanding.splice(i, 1);
    const [slot] = r.slots.splice(i, 1);
    if (held === undefined || slot === undefined) throw new Error('model and real slots out of step');
    expect(slot.backend).toBe(held.backend);
    r.clock.t += this.advanceMs;
    expect(slot.release(this.result)).toBe(true);
    held.entry.inFlight--;
    if (this.result?.ok === true) held.entry.successes++;
    if (this.result?.ok === false) held.entry.failures++;
    r.released.push(slot);
    m.releasedCount++;
    verify(m, r, []);
  }
  toString(): string {
    return `release(#${this.k}, ${JSON.stringify(this.result)}) after ${this.advanceMs} ms`;
  }
}

class ReleaseAgainCmd implements Cmd {
  constructor(
    readonly k: number,
    readonly result: ReleaseResult | undefined,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.releasedCount > 0;
  }
  run(m: Model, r: Real): void {
    const slot = at(r.released, this.k % r.released.length);
    const stats = r.lb.stats();
    const backends = r.lb.backends;
    expect(slot.release(this.result)).toBe(false);
    expect(r.lb.stats()).toEqual(stats);
    expect(r.lb.backends).toBe(backends);
    verify(m, r, []);
  }
  toString(): string {
    return `releaseAgain(#${this.k}, ${JSON.stringify(this.result)})`;
  }
}

class InvalidReleaseCmd implements Cmd {
  constructor(
    readonly k: number,
    readonly bad: Record<string, unknown>,
  ) {}
  check(m: Readonly<Model>): boolean {
    return m.outstanding.length > 0;
  }
  run(m: Model, r: Real): void {
    // A bad result throws, but the request is still counted out (with no outcome recorded), so a
    // mistake in reporting cannot leak a slot.
    const i = this.k % r.slots.length;
    const slot = at(r.slots, i);
    let thrown: unknown;
    try {
      slot.release(this.bad as ReleaseResult);
    } catch (error) {
      thrown = error;
    }
    if (!isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')) expect.fail(`${this}: expected ERR_INVALID_ARGUMENT`);
    const [held] = m.outstanding.splice(i, 1);
    r.slots.splice(i, 1);
    if (held === undefined) throw new Error('model and real slots out of step');
    held.entry.inFlight--;
    r.released.push(slot);
    m.releasedCount++;
    verify(m, r, []);
  }
  toString(): string {
    return `release(#${this.k}, ${JSON.stringify(this.bad)}) [invalid]`;
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const IDS = ['a', 'b', 'c', 'd', 'e', 'f'] as const;
const id = fc.constantFrom(...IDS);
const weight = fc.constantFrom(0, 0.5, 1, 1, 1.5, 2, 3, 5);

function makeSpec(id: string, label: string, w?: number, backup?: boolean, maxInFlight?: number): Spec {
  return {
    id,
    label,
    ...(w === undefined ? {} : { weight: w }),
    ...(backup === undefined ? {} : { backup }),
    ...(maxInFlight === undefined ? {} : { maxInFlight }),
  };
}

const spec: fc.Arbitrary<Spec> = fc
  .tuple(
    id,
    fc.string({ maxLength: 3 }),
    fc.option(weight, { nil: undefined }),
    fc.option(fc.boolean(), { nil: undefined, freq: 2 }),
    fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined, freq: 2 }),
  )
  .map(([i, label, w, backup, max]) => makeSpec(i, label, w, backup, max));

const invalidSpec: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.constant({ id: '' }),
  fc.constant({ id: 7 }),
  fc.constant({ weight: 1 }),
  id.chain((i) =>
    fc.constantFrom<Record<string, unknown>>(
      { id: i, weight: -1 },
      { id: i, weight: Number.NaN },
      { id: i, weight: Number.POSITIVE_INFINITY },
      { id: i, weight: '2' },
      { id: i, maxInFlight: 0 },
      { id: i, maxInFlight: 1.5 },
      { id: i, maxInFlight: -2 },
      { id: i, backup: 'yes' },
    ),
  ),
);

const validPatch = fc
  .record(
    {
      weight,
      backup: fc.boolean(),
      maxInFlight: fc.oneof(fc.constant(null), fc.integer({ min: 1, max: 3 })),
    },
    { requiredKeys: [] },
  )
  .map((patch) => ({ patch: patch as Record<string, unknown>, valid: true }));

const invalidPatch = fc
  .constantFrom<Record<string, unknown>>(
    { weight: -0.5 },
    { weight: Number.NaN },
    { weight: Number.POSITIVE_INFINITY },
    { backup: 1 },
    { maxInFlight: 0 },
    { maxInFlight: 2.5 },
    { id: 'z' },
    { url: 'http://x' },
    { weight: 2, maxInFlight: -1 },
  )
  .map((patch) => ({ patch, valid: false }));

const setList = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.uniqueArray(spec, { selector: (s) => s.id, maxLength: 6 }).map((l) => ({ l, valid: true })),
  },
  {
    weight: 1,
    arbitrary: fc
      .uniqueArray(spec, { selector: (s) => s.id, minLength: 1, maxLength: 5 })
      .chain((l) => fc.tuple(fc.constant(l), fc.nat({ max: l.length - 1 }), fc.nat({ max: l.length })))
      .map(([l, dup, pos]) => {
        // A duplicate id anywhere makes the whole list invalid.
        const copy = [...l];
        copy.splice(pos, 0, makeSpec(at(l, dup).id, 'dup'));
        return { l: copy, valid: false };
      }),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.uniqueArray(spec, { selector: (s) => s.id, maxLength: 5 }), invalidSpec)
      .map(([l, bad]) => ({ l: [...l, bad as unknown as Spec], valid: false })),
  },
);

const variation: fc.Arbitrary<Variation> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({}) },
  {
    weight: 2,
    arbitrary: fc.record(
      { weight, backup: fc.boolean(), maxInFlight: fc.oneof(fc.constant(null), fc.integer({ min: 1, max: 3 })) },
      { requiredKeys: [] },
    ),
  },
);

const exclude = fc.option(fc.subarray([...IDS, 'zz']), { nil: undefined, freq: 3 });

const releaseResult: fc.Arbitrary<ReleaseResult | undefined> = fc.option(
  fc
    .tuple(fc.option(fc.boolean(), { nil: undefined }), fc.option(fc.integer({ min: 0, max: 500 }), { nil: undefined }))
    .map(([ok, latencyMs]) => ({
      ...(ok === undefined ? {} : { ok }),
      ...(latencyMs === undefined ? {} : { latencyMs }),
    })),
  { nil: undefined, freq: 4 },
);

const invalidResult = fc.constantFrom<Record<string, unknown>>(
  { ok: 'yes' },
  { latencyMs: -1 },
  { latencyMs: Number.NaN },
  { latencyMs: Number.POSITIVE_INFINITY },
  { ok: true, latencyMs: '12' },
);

const choose = (kind: 'acquire' | 'pick') => exclude.map((ex): Cmd => new ChooseCmd(kind, ex));

const commands: fc.Arbitrary<Cmd>[] = [
  spec.map((s): Cmd => new AddCmd(s)),
  spec.map((s): Cmd => new AddCmd(s)),
  invalidSpec.map((b): Cmd => new InvalidAddCmd(b)),
  fc.constantFrom(...IDS, 'zz').map((i): Cmd => new RemoveCmd(i)),
  fc
    .tuple(
      fc.constantFrom(...IDS, 'zz'),
      fc.oneof({ weight: 4, arbitrary: validPatch }, { weight: 1, arbitrary: invalidPatch }),
    )
    .map(([i, { patch, valid }]): Cmd => new UpdateCmd(i, patch, valid)),
  setList.map(({ l, valid }): Cmd => new SetCmd(l, valid)),
  fc
    .tuple(fc.array(variation, { maxLength: 6, size: 'max' }), fc.boolean())
    .map(([vs, rotate]): Cmd => new ReconcileCmd(vs, rotate)),
  choose('acquire'),
  choose('acquire'),
  choose('acquire'),
  choose('pick'),
  choose('pick'),
  fc.tuple(fc.nat(), releaseResult, fc.nat({ max: 5000 })).map(([k, res, dt]): Cmd => new ReleaseCmd(k, res, dt)),
  fc.tuple(fc.nat(), releaseResult, fc.nat({ max: 5000 })).map(([k, res, dt]): Cmd => new ReleaseCmd(k, res, dt)),
  fc.tuple(fc.nat(), releaseResult).map(([k, res]): Cmd => new ReleaseAgainCmd(k, res)),
  fc.tuple(fc.nat(), invalidResult).map(([k, bad]): Cmd => new InvalidReleaseCmd(k, bad)),
];

// ---------------------------------------------------------------------------------------------
// The runs

type Make = (o: CommonOptions<Spec>) => Balancer<Spec>;
const ALGORITHMS: readonly (readonly [string, string, Make, number])[] = [
  ['round-robin', 'round-robin', (o) => createBalancer({ ...o, algorithm: 'round-robin' }), 0x30001],
  ['random', 'random', (o) => createBalancer({ ...o, algorithm: 'random' }), 0x30002],
  ['least-connections', 'least-connections', (o) => createBalancer({ ...o, algorithm: 'least-connections' }), 0x30003],
  ['p2c (in-flight)', 'p2c', (o) => createBalancer({ ...o, algorithm: 'p2c' }), 0x30004],
  [
    'p2c (peak-ewma)',
    'p2c',
    (o) => createBalancer({ ...o, algorithm: 'p2c', load: 'peak-ewma', decayMs: 2000 }),
    0x30005,
  ],
];

describe('balancer model (fast-check commands)', () => {
  for (const [name, algorithm, make, seed] of ALGORITHMS) {
    it(`${name}: stats, backends, events and every pick follow the model`, () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(spec, { selector: (s) => s.id, maxLength: 6 }),
          fc.integer(),
          fc.commands(commands, { maxCommands: 60, size: 'max' }),
          (initial, prngSeed, cmds) => {
            let last: { model: Model; real: Real } | undefined;
            const setup = () => {
              const clock = { t: 1_000 };
              const lb = make({ backends: initial, random: splitmix32(prngSeed), now: () => clock.t });
              const real: Real = { lb, slots: [], released: [], events: [], clock, algorithm };
              lb.on('added', (backend) => real.events.push({ type: 'added', backend }));
              lb.on('removed', (backend) => real.events.push({ type: 'removed', backend }));
              const model: Model = {
                entries: new Map(initial.map((s) => [s.id, entryOf(s)])),
                outstanding: [],
                releasedCount: 0,
              };
              expect(lb.algorithm).toBe(algorithm);
              verify(model, real, []);
              last = { model, real };
              return last;
            };
            fc.modelRun(setup, cmds);
            // Releasing every outstanding slot brings every in-flight count back to 0.
            if (last === undefined) throw new Error('setup did not run');
            for (const slot of last.real.slots) expect(slot.release()).toBe(true);
            for (const s of last.real.lb.stats()) expect(s.inFlight).toBe(0);
          },
        ),
        { seed, numRuns: 500 },
      );
    });
  }
});
