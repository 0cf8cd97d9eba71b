import { describe, expect, it, vi } from 'vitest';
import {
  type BackendSpec,
  createBalancer,
  FairpickError,
  isFairpickError,
  type Picker,
  type PickerEndpoint,
  type PickerEnvironment,
  type PickerFactory,
} from '../src/index.js';

const ids = (list: readonly { id: string }[]) => list.map((b) => b.id);
const sequence = (lb: { pick(): { id: string } }, n: number) => Array.from({ length: n }, () => lb.pick().id).join(' ');

describe('createBalancer', () => {
  it('returns the very objects the user gave, untouched', () => {
    const web1 = { id: 'web1', url: 'http://127.0.0.1:8081', weight: 2, extra: { zone: 'a' } };
    const lb = createBalancer({ algorithm: 'random', backends: [web1] });
    expect(lb.pick()).toBe(web1);
    expect(lb.acquire().backend).toBe(web1);
    expect(lb.get('web1')).toBe(web1);
    expect(lb.backends[0]).toBe(web1);
    expect(web1).toEqual({ id: 'web1', url: 'http://127.0.0.1:8081', weight: 2, extra: { zone: 'a' } });
  });

  it('defaults to smooth weighted round robin', () => {
    const lb = createBalancer({ random: () => 0, backends: [{ id: 'a', weight: 5 }, { id: 'b' }, { id: 'c' }] });
    expect(lb.algorithm).toBe('round-robin');
    expect(sequence(lb, 14)).toBe('a a b a c a a a a b a c a a');
  });

  it('starts the round-robin cycle at a random offset so clients do not herd', () => {
    const make = (r: number) =>
      createBalancer({
        algorithm: 'round-robin',
        random: () => r,
        backends: [{ id: 'a', weight: 5 }, { id: 'b' }, { id: 'c' }],
      });
    // Offset floor(0.3 * 7) = 2 of the cycle a a b a c a a.
    expect(sequence(make(0.3), 7)).toBe('b a c a a a a');
    expect(sequence(make(0.99), 3)).toBe('a a a');
  });

  it('backends is a read-only array replaced on change', () => {
    const lb = createBalancer({ algorithm: 'random', backends: [{ id: 'a' }] });
    const before = lb.backends;
    expect(Object.isFrozen(before)).toBe(true);
    expect(lb.backends).toBe(before);
    lb.add({ id: 'b' });
    expect(ids(before)).toEqual(['a']);
    expect(ids(lb.backends)).toEqual(['a', 'b']);
  });
});

