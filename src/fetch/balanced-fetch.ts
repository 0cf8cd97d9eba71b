import { FairpickError, isFairpickError } from '../errors.js';
import {
  backendTarget,
  checkBackendUrls,
  mayRetryMethod,
  optionsObject,
  type PickFields,
  type RetryOptions,
  retryPolicy,
  type UrlBackend,
} from '../http/policy.js';
import { RetryBudget } from '../http/retry-budget.js';
import { type FailedAttempt, UpstreamError } from '../http/upstream-error.js';
import { monotonicNow } from '../runtime.js';
import { hostTimers } from '../timers.js';
import type { Balancer, Slot } from '../types.js';
import { invalid, requireFunction } from '../validate.js';

/** A `fetch` function: the runtime's, or any with its signature. */
export type FetchFunction = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** What `key` and `clientIp` see of a request (the body is not theirs to read). */
export interface BalancedRequest {
  /** The request URL, on the placeholder origin. */
  readonly url: URL;
  /** The method, in capitals. */
  readonly method: string;
  /** The request headers. */
  readonly headers: Headers;
}

/** Options of {@link balancedFetch}. */
export interface BalancedFetchOptions extends RetryOptions {
  /**
   * The fetch that sends each attempt.
   * @defaultValue `globalThis.fetch`
   */
  readonly fetch?: FetchFunction;
  /** The affinity key of a request, for the hash algorithms (a header, a cookie, the path…). */
  readonly key?: (request: BalancedRequest) => string | Uint8Array | undefined;
  /** The client address of a request, for `ip-hash`. */
  readonly clientIp?: (request: BalancedRequest) => string | undefined;
  /**
   * The clock for latencies and the retry budget, in milliseconds.
   * @defaultValue `performance.now`
   */
  readonly now?: () => number;
}

/** The function {@link balancedFetch} returns: `fetch`, balanced. */
export type BalancedFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

type RequestFields = RequestInit & { duplex?: 'half' };

// Statuses whose responses have no body; `new Response` refuses a body for them.
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

// When a caller drops a response without reading or cancelling its body, count the request out when
// the response is collected, so its backend's in-flight count does not grow for ever.
const abandoned = new FinalizationRegistry<() => void>((finish) => finish());

/**
 * Wraps a balancer as a `fetch`. A relative URL (`/api/users`), or one on the placeholder origin
 * (`http://fairpick/api/users`), is sent to a backend the balancer picks: its `url` (origin and
 * optional base path) followed by the request's path and query. Any other URL passes through to
 * `fetch` untouched.
 *
 * Each attempt is counted in flight from the pick until its response body has been read, cancelled
 * or failed, and released with `ok` (no network error, status not in `failureStatuses`) and the
 * latency to the response headers, so least-connections, p2c and passive health see real traffic.
 *
 * A connection error, a timeout or a status in `retryOn` is retried on a backend not tried yet,
 * when the method is idempotent (or `retryNonIdempotent`), the body can be sent twice (not a
 * stream), another backend can be picked and the retry budget allows it. When the retries are spent
 * on `retryOn` statuses, the last response is returned as it is.
 *
 * @example
 * ```ts
 * const lb = createBalancer({ algorithm: 'least-connections', backends: [
 *   { id: 'api-1', url: 'http://10.0.0.11:8080' }, { id: 'api-2', url: 'http://10.0.0.12:8080' }] });
 * const fetch = balancedFetch(lb, { retries: 2, timeoutMs: 2000 });
 * const users = await (await fetch('/api/users')).json();
 * ```
 * @returns a function with `fetch`'s signature. It rejects with `FairpickError` `ERR_NO_BACKEND`
 *   when no backend can be picked, with {@link UpstreamError} (`ERR_UPSTREAM`) when every attempt
 *   failed, and with the caller's `signal.reason` when the caller aborts.
 * @throws `FairpickError` `ERR_INVALID_ARGUMENT` for a bad option or a backend without a valid `url`.
 */
