import type { Picker, PickerEndpoint, PickerEnvironment, PickRequest } from './picker.js';

/**
 * Weighted least-connections, as HAProxy's `leastconn` orders servers: the endpoint with the
 * lowest (inFlight + 1) / weight. The "+ 1" ranks by the load a server would have once picked,
 * so with nothing in flight the heavier server goes first, and over many picks with no releases
 * the counts follow D'Hondt apportionment (each endpoint gets at least floor(T * w / W) of T).
 *
 * Ties go to the endpoint queued longest ago, where an endpoint is re-queued behind its equals
 * whenever it is picked or its load changes: HAProxy's tree does the same, so equal endpoints
 * take turns.
 *
 * With equal weights the key is the in-flight count itself, and the endpoints sit in one FIFO
 * list per count: a pick, an acquire and a release are O(1). With unequal weights they sit in a
 * binary heap keyed by the ratio: O(log n). Either way, when the best endpoint is not admitted
 * (excluded or full) the pick scans every endpoint for the best admitted one: O(n), only then.
 */
export function createLeastConnectionsPicker<B>(
  endpoints: readonly PickerEndpoint<B>[],
  _env: PickerEnvironment,
): Picker<B> {
  const w0 = endpoints[0]?.effectiveWeight;
  return endpoints.every((ep) => ep.effectiveWeight === w0)
    ? new LeastConnectionsLevels(endpoints)
    : new LeastConnectionsHeap(endpoints);
}

/**
 * Shared by both shapes: the queue stamps that order ties, and the slow path. `queued[i]` is when
 * endpoint i was last (re)queued; lower goes first among equal keys.
 */
abstract class LeastConnectionsBase<B> implements Picker<B> {
  protected readonly queued: Float64Array;
  protected clock = 0;

  constructor(protected readonly endpoints: readonly PickerEndpoint<B>[]) {
    const n = endpoints.length;
    this.queued = new Float64Array(n);
    // List order breaks the first ties, as HAProxy's insertion order does.
    for (let i = 0; i < n; i++) this.queued[i] = this.clock++;
  }

  abstract pick(request: PickRequest): PickerEndpoint<B> | undefined;
  abstract loadChanged(endpoint: PickerEndpoint<B>): void;

  /** Slow path: the best admitted endpoint by (key, queue stamp), by a scan. */
  protected bestAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    let best: PickerEndpoint<B> | undefined;
    for (const ep of this.endpoints) {
      if (!request.admits(ep)) continue;
      if (best === undefined) {
        best = ep;
        continue;
      }
      const ka = (ep.inFlight + 1) * best.effectiveWeight;
      const kb = (best.inFlight + 1) * ep.effectiveWeight;
      if (ka < kb || (ka === kb && (this.queued[ep.index] as number) < (this.queued[best.index] as number))) best = ep;
    }
    return best;
  }
}

/** Equal weights: one FIFO list per in-flight count, linked through typed arrays. */
class LeastConnectionsLevels<B> extends LeastConnectionsBase<B> {
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** The level (in-flight count) each endpoint is listed at. */
  private readonly level: Int32Array;
  private head: Int32Array;
  private tail: Int32Array;
  /** The lowest non-empty level. */
  private low = 0;

  constructor(endpoints: readonly PickerEndpoint<B>[]) {
    super(endpoints);
    const n = endpoints.length;
    this.next = new Int32Array(n);
    this.prev = new Int32Array(n);
    this.level = new Int32Array(n);
    let top = 0;
    for (const ep of endpoints) top = Math.max(top, ep.inFlight);
    this.head = new Int32Array(top + 2).fill(-1);
    this.tail = new Int32Array(top + 2).fill(-1);
    // Queue in stamp order within each level: list order.
    this.low = top;
    for (let i = 0; i < n; i++) {
      const l = (endpoints[i] as PickerEndpoint<B>).inFlight;
      this.append(i, l);
      if (l < this.low) this.low = l;
    }
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const i = this.head[this.low] as number;
    const ep = this.endpoints[i] as PickerEndpoint<B>;
    const chosen = request.admits(ep) ? ep : this.bestAdmitted(request);
    if (chosen === undefined) return undefined;
    const c = chosen.index;
    const l = this.level[c] as number;
    if (this.tail[l] !== c) {
      this.unlink(c, l);
      this.append(c, l);
    }
    this.queued[c] = this.clock++;
    return chosen;
  }

  loadChanged(endpoint: PickerEndpoint<B>): void {
    const i = endpoint.index;
    const from = this.level[i] as number;
    const to = endpoint.inFlight;
    this.unlink(i, from);
    if (to + 1 >= this.head.length) this.grow(to + 2);
    this.append(i, to);
    this.queued[i] = this.clock++;
    if (to < this.low) this.low = to;
    else if (from === this.low && this.head[from] === -1) {
      // The lowest level emptied; loads move one step at a time, so the next level is the lowest.
      let l = from + 1;
      while (this.head[l] === -1) l++;
      this.low = l;
    }
  }

