/**
 * The active/passive pair, as keepalived runs it for two HAProxy nodes: an elector makes one node
 * the leader; only the leader serves. On each transition the configured hook runs (keepalived's
 * `notify_master` / `notify_backup`) with the role and the fencing token in its environment, e.g.
 * to move a virtual IP.
 *
 * The elector is the UDP peer elector (VRRP-like adverts, `fairpick/node`; nothing else to run),
 * or `createElector` over a lease in Redis (`fairpick/redis`, with ioredis) or PostgreSQL
 * (`fairpick/postgres`, with pg), which cannot elect two leaders when the nodes lose sight of each
 * other. The client packages are loaded only when the config asks for them.
 */
import { spawn } from 'node:child_process';
import { createElector, type Elector } from 'fairpick';
import { createPeerElector } from 'fairpick/node';
import { type PairConfig, type PeerPairConfig, redactPassword, type StorePairConfig } from './config.js';
import type { Logger } from './log.js';

/** The UDP election group: adverts for another name are ignored. */
export const ELECTION_NAME = 'fairpick-proxy';

/** What the pair tells the proxy. */
export interface PairHandlers {
  /** This node became the leader. */
  elected(token: number): void;
  /** This node stopped leading (another took over, or it resigned). */
  demoted(reason: string): void;
}

/** Longest a hook may run before it is killed. */
const HOOK_TIMEOUT_MS = 30_000;
/** Hook output kept for the log. */
const HOOK_OUTPUT_LIMIT = 4096;
/** Longest a shutdown waits for the store's connections to close. */
const CLOSE_LIMIT_MS = 3000;

/** An elector and what must be closed after it has stopped (the store's client connections). */
interface OpenedElector {
  readonly elector: Elector;
  readonly close: () => Promise<void>;
}

/** A store elector, and what must succeed before it starts (connecting, creating the lease table). */
interface StoreElector extends OpenedElector {
  readonly prepare: () => Promise<void>;
}

export class Pair {
  private opened: OpenedElector | null = null;
  private stopped = false;
  /** Whether the store elector has started (its store prepared). */
  private electing = false;
  /** Aborted when the pair stops: ends the waits between attempts to prepare the store. */
  private readonly quit = new AbortController();
  private stopping: Promise<void> | null = null;
  private campaign: Promise<void> = Promise.resolve();
  private leading = false;
  private currentToken: number | null = null;
  /** Hooks run one after the other, in the order of the transitions (an add before its delete). */
  private hooks: Promise<void> = Promise.resolve();

  constructor(
    private readonly name: string,
    private readonly config: PairConfig,
    private readonly log: Logger,
    private readonly handlers: PairHandlers,
  ) {}

