/**
 * Unit tests of the leader elector (DESIGN.md section 5) and of MemoryLeaseStore: who leads, the
 * fencing tokens, hand-over on stop (through `watch` and without it), keepalived-style preemption
 * (and `preempt: false`), self-demotion when the store cannot be reached (at exactly
 * sentAt + leaseMs - marginMs on the elector's clock), the store's compare-and-set semantics, the
 * validation of the options, idempotent start/stop and `Symbol.asyncDispose`.
 *
 * Nothing waits for real: electors and the store read the clock of a fake scheduler (`harness.ts`),
 * whose `advance` runs the due timers in order and lets the microtasks run after each one.
 *
 * The bugs these tests found are fixed; test/election/regressions.test.ts keeps them fixed.
 */
import { describe, expect, it } from 'vitest';
import { createElector, type DemotedEvent, type Elector, type ElectorOptions } from '../../src/election/elector.js';
import { MemoryLeaseStore } from '../../src/election/memory-store.js';
import type { LeaseStore } from '../../src/election/store.js';
import { FairpickError, isFairpickError } from '../../src/errors.js';
import { flush, Scheduler } from './harness.js';

const NAME = 'role';

type LogEntry =
  | { readonly who: string; readonly event: 'elected'; readonly token: number; readonly at: number }
  | {
      readonly who: string;
      readonly event: 'demoted';
      readonly token: number;
      readonly reason: DemotedEvent['reason'];
      readonly at: number;
    }
  | { readonly who: string; readonly event: 'error'; readonly message: string; readonly at: number };

type StoreMethod = 'acquire' | 'renew' | 'release' | 'read' | 'challenge';

/**
 * A store wrapper for fault injection and call counting: in mode 'throw' every call rejects, in
 * 'hang' it never settles; `withoutWatch` hides the optional `watch`. With `replyDelay`, an
 * operation takes effect at once but its answer arrives that many ms later on the scheduler.
 */
class FlakyStore implements LeaseStore {
  mode: 'ok' | 'throw' | 'hang' = 'ok';
  readonly calls: Record<StoreMethod, number> = { acquire: 0, renew: 0, release: 0, read: 0, challenge: 0 };
  readonly watch?: NonNullable<LeaseStore['watch']>;

  constructor(
    private readonly inner: LeaseStore,
    withoutWatch = false,
    private readonly replyDelay?: { readonly sched: Scheduler; readonly ms: number },
  ) {
    if (!withoutWatch && inner.watch !== undefined) this.watch = inner.watch.bind(inner);
  }

  private call<T>(method: StoreMethod, run: () => Promise<T>): Promise<T> {
    this.calls[method]++;
    if (this.mode === 'throw') return Promise.reject(new Error(`store unreachable (${method})`));
    if (this.mode === 'hang') return new Promise<T>(() => {});
    const delay = this.replyDelay;
    if (delay === undefined) return run();
    const result = run();
    return new Promise<T>((resolve) => delay.sched.timers.setTimeout(() => resolve(result), delay.ms));
  }

  acquire(name: string, holder: string, priority: number, ttlMs: number) {
    return this.call('acquire', () => this.inner.acquire(name, holder, priority, ttlMs));
  }
  renew(name: string, holder: string, token: number, ttlMs: number) {
    return this.call('renew', () => this.inner.renew(name, holder, token, ttlMs));
  }
  release(name: string, holder: string, token: number) {
    return this.call('release', () => this.inner.release(name, holder, token));
  }
  read(name: string) {
    return this.call('read', () => this.inner.read(name));
  }
  challenge(name: string, id: string, priority: number, ttlMs: number) {
    return this.call('challenge', () => this.inner.challenge(name, id, priority, ttlMs));
  }
}

