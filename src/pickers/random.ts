import type { Picker, PickerEndpoint, PickerEnvironment, PickRequest } from './picker.js';

/** Draws from the alias table before falling back to a scan of the admitted endpoints. */
const MAX_REJECTED_DRAWS = 4;

/**
 * Weighted random: each pick chooses endpoint i with probability w_i / W, in O(1) with Vose's
 * alias method (one table entry and one comparison per draw; O(n) to build).
 *
 * When the drawn endpoint is not admitted (excluded or full) the picker draws again, a few
 * times, then chooses by weight among the admitted endpoints with one linear pass. Both ways
 * the result is weighted random over the admitted endpoints.
 */
export function createRandomPicker<B>(endpoints: readonly PickerEndpoint<B>[], env: PickerEnvironment): Picker<B> {
  return new RandomPicker(endpoints, env.random);
}

/** Vose's alias table: `prob[i]` is the chance of keeping column i, else take `alias[i]`. */
export interface AliasTable {
  readonly prob: Float64Array;
  readonly alias: Uint32Array;
}

/** Builds an alias table for the given positive weights. */
export function buildAliasTable(weights: ArrayLike<number>): AliasTable {
  const n = weights.length;
  const prob = new Float64Array(n);
  const alias = new Uint32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) total += weights[i] as number;
  const scaled = new Float64Array(n);
  const small: number[] = [];
  const large: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = ((weights[i] as number) * n) / total;
    scaled[i] = s;
    (s < 1 ? small : large).push(i);
  }
  while (small.length > 0 && large.length > 0) {
    const s = small.pop() as number;
    const l = large.pop() as number;
    prob[s] = scaled[s] as number;
    alias[s] = l;
    const rest = (scaled[l] as number) + (scaled[s] as number) - 1;
    scaled[l] = rest;
    (rest < 1 ? small : large).push(l);
  }
  // What is left holds probability 1 up to rounding.
  for (const i of large) prob[i] = 1;
  for (const i of small) prob[i] = 1;
  return { prob, alias };
}

class RandomPicker<B> implements Picker<B> {
  private readonly prob: Float64Array;
  private readonly alias: Uint32Array;

  constructor(
    private readonly endpoints: readonly PickerEndpoint<B>[],
    private readonly random: () => number,
  ) {
    const weights = endpoints.map((ep) => ep.effectiveWeight);
    const table = buildAliasTable(weights);
    this.prob = table.prob;
    this.alias = table.alias;
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    for (let attempt = 0; attempt < MAX_REJECTED_DRAWS; attempt++) {
      const ep = this.endpoints[this.draw()] as PickerEndpoint<B>;
      if (request.admits(ep)) return ep;
    }
    return this.pickAdmitted(request);
  }

  /** One alias-method draw from a single random number: the integer part picks the column, the fraction the coin. */
  private draw(): number {
    const n = this.prob.length;
    const u = this.random() * n;
    let i = Math.floor(u);
    if (i >= n) i = n - 1;
    return u - i < (this.prob[i] as number) ? i : (this.alias[i] as number);
  }

  /** Slow path: weighted choice among the admitted endpoints in one pass (reservoir style). */
  private pickAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    let chosen: PickerEndpoint<B> | undefined;
    let total = 0;
    for (const ep of this.endpoints) {
      if (!request.admits(ep)) continue;
      total += ep.effectiveWeight;
      if (this.random() * total < ep.effectiveWeight) chosen = ep;
    }
    return chosen;
  }
}
