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

/** Draws two distinct endpoint indexes by weight. */
class PairSampler {
  /** prefix[i] = sum of weights 0..i; undefined when every weight is equal. */
  private readonly prefix: Float64Array | undefined;
  private readonly total: number;
  first = 0;
  second = 0;

  constructor(
    endpoints: readonly PickerEndpoint[],
    private readonly random: () => number,
  ) {
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

  /** Sets `first` and `second`; requires at least two endpoints. */
  draw(): void {
    const prefix = this.prefix;
    if (prefix === undefined) {
      const n = this.total;
      const a = Math.min(Math.floor(this.random() * n), n - 1);
      let b = Math.min(Math.floor(this.random() * (n - 1)), n - 2);
      if (b >= a) b++;
      this.first = a;
      this.second = b;
      return;
    }
    const a = this.find(this.random() * this.total);
    const wa = (prefix[a] as number) - (a === 0 ? 0 : (prefix[a - 1] as number));
    // Draw over the total without a's segment, then step over that segment.
    let u = this.random() * (this.total - wa);
    if (u >= (prefix[a] as number) - wa) u += wa;
    let b = this.find(u);
    if (b === a) b = a + 1 === prefix.length ? a - 1 : a + 1; // rounding at a segment edge
    this.first = a;
    this.second = b;
  }

  /** The first index whose prefix sum exceeds u. */
  private find(u: number): number {
    const prefix = this.prefix as Float64Array;
    let lo = 0;
    let hi = prefix.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((prefix[mid] as number) > u) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

abstract class P2CPicker<B> implements Picker<B> {
  private readonly sampler: PairSampler;

  constructor(
    protected readonly endpoints: readonly PickerEndpoint<B>[],
    protected readonly env: PickerEnvironment,
  ) {
    this.sampler = new PairSampler(endpoints, env.random);
  }

  /** The load to minimise. */
  protected abstract load(ep: PickerEndpoint<B>): number;

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const endpoints = this.endpoints;
    if (endpoints.length === 1) {
      const only = endpoints[0] as PickerEndpoint<B>;
      return request.admits(only) ? only : undefined;
    }
    this.sampler.draw();
    const a = endpoints[this.sampler.first] as PickerEndpoint<B>;
    const b = endpoints[this.sampler.second] as PickerEndpoint<B>;
    const okA = request.admits(a);
    const okB = request.admits(b);
    if (okA && okB) return this.load(a) <= this.load(b) ? a : b;
    if (okA) return a;
    if (okB) return b;
    return this.leastLoadedAdmitted(request);
  }

  private leastLoadedAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    let best: PickerEndpoint<B> | undefined;
    let bestLoad = Number.POSITIVE_INFINITY;
    for (const ep of this.endpoints) {
      if (!request.admits(ep)) continue;
      const l = this.load(ep);
      if (best === undefined || l < bestLoad) {
        best = ep;
        bestLoad = l;
      }
    }
    return best;
  }
}

class InFlightP2C<B> extends P2CPicker<B> {
  protected load(ep: PickerEndpoint<B>): number {
    return ep.inFlight;
  }
}

class PeakEwmaP2C<B> extends P2CPicker<B> {
  protected load(ep: PickerEndpoint<B>): number {
    const latency = ep.latencyAt(this.env.now());
    if (latency === 0 && ep.inFlight > 0) return UNMEASURED_PENALTY + ep.inFlight;
    return latency * (ep.inFlight + 1);
  }
}
