/**
 * PostgresLeaseStore (fairpick/postgres) against a real PostgreSQL on 127.0.0.1:5432 (database
 * `test`): the schema, the LeaseStore contract as MemoryLeaseStore defines it (compare-and-set,
 * fencing tokens that survive releases and new store instances, expiry by the server's clock,
 * challenges and the reservation they leave on release), one statement per operation, races of
 * parallel acquires, LISTEN/NOTIFY hand-over, and real electors on real timers.
 *
 * Each run works in its own table (dropped afterwards) and ends every pool it opens. Nothing asserts
 * a duration: waits poll for a condition until a generous deadline.
 */
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createElector, type DemotedEvent, type Elector } from '../../src/election/elector.js';
import { MemoryLeaseStore } from '../../src/election/memory-store.js';
import type { LeaseStore } from '../../src/election/store.js';
import { isFairpickError } from '../../src/errors.js';
import { type PgQueryable, PostgresLeaseStore } from '../../src/postgres/index.js';
import { serviceAvailable, uniqueName } from './services.js';

const up = await serviceAvailable(5432);
const CONNECTION = { host: '127.0.0.1', port: 5432, database: 'test', user: process.env.PGUSER ?? 'postgres' };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `condition` every 20 ms until it holds; fails after `timeoutMs` (a deadline, not a claim). */
async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

function expectInvalid(run: () => unknown, field: string): void {
  try {
    run();
  } catch (error) {
    expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT'), String(error)).toBe(true);
    expect((error as Error).message).toContain(field);
    return;
  }
  throw new Error(`expected ERR_INVALID_ARGUMENT for ${field}`);
}

async function expectRejectsInvalid(run: () => Promise<unknown>, field: string): Promise<void> {
  const error = await run().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT'), String(error)).toBe(true);
  expect((error as Error).message).toContain(field);
}

describe('PostgresLeaseStore: options and arguments (no database needed)', () => {
  const queries: string[] = [];
  const fake: PgQueryable = {
    query: async (text) => {
      queries.push(text);
      return { rows: [] };
    },
  };

  it('rejects a pool without query, and bad options, with ERR_INVALID_ARGUMENT', () => {
    for (const pool of [null, undefined, 'pool', 42, {}, { query: 'no' }]) {
      expectInvalid(() => new PostgresLeaseStore(pool as unknown as PgQueryable), 'pool');
    }
    expectInvalid(() => new PostgresLeaseStore(fake, 'x' as never), 'options');
    const badTables = [
      '',
      'bad-name',
      '1leases',
      'a.b.c',
      'a.',
      '.a',
      'x; DROP TABLE y',
      '"quoted"',
      'a'.repeat(64),
      42,
    ];
    for (const table of badTables) {
      expectInvalid(() => new PostgresLeaseStore(fake, { table: table as string }), 'options.table');
    }
    for (const channel of ['', 'has space', 'a.b', 'a'.repeat(64), 7]) {
      expectInvalid(() => new PostgresLeaseStore(fake, { channel: channel as string }), 'options.channel');
    }
    for (const listen of [42, 'client', {}, { query: () => undefined }, true]) {
      expectInvalid(() => new PostgresLeaseStore(fake, { listen: listen as never }), 'options.listen');
    }
  });

  it('accepts plain, schema-qualified and mixed-case names', () => {
    for (const table of ['fairpick_leases', 'ha.leases', 'Leases', '_x1', 'a'.repeat(63)]) {
      expect(new PostgresLeaseStore(fake, { table })).toBeInstanceOf(PostgresLeaseStore);
    }
    expect(new PostgresLeaseStore(fake, { channel: 'ha_events', listen: false })).toBeInstanceOf(PostgresLeaseStore);
  });

  it('validates operation arguments before sending anything', async () => {
    const store = new PostgresLeaseStore(fake);
    queries.length = 0;
    await expectRejectsInvalid(() => store.acquire('', 'a', 100, 1000), 'name');
    await expectRejectsInvalid(() => store.acquire('n', '', 100, 1000), 'holder');
    await expectRejectsInvalid(() => store.acquire('n', 'a', 100, 0), 'ttlMs');
    await expectRejectsInvalid(() => store.acquire('n', 'a', 100, Number.POSITIVE_INFINITY), 'ttlMs');
    await expectRejectsInvalid(() => store.acquire('n', 'a', 1.5, 1000), 'priority');
    await expectRejectsInvalid(() => store.renew('n', 'a', 1, -1), 'ttlMs');
    await expectRejectsInvalid(() => store.challenge('n', 'b', 2 ** 31, 1000), 'priority');
    expectInvalid(() => store.watch('', () => {}), 'name');
    expectInvalid(() => store.watch('n', 'no' as never), 'listener');
    // A token no lease can have is simply not held, as in MemoryLeaseStore.
    expect(await store.renew('n', 'a', 1.5, 1000)).toBeUndefined();
    expect(await store.release('n', 'a', Number.NaN)).toBe(false);
    expect(queries).toEqual([]);
  });

  it('watch does nothing without a LISTEN connection (a plain queryable, or listen: false)', async () => {
    for (const store of [new PostgresLeaseStore(fake), new PostgresLeaseStore(fake, { listen: false })]) {
      const stop = store.watch('n', () => {});
      expect(typeof stop).toBe('function');
      stop();
      await store.close();
    }
  });
});

