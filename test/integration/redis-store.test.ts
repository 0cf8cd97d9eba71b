import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createElector, type DemotedEvent, type Elector, isFairpickError } from '../../src/index.js';
import { type RedisClientLike, RedisLeaseStore } from '../../src/redis/index.js';
import { serviceAvailable, uniqueName } from './services.js';

const up = await serviceAvailable(6379);
const REDIS_URL = 'redis://127.0.0.1:6379';
/** Every key this run writes starts with it; afterAll deletes them. */
const RUN = `${uniqueName('fairpick_test')}:`;

/** One connection of either client, with a way to cut it as a network failure would. */
interface Connection {
  readonly client: RedisClientLike;
  /** The connection's CLIENT SETNAME, which its duplicates share. */
  readonly name: string;
  /** Drops the connection without reconnecting: the store's calls fail from now on. */
  cut(): void;
  /** The same client, except that its duplicates cannot subscribe. */
  withoutPubSub(): RedisClientLike;
  close(): Promise<void>;
}

interface ClientKind {
  readonly kind: 'ioredis' | 'node-redis';
  connect(): Promise<Connection>;
}

const KINDS: readonly ClientKind[] = [
  {
    kind: 'ioredis',
    async connect() {
      const name = uniqueName('io');
      const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, connectionName: name });
      client.on('error', () => undefined);
      await client.ping();
      return {
        client,
        name,
        cut: () => client.disconnect(),
        withoutPubSub: () => ({
          call: (command: string, ...args: string[]) => client.call(command, ...args),
          evalsha: () => undefined,
          status: client.status,
          duplicate: () => ({
            subscribe: () => Promise.reject(new Error('subscribing is refused')),
            unsubscribe: () => Promise.resolve(),
            on: () => undefined,
            disconnect: () => undefined,
          }),
        }),
        close: async () => {
          if (client.status === 'end') return;
          await client.quit().catch(() => client.disconnect());
        },
      };
    },
  },
  {
    kind: 'node-redis',
    async connect() {
      const name = uniqueName('nr');
      const client = createClient({ url: REDIS_URL, name });
      client.on('error', () => undefined);
      await client.connect();
      return {
        client,
        name,
        cut: () => client.destroy(),
        withoutPubSub: () => ({
          sendCommand: (args: string[]) => client.sendCommand(args),
          isOpen: client.isOpen,
          duplicate: () => ({
            connect: () => Promise.reject(new Error('connecting is refused')),
            subscribe: () => Promise.reject(new Error('subscribing is refused')),
            unsubscribe: () => Promise.resolve(),
            on: () => undefined,
          }),
        }),
        close: async () => {
          if (client.isOpen) await client.close();
        },
      };
    },
  },
];

