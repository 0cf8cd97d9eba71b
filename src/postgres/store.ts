import type { LeaseGrant, LeaseRecord, LeaseStore } from '../election/store.js';
import { reportAsync } from '../runtime.js';
import { hostTimers } from '../timers.js';
import { invalid, isObject, requireFunction, requireId, requirePositiveNumber } from '../validate.js';

/** The result of {@link PgQueryable.query}: the part of pg's `QueryResult` the store reads. */
export interface PgQueryResult {
  /** The rows, as objects keyed by column name. */
  readonly rows: readonly unknown[];
}

/**
 * Anything that runs one parameterised statement: a pg `Pool`, `Client` or `PoolClient`, or a
 * wrapper with the same `query(text, values)`. Declared here so that fairpick's types do not
 * depend on pg's.
 */
export interface PgQueryable {
  /** Runs `text` with the positional parameters `values` (`$1`, `$2`, ...). */
  query(text: string, values?: unknown[]): Promise<PgQueryResult>;
}

/** A notification as pg's `Client` emits it (`'notification'` event). */
export interface PgNotification {
  /** The channel it was sent on. */
  readonly channel: string;
  /** Its payload: for this store, the name of the released lease. */
  readonly payload?: string | undefined;
}

/**
 * A connection the store can LISTEN on: a pg `Client` or `PoolClient`. It must be one connection
 * (not a `Pool`), because LISTEN belongs to the session that ran it.
 */
export interface PgListenClient extends PgQueryable {
  /** Subscribes to the connection's notifications. */
  on(event: 'notification', listener: (message: PgNotification) => void): unknown;
  /** Subscribes to the connection's errors (a lost connection). */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Subscribes to the end of the connection. */
  on(event: 'end', listener: () => void): unknown;
  /** Removes a notification listener. */
  removeListener(event: 'notification', listener: (message: PgNotification) => void): unknown;
  /** Removes an error listener. */
  removeListener(event: 'error', listener: (error: Error) => void): unknown;
  /** Removes an end listener. */
  removeListener(event: 'end', listener: () => void): unknown;
  /** A `PoolClient`'s: gives the connection back to its pool (`true`: destroy it). */
  release?(destroy?: boolean | Error): void;
  /** A `Client`'s: closes the connection. */
  end?(): unknown;
}

/** Options of {@link PostgresLeaseStore}. */
export interface PostgresLeaseStoreOptions {
  /**
   * The table that holds the leases, one row per lease name: letters, digits and underscores, not
   * starting with a digit, at most 63 characters, optionally schema-qualified (`'ha.leases'`). It
   * is quoted in every statement, so it is case-sensitive.
   * @defaultValue 'fairpick_leases'
   */
  readonly table?: string;
  /**
   * The LISTEN/NOTIFY channel on which a release is announced (the payload is the lease name).
   * Same rules as a table name, without a schema.
   * @defaultValue the table name without its schema
   */
  readonly channel?: string;
  /**
   * Where {@link PostgresLeaseStore.watch} listens for releases:
   * - omitted: when `pool` is a pg `Pool` (it has `connect()` and a numeric `totalCount`), one
   *   client checked out of it while anyone watches, destroyed (not returned to the pool) when
   *   nobody does; otherwise nowhere;
   * - a function: called to open a dedicated connection (again after one is lost); the store owns
   *   what it returns and releases (`release(true)`) or ends (`end()`) it when done;
   * - a connected client: LISTENed on as it is; the store UNLISTENs but never ends it, and does not
   *   reconnect it;
   * - `false`: nowhere.
   *
   * Without a LISTEN connection `watch` does nothing and electors find a released lease at their
   * next poll (every `renewMs`).
   * @defaultValue a client of `pool` when it is a Pool
   */
  readonly listen?: false | PgListenClient | (() => Promise<PgListenClient>);
}