/** A fake scheduler, a memory store on its clock, an event log and a factory of electors. */
function setup() {
  const sched = new Scheduler();
  const store = new MemoryLeaseStore({ now: sched.now });
  const log: LogEntry[] = [];
  const make = (id: string, options: Partial<ElectorOptions> = {}): Elector => {
    const elector = createElector({ name: NAME, id, store, now: sched.now, timers: sched.timers, ...options });
    elector.on('elected', (e) => log.push({ who: id, event: 'elected', token: e.token, at: e.at }));
    elector.on('demoted', (e) => log.push({ who: id, event: 'demoted', token: e.token, reason: e.reason, at: e.at }));
    elector.on('error', (e) => log.push({ who: id, event: 'error', message: e.message, at: sched.time }));
    return elector;
  };
  /** The log without the 'error' entries. */
  const transitions = () => log.filter((e) => e.event !== 'error');
  return { sched, store, log, make, transitions };
}

describe('who leads', () => {
  it('a lone elector leads with token 1 after its first attempt', async () => {
    const { sched, make, log } = setup();
    const a = make('a');
    expect(a.isLeader).toBe(false);
    expect(a.token).toBeUndefined();
    await a.start();
    expect(a.isLeader).toBe(true);
    expect(a.token).toBe(1);
    expect(log).toEqual([{ who: 'a', event: 'elected', token: 1, at: 0 }]);
    expect(await a.leader()).toBe('a');
    // It keeps the role by renewing: same token, no other event, for many lease periods.
    await sched.advance(30_000);
    expect(a.isLeader).toBe(true);
    expect(a.token).toBe(1);
    expect(log).toHaveLength(1);
    await a.stop();
  });

  it('a second elector of equal priority stays standby: the first come keeps the role', async () => {
    const { sched, make, store, transitions } = setup();
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    expect(b.isLeader).toBe(false);
    expect(b.token).toBeUndefined();
    expect(await b.leader()).toBe('a');
    await sched.advance(30_000);
    expect(a.isLeader).toBe(true);
    expect(b.isLeader).toBe(false);
    expect(transitions()).toEqual([{ who: 'a', event: 'elected', token: 1, at: 0 }]);
    // Equal priority: no challenge either.
    expect((await store.read(NAME))?.challenger).toBeUndefined();
    await a.stop();
    await b.stop();
  });

  it('a lower-priority elector never challenges the leader', async () => {
    const { sched, make, store, transitions } = setup();
    const a = make('a', { priority: 150 });
    const b = make('b', { priority: 50 });
    await a.start();
    await b.start();
    await sched.advance(20_000);
    expect((await store.read(NAME))?.challenger).toBeUndefined();
    expect(transitions()).toEqual([{ who: 'a', event: 'elected', token: 1, at: 0 }]);
    await a.stop();
    await b.stop();
  });
});

describe('stop() resigns at once', () => {
  it('demotes synchronously, releases the lease, and a watching standby is elected at once', async () => {
    const { sched, make, store, transitions } = setup();
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    await sched.advance(500);
    const stopping = a.stop();
    // Demoted before the release has even been answered: nothing acts as leader while it travels.
    expect(a.isLeader).toBe(false);
    expect(a.token).toBeUndefined();
    expect(transitions().at(-1)).toEqual({ who: 'a', event: 'demoted', token: 1, reason: 'stopped', at: 500 });
    await stopping;
    expect(await store.read(NAME)).toBeUndefined();
    // The store's watch wakes b up: it is elected now, not at its next poll (1000) nor at expiry.
    await sched.advance(0);
    expect(b.isLeader).toBe(true);
    expect(b.token).toBe(2);
    expect(transitions().at(-1)).toEqual({ who: 'b', event: 'elected', token: 2, at: 500 });
    await b.stop();
  });

  it('without watch, a standby is elected at its next attempt, without waiting for the lease to expire', async () => {
    const { sched, make, store, transitions } = setup();
    const flaky = new FlakyStore(store, true);
    expect(flaky.watch).toBeUndefined();
    const a = make('a', { store: flaky });
    const b = make('b', { store: flaky });
    await a.start();
    await b.start();
    await sched.advance(1500); // a renewed at 1000: its lease would last until 4000
    await a.stop();
    await sched.to(1999);
    expect(b.isLeader).toBe(false);
    await sched.to(2000); // b's next attempt (it polls every renewMs = 1000)
    expect(b.isLeader).toBe(true);
    expect(transitions().slice(-2)).toEqual([
      { who: 'a', event: 'demoted', token: 1, reason: 'stopped', at: 1500 },
      { who: 'b', event: 'elected', token: 2, at: 2000 },
    ]);
    await b.stop();
  });

  it('leaves no timer behind, leading or not', async () => {
    const { sched, make } = setup();
    const a = make('a');
    const b = make('b');
    await a.start();
    await b.start();
    await sched.advance(2500);
    expect(sched.pending).toBeGreaterThan(0);
    await a.stop();
    await b.stop();
    await sched.advance(0);
    // b may have been woken by the release; once stopped, nothing of either is scheduled.
    expect(sched.pending).toBe(0);
  });

  it('gives back a lease won by an acquire that was in flight when stop() was called', async () => {
    const { sched, store, make, transitions } = setup();
    let letGo: () => void = () => {};
    const gated: LeaseStore = {
      acquire: async (...args) => {
        await new Promise<void>((resolve) => {
          letGo = resolve;
        });
        return store.acquire(...args);
      },
      renew: (...args) => store.renew(...args),
      release: (...args) => store.release(...args),
      read: (...args) => store.read(...args),
      challenge: (...args) => store.challenge(...args),
    };
    const a = make('a', { store: gated });
    const starting = a.start();
    await flush();
    const stopping = a.stop(); // waits for the acquire in flight
    letGo();
    await stopping;
    await starting;
    await sched.advance(0);
    expect(a.isLeader).toBe(false);
    expect(transitions()).toEqual([]);
    expect(await store.read(NAME)).toBeUndefined();
    // The store did grant token 1 (and took it back), so the next leader gets 2.
    expect(await store.acquire(NAME, 'z', 100, 1000)).toEqual({ token: 2 });
  });
});

