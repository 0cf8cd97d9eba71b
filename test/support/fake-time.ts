/**
 * Fake time shared by the tests: a timer queue over one clock, so nothing waits for real. Health
 * and election tests inject `now` and `timers` from it and move time with `advance` or `to`.
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

  /** The current time (the same as `time`). */
  get clock(): number {
    return this.time;
  }
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

  /** Due times of the pending timers, sorted. */
  pendingDue(): number[] {
    return this.heap
      .filter((t) => this.live.has(t.seq))
      .map((t) => t.due)
      .sort((a, b) => a - b);
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

  /** Runs the due callbacks without letting microtasks run: for models whose callbacks are synchronous. */
  advanceSync(ms: number): void {
    const target = this.time + ms;
    for (;;) {
      const next = this.peek();
      if (next === undefined || next.due > target) break;
      this.pop();
      this.live.delete(next.seq);
      this.time = next.due;
      next.callback();
    }
    this.time = target;
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