/** One LISTEN connection and how to let it go. */
interface Listening {
  readonly client: PgListenClient;
  readonly dispose: (error?: Error) => Promise<void>;
  /** Whether the store opened it (and may open another after losing it), or it is the user's. */
  readonly owned: boolean;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
/** pg_notify refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD_BYTES = 7999;
const INT4_MAX = 2_147_483_647;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;

/**
 * A {@link LeaseStore} in a PostgreSQL table, for electors on several hosts that share a database.
 *
 * Every operation is one atomic statement on the lease's row (`INSERT ... ON CONFLICT DO UPDATE
 * ... WHERE` or `UPDATE ... WHERE`), with no transaction kept open between calls, and expiry is
 * judged by the server's clock: `statement_timestamp()`, the time the server received the
 * statement, never the client's clock. The fencing token is a column of the row, incremented by
 * every successful acquire and kept when the lease is released, so it only grows, across restarts
 * of the electors and of the store. A release announces itself with `pg_notify` in the same
 * statement; {@link PostgresLeaseStore.watch} LISTENs for it on a dedicated connection.
 *
 * Create the table once with {@link PostgresLeaseStore.ensureSchema} (or by migration; see the
 * guide, docs/postgres-lease-store.md). Point it at the primary: with asynchronous replication a
 * failover can lose the last committed grants, and tokens could repeat.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * import { createElector } from 'fairpick';
 * import { PostgresLeaseStore } from 'fairpick/postgres';
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const store = new PostgresLeaseStore(pool, { table: 'fairpick_leases' });
 * await store.ensureSchema();
 * const elector = createElector({ name: 'proxy-pair', id: 'haproxy01', store });
 * await elector.start();
 * ```
 */
export class PostgresLeaseStore implements LeaseStore {
  private readonly pool: PgQueryable;
  /** The table, quoted for SQL. */
  private readonly table: string;
  /** The table as given, for the schema lock. */
  private readonly tableName: string;
  private readonly channel: string;
  private readonly sql: {
    readonly acquire: string;
    readonly renew: string;
    readonly release: string;
    readonly read: string;
    readonly challenge: string;
  };
  private readonly openListen: (() => Promise<Listening>) | undefined;
  private readonly watchers = new Map<string, Set<() => void>>();
  private watcherCount = 0;
  private listening: Listening | undefined;
  /** Bumped whenever the current connection attempt or connection is abandoned. */
  private generation = 0;
  private connecting = false;
  private retryTimer: unknown;
  private failures = 0;
  /** Whether a LISTEN connection was lost, so the next one wakes every watcher once. */
  private missed = false;
  private closed = false;
  private disposing: Promise<void> = Promise.resolve();
  /** Removes the listeners of the current LISTEN connection. */
  private detach: () => void = () => {};

  /**
   * @param pool - a pg `Pool` (or `Client`, or anything with `query(text, values)`); the store
   *   never ends it.
   * @param options - the table, the channel and where to LISTEN.
   */
  constructor(pool: PgQueryable, options: PostgresLeaseStoreOptions = {}) {
    if (!isObject(pool as unknown) || typeof (pool as { query?: unknown }).query !== 'function') {
      throw invalid('pool', pool, 'a pg Pool or Client (an object with a query method)');
    }
    if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
    this.pool = pool;
    const table = options.table ?? 'fairpick_leases';
    const parts = typeof table === 'string' ? table.split('.') : [];
    if (parts.length < 1 || parts.length > 2 || !parts.every((p) => IDENTIFIER.test(p))) {
      throw invalid(
        'options.table',
        table,
        'a table name (letters, digits and underscores, not starting with a digit, at most 63 characters), optionally schema-qualified',
      );
    }
    this.tableName = table;
    this.table = parts.map((p) => `"${p}"`).join('.');
    const channel = options.channel ?? (parts[parts.length - 1] as string);
    if (typeof channel !== 'string' || !IDENTIFIER.test(channel)) {
      throw invalid(
        'options.channel',
        channel,
        'a channel name (letters, digits and underscores, not starting with a digit, at most 63 characters)',
      );
    }
    this.channel = channel;
    this.openListen = listenSource(pool, options.listen, channel);
    this.sql = statements(this.table);
  }

  /**
   * Creates the lease table if it does not exist (`CREATE TABLE IF NOT EXISTS`), under a
   * transaction-scoped advisory lock so that processes starting together do not race on the
   * catalog. Idempotent; it never alters an existing table. When the table exists it does nothing
   * else, so a user without the right to create tables (a table made by a migration) may call it.
   */
  async ensureSchema(): Promise<void> {
    await this.pool.query(
      `DO $fairpick$
BEGIN
  -- Checked first: CREATE TABLE IF NOT EXISTS needs CREATE on the schema even when the table exists.
  IF to_regclass('${this.table}') IS NOT NULL THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('fairpick.ensureSchema:${this.tableName}'));
  CREATE TABLE IF NOT EXISTS ${this.table} (
    name text PRIMARY KEY,
    holder text NULL,
    token bigint NOT NULL DEFAULT 0,
    priority int,
    expires_at timestamptz,
    challenger_id text,
    challenger_priority int,
    challenger_until timestamptz,
    reserved_priority int,
    reserved_until timestamptz
  );
END
$fairpick$`,
      [],
    );
  }

