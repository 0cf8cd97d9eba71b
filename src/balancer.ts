import { ALGORITHM_OPTIONS, builtInFactory } from './algorithms.js';
import { FairpickError } from './errors.js';
import { Emitter } from './events.js';
import { type HealthSettings, healthSettings } from './health/settings.js';
import { HealthTracker, type TrackerHost } from './health/tracker.js';
import type { AlgorithmName, BalancerOptions } from './options.js';
import type { Picker, PickerEndpoint, PickerEnvironment, PickerFactory, PickRequest } from './pickers/picker.js';
import { type BackendSettings, Endpoint } from './pool.js';
import { createDefaultRandom } from './random.js';
import { monotonicNow } from './runtime.js';
import { hostTimers, type Timers } from './timers.js';
import type {
  BackendSpec,
  BackendStats,
  BackendUpdate,
  Balancer,
  BalancerEventName,
  BalancerEvents,
  PickContext,
  ReleaseResult,
  Slot,
} from './types.js';
import {
  backendList,
  backendSettings,
  invalid,
  isObject,
  requireBoolean,
  requireFunction,
  requireId,
  requireMaxInFlight,
  requirePositiveNumber,
  requireWeight,
} from './validate.js';

/** Finagle's and Linkerd's decay time for the latency EWMA. */
const DEFAULT_DECAY_MS = 10_000;

const COMMON_OPTIONS = ['algorithm', 'backends', 'random', 'now', 'health', 'timers'] as const;
const EVENTS: readonly BalancerEventName[] = ['added', 'removed', 'health', 'panic'];
const HASH_ALGORITHMS: readonly string[] = ['ring-hash', 'maglev', 'rendezvous', 'ip-hash'];
const UPDATE_FIELDS = ['weight', 'backup', 'maxInFlight'];

/**
 * Creates a load balancer over a pool of backends.
 *
 * @example
 * ```ts
 * const lb = createBalancer({
 *   algorithm: 'least-connections',
 *   backends: [
 *     { id: 'web1', url: 'http://127.0.0.1:8081', weight: 2 },
 *     { id: 'web2', url: 'http://127.0.0.1:8082' },
 *   ],
 * });
 * const slot = lb.acquire();
 * try {
 *   // send the request to slot.backend.url
 *   slot.release({ ok: true, latencyMs: 12 });
 * } catch (error) {
 *   slot.release({ ok: false });
 * }
 * ```
 * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` when an option or a backend is invalid.
 */
export function createBalancer<B extends BackendSpec = BackendSpec>(options: BalancerOptions<B>): Balancer<B> {
  return new LoadBalancer<B>(options);
}

/** The per-pick request given to pickers; one instance is reused for every pick. */
class PickState implements PickRequest {
  key: string | Uint8Array | undefined = undefined;
  clientIp: string | undefined = undefined;
  exclude: ReadonlySet<string> | undefined = undefined;

  admits(endpoint: PickerEndpoint): boolean {
    return endpoint.inFlight < endpoint.maxInFlight && (this.exclude === undefined || !this.exclude.has(endpoint.id));
  }
}

interface Normalized<B> {
  readonly health: HealthSettings<B>;
  readonly timers: Timers;
  readonly algorithm: string;
  readonly factory: PickerFactory<B>;
  readonly env: PickerEnvironment;
  readonly decayMs: number;
  readonly backends: readonly B[];
  readonly settings: readonly BackendSettings[];
}