describe('fencing tokens', () => {
  it('strictly increase across leaderships, restarts and new elector instances on the same store', async () => {
    const { sched, make, transitions } = setup();
    const tokens: number[] = [];
    for (let i = 0; i < 4; i++) {
      const e = make(`n${i}`);
      await e.start();
      tokens.push(e.token as number);
      await sched.advance(700);
      await e.stop();
    }
    // The same instance, stopped and started again.
    const again = make('again');
    for (let i = 0; i < 3; i++) {
      await again.start();
      tokens.push(again.token as number);
      await again.stop();
    }
    // A new instance with an id seen before.
    const n0 = make('n0');
    await n0.start();
    tokens.push(n0.token as number);
    await n0.stop();
    expect(tokens).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const elected = transitions().filter((e) => e.event === 'elected');
    expect(elected.map((e) => e.token)).toEqual(tokens);
  });

  it('keep increasing when leadership passes by expiry and by preemption', async () => {
    const { sched, store, make, transitions } = setup();
    const flakyA = new FlakyStore(store);
    const a = make('a', { store: flakyA, priority: 100 });
    const b = make('b', { priority: 100 });
    const c = make('c', { priority: 200 });
    await a.start();
    await b.start();
    flakyA.mode = 'hang'; // a is cut off: b takes over once a's lease expires in the store
    await sched.advance(6000);
    expect(b.isLeader).toBe(true);
    await c.start(); // c preempts b
    await sched.advance(3000);
    expect(c.isLeader).toBe(true);
    const elected = transitions().filter((e) => e.event === 'elected');
    expect(elected.map((e) => [e.who, e.token])).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    await b.stop();
    await c.stop();
  });
});

