import type { BackendSpec } from '../types.js';

/** Active health checks: a probe per backend, on a timer (HAProxy `check`, Envoy health checking). */
export interface ActiveHealthOptions<B extends BackendSpec> {
  /**
   * Checks one backend. Resolve `true` for healthy; `false`, a throw, a rejection or running past
   * `timeoutMs` (when `signal` aborts) count as a failure. `fairpick/node` has `httpProbe` and
   * `tcpProbe`.
   */
  readonly probe: (backend: B, signal: AbortSignal) => boolean | Promise<boolean>;
  /**
   * Time between the end of one check of a backend and the start of the next (HAProxy `inter`).
   * @defaultValue 2000
   */
  readonly intervalMs?: number;
  /**
   * Time a check may take before it counts as a failure and its signal aborts (HAProxy
   * `timeout check`); less than `intervalMs`.
   * @defaultValue 1000, or half of `intervalMs` when that is shorter
   */
  readonly timeoutMs?: number;
  /**
   * Consecutive successes that bring a down backend back (HAProxy `rise`).
   * @defaultValue 2
   */
  readonly rise?: number;
  /**
   * Consecutive failures that mark a backend down (HAProxy `fall`).
   * @defaultValue 3
   */
  readonly fall?: number;
  /**
   * Random spread of each interval, as a fraction: the delay is `intervalMs x (1 +- jitter)`
   * (HAProxy `spread-checks`). The first checks of the backends are spread over one interval
   * whatever this is.
   * @defaultValue 0
   */
  readonly jitter?: number;
  /**
   * Whether a new backend starts `down` and waits for `rise` successes (HAProxy `init-state down`).
   * @defaultValue false
   */
  readonly startDown?: boolean;
}

/** Passive health: outlier ejection fed by `release({ ok: false })` (Envoy outlier detection). */
export interface PassiveHealthOptions {
  /**
   * Consecutive failed releases that eject a backend (Envoy `consecutive_5xx`).
   * @defaultValue 5
   */
  readonly consecutiveFailures?: number;
  /**
   * Length of a first ejection; the n-th ejection lasts min(baseEjectionMs x n, maxEjectionMs).
   * Each baseEjectionMs that passes after an ejection ends earns a backend one step back.
   * @defaultValue 30000
   */
  readonly baseEjectionMs?: number;
  /**
   * Longest ejection (Envoy `max_ejection_time`).
   * @defaultValue 300000
   */
  readonly maxEjectionMs?: number;
  /**
   * Most of the pool that may be ejected at once, in percent; one backend may always be ejected
   * when the pool has at least two (Envoy `max_ejection_percent`).
   * @defaultValue 10
   */
  readonly maxEjectedPercent?: number;
}

/** Health tracking. Every part is optional; with none, every backend stays healthy. */
export interface HealthOptions<B extends BackendSpec> {
  /** Active checks. Omit for none. */
  readonly active?: ActiveHealthOptions<B>;
  /** Passive ejection; `true` for the defaults. Omit for none. */
  readonly passive?: PassiveHealthOptions | boolean;
  /**
   * Time over which a recovered or newly added backend's effective weight ramps from 10% to 100%
   * (HAProxy `slowstart`, Envoy slow start). `0` turns it off. Hash pickers do not ramp: a changing
   * weight would move keys.
   * @defaultValue 0
   */
  readonly slowStartMs?: number;
  /**
   * Shape of the ramp: the effective weight is `weight x (0.1 + 0.9 x (t / slowStartMs)^(1 / aggression))`;
   * 1 is linear, more than 1 ramps faster at first (Envoy `aggression`).
   * @defaultValue 1
   */
  readonly slowStartAggression?: number;
  /**
   * When fewer than this share of the primary backends are healthy and no backup is healthy, the
   * balancer panics and picks among all primaries, healthy or not (Envoy `healthy_panic_threshold`).
   * A healthy backup prevents panic and is used, as always, only when no primary can be picked.
   * `0` never panics.
   * @defaultValue 0.5
   */
  readonly panicThreshold?: number;
}
