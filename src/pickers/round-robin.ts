import type { Picker, PickerEndpoint, PickerEnvironment, PickRequest } from './picker.js';

/** Longest pick cycle kept as a precomputed table (entries). */
const MAX_TABLE_PERIOD = 1 << 18;
/** Most work (period x endpoints) spent building the table; beyond it the picker runs live. */
const MAX_TABLE_BUILD_STEPS = 1 << 22;

/**
 * Smooth weighted round robin, as NGINX does it (commit 52327e0, 2012): every pick adds each
 * endpoint's weight to its running score, takes the highest score (the earliest endpoint on a
 * tie) and subtracts the total weight from it. Weights 5, 1, 1 give `a a b a c a a`; in any W
 * consecutive picks (W = sum of weights) each endpoint appears exactly `weight` times.
 *
 * With integer weights the sequence repeats every W / gcd(weights) picks, so it is computed once
 * per snapshot and each pick reads the next table entry: O(1). The cycle starts at a random
 * offset (from `env.random`) so that many clients built at once do not all start on the same
 * backend (gRPC does the same); any window of one cycle still holds exact counts. Weights that
 * are not integers, or a cycle longer than the table limit, run the same rule live: O(n) per pick.
 *
 * A pick that must skip endpoints (excluded, or at `maxInFlight`) takes the next admitted one
 * in the cycle, so the skipped ones lose that turn.
 */
export function createRoundRobinPicker<B>(endpoints: readonly PickerEndpoint<B>[], env: PickerEnvironment): Picker<B> {
  const table = buildTable(endpoints);
  if (table !== undefined) return new TableRoundRobin(endpoints, table, env.random());
  return new LiveRoundRobin(endpoints);
}

/** Runs smooth weighted round robin over one period and returns the endpoint index sequence. */
function buildTable(endpoints: readonly PickerEndpoint[]): Uint32Array | undefined {
  const n = endpoints.length;
  let g = 0;
  for (const ep of endpoints) {
    const w = ep.effectiveWeight;
    if (!Number.isSafeInteger(w)) return undefined;
    g = gcd(g, w);
  }
  const weights = new Float64Array(n);
  let period = 0;
  for (let i = 0; i < n; i++) {
    weights[i] = (endpoints[i] as PickerEndpoint).effectiveWeight / g;
    period += weights[i] as number;
  }
  if (period > MAX_TABLE_PERIOD || period * n > MAX_TABLE_BUILD_STEPS) return undefined;
  const table = new Uint32Array(period);
  const current = new Float64Array(n);
  for (let t = 0; t < period; t++) {
    let best = 0;
    for (let i = 0; i < n; i++) {
      const c = (current[i] as number) + (weights[i] as number);
      current[i] = c;
      if (c > (current[best] as number)) best = i;
    }
    current[best] = (current[best] as number) - period;
    table[t] = best;
  }
  return table;
}

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const t = a % b;
    a = b;
    b = t;
  }
  return a;
}

class TableRoundRobin<B> implements Picker<B> {
  private cursor: number;

  constructor(
    private readonly endpoints: readonly PickerEndpoint<B>[],
    private readonly table: Uint32Array,
    random: number,
  ) {
    this.cursor = Math.floor(random * table.length) % table.length;
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const table = this.table;
    let cursor = this.cursor;
    const ep = this.endpoints[table[cursor] as number] as PickerEndpoint<B>;
    cursor = cursor + 1 === table.length ? 0 : cursor + 1;
    this.cursor = cursor;
    if (request.admits(ep)) return ep;
    return this.pickAdmitted(request);
  }

  /** Slow path: walk the cycle to the next admitted endpoint, if any is admitted at all. */
  private pickAdmitted(request: PickRequest): PickerEndpoint<B> | undefined {
    let any = false;
    for (const ep of this.endpoints) {
      if (request.admits(ep)) {
        any = true;
        break;
      }
    }
    if (!any) return undefined;
    const table = this.table;
    for (;;) {
      const ep = this.endpoints[table[this.cursor] as number] as PickerEndpoint<B>;
      this.cursor = this.cursor + 1 === table.length ? 0 : this.cursor + 1;
      if (request.admits(ep)) return ep;
    }
  }
}

class LiveRoundRobin<B> implements Picker<B> {
  private readonly current: Float64Array;

  constructor(private readonly endpoints: readonly PickerEndpoint<B>[]) {
    this.current = new Float64Array(endpoints.length);
  }

  pick(request: PickRequest): PickerEndpoint<B> | undefined {
    const endpoints = this.endpoints;
    const current = this.current;
    let best = -1;
    let total = 0;
    for (let i = 0; i < endpoints.length; i++) {
      const ep = endpoints[i] as PickerEndpoint<B>;
      if (!request.admits(ep)) continue;
      const w = ep.effectiveWeight;
      const c = (current[i] as number) + w;
      current[i] = c;
      total += w;
      if (best < 0 || c > (current[best] as number)) best = i;
    }
    if (best < 0) return undefined;
    current[best] = (current[best] as number) - total;
    return endpoints[best];
  }
}