describe('preemption (keepalived priority)', () => {
  it('a higher-priority candidate takes over within two renew periods; the old leader is demoted first', async () => {
    const { sched, make, store, transitions } = setup();
    const a = make('a', { priority: 100 });
    const b = make('b', { priority: 200 });
    await a.start();
    await sched.advance(100);
    await b.start(); // at 100: acquire refused, so it challenges
    expect(b.isLeader).toBe(false);
    expect((await store.read(NAME))?.challenger).toEqual({ id: 'b', priority: 200 });
    await sched.to(100 + 2 * 1000);
    expect(b.isLeader).toBe(true);
    expect(a.isLeader).toBe(false);
    const t = transitions();
    expect(t).toEqual([
      { who: 'a', event: 'elected', token: 1, at: 0 },
      { who: 'a', event: 'demoted', token: 1, reason: 'preempted', at: expect.any(Number) },
      { who: 'b', event: 'elected', token: 2, at: expect.any(Number) },
    ]);
    const [, demoted, elected] = t as [LogEntry, LogEntry, LogEntry];
    expect(demoted.at).toBeLessThanOrEqual(elected.at);
    expect(elected.at - 100).toBeLessThanOrEqual(2 * 1000);
    // a stays standby under b from now on: no flapping back.
    await sched.advance(20_000);
    expect(transitions()).toHaveLength(3);
    expect(b.token).toBe(2);
    await a.stop();
    await b.stop();
  });

  it('with preempt: false, a higher-priority candidate waits until the leader stops', async () => {
    const { sched, make, store, transitions } = setup();
    const a = make('a', { priority: 100 });
    const b = make('b', { priority: 200, preempt: false });
    await a.start();
    await b.start();
    await sched.advance(30_000);
    expect(a.isLeader).toBe(true);
    expect(b.isLeader).toBe(false);
    expect((await store.read(NAME))?.challenger).toBeUndefined();
    await a.stop();
    await sched.advance(0);
    expect(b.isLeader).toBe(true);
    expect(transitions().map((e) => [e.who, e.event])).toEqual([
      ['a', 'elected'],
      ['a', 'demoted'],
      ['b', 'elected'],
    ]);
    await b.stop();
  });

  it('with preempt: false, a higher-priority candidate takes over once the leader fails', async () => {
    const { sched, store, make, transitions } = setup();
    const flakyA = new FlakyStore(store);
    const a = make('a', { priority: 100, store: flakyA });
    const b = make('b', { priority: 200, preempt: false });
    await a.start();
    await b.start();
    await sched.to(1000); // a renews: the store's lease now ends at 4000
    flakyA.mode = 'throw';
    await sched.to(3999);
    expect(b.isLeader).toBe(false);
    // The store frees the lease at 4000; b polls every 1000 ms, at 4000 exactly, and wins.
    await sched.to(4000 + 1000);
    expect(b.isLeader).toBe(true);
    const b1 = transitions().find((e) => e.who === 'b');
    expect(b1).toEqual({ who: 'b', event: 'elected', token: 2, at: expect.any(Number) });
    expect((b1 as LogEntry).at).toBeGreaterThanOrEqual(4000);
    expect((b1 as LogEntry).at).toBeLessThanOrEqual(5000);
    await a.stop();
    await b.stop();
  });
});