export function balancedFetch<B extends UrlBackend>(lb: Balancer<B>, options?: BalancedFetchOptions): BalancedFetch {
  const opts = optionsObject(options, 'options');
  const policy = retryPolicy(opts, 'options');
  const send: FetchFunction = requireFunction(opts.fetch ?? (globalThis as { fetch?: unknown }).fetch, 'options.fetch');
  const key =
    opts.key === undefined
      ? undefined
      : requireFunction<NonNullable<BalancedFetchOptions['key']>>(opts.key, 'options.key');
  const clientIp =
    opts.clientIp === undefined
      ? undefined
      : requireFunction<NonNullable<BalancedFetchOptions['clientIp']>>(opts.clientIp, 'options.clientIp');
  const now = opts.now === undefined ? monotonicNow : requireFunction<() => number>(opts.now, 'options.now');
  if (typeof lb?.acquire !== 'function') throw invalid('lb', lb, 'a balancer from createBalancer');
  checkBackendUrls(lb.backends);
  const budget = policy.budget === null ? null : new RetryBudget(policy.budget, now);

  async function attempts(url: URL, init: RequestFields, replayable: boolean): Promise<Response> {
    const method = (init.method ?? 'GET').toUpperCase();
    const signal = init.signal ?? null;
    const ctx: PickFields = {};
    if (key !== undefined || clientIp !== undefined) {
      const view: BalancedRequest = { url, method, headers: new Headers(init.headers) };
      const k = key?.(view);
      if (k !== undefined) ctx.key = k;
      const ip = clientIp?.(view);
      if (ip !== undefined) ctx.clientIp = ip;
    }
    const retriable = replayable && policy.retries > 0 && mayRetryMethod(policy, method);
    const failed: FailedAttempt[] = [];
    let exclude: Set<string> | null = null;
    if (signal?.aborted) throw signal.reason; // aborted already: no pick, no attempt
    let slot = lb.acquire(ctx); // ERR_NO_BACKEND on the first pick is the caller's error
    budget?.request();

    // The next slot when a retry is allowed, or null: picked before the current attempt is given up,
    // so that with no other backend to try, the current response is returned rather than lost.
    const retrySlot = (current: Slot<B>, attempt: number): Slot<B> | null => {
      if (!retriable || attempt >= policy.retries || signal?.aborted) return null;
      if (budget !== null && !budget.allows()) return null;
      exclude ??= new Set();
      exclude.add(current.backend.id);
      ctx.exclude = exclude;
      let next: Slot<B>;
      try {
        next = lb.acquire(ctx);
      } catch (error) {
        if (isFairpickError(error, 'ERR_NO_BACKEND')) return null;
        throw error;
      }
      budget?.spend();
      return next;
    };

    for (let attempt = 0; ; attempt++) {
      const backend = slot.backend;
      // An attempt needs its own signal only to time out; otherwise the caller's (if any) is used as
      // it is, which saves an AbortController and a listener per request.
      const attemptSignal = policy.timeoutMs > 0 ? new AttemptSignal(signal, backend.id, policy.timeoutMs) : null;
      const started = now();
      let response: Response;
      try {
        if (signal?.aborted) throw signal.reason;
        const target = backendTarget(backend);
        const sent = target.origin + target.basePath + url.pathname + url.search;
        response = await send(sent, attemptSignal === null ? init : { ...init, signal: attemptSignal.signal });
      } catch (error) {
        attemptSignal?.dispose();
        if (signal?.aborted && attemptSignal?.timedOut !== true) {
          slot.release(); // the caller gave up: not the backend's fault
          throw signal.reason;
        }
        if (isFairpickError(error, 'ERR_INVALID_ARGUMENT')) {
          slot.release(); // a backend url that does not parse: a configuration error, not an outage
          throw error;
        }
        slot.release({ ok: false, latencyMs: Math.max(0, now() - started) });
        failed.push({
          backend: backend.id,
          error: attemptSignal?.timedOut === true ? attemptSignal.signal.reason : error,
        });
        const next = retrySlot(slot, attempt);
        if (next === null) throw new UpstreamError(`${method} ${url.pathname}`, failed);
        slot = next;
        continue;
      }
      attemptSignal?.headersArrived();
      let result: { ok: boolean; latencyMs: number };
      let next: Slot<B> | null = null;
      try {
        result = { ok: !policy.isFailure(response.status), latencyMs: Math.max(0, now() - started) };
        if (policy.retryOn.has(response.status)) next = retrySlot(slot, attempt);
      } catch (error) {
        // The caller's failureStatuses predicate (or picker) threw: the request fails with that
        // error, and the backend is neither blamed nor credited.
        slot.release();
        attemptSignal?.dispose();
        response.body?.cancel().catch(() => {});
        throw error;
      }
      if (next !== null) {
        slot.release(result);
        attemptSignal?.dispose();
        response.body?.cancel().catch(() => {});
        slot = next;
        continue;
      }
      return tracked(response, slot, result, attemptSignal, attemptSignal?.signal ?? signal);
    }
  }

  return function fetchBalanced(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    let url: URL;
    let fields: RequestFields;
    try {
      const isRequest = typeof input === 'object' && !(input instanceof URL);
      url = new URL(isRequest ? input.url : input, policy.origin);
      if (url.origin !== policy.origin) return send(input, init);
      // An init member left undefined is absent (WebIDL): it must not erase the Request's own.
      fields = isRequest ? { ...requestFields(input), ...definedFields(init) } : { ...init };
    } catch (error) {
      return Promise.reject(error);
    }
    const body = fields.body;
    const stream = isStream(body);
    if (stream && fields.duplex === undefined) fields.duplex = 'half'; // required to send a stream
    return attempts(url, fields, !stream);
  };
}

/** The members of `init` that are not `undefined`. */
function definedFields(init: RequestInit | undefined): RequestFields {
  const fields: Record<string, unknown> = {};
  if (init === undefined || init === null) return fields;
  for (const [name, value] of Object.entries(init)) if (value !== undefined) fields[name] = value;
  return fields;
}

/** The fields of a `Request` that a new request to another URL must carry. */
function requestFields(request: Request): RequestFields {
  const fields: RequestFields = {
    method: request.method,
    headers: request.headers,
    redirect: request.redirect,
    signal: request.signal,
  };
  if (request.body !== null) fields.body = request.body;
  return fields;
}