describe('membership', () => {
  it('add, remove and update keep the other backends counters', () => {
    const lb = createBalancer({ algorithm: 'least-connections', backends: [{ id: 'a' }, { id: 'b' }] });
    const slots = [lb.acquire(), lb.acquire(), lb.acquire()];
    lb.add({ id: 'c' });
    lb.update('a', { weight: 3 });
    const b = lb.remove('b');
    expect(b.id).toBe('b');
    const stats = Object.fromEntries(lb.stats().map((s) => [s.id, s]));
    expect(stats.a).toMatchObject({ weight: 3, inFlight: 2, picks: 2 });
    expect(stats.c).toMatchObject({ weight: 1, inFlight: 0, picks: 0 });
    expect(stats.b).toBeUndefined();
    for (const s of slots) s.release();
    expect(lb.stats().map((s) => s.inFlight)).toEqual([0, 0]);
  });

  it('a removed backend is never picked again, and its open slots still release', () => {
    const lb = createBalancer({ algorithm: 'p2c', backends: [{ id: 'a' }, { id: 'b' }] });
    let slot = lb.acquire();
    while (slot.backend.id !== 'b') {
      slot.release();
      slot = lb.acquire();
    }
    lb.remove('b');
    for (let i = 0; i < 100; i++) expect(lb.pick().id).toBe('a');
    expect(slot.release({ ok: true })).toBe(true);
    lb.add({ id: 'b' });
    expect(lb.stats().find((s) => s.id === 'b')).toMatchObject({ inFlight: 0, picks: 0 });
  });

  it('set reconciles: adds, removes, replaces objects and keeps counters of kept ids', () => {
    const lb = createBalancer({
      algorithm: 'least-connections',
      backends: [
        { id: 'a', url: 'v1' },
        { id: 'b', url: 'v1' },
      ],
    });
    const held = lb.acquire({ exclude: new Set(['b']) });
    const events: string[] = [];
    lb.on('added', (b) => events.push(`+${b.id}`));
    lb.on('removed', (b) => events.push(`-${b.id}`));
    const a2 = { id: 'a', url: 'v2', weight: 4 };
    lb.set([{ id: 'c', url: 'v1' }, a2]);
    expect(events).toEqual(['-b', '+c']);
    expect(ids(lb.backends)).toEqual(['c', 'a']);
    expect(lb.get('a')).toBe(a2);
    expect(lb.stats().find((s) => s.id === 'a')).toMatchObject({ weight: 4, inFlight: 1, picks: 1 });
    // The slot keeps the object it was acquired with.
    expect(held.backend.url).toBe('v1');
    held.release();
    expect(lb.stats().find((s) => s.id === 'a')?.inFlight).toBe(0);
  });

  it('set with the same list keeps the round-robin position', () => {
    const list = [{ id: 'a', weight: 2 }, { id: 'b' }];
    const lb = createBalancer({ algorithm: 'round-robin', random: () => 0, backends: list });
    expect(sequence(lb, 2)).toBe('a b');
    lb.set(list.map((b) => ({ ...b })));
    expect(sequence(lb, 4)).toBe('a a b a');
  });

  it('a change to one tier leaves the other tier picker and its position alone', () => {
    const builds: string[][] = [];
    const lb = createBalancer<BackendSpec>({
      algorithm: (endpoints, env) => {
        builds.push(endpoints.map((e) => e.id));
        return roundRobinOver(endpoints, env);
      },
      backends: [{ id: 'a' }, { id: 'b' }],
    });
    expect(builds).toEqual([['a', 'b']]);
    lb.add({ id: 'spare', backup: true });
    lb.update('spare', { weight: 3 });
    expect(builds).toEqual([['a', 'b'], ['spare'], ['spare']]);
    lb.update('a', { maxInFlight: 5 }); // not a change of the pickable set or its weights
    expect(builds).toHaveLength(3);
    lb.update('b', { weight: 2 });
    expect(builds.at(-1)).toEqual(['a', 'b']);
  });

  it('adding a backup keeps the round-robin position of the primaries', () => {
    const lb = createBalancer<BackendSpec>({
      algorithm: 'round-robin',
      random: () => 0,
      backends: [{ id: 'a', weight: 2 }, { id: 'b' }],
    });
    expect(sequence(lb, 2)).toBe('a b');
    lb.add({ id: 'spare', backup: true });
    expect(sequence(lb, 4)).toBe('a a b a');
  });

  it('update moves a backend to the backup tier and can lift its limit', () => {
    const lb = createBalancer({ algorithm: 'round-robin', backends: [{ id: 'a', maxInFlight: 1 }, { id: 'b' }] });
    lb.update('b', { backup: true });
    const first = lb.acquire();
    expect(first.backend.id).toBe('a');
    expect(lb.acquire().backend.id).toBe('b'); // a is full: the backup serves
    lb.update('a', { maxInFlight: null });
    expect(lb.acquire().backend.id).toBe('a');
    expect(lb.stats().find((s) => s.id === 'a')?.maxInFlight).toBeNull();
  });

  it('emits added and removed, and unsubscribes', () => {
    const lb = createBalancer({ algorithm: 'random' });
    const added = vi.fn();
    const off = lb.on('added', added);
    lb.add({ id: 'a' });
    off();
    off();
    lb.add({ id: 'b' });
    expect(added).toHaveBeenCalledTimes(1);
    expect(added).toHaveBeenCalledWith({ id: 'a' });
  });

  it('a throwing listener neither stops other listeners nor the change', async () => {
    const lb = createBalancer({ algorithm: 'random' });
    const second = vi.fn();
    lb.on('added', () => {
      throw new Error('listener bug');
    });
    lb.on('added', second);
    const reported = new Promise<unknown>((resolve) => {
      process.once('uncaughtException', resolve);
    });
    lb.add({ id: 'a' });
    expect(second).toHaveBeenCalledTimes(1);
    expect(ids(lb.backends)).toEqual(['a']);
    expect(await reported).toMatchObject({ message: 'listener bug' });
  });
});

