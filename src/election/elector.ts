import { Emitter } from '../events.js';
import { monotonicNow } from '../runtime.js';
import { hostTimers, type Timers } from '../timers.js';
import { invalid, isObject, requireBoolean, requireFunction, requireId } from '../validate.js';
import type { LeaseStore } from './store.js';

/** Options of {@link createElector}. */
export interface ElectorOptions {
  /** The name of the role campaigned for; electors with the same name and store compete. */
  readonly name: string;
  /** This candidate's unique id (e.g. the host name). */
  readonly id: string;
  /** Where the lease lives. */
  readonly store: LeaseStore;
  /**
   * How long a lease lasts without renewal: the failover time after a crash is about this.
   * @defaultValue 3000
   */
  readonly leaseMs?: number;
  /**
   * Time between renewals (leader) and attempts (standby); below `leaseMs`.
   * @defaultValue leaseMs / 3
   */
  readonly renewMs?: number;
  /**
   * Allowance for clock drift: a leader stops believing it leads `marginMs` before its lease can
   * expire in the store. Two electors never both lead while their clocks drift apart by less.
   * @defaultValue leaseMs / 10
   */
  readonly marginMs?: number;
  /**
   * 1-255; with `preempt`, a higher priority takes the role from a lower one (keepalived's).
   * @defaultValue 100
   */
  readonly priority?: number;
  /**
   * Whether this candidate, when its priority is higher than the leader's, takes the role over.
   * @defaultValue true
   */
  readonly preempt?: boolean;
  /** The elector's clock in milliseconds. @defaultValue performance.now */
  readonly now?: () => number;
  /** The timers it schedules with. @defaultValue the runtime's, unref'ed */
  readonly timers?: Timers;
}

/** Payload of `'elected'`. */
export interface ElectedEvent {
  /** The fencing token of this leadership: tag every write to a guarded resource with it. */
  readonly token: number;
  /** When, on the elector's clock. */
  readonly at: number;
}

/** Payload of `'demoted'`. */
export interface DemotedEvent {
  /** The token of the leadership that ended. */
  readonly token: number;
  /**
   * Why: `'expired'` (no confirmed renewal in time), `'lost'` (the store says another holds it),
   * `'preempted'` (yielded to a higher priority) or `'stopped'` (`stop()`).
   */
  readonly reason: 'expired' | 'lost' | 'preempted' | 'stopped';
  /** When, on the elector's clock. */
  readonly at: number;
}

/** The events of an elector. */
export interface ElectorEvents {
  /** This candidate became the leader. */
  readonly elected: ElectedEvent;
  /** This candidate stopped being the leader. */
  readonly demoted: DemotedEvent;
  /** A store operation failed; the elector retries by itself. */
  readonly error: Error;
}

/** One candidate in a leader election. Create it with {@link createElector}. */
export interface Elector {
  /** Starts campaigning; resolves after the first attempt. Idempotent. */
  start(): Promise<void>;
  /** Stops campaigning and, when leading, demotes at once and releases the lease. Idempotent. */
  stop(): Promise<void>;
  /** Whether this candidate leads now (false from the moment its lease could have expired). */
  readonly isLeader: boolean;
  /** The fencing token of the current leadership, or `undefined` when not leading. */
  readonly token: number | undefined;
  /** The current holder's id as the store sees it, or `undefined` when nobody holds the lease. */
  leader(): Promise<string | undefined>;
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<E extends keyof ElectorEvents>(event: E, listener: (payload: ElectorEvents[E]) => void): () => void;
  /** Same as {@link Elector.stop}. */
  [Symbol.asyncDispose](): Promise<void>;
}

const STORE_METHODS = ['acquire', 'renew', 'release', 'read', 'challenge'] as const;

/**
 * Creates a candidate for the role `name`: one of the candidates on the same store leads at a time,
 * and holds a fencing token greater than every earlier leader's.
 *
 * Safety: a leader believes it leads only until (the time its last successful acquire or renew
 * was *sent*) + leaseMs - marginMs, by its own clock, and demotes itself the moment that passes
 * without a confirmed renewal, even when the store cannot be reached. The store expires the lease
 * no earlier than leaseMs after it received the request, so as long as clocks drift apart by less
 * than the margin, no two electors believe they lead at the same instant.
 */
export function createElector(options: ElectorOptions): Elector {
  return new LeaseElector(options);
}