// A body that can only be read once: a ReadableStream or an async iterable (which Node's fetch takes).
function isStream(body: unknown): boolean {
  if (body === null || body === undefined || typeof body !== 'object') return false;
  return (
    typeof (body as { getReader?: unknown }).getReader === 'function' ||
    typeof (body as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function'
  );
}

/**
 * The signal of one attempt with a timeout: it aborts at the timeout (until the response headers
 * arrive) or when the caller's signal aborts.
 */
class AttemptSignal {
  private readonly controller = new AbortController();
  private timer: unknown;
  timedOut = false;

  constructor(
    private readonly caller: AbortSignal | null,
    backend: string,
    timeoutMs: number,
  ) {
    caller?.addEventListener('abort', this.onCallerAbort);
    this.timer = hostTimers.setTimeout(() => {
      this.timer = undefined;
      this.timedOut = true;
      const message = `no response headers from backend ${JSON.stringify(backend)} within ${timeoutMs} ms`;
      this.controller.abort(new FairpickError('ERR_TIMEOUT', message));
    }, timeoutMs);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** The body is not timed: stop the clock, keep following the caller. */
  headersArrived(): void {
    if (this.timer !== undefined) hostTimers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The attempt is over. */
  dispose(): void {
    this.headersArrived();
    this.caller?.removeEventListener('abort', this.onCallerAbort);
  }

  private readonly onCallerAbort = (): void => this.controller.abort(this.caller?.reason);
}

// How a tracked response finds its slot: the functions below are shared by every response, and
// defined on each as own properties in one call, rather than wrapping the response in a new
// Response and a new stream (which cost about as much as the request itself).
const finishers = new WeakMap<object, () => void>();
const bodies = new WeakMap<object, ReadableStream<Uint8Array> | null>();
const bodyGetter = Object.getOwnPropertyDescriptor(Response.prototype, 'body')?.get;

// Reading the whole body with text(), json()… ends the request when the read settles.
function readThenFinish(name: 'arrayBuffer' | 'blob' | 'bytes' | 'formData' | 'json' | 'text'): PropertyDescriptor {
  function read(this: Response): Promise<unknown> {
    const own = (Object.getPrototypeOf(this) as Record<string, unknown>)[name];
    // A runtime without this reader (bytes() before Node 22) fails as it would without fairpick.
    if (typeof own !== 'function') throw new TypeError(`response.${name} is not a function`);
    const reading = (own as () => Promise<unknown>).call(this);
    const finish = finishers.get(this);
    if (finish === undefined) return reading;
    return reading.then(
      (value) => {
        finish();
        return value;
      },
      (error: unknown) => {
        finish();
        throw error;
      },
    );
  }
  return { value: read, configurable: true, writable: true };
}

const TRACKING: PropertyDescriptorMap = {
  arrayBuffer: readThenFinish('arrayBuffer'),
  blob: readThenFinish('blob'),
  bytes: readThenFinish('bytes'),
  formData: readThenFinish('formData'),
  json: readThenFinish('json'),
  text: readThenFinish('text'),
  // Reading `body` directly gets a pass-through stream that ends the request at its end or cancel.
  body: {
    configurable: true,
    get(this: Response): ReadableStream<Uint8Array> | null {
      let body = bodies.get(this);
      if (body === undefined) {
        const inner = (bodyGetter ?? (() => null)).call(this) as ReadableStream<Uint8Array> | null;
        body = inner === null ? null : passThrough(inner, finishers.get(this) ?? (() => {}));
        bodies.set(this, body);
      }
      return body;
    },
  },
};

function passThrough(inner: ReadableStream<Uint8Array>, finish: () => void): ReadableStream<Uint8Array> {
  const reader = inner.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const chunk = await reader.read();
        if (chunk.done) {
          finish();
          controller.close();
        } else controller.enqueue(chunk.value);
      } catch (error) {
        finish();
        controller.error(error);
      }
    },
    cancel(reason) {
      finish();
      return reader.cancel(reason);
    },
  });
}

/**
 * The response, made to release its slot when its body has been read to the end, cancelled or has
 * failed, rather than when the headers arrive. The response object stays the one `fetch` returned.
 */
function tracked<B>(
  response: Response,
  slot: Slot<B>,
  result: { ok: boolean; latencyMs: number },
  attemptSignal: AttemptSignal | null,
  signal: AbortSignal | null,
): Response {
  if (response.body === null || NULL_BODY.has(response.status)) {
    slot.release(result);
    attemptSignal?.dispose();
    return response;
  }
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    signal?.removeEventListener('abort', finish);
    slot.release(result);
    attemptSignal?.dispose();
  };
  // The caller aborting mid-body ends the request now, whether or not the body is being read
  // (fetch errors the body stream itself).
  if (signal !== null) {
    if (signal.aborted) finish();
    else signal.addEventListener('abort', finish);
  }
  finishers.set(response, finish);
  Object.defineProperties(response, TRACKING);
  abandoned.register(response, finish);
  return response;
}
