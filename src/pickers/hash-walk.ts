import type { KeySource } from '../hash/key.js';
import type { LoadBound } from './bounded-load.js';
import type { Picker, PickerEndpoint, PickRequest } from './picker.js';

/** Endpoints sorted by id: the order tables are built in, so no result depends on insertion order. */
export function canonicalOrder<B>(endpoints: readonly PickerEndpoint<B>[]): PickerEndpoint<B>[] {
  return endpoints.slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * The shared shape of the table-based hash pickers (ring and Maglev): a key's first choice is one
 * lookup; when that endpoint is not admitted (excluded, full) or has no room under the load
 * bound, the picker walks the key's own preference order (the next points of the ring, the next
 * slots of the table), so a retry of the same key goes to the same second choice every time.
 *
 * The walk visits each endpoint once (a stamp per endpoint, no allocation) and takes the first
 * admitted endpoint with room. If every admitted endpoint is over the load bound, the bound yields
 * and the first admitted endpoint in the key's order takes the request.
 */
export abstract class HashWalkPicker<B> implements Picker<B> {
  private readonly visited: Uint32Array;
  private epoch = 0;
  private visitedCount = 0;
  private firstAdmitted: PickerEndpoint<B> | undefined;

  constructor(
    /** Canonical order; the tables hold indexes into it. */
    protected readonly endpoints: readonly PickerEndpoint<B>[],
    private readonly keys: KeySource,
    private readonly bound: LoadBound | undefined,
  ) {
    this.visited = new Uint32Array(endpoints.length);
  }

  /** The index (in canonical order) of the key's first choice. */
  protected abstract first(hash: number): number;

  /** Walks the key's preference order with {@link offer} until it accepts or {@link exhausted}. */
  protected abstract walk(hash: number, request: PickRequest): PickerEndpoint<B> | undefined;

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const hash = this.keys.hash(request);
    const ep = this.endpoints[this.first(hash)] as PickerEndpoint<B>;
    if (request.admits(ep) && (this.bound === undefined || this.bound.hasRoom(ep))) return ep;
    this.epoch = this.epoch === 0xffffffff ? 1 : this.epoch + 1;
    if (this.epoch === 1) this.visited.fill(0);
    this.visitedCount = 0;
    this.firstAdmitted = undefined;
    const chosen = this.walk(hash, request) ?? this.firstAdmitted;
    this.firstAdmitted = undefined;
    return chosen;
  }

  loadChanged(ep: PickerEndpoint<B>): void {
    this.bound?.loadChanged(ep);
  }

  /** Considers endpoint i: true when the walk should return it. */
  protected offer(i: number, request: PickRequest): boolean {
    if (this.visited[i] === this.epoch) return false;
    this.visited[i] = this.epoch;
    this.visitedCount++;
    const ep = this.endpoints[i] as PickerEndpoint<B>;
    if (!request.admits(ep)) return false;
    if (this.firstAdmitted === undefined) this.firstAdmitted = ep;
    return this.bound === undefined || this.bound.hasRoom(ep);
  }

  /** Whether every endpoint has been considered. */
  protected get exhausted(): boolean {
    return this.visitedCount === this.endpoints.length;
  }
}