function normalize<B extends BackendSpec>(options: BalancerOptions<B>): Normalized<B> {
  if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
  const algorithm = options.algorithm ?? 'round-robin';
  let factory: PickerFactory<B>;
  let name: string;
  let allowed: readonly string[];
  if (typeof algorithm === 'function') {
    factory = algorithm;
    name = 'custom';
    allowed = [];
  } else if (typeof algorithm === 'string' && Object.hasOwn(ALGORITHM_OPTIONS, algorithm)) {
    name = algorithm;
    allowed = ALGORITHM_OPTIONS[algorithm as AlgorithmName];
    factory = builtInFactory<B>(algorithm as AlgorithmName, options);
  } else {
    throw invalid(
      'options.algorithm',
      algorithm,
      `one of ${Object.keys(ALGORITHM_OPTIONS)
        .map((a) => `'${a}'`)
        .join(', ')}, or a picker factory function`,
    );
  }
  for (const key of Object.keys(options)) {
    if ((COMMON_OPTIONS as readonly string[]).includes(key) || allowed.includes(key)) continue;
    const owners = Object.entries(ALGORITHM_OPTIONS)
      .filter(([, keys]) => keys.includes(key))
      .map(([owner]) => `'${owner}'`);
    throw new FairpickError(
      'ERR_INVALID_ARGUMENT',
      owners.length === 0
        ? `options.${key} is not an option of createBalancer; expected only ${[...COMMON_OPTIONS, ...allowed].join(', ')}`
        : `options.${key} applies to algorithm ${owners.join(' or ')}, not '${name}'`,
    );
  }
  const random =
    options.random === undefined
      ? createDefaultRandom()
      : requireFunction<() => number>(options.random, 'options.random');
  const now = options.now === undefined ? monotonicNow : requireFunction<() => number>(options.now, 'options.now');
  const decayMs =
    options.algorithm === 'p2c' && options.decayMs !== undefined
      ? requirePositiveNumber(options.decayMs, 'options.decayMs')
      : DEFAULT_DECAY_MS;
  const health = healthSettings(options.health);
  const timers = options.timers === undefined ? hostTimers : timersOption(options.timers);
  const backends = options.backends ?? [];
  const settings = backendList(backends, 'options.backends');
  return { algorithm: name, factory, env: { random, now }, decayMs, backends, settings, health, timers };
}

function timersOption(value: unknown): Timers {
  if (!isObject(value) || typeof value.setTimeout !== 'function' || typeof value.clearTimeout !== 'function') {
    throw invalid('options.timers', value, 'an object with setTimeout and clearTimeout functions');
  }
  return value as unknown as Timers;
}

class LoadBalancer<B extends BackendSpec> implements Balancer<B> {
  readonly algorithm: string;
  private readonly factory: PickerFactory<B>;
  private readonly env: PickerEnvironment;
  private readonly decayMs: number;
  /** Every backend by id, in pool order. */
  private endpoints = new Map<string, Endpoint<B>>();
  private list: readonly B[] = Object.freeze([]);
  private primary: Picker<B> | undefined;
  private backup: Picker<B> | undefined;
  private readonly primaryTier = new Tier<B>();
  private readonly backupTier = new Tier<B>();
  private readonly request = new PickState();
  private readonly emitter = new Emitter<BalancerEvents<B>>();
  private readonly health: HealthTracker<B>;
  private readonly panicThreshold: number;
  private panic = false;
  declare [Symbol.dispose]: () => void;

  constructor(options: BalancerOptions<B>) {
    const normalized = normalize(options);
    this.algorithm = normalized.algorithm;
    this.factory = normalized.factory;
    this.env = normalized.env;
    this.decayMs = normalized.decayMs;
    this.panicThreshold = normalized.health.panicThreshold;
    const host: TrackerHost<B> = {
      now: this.env.now,
      random: this.env.random,
      timers: normalized.timers,
      endpoints: () => this.endpoints.values(),
      changed: () => this.rebuild(),
      transitioned: (ep, from, to, reason) => {
        if (this.emitter.has('health')) {
          this.emitter.emit('health', { backend: ep.backend, id: ep.id, from, to, reason, at: this.env.now() });
        }
      },
    };
    this.health = new HealthTracker(normalized.health, host, !HASH_ALGORITHMS.includes(normalized.algorithm));
    const n = normalized.settings.length;
    normalized.settings.forEach((s, i) => {
      const ep = new Endpoint(normalized.backends[i] as B, s, this.decayMs);
      this.endpoints.set(s.id, ep);
      this.health.attach(ep, i / n, false);
    });
    this.rebuild();
  }

  get panicking(): boolean {
    return this.panic;
  }

  get backends(): readonly B[] {
    return this.list;
  }

  pick(ctx?: PickContext): B {
    return this.choose(ctx).backend;
  }

  acquire(ctx?: PickContext): Slot<B> {
    const ep = this.choose(ctx);
    ep.inFlight++;
    this.loadChanged(ep);
    return new AcquiredSlot(this, ep);
  }

