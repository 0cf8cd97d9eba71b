/**
 * `fairpick/undici`: an undici `Dispatcher` that balances each request over a fairpick balancer, with
 * one undici `Pool` per backend. Use it with `undici.request`, `undici.fetch(url, { dispatcher })` or
 * as the global dispatcher. Needs `undici` (>= 7), an optional peer dependency.
 *
 * @packageDocumentation
 */

export type { RetryOptions, UrlBackend } from '../http/policy.js';
export type { RetryBudgetOptions } from '../http/retry-budget.js';
export type { BalancedDispatcherOptions } from './balanced-dispatcher.js';
export { BalancedDispatcher } from './balanced-dispatcher.js';
