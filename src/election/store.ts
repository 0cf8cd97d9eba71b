/**
 * The storage an elector campaigns through. Every method must be atomic (a compare-and-set on one
 * record per lease name) and the expiry must be judged by the store's own clock. Implement it over
 * any store with those properties (etcd, ZooKeeper, DynamoDB conditional writes, a SQL row).
 */
export interface LeaseStore {
  /**
   * Takes the lease `name` for `holder` when it is free or expired, or already held by `holder`,
   * for `ttlMs`. Each successful acquire is a new leadership: its token is greater than every token
   * the store handed out for `name` before, across restarts of the electors (the store keeps the
   * counter). While a challenge recorded on a released lease is live, only a candidate of at least
   * the challenger's priority may take it, so that a yielding leader hands over to the challenger
   * rather than to whichever standby is fastest. Returns the grant, or `undefined` when another
   * holder has it (or it is reserved).
   */
  acquire(name: string, holder: string, priority: number, ttlMs: number): Promise<LeaseGrant | undefined>;
  /**
   * Extends the lease for another `ttlMs` if `holder` still holds it with `token`. Returns the
   * renewed record (with any pending challenge), or `undefined` when the lease was lost.
   */
  renew(name: string, holder: string, token: number, ttlMs: number): Promise<LeaseRecord | undefined>;
  /** Gives the lease up at once if `holder` holds it with `token`. Returns whether it did. */
  release(name: string, holder: string, token: number): Promise<boolean>;
  /** The current holder of `name`, or `undefined` when the lease is free or expired. */
  read(name: string): Promise<LeaseRecord | undefined>;
  /**
   * Records that candidate `id` of `priority` asks the holder to yield, for `ttlMs`; the holder sees
   * it at its next renew (keepalived's preemption, over a store).
   */
  challenge(name: string, id: string, priority: number, ttlMs: number): Promise<void>;
  /**
   * Optional: calls `listener` soon after the lease of `name` is released or changes hands, so that
   * standbys need not wait for their next poll. Returns a function that stops the calls.
   */
  watch?(name: string, listener: () => void): () => void;
}

/** A successful acquire. */
export interface LeaseGrant {
  /** The fencing token of this leadership: greater than every earlier one for the name. */
  readonly token: number;
}

/** What a store knows of a held lease. */
export interface LeaseRecord {
  /** The holder's id. */
  readonly holder: string;
  /** The fencing token of the current leadership. */
  readonly token: number;
  /** The holder's priority. */
  readonly priority: number;
  /** Time left before the lease expires, by the store's clock. */
  readonly remainingMs: number;
  /** A higher-priority candidate asking the holder to yield, if any. */
  readonly challenger: LeaseChallenger | undefined;
}

/** A candidate that asked the holder of a lease to yield. */
export interface LeaseChallenger {
  /** The candidate's id. */
  readonly id: string;
  /** Its priority. */
  readonly priority: number;
}
