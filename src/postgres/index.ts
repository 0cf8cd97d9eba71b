/**
 * `fairpick/postgres`: a {@link PostgresLeaseStore} for the elector of `fairpick`, over a
 * PostgreSQL table, so that electors on several hosts that share a database elect one leader.
 * It works with the `pg` package (a peer dependency, never imported here: pass your own `Pool`
 * or `Client`), and with anything that has pg's `query(text, values)`.
 *
 * @packageDocumentation
 */
export type {
  PgListenClient,
  PgNotification,
  PgQueryable,
  PgQueryResult,
  PostgresLeaseStoreOptions,
} from './store.js';
export { PostgresLeaseStore } from './store.js';
