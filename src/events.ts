import { reportAsync } from './runtime.js';

type Listener<T> = (payload: T) => void;

/**
 * A minimal event source for any runtime (no Node EventEmitter). One listener is kept without
 * an array, so emitting to none or one allocates nothing. A listener that throws does not stop
 * the others nor the balancer's own work: its error is rethrown asynchronously, where the
 * runtime reports uncaught errors.
 */
export class Emitter<Events> {
  private readonly listeners = new Map<keyof Events, Listener<never> | Listener<never>[]>();

  on<E extends keyof Events>(event: E, listener: Listener<Events[E]>): () => void {
    const current = this.listeners.get(event);
    const fn = listener as Listener<never>;
    if (current === undefined) this.listeners.set(event, fn);
    else if (Array.isArray(current)) this.listeners.set(event, [...current, fn]);
    else this.listeners.set(event, [current, fn]);
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      this.off(event, fn);
    };
  }

  /** Whether anyone listens to `event`, so callers can skip building a payload. */
  has(event: keyof Events): boolean {
    return this.listeners.has(event);
  }

  emit<E extends keyof Events>(event: E, payload: Events[E]): void {
    const current = this.listeners.get(event);
    if (current === undefined) return;
    if (!Array.isArray(current)) {
      call(current, payload);
      return;
    }
    // The array is replaced, never mutated, on (un)subscribe: iterating it is safe.
    for (const fn of current) call(fn, payload);
  }

  private off(event: keyof Events, fn: Listener<never>): void {
    const current = this.listeners.get(event);
    if (current === fn) {
      this.listeners.delete(event);
    } else if (Array.isArray(current)) {
      const i = current.indexOf(fn);
      if (i < 0) return;
      const rest = current.filter((_, j) => j !== i);
      if (rest.length === 1) this.listeners.set(event, rest[0] as Listener<never>);
      else this.listeners.set(event, rest);
    }
  }
}

function call<T>(fn: Listener<never>, payload: T): void {
  try {
    (fn as Listener<T>)(payload);
  } catch (error) {
    reportAsync(error);
  }
}