describe('a leader cut off from the store', () => {
  // Defaults: leaseMs 3000, renewMs 1000, marginMs 300. Elected at 0, renewed at 1000 (sent and
  // answered at once), so the leader believes it leads until 1000 + 3000 - 300 = 3700.
  for (const mode of ['throw', 'hang'] as const) {
    it(`emits 'error', keeps retrying and demotes itself at exactly sentAt + leaseMs - marginMs (store calls ${mode === 'throw' ? 'fail' : 'hang'})`, async () => {
      const { sched, store, make, log, transitions } = setup();
      const flaky = new FlakyStore(store);
      const a = make('a', { store: flaky });
      await a.start();
      await sched.to(1500);
      expect(flaky.calls.renew).toBe(1);
      flaky.mode = mode;
      await sched.to(3700 - 1e-3);
      expect(a.isLeader).toBe(true);
      expect(a.token).toBe(1);
      expect(transitions()).toHaveLength(1);
      if (mode === 'throw') {
        // Failed renewals at 2000, then backing off (125, 250, 500 ms): 2125, 2375, 2875.
        const errors = log.filter((e) => e.event === 'error');
        expect(errors.map((e) => e.at)).toEqual([2000, 2125, 2375, 2875]);
        expect(errors[0]).toMatchObject({ message: 'store unreachable (renew)' });
      } else {
        // The renewal sent at 2000 never came back: it counts as failed after renewMs, and is retried.
        const errors = log.filter((e) => e.event === 'error');
        expect(errors[0]).toMatchObject({ at: 3000, message: 'lease store did not answer within 1000 ms' });
        expect(flaky.calls.renew).toBeGreaterThanOrEqual(2);
      }
      await sched.to(3700);
      expect(a.isLeader).toBe(false);
      expect(a.token).toBeUndefined();
      expect(transitions().at(-1)).toEqual({ who: 'a', event: 'demoted', token: 1, reason: 'expired', at: 3700 });
      if (mode === 'throw') {
        // It keeps trying (as a standby now), backing off to at most renewMs between attempts.
        const before = flaky.calls.acquire + flaky.calls.renew;
        await sched.advance(5000);
        expect(flaky.calls.acquire + flaky.calls.renew - before).toBeGreaterThanOrEqual(5);
        // When the store comes back (its lease expired at 4000), it is elected again with a new token.
        flaky.mode = 'ok';
        await sched.advance(1000);
        expect(a.isLeader).toBe(true);
        expect(a.token).toBe(2);
      }
      // stop() waits for a call in flight, which the elector gives up on after renewMs.
      const stopping = a.stop();
      await sched.advance(1000);
      await stopping;
    });
  }

  it('counts the belief from when the acquire or renewal was sent, not from when it was answered', async () => {
    const { sched, store, make, transitions } = setup();
    const slow = new FlakyStore(store, false, { sched, ms: 200 });
    const a = make('a', { store: slow });
    const starting = a.start();
    await sched.to(200);
    await starting;
    // Sent at 0, answered at 200: it believes until 0 + 3000 - 300.
    expect(transitions()).toEqual([{ who: 'a', event: 'elected', token: 1, at: 200 }]);
    await sched.to(1500); // the renewal sent at 1200 was answered at 1400
    expect(slow.calls.renew).toBe(1);
    slow.mode = 'hang';
    await sched.to(3900 - 1e-3);
    expect(a.isLeader).toBe(true);
    await sched.to(3900); // 1200 + 3000 - 300, not 1400 + 3000 - 300
    expect(a.isLeader).toBe(false);
    expect(transitions().at(-1)).toEqual({ who: 'a', event: 'demoted', token: 1, reason: 'expired', at: 3900 });
    // The store received that renewal at 1200: the lease is free for others from 4200 on.
    expect(await store.acquire(NAME, 'b', 100, 3000)).toBeUndefined();
    await sched.to(4200);
    expect(await store.acquire(NAME, 'b', 100, 3000)).toEqual({ token: 2 });
  });

  it('isLeader turns false at the instant the belief ends, even before the expiry timer has fired', async () => {
    const { sched, store, make, transitions } = setup();
    const flaky = new FlakyStore(store);
    const a = make('a', { store: flaky });
    await a.start();
    await sched.to(1500);
    flaky.mode = 'hang';
    await sched.to(3000);
    // The process is paused (no timer runs) while its clock moves on.
    sched.jump(700 - 1e-3);
    expect(a.isLeader).toBe(true);
    sched.jump(1e-3);
    expect(sched.time).toBe(3700);
    expect(a.isLeader).toBe(false);
    expect(a.token).toBeUndefined();
    expect(transitions().at(-1)?.event).toBe('elected'); // the timer has not run yet
    await sched.advance(0);
    expect(transitions().at(-1)).toEqual({ who: 'a', event: 'demoted', token: 1, reason: 'expired', at: 3700 });
  });

  it("demotes with reason 'lost' when the store answers that the lease is no longer its own", async () => {
    let skew = 0;
    const sched = new Scheduler();
    const store = new MemoryLeaseStore({ now: () => sched.time + skew });
    const reasons: string[] = [];
    const a = createElector({ name: NAME, id: 'a', store, now: sched.now, timers: sched.timers });
    a.on('demoted', (e) => reasons.push(e.reason));
    await a.start();
    skew = 10_000; // the store's clock leaps: the lease expired there
    await sched.to(1000);
    expect(reasons).toEqual(['lost']);
    expect(a.isLeader).toBe(false);
    await sched.to(2000); // the next attempt acquires again
    expect(a.token).toBe(2);
    await a.stop();
  });
});

