import type { LeaseGrant, LeaseRecord, LeaseStore } from '../election/store.js';
import { FairpickError } from '../errors.js';
import { describe, invalid, isObject, requireFunction, requireId, requirePositiveNumber } from '../validate.js';

// ---------------------------------------------------------------------------------------------
// The clients, as far as the store uses them. Structural on purpose: the public types do not
// depend on ioredis or redis, and neither package is imported at run time.
// ---------------------------------------------------------------------------------------------

/**
 * The parts of an ioredis client (`new Redis()` from `ioredis` 5) that {@link RedisLeaseStore}
 * uses. It is recognised by its `call` and `evalsha` methods and its `status` string.
 */
export interface IoredisClientLike {
  /** Sends any command; the store runs its Lua scripts through it with `EVALSHA` and `EVAL`. */
  call(command: string, ...args: string[]): Promise<unknown>;
  /** Not called; its presence tells an ioredis client apart. */
  evalsha(...args: never[]): unknown;
  /** The connection status (`'wait'`, `'connecting'`, `'ready'`, `'end'`, ...). */
  readonly status: string;
  /**
   * A new connection with the same options, but these: the store's subscriber for
   * {@link RedisLeaseStore.watch}. (The store passes `{ enableOfflineQueue: true }`: it subscribes
   * before the new connection is up.)
   */
  duplicate(override?: { enableOfflineQueue?: boolean }): IoredisSubscriberLike;
}

/** The parts of a duplicated ioredis connection that the store subscribes with. */
export interface IoredisSubscriberLike {
  /** Subscribes to channels. */
  subscribe(...channels: string[]): Promise<unknown>;
  /** Unsubscribes from channels. */
  unsubscribe(...channels: string[]): Promise<unknown>;
  /** Adds an event listener (`'message'` and `'error'` are used). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection at once. */
  disconnect(): void;
}

/**
 * The parts of a node-redis client (`createClient()` from `redis` 4 or later) that
 * {@link RedisLeaseStore} uses. It is recognised by `sendCommand` and the `isOpen` flag.
 * Cluster clients (`createCluster()`) are not supported.
 */
export interface NodeRedisClientLike {
  /** Sends any command given as an array; the store runs its Lua scripts through it. */
  sendCommand(args: string[]): Promise<unknown>;
  /** Whether the client is connected (or connecting). */
  readonly isOpen: boolean;
  /** A new, unconnected client with the same options: the store's subscriber for {@link RedisLeaseStore.watch}. */
  duplicate(): NodeRedisSubscriberLike;
}

/** The parts of a duplicated node-redis client that the store subscribes with. */
export interface NodeRedisSubscriberLike {
  /** Opens the connection. */
  connect(): Promise<unknown>;
  /** Subscribes to a channel; `listener` receives each message and its channel. */
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  /** Unsubscribes from a channel. */
  unsubscribe(channel: string): Promise<unknown>;
  /** Adds an event listener (`'error'` is used, so that a lost connection never throws). */
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection at once (node-redis 5). */
  destroy?(): unknown;
  /** Closes the connection at once (node-redis 4; deprecated in 5). */
  disconnect?(): unknown;
  /** Closes the connection after pending replies (node-redis 4). */
  quit?(): unknown;
}

/** A client {@link RedisLeaseStore} accepts: ioredis or node-redis (v4 or later). */
export type RedisClientLike = IoredisClientLike | NodeRedisClientLike;

/** Options of {@link RedisLeaseStore}. */
export interface RedisLeaseStoreOptions {
  /**
   * Prepended to every key and channel the store uses. Lease `name` lives in the hash
   * `<prefix><name>`, its fencing counter in `<prefix><name>:token`, a reservation for a challenger
   * in `<prefix><name>:reserved`, and releases are published on `<prefix><name>:events`.
   * @defaultValue 'fairpick:lease:'
   */
  readonly prefix?: string;
}

// ---------------------------------------------------------------------------------------------
// Lua. Each operation is one script, so it runs atomically on the server, and time is Redis's:
// lease expiry is the hash's PEXPIRE, a reservation's is its PX, and a challenge's end is judged
// against TIME. Replies are strings (or false), never Lua numbers, which Redis would truncate.
// ---------------------------------------------------------------------------------------------

const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
-- The lease hash's fields, or nil when it is free or expired.
local function live(key)
  local ttl = redis.call('PTTL', key)
  if ttl == -2 or ttl == 0 then return nil end
  local v = redis.call('HMGET', key, 'holder', 'token', 'priority', 'challenger_id', 'challenger_priority', 'challenger_until')
  if not v[1] then return nil end
  v.ttl = ttl
  return v
