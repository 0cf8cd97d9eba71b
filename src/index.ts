/**
 * fairpick: load balancing as a library. Pickers as HAProxy, NGINX and Envoy have them, with no
 * runtime dependency and no Node built-in, so it runs in Node, Deno, Bun and browsers.
 *
 * @packageDocumentation
 */
export { createBalancer } from './balancer.js';
export type { DemotedEvent, ElectedEvent, Elector, ElectorEvents, ElectorOptions } from './election/elector.js';
export { createElector } from './election/elector.js';
export type { MemoryLeaseStoreOptions } from './election/memory-store.js';
export { MemoryLeaseStore } from './election/memory-store.js';
export type { LeaseChallenger, LeaseGrant, LeaseRecord, LeaseStore } from './election/store.js';
export type { FairpickErrorCode } from './errors.js';
export { FairpickError, isFairpickError } from './errors.js';
export { fmix32, murmur3, murmur3Bytes } from './hash/murmur3.js';
export type { ActiveHealthOptions, HealthOptions, PassiveHealthOptions } from './health/options.js';
export type {
  AlgorithmName,
  BalancerOptions,
  CommonOptions,
  CustomPickerOptions,
  HashOptions,
  IpHashOptions,
  LeastConnectionsOptions,
  MaglevOptions,
  P2COptions,
  RandomOptions,
  RendezvousOptions,
  RingHashOptions,
  RoundRobinOptions,
} from './options.js';
export type { P2CLoad } from './pickers/p2c.js';
export type { Picker, PickerEndpoint, PickerEnvironment, PickerFactory, PickRequest } from './pickers/picker.js';
export type { Timers } from './timers.js';
export type {
  BackendSpec,
  BackendStats,
  BackendUpdate,
  Balancer,
  BalancerEventName,
  BalancerEvents,
  CheckResult,
  HealthEvent,
  HealthReason,
  HealthState,
  PanicEvent,
  PickContext,
  ReleaseResult,
  Slot,
} from './types.js';
