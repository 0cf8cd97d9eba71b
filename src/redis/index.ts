/**
 * `fairpick/redis`: a {@link RedisLeaseStore} for `createElector`, so that electors on different
 * hosts campaign through one Redis. Bring your own client, ioredis or node-redis (v4 or later);
 * both are optional peer dependencies and neither is imported by fairpick itself.
 *
 * @packageDocumentation
 */
export type {
  IoredisClientLike,
  IoredisSubscriberLike,
  NodeRedisClientLike,
  NodeRedisSubscriberLike,
  RedisClientLike,
  RedisLeaseStoreOptions,
} from './store.js';
export { RedisLeaseStore } from './store.js';
