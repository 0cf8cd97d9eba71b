/**
 * Fake time for the election tests: one scheduler that owns "real time", clocks that read it with
 * a drift and an offset, and timer sets that measure their delays on such a clock and can be
 * killed (a crashed process's timers never fire). Nothing here waits for real.
 */
import type { Timers } from '../../src/timers.js';

/** Lets every queued microtask (and the microtasks they queue) run, as an event loop turn would. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

interface Task {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
}

/**
 * A priority queue of { due, seq, callback }, ordered by due time and then by creation order, over
 * one global clock (`time`, "real time"). `advance(ms)` runs the due callbacks in that order, moves
 * the clock to each one's due time, lets the microtasks run after each, and then calls `onStep`
 * (the simulation's invariant checks); it ends with the clock at time + ms.
 */
export class Scheduler {
  time = 0;
  /** Called after every callback and its microtasks have run; throw to fail the test there. */
  onStep: (() => void) | undefined;
  private seq = 0;
  private readonly heap: Task[] = [];
  private readonly live = new Set<number>();

  readonly now = (): number => this.time;

  /** Timers on the real clock itself. */
  readonly timers: Timers = {
    setTimeout: (callback, ms) => this.at(this.time + ms, callback),
    clearTimeout: (handle) => this.cancel(handle),
  };

  /** Schedules `callback` at the absolute real time `due`; returns a handle for `cancel`. */
  at(due: number, callback: () => void): number {
    if (!(due >= this.time) || !Number.isFinite(due)) throw new Error(`bad due time ${due} at ${this.time}`);
    const seq = ++this.seq;
    this.push({ due, seq, callback });
    this.live.add(seq);
    return seq;
  }

  cancel(handle: unknown): void {
    if (typeof handle === 'number') this.live.delete(handle);
  }

  /** Timers scheduled and neither fired nor cancelled. */
  get pending(): number {
    return this.live.size;
  }

  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    for (;;) {
      await flush();
      const next = this.peek();
      if (next === undefined || next.due > target) break;
      this.pop();
      this.live.delete(next.seq);
      this.time = next.due;
      next.callback();
      await flush();
      this.onStep?.();
    }
    this.time = target;
    await flush();
    this.onStep?.();
  }

  /** Advances to the absolute real time `time`. */
  async to(time: number): Promise<void> {
    if (time < this.time) throw new Error(`cannot go back from ${this.time} to ${time}`);
    await this.advance(time - this.time);
  }

  /** Moves the clock without running any timer: a process that was paused, or a late timer. */
  jump(ms: number): void {
    this.time += ms;
  }

  private peek(): Task | undefined {
    while (this.heap.length > 0 && !this.live.has((this.heap[0] as Task).seq)) this.pop();
    return this.heap[0];
  }

  private less(a: Task, b: Task): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  private push(t: Task): void {
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(h[i] as Task, h[parent] as Task)) break;
      [h[i], h[parent]] = [h[parent] as Task, h[i] as Task];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop() as Task;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l] as Task, h[m] as Task)) m = l;
      if (r < h.length && this.less(h[r] as Task, h[m] as Task)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m] as Task, h[i] as Task];
      i = m;
    }
  }
}

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