  /**
   * Takes the lease `name` for `holder` when it is free or expired, or already held by `holder`,
   * for `ttlMs`, as a new leadership with a greater token; while a challenge recorded on a released
   * lease is live, only a candidate of at least the challenger's priority may take it. Returns the
   * grant, or `undefined` when another holder has it (or it is reserved).
   *
   * One `INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE ... RETURNING token`: the row is
   * inserted with token 1, or updated to token + 1 when the WHERE clause allows. `priority` must be
   * an integer (the column is `int`).
   */
  async acquire(name: string, holder: string, priority: number, ttlMs: number): Promise<LeaseGrant | undefined> {
    check(name, holder, ttlMs);
    requirePriority(priority);
    const { rows } = await this.pool.query(this.sql.acquire, [name, holder, priority, ttlMs]);
    const row = rows[0] as { token: unknown } | undefined;
    return row === undefined ? undefined : { token: Number(row.token) };
  }

  /**
   * Extends the lease for another `ttlMs` from now (the server's clock) if `holder` still holds it
   * with `token`. Returns the renewed record (with any live challenge), or `undefined` when the
   * lease was lost.
   *
   * One `UPDATE ... WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now RETURNING ...`.
   */
  async renew(name: string, holder: string, token: number, ttlMs: number): Promise<LeaseRecord | undefined> {
    check(name, holder, ttlMs);
    if (!Number.isSafeInteger(token)) return undefined;
    const { rows } = await this.pool.query(this.sql.renew, [name, holder, String(token), ttlMs]);
    return rows[0] === undefined ? undefined : toRecord(rows[0]);
  }

  /**
   * Gives the lease up at once if `holder` holds it with `token`. Returns whether it did.
   *
   * One statement: an `UPDATE` in a CTE frees the row (it keeps the token, and turns a live
   * challenge into a reservation), and `pg_notify(channel, name)` announces it, delivered when the
   * statement commits.
   */
  async release(name: string, holder: string, token: number): Promise<boolean> {
    if (typeof name !== 'string' || typeof holder !== 'string' || !Number.isSafeInteger(token)) return false;
    const { rows } = await this.pool.query(this.sql.release, [name, holder, String(token), this.channel]);
    return rows.length > 0;
  }

  /**
   * The current holder of `name`, its token, priority, live challenge and the time left by the
   * server's clock; `undefined` when the lease is free or expired. One `SELECT`.
   */
  async read(name: string): Promise<LeaseRecord | undefined> {
    if (typeof name !== 'string') return undefined;
    const { rows } = await this.pool.query(this.sql.read, [name]);
    return rows[0] === undefined ? undefined : toRecord(rows[0]);
  }

  /**
   * Records that candidate `id` of `priority` asks the holder to yield, for `ttlMs`; the holder
   * sees it at its next renew. Nothing is recorded when the lease is free, held by `id` itself, or
   * already challenged by a higher priority whose challenge is live.
   *
   * One `UPDATE ... WHERE` on the row. `priority` must be an integer (the column is `int`).
   */
  async challenge(name: string, id: string, priority: number, ttlMs: number): Promise<void> {
    check(name, id, ttlMs);
    requirePriority(priority);
    await this.pool.query(this.sql.challenge, [name, id, priority, ttlMs]);
  }

  /**
   * Calls `listener` when a release of `name` is announced on the channel. The first watcher opens
   * the LISTEN connection (see {@link PostgresLeaseStoreOptions.listen}) and the last one to leave
   * closes it. A lost connection is reopened with backoff, after which every watcher is called once,
   * in case a release was missed meanwhile. Without a LISTEN connection it does nothing: electors
   * then poll. Correctness never depends on a notification arriving. (A name of 8000 bytes or more
   * does not fit in a notification: its releases are not announced.) Returns a function that stops
   * the calls.
   */
  watch(name: string, listener: () => void): () => void {
    requireId(name, 'name');
    requireFunction(listener, 'listener');
    if (this.openListen === undefined || this.closed) return () => {};
    let set = this.watchers.get(name);
    if (set === undefined) {
      set = new Set();
      this.watchers.set(name, set);
    }
    const fn = (): void => listener();
    set.add(fn);
    this.watcherCount++;
    this.startListening();
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      const current = this.watchers.get(name);
      if (current?.delete(fn) !== true) return;
      if (current.size === 0) this.watchers.delete(name);
      this.watcherCount--;
      if (this.watcherCount === 0) this.stopListening();
    };
  }

