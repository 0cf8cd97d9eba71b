import type { Picker, PickerEndpoint, PickerEnvironment, PickRequest } from './picker.js';

/**
 * Weighted least-connections, as HAProxy's `leastconn` orders servers: the endpoint with the
 * lowest (inFlight + 1) / weight. The "+ 1" ranks by the load a server would have once picked,
 * so with nothing in flight the heavier server goes first, and over many picks with no releases
 * the counts follow D'Hondt apportionment (each endpoint gets at least floor(T * w / W) of T).
 * Ties go to the endpoint chosen longest ago, so equal endpoints take turns.
 *
 * The endpoints sit in a binary min-heap keyed by that ratio, then by the time of their last
 * pick: `pick` reads the root (O(1)) and re-positions it (O(log n)); acquire and release
 * re-position one endpoint (O(log n)). When the root is not admitted (excluded or full) the
 * pick scans every endpoint for the best admitted one: O(n), only on that path.
 */
export function createLeastConnectionsPicker<B>(
  endpoints: readonly PickerEndpoint<B>[],
  _env: PickerEnvironment,
): Picker<B> {
  return new LeastConnectionsPicker(endpoints);
}

class LeastConnectionsPicker<B> implements Picker<B> {
  /** heap[k] is an endpoint index; the root is heap[0]. */
  private readonly heap: Uint32Array;
  /** position[i] is where endpoint i sits in the heap. */
  private readonly position: Uint32Array;
  /** lastPick[i] orders ties: lower was picked longer ago. */
  private readonly lastPick: Float64Array;
  private clock = 0;

  constructor(private readonly endpoints: readonly PickerEndpoint<B>[]) {
    const n = endpoints.length;
    this.heap = new Uint32Array(n);
    this.position = new Uint32Array(n);
    this.lastPick = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      this.heap[i] = i;
      this.position[i] = i;
      // The list order breaks the first ties, as HAProxy's insertion order does.
      this.lastPick[i] = i - n;
    }
    for (let k = (n >> 1) - 1; k >= 0; k--) this.siftDown(k);
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const root = this.endpoints[this.heap[0] as number] as PickerEndpoint<B>;
    const chosen = request.admits(root) ? root : this.bestAdmitted(request);
    if (chosen === undefined) return undefined;
    this.lastPick[chosen.index] = this.clock++;
    this.siftDown(this.position[chosen.index] as number);
    return chosen;
  }

  loadChanged(endpoint: PickerEndpoint<B>): void {
    const k = this.position[endpoint.index] as number;
    this.siftUp(k);
    this.siftDown(this.position[endpoint.index] as number);
  }

  private bestAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    let best: PickerEndpoint<B> | undefined;
    for (const ep of this.endpoints) {
      if (request.admits(ep) && (best === undefined || this.before(ep.index, best.index))) best = ep;
    }
    return best;
  }

  /** Whether endpoint a ranks before endpoint b. Cross-multiplied so equal ratios compare equal. */
  private before(a: number, b: number): boolean {
    const ea = this.endpoints[a] as PickerEndpoint<B>;
    const eb = this.endpoints[b] as PickerEndpoint<B>;
    const ka = (ea.inFlight + 1) * eb.effectiveWeight;
    const kb = (eb.inFlight + 1) * ea.effectiveWeight;
    if (ka !== kb) return ka < kb;
    return (this.lastPick[a] as number) < (this.lastPick[b] as number);
  }

  private siftUp(k: number): void {
    const heap = this.heap;
    const item = heap[k] as number;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      const p = heap[parent] as number;
      if (!this.before(item, p)) break;
      heap[k] = p;
      this.position[p] = k;
      k = parent;
    }
    heap[k] = item;
    this.position[item] = k;
  }

  private siftDown(k: number): void {
    const heap = this.heap;
    const n = heap.length;
    const item = heap[k] as number;
    for (;;) {
      let child = 2 * k + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && this.before(heap[right] as number, heap[child] as number)) child = right;
      const c = heap[child] as number;
      if (!this.before(c, item)) break;
      heap[k] = c;
      this.position[c] = k;
      k = child;
    }
    heap[k] = item;
    this.position[item] = k;
  }
}
