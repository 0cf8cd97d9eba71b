/**
 * `npm run bench:failover`: how long an active/passive pair takes to elect a new leader, with each
 * store's default settings (leaseMs 3000, renewMs 1000, margin 300) and the peer elector's
 * (advertMs 1000), after a crash of the leader (no resign) and after a clean resign (stop()).
 * Median of several runs, in ms. Redis and PostgreSQL run when they answer on 127.0.0.1.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { createElector, type Elector, type LeaseStore, MemoryLeaseStore } from '../src/index.js';
import { createPeerElector } from '../src/node/index.js';

const RUNS = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice(7) ?? 3);

interface Pair {
  readonly a: Elector;
  readonly b: Elector;
  /** Stops `a` the hard way: its timers and connection die, it never resigns. */
  crash(): void;
  close(): Promise<void>;
}

type PairFactory = (run: number) => Promise<Pair>;

async function waitFor(condition: () => boolean, limitMs = 20_000): Promise<number> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > limitMs) throw new Error('no new leader within the limit');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return performance.now() - started;
}

async function measure(make: PairFactory, how: 'crash' | 'resign', run: number): Promise<number> {
  const pair = await make(run);
  await pair.a.start();
  await waitFor(() => pair.a.isLeader);
  await pair.b.start();
  await new Promise((resolve) => setTimeout(resolve, 1500)); // a renews; b settles as standby
  const started = performance.now();
  if (how === 'crash') pair.crash();
  else await pair.a.stop();
  await waitFor(() => pair.b.isLeader);
  const elapsed = performance.now() - started;
  await pair.close();
  return elapsed;
}

/** A store whose calls from a "crashed" elector never reach it: the lease is simply not renewed. */
function severable(store: LeaseStore): { store: LeaseStore; sever(): void } {
  let cut = false;
  const pass =
    <A extends unknown[], R>(f: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> =>
      cut ? new Promise<R>(() => {}) : f(...args);
  return {
    store: {
      acquire: pass(store.acquire.bind(store)),
      renew: pass(store.renew.bind(store)),
      release: pass(store.release.bind(store)),
      read: pass(store.read.bind(store)),
      challenge: pass(store.challenge.bind(store)),
      ...(store.watch === undefined ? {} : { watch: store.watch.bind(store) }),
    },
    sever: () => {
      cut = true;
    },
  };
}

function leasePair(store: LeaseStore, name: string, onClose: () => Promise<void> = async () => {}): Pair {
  const cut = severable(store);
  const a = createElector({ name, id: 'haproxy01', store: cut.store, priority: 150 });
  const b = createElector({ name, id: 'haproxy02', store, priority: 100 });
  a.on('error', () => {});
  b.on('error', () => {});
  let crashed = false;
  return {
    a,
    b,
    crash: () => {
      crashed = true;
      cut.sever();
    },
    close: async () => {
      // A crashed elector is abandoned, as a dead process would be: its calls never return.
      await Promise.all([crashed ? undefined : a.stop(), b.stop()]);
      await onClose();
    },
  };
}

async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    ports.push(s.address().port);
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
  return ports;
}

async function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setTimeout(500, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const factories: Array<[string, PairFactory]> = [
  ['memory store', async (run) => leasePair(new MemoryLeaseStore(), `failover-${run}`)],
  [
    'UDP peer elector',
    async () => {
      const [pa, pb] = (await freePorts(2)) as [number, number];
      const a = createPeerElector({
        name: 'pair',
        id: 'haproxy01',
        priority: 150,
        bind: { host: '127.0.0.1', port: pa },
        peers: [{ host: '127.0.0.1', port: pb }],
      });
      const b = createPeerElector({
        name: 'pair',
        id: 'haproxy02',
        priority: 100,
        bind: { host: '127.0.0.1', port: pb },
        peers: [{ host: '127.0.0.1', port: pa }],
      });
      return {
        a,
        b,
        crash: () => {
          const internals = a as unknown as { socket: { close(): void } | undefined };
          internals.socket?.close();
          internals.socket = undefined;
        },
        close: async () => {
          await Promise.all([a.stop(), b.stop()]);
        },
      };
    },
  ],
];

async function optionalStores(): Promise<void> {
  if (await reachable(6379)) {
    try {
      const { Redis } = await import('ioredis');
      const { RedisLeaseStore } = (await import('../src/redis/index.js')) as unknown as {
        RedisLeaseStore: new (client: unknown, options: { prefix: string }) => LeaseStore & { close?(): Promise<void> };
      };
      factories.push([
        'Redis store',
        async (run) => {
          const client = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: false });
          const store = new RedisLeaseStore(client, { prefix: `fairpick-bench-${process.pid}-${run}:` });
          return leasePair(store, 'failover', async () => {
            await store.close?.();
            client.disconnect();
          });
        },
      ]);
    } catch (error) {
      console.log(`Redis store: not measured (${(error as Error).message})`);
    }
  } else console.log('Redis store: not measured (nothing answers on 127.0.0.1:6379)');
  if (await reachable(5432)) {
    try {
      const pg = await import('pg');
      const { PostgresLeaseStore } = (await import('../src/postgres/index.js')) as unknown as {
        PostgresLeaseStore: new (
          pool: unknown,
          options: { table: string },
        ) => LeaseStore & { ensureSchema(): Promise<void>; close?(): Promise<void> };
      };
      factories.push([
        'PostgreSQL store',
        async (run) => {
          const pool = new pg.default.Pool({
            host: '127.0.0.1',
            port: 5432,
            database: 'test',
            user: process.env.PGUSER ?? 'postgres',
          });
          const table = `fairpick_bench_${process.pid}_${run}`;
          const store = new PostgresLeaseStore(pool, { table });
          await store.ensureSchema();
          return leasePair(store, 'failover', async () => {
            await store.close?.();
            await pool.query(`DROP TABLE IF EXISTS ${table}`);
            await pool.end();
          });
        },
      ]);
    } catch (error) {
      console.log(`PostgreSQL store: not measured (${(error as Error).message})`);
    }
  } else console.log('PostgreSQL store: not measured (nothing answers on 127.0.0.1:5432)');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

await optionalStores();
console.log(`failover with default settings, median of ${RUNS} runs (node ${process.version})\n`);
console.log('elector                 crash -> new leader   resign -> new leader');
for (const [name, make] of factories) {
  const crash: number[] = [];
  const resign: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    crash.push(await measure(make, 'crash', run * 2));
    resign.push(await measure(make, 'resign', run * 2 + 1));
  }
  console.log(
    `${name.padEnd(22)}  ${`${median(crash).toFixed(0)} ms`.padStart(19)}   ${`${median(resign).toFixed(0)} ms`.padStart(20)}`,
  );
}
console.log(
  '\nkeepalived for reference: about 3.6 s after a crash with advert_int 1 s, about 0.6 s after a clean shutdown.',
);