describe('picking rules', () => {
  it('weight 0 drains: no new picks, in-flight requests still release', () => {
    const lb = createBalancer({ algorithm: 'least-connections', backends: [{ id: 'a' }, { id: 'b' }] });
    const slot = lb.acquire();
    lb.update(slot.backend.id, { weight: 0 });
    const other = slot.backend.id === 'a' ? 'b' : 'a';
    for (let i = 0; i < 20; i++) expect(lb.pick().id).toBe(other);
    expect(lb.stats().find((s) => s.id === slot.backend.id)).toMatchObject({ pickable: false, inFlight: 1 });
    slot.release();
    expect(lb.stats().find((s) => s.id === slot.backend.id)?.inFlight).toBe(0);
  });

  it('uses the backup tier only when no primary can be picked', () => {
    const lb = createBalancer({
      algorithm: 'round-robin',
      backends: [{ id: 'p1' }, { id: 'p2' }, { id: 'spare', backup: true }],
    });
    for (let i = 0; i < 10; i++) expect(lb.pick().id).not.toBe('spare');
    expect(lb.pick({ exclude: new Set(['p1', 'p2']) }).id).toBe('spare');
    lb.update('p1', { weight: 0 });
    lb.update('p2', { weight: 0 });
    expect(lb.pick().id).toBe('spare');
  });

  it('maxInFlight: a full backend is skipped, then ERR_NO_BACKEND names why', () => {
    const lb = createBalancer({
      algorithm: 'p2c',
      backends: [
        { id: 'a', maxInFlight: 1 },
        { id: 'b', maxInFlight: 2 },
      ],
    });
    const slots = [lb.acquire(), lb.acquire(), lb.acquire()];
    expect(ids(slots.map((s) => s.backend)).sort()).toEqual(['a', 'b', 'b']);
    const error = catchError(() => lb.acquire());
    expect(isFairpickError(error, 'ERR_NO_BACKEND')).toBe(true);
    expect((error as Error).message).toMatch(/2 at maxInFlight/);
    slots[0]?.release();
    expect(() => lb.acquire()).not.toThrow();
  });

  it('exclude skips the named backends, for retries', () => {
    for (const algorithm of ['round-robin', 'random', 'least-connections', 'p2c'] as const) {
      const lb = createBalancer({ algorithm, backends: [{ id: 'a' }, { id: 'b' }, { id: 'c' }] });
      const exclude = new Set(['a', 'c']);
      for (let i = 0; i < 20; i++) expect(lb.acquire({ exclude }).backend.id).toBe('b');
      const error = catchError(() => lb.pick({ exclude: new Set(['a', 'b', 'c']) }));
      expect(error).toBeInstanceOf(FairpickError);
      expect((error as FairpickError).code).toBe('ERR_NO_BACKEND');
    }
  });

  it('release feeds successes, failures and the latency estimate', () => {
    let t = 1_000;
    const lb = createBalancer({ algorithm: 'p2c', load: 'peak-ewma', now: () => t, backends: [{ id: 'a' }] });
    lb.acquire().release({ ok: true, latencyMs: 40 });
    lb.acquire().release({ ok: false });
    lb.acquire().release();
    t += 10_000 * Math.LN2;
    expect(lb.stats()[0]).toMatchObject({ successes: 1, failures: 1, picks: 3 });
    expect(lb.stats()[0]?.ewmaMs).toBeCloseTo(20, 9);
  });
});

