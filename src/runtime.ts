// The few host facilities the core uses, reached through globalThis so that the core
// compiles against the ECMAScript library alone and runs in Node, Deno, Bun and browsers.

interface HostGlobals {
  readonly performance?: { now(): number };
  readonly queueMicrotask?: (callback: () => void) => void;
}

const host = globalThis as HostGlobals;

/** A monotonic clock in milliseconds: `performance.now()` where the runtime has it. */
export const monotonicNow: () => number =
  host.performance !== undefined ? host.performance.now.bind(host.performance) : Date.now;

/** Rethrows `error` outside the current call stack, where the runtime reports uncaught errors. */
export function reportAsync(error: unknown): void {
  const schedule = host.queueMicrotask;
  if (schedule !== undefined) {
    schedule(() => {
      throw error;
    });
  } else {
    void Promise.reject(error);
  }
}
