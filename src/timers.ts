/** The timer functions fairpick schedules with; inject them (with `now`) to test without waiting. */
export interface Timers {
  /** Calls `callback` after `ms` milliseconds; returns a handle for `clearTimeout`. */
  setTimeout(callback: () => void, ms: number): unknown;
  /** Cancels a pending `setTimeout`. */
  clearTimeout(handle: unknown): void;
}

interface HostTimers {
  readonly setTimeout?: (callback: () => void, ms: number) => unknown;
  readonly clearTimeout?: (handle: unknown) => void;
}

/**
 * The runtime's own timers, each `unref`ed where the runtime has it (Node, Bun, Deno), so no timer
 * of fairpick's keeps a process alive by itself.
 */
export const hostTimers: Timers = {
  setTimeout(callback, ms) {
    const host = globalThis as HostTimers;
    const handle = (host.setTimeout as NonNullable<HostTimers['setTimeout']>)(callback, ms);
    (handle as { unref?: () => void } | null)?.unref?.();
    return handle;
  },
  clearTimeout(handle) {
    (globalThis as HostTimers).clearTimeout?.(handle);
  },
};