describe('custom pickers', () => {
  it('plugs a user algorithm in through the Picker interface', () => {
    const builds: string[][] = [];
    // Always the last admitted endpoint in list order.
    const lastAdmitted: PickerFactory<BackendSpec> = (endpoints) => {
      builds.push(endpoints.map((e) => e.id));
      const picker: Picker<BackendSpec> = {
        pick(request) {
          for (let i = endpoints.length - 1; i >= 0; i--) {
            const ep = endpoints[i];
            if (ep !== undefined && request.admits(ep)) return ep;
          }
          return undefined;
        },
      };
      return picker;
    };
    const lb = createBalancer({
      algorithm: lastAdmitted,
      backends: [{ id: 'a' }, { id: 'b' }, { id: 'c', weight: 0 }],
    });
    expect(lb.algorithm).toBe('custom');
    expect(lb.pick().id).toBe('b');
    expect(lb.pick({ exclude: new Set(['b']) }).id).toBe('a');
    lb.update('c', { weight: 1 });
    expect(lb.pick().id).toBe('c');
    expect(builds).toEqual([
      ['a', 'b'],
      ['a', 'b', 'c'],
    ]);
  });
});

describe('a custom factory that throws', () => {
  it('makes the call throw, and the next change builds the picker again', () => {
    let fail = false;
    const lb = createBalancer<BackendSpec>({
      algorithm: (endpoints, env) => {
        if (fail) throw new Error('factory bug');
        return roundRobinOver(endpoints, env);
      },
      backends: [{ id: 'a' }, { id: 'b' }],
    });
    fail = true;
    expect(() => lb.add({ id: 'c' })).toThrow('factory bug');
    fail = false;
    lb.update('a', { weight: 1 }); // no change of weights, but the tier differs from the last built one
    expect(new Set(Array.from({ length: 6 }, () => lb.pick().id))).toEqual(new Set(['a', 'b', 'c']));
  });
});

describe('close', () => {
  it('is idempotent, is Symbol.dispose, and leaves picking working', () => {
    const lb = createBalancer({ algorithm: 'random', backends: [{ id: 'a' }] });
    lb.close();
    lb.close();
    expect(lb[Symbol.dispose]).toBe(lb.close);
    {
      using disposable = createBalancer({ algorithm: 'random', backends: [{ id: 'b' }] });
      expect(disposable.pick().id).toBe('b');
    }
    expect(lb.pick().id).toBe('a');
  });
});

describe('FairpickError', () => {
  it('has a stable code, a name, a cause, and a guard that survives another copy of the package', () => {
    const cause = new Error('root');
    const error = new FairpickError('ERR_NO_BACKEND', 'none', { cause });
    expect(error.name).toBe('FairpickError');
    expect(error.code).toBe('ERR_NO_BACKEND');
    expect(error.cause).toBe(cause);
    expect(isFairpickError(error)).toBe(true);
    expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(false);
    // An error from another copy carries the same Symbol.for brand but another class.
    const foreign = Object.assign(new Error('x'), { code: 'ERR_NO_BACKEND', [Symbol.for('fairpick.error')]: true });
    expect(isFairpickError(foreign, 'ERR_NO_BACKEND')).toBe(true);
    expect(isFairpickError(new Error('x'))).toBe(false);
    expect(isFairpickError(null)).toBe(false);
  });
});

/** A minimal custom picker: the admitted endpoints in turn. */
function roundRobinOver<B>(endpoints: readonly PickerEndpoint<B>[], _env: PickerEnvironment): Picker<B> {
  let next = 0;
  return {
    pick(request) {
      for (let k = 0; k < endpoints.length; k++) {
        const ep = endpoints[(next + k) % endpoints.length];
        if (ep !== undefined && request.admits(ep)) {
          next = (next + k + 1) % endpoints.length;
          return ep;
        }
      }
      return undefined;
    },
  };
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}
