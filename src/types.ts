/**
 * What fairpick needs to know about a backend. Every other field of your backend
 * objects (`url`, `host`, `port`, anything) is yours: fairpick returns your object untouched.
 */
export interface BackendSpec {
  /** A unique, non-empty identifier. Hash pickers (coming next) hash it, so keep it stable. */
  readonly id: string;
  /**
   * Relative share of traffic: a finite number `>= 0`. `0` drains the backend: no new picks,
   * while its requests in flight still release normally.
   * @defaultValue 1
   */
  readonly weight?: number;
  /**
   * Puts the backend in the backup tier, used only when no primary backend can be picked
   * (HAProxy's `backup`).
   * @defaultValue false
   */
  readonly backup?: boolean;
  /**
   * Most requests in flight at once (HAProxy's `maxconn`): a positive integer. A backend at
   * its limit is skipped by `pick` and `acquire`. Omit it for no limit.
   * @defaultValue no limit
   */
  readonly maxInFlight?: number;
}

/** What a pick may take into account. Every field is optional for the non-hash algorithms. */
export interface PickContext {
  /** The request's affinity key, for hash pickers. */
  readonly key?: string | Uint8Array;
  /** The client's address, for `ip-hash`. */
  readonly clientIp?: string;
  /** Ids that must not be chosen, e.g. the backends a retry already tried. */
  readonly exclude?: ReadonlySet<string>;
}

/** The outcome of a request, given to {@link Slot.release}. */
export interface ReleaseResult {
  /** Whether the request succeeded. Counted in {@link BackendStats.successes} and {@link BackendStats.failures}. */
  readonly ok?: boolean;
  /** How long the request took, in milliseconds (`>= 0`). Feeds the backend's peak-EWMA latency. */
  readonly latencyMs?: number;
}

/** One request counted in flight on a backend, returned by {@link Balancer.acquire}. */
export interface Slot<B> {
  /** The chosen backend: the object you gave the balancer. */
  readonly backend: B;
  /**
   * Counts the request out of flight and records its outcome. Call it exactly once when the
   * request ends, whatever the outcome; later calls do nothing and return `false`.
   * @returns `true` when this call released the slot.
   */
  release(result?: ReleaseResult): boolean;
}

/**
 * A backend's health state.
 * - `healthy`: picked normally.
 * - `down`: failed its active checks.
 * - `ejected`: removed for a while by passive outlier detection.
 * - `slow-start`: recovering; picked with a reduced effective weight.
 */
export type HealthState = 'healthy' | 'down' | 'ejected' | 'slow-start';

/** The outcome of one active health check. */
export interface CheckResult {
  /** Whether the backend passed. */
  readonly ok: boolean;
  /** When the check ended, on the balancer's clock (`now`). */
  readonly at: number;
  /** How long it took, in milliseconds. */
  readonly durationMs: number;
}

/** A snapshot of one backend's counters, from {@link Balancer.stats}. */
export interface BackendStats {
  /** The backend's id. */
  readonly id: string;
  /** The configured weight. */
  readonly weight: number;
  /** The weight pickers use now (the configured weight, or less during slow start). */
  readonly effectiveWeight: number;
  /** Whether the backend is in the backup tier. */
  readonly backup: boolean;
  /** The `maxInFlight` limit, or `null` for none. */
  readonly maxInFlight: number | null;
  /** Requests acquired and not yet released. */
  readonly inFlight: number;
  /** How many times `pick` or `acquire` chose this backend. */
  readonly picks: number;
  /** Releases with `ok: true`. */
  readonly successes: number;
  /** Releases with `ok: false`. */
  readonly failures: number;
  /** The health state. */
  readonly state: HealthState;
  /** Whether a pick can choose it now (state and weight allow it; `maxInFlight` aside). */
  readonly pickable: boolean;
  /** Peak-EWMA latency estimate in milliseconds, decayed to now; `0` before any latency was reported. */
  readonly ewmaMs: number;
  /** Held down by `markDown` (until `markUp`). */
  readonly manualDown: boolean;
  /** Consecutive successful active checks (reset by a failure). */
  readonly consecutiveSuccesses: number;
  /** Consecutive failed active checks (reset by a success). */
  readonly consecutiveFailures: number;
  /** Consecutive failed releases counted towards passive ejection. */
  readonly passiveFailures: number;
  /** How many times passive detection ejected it. */
  readonly ejections: number;
  /** Milliseconds until the current ejection ends; `0` when not ejected. */
  readonly ejectedForMs: number;
  /** The last active check; `null` before any. */
  readonly lastCheck: CheckResult | null;
}