describe('MemoryLeaseStore', () => {
  function memory() {
    let now = 0;
    const store = new MemoryLeaseStore({ now: () => now });
    return {
      store,
      at: (t: number) => {
        now = t;
      },
    };
  }

  it('acquire: when free, when expired and when held by the same holder; each grant a new token', async () => {
    const { store, at } = memory();
    expect(await store.acquire(NAME, 'a', 100, 1000)).toEqual({ token: 1 });
    expect(await store.acquire(NAME, 'b', 200, 1000)).toBeUndefined();
    at(500);
    expect(await store.acquire(NAME, 'a', 100, 1000)).toEqual({ token: 2 }); // held by me: a new leadership
    at(1499);
    expect(await store.acquire(NAME, 'b', 100, 1000)).toBeUndefined();
    at(1500); // 500 + 1000: expired
    expect(await store.acquire(NAME, 'b', 100, 1000)).toEqual({ token: 3 });
    expect(await store.read(NAME)).toEqual({
      holder: 'b',
      token: 3,
      priority: 100,
      remainingMs: 1000,
      challenger: undefined,
    });
    // Tokens are per name.
    expect(await store.acquire('other', 'a', 100, 1000)).toEqual({ token: 1 });
  });

  it('renew: only by the holder with its current token, and only while the lease lives', async () => {
    const { store, at } = memory();
    await store.acquire(NAME, 'a', 100, 1000);
    await store.acquire(NAME, 'a', 100, 1000); // token 2
    at(600);
    expect(await store.renew(NAME, 'a', 1, 1000)).toBeUndefined(); // an older token
    expect(await store.renew(NAME, 'b', 2, 1000)).toBeUndefined(); // another holder
    expect(await store.renew(NAME, 'a', 2, 1000)).toEqual({
      holder: 'a',
      token: 2,
      priority: 100,
      remainingMs: 1000,
      challenger: undefined,
    });
    at(1599);
    expect((await store.read(NAME))?.remainingMs).toBe(1);
    at(1600);
    expect(await store.read(NAME)).toBeUndefined();
    expect(await store.renew(NAME, 'a', 2, 1000)).toBeUndefined(); // too late
  });

  it('release: only the holder with its token; the token counter survives', async () => {
    const { store } = memory();
    await store.acquire(NAME, 'a', 100, 1000);
    expect(await store.release(NAME, 'b', 1)).toBe(false);
    expect(await store.release(NAME, 'a', 2)).toBe(false);
    expect(await store.read(NAME)).toMatchObject({ holder: 'a', token: 1 });
    expect(await store.release(NAME, 'a', 1)).toBe(true);
    expect(await store.read(NAME)).toBeUndefined();
    expect(await store.release(NAME, 'a', 1)).toBe(false);
    expect(await store.acquire(NAME, 'b', 100, 1000)).toEqual({ token: 2 });
  });

  it('challenge: visible on renew and read until it expires; cleared by a new leadership', async () => {
    const { store, at } = memory();
    await store.challenge(NAME, 'c', 200, 500); // nobody holds it: nothing to challenge
    await store.acquire(NAME, 'a', 100, 1000);
    expect((await store.read(NAME))?.challenger).toBeUndefined();
    await store.challenge(NAME, 'a', 250, 500); // the holder itself: ignored
    expect((await store.read(NAME))?.challenger).toBeUndefined();
    await store.challenge(NAME, 'c', 200, 500);
    expect((await store.renew(NAME, 'a', 1, 1000))?.challenger).toEqual({ id: 'c', priority: 200 });
    await store.challenge(NAME, 'd', 150, 500); // lower than the live challenge: kept as is
    expect((await store.read(NAME))?.challenger).toEqual({ id: 'c', priority: 200 });
    await store.challenge(NAME, 'e', 200, 500); // equal or higher: replaces it
    expect((await store.read(NAME))?.challenger).toEqual({ id: 'e', priority: 200 });
    at(499);
    expect((await store.renew(NAME, 'a', 1, 1000))?.challenger).toEqual({ id: 'e', priority: 200 });
    at(500);
    expect((await store.renew(NAME, 'a', 1, 1000))?.challenger).toBeUndefined();
    await store.challenge(NAME, 'd', 150, 500); // the old one expired: a lower one may take its place
    expect((await store.read(NAME))?.challenger).toEqual({ id: 'd', priority: 150 });
    await store.acquire(NAME, 'a', 100, 1000); // a new leadership starts unchallenged
    expect((await store.read(NAME))?.challenger).toBeUndefined();
  });

  it('watch: called asynchronously after a release, not after a refused one, nor after unwatching', async () => {
    const { store } = memory();
    let calls = 0;
    const unwatch = store.watch(NAME, () => calls++);
    let other = 0;
    store.watch('other', () => other++);
    await store.acquire(NAME, 'a', 100, 1000);
    await flush();
    expect(calls).toBe(0);
    expect(await store.release(NAME, 'b', 1)).toBe(false);
    await flush();
    expect(calls).toBe(0);
    const released = store.release(NAME, 'a', 1);
    expect(calls).toBe(0); // not from within the store call
    await released;
    await flush();
    expect(calls).toBe(1);
    unwatch();
    await store.acquire(NAME, 'a', 100, 1000);
    await store.release(NAME, 'a', 2);
    await flush();
    expect(calls).toBe(1);
    expect(other).toBe(0);
  });

  it('rejects bad arguments with ERR_INVALID_ARGUMENT', async () => {
    const { store } = memory();
    const bad: Array<[string, () => Promise<unknown>]> = [
      ['name', () => store.acquire('', 'a', 100, 1000)],
      ['holder', () => store.acquire(NAME, '', 100, 1000)],
      ['ttlMs', () => store.acquire(NAME, 'a', 100, 0)],
      ['ttlMs', () => store.acquire(NAME, 'a', 100, Number.NaN)],
      ['ttlMs', () => store.renew(NAME, 'a', 1, Number.POSITIVE_INFINITY)],
      ['ttlMs', () => store.challenge(NAME, 'a', 1, -1)],
    ];
    for (const [field, call] of bad) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT'), field).toBe(true);
      expect((error as Error).message).toContain(field);
    }
    expect(() => new MemoryLeaseStore({ now: 5 as never })).toThrow(/options\.now/);
  });
});

