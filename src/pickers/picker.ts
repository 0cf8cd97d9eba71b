/**
 * The contract between the balancer and a picking algorithm. The built-in algorithms
 * implement it, and so can yours: pass a {@link PickerFactory} as `algorithm`.
 *
 * The balancer calls the factory whenever the set of pickable backends changes (membership,
 * weight, tier or health): rare. The factory prepares whatever it needs (tables, heaps, prefix
 * sums) and returns a {@link Picker} whose `pick` runs on every request: hot. Keep `pick` free
 * of allocation.
 */

/** A pickable backend as a picker sees it. Fields are live: the balancer updates them in place. */
export interface PickerEndpoint<B = unknown> {
  /** The backend's id. */
  readonly id: string;
  /** The backend object the user gave. */
  readonly backend: B;
  /** The weight to pick by: `> 0`, and below the configured weight during slow start. */
  readonly effectiveWeight: number;
  /** Requests acquired and not yet released. */
  readonly inFlight: number;
  /** The backend's `maxInFlight`, or `Infinity` for no limit. */
  readonly maxInFlight: number;
  /** This endpoint's position in the array the factory received. */
  readonly index: number;
  /** The peak-EWMA latency estimate in milliseconds at time `now` (from the balancer's clock); `0` before any report. */
  latencyAt(now: number): number;
}

/** The request a picker serves. The balancer reuses one object: do not keep a reference to it. */
export interface PickRequest {
  /** The affinity key from the pick context, if any. */
  readonly key: string | Uint8Array | undefined;
  /** The client address from the pick context, if any. */
  readonly clientIp: string | undefined;
  /**
   * Whether this pick may return `endpoint`: false when the context excludes it or it is at
   * its `maxInFlight` limit. A picker must return only endpoints this admits.
   */
  admits(endpoint: PickerEndpoint): boolean;
}

/** A prepared picking algorithm over one snapshot of pickable endpoints. */
export interface Picker<B = unknown> {
  /** Chooses an admitted endpoint, or returns `undefined` when none is admitted. */
  pick(request: PickRequest): PickerEndpoint<B> | undefined;
  /** Called after `endpoint.inFlight` changed (acquire or release), for pickers that index by load. */
  loadChanged?(endpoint: PickerEndpoint<B>): void;
}

/** Randomness and time, injected so that tests are deterministic. */
export interface PickerEnvironment {
  /** A uniform random number in `[0, 1)`. */
  readonly random: () => number;
  /** A monotonic clock in milliseconds. */
  readonly now: () => number;
}

/**
 * Builds a {@link Picker} over the pickable endpoints of one tier (primary or backup).
 * `endpoints` is never empty and every endpoint has `effectiveWeight > 0`; `endpoints[i].index === i`.
 * The balancer calls it inside `add`, `remove`, `update` and `set`: it must not throw.
 */
export type PickerFactory<B = unknown> = (endpoints: readonly PickerEndpoint<B>[], env: PickerEnvironment) => Picker<B>;