  private listen(elector: Elector): void {
    elector.on('elected', ({ token }) => {
      this.leading = true;
      this.currentToken = token;
      this.log.event('role', { role: 'leader', token });
      this.handlers.elected(token);
      this.runHook('onElected', this.config.onElected, { role: 'leader', token, reason: null });
    });
    elector.on('demoted', ({ token, reason }) => {
      this.leading = false;
      this.currentToken = null;
      this.log.event('role', { role: 'standby', reason, token });
      this.handlers.demoted(reason);
      this.runHook('onDemoted', this.config.onDemoted, { role: 'standby', token, reason });
    });
    elector.on('error', (error) => this.log.event('elector-error', { message: error.message }));
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The fencing token of the current leadership, or `null` on a standby. */
  get token(): number | null {
    return this.currentToken;
  }

  /**
   * Starts campaigning. The peer elector binds its UDP socket first and rejects when it cannot; a
   * store elector rejects only when its client package is missing: an unreachable store is logged
   * and retried (the node stays standby meanwhile), as a lost store is later on.
   */
  async start(): Promise<void> {
    this.log.event('role', { role: 'standby', reason: 'starting' });
    const config = this.config;
    if (config.elector === 'peer') {
      const opened = openPeer(this.name, config);
      this.opened = opened;
      this.listen(opened.elector);
      await opened.elector.start();
      return;
    }
    const opened = await openStore(this.name, config, this.log);
    if (this.stopped) {
      await opened.close(); // stopped while the client package loaded
      return;
    }
    this.opened = opened;
    this.listen(opened.elector);
    this.log.event('store', { elector: config.elector, url: redactPassword(config.url) });
    this.campaign = this.prepareThenStart(opened, config.renewMs).catch((error: Error) =>
      this.log.event('elector-error', { message: error.message }),
    );
  }

  private async prepareThenStart(opened: StoreElector, retryMs: number): Promise<void> {
    for (let failures = 0; !this.stopped; failures++) {
      try {
        await opened.prepare();
        break;
      } catch (error) {
        if (failures === 0 || failures % 30 === 0) {
          this.log.event('elector-error', { message: `preparing the lease store: ${(error as Error).message}` });
        }
        await this.pause(retryMs);
      }
    }
    if (this.stopped) return;
    this.electing = true;
    await opened.elector.start();
  }

  /** Waits `ms`, or less when the pair stops. */
  private pause(ms: number): Promise<void> {
    const signal = this.quit.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
    });
  }

  /**
   * Resigns at once when leading (the peer takes over without waiting), then closes the store's
   * connections, giving them {@link CLOSE_LIMIT_MS} (a store that stopped answering must not hold
   * the shutdown). Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.stopped = true;
    this.quit.abort();
    const opened = this.opened;
    if (opened === null) return;
    // Still preparing the store: closing its connections ends the wait for them.
    const preparing = this.config.elector !== 'peer' && !this.electing;
    const closed = preparing ? this.closeWithin(opened) : null;
    await this.campaign;
    await opened.elector.stop();
    await (closed ?? this.closeWithin(opened));
  }

  private async closeWithin(opened: OpenedElector): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), CLOSE_LIMIT_MS);
    });
    const outcome = await Promise.race([opened.close().then(() => 'closed' as const), late]).catch(
      (error: Error) => error,
    );
    clearTimeout(timer);
    if (outcome === 'late') {
      this.log.event('store-error', { message: `the store's connections did not close within ${CLOSE_LIMIT_MS} ms` });
    }
    if (outcome instanceof Error) this.log.event('store-error', { message: `closing the store: ${outcome.message}` });
  }

  /** Resolves when the hooks started so far have finished, or after `timeoutMs`. */
  async hooksSettled(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.hooks, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private runHook(
    hook: 'onElected' | 'onDemoted',
    command: string | null,
    info: { role: string; token: number; reason: string | null },
  ): void {
    if (command === null) return;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      FAIRPICK_ROLE: info.role,
      FAIRPICK_TOKEN: String(info.token),
      FAIRPICK_NAME: this.name,
    };
    if (info.reason !== null) env.FAIRPICK_REASON = info.reason;
    this.hooks = this.hooks.then(() =>
      runCommand(command, env).then((result) => this.log.event('hook', { hook, command, ...result })),
    );
  }
}

function openPeer(id: string, config: PeerPairConfig): OpenedElector {
  const elector = createPeerElector({
    name: ELECTION_NAME,
    id,
    bind: config.bind,
    peers: config.peers,
    priority: config.priority,
    preempt: config.preempt,
    advertMs: config.advertMs,
    ...(config.secret === null ? {} : { secret: config.secret }),
  });
  return { elector, close: async () => {} };
}