  private append(i: number, l: number): void {
    const t = this.tail[l] as number;
    this.prev[i] = t;
    this.next[i] = -1;
    if (t === -1) this.head[l] = i;
    else this.next[t] = i;
    this.tail[l] = i;
    this.level[i] = l;
  }

  private unlink(i: number, l: number): void {
    const p = this.prev[i] as number;
    const x = this.next[i] as number;
    if (p === -1) this.head[l] = x;
    else this.next[p] = x;
    if (x === -1) this.tail[l] = p;
    else this.prev[x] = p;
  }

  private grow(size: number): void {
    const length = Math.max(size, this.head.length * 2);
    const head = new Int32Array(length).fill(-1);
    const tail = new Int32Array(length).fill(-1);
    head.set(this.head);
    tail.set(this.tail);
    this.head = head;
    this.tail = tail;
  }
}

/**
 * Unequal weights: a binary min-heap ordered by (inFlight + 1) / weight, then by queue stamp.
 * Keys and stamps are kept in heap order in typed arrays, so a comparison reads no object.
 * Equal ratios of the same integers divide to the same double, so ties stay ties.
 */
class LeastConnectionsHeap<B> extends LeastConnectionsBase<B> {
  /** heap[k] is an endpoint index; key[k] and stamp[k] belong to heap[k]. */
  private readonly heap: Int32Array;
  private readonly key: Float64Array;
  private readonly stamp: Float64Array;
  /** position[i] is where endpoint i sits in the heap. */
  private readonly position: Int32Array;

  constructor(endpoints: readonly PickerEndpoint<B>[]) {
    super(endpoints);
    const n = endpoints.length;
    this.heap = new Int32Array(n);
    this.key = new Float64Array(n);
    this.stamp = new Float64Array(n);
    this.position = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const ep = endpoints[i] as PickerEndpoint<B>;
      this.heap[i] = i;
      this.key[i] = (ep.inFlight + 1) / ep.effectiveWeight;
      this.stamp[i] = this.queued[i] as number;
      this.position[i] = i;
    }
    for (let k = (n >> 1) - 1; k >= 0; k--) this.siftDown(k);
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const root = this.endpoints[this.heap[0] as number] as PickerEndpoint<B>;
    const chosen = request.admits(root) ? root : this.bestAdmitted(request);
    if (chosen === undefined) return undefined;
    this.requeue(chosen);
    return chosen;
  }

  loadChanged(endpoint: PickerEndpoint<B>): void {
    this.requeue(endpoint);
  }

  /** Gives the endpoint its current key and a new stamp, and restores the heap order. */
  private requeue(ep: PickerEndpoint<B>): void {
    const k = this.position[ep.index] as number;
    const key = (ep.inFlight + 1) / ep.effectiveWeight;
    const stamp = this.clock++;
    this.queued[ep.index] = stamp;
    const up = key < (this.key[k] as number);
    this.key[k] = key;
    this.stamp[k] = stamp;
    if (up) this.siftUp(k);
    else this.siftDown(k);
  }

  private before(ka: number, sa: number, kb: number, sb: number): boolean {
    return ka < kb || (ka === kb && sa < sb);
  }

  private siftUp(k: number): void {
    const { heap, key, stamp, position } = this;
    const item = heap[k] as number;
    const ik = key[k] as number;
    const is = stamp[k] as number;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      if (!this.before(ik, is, key[parent] as number, stamp[parent] as number)) break;
      const p = heap[parent] as number;
      heap[k] = p;
      key[k] = key[parent] as number;
      stamp[k] = stamp[parent] as number;
      position[p] = k;
      k = parent;
    }
    heap[k] = item;
    key[k] = ik;
    stamp[k] = is;
    position[item] = k;
  }

  private siftDown(k: number): void {
    const { heap, key, stamp, position } = this;
    const n = heap.length;
    const item = heap[k] as number;
    const ik = key[k] as number;
    const is = stamp[k] as number;
    for (;;) {
      let child = 2 * k + 1;
      if (child >= n) break;
      const right = child + 1;
      if (
        right < n &&
        this.before(key[right] as number, stamp[right] as number, key[child] as number, stamp[child] as number)
      ) {
        child = right;
      }
      if (!this.before(key[child] as number, stamp[child] as number, ik, is)) break;
      const c = heap[child] as number;
      heap[k] = c;
      key[k] = key[child] as number;
      stamp[k] = stamp[child] as number;
      position[c] = k;
      k = child;
    }
    heap[k] = item;
    key[k] = ik;
    stamp[k] = is;
    position[item] = k;
  }
}