  /**
   * Stops every watch and lets the LISTEN connection go (destroys the pool client, or UNLISTENs a
   * client you passed as `listen`). It never ends `pool`: the other operations keep working.
   * Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.watchers.clear();
    this.watcherCount = 0;
    this.stopListening();
    await this.disposing;
  }

  /** Same as {@link PostgresLeaseStore.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private startListening(): void {
    if (this.closed || this.connecting || this.listening !== undefined || this.retryTimer !== undefined) return;
    const open = this.openListen;
    if (open === undefined) return;
    const generation = ++this.generation;
    this.connecting = true;
    void this.connect(open, generation).finally(() => {
      if (generation === this.generation) this.connecting = false;
    });
  }

  private async connect(open: () => Promise<Listening>, generation: number): Promise<void> {
    let listening: Listening;
    try {
      listening = await open();
    } catch {
      if (generation === this.generation) this.retry(true);
      return;
    }
    if (generation !== this.generation) {
      this.dispose(listening);
      return;
    }
    const { client } = listening;
    const onNotification = (message: PgNotification): void => {
      if (message.channel === this.channel && message.payload !== undefined) this.notify(message.payload);
    };
    const onLost = (error?: Error): void => {
      detach(false);
      if (this.listening !== listening) return;
      this.listening = undefined;
      this.missed = true;
      this.dispose(listening, error ?? new Error('the LISTEN connection ended'));
      this.retry(listening.owned);
    };
    const onError = (error: Error): void => onLost(error);
    /**
     * The error listener stays on a connection the store opened, so that a late error on it can
     * never crash the process; on the user's own client it goes with the others.
     */
    const detach = (all: boolean): void => {
      client.removeListener('notification', onNotification);
      client.removeListener('end', onLost);
      if (all && !listening.owned) client.removeListener('error', onError);
    };
    client.on('notification', onNotification);
    client.on('error', onError);
    client.on('end', onLost);
    try {
      await client.query(`LISTEN "${this.channel}"`, []);
    } catch (error) {
      detach(true);
      if (generation !== this.generation) {
        this.dispose(listening);
      } else {
        this.dispose(listening, error instanceof Error ? error : new Error(String(error)));
        this.retry(listening.owned);
      }
      return;
    }
    if (generation !== this.generation) {
      detach(true);
      this.dispose(listening);
      return;
    }
    this.listening = listening;
    this.detach = () => detach(true);
    this.connecting = false;
    this.failures = 0;
    if (this.missed) {
      this.missed = false;
      for (const name of [...this.watchers.keys()]) this.notify(name);
    }
  }

  /** Tries to open the connection again later, while anyone watches. */
  private retry(reopens: boolean): void {
    this.connecting = false;
    if (!reopens || this.closed || this.watcherCount === 0) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.failures);
    this.failures++;
    this.retryTimer = hostTimers.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.watcherCount > 0) this.startListening();
    }, delay);
  }

  private stopListening(): void {
    this.generation++;
    this.connecting = false;
    this.failures = 0;
    this.missed = false;
    if (this.retryTimer !== undefined) {
      hostTimers.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    const listening = this.listening;
    if (listening === undefined) return;
    this.listening = undefined;
    this.detach();
    this.detach = () => {};
    this.dispose(listening);
  }

  /** Lets a connection go in the background; close() waits for every disposal. */
  private dispose(listening: Listening, error?: Error): void {
    const done = listening.dispose(error).catch(() => undefined);
    this.disposing = Promise.all([this.disposing, done]).then(() => undefined);
  }

  private notify(name: string): void {
    const set = this.watchers.get(name);
    if (set === undefined) return;
    for (const fn of [...set]) {
      try {
        fn();
      } catch (error) {
        reportAsync(error);
      }
    }
  }
}