async function openStore(id: string, config: StorePairConfig, log: Logger): Promise<StoreElector> {
  const timing = {
    name: config.lease,
    id,
    leaseMs: config.leaseMs,
    renewMs: config.renewMs,
    priority: config.priority,
    preempt: config.preempt,
  };
  if (config.elector === 'redis') {
    const [{ Redis }, { RedisLeaseStore }] = await Promise.all([
      optional(() => import('ioredis'), 'ioredis', config.elector),
      import('fairpick/redis'),
    ]);
    // One retry per command and no offline queue: while Redis is away the elector's calls fail
    // at once (and it retries every renewMs) rather than piling up behind a reconnect.
    const client = new Redis(config.url, {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectionName: `fairpick-proxy:${id}`,
    });
    client.on('error', quietly(log, 'redis'));
    const store = new RedisLeaseStore(client, config.prefix === null ? {} : { prefix: config.prefix });
    const elector = orClose(
      () => createElector({ ...timing, store }),
      () => client.disconnect(),
    );
    return {
      elector,
      // The first command waits for the connection (the offline queue is off).
      prepare: () => waitUntilReady(client),
      close: async () => {
        await store.close();
        client.disconnect();
      },
    };
  }
  const [pg, { PostgresLeaseStore }] = await Promise.all([
    optional(() => import('pg'), 'pg', config.elector),
    import('fairpick/postgres'),
  ]);
  const pool = new pg.default.Pool({
    connectionString: config.url,
    max: 3,
    connectionTimeoutMillis: config.leaseMs,
    // A database that stops answering (no reset, no reply) is noticed by the socket too.
    keepAlive: true,
    application_name: `fairpick-proxy ${id}`,
  });
  pool.on('error', quietly(log, 'postgres')); // an idle connection lost
  const store = new PostgresLeaseStore(pool, config.table === null ? {} : { table: config.table });
  const elector = orClose(
    () => createElector({ ...timing, store }),
    () => void pool.end().catch(() => {}),
  );
  return {
    elector,
    prepare: () => store.ensureSchema(), // creates the table when it is missing
    close: async () => {
      await store.close();
      await pool.end();
    },
  };
}

/** `make()`, or, when it throws, `close()` then the throw. */
function orClose<T>(make: () => T, close: () => void): T {
  try {
    return make();
  } catch (error) {
    close();
    throw error;
  }
}

/** Resolves once an ioredis client is connected; rejects with the connection's error otherwise. */
function waitUntilReady(client: import('ioredis').Redis): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const ready = () => {
      client.off('error', failed).off('end', failed);
      resolve();
    };
    const failed = (error?: Error) => {
      client.off('ready', ready).off('error', failed).off('end', failed);
      reject(error ?? new Error('the connection was closed'));
    };
    client.once('ready', ready);
    client.once('error', failed);
    client.once('end', failed); // disconnect(): the proxy is stopping
  });
}

/** Logs a client's connection errors, each new message once (a reconnect loop repeats them). */
function quietly(log: Logger, client: string): (error: Error) => void {
  let last = '';
  return (error) => {
    if (error.message === last) return;
    last = error.message;
    log.event('store-error', { client, message: error.message });
  };
}

/** Imports an optional client package, or explains which one to install. */
async function optional<T>(load: () => Promise<T>, name: string, elector: string): Promise<T> {
  try {
    return await load();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
    throw new Error(`pair.elector "${elector}" needs the ${name} package: npm install ${name}`);
  }
}

interface HookResult {
  readonly code: number | null;
  readonly signal: string | null;
  readonly output: string;
}

/**
 * Runs a shell command and collects its output for the log (not inherited: with the JSON log
 * format every line on stdout must stay one JSON object).
 */
function runCommand(command: string, env: NodeJS.ProcessEnv): Promise<HookResult> {
  return new Promise((resolve) => {
    let output = '';
    const collect = (chunk: Buffer): void => {
      if (output.length < HOOK_OUTPUT_LIMIT) output += chunk.toString('utf8');
    };
    const child = spawn(command, {
      shell: true,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: HOOK_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error) => resolve({ code: null, signal: null, output: error.message }));
    child.on('close', (code, signal) =>
      resolve({ code, signal, output: output.slice(0, HOOK_OUTPUT_LIMIT).trimEnd() }),
    );
  });
}