/** Why a backend changed state: a check, passive ejection, an operator, or the end of an ejection or slow start. */
export type HealthReason = 'probe' | 'passive' | 'manual' | 'recovered';

/** A backend's change of health state, emitted as `'health'`. */
export interface HealthEvent<B> {
  /** The backend. */
  readonly backend: B;
  /** Its id. */
  readonly id: string;
  /** The state it left. */
  readonly from: HealthState;
  /** The state it entered. */
  readonly to: HealthState;
  /** What caused the change. */
  readonly reason: HealthReason;
  /** When, on the balancer's clock (`now`). */
  readonly at: number;
}

/** Panic mode starting or ending, emitted as `'panic'`. */
export interface PanicEvent {
  /** True on entry, false on exit. */
  readonly active: boolean;
  /** When, on the balancer's clock (`now`). */
  readonly at: number;
}

/** The events a balancer emits, with the payload each listener receives. */
export interface BalancerEvents<B> {
  /** A backend joined the pool (`add` or `set`). */
  readonly added: B;
  /** A backend left the pool (`remove` or `set`). */
  readonly removed: B;
  /** A backend changed health state. */
  readonly health: HealthEvent<B>;
  /** Panic mode started or ended. */
  readonly panic: PanicEvent;
}

/** The name of a balancer event. */
export type BalancerEventName = keyof BalancerEvents<unknown>;

/** The fields of a backend that {@link Balancer.update} can change in place. */
export interface BackendUpdate {
  /** New weight: a finite number `>= 0`. */
  readonly weight?: number;
  /** Move the backend to or from the backup tier. */
  readonly backup?: boolean;
  /** New in-flight limit; `null` removes the limit. */
  readonly maxInFlight?: number | null;
}

/**
 * A load balancer over a pool of backends. Create one with {@link createBalancer}.
 * Depend on this interface in your code so tests can fake it.
 */
export interface Balancer<B extends BackendSpec> {
  /** The algorithm's name, or `'custom'` for a user picker. */
  readonly algorithm: string;
  /** Every backend, primary and backup, in the order they were added. The array is read-only and replaced on change. */
  readonly backends: readonly B[];
  /**
   * Chooses a backend without counting it in flight.
   * @throws {@link FairpickError} `ERR_NO_BACKEND` when none can be chosen.
   */
  pick(ctx?: PickContext): B;
  /**
   * Chooses a backend and counts the request in flight until {@link Slot.release}.
   * Least-connections and p2c read these counts.
   * @throws {@link FairpickError} `ERR_NO_BACKEND` when none can be chosen.
   */
  acquire(ctx?: PickContext): Slot<B>;
  /**
   * Adds a backend. @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for a bad or duplicate backend.
   */
  add(backend: B): void;
  /**
   * Removes a backend by id and returns it. Its requests in flight still release normally.
   * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for an unknown id.
   */
  remove(id: string): B;
  /**
   * Changes a backend's weight, tier or limit in place, keeping its counters.
   * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for an unknown id or a bad value.
   */
  update(id: string, patch: BackendUpdate): void;
  /**
   * Reconciles the pool to `backends`, as service discovery delivers them: new ids are added,
   * missing ones removed, and the others replaced by the new object and settings while
   * keeping their counters. Validated whole before anything changes.
   */
  set(backends: readonly B[]): void;
  /** The backend with this id, or `undefined`. */
  get(id: string): B | undefined;
  /**
   * Takes a backend out of rotation by hand (HAProxy's `set server state maint`): state `down`,
   * reason `manual`, until {@link Balancer.markUp}. Checks keep running but cannot bring it back.
   * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for an unknown id.
   */
  markDown(id: string): void;
  /**
   * Puts a backend back by hand: clears a manual drain, a failed-check state and an ejection
   * (through slow start when configured).
   * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for an unknown id.
   */
  markUp(id: string): void;
  /** Whether the balancer is in panic mode (see `health.panicThreshold`). */
  readonly panicking: boolean;
  /** One snapshot per backend, in the order of {@link Balancer.backends}. */
  stats(): BackendStats[];
  /**
   * Subscribes to an event. @returns a function that unsubscribes.
   */
  on<E extends BalancerEventName>(event: E, listener: (payload: BalancerEvents<B>[E]) => void): () => void;
  /**
   * Stops every timer the balancer owns (checks, ejections, slow start) and aborts the checks in
   * progress. Idempotent. Picks keep working on the last known state.
   */
  close(): void;
  /** Same as {@link Balancer.close}. */
  [Symbol.dispose](): void;
}