class LeaseElector implements Elector {
  private readonly name: string;
  private readonly id: string;
  private readonly store: LeaseStore;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private readonly marginMs: number;
  private readonly priority: number;
  private readonly preempt: boolean;
  private readonly now: () => number;
  private readonly timers: Timers;
  private readonly emitter = new Emitter<ElectorEvents>();
  private running = false;
  private currentToken: number | undefined;
  /** The end of the current leadership's belief, on this elector's clock. */
  private validUntil = 0;
  private tickTimer: unknown;
  private expiryTimer: unknown;
  private unwatch: (() => void) | undefined;
  private failures = 0;
  /** The campaign step in progress, which stop() waits for. */
  private inflight: Promise<void> | undefined;
  /** Bumped on every start/stop so a reply to an older campaign is ignored. */
  private generation = 0;

  constructor(options: ElectorOptions) {
    if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
    this.name = requireId(options.name, 'options.name');
    this.id = requireId(options.id, 'options.id');
    const store = options.store as unknown;
    if (!isObject(store) || STORE_METHODS.some((m) => typeof store[m] !== 'function')) {
      throw invalid('options.store', store, `a LeaseStore (an object with ${STORE_METHODS.join(', ')} methods)`);
    }
    this.store = options.store;
    this.leaseMs = positiveInteger(options.leaseMs, 'options.leaseMs', 3000, 3);
    this.renewMs = positiveInteger(options.renewMs, 'options.renewMs', Math.max(1, Math.floor(this.leaseMs / 3)));
    if (this.renewMs >= this.leaseMs) {
      throw invalid('options.renewMs', this.renewMs, `less than leaseMs (${this.leaseMs})`);
    }
    const margin = options.marginMs ?? this.leaseMs / 10;
    if (typeof margin !== 'number' || !Number.isFinite(margin) || margin < 0) {
      throw invalid('options.marginMs', margin, 'a finite number >= 0');
    }
    if (margin >= this.leaseMs - this.renewMs) {
      throw invalid(
        'options.marginMs',
        margin,
        `less than leaseMs - renewMs (${this.leaseMs - this.renewMs}), or a leader could never renew in time`,
      );
    }
    this.marginMs = margin;
    const priority = options.priority ?? 100;
    if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 1 || priority > 255) {
      throw invalid('options.priority', priority, 'an integer from 1 to 255');
    }
    this.priority = priority;
    this.preempt = options.preempt === undefined ? true : requireBoolean(options.preempt, 'options.preempt');
    this.now = options.now === undefined ? monotonicNow : requireFunction(options.now, 'options.now');
    if (options.timers !== undefined) {
      const t = options.timers as unknown;
      if (!isObject(t) || typeof t.setTimeout !== 'function' || typeof t.clearTimeout !== 'function') {
        throw invalid('options.timers', t, 'an object with setTimeout and clearTimeout functions');
      }
    }
    this.timers = options.timers ?? hostTimers;
  }

  get isLeader(): boolean {
    return this.currentToken !== undefined && this.now() < this.validUntil;
  }

  get token(): number | undefined {
    return this.isLeader ? this.currentToken : undefined;
  }

  async leader(): Promise<string | undefined> {
    return (await this.store.read(this.name))?.holder;
  }

  on<E extends keyof ElectorEvents>(event: E, listener: (payload: ElectorEvents[E]) => void): () => void {
    if (event !== 'elected' && event !== 'demoted' && event !== 'error') {
      throw invalid('event', event, "'elected', 'demoted' or 'error'");
    }
    requireFunction(listener, 'listener');
    return this.emitter.on(event, listener);
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.generation++;
    this.failures = 0;
    this.unwatch = this.store.watch?.(this.name, () => {
      // Fast hand-over: the lease was released; try now rather than at the next poll.
      if (this.running && this.currentToken === undefined) this.schedule(0);
    });
    await this.tick();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.generation++;
    this.timers.clearTimeout(this.tickTimer);
    this.unwatch?.();
    this.unwatch = undefined;
    // Demote first, so nothing acts as leader while the release travels.
    const token = this.currentToken;
    if (token !== undefined) this.demote('stopped');
    // Let a call in flight settle (a late acquire is given back), so that a new elector with the
    // same id cannot have its lease released by this one.
    await this.inflight?.catch(() => undefined);
    if (token === undefined) return;
    try {
      await this.call(this.store.release(this.name, this.id, token));
    } catch (error) {
      this.reportError(error);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  private schedule(delayMs: number): void {
    this.timers.clearTimeout(this.tickTimer);
    if (!this.running) return;
    this.tickTimer = this.timers.setTimeout(() => void this.tick(), delayMs);
  }

  /** One campaign step: renew as leader, or try to acquire (and maybe challenge) as standby. */
  private tick(): Promise<void> {
    if (!this.running || this.inflight !== undefined) return this.inflight ?? Promise.resolve();
    const step = this.step().finally(() => {
      this.inflight = undefined;
    });
    this.inflight = step;
    return step;
  }

  private async step(): Promise<void> {
    const generation = this.generation;
    let delay = this.renewMs;
    try {
      if (this.currentToken !== undefined) await this.renew(generation);
      else await this.campaign(generation);
      this.failures = 0;
    } catch (error) {
      if (generation === this.generation) {
        this.reportError(error);
        // Back off, but never beyond the renew period: a leader must keep trying before it expires.
        this.failures++;
        delay = Math.min(this.renewMs, (this.renewMs / 8) * 2 ** (this.failures - 1));
      }
    }
    // A stop() and start() during the step began a new campaign: run its first step now.
    if (this.running) this.schedule(generation === this.generation ? delay : 0);
  }

  /** A store call that has not answered within the renew period counts as failed. */
  private call<T>(request: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.timers.setTimeout(
        () => reject(new Error(`lease store did not answer within ${this.renewMs} ms`)),
        this.renewMs,
      );
      request.then(
        (value) => {
          this.timers.clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          this.timers.clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  private async campaign(generation: number): Promise<void> {
    const sentAt = this.now();
    const grant = await this.call(this.store.acquire(this.name, this.id, this.priority, this.leaseMs));
    if (generation !== this.generation) {
      // stop() ran while the request travelled: give back what it may have won.
      if (grant !== undefined) await this.call(this.store.release(this.name, this.id, grant.token));
      return;
    }
    if (grant !== undefined) {
      if (!this.elect(grant.token, sentAt)) await this.call(this.store.release(this.name, this.id, grant.token));
      return;
    }
    if (!this.preempt) return;
    const holder = await this.call(this.store.read(this.name));
    if (generation !== this.generation) return;
    if (holder !== undefined && holder.holder !== this.id && holder.priority < this.priority) {
      await this.call(this.store.challenge(this.name, this.id, this.priority, this.leaseMs));
    }
  }

  private async renew(generation: number): Promise<void> {
    const token = this.currentToken as number;
    const sentAt = this.now();
    const record = await this.call(this.store.renew(this.name, this.id, token, this.leaseMs));
    if (generation !== this.generation || this.currentToken !== token) return;
    if (record === undefined) {
      this.demote('lost');
      return;
    }
    this.extend(sentAt);
    const challenger = record.challenger;
    if (challenger !== undefined && challenger.id !== this.id && challenger.priority > this.priority) {
      // Yield cleanly: demote, then release so the challenger can acquire at once.
      this.demote('preempted');
      await this.call(this.store.release(this.name, this.id, token));
    }
  }

  /** Becomes the leader, unless the grant arrived after its belief would already have ended. */
  private elect(token: number, sentAt: number): boolean {
    if (this.now() >= sentAt + this.leaseMs - this.marginMs) return false;
    this.currentToken = token;
    this.extend(sentAt);
    this.emitter.emit('elected', { token, at: this.now() });
    return true;
  }

  /** Believes in the leadership until sentAt + leaseMs - marginMs, and demotes itself then. */
  private extend(sentAt: number): void {
    this.validUntil = sentAt + this.leaseMs - this.marginMs;
    this.armExpiry(this.currentToken);
  }

  /** Demotes when the belief ends; a timer that fires early (they do) is armed again. */
  private armExpiry(token: number | undefined): void {
    this.timers.clearTimeout(this.expiryTimer);
    this.expiryTimer = this.timers.setTimeout(
      () => {
        if (this.currentToken !== token) return;
        if (this.now() >= this.validUntil) this.demote('expired');
        else this.armExpiry(token);
      },
      Math.max(1, this.validUntil - this.now()),
    );
  }

  private demote(reason: DemotedEvent['reason']): void {
    const token = this.currentToken;
    if (token === undefined) return;
    this.currentToken = undefined;
    this.validUntil = 0;
    this.timers.clearTimeout(this.expiryTimer);
    this.emitter.emit('demoted', { token, reason, at: this.now() });
  }

  private reportError(error: unknown): void {
    const err = error instanceof Error ? error : new Error(`lease store failed: ${String(error)}`);
    if (this.emitter.has('error')) this.emitter.emit('error', err);
  }
}

function positiveInteger(value: unknown, field: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw invalid(field, value, min === 1 ? 'a positive integer' : `an integer >= ${min}`);
  }
  return value;
}
