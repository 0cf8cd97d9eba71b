import type { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { Agent, Client, Dispatcher, errors, Pool } from 'undici';
import { FairpickError, isFairpickError } from '../errors.js';
import {
  backendTarget,
  checkBackendUrls,
  mayRetryMethod,
  optionsObject,
  type PickFields,
  parseUrl,
  type RetryOptions,
  type RetryPolicy,
  retryPolicy,
  type UrlBackend,
} from '../http/policy.js';
import { RetryBudget } from '../http/retry-budget.js';
import { monotonicNow } from '../runtime.js';
import type { Balancer, PickContext, ReleaseResult, Slot } from '../types.js';
import { invalid, requireFunction } from '../validate.js';
import { asLegacy, type LegacyHandler } from './legacy-handler.js';

/** Options of {@link BalancedDispatcher}: the retry rules, and undici `Pool` options for each backend's pool. */
export interface BalancedDispatcherOptions extends RetryOptions, Omit<Pool.Options, 'factory'> {
  /**
   * Creates the dispatcher of one backend, given its origin and the pool options.
   * @defaultValue `(origin, options) => new Pool(origin, options)`
   */
  readonly factory?: (origin: string, options: Pool.Options) => Dispatcher;
  /**
   * Where requests to other origins than the placeholder go.
   * @defaultValue a new undici `Agent` with the pool options, created on first use
   */
  readonly passthrough?: Dispatcher;
  /** The affinity key of a request, for the hash algorithms (a header, the path…). */
  readonly key?: (request: Dispatcher.DispatchOptions) => string | Uint8Array | undefined;
  /** The client address of a request, for `ip-hash`. */
  readonly clientIp?: (request: Dispatcher.DispatchOptions) => string | undefined;
  /**
   * The clock for latencies and the retry budget, in milliseconds.
   * @defaultValue `performance.now`
   */
  readonly now?: () => number;
}

/** What a request needs of its dispatcher. */
interface Engine<B extends UrlBackend> {
  readonly policy: RetryPolicy;
  readonly budget: RetryBudget | null;
  readonly now: () => number;
  /** Whether `destroy()` was called: requests in progress fail, and none is retried. */
  readonly destroyed: boolean;
  acquire(ctx: PickContext): Slot<B>;
  poolOf(backend: B): Dispatcher;
  context(options: Dispatcher.DispatchOptions): PickFields;
  /** A request has ended (answered or failed), for `close()`, which waits for them. */
  ended(): void;
}

interface PoolEntry {
  readonly url: string;
  readonly pool: Dispatcher;
}

/**
 * An undici `Dispatcher` that balances each request over the backends of a fairpick balancer, with
 * one undici `Pool` per backend (created on first use, closed when the backend leaves the balancer).
 * Requests to the placeholder origin (`http://fairpick` by default) are balanced; others go to the
 * `passthrough` dispatcher.
 *
 * Accounting, retries and failures follow the same rules as `balancedFetch`: a request is in flight
 * from the pick until its response has been read or has failed; a connection error, a timeout or a
 * status in `retryOn` is retried on another backend for idempotent methods whose body can be sent
 * again (none, a string or a buffer), within `retries` and the retry budget. When the retries are
 * spent, the caller gets the last response, or the last error as undici reported it. `timeoutMs`
 * counts from the pick, so it covers an attempt still waiting for a connection of its pool too.
 *
 * `close()` refuses new requests, lets those in progress finish (retries included), then closes the
 * pools; `destroy()` fails the requests in progress at once, without retrying them or counting them
 * against their backends.
 *
 * @example
 * ```ts
 * import { request } from 'undici';
 * const dispatcher = new BalancedDispatcher(lb, { connections: 64, retries: 2 });
 * const { statusCode, body } = await request('http://fairpick/api/users', { dispatcher });
 * ```
 */
export class BalancedDispatcher<B extends UrlBackend = UrlBackend> extends Dispatcher {
  readonly #policy: RetryPolicy;
  readonly #budget: RetryBudget | null;
  readonly #factory: (origin: string, options: Pool.Options) => Dispatcher;
  readonly #poolOptions: Pool.Options;
  readonly #key: BalancedDispatcherOptions['key'];
  readonly #clientIp: BalancedDispatcherOptions['clientIp'];
  readonly #now: () => number;
  readonly #pools = new Map<string, PoolEntry>();
  // Pools of backends that left, closing once their requests have finished.
  readonly #retiring = new Map<Dispatcher, Promise<void>>();
  readonly #stopWatching: () => void;
  #passthrough: Dispatcher | null;
  readonly #ownsPassthrough: boolean;
  #closed = false;
  #destroyed = false;
  #shutDown = false;
  // Balanced requests not ended yet, and what `close()` runs once there are none.
  #active = 0;
  #whenIdle: Array<() => void> = [];
  #closing: Promise<void> | null = null;
  readonly #engine: Engine<B>;

  /**
   * @param lb - the balancer; its backends need a `url`.
   * @param options - retry rules and undici `Pool` options.
   * @throws `FairpickError` `ERR_INVALID_ARGUMENT` for a bad option (the undici `Pool` options too, unless a
   *   `factory` is given) or a backend without a valid `url`.
   */
  constructor(lb: Balancer<B>, options?: BalancedDispatcherOptions) {
    super();
    const opts = optionsObject(options, 'options');
    if (typeof lb?.acquire !== 'function') throw invalid('lb', lb, 'a balancer from createBalancer');
    const {
      factory,
      passthrough,
      key,
      clientIp,
      now,
      retries: _r,
      retryOn: _o,
      retryNonIdempotent: _n,
      retryBudget: _b,
      failureStatuses: _f,
      timeoutMs: _t,
      origin: _origin,
      ...poolOptions
    } = opts;
    this.#policy = retryPolicy(opts, 'options');
    this.#factory =
      factory === undefined
        ? (origin, o) => new Pool(origin, o)
        : requireFunction<(origin: string, options: Pool.Options) => Dispatcher>(factory, 'options.factory');
    if (passthrough !== undefined && typeof passthrough?.dispatch !== 'function') {
      throw invalid('options.passthrough', passthrough, 'an undici Dispatcher');
    }
    this.#key = key === undefined ? undefined : requireFunction(key, 'options.key');
    this.#clientIp = clientIp === undefined ? undefined : requireFunction(clientIp, 'options.clientIp');
    this.#now = now === undefined ? monotonicNow : requireFunction<() => number>(now, 'options.now');
    // undici checks most pool options only when it opens a connection: check them now instead.
    if (factory === undefined) checkPoolOptions(this.#policy.origin, poolOptions);
    checkBackendUrls(lb.backends);
    this.#poolOptions = poolOptions;
    this.#passthrough = passthrough ?? null;
    this.#ownsPassthrough = passthrough === undefined;
    this.#budget = this.#policy.budget === null ? null : new RetryBudget(this.#policy.budget, this.#now);
    // A backend that leaves the balancer takes its pool with it; its requests in flight finish first.
    this.#stopWatching = lb.on('removed', (backend) => this.#retire(backend.id));
    const keyOf = this.#key;
    const ipOf = this.#clientIp;
    const self = this;
    this.#engine = {
      policy: this.#policy,
      budget: this.#budget,
      now: this.#now,
      get destroyed() {
        return self.#destroyed;
      },
      acquire: (ctx) => lb.acquire(ctx),
      poolOf: (backend) => this.#poolOf(backend),
      context(options) {
        const ctx: PickFields = {};
        const key = keyOf?.(options);
        if (key !== undefined) ctx.key = key;
        const ip = ipOf?.(options);
        if (ip !== undefined) ctx.clientIp = ip;
        return ctx;
      },
      ended: () => {
        this.#active--;
        if (this.#active === 0 && this.#whenIdle.length > 0) {
          for (const run of this.#whenIdle.splice(0)) run();
        }
      },
    };
  }

  /** Whether `close()` or `destroy()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether `destroy()` was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Dispatches one request (undici's low-level API; `request`, `stream`, `fetch` and the rest call it).
   * @returns `false` when the chosen backend's pool is busy (wait for `'drain'`), as undici's pools do.
   */
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    if (handler === null || typeof handler !== 'object')
      throw new errors.InvalidArgumentError('handler must be an object');
    const caller = asLegacy(handler);
    let request: BalancedRequest<B>;
    try {
      if (options === null || typeof options !== 'object')
        throw new errors.InvalidArgumentError('opts must be an object.');
      if (this.#destroyed) throw new errors.ClientDestroyedError();
      if (this.#closed) throw new errors.ClientClosedError();
      const origin = options.origin === undefined ? undefined : originOf(options.origin, this.#policy.origin);
      if (origin !== undefined && origin !== this.#policy.origin) return this.#other().dispatch(options, handler);
      request = new BalancedRequest(this.#engine, options, caller); // ERR_NO_BACKEND: no backend to pick
    } catch (err) {
      if (caller.onError === undefined) throw err;
      caller.onError(err as Error);
      return false;
    }
    this.#active++;
    return request.begin();
  }

  /**
   * Refuses new requests, waits for those in progress (their retries included), then closes every
   * pool once its connections are idle.
   */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | undefined {
    this.#closed = true;
    this.#closing ??= (
      this.#active === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.#whenIdle.push(resolve))
    ).then(() => this.#shutdown('close'));
    return settle(this.#closing, callback);
  }

  /** Destroys every pool at once: requests in progress fail with `err`, and none is retried. */
  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | undefined {
    const err = typeof errOrCallback === 'function' ? null : (errOrCallback ?? null);
    const cb = typeof errOrCallback === 'function' ? errOrCallback : callback;
    this.#closed = true;
    this.#destroyed = true;
    return settle(this.#shutdown('destroy', err), cb);
  }

  // The pool of a backend, created on first use, replaced when its url changed.
  #poolOf(backend: B): Dispatcher {
    const entry = this.#pools.get(backend.id);
    if (entry !== undefined && entry.url === backend.url) return entry.pool;
    if (this.#destroyed) throw new errors.ClientDestroyedError();
    if (this.#shutDown) throw new errors.ClientClosedError();
    if (entry !== undefined) this.#retire(backend.id);
    const target = backendTarget(backend);
    const pool = this.#factory(target.origin, this.#poolOptions);
    // Re-emitted as undici's pools do, with this dispatcher first in `targets`.
    const emitter = pool as unknown as EventEmitter;
    for (const event of ['connect', 'disconnect', 'connectionError', 'drain']) {
      emitter.on(event, (origin: URL, targets?: readonly Dispatcher[], error?: Error) =>
        (this as unknown as EventEmitter).emit(event, origin, [this, ...(targets ?? [])], error),
      );
    }
    this.#pools.set(backend.id, { url: backend.url, pool });
    return pool;
  }

  #other(): Dispatcher {
    this.#passthrough ??= new Agent(this.#poolOptions);
    return this.#passthrough;
  }

  #retire(id: string): void {
    const entry = this.#pools.get(id);
    if (entry === undefined) return;
    this.#pools.delete(id);
    const pool = entry.pool;
    let closing: Promise<void>;
    try {
      closing = pool.close();
    } catch {
      return; // a custom dispatcher that cannot close: nothing to wait for
    }
    this.#retiring.set(
      pool,
      closing.then(
        () => void this.#retiring.delete(pool),
        () => void this.#retiring.delete(pool),
      ),
    );
  }

  async #shutdown(how: 'close' | 'destroy', err: Error | null = null): Promise<void> {
    if (!this.#shutDown) {
      this.#shutDown = true;
      this.#stopWatching();
    }
    const pools = [...this.#pools.values()].map((e) => e.pool);
    this.#pools.clear();
    if (this.#passthrough !== null && this.#ownsPassthrough) {
      pools.push(this.#passthrough);
      this.#passthrough = null;
    }
    const retiring = [...this.#retiring];
    await Promise.all([
      ...pools.map((d) => (how === 'close' ? d.close() : d.destroy(err))),
      ...retiring.map(([d, closing]) => (how === 'close' ? closing : d.destroy(err))),
    ]);
  }
}

// Checks the pool options as undici would on the first connection, naming the field that is wrong.
function checkPoolOptions(origin: string, options: Pool.Options): void {
  const probes: Dispatcher[] = [];
  try {
    probes.push(new Pool(origin, options)); // connections, connect
    const {
      connections: _c,
      factory: _f,
      clientTtl: _t,
      ...clientOptions
    } = options as Pool.Options & {
      clientTtl?: unknown;
    };
    probes.push(new Client(origin, clientOptions)); // the rest
  } catch (err) {
    if (!(err instanceof errors.InvalidArgumentError)) throw err;
    const message = err.message;
    const field = Object.keys(options).find((k) => new RegExp(`\\b${k}\\b`).test(message));
    const value = field === undefined ? options : (options as Record<string, unknown>)[field];
    throw invalid(
      field === undefined ? 'options' : `options.${field}`,
      value,
      `accepted by undici's Pool (${message})`,
    );
  } finally {
    for (const probe of probes) probe.destroy().catch(() => {});
  }
}

function settle(promise: Promise<void>, callback: (() => void) | undefined): Promise<void> | undefined {
  if (callback === undefined) return promise;
  promise.then(callback, callback);
  return undefined;
}

function originOf(value: string | URL, placeholder: string): string | undefined {
  if (typeof value !== 'string') return value.origin;
  if (value === placeholder) return value; // undici's APIs pass the URL's origin: no need to parse it again
  return parseUrl(value)?.origin ?? value;
}

// A body undici can send again: none, a string or bytes. Streams, iterables and forms are read once.
function replayable(body: unknown): boolean {
  return body === null || body === undefined || typeof body === 'string' || body instanceof Uint8Array;
}

/**
 * One request through the dispatcher: its attempts, each on its own backend. It drives the caller's
 * handler: nothing reaches the caller from an attempt that will be retried, and the caller's
 * `onConnect` comes once, from the first attempt that gets a connection.
 */
class BalancedRequest<B extends UrlBackend> {
  private readonly ctx: PickFields;
  private readonly retriable: boolean;
  private first: Slot<B> | null;
  private current: Attempt<B> | null = null;
  private attempts = 0;
  private exclude: Set<string> | null = null;
  private connected = false;
  private ended = false;
  callerAbort: Error | null = null;

  constructor(
    readonly owner: Engine<B>,
    private readonly options: Dispatcher.DispatchOptions,
    readonly caller: LegacyHandler,
  ) {
    this.ctx = owner.context(options);
    const policy = owner.policy;
    this.retriable = policy.retries > 0 && replayable(options.body) && mayRetryMethod(policy, options.method);
    this.first = owner.acquire(this.ctx); // ERR_NO_BACKEND reaches the caller's onError
    owner.budget?.request();
  }

  /** Sends the first attempt. */
  begin(): boolean {
    const slot = this.first as Slot<B>;
    this.first = null;
    try {
      return this.start(slot);
    } catch (err) {
      slot.release();
      this.fail(err as Error);
      return false;
    }
  }

  private start(slot: Slot<B>): boolean {
    const backend = slot.backend;
    const pool = this.owner.poolOf(backend);
    const target = backendTarget(backend);
    const attempt = new Attempt(this, slot, this.owner.now());
    this.current = attempt;
    const timeoutMs = this.owner.policy.timeoutMs;
    if (timeoutMs > 0) attempt.timer = setTimeout(() => this.timeout(attempt, timeoutMs), timeoutMs).unref();
    const path = target.basePath === '' ? this.options.path : target.basePath + this.options.path;
    try {
      return pool.dispatch({ ...this.options, origin: target.origin, path }, attempt);
    } catch (err) {
      attempt.abandon(err as Error); // a dispatcher that throws instead of calling onError
      throw err;
    }
  }

  /** The attempt got its connection: the caller learns of it once, with an abort for every attempt. */
  connect(context: unknown): void {
    if (this.connected) return;
    this.connected = true;
    this.caller.onConnect?.((err) => this.abortByCaller(err), context);
  }

  private abortByCaller(err?: Error): void {
    if (this.ended || this.callerAbort !== null) return;
    this.callerAbort = err ?? new errors.RequestAbortedError();
    const attempt = this.current;
    if (attempt?.abort != null) {
      attempt.abort(this.callerAbort); // undici calls the attempt's onError
    } else if (attempt?.live) {
      // Still waiting for a connection of its pool: end it now rather than when it gets one.
      attempt.abandon(this.callerAbort);
      attempt.slot.release();
      this.fail(this.callerAbort);
    }
    // Between two attempts, the next one sees `callerAbort` before it starts.
  }

  private timeout(attempt: Attempt<B>, ms: number): void {
    attempt.timer = undefined;
    if (!attempt.live || attempt.discarding || attempt.forwarding) return;
    const error = new FairpickError(
      'ERR_TIMEOUT',
      `no response headers from backend ${JSON.stringify(attempt.slot.backend.id)} within ${ms} ms`,
    );
    attempt.timeoutError = error;
    if (attempt.abort !== null) {
      attempt.abort(error); // undici calls the attempt's onError
      return;
    }
    // Queued in its pool (every connection busy) or still connecting: undici offers no abort until
    // the request is written, so the attempt is given up here and aborted when it gets a socket.
    attempt.abandon(error);
    attempt.slot.release({ ok: false, latencyMs: attempt.elapsed() });
    const next = this.nextSlotOrFail(attempt.slot);
    if (next === undefined) return;
    if (next === null) this.fail(error);
    else this.retry(next);
  }

  /** The response headers of an attempt (final status). */
  headers(attempt: Attempt<B>, statusCode: number, headers: Buffer[], resume: () => void, text: string): boolean {
    const policy = this.owner.policy;
    let next: Slot<B> | null = null;
    try {
      attempt.result = { ok: !policy.isFailure(statusCode), latencyMs: attempt.elapsed() };
      if (policy.retryOn.has(statusCode)) next = this.nextSlot(attempt.slot);
    } catch (err) {
      // The caller's failureStatuses predicate (or picker) threw: the request fails with that
      // error, the backend is neither blamed nor credited, and the unread response is dropped.
      attempt.abandon(err as Error);
      attempt.slot.release();
      this.fail(err as Error);
      attempt.abort?.(err as Error);
      return false;
    }
    if (next !== null) {
      // Retry on `next` now, and read this response to its end in the background (keeping its
      // connection): a slow or endless body must not hold the retry back.
      attempt.slot.release(attempt.result);
      attempt.discarding = true;
      this.retry(next);
      return true;
    }
    attempt.forwarding = true;
    return this.caller.onHeaders?.(statusCode, headers, resume, text) ?? true;
  }

  /** The attempt's response, forwarded, has ended. */
  complete(attempt: Attempt<B>, trailers: string[] | null): void {
    attempt.slot.release(attempt.result);
    if (!this.end()) return;
    this.caller.onComplete?.(trailers);
  }

  upgrade(attempt: Attempt<B>, statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    attempt.slot.release({ ok: true, latencyMs: attempt.elapsed() });
    if (!this.end()) return;
    this.caller.onUpgrade?.(statusCode, headers, socket);
  }

  /** The attempt failed (connection error, timeout, abort, destroy) before or after its headers. */
  error(attempt: Attempt<B>, err: Error): void {
    if (attempt.discarding) return; // the response being dropped failed: its retry is under way
    if (this.callerAbort !== null || this.owner.destroyed) {
      // Not the backend's fault: the caller gave up, or the dispatcher was destroyed. A response
      // already forwarded counts as what it was, as when its body is read to the end.
      attempt.slot.release(attempt.forwarding ? attempt.result : undefined);
      this.fail(err);
      return;
    }
    attempt.slot.release({ ok: false, latencyMs: attempt.result.latencyMs ?? attempt.elapsed() });
    const retry = attempt.forwarding ? null : this.nextSlotOrFail(attempt.slot);
    if (retry === undefined) return;
    if (retry === null) this.fail(attempt.timeoutError ?? err);
    else this.retry(retry);
  }

  // nextSlot, or, when the picker throws (a custom one's bug), the request failed with that error
  // and undefined. For the callers that run in a timer or in undici's onError, where a throw would
  // be uncaught and leave the request unsettled.
  private nextSlotOrFail(current: Slot<B>): Slot<B> | null | undefined {
    try {
      return this.nextSlot(current);
    } catch (err) {
      this.fail(err as Error);
      return undefined;
    }
  }

  // The slot of the next attempt when a retry is allowed (and picked, so the budget is spent), else null.
  private nextSlot(current: Slot<B>): Slot<B> | null {
    const owner = this.owner;
    if (!this.retriable || this.attempts >= owner.policy.retries) return null;
    if (this.callerAbort !== null || owner.destroyed) return null;
    if (owner.budget !== null && !owner.budget.allows()) return null;
    this.exclude ??= new Set();
    this.exclude.add(current.backend.id);
    this.ctx.exclude = this.exclude;
    let next: Slot<B>;
    try {
      next = owner.acquire(this.ctx);
    } catch (err) {
      if (isFairpickError(err, 'ERR_NO_BACKEND')) return null;
      throw err;
    }
    owner.budget?.spend();
    return next;
  }

  private retry(next: Slot<B>): void {
    this.attempts++;
    this.current = null;
    // A fresh tick: the pool that failed is still unwinding its own callbacks.
    queueMicrotask(() => {
      const stop = this.callerAbort ?? (this.owner.destroyed ? new errors.ClientDestroyedError() : null);
      if (stop !== null) {
        next.release();
        this.fail(stop);
        return;
      }
      try {
        this.start(next);
      } catch (err) {
        next.release();
        this.fail(err as Error);
      }
    });
  }

  private fail(err: Error): void {
    if (!this.end()) return;
    if (this.caller.onError === undefined) throw err;
    this.caller.onError(err);
  }

  // Marks the request ended, once; false when it already was.
  private end(): boolean {
    if (this.ended) return false;
    this.ended = true;
    this.current = null;
    this.owner.ended();
    return true;
  }
}

/**
 * One attempt of a request: the handler its backend's pool drives. An abandoned attempt (timed out
 * or given up by the caller before it had a connection) ignores everything but `onConnect`, where it
 * aborts the request before it is written.
 */
class Attempt<B extends UrlBackend> implements LegacyHandler {
  abort: ((err?: Error) => void) | null = null;
  timer: ReturnType<typeof setTimeout> | undefined;
  timeoutError: FairpickError | null = null;
  result: ReleaseResult = {};
  discarding = false; // reading a response that was retried
  forwarding = false; // the caller has seen the response headers
  private abandoned: Error | null = null;

  constructor(
    private readonly request: BalancedRequest<B>,
    readonly slot: Slot<B>,
    private readonly started: number,
  ) {}

  get live(): boolean {
    return this.abandoned === null;
  }

  abandon(reason: Error): void {
    this.abandoned = reason;
    this.clearTimer();
  }

  elapsed(): number {
    return Math.max(0, this.request.owner.now() - this.started);
  }

  onConnect(abort: (err?: Error) => void, context?: unknown): void {
    if (this.abandoned !== null) {
      abort(this.abandoned);
      return;
    }
    this.abort = abort;
    const pending = this.request.callerAbort;
    if (pending !== null) {
      abort(pending);
      return;
    }
    this.request.connect(context);
  }

  onResponseStarted(): void {
    if (this.abandoned === null) this.request.caller.onResponseStarted?.();
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.abandoned !== null) return true;
    if (statusCode < 200) return this.request.caller.onHeaders?.(statusCode, headers, resume, statusText) ?? true;
    this.clearTimer();
    return this.request.headers(this, statusCode, headers, resume, statusText);
  }

  onData(chunk: Buffer): boolean {
    if (this.abandoned !== null || this.discarding) return true;
    return this.request.caller.onData?.(chunk) ?? true;
  }

  onComplete(trailers: string[] | null): void {
    if (this.abandoned !== null || this.discarding) return;
    this.request.complete(this, trailers);
  }

  onUpgrade(statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    if (this.abandoned !== null) {
      socket.destroy();
      return;
    }
    this.clearTimer();
    this.request.upgrade(this, statusCode, headers, socket);
  }

  onBodySent(chunkSize: number, totalBytesSent: number): void {
    if (this.abandoned === null && !this.discarding) this.request.caller.onBodySent?.(chunkSize, totalBytesSent);
  }

  onError(err: Error): void {
    if (this.abandoned !== null) return;
    this.clearTimer();
    this.abandoned = err; // nothing more from this attempt
    this.request.error(this, err);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