/** Polls `condition` every 20 ms until it holds, failing after a generous deadline (no duration is asserted). */
async function until(condition: () => boolean | Promise<boolean>, what: string, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe.skipIf(!up)(
  up
    ? 'RedisLeaseStore against Redis on 127.0.0.1:6379'
    : 'RedisLeaseStore (skipped: Redis not reachable on 127.0.0.1:6379)',
  () => {
    afterAll(async () => {
      const admin = new Redis(REDIS_URL);
      try {
        let cursor = '0';
        do {
          const [next, keys] = await admin.scan(cursor, 'MATCH', `${RUN}*`, 'COUNT', 1000);
          if (keys.length > 0) await admin.del(...keys);
          cursor = next;
        } while (cursor !== '0');
      } finally {
        await admin.quit();
      }
    });

    it('refuses a client it does not recognise, a bad prefix, and lease names that would share keys', async () => {
      const { client, close } = await (KINDS[0] as ClientKind).connect();
      try {
        for (const bad of [undefined, null, {}, { call() {} }, 'redis://127.0.0.1']) {
          expect(() => new RedisLeaseStore(bad as never)).toThrow(
            expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
          );
        }
        for (const prefix of [5, '', null]) {
          expect(() => new RedisLeaseStore(client, { prefix } as never)).toThrow(
            expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
          );
        }
        const store = new RedisLeaseStore(client, { prefix: `${RUN}validation:` });
        for (const name of ['', 'pair:token', 'pair:reserved']) {
          const error = await store.acquire(name, 'a', 100, 1000).catch((e: unknown) => e);
          expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
        }
        await expect(store.acquire('pair', 'a', 100, 0)).rejects.toThrow(/ttlMs/);
        await expect(store.acquire('pair', '', 100, 1000)).rejects.toThrow(/holder/);
        await expect(store.read('pair:token')).resolves.toBeUndefined();
        await expect(store.release('pair:token', 'a', 1)).resolves.toBe(false);
      } finally {
        await close();
      }
    });

    describe.each(KINDS)('with $kind', ({ kind, connect }) => {
      const prefix = `${RUN}${kind}:`;
      const cleanups: (() => Promise<void>)[] = [];

      afterEach(async () => {
        // Newest first: electors stop before their stores close, stores before their clients.
        for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
      });

      async function open(): Promise<Connection> {
        const connection = await connect();
        cleanups.push(() => connection.close());
        return connection;
      }

      async function newStore(options: { prefix?: string } = { prefix }): Promise<RedisLeaseStore> {
        const { client } = await open();
        const store = new RedisLeaseStore(client, options);
        cleanups.push(() => store.close());
        return store;
      }

      describe('the store contract', () => {
        it('acquires a free lease, refuses another holder, and hands out a new token on every acquire', async () => {
          const store = await newStore();
          const first = await store.acquire('acquire', 'a', 100, 5000);
          expect(first).toEqual({ token: expect.any(Number) });
          expect(await store.acquire('acquire', 'b', 200, 5000)).toBeUndefined();
          const again = await store.acquire('acquire', 'a', 100, 5000);
          expect(again?.token).toBeGreaterThan(first?.token as number);
          const record = await store.read('acquire');
          expect(record).toMatchObject({ holder: 'a', token: again?.token, priority: 100, challenger: undefined });
          expect(record?.remainingMs).toBeGreaterThan(0);
          expect(record?.remainingMs).toBeLessThanOrEqual(5000);
          expect(await store.read('acquire-nobody')).toBeUndefined();
        });

        it('renews only for the holder with the token of the current leadership', async () => {
          const store = await newStore();
          const old = await store.acquire('renew', 'a', 100, 5000);
          const grant = await store.acquire('renew', 'a', 100, 5000);
          const token = grant?.token as number;
          expect(await store.renew('renew', 'a', old?.token as number, 5000)).toBeUndefined();
          expect(await store.renew('renew', 'b', token, 5000)).toBeUndefined();
          expect(await store.renew('renew', 'a', token + 1, 5000)).toBeUndefined();
          const renewed = await store.renew('renew', 'a', token, 8000);
          expect(renewed).toMatchObject({ holder: 'a', token, priority: 100, challenger: undefined });
          expect(renewed?.remainingMs).toBeGreaterThan(5000);
          expect(renewed?.remainingMs).toBeLessThanOrEqual(8000);
          expect(await store.renew('renew-nobody', 'a', token, 5000)).toBeUndefined();
        });

        it('releases only its own lease, and then another can take it', async () => {
          const store = await newStore();
          const token = (await store.acquire('release', 'a', 100, 5000))?.token as number;
          expect(await store.release('release', 'a', token + 1)).toBe(false);
          expect(await store.release('release', 'b', token)).toBe(false);
          expect((await store.read('release'))?.holder).toBe('a');
          expect(await store.release('release', 'a', token)).toBe(true);
          expect(await store.read('release')).toBeUndefined();
          expect(await store.release('release', 'a', token)).toBe(false);
          const next = await store.acquire('release', 'b', 100, 5000);
          expect(next?.token).toBeGreaterThan(token);
        });

        it("expires a lease by Redis's clock when it is not renewed", async () => {
          const store = await newStore();
          const token = (await store.acquire('expiry', 'a', 100, 200))?.token as number;
          await until(async () => (await store.read('expiry')) === undefined, 'the 200 ms lease expired');
          expect(await store.renew('expiry', 'a', token, 200)).toBeUndefined();
          expect(await store.release('expiry', 'a', token)).toBe(false);
          const taken = await store.acquire('expiry', 'b', 100, 5000);
          expect(taken?.token).toBeGreaterThan(token);
        });

        it('shows a live challenge on renew and read; a lower one does not replace it; it lapses', async () => {
          const store = await newStore();
          const token = (await store.acquire('challenge', 'a', 100, 5000))?.token as number;
          await store.challenge('challenge', 'a', 250, 5000); // the holder cannot challenge itself
          expect((await store.renew('challenge', 'a', token, 5000))?.challenger).toBeUndefined();
          await store.challenge('challenge', 'c', 150, 5000);
          await store.challenge('challenge', 'd', 120, 5000);
          expect((await store.renew('challenge', 'a', token, 5000))?.challenger).toEqual({ id: 'c', priority: 150 });
          expect((await store.read('challenge'))?.challenger).toEqual({ id: 'c', priority: 150 });
          await store.challenge('challenge', 'e', 150, 200); // equal priority replaces it
          expect((await store.read('challenge'))?.challenger).toEqual({ id: 'e', priority: 150 });
          await until(
            async () => (await store.renew('challenge', 'a', token, 5000))?.challenger === undefined,
            'the 200 ms challenge lapsed',
          );
          await store.challenge('challenge', 'd', 120, 5000); // a lapsed challenge is replaced by any
          expect((await store.read('challenge'))?.challenger).toEqual({ id: 'd', priority: 120 });
          await store.challenge('challenge-nobody', 'd', 120, 5000); // no lease: nothing to challenge
          expect(await store.read('challenge-nobody')).toBeUndefined();
        });

        it('reserves a lease released under a live challenge for candidates of at least its priority', async () => {
          const store = await newStore();
          const token = (await store.acquire('reserved', 'a', 100, 5000))?.token as number;
          await store.challenge('reserved', 'c', 150, 5000);
          expect(await store.release('reserved', 'a', token)).toBe(true);
          expect(await store.acquire('reserved', 'b', 100, 5000)).toBeUndefined();
          expect(await store.acquire('reserved', 'a', 149, 5000)).toBeUndefined();
          const won = await store.acquire('reserved', 'e', 150, 5000); // the challenger's priority is enough
          expect(won?.token).toBeGreaterThan(token);
          // The reservation is used up: a release without a challenge leaves the lease free to all.
          expect(await store.release('reserved', 'e', won?.token as number)).toBe(true);
          expect(await store.acquire('reserved', 'b', 1, 5000)).toBeDefined();
        });

        it('lets anyone take a reserved lease once the challenge has ended', async () => {
          const store = await newStore();
          const token = (await store.acquire('reserve-ends', 'a', 100, 5000))?.token as number;
          await store.challenge('reserve-ends', 'c', 200, 300);
          expect(await store.release('reserve-ends', 'a', token)).toBe(true);
          expect(await store.acquire('reserve-ends', 'b', 100, 5000)).toBeUndefined();
          await until(
            async () => (await store.acquire('reserve-ends', 'b', 100, 5000)) !== undefined,
            'the 300 ms challenge ended and the reservation with it',
          );
          expect((await store.read('reserve-ends'))?.holder).toBe('b');
        });

        it('keeps tokens growing across new store instances with the same prefix', async () => {
          const first = await newStore();
          const t1 = (await first.acquire('fencing', 'a', 100, 5000))?.token as number;
          expect(await first.release('fencing', 'a', t1)).toBe(true);
          const second = await newStore(); // another connection and instance, same prefix
          const t2 = (await second.acquire('fencing', 'b', 100, 5000))?.token as number;
          expect(t2).toBeGreaterThan(t1);
          expect(await second.acquire('fencing', 'a', 100, 5000)).toBeUndefined();
          const other = await newStore({ prefix: `${prefix}other:` }); // another prefix is another store
          expect(await other.read('fencing')).toBeUndefined();
          expect((await other.acquire('fencing', 'a', 100, 5000))?.token).toBe(1);
        });

        it('watch hears every release on the lease and closes its subscriber after the last watcher', async () => {
          const { client, name } = await open();
          const store = new RedisLeaseStore(client, { prefix });
          cleanups.push(() => store.close());
          const admin = new Redis(REDIS_URL);
          cleanups.push(async () => void (await admin.quit()));
          const channel = `${prefix}watch:events`;
          const subscribers = async () => Number(((await admin.pubsub('NUMSUB', channel)) as unknown[])[1]);
          // The client's own connection, plus the store's subscriber while anything is watched.
          const connections = async () =>
            String(await admin.client('LIST'))
              .split('\n')
              .filter((line) => line.includes(` name=${name} `)).length;
          expect(await connections()).toBe(1);

          let heard = 0;
          let heardOther = 0;
          const stop = store.watch('watch', () => heard++);
          const stopOther = store.watch('watch-other', () => heardOther++);
          await until(async () => (await subscribers()) === 1, 'the store subscribed');
          const token = (await store.acquire('watch', 'a', 100, 5000))?.token as number;
          expect(await store.release('watch', 'a', token)).toBe(true);
          await until(() => heard === 1, 'the listener heard the release');
          expect(heardOther).toBe(0);

          stop();
          stop(); // idempotent
          await until(async () => (await subscribers()) === 0, 'the channel was unsubscribed');
          expect(await connections()).toBe(2);
          stopOther();
          await until(async () => (await connections()) === 1, 'the subscriber connection closed');
          const again = (await store.acquire('watch', 'a', 100, 5000))?.token as number;
          await store.release('watch', 'a', again);
          await sleep(100);
          expect(heard).toBe(1);
        });
      });

      describe('with electors', () => {
        // Renewals every 500 ms, each call given 500 ms: a loaded machine's pauses of a few hundred
        // ms must not cost a leader its lease (the assertions below would see a demotion).
        const LEASE_MS = 1500;

        async function elector(
          id: string,
          name: string,
          options: { priority?: number; pubSub?: boolean } = {},
        ): Promise<{ elector: Elector; connection: Connection; demoted: DemotedEvent[]; notified: () => number }> {
          const connection = await open();
          const { pubSub = true, ...electorOptions } = options;
          const client = pubSub ? connection.client : connection.withoutPubSub();
          const store = new RedisLeaseStore(client, { prefix });
          cleanups.push(() => store.close());
          // Count the store's watch notifications, to see that a hand-over came through pub/sub.
          let notifications = 0;
          const watch = store.watch.bind(store);
          store.watch = (lease, listener) =>
            watch(lease, () => {
              notifications++;
              listener();
            });
          const e = createElector({ name, id, store, leaseMs: LEASE_MS, ...electorOptions });
          cleanups.push(() => e.stop());
          e.on('error', () => undefined); // a cut connection fails every call; the elector retries
          const demoted: DemotedEvent[] = [];
          e.on('demoted', (event) => demoted.push(event));
          return { elector: e, connection, demoted, notified: () => notifications };
        }

        it('elects one of two electors and keeps it through renewals', async () => {
          const a = await elector('a', 'elect');
          const b = await elector('b', 'elect');
          await Promise.all([a.elector.start(), b.elector.start()]);
          await until(() => a.elector.isLeader || b.elector.isLeader, 'one is elected');
          const [leader, standby] = a.elector.isLeader ? [a, b] : [b, a];
          const token = leader.elector.token;
          await sleep(LEASE_MS); // three renewals (every LEASE_MS / 3)
          expect(leader.elector.isLeader).toBe(true);
          expect(leader.elector.token).toBe(token);
          expect(standby.elector.isLeader).toBe(false);
          expect(leader.demoted).toEqual([]);
          expect(await standby.elector.leader()).toBe(leader === a ? 'a' : 'b');
        });

        it('stop() resigns and the other takes over through watch', async () => {
          const a = await elector('a', 'handover');
          await a.elector.start();
          await until(() => a.elector.isLeader, 'a is elected');
          const b = await elector('b', 'handover');
          await b.elector.start();
          expect(b.elector.isLeader).toBe(false);
          // Both stores subscribe in the background after start(); wait for that, then resign.
          const admin = new Redis(REDIS_URL);
          cleanups.push(async () => void (await admin.quit()));
          await until(
            async () => Number(((await admin.pubsub('NUMSUB', `${prefix}handover:events`)) as unknown[])[1]) === 2,
            'both electors watch the lease',
          );
          const oldToken = a.elector.token as number;
          await a.elector.stop();
          expect(a.demoted.map((d) => d.reason)).toEqual(['stopped']);
          await until(() => b.elector.isLeader, 'the standby took over');
          expect(b.elector.token).toBeGreaterThan(oldToken);
          expect(b.notified()).toBeGreaterThan(0);
        });

        it('falls back to polling when the store cannot subscribe', async () => {
          const a = await elector('a', 'no-pubsub', { pubSub: false });
          await a.elector.start();
          await until(() => a.elector.isLeader, 'a is elected');
          const b = await elector('b', 'no-pubsub', { pubSub: false });
          await b.elector.start();
          const oldToken = a.elector.token as number;
          await a.elector.stop();
          await until(() => b.elector.isLeader, 'the standby took over at its next poll');
          expect(b.elector.token).toBeGreaterThan(oldToken);
          expect(b.notified()).toBe(0);
        });

        it('hands out increasing fencing tokens across elector restarts', async () => {
          const tokens: number[] = [];
          for (let i = 0; i < 3; i++) {
            const a = await elector('a', 'restarts');
            await a.elector.start();
            await until(() => a.elector.isLeader, 'elected');
            tokens.push(a.elector.token as number);
            await a.elector.stop();
          }
          expect(tokens[1]).toBeGreaterThan(tokens[0] as number);
          expect(tokens[2]).toBeGreaterThan(tokens[1] as number);
        });

        it('a leader cut off from Redis demotes itself (expired) before the other takes over', async () => {
          const a = await elector('a', 'cut');
          await a.elector.start();
          await until(() => a.elector.isLeader, 'a is elected');
          const b = await elector('b', 'cut');
          let aLeadWhenBElected: boolean | undefined;
          b.elector.on('elected', () => {
            aLeadWhenBElected = a.elector.isLeader;
          });
          await b.elector.start();
          const oldToken = a.elector.token as number;
          a.connection.cut();
          await until(() => a.demoted.length > 0, 'the cut leader demoted itself');
          expect(a.demoted.map((d) => d.reason)).toEqual(['expired']);
          await until(() => b.elector.isLeader, 'the other took over');
          expect(aLeadWhenBElected).toBe(false);
          expect(b.elector.token).toBeGreaterThan(oldToken);
        });

        it('a higher-priority elector started later takes over (preempted)', async () => {
          const low = await elector('low', 'preempt', { priority: 100 });
          await low.elector.start();
          await until(() => low.elector.isLeader, 'low is elected');
          const oldToken = low.elector.token as number;
          const high = await elector('high', 'preempt', { priority: 200 });
          let lowLeadWhenHighElected: boolean | undefined;
          high.elector.on('elected', () => {
            lowLeadWhenHighElected = low.elector.isLeader;
          });
          await high.elector.start();
          await until(() => high.elector.isLeader, 'the higher priority took over');
          expect(low.demoted.map((d) => d.reason)).toEqual(['preempted']);
          expect(lowLeadWhenHighElected).toBe(false);
          expect(high.elector.token).toBeGreaterThan(oldToken);
          expect(await high.elector.leader()).toBe('high');
        });
      });
    });

    it('ioredis with enableOfflineQueue false: the watch still subscribes, and a resign hands over at once', async () => {
      const clients: Redis[] = [];
      const stores: RedisLeaseStore[] = [];
      const electors: Elector[] = [];
      try {
        const make = async (id: string) => {
          const client = new Redis(REDIS_URL, {
            lazyConnect: true,
            enableOfflineQueue: false,
            maxRetriesPerRequest: 1,
          });
          client.on('error', () => undefined);
          clients.push(client);
          await client.connect();
          const store = new RedisLeaseStore(client, { prefix: RUN });
          stores.push(store);
          // A lease and renewals far longer than the wait below: only the release, heard through
          // the watch, can elect the standby in time.
          const e = createElector({ name: 'offline-queue', id, store, leaseMs: 60_000, renewMs: 20_000 });
          electors.push(e);
          return e;
        };
        const a = await make('a');
        await a.start();
        await until(() => a.isLeader, 'a is elected');
        const b = await make('b');
        await b.start();
        const admin = new Redis(REDIS_URL);
        clients.push(admin);
        await until(
          async () => Number(((await admin.pubsub('NUMSUB', `${RUN}offline-queue:events`)) as unknown[])[1]) >= 1,
          "b's watch subscribed",
        );
        await a.stop();
        await until(() => b.isLeader, 'b elected through the watch', 10_000);
      } finally {
        for (const e of electors) await e.stop();
        for (const store of stores) await store.close();
        for (const client of clients) client.disconnect();
      }
    });
  },
);