/** The SQL of each operation, for one table. `now` is the server's statement_timestamp(). */
function statements(table: string) {
  const now = 'statement_timestamp()';
  const ttl = `($4::float8 * interval '1 millisecond')`;
  const live = `holder IS NOT NULL AND expires_at > ${now}`;
  const record = `holder, token::text AS token, priority,
    (extract(epoch FROM expires_at - ${now}) * 1000)::float8 AS remaining_ms,
    CASE WHEN challenger_until > ${now} THEN challenger_id END AS challenger_id,
    CASE WHEN challenger_until > ${now} THEN challenger_priority END AS challenger_priority`;
  return {
    acquire: `INSERT INTO ${table} AS l (name, holder, token, priority, expires_at)
VALUES ($1::text, $2::text, 1, $3::int, ${now} + ${ttl})
ON CONFLICT (name) DO UPDATE SET
  holder = excluded.holder, token = l.token + 1, priority = excluded.priority, expires_at = excluded.expires_at,
  challenger_id = NULL, challenger_priority = NULL, challenger_until = NULL,
  reserved_priority = NULL, reserved_until = NULL
WHERE CASE
  WHEN l.holder IS NOT NULL AND l.expires_at > ${now} THEN l.holder = excluded.holder
  ELSE l.reserved_until IS NULL OR l.reserved_until <= ${now} OR excluded.priority >= l.reserved_priority
END
RETURNING l.token::text AS token`,
    renew: `UPDATE ${table} SET expires_at = ${now} + ${ttl}
WHERE name = $1::text AND holder = $2::text AND token = $3::bigint AND expires_at > ${now}
RETURNING ${record}`,
    release: `WITH released AS (
  UPDATE ${table} SET
    holder = NULL, priority = NULL, expires_at = NULL,
    reserved_priority = CASE WHEN challenger_until > ${now} THEN challenger_priority END,
    reserved_until = CASE WHEN challenger_until > ${now} THEN challenger_until END,
    challenger_id = NULL, challenger_priority = NULL, challenger_until = NULL
  WHERE name = $1::text AND holder = $2::text AND token = $3::bigint AND expires_at > ${now}
  RETURNING name
)
SELECT CASE WHEN octet_length(name) <= ${MAX_PAYLOAD_BYTES} THEN pg_notify($4::text, name) END AS notified
FROM released`,
    read: `SELECT ${record} FROM ${table} WHERE name = $1::text AND ${live}`,
    challenge: `UPDATE ${table} SET
  challenger_id = $2::text, challenger_priority = $3::int, challenger_until = ${now} + ${ttl}
WHERE name = $1::text AND ${live} AND holder <> $2::text
  AND (challenger_until IS NULL OR challenger_until <= ${now} OR $3::int >= challenger_priority)`,
  };
}

function toRecord(value: unknown): LeaseRecord {
  const row = value as {
    holder: unknown;
    token: unknown;
    priority: unknown;
    remaining_ms: unknown;
    challenger_id: unknown;
    challenger_priority: unknown;
  };
  return {
    holder: String(row.holder),
    token: Number(row.token),
    priority: Number(row.priority),
    remainingMs: Number(row.remaining_ms),
    challenger:
      row.challenger_id === null || row.challenger_id === undefined
        ? undefined
        : { id: String(row.challenger_id), priority: Number(row.challenger_priority) },
  };
}

/** The same checks as MemoryLeaseStore's. */
function check(name: string, holder: string, ttlMs: number): void {
  requireId(name, 'name');
  requireId(holder, 'holder');
  requirePositiveNumber(ttlMs, 'ttlMs');
}

function requirePriority(priority: number): void {
  if (typeof priority !== 'number' || !Number.isInteger(priority) || Math.abs(priority) > INT4_MAX) {
    throw invalid('priority', priority, 'an integer (a PostgreSQL int)');
  }
}

/** How the store opens its LISTEN connection, from the `listen` option and the pool. */
function listenSource(
  pool: PgQueryable,
  listen: PostgresLeaseStoreOptions['listen'],
  channel: string,
): (() => Promise<Listening>) | undefined {
  if (listen === false) return undefined;
  if (listen === undefined) {
    const candidate = pool as unknown as { connect?: unknown; totalCount?: unknown };
    if (typeof candidate.connect !== 'function' || typeof candidate.totalCount !== 'number') return undefined;
    const connect = candidate.connect as () => Promise<PgListenClient>;
    return async () => owned(requireListenClient(await connect.call(pool), 'the client of pool.connect()'));
  }
  if (typeof listen === 'function') {
    return async () => owned(requireListenClient(await listen(), 'the client options.listen() returned'));
  }
  const client = requireListenClient(listen, 'options.listen');
  return async () => ({
    client,
    owned: false,
    dispose: async (error) => {
      // Not ours to end; if it still works, stop listening on it.
      if (error === undefined) await client.query(`UNLISTEN "${channel}"`, []);
    },
  });
}

/** A connection the store opened and must close. */
function owned(client: PgListenClient): Listening {
  return {
    client,
    owned: true,
    dispose: async (error) => {
      if (typeof client.release === 'function') client.release(error ?? true);
      else await client.end?.();
    },
  };
}

function requireListenClient(value: unknown, field: string): PgListenClient {
  if (
    !isObject(value) ||
    typeof value.query !== 'function' ||
    typeof value.on !== 'function' ||
    typeof value.removeListener !== 'function'
  ) {
    throw invalid(field, value, 'a pg Client (with query, on and removeListener), or a function that returns one');
  }
  return value as unknown as PgListenClient;
}
