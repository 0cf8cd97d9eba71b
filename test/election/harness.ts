/**
 * Fake time for the election tests: one scheduler that owns "real time", clocks that read it with
 * a drift and an offset, and timer sets that measure their delays on such a clock and can be
 * killed (a crashed process's timers never fire). Nothing here waits for real.
 */
import type { Timers } from '../../src/timers.js';

import { flush, Scheduler } from '../support/fake-time.js';

export { flush, Scheduler };

/**
 * A host's clock and timers: its clock reads real time * (1 + drift) + offset, and its timers
 * measure their delays on that clock (as a real host's do: one oscillator drives both), firing
 * once the host's clock has reached the deadline. `kill()` drops every pending timer and ignores
 * new ones: the process crashed.
 */
export class Host {
  readonly timers: Timers;
  private readonly handles = new Set<number>();
  private dead = false;

  constructor(
    private readonly scheduler: Scheduler,
    readonly drift = 0,
    readonly offset = 0,
  ) {
    this.timers = {
      setTimeout: (callback, ms) => {
        if (this.dead) return undefined;
        // The real instant at which this host's clock has advanced by ms. The nudge makes sure the
        // clock read in the callback is past the deadline despite rounding.
        const due = scheduler.time + Math.max(0, ms) / (1 + drift) + 1e-6;
        const handle = scheduler.at(due, () => {
          this.handles.delete(handle);
          if (!this.dead) callback();
        });
        this.handles.add(handle);
        return handle;
      },
      clearTimeout: (handle) => {
        if (typeof handle !== 'number' || !this.handles.has(handle)) return;
        this.handles.delete(handle);
        scheduler.cancel(handle);
      },
    };
  }

  readonly now = (): number => this.scheduler.time * (1 + this.drift) + this.offset;

  get crashed(): boolean {
    return this.dead;
  }

  kill(): void {
    this.dead = true;
    for (const handle of this.handles) this.scheduler.cancel(handle);
    this.handles.clear();
  }
}

/** splitmix32: a small, well-mixed seeded PRNG returning uniform numbers in [0, 1). */
export function splitmix32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 4294967296;
  };
}
