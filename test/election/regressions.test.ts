/**
 * Regression tests for elector bugs found by the simulation (fake time; see harness.ts): a timer
 * that fires early, a grant that arrives after its belief ended, preemption with three candidates,
 * a store call that never settles, and stop()/start() while a call is in flight.
 */
import { expect, it } from 'vitest';
import { createElector, type ElectorOptions } from '../../src/election/elector.js';
import { MemoryLeaseStore } from '../../src/election/memory-store.js';
import type { LeaseStore } from '../../src/election/store.js';
import { Scheduler } from './harness.js';

function env() {
  const sched = new Scheduler();
  const store = new MemoryLeaseStore({ now: sched.now });
  const log: string[] = [];
  const make = (id: string, o: Partial<ElectorOptions> = {}) => {
    const e = createElector({ name: 'r', id, store, now: sched.now, timers: sched.timers, ...o });
    e.on('elected', (x) => log.push(`${sched.time} ${id} elected ${x.token}`));
    e.on('demoted', (x) => log.push(`${sched.time} ${id} demoted ${x.token} ${x.reason}`));
    e.on('error', () => {});
    return e;
  };
  return { sched, store, log, make };
}

/** Wraps a store so that its calls can be made to fail or hang. */
function breakable(inner: MemoryLeaseStore) {
  const state = { mode: 'ok' as 'ok' | 'throw' | 'hang' };
  const wrap =
    <A extends unknown[], R>(f: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> =>
      state.mode === 'throw'
        ? Promise.reject(new Error('down'))
        : state.mode === 'hang'
          ? new Promise<R>(() => {})
          : f(...args);
  const store: LeaseStore = {
    acquire: wrap(inner.acquire.bind(inner)),
    renew: wrap(inner.renew.bind(inner)),
    release: wrap(inner.release.bind(inner)),
    read: wrap(inner.read.bind(inner)),
    challenge: wrap(inner.challenge.bind(inner)),
    watch: inner.watch.bind(inner),
  };
  return { state, store };
}

it('demotes on time even when its timers fire early', async () => {
  const { sched, store, log, make } = env();
  const { state, store: flaky } = breakable(store);
  const early = {
    // Up to 1 ms early, as Node's timers can be against performance.now().
    setTimeout: (cb: () => void, ms: number) => sched.timers.setTimeout(cb, ms > 1 ? ms - 1 : ms),
    clearTimeout: sched.timers.clearTimeout,
  };
  const a = make('a', { store: flaky, timers: early });
  const b = make('b');
  await a.start();
  await b.start();
  await sched.to(1500);
  state.mode = 'throw';
  await sched.to(8000);
  // a's last renewal was sent at 999 (its timers run 1 ms early): it believes until 999 + 3000 - 300.
  expect(log).toContain('3699 a demoted 1 expired');
  expect(log.indexOf('3699 a demoted 1 expired')).toBeLessThan(log.findIndex((l) => l.includes('b elected')));
  expect(a.isLeader).toBe(false);
  expect(b.isLeader).toBe(true);
});

it('ignores a grant that arrives after its belief would have ended, and gives it back', async () => {
  const { sched, store, log, make } = env();
  const slow: LeaseStore = {
    acquire: (...args) =>
      new Promise((resolve) => {
        const granted = store.acquire(...args);
        sched.timers.setTimeout(() => resolve(granted), 3500);
      }),
    renew: store.renew.bind(store),
    release: store.release.bind(store),
    read: store.read.bind(store),
    challenge: store.challenge.bind(store),
  };
  const a = make('a', { store: slow, renewMs: 1000, leaseMs: 3000 });
  const b = make('b');
  void a.start();
  await sched.to(1);
  void b.start();
  await sched.to(10_000);
  expect(log.filter((l) => l.includes(' a elected'))).toEqual([]);
  const tokens = log.filter((l) => l.includes('elected')).map((l) => Number(l.split(' ').at(-1)));
  expect(tokens).toEqual([...tokens].sort((x, y) => x - y));
  expect(new Set(tokens).size).toBe(tokens.length);
});

it('preemption with three candidates: the highest priority ends up leading and keeps it', async () => {
  const { sched, log, make } = env();
  const a = make('a', { priority: 100 });
  const b = make('b', { priority: 50 });
  const c = make('c', { priority: 200 });
  await a.start();
  await b.start();
  await sched.to(100);
  await c.start();
  await sched.to(3000); // about two renew periods
  expect(c.isLeader).toBe(true);
  const settled = log.length;
  await sched.to(30_000);
  expect(c.isLeader).toBe(true);
  expect(log.slice(settled)).toEqual([]); // no flapping afterwards
  expect(log.some((l) => l.includes('b elected'))).toBe(false);
});

it('a store call that never settles counts as failed, and the elector recovers with the store', async () => {
  const { sched, store, log, make } = env();
  const { state, store: flaky } = breakable(store);
  const a = make('a', { store: flaky });
  await a.start();
  state.mode = 'hang';
  await sched.to(5000);
  expect(a.isLeader).toBe(false);
  state.mode = 'ok';
  await sched.to(12_000);
  expect(a.isLeader).toBe(true);
  expect(log.at(-1)).toMatch(/ a elected 2$/);
});

it('stop() then start() while a call is in flight, which then fails: it campaigns again', async () => {
  const { sched, store, make } = env();
  let failNext = false;
  let calls = 0;
  const s: LeaseStore = {
    acquire: (...args) => {
      calls++;
      return store.acquire(...args);
    },
    renew: (...args) => {
      calls++;
      const fail = failNext;
      return new Promise((resolve, reject) =>
        sched.timers.setTimeout(() => (fail ? reject(new Error('timeout')) : resolve(store.renew(...args))), 50),
      );
    },
    release: store.release.bind(store),
    read: store.read.bind(store),
    challenge: store.challenge.bind(store),
  };
  const a = make('a', { store: s });
  await a.start();
  failNext = true;
  await sched.to(1010); // a renewal sent at 1000 rejects at 1050
  const stopping = a.stop();
  await sched.advance(100);
  await stopping;
  await a.start();
  const before = calls;
  await sched.to(5000);
  expect(calls - before).toBeGreaterThan(2);
  expect(a.isLeader).toBe(true);
  expect(sched.pending).toBeGreaterThan(0);
  const stopped = a.stop();
  await sched.advance(1000);
  await stopped;
});