end
-- holder, token, priority, remaining ms, challenger id ('' for none), challenger priority.
local function record(v)
  local cid, cp = '', ''
  if v[4] and tonumber(v[6]) > now_ms() then cid, cp = v[4], v[5] end
  return {v[1], v[2], v[3], tostring(v.ttl), cid, cp}
end
`;

/** KEYS: lease, token counter, reservation. ARGV: holder, priority, ttl. Returns the token or false. */
const ACQUIRE = `${PRELUDE}
local v = live(KEYS[1])
if v and v[1] ~= ARGV[1] then return false end
if not v then
  local reserved = redis.call('GET', KEYS[3])
  if reserved and tonumber(ARGV[2]) < tonumber(reserved) then return false end
  redis.call('DEL', KEYS[3])
end
redis.call('INCR', KEYS[2])
local token = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token, 'priority', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return token
`;

/** KEYS: lease. ARGV: holder, token, ttl. Returns the record or false. */
const RENEW = `${PRELUDE}
local v = live(KEYS[1])
if not v or v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
v.ttl = redis.call('PTTL', KEYS[1])
return record(v)
`;

/** KEYS: lease, reservation. ARGV: holder, token, channel. Returns 1 when released, else 0. */
const RELEASE = `${PRELUDE}
local v = live(KEYS[1])
if not v or v[1] ~= ARGV[1] or v[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
if v[4] then
  local left = math.ceil(tonumber(v[6]) - now_ms())
  if left > 0 then redis.call('SET', KEYS[2], v[5], 'PX', string.format('%d', left)) end
end
redis.call('PUBLISH', ARGV[3], 'released')
return 1
`;

/** KEYS: lease. Returns the record or false. */
const READ = `${PRELUDE}
local v = live(KEYS[1])
if not v then return false end
return record(v)
`;

/** KEYS: lease. ARGV: id, priority, ttl. Returns 1 when recorded, else 0. */
const CHALLENGE = `${PRELUDE}
local v = live(KEYS[1])
if not v or v[1] == ARGV[1] then return 0 end
local now = now_ms()
if not v[4] or tonumber(v[6]) <= now or tonumber(ARGV[2]) >= tonumber(v[5]) then
  redis.call('HSET', KEYS[1], 'challenger_id', ARGV[1], 'challenger_priority', ARGV[2],
    'challenger_until', string.format('%.3f', now + tonumber(ARGV[3])))
  return 1
end
return 0
`;

/** A Lua script and, once computed, its SHA-1, so that calls send `EVALSHA` instead of the text. */
class Script {
  private sha: Promise<string | undefined> | undefined;

  constructor(readonly text: string) {}

  digest(): Promise<string | undefined> {
    this.sha ??= sha1Hex(this.text);
    return this.sha;
  }
}

const SCRIPTS = {
  acquire: new Script(ACQUIRE),
  renew: new Script(RENEW),
  release: new Script(RELEASE),
  read: new Script(READ),
  challenge: new Script(CHALLENGE),
};

interface WebCrypto {
  readonly subtle?: { digest(algorithm: string, data: Uint8Array): Promise<ArrayBuffer> };
}

/** SHA-1 in hex through Web Crypto (Node 20+, Deno, Bun, browsers); `undefined` without it, and then `EVAL` is used. */
async function sha1Hex(text: string): Promise<string | undefined> {
  const subtle = (globalThis as { crypto?: WebCrypto }).crypto?.subtle;
  if (subtle === undefined) return undefined;
  try {
    // The scripts are ASCII, so a byte per character is their UTF-8.
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const hash = new Uint8Array(await subtle.digest('SHA-1', bytes));
    return Array.from(hash, (b) => b.toString(16).padStart(2, '0')).join('');
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The adapter: one shape over both clients.
// ---------------------------------------------------------------------------------------------

/** A subscriber connection. */
interface Subscriber {
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  close(): Promise<void>;
}

/** What the store needs of a client. */
interface Connection {
  /** Runs `script` atomically with `keys` and `args`; resolves with its reply. */
  eval(script: Script, keys: readonly string[], args: readonly string[]): Promise<unknown>;
  /** Opens a subscriber connection beside the client; `onMessage` receives each message's channel. */
  duplicate(onMessage: (channel: string) => void): Subscriber;
}

/** Runs a script by its SHA-1, falling back to the text when the server does not have it cached. */
async function runScript(
  send: (args: string[]) => Promise<unknown>,
  script: Script,
  keys: readonly string[],
  args: readonly string[],
): Promise<unknown> {
  const tail = [String(keys.length), ...keys, ...args];
  const sha = await script.digest();
  if (sha !== undefined) {
    try {
      return await send(['EVALSHA', sha, ...tail]);
    } catch (error) {
      // A restarted or flushed server has lost its script cache; EVAL runs the script and caches it again.
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
    }
  }
  return send(['EVAL', script.text, ...tail]);
}

const ignore = (): void => undefined;

class IoredisConnection implements Connection {
  constructor(private readonly client: IoredisClientLike) {}

  eval(script: Script, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    return runScript(([command, ...rest]) => this.client.call(command as string, ...rest), script, keys, args);
  }

  duplicate(onMessage: (channel: string) => void): Subscriber {
    // The SUBSCRIBE is sent before the new connection is up: with the client's offline queue off
    // (`enableOfflineQueue: false`, common for fail-fast clients), it would fail, and hand-over would
    // wait for the next poll.
    const sub = this.client.duplicate({ enableOfflineQueue: true });
    // Without a listener ioredis logs every connection error; the elector polls meanwhile.
    sub.on('error', ignore);
    sub.on('message', (channel) => onMessage(String(channel)));
    return {
      subscribe: async (channel) => {
        await sub.subscribe(channel);
      },
      unsubscribe: async (channel) => {
        await sub.unsubscribe(channel);
      },
      close: async () => {
        sub.disconnect();
      },
    };
  }
}

class NodeRedisConnection implements Connection {
  constructor(private readonly client: NodeRedisClientLike) {}

  eval(script: Script, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    return runScript((command) => this.client.sendCommand(command), script, keys, args);
  }

  duplicate(onMessage: (channel: string) => void): Subscriber {
    const sub = this.client.duplicate();
    // node-redis clients are EventEmitters: an 'error' without a listener would crash the process.
    sub.on('error', ignore);
    const connected = sub.connect();
    connected.catch(ignore);
    return {
      subscribe: async (channel) => {
        await connected;
        await sub.subscribe(channel, () => onMessage(channel));
      },
      unsubscribe: async (channel) => {
        await connected;
        await sub.unsubscribe(channel);
      },
      close: async () => {
        try {
          if (typeof sub.destroy === 'function') sub.destroy();
          else if (typeof sub.disconnect === 'function') await sub.disconnect();
          else if (typeof sub.quit === 'function') await sub.quit();
        } catch {
          // Already closed.
        }
      },
    };
  }
}

function connectionFor(client: unknown): Connection {
  if (isObject(client) && typeof client.duplicate === 'function') {
    // node-redis first: ioredis also has a sendCommand, but it takes a Command object and there is no isOpen.
    if (typeof client.sendCommand === 'function' && typeof client.isOpen === 'boolean') {
      return new NodeRedisConnection(client as unknown as NodeRedisClientLike);
    }
    if (
      typeof client.call === 'function' &&
      typeof client.evalsha === 'function' &&
      typeof client.status === 'string'
    ) {
      return new IoredisConnection(client as unknown as IoredisClientLike);
    }
  }
  throw invalid(
    'client',
    client,
    'an ioredis client (with call, evalsha, duplicate and a status) or a node-redis v4+ client (with sendCommand, duplicate and isOpen)',
  );
}

// ---------------------------------------------------------------------------------------------
// The store.
// ---------------------------------------------------------------------------------------------

const DEFAULT_PREFIX = 'fairpick:lease:';
/** Suffixes of the per-lease keys: a lease name ending in one would share a key with another lease's. */
const RESERVED_SUFFIXES = [':token', ':reserved'] as const;

/**
 * A {@link LeaseStore} in Redis, for electors on different hosts. Pass it a connected ioredis or
 * node-redis (v4+) client; the store never closes that client.
 *
 * Every operation is one Lua script, so it is atomic on the server, and expiry is judged by Redis's
 * clock: a lease is a hash `<prefix><name>` (holder, token, priority and any challenger) that
 * expires with `PEXPIRE`; the fencing counter `<prefix><name>:token` never expires, so tokens keep
 * growing across restarts of the electors; a lease released to a challenger is reserved for it in
 * `<prefix><name>:reserved` until the challenge ends. `release` publishes on
 * `<prefix><name>:events`, which {@link RedisLeaseStore.watch} subscribes to (on a second connection
 * made with the client's `duplicate()`), so standbys take over at once instead of at their next poll.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { createElector } from 'fairpick';
 * import { RedisLeaseStore } from 'fairpick/redis';
 *
 * const redis = new Redis('redis://127.0.0.1:6379');
 * const store = new RedisLeaseStore(redis, { prefix: 'myapp:lease:' });
 * const elector = createElector({ name: 'proxy-pair', id: 'haproxy01', store, leaseMs: 3000 });
 * await elector.start();
 * // ... on shutdown:
 * await elector.stop();
 * await store.close();
 * redis.disconnect();
 * ```
 */
export class RedisLeaseStore implements LeaseStore {
  private readonly connection: Connection;
  private readonly prefix: string;
  /** The listeners of each watched channel. */
  private readonly listeners = new Map<string, Set<() => void>>();
  /** The shared subscriber connection, opened with the first watcher and closed after the last. */
  private subscriber: Subscriber | undefined;
  /** The channels `subscriber` is subscribed to. */
  private subscribed = new Set<string>();
  /** Subscription changes run one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();

  /**
   * @param client - a connected ioredis or node-redis (v4+) client; the store sends its commands
   * through it and never closes it.
   * @param options - the key prefix.
   */
  constructor(client: RedisClientLike, options: RedisLeaseStoreOptions = {}) {
    this.connection = connectionFor(client);
    if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
    this.prefix = options.prefix === undefined ? DEFAULT_PREFIX : requireId(options.prefix, 'options.prefix');
  }

  /**
   * Takes the lease (see {@link LeaseStore.acquire}) in one script: free, expired or already
   * `holder`'s, and not reserved for a challenger of higher priority. Names ending in `:token` or
   * `:reserved` are refused with `ERR_INVALID_ARGUMENT`, since their keys would be another lease's.
   */
  async acquire(name: string, holder: string, priority: number, ttlMs: number): Promise<LeaseGrant | undefined> {
    const key = this.key(name);
    check(holder, 'holder', priority, ttlMs);
    const reply = await this.connection.eval(
      SCRIPTS.acquire,
      [key, `${key}:token`, `${key}:reserved`],
      [holder, String(priority), pexpire(ttlMs)],
    );
    return reply === null || reply === undefined || reply === false ? undefined : { token: toNumber(reply) };
  }

  /** Extends the lease by `ttlMs` on Redis's clock (see {@link LeaseStore.renew}). */
  async renew(name: string, holder: string, token: number, ttlMs: number): Promise<LeaseRecord | undefined> {
    const key = this.key(name);
    requireId(holder, 'holder');
    requireTtl(ttlMs);
    return toRecord(await this.connection.eval(SCRIPTS.renew, [key], [holder, tokenArg(token), pexpire(ttlMs)]));
  }

  /**
   * Gives the lease up (see {@link LeaseStore.release}); when it had a live challenge, reserves it
   * for the challenger until the challenge ends; and publishes on the lease's channel, so watchers
   * hear it at once. Arguments no lease could have been acquired with give `false`.
   */
  async release(name: string, holder: string, token: number): Promise<boolean> {
    if (!validName(name) || typeof holder !== 'string' || holder.length === 0 || typeof token !== 'number') {
      return false;
    }
    const key = this.prefix + name;
    const reply = await this.connection.eval(
      SCRIPTS.release,
      [key, `${key}:reserved`],
      [holder, tokenArg(token), `${key}:events`],
    );
    return toNumber(reply) === 1;
  }

  /** The current holder (see {@link LeaseStore.read}); `remainingMs` is the hash's `PTTL`. */
  async read(name: string): Promise<LeaseRecord | undefined> {
    if (!validName(name)) return undefined;
    return toRecord(await this.connection.eval(SCRIPTS.read, [this.prefix + name], []));
  }

  /** Records a challenge on the held lease (see {@link LeaseStore.challenge}), ending `ttlMs` later by Redis's clock. */
  async challenge(name: string, id: string, priority: number, ttlMs: number): Promise<void> {
    const key = this.key(name);
    check(id, 'id', priority, ttlMs);
    await this.connection.eval(SCRIPTS.challenge, [key], [id, String(priority), pexpire(ttlMs)]);
  }

  /**
   * Calls `listener` on every message published on `<prefix><name>:events`, which `release`
   * publishes to. The first watcher opens a subscriber connection (the client's `duplicate()`),
   * shared by all the store's watchers and closed when the last one stops. Subscribing happens in
   * the background; when it fails, the watch does nothing and the elector keeps to its polling.
   * Returns a function that stops the calls.
   */
  watch(name: string, listener: () => void): () => void {
    const channel = `${this.key(name)}:events`;
    requireFunction(listener, 'listener');
    let set = this.listeners.get(channel);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(channel, set);
    }
    const entry = (): void => listener();
    set.add(entry);
    this.sync();
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      const current = this.listeners.get(channel);
      if (current === undefined || !current.delete(entry)) return;
      if (current.size > 0) return;
      this.listeners.delete(channel);
      // The last watcher closes the connection now, even while a subscribe waits for it to connect.
      if (this.listeners.size === 0) void this.dropSubscriber();
      else this.sync();
    };
  }

  /**
   * Stops every watch and closes the subscriber connection, if any. The client passed to the
   * constructor stays open, and lease operations keep working; a later `watch` opens a new
   * subscriber.
   */
  async close(): Promise<void> {
    this.listeners.clear();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    this.subscribed = new Set();
    if (subscriber !== undefined) await subscriber.close().catch(ignore);
  }

  /** Same as {@link RedisLeaseStore.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private key(name: string): string {
    if (!validName(name)) {
      requireId(name, 'name');
      throw new FairpickError(
        'ERR_INVALID_ARGUMENT',
        `name must not end with ${RESERVED_SUFFIXES.join(' or ')}, whose keys belong to another lease; received ${describe(name)}`,
      );
    }
    return this.prefix + name;
  }

  /** Queues a pass that brings the subscriber in line with the watched channels. */
  private sync(): void {
    this.queue = this.queue.then(() => this.reconcile()).catch(ignore);
  }

  private async reconcile(): Promise<void> {
    if (this.listeners.size === 0) {
      await this.dropSubscriber();
      return;
    }
    let sub = this.subscriber;
    if (sub === undefined) {
      try {
        sub = this.connection.duplicate((channel) => this.dispatch(channel));
      } catch {
        return;
      }
      this.subscriber = sub;
      this.subscribed = new Set();
    }
    try {
      for (const channel of [...this.listeners.keys()]) {
        if (this.subscriber !== sub) return;
        if (this.subscribed.has(channel)) continue;
        await sub.subscribe(channel);
        if (this.subscriber === sub) this.subscribed.add(channel);
      }
      for (const channel of [...this.subscribed]) {
        if (this.subscriber !== sub) return;
        if (this.listeners.has(channel)) continue;
        this.subscribed.delete(channel);
        await sub.unsubscribe(channel);
      }
    } catch {
      // Start afresh at the next watch; until then the electors poll.
      if (this.subscriber === sub) await this.dropSubscriber();
    }
  }

  private async dropSubscriber(): Promise<void> {
    const subscriber = this.subscriber;
    if (subscriber === undefined) return;
    this.subscriber = undefined;
    this.subscribed = new Set();
    await subscriber.close().catch(ignore);
  }

  private dispatch(channel: string): void {
    const set = this.listeners.get(channel);
    if (set === undefined) return;
    // Asynchronously, as MemoryLeaseStore does, and never inside the client's event handler.
    for (const fn of [...set]) void Promise.resolve().then(fn);
  }
}

