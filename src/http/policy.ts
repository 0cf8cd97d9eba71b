import type { BackendSpec } from '../types.js';
import { invalid, isObject } from '../validate.js';
import { type RetryBudgetOptions, retryBudgetSettings } from './retry-budget.js';

/** A backend reachable over HTTP: a {@link BackendSpec} with the `url` requests are sent to. */
export interface UrlBackend extends BackendSpec {
  /**
   * The backend's origin, optionally with a base path: `http://10.0.0.11:8080` or
   * `https://api-2.internal/v1`. A balanced request's path is appended to it.
   */
  readonly url: string;
}

/** The retry and failure rules shared by `balancedFetch` and `BalancedDispatcher`. */
export interface RetryOptions {
  /**
   * How many times a failed request is retried, each time on a backend not tried yet.
   * @defaultValue 1
   */
  readonly retries?: number;
  /**
   * Response statuses retried on another backend (when the method allows it).
   * @defaultValue [502, 503, 504]
   */
  readonly retryOn?: readonly number[];
  /**
   * Retry methods that are not idempotent (POST, PATCH, …) too. Only do this when the backend
   * de-duplicates requests: a request that timed out may have been processed.
   * @defaultValue false: only GET, HEAD, OPTIONS, PUT, DELETE (and TRACE) are retried
   */
  readonly retryNonIdempotent?: boolean;
  /**
   * The retry budget, or `false` for none.
   * @defaultValue `{ percent: 20, minPerSecond: 3, windowMs: 10000 }`, as Envoy
   */
  readonly retryBudget?: RetryBudgetOptions | false;
  /**
   * Response statuses that count as a backend failure (passive health, `failures` in stats).
   * A predicate that throws fails the request with its error; the backend is neither blamed nor
   * credited.
   * @defaultValue every 5xx status
   */
  readonly failureStatuses?: readonly number[] | ((status: number) => boolean);
  /**
   * Milliseconds an attempt may wait for the response headers before it is aborted (and
   * retried, when allowed). The response body is not timed: stream as long as you need.
   * @defaultValue no timeout
   */
  readonly timeoutMs?: number;
  /**
   * The origin that stands for "the pool": requests to it are balanced, requests to any other
   * origin pass through untouched.
   * @defaultValue 'http://fairpick'
   */
  readonly origin?: string;
}

/** A pick context under construction (PickContext's fields are read-only). @internal */
export type PickFields = { key?: string | Uint8Array; clientIp?: string; exclude?: ReadonlySet<string> };

/** RFC 9110 section 9.2.2: a repeated idempotent request has the effect of one. */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** The validated rules. @internal */
export interface RetryPolicy {
  readonly retries: number;
  readonly retryOn: ReadonlySet<number>;
  readonly retryNonIdempotent: boolean;
  readonly budget: Required<RetryBudgetOptions> | null;
  readonly isFailure: (status: number) => boolean;
  /** Milliseconds to the response headers per attempt; 0 for no limit. */
  readonly timeoutMs: number;
  /** The placeholder origin, normalised by URL (lower case, default port dropped). */
  readonly origin: string;
}

const isServerError = (status: number): boolean => status >= 500 && status <= 599;

function statusList(value: unknown, field: string): ReadonlySet<number> {
  if (!Array.isArray(value)) throw invalid(field, value, 'an array of HTTP statuses (100-599)');
  for (let i = 0; i < value.length; i++) {
    const status: unknown = value[i];
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) {
      throw invalid(`${field}[${i}]`, status, 'an HTTP status, an integer from 100 to 599');
    }
  }
  return new Set(value as number[]);
}

/** Validates the shared options (`field` prefixes the names in errors). @internal */
export function retryPolicy(options: RetryOptions, field: string): RetryPolicy {
  const retries = options.retries ?? 1;
  if (typeof retries !== 'number' || !Number.isInteger(retries) || retries < 0) {
    throw invalid(`${field}.retries`, retries, 'an integer >= 0');
  }
  const retryOn = statusList(options.retryOn ?? [502, 503, 504], `${field}.retryOn`);
  const retryNonIdempotent = options.retryNonIdempotent ?? false;
  if (typeof retryNonIdempotent !== 'boolean') {
    throw invalid(`${field}.retryNonIdempotent`, retryNonIdempotent, 'a boolean');
  }
  const budget = retryBudgetSettings(options.retryBudget, `${field}.retryBudget`);
  const failures = options.failureStatuses;
  let isFailure = isServerError;
  if (typeof failures === 'function') isFailure = failures;
  else if (failures !== undefined) {
    const set = statusList(failures, `${field}.failureStatuses`);
    isFailure = (status) => set.has(status);
  }
  const timeoutMs = options.timeoutMs;
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)) {
    throw invalid(`${field}.timeoutMs`, timeoutMs, 'a finite number of milliseconds > 0');
  }
  const origin = placeholderOrigin(options.origin ?? 'http://fairpick', `${field}.origin`);
  return { retries, retryOn, retryNonIdempotent, budget, isFailure, timeoutMs: timeoutMs ?? 0, origin };
}

function placeholderOrigin(value: unknown, field: string): string {
  const url = typeof value === 'string' ? parseUrl(value) : null;
  const bare =
    url !== null &&
    url.pathname === '/' &&
    url.search === '' &&
    url.hash === '' &&
    url.username === '' &&
    url.password === '';
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || !bare) {
    throw invalid(field, value, "an http(s) origin with no path, e.g. 'http://fairpick'");
  }
  return url.origin;
}

/** Whether a method may be sent twice under the policy. @internal */
export function mayRetryMethod(policy: RetryPolicy, method: string): boolean {
  return policy.retryNonIdempotent || IDEMPOTENT.has(method.toUpperCase());
}

/** `new URL(value)`, or null when it does not parse. @internal */
export function parseUrl(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

/** Where a backend's requests go: its origin and its base path without a trailing slash. @internal */
export interface BackendTarget {
  readonly origin: string;
  readonly basePath: string;
  readonly protocol: 'http:' | 'https:';
  readonly hostname: string;
  readonly port: number;
}

const targets = new WeakMap<object, BackendTarget>();

/**
 * The target of a backend's `url`, parsed once per backend object.
 * @throws `FairpickError` `ERR_INVALID_ARGUMENT` when `url` is not an absolute http(s) URL.
 */
export function backendTarget(backend: UrlBackend): BackendTarget {
  let target = targets.get(backend);
  if (target !== undefined) return target;
  const url = typeof backend.url === 'string' ? parseUrl(backend.url) : null;
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    throw invalid(
      `backend ${JSON.stringify(backend.id)} url`,
      backend.url,
      "an absolute http(s) URL, e.g. 'http://10.0.0.11:8080'",
    );
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw invalid(
      `backend ${JSON.stringify(backend.id)} url`,
      backend.url,
      'an origin and optional base path, with no query, fragment or credentials',
    );
  }
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  target = { origin: url.origin, basePath: url.pathname.replace(/\/+$/, ''), protocol: url.protocol, hostname, port };
  targets.set(backend, target);
  return target;
}

/** Checks every backend's `url` now, so a typo fails at setup rather than on the first request. @internal */
export function checkBackendUrls(backends: readonly UrlBackend[]): void {
  for (const backend of backends) backendTarget(backend);
}

/** Reads `options` as an object, for functions whose options are optional. @internal */
export function optionsObject<T>(value: T | undefined, field: string): T {
  if (value === undefined) return {} as T;
  if (!isObject(value)) throw invalid(field, value, 'an object');
  return value;
}