describe('createElector validates its options', () => {
  const store = new MemoryLeaseStore();
  const base = { name: NAME, id: 'a', store };
  const withoutMethod = (m: StoreMethod) => {
    const s: Record<string, unknown> = {
      acquire: store.acquire.bind(store),
      renew: store.renew.bind(store),
      release: store.release.bind(store),
      read: store.read.bind(store),
      challenge: store.challenge.bind(store),
    };
    delete s[m];
    return s;
  };
  const cases: Array<[string, unknown, string]> = [
    ['options not an object', 42, 'options'],
    ['empty name', { ...base, name: '' }, 'options.name'],
    ['name not a string', { ...base, name: 7 }, 'options.name'],
    ['empty id', { ...base, id: '' }, 'options.id'],
    ['leaseMs 0', { ...base, leaseMs: 0 }, 'options.leaseMs'],
    ['leaseMs 1.5', { ...base, leaseMs: 1.5 }, 'options.leaseMs'],
    ['leaseMs negative', { ...base, leaseMs: -3000 }, 'options.leaseMs'],
    ['leaseMs a string', { ...base, leaseMs: '3000' }, 'options.leaseMs'],
    ['renewMs equal to leaseMs', { ...base, leaseMs: 3000, renewMs: 3000 }, 'options.renewMs'],
    ['renewMs above leaseMs', { ...base, leaseMs: 3000, renewMs: 5000 }, 'options.renewMs'],
    ['renewMs 0', { ...base, renewMs: 0 }, 'options.renewMs'],
    ['renewMs 2.5', { ...base, renewMs: 2.5 }, 'options.renewMs'],
    ['marginMs = leaseMs - renewMs', { ...base, leaseMs: 3000, renewMs: 1000, marginMs: 2000 }, 'options.marginMs'],
    ['marginMs above leaseMs', { ...base, marginMs: 5000 }, 'options.marginMs'],
    ['marginMs negative', { ...base, marginMs: -1 }, 'options.marginMs'],
    ['marginMs NaN', { ...base, marginMs: Number.NaN }, 'options.marginMs'],
    ['priority 0', { ...base, priority: 0 }, 'options.priority'],
    ['priority 256', { ...base, priority: 256 }, 'options.priority'],
    ['priority 1.5', { ...base, priority: 1.5 }, 'options.priority'],
    ['priority a string', { ...base, priority: '100' }, 'options.priority'],
    ['store missing', { name: NAME, id: 'a' }, 'options.store'],
    ['store null', { ...base, store: null }, 'options.store'],
    ...(['acquire', 'renew', 'release', 'read', 'challenge'] as const).map((m): [string, unknown, string] => [
      `store without ${m}`,
      { ...base, store: withoutMethod(m) },
      'options.store',
    ]),
    ['preempt a string', { ...base, preempt: 'yes' }, 'options.preempt'],
    ['preempt a number', { ...base, preempt: 1 }, 'options.preempt'],
    ['now not a function', { ...base, now: 0 }, 'options.now'],
    ['timers without clearTimeout', { ...base, timers: { setTimeout() {} } }, 'options.timers'],
  ];
  for (const [label, options, field] of cases) {
    it(`rejects ${label}`, () => {
      let thrown: unknown;
      try {
        createElector(options as ElectorOptions);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(FairpickError);
      expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
      expect((thrown as Error).message.startsWith(`${field} must be`)).toBe(true);
    });
  }

  it('accepts the limits and a store without watch', () => {
    const { acquire, renew, release, read, challenge } = store;
    const plain = { acquire, renew, release, read, challenge } as LeaseStore;
    for (const options of [
      { ...base, priority: 1 },
      { ...base, priority: 255 },
      { ...base, marginMs: 0 },
      { ...base, leaseMs: 3000, renewMs: 2999, marginMs: 0.5 },
      { ...base, leaseMs: 3 },
      { ...base, preempt: false },
      { ...base, store: plain },
    ]) {
      expect(() => createElector(options)).not.toThrow();
    }
  });

  it('on() rejects an unknown event or a listener that is not a function, and unsubscribes', async () => {
    const { make, sched } = setup();
    const a = make('a');
    expect(() => a.on('leader' as 'elected', () => {})).toThrow(/event must be/);
    expect(() => a.on('elected', 'x' as never)).toThrow(/listener must be a function/);
    let seen = 0;
    const off = a.on('elected', () => seen++);
    off();
    await a.start();
    await sched.advance(0);
    expect(seen).toBe(0);
    await a.stop();
  });
});

describe('lifecycle', () => {
  it('start() and stop() are idempotent', async () => {
    const { sched, store, make, transitions } = setup();
    const flaky = new FlakyStore(store);
    const a = make('a', { store: flaky });
    await Promise.all([a.start(), a.start()]);
    await a.start();
    expect(flaky.calls.acquire).toBe(1);
    await sched.advance(10_000);
    expect(flaky.calls.acquire).toBe(1);
    expect(flaky.calls.renew).toBe(10); // one timer chain, not several
    await Promise.all([a.stop(), a.stop()]);
    await a.stop();
    expect(flaky.calls.release).toBe(1);
    expect(transitions().map((e) => e.event)).toEqual(['elected', 'demoted']);
    expect(sched.pending).toBe(0);
    // Stopping a standby that never led: no event, no release.
    const b = make('b', { store: flaky });
    await b.stop();
    expect(flaky.calls.release).toBe(1);
  });

  it('Symbol.asyncDispose stops and resigns (await using, and called directly)', async () => {
    const { sched, store, make, transitions } = setup();
    {
      await using a = make('a');
      await a.start();
      expect(a.isLeader).toBe(true);
    }
    expect(await store.read(NAME)).toBeUndefined();
    expect(transitions()).toEqual([
      { who: 'a', event: 'elected', token: 1, at: 0 },
      { who: 'a', event: 'demoted', token: 1, reason: 'stopped', at: 0 },
    ]);
    expect(sched.pending).toBe(0);
    const b = make('b');
    await b.start();
    expect(b.token).toBe(2);
    await b[Symbol.asyncDispose]();
    expect(b.isLeader).toBe(false);
    expect(await store.read(NAME)).toBeUndefined();
    expect(sched.pending).toBe(0);
  });
});