function validName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && !RESERVED_SUFFIXES.some((s) => name.endsWith(s));
}

function check(id: string, field: string, priority: number, ttlMs: number): void {
  requireId(id, field);
  if (typeof priority !== 'number' || !Number.isFinite(priority)) {
    throw invalid('priority', priority, 'a finite number');
  }
  requireTtl(ttlMs);
}

function requireTtl(ttlMs: number): void {
  requirePositiveNumber(ttlMs, 'ttlMs');
}

/** Whole milliseconds for PEXPIRE/PX: rounded up (a lease never ends early), capped where Redis can still add it to now. */
function pexpire(ttlMs: number): string {
  return String(Math.min(Math.ceil(ttlMs), Number.MAX_SAFE_INTEGER));
}

/** A token as the script compares it: the decimal the counter holds; anything else matches nothing. */
function tokenArg(token: number): string {
  return typeof token === 'number' && Number.isSafeInteger(token) && token > 0 ? String(token) : '';
}

function toNumber(value: unknown): number {
  const n = Number(typeof value === 'number' ? value : String(value));
  if (Number.isNaN(n)) throw new Error(`unexpected reply from Redis: ${describe(value)}`);
  return n;
}

function toRecord(reply: unknown): LeaseRecord | undefined {
  if (!Array.isArray(reply)) return undefined;
  const [holder, token, priority, remaining, challengerId, challengerPriority] = reply.map((v) =>
    v === null || v === undefined ? '' : String(v),
  );
  return {
    holder: holder as string,
    token: toNumber(token),
    priority: toNumber(priority),
    remainingMs: toNumber(remaining),
    challenger:
      challengerId === undefined || challengerId === ''
        ? undefined
        : { id: challengerId, priority: toNumber(challengerPriority) },
  };
}