  add(backend: B): void {
    const s = backendSettings(backend, 'backend');
    if (this.endpoints.has(s.id)) {
      throw invalid('backend.id', s.id, 'an id not already in the pool');
    }
    const ep = new Endpoint(backend, s, this.decayMs);
    this.endpoints.set(s.id, ep);
    this.health.attach(ep, this.env.random(), true);
    this.changed();
    this.emitter.emit('added', backend);
  }

  remove(id: string): B {
    const ep = this.known(id);
    this.endpoints.delete(id);
    ep.index = -1;
    this.health.detach(ep);
    this.changed();
    this.emitter.emit('removed', ep.backend);
    return ep.backend;
  }

  update(id: string, patch: BackendUpdate): void {
    const ep = this.known(id);
    if (!isObject(patch as unknown)) throw invalid('patch', patch, 'an object with weight, backup or maxInFlight');
    for (const key of Object.keys(patch)) {
      if (!UPDATE_FIELDS.includes(key)) {
        throw new FairpickError(
          'ERR_INVALID_ARGUMENT',
          `patch.${key} cannot be updated; expected only ${UPDATE_FIELDS.join(', ')}`,
        );
      }
    }
    const weight = patch.weight === undefined ? ep.weight : requireWeight(patch.weight, 'patch.weight');
    const backup = patch.backup === undefined ? ep.backup : requireBoolean(patch.backup, 'patch.backup');
    const maxInFlight =
      patch.maxInFlight === undefined
        ? ep.maxInFlight
        : patch.maxInFlight === null
          ? Number.POSITIVE_INFINITY
          : requireMaxInFlight(patch.maxInFlight, 'patch.maxInFlight', 'a positive integer, or null for no limit');
    ep.weight = weight;
    ep.effectiveWeight = weight * ep.rampFactor;
    ep.backup = backup;
    ep.maxInFlight = maxInFlight;
    this.changed();
  }

  markDown(id: string): void {
    this.health.markDown(this.known(id));
  }

  markUp(id: string): void {
    this.health.markUp(this.known(id));
  }

  set(backends: readonly B[]): void {
    const settings = backendList(backends, 'backends');
    const next = new Map<string, Endpoint<B>>();
    const added: B[] = [];
    const joined: Endpoint<B>[] = [];
    let structural = settings.length !== this.endpoints.size;
    const previousOrder = [...this.endpoints.keys()];
    settings.forEach((s, i) => {
      const backend = backends[i] as B;
      const ep = this.endpoints.get(s.id);
      if (ep === undefined) {
        const fresh = new Endpoint(backend, s, this.decayMs);
        next.set(s.id, fresh);
        joined.push(fresh);
        added.push(backend);
        structural = true;
        return;
      }
      if (ep.weight !== s.weight || ep.backup !== s.backup || ep.maxInFlight !== s.maxInFlight) structural = true;
      if (previousOrder[i] !== s.id) structural = true;
      ep.backend = backend;
      ep.weight = s.weight;
      ep.effectiveWeight = s.weight * ep.rampFactor;
      ep.backup = s.backup;
      ep.maxInFlight = s.maxInFlight;
      next.set(s.id, ep);
    });
    const removed: B[] = [];
    for (const [id, ep] of this.endpoints) {
      if (next.has(id)) continue;
      ep.index = -1;
      this.health.detach(ep);
      removed.push(ep.backend);
    }
    this.endpoints = next;
    for (const ep of joined) this.health.attach(ep, this.env.random(), true);
    // Service discovery often delivers the same list again: keep the pickers' state then.
    if (structural) this.changed();
    else this.refreshList();
    for (const b of removed) this.emitter.emit('removed', b);
    for (const b of added) this.emitter.emit('added', b);
  }

  get(id: string): B | undefined {
    return this.endpoints.get(id)?.backend;
  }