describe.skipIf(!up)(
  up ? 'PostgresLeaseStore on PostgreSQL' : 'PostgresLeaseStore (skipped: PostgreSQL not reachable on 127.0.0.1:5432)',
  () => {
    const table = uniqueName('fairpick_leases');
    const pools: pg.Pool[] = [];
    const ended = new Set<pg.Pool>();
    const stores: PostgresLeaseStore[] = [];
    let pool: pg.Pool;
    let store: PostgresLeaseStore;
    let leases = 0;
    /** A lease name of its own for each test. */
    const lease = () => `lease-${++leases}`;

    const newPool = (max = 4): pg.Pool => {
      const p = new pg.Pool({ ...CONNECTION, max });
      // An idle client that loses its connection must not crash the run.
      p.on('error', () => {});
      pools.push(p);
      return p;
    };
    const newStore = (queryable: PgQueryable, options: ConstructorParameters<typeof PostgresLeaseStore>[1] = {}) => {
      const s = new PostgresLeaseStore(queryable, { table, ...options });
      stores.push(s);
      return s;
    };
    const endPool = (p: pg.Pool): Promise<void> => {
      ended.add(p);
      return p.end();
    };

    beforeAll(async () => {
      pool = newPool(12);
      store = newStore(pool);
      await store.ensureSchema();
    });

    afterAll(async () => {
      await Promise.all(stores.map((s) => s.close()));
      if (pool !== undefined && !ended.has(pool)) await pool.query(`DROP TABLE IF EXISTS "${table}"`);
      await Promise.all(pools.filter((p) => !ended.has(p)).map((p) => endPool(p)));
    });

    describe('schema', () => {
      it('ensureSchema is idempotent, also when several stores run it at once', async () => {
        const other = newStore(newPool());
        await Promise.all([store.ensureSchema(), store.ensureSchema(), other.ensureSchema()]);
        await store.ensureSchema();
        const { rows } = await pool.query(
          `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
           WHERE table_name = $1 ORDER BY ordinal_position`,
          [table],
        );
        expect(rows.map((r) => [r.column_name, r.data_type])).toEqual([
          ['name', 'text'],
          ['holder', 'text'],
          ['token', 'bigint'],
          ['priority', 'integer'],
          ['expires_at', 'timestamp with time zone'],
          ['challenger_id', 'text'],
          ['challenger_priority', 'integer'],
          ['challenger_until', 'timestamp with time zone'],
          ['reserved_priority', 'integer'],
          ['reserved_until', 'timestamp with time zone'],
        ]);
        expect(rows.find((r) => r.column_name === 'token')).toMatchObject({ is_nullable: 'NO', column_default: '0' });
      });

      it('creates the table in another schema when the name is qualified', async () => {
        const schema = uniqueName('fairpick_schema');
        await pool.query(`CREATE SCHEMA "${schema}"`);
        try {
          const qualified = new PostgresLeaseStore(pool, { table: `${schema}.leases`, listen: false });
          await qualified.ensureSchema();
          await qualified.ensureSchema();
          expect(await qualified.acquire('x', 'a', 100, 5000)).toEqual({ token: 1 });
          expect((await qualified.read('x'))?.holder).toBe('a');
        } finally {
          await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
        }
      });

      it('ensureSchema works for a user who may not create tables, when the table exists (made by a migration)', async () => {
        const schema = uniqueName('fairpick_ro_schema');
        const role = uniqueName('fairpick_ro');
        await pool.query(`CREATE SCHEMA "${schema}"`);
        await pool.query(`CREATE ROLE "${role}" LOGIN`);
        const limited = new pg.Pool({ ...CONNECTION, user: role, max: 2 });
        limited.on('error', () => {});
        try {
          await new PostgresLeaseStore(pool, { table: `${schema}.leases`, listen: false }).ensureSchema(); // the migration
          await pool.query(`GRANT USAGE ON SCHEMA "${schema}" TO "${role}"`); // not CREATE
          await pool.query(`GRANT SELECT, INSERT, UPDATE ON "${schema}"."leases" TO "${role}"`);
          const store = new PostgresLeaseStore(limited, { table: `${schema}.leases`, listen: false });
          await store.ensureSchema(); // before: "permission denied for schema"
          expect(await store.acquire('x', 'a', 100, 5000)).toEqual({ token: 1 });
          // And where the table is missing, the missing right is reported, not hidden.
          const absent = new PostgresLeaseStore(limited, { table: `${schema}.other`, listen: false });
          await expect(absent.ensureSchema()).rejects.toThrow(/permission denied/);
        } finally {
          await limited.end();
          await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
          await pool.query(`DROP ROLE "${role}"`);
        }
      });
    });

    describe('the LeaseStore contract', () => {
      it('acquires a free lease; another holder gets undefined while it is held', async () => {
        const name = lease();
        expect(await store.read(name)).toBeUndefined();
        const grant = await store.acquire(name, 'a', 100, 5000);
        expect(grant).toEqual({ token: 1 });
        expect(typeof grant?.token).toBe('number');
        expect(await store.acquire(name, 'b', 200, 5000)).toBeUndefined();
        expect((await store.read(name))?.holder).toBe('a');
      });

      it('every acquire is a new leadership with a greater token, the holder re-acquiring too', async () => {
        const name = lease();
        const tokens: number[] = [];
        for (let i = 0; i < 3; i++) tokens.push((await store.acquire(name, 'a', 100, 5000))?.token as number);
        const last = tokens[2] as number;
        expect(await store.release(name, 'a', last)).toBe(true);
        tokens.push((await store.acquire(name, 'b', 100, 5000))?.token as number);
        expect(tokens).toEqual([1, 2, 3, 4]);
        // The earlier leadership of 'a' is over: its token no longer renews.
        expect(await store.renew(name, 'b', 3, 5000)).toBeUndefined();
      });

      it('renews only for the holder with its current token', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 120, 5000)) as { token: number };
        expect(await store.renew(name, 'b', token, 5000)).toBeUndefined();
        expect(await store.renew(name, 'a', token + 1, 5000)).toBeUndefined();
        const renewed = await store.renew(name, 'a', token, 60_000);
        expect(renewed).toMatchObject({ holder: 'a', token, priority: 120, challenger: undefined });
        expect(renewed?.remainingMs).toBeGreaterThan(5000);
        expect(renewed?.remainingMs).toBeLessThanOrEqual(60_000);
        const again = (await store.acquire(name, 'a', 120, 5000)) as { token: number };
        expect(again.token).toBeGreaterThan(token);
        expect(await store.renew(name, 'a', token, 5000)).toBeUndefined();
      });

      it('releases only the holder’s own lease, keeping the token counter', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        expect(await store.release(name, 'b', token)).toBe(false);
        expect(await store.release(name, 'a', token + 1)).toBe(false);
        expect((await store.read(name))?.holder).toBe('a');
        expect(await store.release(name, 'a', token)).toBe(true);
        expect(await store.release(name, 'a', token)).toBe(false);
        expect(await store.read(name)).toBeUndefined();
        expect(await store.renew(name, 'a', token, 5000)).toBeUndefined();
        const next = await store.acquire(name, 'b', 100, 5000);
        expect(next?.token).toBe(token + 1);
        const { rows } = await pool.query(`SELECT holder, token::int AS token FROM "${table}" WHERE name = $1`, [name]);
        expect(rows).toEqual([{ holder: 'b', token: token + 1 }]);
      });

      it('read returns the holder, token, priority and the time left by the server’s clock', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 42, 30_000)) as { token: number };
        const record = await store.read(name);
        expect(record).toMatchObject({ holder: 'a', token, priority: 42, challenger: undefined });
        expect(record?.remainingMs).toBeGreaterThan(0);
        expect(record?.remainingMs).toBeLessThanOrEqual(30_000);
      });

      it('a lease expires by the server’s clock; then it is free, and the old token is dead', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 100, 300)) as { token: number };
        expect(await store.acquire(name, 'b', 100, 300)).toBeUndefined();
        await waitFor(async () => (await store.read(name)) === undefined, 'the 300 ms lease to expire');
        expect(await store.renew(name, 'a', token, 5000)).toBeUndefined();
        expect(await store.release(name, 'a', token)).toBe(false);
        const next = await store.acquire(name, 'b', 100, 5000);
        expect(next?.token).toBe(token + 1);
      });

      it('a challenge is seen at the holder’s next renew; a lower one does not replace a live higher one', async () => {
        const name = lease();
        await store.challenge(name, 'b', 200, 5000); // nothing held: nothing recorded
        const { token } = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        expect((await store.renew(name, 'a', token, 5000))?.challenger).toBeUndefined();
        await store.challenge(name, 'a', 250, 5000); // the holder cannot challenge itself
        expect((await store.read(name))?.challenger).toBeUndefined();
        await store.challenge(name, 'b', 200, 5000);
        expect((await store.renew(name, 'a', token, 5000))?.challenger).toEqual({ id: 'b', priority: 200 });
        await store.challenge(name, 'c', 150, 5000);
        expect((await store.read(name))?.challenger).toEqual({ id: 'b', priority: 200 });
        await store.challenge(name, 'd', 200, 5000);
        expect((await store.read(name))?.challenger).toEqual({ id: 'd', priority: 200 });
        // A new leadership starts without a challenge.
        const again = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        expect((await store.renew(name, 'a', again.token, 5000))?.challenger).toBeUndefined();
      });

      it('a challenge ends after its ttl; a lower one may then take its place', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 100, 10_000)) as { token: number };
        await store.challenge(name, 'b', 200, 300);
        expect((await store.renew(name, 'a', token, 10_000))?.challenger).toEqual({ id: 'b', priority: 200 });
        await waitFor(
          async () => (await store.renew(name, 'a', token, 10_000))?.challenger === undefined,
          'the 300 ms challenge to end',
        );
        await store.challenge(name, 'c', 150, 5000);
        expect((await store.read(name))?.challenger).toEqual({ id: 'c', priority: 150 });
      });

      it('after a release with a live challenge, only a priority >= the challenger’s may acquire', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        await store.challenge(name, 'b', 200, 5000);
        expect(await store.release(name, 'a', token)).toBe(true);
        expect(await store.read(name)).toBeUndefined();
        expect(await store.acquire(name, 'c', 150, 5000)).toBeUndefined();
        expect(await store.acquire(name, 'a', 100, 5000)).toBeUndefined();
        // Equal priority is enough (not only the challenger itself); the reservation is then used up.
        const grant = await store.acquire(name, 'e', 200, 5000);
        expect(grant?.token).toBe(token + 1);
        expect(await store.release(name, 'e', grant?.token as number)).toBe(true);
        expect(await store.acquire(name, 'c', 150, 5000)).toEqual({ token: token + 2 });
      });

      it('the reservation ends with the challenge', async () => {
        const name = lease();
        const { token } = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        await store.challenge(name, 'b', 200, 300);
        expect(await store.release(name, 'a', token)).toBe(true);
        expect(await store.acquire(name, 'c', 150, 5000)).toBeUndefined();
        await waitFor(
          async () => (await store.acquire(name, 'c', 150, 5000)) !== undefined,
          'the reservation of the 300 ms challenge to end',
        );
        expect((await store.read(name))?.holder).toBe('c');
      });

      it('neither a release without a challenge nor an expiry with one reserves the lease', async () => {
        const released = lease();
        const first = (await store.acquire(released, 'a', 200, 5000)) as { token: number };
        expect(await store.release(released, 'a', first.token)).toBe(true);
        expect(await store.acquire(released, 'low', 1, 5000)).toBeDefined();

        const expired = lease();
        await store.acquire(expired, 'a', 100, 300);
        await store.challenge(expired, 'b', 200, 10_000);
        await waitFor(async () => (await store.read(expired)) === undefined, 'the 300 ms lease to expire');
        expect(await store.acquire(expired, 'c', 150, 5000)).toBeDefined();
      });

      it('tokens keep growing across a new store instance (and pool) on the same table', async () => {
        const name = lease();
        let last = 0;
        for (let i = 0; i < 3; i++) last = ((await store.acquire(name, 'a', 100, 5000)) as { token: number }).token;
        expect(await store.release(name, 'a', last)).toBe(true);
        const fresh = new PostgresLeaseStore(newPool(), { table });
        const grant = await fresh.acquire(name, 'a', 100, 5000);
        expect(grant?.token).toBe(last + 1);
        expect((await fresh.read(name))?.token).toBe(last + 1);
        await fresh.close();
      });

      it('every operation is one statement', async () => {
        const texts: string[] = [];
        const counting: PgQueryable = {
          query: (text, values) => {
            texts.push(text);
            return pool.query(text, values);
          },
        };
        const s = new PostgresLeaseStore(counting, { table, listen: false });
        const name = lease();
        const count = async (run: () => Promise<unknown>) => {
          texts.length = 0;
          await run();
          return texts.length;
        };
        const { token } = (await s.acquire(name, 'a', 100, 5000)) as { token: number };
        expect(await count(() => s.acquire(name, 'b', 100, 5000))).toBe(1);
        expect(await count(() => s.renew(name, 'a', token, 5000))).toBe(1);
        expect(await count(() => s.read(name))).toBe(1);
        expect(await count(() => s.challenge(name, 'b', 200, 5000))).toBe(1);
        expect(await count(() => s.release(name, 'a', token))).toBe(1);
        expect(texts[0]).toContain('pg_notify');
      });

      it('works over a single pg Client; its watch does nothing', async () => {
        const client = new pg.Client(CONNECTION);
        await client.connect();
        try {
          const s = new PostgresLeaseStore(client, { table });
          const name = lease();
          const { token } = (await s.acquire(name, 'a', 100, 5000)) as { token: number };
          expect((await s.renew(name, 'a', token, 5000))?.holder).toBe('a');
          let calls = 0;
          const stop = s.watch(name, () => calls++);
          expect(await s.release(name, 'a', token)).toBe(true);
          await sleep(100);
          expect(calls).toBe(0);
          stop();
          await s.close();
          expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
        } finally {
          await client.end();
        }
      });
    });

    describe('against the reference implementation', () => {
      const holders = ['a', 'b', 'c'] as const;
      const priority = fc.constantFrom(50, 100, 200);
      const holder = fc.constantFrom(...holders);
      const op = fc.oneof(
        { weight: 3, arbitrary: fc.record({ kind: fc.constant('acquire' as const), holder, priority }) },
        { weight: 3, arbitrary: fc.record({ kind: fc.constant('challenge' as const), holder, priority }) },
        {
          weight: 3,
          arbitrary: fc.record({
            kind: fc.constantFrom('renew' as const, 'release' as const, 'release' as const),
            holder,
            tokenDelta: fc.constantFrom(0, 0, 0, 1, -1),
          }),
        },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('read' as const) }) },
      );

      it('answers every sequence of operations as MemoryLeaseStore does (no expiry involved)', async () => {
        await fc.assert(
          fc.asyncProperty(fc.array(op, { minLength: 10, maxLength: 30 }), async (ops) => {
            const name = lease();
            const memory = new MemoryLeaseStore();
            // The last token each holder was granted: renew and release try it, or a neighbour.
            const granted = new Map<string, number>();
            const ttl = 60_000;
            for (const o of ops) {
              const both = async (run: (s: LeaseStore) => Promise<unknown>) => {
                const [expected, actual] = await Promise.all([run(memory), run(store)]);
                const strip = (v: unknown) =>
                  v !== null && typeof v === 'object' && 'remainingMs' in v ? { ...v, remainingMs: 0 } : v;
                expect(strip(actual), JSON.stringify(o)).toEqual(strip(expected));
                return expected;
              };
              if (o.kind === 'acquire') {
                const grant = (await both((s) => s.acquire(name, o.holder, o.priority, ttl))) as
                  | { token: number }
                  | undefined;
                if (grant !== undefined) granted.set(o.holder, grant.token);
              } else if (o.kind === 'renew') {
                const token = (granted.get(o.holder) ?? 1) + o.tokenDelta;
                await both((s) => s.renew(name, o.holder, token, ttl));
              } else if (o.kind === 'release') {
                const token = (granted.get(o.holder) ?? 1) + o.tokenDelta;
                await both((s) => s.release(name, o.holder, token));
              } else if (o.kind === 'challenge') {
                await both((s) => s.challenge(name, o.holder, o.priority, ttl));
              } else {
                await both((s) => s.read(name));
              }
            }
          }),
          { numRuns: 50, seed: 0x5eed_2024 },
        );
      });
    });

    describe('LISTEN/NOTIFY', () => {
      it('watch hears a release made through another store, for its own name only', async () => {
        const watcherPool = newPool(2);
        const watcher = newStore(watcherPool);
        const name = lease();
        const other = lease();
        let heard = 0;
        let heardOther = 0;
        const stop = watcher.watch(name, () => heard++);
        const stopOther = watcher.watch(other, () => heardOther++);
        await waitFor(() => watcherPool.totalCount === 1, 'the LISTEN connection to open');
        // LISTEN runs right after the connection opens; a release before it is simply not heard.
        await waitFor(async () => {
          const grant = await store.acquire(name, 'a', 100, 5000);
          if (grant !== undefined) await store.release(name, 'a', grant.token);
          await sleep(50);
          return heard > 0;
        }, 'the notification of the release');
        expect(heardOther).toBe(0);
        stop();
        stopOther();
        // The last watcher gone, the store lets its connection go (destroyed, not pooled).
        await waitFor(() => watcherPool.totalCount === 0, 'the LISTEN connection to close');
        const before = heard;
        const grant = (await store.acquire(name, 'a', 100, 5000)) as { token: number };
        await store.release(name, 'a', grant.token);
        await sleep(100);
        expect(heard).toBe(before);
      });

      it('close() lets the LISTEN connection go, so the pool can end', async () => {
        const p = newPool(2);
        const s = new PostgresLeaseStore(p, { table });
        s.watch(lease(), () => {});
        await waitFor(() => p.totalCount === 1, 'the LISTEN connection to open');
        await s.close();
        await s.close();
        await endPool(p);
        expect(s.watch(lease(), () => {})).toBeTypeOf('function');
      });

      it('listen: a client you pass is LISTENed on, and UNLISTENed but not ended by close()', async () => {
        const client = new pg.Client(CONNECTION);
        await client.connect();
        try {
          const s = new PostgresLeaseStore(pool, { table, listen: client });
          const name = lease();
          let heard = 0;
          s.watch(name, () => heard++);
          await waitFor(async () => {
            const grant = await store.acquire(name, 'a', 100, 5000);
            if (grant !== undefined) await store.release(name, 'a', grant.token);
            await sleep(50);
            return heard > 0;
          }, 'the notification on the given client');
          await s.close();
          expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
        } finally {
          await client.end();
        }
      });

      it('a lost LISTEN connection is opened again, and every watcher is woken once', async () => {
        const p = newPool(2);
        const s = newStore(p);
        const name = lease();
        let heard = 0;
        s.watch(name, () => heard++);
        const pid = async () =>
          (
            await pool.query(
              `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN "${table}"%'`,
            )
          ).rows.map((r) => r.pid as number);
        await waitFor(async () => (await pid()).length === 1, 'the LISTEN connection to open');
        const [first] = await pid();
        await pool.query('SELECT pg_terminate_backend($1)', [first]);
        await waitFor(() => heard > 0, 'the wake-up after reconnecting');
        await waitFor(async () => {
          const pids = await pid();
          return pids.length === 1 && pids[0] !== first;
        }, 'a new LISTEN connection');
        const woken = heard;
        await waitFor(async () => {
          const grant = await store.acquire(name, 'a', 100, 5000);
          if (grant !== undefined) await store.release(name, 'a', grant.token);
          await sleep(50);
          return heard > woken;
        }, 'a notification on the new connection');
      });
    });

    describe('races', () => {
      const race = async (name: string) => {
        const holders = Array.from({ length: 10 }, (_, i) => `h${i}`);
        const grants = await Promise.all(holders.map((h) => store.acquire(name, h, 100, 5000)));
        const winners = holders.filter((_, i) => grants[i] !== undefined);
        expect(winners).toHaveLength(1);
        expect((await store.read(name))?.holder).toBe(winners[0]);
        return {
          holder: winners[0] as string,
          token: (grants.find((g) => g !== undefined) as { token: number }).token,
        };
      };

      it('10 parallel acquires of a new lease: exactly one wins', async () => {
        expect((await race(lease())).token).toBe(1);
      });

      it('10 parallel acquires of a released, then of an expired, lease: exactly one wins each time', async () => {
        const name = lease();
        const first = await race(name);
        expect(await store.release(name, first.holder, first.token)).toBe(true);
        const second = await race(name);
        expect(second.token).toBe(first.token + 1);
        await store.renew(name, second.holder, second.token, 200);
        await waitFor(async () => (await store.read(name)) === undefined, 'the 200 ms lease to expire');
        const third = await race(name);
        expect(third.token).toBe(second.token + 1);
      });
    });

    describe('with electors on real timers', () => {
      type Log = { elected: number[]; demoted: DemotedEvent['reason'][] };
      const electors: Elector[] = [];
      const elector = (
        id: string,
        s: LeaseStore,
        name: string,
        options: { priority?: number; preempt?: boolean } = {},
      ) => {
        // Not shorter: each store call gets leaseMs / 3, and on a loaded machine a new pool's first
        // connection and commit can take a few hundred ms.
        const e = createElector({ name, id, store: s, leaseMs: 2000, ...options });
        const log: Log = { elected: [], demoted: [] };
        e.on('elected', ({ token }) => log.elected.push(token));
        e.on('demoted', ({ reason }) => log.demoted.push(reason));
        e.on('error', () => {}); // expected while a connection is cut; the elector retries
        electors.push(e);
        return { e, log };
      };

      afterAll(async () => {
        await Promise.all(electors.map((e) => e.stop()));
      });

      it('elects one of two; stop() resigns and the other is elected at once through NOTIFY', async () => {
        const name = lease();
        const storeB = newStore(newPool());
        const a = elector('a', store, name);
        const b = elector('b', storeB, name);
        await a.e.start();
        await waitFor(() => a.e.isLeader, 'a to be elected');
        await b.e.start();
        expect(b.e.isLeader).toBe(false);
        expect(await b.e.leader()).toBe('a');
        let notified = 0;
        const stop = storeB.watch(name, () => notified++);
        await sleep(300); // let both LISTEN connections settle; not asserted
        await a.e.stop();
        expect(a.log.demoted).toEqual(['stopped']);
        await waitFor(() => b.e.isLeader, 'b to be elected');
        expect(b.log.elected[0]).toBeGreaterThan(a.log.elected[0] as number);
        expect(await a.e.leader()).toBe('b');
        await waitFor(() => notified > 0, 'the release to be announced on the channel');
        stop();
        await b.e.stop();
      });

      it('fencing tokens grow across elector restarts and new store instances', async () => {
        const name = lease();
        const tokens: number[] = [];
        for (let i = 0; i < 3; i++) {
          const s = newStore(newPool(2));
          const a = elector('a', s, name);
          await a.e.start();
          await waitFor(() => a.e.isLeader, 'a to be elected');
          tokens.push(a.e.token as number);
          await a.e.stop();
          expect(a.e.token).toBeUndefined();
        }
        expect(tokens[1]).toBeGreaterThan(tokens[0] as number);
        expect(tokens[2]).toBeGreaterThan(tokens[1] as number);
      });

      it('a leader cut off from the database demotes itself (expired); the other takes over', async () => {
        const name = lease();
        const leaderPool = newPool(2);
        const storeL = newStore(leaderPool);
        const l = elector('l', storeL, name);
        const s = elector('s', store, name);
        await l.e.start();
        await waitFor(() => l.e.isLeader, 'l to be elected');
        await s.e.start();
        const ending = endPool(leaderPool); // resolves once the LISTEN client is let go, below
        await waitFor(() => l.log.demoted.length > 0, 'the cut-off leader to demote itself');
        expect(l.log.demoted).toEqual(['expired']);
        expect(l.e.isLeader).toBe(false);
        await waitFor(() => s.e.isLeader, 'the standby to take over');
        expect(s.log.elected[0]).toBeGreaterThan(l.log.elected[0] as number);
        await l.e.stop();
        await storeL.close();
        await ending;
        await s.e.stop();
      });

      it('a higher priority preempts the leader; the reservation keeps a lower standby out', async () => {
        const name = lease();
        const low = elector('low', newStore(newPool(2)), name, { priority: 100 });
        const mid = elector('mid', newStore(newPool(2)), name, { priority: 150, preempt: false });
        const high = elector('high', newStore(newPool(2)), name, { priority: 200 });
        await low.e.start();
        await waitFor(() => low.e.isLeader, 'low to be elected');
        await mid.e.start();
        await high.e.start();
        await waitFor(() => high.e.isLeader, 'the higher priority to be elected');
        expect(low.log.demoted).toEqual(['preempted']);
        expect(high.log.elected[0]).toBeGreaterThan(low.log.elected[0] as number);
        expect(mid.log.elected).toEqual([]);
        expect(await low.e.leader()).toBe('high');
        await Promise.all([low.e.stop(), mid.e.stop(), high.e.stop()]);
      });
    });
  },
);
