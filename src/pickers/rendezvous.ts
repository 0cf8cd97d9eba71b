import type { KeySource } from '../hash/key.js';
import { mix32, murmur3 } from '../hash/murmur3.js';
import { LoadBound } from './bounded-load.js';
import { canonicalOrder } from './hash-walk.js';
import type { Picker, PickerEndpoint, PickerFactory, PickRequest } from './picker.js';

/** Seed of the per-backend hash that is combined with the key hash. */
const ID_SEED = 0x72647a76;
const GOLDEN = 0x9e3779b1;
const TWO_POW_32 = 4294967296;

/** Rendezvous options after validation. */
export interface RendezvousSettings {
  readonly boundedLoad: number | undefined;
}

/**
 * Weighted rendezvous, or highest-random-weight, hashing (Thaler and Ravishankar 1998; the
 * logarithmic method of Schindelhauer and Schomaker 2005). For a key hash k and backend hash
 * b = murmur3(id, 0x72647a76), x = fmix32(k ^ (b x 0x9e3779b1)) gives u = (x + 0.5) / 2^32 in (0, 1)
 * and the score -w / ln(u); the highest score wins, so backend i wins with probability exactly
 * w_i / W. With equal weights the picker compares x directly (same order, no logarithm). Equal
 * scores go to the lower id.
 *
 * Removing a backend moves only its keys; adding one moves keys only to it; changing a weight moves
 * keys only to or from that backend. A pick scores every backend, O(n); there is no table, so a
 * change costs O(n). A key's later choices are its next-highest scores, so with `exclude` or a
 * load bound the pick takes the highest-scoring admitted backend with room.
 */
export function createRendezvousFactory<B>(settings: RendezvousSettings, keys: KeySource): PickerFactory<B> {
  return (endpoints) => {
    const bound = settings.boundedLoad === undefined ? undefined : new LoadBound(settings.boundedLoad, endpoints);
    return new RendezvousPicker(canonicalOrder(endpoints), keys, bound);
  };
}

class RendezvousPicker<B> implements Picker<B> {
  private readonly idHash: Int32Array;
  private readonly weight: Float64Array;
  private readonly equalWeights: boolean;

  constructor(
    private readonly endpoints: readonly PickerEndpoint<B>[],
    private readonly keys: KeySource,
    private readonly bound: LoadBound | undefined,
  ) {
    const n = endpoints.length;
    this.idHash = new Int32Array(n);
    this.weight = new Float64Array(n);
    let equal = true;
    endpoints.forEach((ep, i) => {
      this.idHash[i] = Math.imul(murmur3(ep.id, ID_SEED), GOLDEN);
      this.weight[i] = ep.effectiveWeight;
      if (ep.effectiveWeight !== endpoints[0]?.effectiveWeight) equal = false;
    });
    this.equalWeights = equal;
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const key = this.keys.hash(request);
    const endpoints = this.endpoints;
    const bound = this.bound;
    let best: PickerEndpoint<B> | undefined;
    let bestScore = Number.NEGATIVE_INFINITY;
    let fallback: PickerEndpoint<B> | undefined;
    let fallbackScore = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < endpoints.length; i++) {
      const x = mix32(key ^ (this.idHash[i] as number)) >>> 0;
      const score = this.equalWeights ? x : -(this.weight[i] as number) / Math.log((x + 0.5) / TWO_POW_32);
      if (score <= bestScore) continue; // bestScore <= fallbackScore: nothing to gain
      const ep = endpoints[i] as PickerEndpoint<B>;
      if (!request.admits(ep)) continue;
      if (score > fallbackScore) {
        fallback = ep;
        fallbackScore = score;
      }
      if (score > bestScore && (bound === undefined || bound.hasRoom(ep))) {
        best = ep;
        bestScore = score;
      }
    }
    // When every admitted backend is over the load bound, the bound yields to the key's first choice.
    return best ?? fallback;
  }

  loadChanged(ep: PickerEndpoint<B>): void {
    this.bound?.loadChanged(ep);
  }
}