  stats(): BackendStats[] {
    const now = this.env.now();
    const out: BackendStats[] = [];
    for (const ep of this.endpoints.values()) {
      out.push({
        id: ep.id,
        weight: ep.weight,
        effectiveWeight: ep.effectiveWeight,
        backup: ep.backup,
        maxInFlight: Number.isFinite(ep.maxInFlight) ? ep.maxInFlight : null,
        inFlight: ep.inFlight,
        picks: ep.picks,
        successes: ep.successes,
        failures: ep.failures,
        state: ep.state,
        pickable: ep.index >= 0,
        ewmaMs: ep.latencyAt(now),
        manualDown: ep.manualDown,
        consecutiveSuccesses: ep.consecutiveSuccesses,
        consecutiveFailures: ep.consecutiveFailures,
        passiveFailures: ep.passiveFailures,
        ejections: ep.ejections,
        ejectedForMs: ep.ejectedUntil > 0 ? Math.max(0, ep.ejectedUntil - now) : 0,
        lastCheck:
          ep.lastCheckOk === undefined ? null : { ok: ep.lastCheckOk, at: ep.lastCheckAt, durationMs: ep.lastCheckMs },
      });
    }
    return out;
  }

  on<E extends BalancerEventName>(event: E, listener: (payload: BalancerEvents<B>[E]) => void): () => void {
    if (!EVENTS.includes(event)) {
      throw invalid('event', event, EVENTS.map((e) => `'${e}'`).join(' or '));
    }
    requireFunction(listener, 'listener');
    return this.emitter.on(event, listener);
  }

  close(): void {
    this.health.close();
  }

  /** @internal Called by a slot when its request ends. */
  released(ep: Endpoint<B>, result: ReleaseResult | undefined): void {
    ep.inFlight--;
    this.loadChanged(ep);
    if (result === undefined) return;
    if (result.latencyMs !== undefined) ep.observeLatency(result.latencyMs, this.env.now());
    if (result.ok === undefined) return;
    if (result.ok) ep.successes++;
    else ep.failures++;
    this.health.observe(ep, result.ok);
  }

  private choose(ctx: PickContext | undefined): Endpoint<B> {
    const request = this.request;
    if (ctx !== undefined) {
      if (typeof ctx !== 'object' || ctx === null) throw invalid('ctx', ctx, 'an object or undefined');
      const exclude = ctx.exclude;
      if (exclude !== undefined && typeof (exclude as { has?: unknown }).has !== 'function') {
        throw invalid('ctx.exclude', exclude, 'a Set of backend ids');
      }
      request.key = ctx.key;
      request.clientIp = ctx.clientIp;
      request.exclude = exclude;
    }
    let chosen: PickerEndpoint<B> | undefined;
    try {
      chosen = this.primary?.pick(request);
      if (chosen === undefined && this.backup !== undefined) chosen = this.backup.pick(request);
    } finally {
      if (ctx !== undefined) {
        request.key = undefined;
        request.clientIp = undefined;
        request.exclude = undefined;
      }
    }
    if (chosen === undefined) throw this.noBackend(ctx);
    const ep = chosen as Endpoint<B>;
    ep.picks++;
    return ep;
  }

  private loadChanged(ep: Endpoint<B>): void {
    if (ep.index < 0) return;
    const picker = ep.backup ? this.backup : this.primary;
    picker?.loadChanged?.(ep);
  }

  private known(id: string): Endpoint<B> {
    requireId(id, 'id');
    const ep = this.endpoints.get(id);
    if (ep === undefined) throw invalid('id', id, 'the id of a backend in the pool');
    return ep;
  }

  private changed(): void {
    this.refreshList();
    this.rebuild();
  }

  private refreshList(): void {
    this.list = Object.freeze(Array.from(this.endpoints.values(), (ep) => ep.backend));
  }

