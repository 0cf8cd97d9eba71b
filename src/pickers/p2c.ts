import type { Endpoint } from '../pool.js';
import type { Picker, PickerEndpoint, PickerEnvironment, PickRequest } from './picker.js';

/** How p2c compares its two candidates. */
export type P2CLoad = 'in-flight' | 'peak-ewma';

/**
 * Finagle's penalty for a backend with requests in flight and no latency yet (Long.MaxValue >> 16),
 * so an unmeasured busy backend loses against any measured one.
 */
const UNMEASURED_PENALTY = 2 ** 47;

/**
 * Power of two choices: draw two distinct endpoints at random, by weight, and take the less
 * loaded. With `in-flight` the load is the in-flight count; with `peak-ewma` it is
 * latency x (inFlight + 1), the Finagle and Linkerd cost, where the latency is the endpoint's
 * peak-EWMA estimate decayed to now. On equal loads the first draw wins, so an idle pool is
 * shared exactly by weight. Weights act through the draws only: dividing the load by the weight
 * as well would count them twice (an idle pool with weights 2:1:1 would split 83:8:8). Because
 * the two draws are distinct, an endpoint more loaded than every other is never chosen (with at
 * least two admitted endpoints).
 *
 * Cost: O(1) draws with equal weights, O(log n) (binary search over prefix sums) with weights.
 * When a drawn endpoint is not admitted the other one is taken; when neither is, the picker
 * scans for the least loaded admitted endpoint.
 */
export function createP2CPicker<B>(
  endpoints: readonly PickerEndpoint<B>[],
  env: PickerEnvironment,
  load: P2CLoad,
): Picker<B> {
  return load === 'peak-ewma' ? new PeakEwmaP2C(endpoints, env) : new InFlightP2C(endpoints, env);
}

abstract class P2CPicker<B> implements Picker<B> {
  /** prefix[i] = sum of weights 0..i; undefined when every weight is equal. */
  private readonly prefix: Float64Array | undefined;
  private readonly total: number;
  private readonly random: () => number;

  constructor(
    protected readonly endpoints: readonly PickerEndpoint<B>[],
    protected readonly env: PickerEnvironment,
  ) {
    this.random = env.random;
    const n = endpoints.length;
    const w0 = endpoints[0]?.effectiveWeight ?? 1;
    let uniform = true;
    let total = 0;
    const prefix = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const w = (endpoints[i] as PickerEndpoint).effectiveWeight;
      if (w !== w0) uniform = false;
      total += w;
      prefix[i] = total;
    }
    this.prefix = uniform ? undefined : prefix;
    this.total = uniform ? n : total;
  }

  /** Whether `a` is no more loaded than `b`, so that `a` (the first draw) wins. */
  protected abstract first(a: PickerEndpoint<B>, b: PickerEndpoint<B>): boolean;

  /** The load of one endpoint now, for the slow path's scan. */
  protected abstract load(ep: PickerEndpoint<B>, now: number): number;

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const endpoints = this.endpoints;
    const n = endpoints.length;
    if (n === 1) {
      const only = endpoints[0] as PickerEndpoint<B>;
      return request.admits(only) ? only : undefined;
    }
    let i: number;
    let j: number;
    const prefix = this.prefix;
    if (prefix === undefined) {
      i = Math.floor(this.random() * n);
      j = Math.floor(this.random() * (n - 1));
      if (i >= n) i = n - 1; // a random() that returned 1 by mistake
      if (j >= n - 1) j = n - 2;
      if (j >= i) j++;
    } else {
      // The binary searches are written out here: passing a double to a call that is not
      // inlined would box it (an allocation per pick).
      const u1 = this.random() * this.total;
      let lo = 0;
      let hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((prefix[mid] as number) > u1) hi = mid;
        else lo = mid + 1;
      }
      i = lo;
      const end = prefix[i] as number;
      const wi = end - (i === 0 ? 0 : (prefix[i - 1] as number));
      // Draw over the total without i's segment, then step over that segment.
      const r = this.random() * (this.total - wi);
      const u2 = r >= end - wi ? r + wi : r;
      lo = 0;
      hi = n - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((prefix[mid] as number) > u2) hi = mid;
        else lo = mid + 1;
      }
      j = lo === i ? (i + 1 === n ? i - 1 : i + 1) : lo; // lo === i only by rounding at a segment edge
    }
    const a = endpoints[i] as PickerEndpoint<B>;
    const b = endpoints[j] as PickerEndpoint<B>;
    if (request.admits(a)) {
      if (!request.admits(b)) return a;
      return this.first(a, b) ? a : b;
    }
    if (request.admits(b)) return b;
    return this.leastLoadedAdmitted(request);
  }

  private leastLoadedAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    const now = this.env.now();
    let best: PickerEndpoint<B> | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const ep of this.endpoints) {
      if (!request.admits(ep)) continue;
      const l = this.load(ep, now);
      if (best === undefined || l < bestLoad) {
        best = ep;
        bestLoad = l;
      }
    }
    return best;
  }
}

class InFlightP2C<B> extends P2CPicker<B> {
  protected first(a: PickerEndpoint<B>, b: PickerEndpoint<B>): boolean {
    return a.inFlight <= b.inFlight;
  }

  protected load(ep: PickerEndpoint<B>): number {
    return ep.inFlight;
  }
}

class PeakEwmaP2C<B> extends P2CPicker<B> {
  /**
   * Compares cost_a e^(-(now - t_a)/tau) (in_a + 1) with the same for b without reading the clock:
   * the e^(-now/tau) factors cancel, leaving cost_a (in_a + 1) e^((t_a - t_b)/tau) against
   * cost_b (in_b + 1). An estimate of 0 (never measured) takes the clock path for its penalty.
   */
  protected first(a: PickerEndpoint<B>, b: PickerEndpoint<B>): boolean {
    const ea = a as unknown as Endpoint<B>;
    const eb = b as unknown as Endpoint<B>;
    const ca = ea.ewmaCost;
    const cb = eb.ewmaCost;
    if (ca === 0 || cb === 0) {
      const now = this.env.now();
      return this.load(a, now) <= this.load(b, now);
    }
    const scale = Math.exp((ea.ewmaStamp - eb.ewmaStamp) / ea.decayMs);
    return ca * (ea.inFlight + 1) * scale <= cb * (eb.inFlight + 1);
  }

  protected load(ep: PickerEndpoint<B>, now: number): number {
    const latency = ep.latencyAt(now);
    if (latency === 0 && ep.inFlight > 0) return UNMEASURED_PENALTY + ep.inFlight;
    return latency * (ep.inFlight + 1);
  }
}
