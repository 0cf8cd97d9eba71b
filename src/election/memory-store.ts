import { monotonicNow } from '../runtime.js';
import { invalid, requireFunction, requireId, requirePositiveNumber } from '../validate.js';
import type { LeaseGrant, LeaseRecord, LeaseStore } from './store.js';

interface Lease {
  holder: string;
  token: number;
  priority: number;
  expiresAt: number;
  challenger: { id: string; priority: number; until: number } | undefined;
}

/** Options of {@link MemoryLeaseStore}. */
export interface MemoryLeaseStoreOptions {
  /**
   * The store's clock, in milliseconds, by which leases expire.
   * @defaultValue performance.now
   */
  readonly now?: () => number;
}

/**
 * A lease store in this process's memory: for several electors in one application, and for tests.
 * It offers every guarantee of the interface (atomic operations, expiry by its own clock, fencing
 * tokens that only grow, fast hand-over through `watch`), within one process.
 */
export class MemoryLeaseStore implements LeaseStore {
  private readonly leases = new Map<string, Lease>();
  /** A lease given up to a challenger is held for it (and anyone of its priority or more) until the challenge ends. */
  private readonly reserved = new Map<string, { priority: number; until: number }>();
  /** The last token handed out per name: kept when a lease is released, so tokens only grow. */
  private readonly tokens = new Map<string, number>();
  private readonly watchers = new Map<string, Set<() => void>>();
  private readonly now: () => number;

  /** @param options - the clock. */
  constructor(options: MemoryLeaseStoreOptions = {}) {
    this.now = options.now === undefined ? monotonicNow : requireFunction(options.now, 'options.now');
  }

  async acquire(name: string, holder: string, priority: number, ttlMs: number): Promise<LeaseGrant | undefined> {
    check(name, holder, ttlMs);
    const now = this.now();
    const current = this.live(name, now);
    if (current !== undefined && current.holder !== holder) return undefined;
    const reservation = this.reserved.get(name);
    if (current === undefined && reservation !== undefined) {
      if (reservation.until > now && priority < reservation.priority) return undefined;
      this.reserved.delete(name);
    }
    const token = (this.tokens.get(name) ?? 0) + 1;
    this.tokens.set(name, token);
    this.leases.set(name, { holder, token, priority, expiresAt: now + ttlMs, challenger: undefined });
    return { token };
  }

  async renew(name: string, holder: string, token: number, ttlMs: number): Promise<LeaseRecord | undefined> {
    check(name, holder, ttlMs);
    const now = this.now();
    const lease = this.live(name, now);
    if (lease === undefined || lease.holder !== holder || lease.token !== token) return undefined;
    lease.expiresAt = now + ttlMs;
    return record(lease, now);
  }

  async release(name: string, holder: string, token: number): Promise<boolean> {
    const lease = this.live(name, this.now());
    if (lease === undefined || lease.holder !== holder || lease.token !== token) return false;
    this.leases.delete(name);
    const now = this.now();
    if (lease.challenger !== undefined && lease.challenger.until > now) {
      this.reserved.set(name, { priority: lease.challenger.priority, until: lease.challenger.until });
    }
    this.notify(name);
    return true;
  }

  async read(name: string): Promise<LeaseRecord | undefined> {
    const now = this.now();
    const lease = this.live(name, now);
    return lease === undefined ? undefined : record(lease, now);
  }

  async challenge(name: string, id: string, priority: number, ttlMs: number): Promise<void> {
    check(name, id, ttlMs);
    const lease = this.live(name, this.now());
    if (lease === undefined || lease.holder === id) return;
    const current = lease.challenger;
    if (current === undefined || current.until <= this.now() || priority >= current.priority) {
      lease.challenger = { id, priority, until: this.now() + ttlMs };
    }
  }

  watch(name: string, listener: () => void): () => void {
    let set = this.watchers.get(name);
    if (set === undefined) {
      set = new Set();
      this.watchers.set(name, set);
    }
    const fn = (): void => listener();
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  private live(name: string, now: number): Lease | undefined {
    const lease = this.leases.get(name);
    if (lease === undefined) return undefined;
    if (lease.expiresAt <= now) {
      this.leases.delete(name);
      return undefined;
    }
    return lease;
  }

  private notify(name: string): void {
    const set = this.watchers.get(name);
    if (set === undefined) return;
    // Asynchronously, as a remote store's notification would arrive.
    for (const fn of [...set]) void Promise.resolve().then(fn);
  }
}

function record(lease: Lease, now: number): LeaseRecord {
  const challenger =
    lease.challenger !== undefined && lease.challenger.until > now
      ? { id: lease.challenger.id, priority: lease.challenger.priority }
      : undefined;
  return {
    holder: lease.holder,
    token: lease.token,
    priority: lease.priority,
    remainingMs: lease.expiresAt - now,
    challenger,
  };
}

function check(name: string, holder: string, ttlMs: number): void {
  requireId(name, 'name');
  requireId(holder, 'holder');
  requirePositiveNumber(ttlMs, 'ttlMs');
  if (!Number.isFinite(ttlMs)) throw invalid('ttlMs', ttlMs, 'a finite number');
}
