import type { PickerEndpoint } from './picker.js';

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018; HAProxy's
 * `hash-balance-factor`, Envoy's `hash_balance_factor`): with factor c > 1, an endpoint may take a
 * new request only while its in-flight count stays within ceil(c x (m + 1) x w / W), where m is the
 * tier's total in flight before the request and w / W the endpoint's weight share. The capacities
 * add up to at least c (m + 1) > m, so some endpoint always has room.
 *
 * The total is kept up to date from the balancer's load notifications, so a check is O(1).
 */
export class LoadBound {
  private total = 0;
  /** The in-flight count last seen per endpoint, to turn notifications into deltas. */
  private readonly seen: Float64Array;
  private readonly totalWeight: number;

  constructor(
    private readonly factor: number,
    endpoints: readonly PickerEndpoint[],
  ) {
    this.seen = new Float64Array(endpoints.length);
    let weight = 0;
    for (const ep of endpoints) {
      this.seen[ep.index] = ep.inFlight;
      this.total += ep.inFlight;
      weight += ep.effectiveWeight;
    }
    this.totalWeight = weight;
  }

  /** Whether `ep` may take one more request. */
  hasRoom(ep: PickerEndpoint): boolean {
    const capacity = Math.ceil((this.factor * (this.total + 1) * ep.effectiveWeight) / this.totalWeight);
    return ep.inFlight < capacity;
  }

  loadChanged(ep: PickerEndpoint): void {
    this.total += ep.inFlight - (this.seen[ep.index] as number);
    this.seen[ep.index] = ep.inFlight;
  }
}
