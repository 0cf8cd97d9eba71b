import type { P2CLoad } from './pickers/p2c.js';
import type { PickerFactory } from './pickers/picker.js';
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
   * @defaultValue Math.random
   */
  readonly random?: () => number;
  /**
   * A monotonic clock in milliseconds, for latency decay.
   * @defaultValue performance.now (Date.now where the runtime has no performance)
   */
  readonly now?: () => number;
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
   * What the two candidates are compared by: `'in-flight'` ((inFlight + 1) / weight) or
   * `'peak-ewma'` (Finagle's peak-EWMA latency x (inFlight + 1) / weight).
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
  | CustomPickerOptions<B>;

/** The names of the built-in algorithms. */
export type AlgorithmName = 'round-robin' | 'random' | 'least-connections' | 'p2c';