  /**
   * Rebuilds the picker of each tier whose pickable endpoints or their weights changed; a tier
   * left as it was keeps its picker and its state (the round-robin position, the heap). Runs on
   * change, never per pick.
   */
  private rebuild(): void {
    const primary: Endpoint<B>[] = [];
    const backup: Endpoint<B>[] = [];
    let primaries = 0; // primaries with weight > 0 that no operator drained
    for (const ep of this.endpoints.values()) {
      ep.index = -1;
      if (!ep.backup && ep.weight > 0 && !ep.manualDown) primaries++;
      if (ep.pickable) (ep.backup ? backup : primary).push(ep);
    }
    // Panic (Envoy): too few healthy primaries and no healthy backup to fall back on (backups are
    // used before panic, and still only when no primary can be picked, as HAProxy's); a thin,
    // overloaded pool is worse than some errors, so pick among all primaries.
    const panic = primaries > 0 && primary.length < this.panicThreshold * primaries && backup.length === 0;
    if (panic) {
      primary.length = 0;
      for (const ep of this.endpoints.values()) {
        if (!ep.backup && ep.weight > 0 && !ep.manualDown) primary.push(ep);
      }
    }
    primary.forEach((ep, i) => {
      ep.index = i;
    });
    backup.forEach((ep, i) => {
      ep.index = i;
    });
    this.primary = this.primaryTier.update(primary, this.factory, this.env);
    this.backup = this.backupTier.update(backup, this.factory, this.env);
    if (this.list.length !== this.endpoints.size) this.refreshList();
    if (panic !== this.panic) {
      this.panic = panic;
      this.emitter.emit('panic', { active: panic, at: this.env.now() });
    }
  }

  private noBackend(ctx: PickContext | undefined): FairpickError {
    let total = 0;
    let pickable = 0;
    let excluded = 0;
    let full = 0;
    for (const ep of this.endpoints.values()) {
      total++;
      if (ep.index < 0) continue;
      pickable++;
      if (ctx?.exclude?.has(ep.id) === true) excluded++;
      else if (ep.inFlight >= ep.maxInFlight) full++;
    }
    const detail =
      total === 0
        ? 'the pool is empty'
        : `${total} in the pool, ${pickable} pickable (weight > 0 and healthy), ${excluded} of those excluded, ${full} at maxInFlight`;
    return new FairpickError('ERR_NO_BACKEND', `no backend can be chosen: ${detail}`);
  }
}

if (typeof Symbol.dispose === 'symbol') {
  Object.defineProperty(LoadBalancer.prototype, Symbol.dispose, {
    value: LoadBalancer.prototype.close,
    writable: true,
    configurable: true,
  });
}

/** One tier's snapshot: the endpoints and weights its picker was built over. */
class Tier<B> {
  private endpoints: readonly Endpoint<B>[] = [];
  private weights: readonly number[] = [];
  private picker: Picker<B> | undefined;

  /** Returns the tier's picker, built anew only when the endpoints or their weights changed. */
  update(endpoints: Endpoint<B>[], factory: PickerFactory<B>, env: PickerEnvironment): Picker<B> | undefined {
    const same =
      endpoints.length === this.endpoints.length &&
      endpoints.every((ep, i) => ep === this.endpoints[i] && ep.effectiveWeight === this.weights[i]);
    if (same) return this.picker;
    // Build first: if a custom factory throws, the tier keeps its old state and the next change retries.
    const picker = endpoints.length > 0 ? factory(endpoints, env) : undefined;
    this.endpoints = endpoints;
    this.weights = endpoints.map((ep) => ep.effectiveWeight);
    this.picker = picker;
    return picker;
  }
}

/** The slot returned by `acquire`; its release is idempotent. */
class AcquiredSlot<B extends BackendSpec> implements Slot<B> {
  readonly backend: B;
  private done = false;

  constructor(
    private readonly balancer: LoadBalancer<B>,
    private readonly endpoint: Endpoint<B>,
  ) {
    this.backend = endpoint.backend;
  }

  release(result?: ReleaseResult): boolean {
    if (this.done) return false;
    this.done = true;
    let problem: FairpickError | undefined;
    if (result !== undefined) {
      if (!isObject(result as unknown)) {
        problem = invalid('result', result, 'an object with ok and latencyMs, or undefined');
      } else if (result.ok !== undefined && typeof result.ok !== 'boolean') {
        problem = invalid('result.ok', result.ok, 'true or false');
      } else if (
        result.latencyMs !== undefined &&
        (typeof result.latencyMs !== 'number' || !(result.latencyMs >= 0) || !Number.isFinite(result.latencyMs))
      ) {
        problem = invalid('result.latencyMs', result.latencyMs, 'a finite number >= 0');
      }
    }
    // A bad result still counts the request out (a leaked slot would hold maxInFlight forever);
    // only its outcome is not recorded.
    this.balancer.released(this.endpoint, problem === undefined ? result : undefined);
    if (problem !== undefined) throw problem;
    return true;
  }
}
