import type { HealthOptions } from './health/options.js';
import type { P2CLoad } from './pickers/p2c.js';
import type { PickerFactory } from './pickers/picker.js';
import type { Timers } from './timers.js';
import type { BackendSpec } from './types.js';

/** Options every algorithm accepts. */
export interface CommonOptions<B extends BackendSpec> {
  /**
   * The initial pool. May be empty: backends can arrive later through `add` or `set`.
   * @defaultValue []
   */
  readonly backends?: readonly B[];
  /**
   * A uniform random number in `[0, 1)`. Inject a seeded generator to make picks reproducible.
   * @defaultValue a fast generator (sfc32) seeded from `Math.random()`, which allocates nothing per call
   */
  readonly random?: () => number;
  /**
   * A monotonic clock in milliseconds, for latency decay, checks, ejections and slow start.
   * @defaultValue performance.now (Date.now where the runtime has no performance)
   */
  readonly now?: () => number;
  /**
   * Active checks, passive ejection, slow start and panic mode. Omit for none: every backend then
   * stays healthy unless marked down by hand.
   */
  readonly health?: HealthOptions<B>;
  /**
   * The timers health tracking schedules with. Inject fakes, with `now`, to test without waiting.
   * @defaultValue the runtime's setTimeout and clearTimeout, unref'ed where the runtime allows
   */
  readonly timers?: Timers;
}

/** Smooth weighted round robin (NGINX). */
export interface RoundRobinOptions<B extends BackendSpec> extends CommonOptions<B> {
  /**
   * The algorithm.
   * @defaultValue 'round-robin'
   */
  readonly algorithm?: 'round-robin';
}

/** Weighted random. */
export interface RandomOptions<B extends BackendSpec> extends CommonOptions<B> {
  /** The algorithm. */
  readonly algorithm: 'random';
}

/** Weighted least-connections (HAProxy's `leastconn`). */
export interface LeastConnectionsOptions<B extends BackendSpec> extends CommonOptions<B> {
  /** The algorithm. */
  readonly algorithm: 'least-connections';
}

/** Power of two choices, by in-flight count or peak-EWMA latency. */
export interface P2COptions<B extends BackendSpec> extends CommonOptions<B> {
  /** The algorithm. */
  readonly algorithm: 'p2c';
  /**
   * What the two candidates are compared by: `'in-flight'` (requests in flight) or `'peak-ewma'`
   * (Finagle's peak-EWMA latency x (inFlight + 1)). Weights act through the random draws.
   * @defaultValue 'in-flight'
   */
  readonly load?: P2CLoad;
  /**
   * Time constant of the latency EWMA in milliseconds: with no new report the estimate halves
   * every `decayMs * ln 2` (Finagle and Linkerd use 10 s).
   * @defaultValue 10000
   */
  readonly decayMs?: number;
}

/** Options every hash picker accepts. */
export interface HashOptions {
  /**
   * Consistent hashing with bounded loads: with factor c > 1, no backend takes a new request
   * while it holds ceil(c x average in flight x its weight share) or more; the request walks
   * the key's preference order to the next backend with room. Use `acquire`/`release` so the
   * loads are known. Values from 1.25 to 2 are usual (HAProxy's `hash-balance-factor` 125-200).
   * @defaultValue undefined (off)
   */
  readonly boundedLoad?: number;
}

/** Consistent hashing on a ring (ketama style). */
export interface RingHashOptions<B extends BackendSpec> extends CommonOptions<B>, HashOptions {
  /** The algorithm. */
  readonly algorithm: 'ring-hash';
  /**
   * Virtual nodes (ring points) per unit of weight. More points give a more even split and a
   * larger ring (8 bytes a point).
   * @defaultValue 400
   */
  readonly vnodes?: number;
  /**
   * Most points on the ring. When weights ask for more, every backend's count is scaled down in
   * proportion (at least 1 each).
   * @defaultValue 1048576
   */
  readonly maxRingSize?: number;
}

/** Maglev consistent hashing. */
export interface MaglevOptions<B extends BackendSpec> extends CommonOptions<B>, HashOptions {
  /** The algorithm. */
  readonly algorithm: 'maglev';
  /**
   * Slots in the lookup table: a prime from 3 to 5,000,011, best above 100 x the number of
   * backends.
   * @defaultValue 65537
   */
  readonly tableSize?: number;
}

/** Weighted rendezvous (highest random weight) hashing. */
export interface RendezvousOptions<B extends BackendSpec> extends CommonOptions<B>, HashOptions {
  /** The algorithm. */
  readonly algorithm: 'rendezvous';
}

/** Consistent hashing of the client address. */
export interface IpHashOptions<B extends BackendSpec> extends CommonOptions<B>, HashOptions {
  /** The algorithm. */
  readonly algorithm: 'ip-hash';
  /**
   * The consistent hash underneath.
   * @defaultValue 'maglev'
   */
  readonly method?: 'maglev' | 'ring-hash' | 'rendezvous';
  /**
   * Leading bits of an IPv4 address that are hashed: 24 keeps a /24 subnet on one backend.
   * @defaultValue 32
   */
  readonly ipv4Prefix?: number;
  /**
   * Leading bits of an IPv6 address that are hashed: 64 keeps a /64 on one backend.
   * @defaultValue 128
   */
  readonly ipv6Prefix?: number;
  /** With `method: 'ring-hash'`: virtual nodes per unit of weight. @defaultValue 400 */
  readonly vnodes?: number;
  /** With `method: 'ring-hash'`: most points on the ring. @defaultValue 1048576 */
  readonly maxRingSize?: number;
  /** With `method: 'maglev'`: the table size, a prime. @defaultValue 65537 */
  readonly tableSize?: number;
}

/** Your own picking algorithm. */
export interface CustomPickerOptions<B extends BackendSpec> extends CommonOptions<B> {
  /** A factory that builds your {@link Picker} for each snapshot of pickable backends. */
  readonly algorithm: PickerFactory<B>;
}

/** The options of {@link createBalancer}: one object, discriminated by `algorithm`. */
export type BalancerOptions<B extends BackendSpec> =
  | RoundRobinOptions<B>
  | RandomOptions<B>
  | LeastConnectionsOptions<B>
  | P2COptions<B>
  | RingHashOptions<B>
  | MaglevOptions<B>
  | RendezvousOptions<B>
  | IpHashOptions<B>
  | CustomPickerOptions<B>;

/** The names of the built-in algorithms. */
export type AlgorithmName =
  | 'round-robin'
  | 'random'
  | 'least-connections'
  | 'p2c'
  | 'ring-hash'
  | 'maglev'
  | 'rendezvous'
  | 'ip-hash';
