/**
 * `fairpick/fetch`: a balanced `fetch`. Requests to the placeholder origin go to the backend the
 * balancer picks, with in-flight accounting, passive health, retries on another backend and a retry
 * budget. Uses only the fetch API, so it runs wherever `fetch` does (Node, Deno, Bun, browsers).
 *
 * @packageDocumentation
 */

export type { RetryOptions, UrlBackend } from '../http/policy.js';
export type { RetryBudgetOptions } from '../http/retry-budget.js';
export type { FailedAttempt } from '../http/upstream-error.js';
export { UpstreamError } from '../http/upstream-error.js';
export type { BalancedFetch, BalancedFetchOptions, BalancedRequest, FetchFunction } from './balanced-fetch.js';
export { balancedFetch } from './balanced-fetch.js';
