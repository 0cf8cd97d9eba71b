/**
 * The proxy's configuration: parsed from JSON and validated whole before anything listens, so a
 * proxy never serves half-configured (HAProxy's `haproxy -c`). Every problem is reported, not
 * only the first, each as `{ path, message }` where the path names the field
 * (`backends[1].weight`) and the message names the value received and what was expected. Unknown
 * keys are errors: a typo must not silently leave a default in place.
 */
import { readFile } from 'node:fs/promises';
import { type AlgorithmName, type BackendSpec, type BalancerOptions, createBalancer, isFairpickError } from 'fairpick';

/** A `host:port` address. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/** One backend, as configured. */
export interface BackendConfig {
  readonly id: string;
  /** The URL as written, e.g. `http://127.0.0.1:8001`. */
  readonly url: string;
  /** Host and port taken from the URL (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
  /** HAProxy's `maxconn`; `null` for no limit. */
  readonly maxInFlight: number | null;
}

/** Where a hash algorithm finds the request's key. */
export type HashKeyConfig =
  | { readonly source: 'header'; readonly name: string }
  | { readonly source: 'cookie'; readonly name: string }
  | { readonly source: 'path' }
  | { readonly source: 'client-ip' };

export interface CheckConfig {
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
  readonly expectStatus: readonly [number, number];
}

export interface PassiveConfig {
  readonly consecutiveFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectedPercent: number;
}

export interface HealthConfig {
  /** Active checks; `null` when `health.check` is absent (no active checks). */
  readonly check: CheckConfig | null;
  /** Passive ejection; `null` when `health.passive` is `false`. */
  readonly passive: PassiveConfig | null;
  readonly slowStartMs: number;
  readonly panicThreshold: number;
}

export interface TimeoutsConfig {
  readonly connectMs: number;
  readonly responseMs: number;
  readonly drainMs: number;
  readonly keepAliveMs: number;
  /** HAProxy's `timeout client`: inactivity of a client the proxy waits on (its body, or reading the response). */
  readonly clientMs: number;
  /** HAProxy's `timeout tunnel`: inactivity in both directions of an upgraded (WebSocket) connection. */
  readonly tunnelMs: number;
}

export interface RetriesConfig {
  readonly count: number;
  readonly redispatch: boolean;
}

/** What every kind of pair has. */
interface PairBase {
  readonly priority: number;
  readonly preempt: boolean;
  readonly standby: 'refuse' | '503';
  readonly onElected: string | null;
  readonly onDemoted: string | null;
}

/** A pair that elects over UDP adverts (keepalived's VRRP): no shared service needed. */
export interface PeerPairConfig extends PairBase {
  readonly elector: 'peer';
  readonly bind: Address;
  readonly peers: readonly Address[];
  readonly advertMs: number;
  readonly secret: string | null;
}

/**
 * A pair that elects through a lease in Redis or PostgreSQL: no split brain when the nodes cannot
 * hear each other, only the node that holds the lease leads.
 */
export interface StorePairConfig extends PairBase {
  readonly elector: 'redis' | 'postgres';
  /** `redis://` / `rediss://`, or `postgres://` / `postgresql://`. */
  readonly url: string;
  /** The lease's name: the proxies campaigning for it form the pair. */
  readonly lease: string;
  readonly leaseMs: number;
  readonly renewMs: number;
  /** Redis: the key prefix (`null`: the store's default). */
  readonly prefix: string | null;
  /** PostgreSQL: the lease table (`null`: the store's default), created when missing. */
  readonly table: string | null;
}

export type PairConfig = PeerPairConfig | StorePairConfig;

export interface LogConfig {
  readonly format: 'text' | 'json';
  readonly access: boolean;
}

/** A validated configuration, every default applied. */
export interface ProxyConfig {
  readonly name: string;
  readonly listen: Address;
  readonly admin: Address;
  readonly backends: readonly BackendConfig[];
  readonly algorithm: AlgorithmName;
  readonly algorithmOptions: Readonly<Record<string, unknown>>;
  /** `null` when absent; only the hash algorithms read it. */
  readonly hashKey: HashKeyConfig | null;
  readonly health: HealthConfig;
  readonly timeouts: TimeoutsConfig;
  readonly retries: RetriesConfig;
  /** `null` when absent: a standalone proxy that always serves. */
  readonly pair: PairConfig | null;
  readonly log: LogConfig;
}

/** One problem found in a configuration. */
export interface ConfigIssue {
  /** The field, e.g. `backends[1].weight` or `health.check.intervalMs`; the file's path for a file that cannot be read. */
  readonly path: string;
  /** What is wrong, naming the value received and what was expected. */
  readonly message: string;
}

export type ConfigResult =
  | { readonly ok: true; readonly config: ProxyConfig }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[] };

export const ALGORITHMS: readonly AlgorithmName[] = [
  'round-robin',
  'random',
  'least-connections',
  'p2c',
  'ring-hash',
  'maglev',
  'rendezvous',
  'ip-hash',
];

/** The algorithms that hash a key taken from the request (`hashKey`); `ip-hash` hashes the client address itself. */
export const KEYED_ALGORITHMS: ReadonlySet<AlgorithmName> = new Set(['ring-hash', 'maglev', 'rendezvous']);

/**
 * The options each algorithm accepts in `algorithmOptions` (fairpick's own table; fairpick
 * validates the values when the balancer is built below).
 */
const ALGORITHM_OPTIONS: Readonly<Record<AlgorithmName, readonly string[]>> = {
  'round-robin': [],
  random: [],
  'least-connections': [],
  p2c: ['load', 'decayMs'],
  'ring-hash': ['vnodes', 'maxRingSize', 'boundedLoad'],
  maglev: ['tableSize', 'boundedLoad'],
  rendezvous: ['boundedLoad'],
  'ip-hash': ['method', 'ipv4Prefix', 'ipv6Prefix', 'vnodes', 'maxRingSize', 'tableSize', 'boundedLoad'],
};

/** setTimeout's limit: a longer delay would fire at once. */
const MAX_MS = 2_147_483_647;

/** Reads, parses and validates a configuration file. */
export async function loadConfig(file: string): Promise<ConfigResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    return {
      ok: false,
      issues: [{ path: file, message: `cannot read the file (${code}): ${(error as Error).message}` }],
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return { ok: false, issues: [{ path: file, message: `is not valid JSON: ${(error as Error).message}` }] };
  }
  return parseConfig(raw);
}

/** Validates a configuration object (parsed JSON) and applies the defaults. */
export function parseConfig(raw: unknown): ConfigResult {
  const v = new Validator();
  const config = v.root(raw);
  if (config === undefined || v.issues.length > 0) return { ok: false, issues: v.issues };
  // Build the balancer once, without starting anything that outlives this call, so that what
  // fairpick itself refuses (an option value, a weight) is reported as a config error now
  // rather than as a crash after the proxy has started listening.
  try {
    const specs = config.backends.map((b) => {
      const spec = { id: b.id, weight: b.weight, backup: b.backup };
      return b.maxInFlight === null ? spec : { ...spec, maxInFlight: b.maxInFlight };
    });
    createBalancer(balancerOptions(config, specs, async () => true)).close();
  } catch (error) {
    if (!isFairpickError(error)) throw error;
    return { ok: false, issues: [fromFairpickError(error.message)] };
  }
  return { ok: true, config };
}

/** The line the CLI prints for an issue. */
export function formatIssue(issue: ConfigIssue): string {
  return `config error: ${issue.path}: ${issue.message}`;
}

/**
 * The options of `createBalancer` for a configuration: the proxy's backends, the algorithm with
 * its options, and health tracking with the given probe.
 */
export function balancerOptions<B extends BackendSpec>(
  config: ProxyConfig,
  backends: readonly B[],
  probe: (backend: B, signal: AbortSignal) => Promise<boolean>,
): BalancerOptions<B> {
  const { check, passive, slowStartMs, panicThreshold } = config.health;
  const health = {
    passive: passive ?? false,
    slowStartMs,
    panicThreshold,
    ...(check === null
      ? {}
      : {
          active: {
            probe,
            intervalMs: check.intervalMs,
            timeoutMs: check.timeoutMs,
            rise: check.rise,
            fall: check.fall,
          },
        }),
  };
  // algorithmOptions were checked against ALGORITHM_OPTIONS for this algorithm, so the object is
  // one arm of the BalancerOptions union; TypeScript cannot follow that through a record.
  return { ...config.algorithmOptions, algorithm: config.algorithm, backends, health } as BalancerOptions<B>;
}

/** A fairpick validation message (`options.tableSize must be ...; received 100`) as a config issue. */
function fromFairpickError(message: string): ConfigIssue {
  const match = /^options\.([\w.[\]]+) ([\s\S]*)$/.exec(message);
  if (match === null) return { path: 'algorithmOptions', message };
  const field = match[1] as string;
  const rest = match[2] as string;
  let path: string;
  if (field === 'algorithm' || field.startsWith('backends')) path = field;
  else if (field.startsWith('health.active')) path = `health.check${field.slice('health.active'.length)}`;
  else if (field.startsWith('health')) path = field;
  else path = `algorithmOptions.${field}`;
  return { path, message: rest };
}

/** A short rendering of a received value, for messages. */
export function describe(value: unknown): string {
  if (value === undefined) return 'nothing (the field is missing)';
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  return `an ${typeof value}`;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** `name` when the config leaves it out. */
export const DEFAULT_NAME = 'proxy';

const NAME_EXPECTED = "a name of letters, digits, '.', '_' and '-' (e.g. \"web1\")";
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const ROOT_KEYS = [
  'name',
  'listen',
  'admin',
  'backends',
  'algorithm',
  'algorithmOptions',
  'hashKey',
  'health',
  'timeouts',
  'retries',
  'pair',
  'log',
] as const;
const BACKEND_KEYS = ['id', 'url', 'weight', 'backup', 'maxInFlight'] as const;
const HEALTH_KEYS = ['check', 'passive', 'slowStartMs', 'panicThreshold'] as const;
const CHECK_KEYS = ['path', 'intervalMs', 'timeoutMs', 'rise', 'fall', 'expectStatus'] as const;
const PASSIVE_KEYS = ['consecutiveFailures', 'baseEjectionMs', 'maxEjectionMs', 'maxEjectedPercent'] as const;
const TIMEOUT_KEYS = ['connectMs', 'responseMs', 'drainMs', 'keepAliveMs', 'clientMs', 'tunnelMs'] as const;
const RETRY_KEYS = ['count', 'redispatch'] as const;
const PAIR_COMMON_KEYS = ['elector', 'priority', 'preempt', 'standby', 'onElected', 'onDemoted'] as const;
/** The fields each elector takes besides the common ones. */
const PAIR_ELECTOR_KEYS = {
  peer: ['bind', 'peers', 'advertMs', 'secret'],
  redis: ['url', 'lease', 'leaseMs', 'renewMs', 'prefix'],
  postgres: ['url', 'lease', 'leaseMs', 'renewMs', 'table'],
} as const;
const PAIR_KEYS: readonly string[] = [...new Set([...PAIR_COMMON_KEYS, ...Object.values(PAIR_ELECTOR_KEYS).flat()])];
/** The lease a store-backed pair campaigns for, unless `pair.lease` names another. */
export const DEFAULT_LEASE = 'fairpick-proxy';
const LOG_KEYS = ['format', 'access'] as const;

/** Collects issues while it reads; each reader returns a usable value (a default) even after an issue. */
class Validator {
  readonly issues: ConfigIssue[] = [];

  fail(path: string, value: unknown, expected: string): void {
    this.issues.push({ path, message: `must be ${expected}; received ${describe(value)}` });
  }

  /** An object with only the allowed keys; `undefined` (after an issue) when it is not an object. */
  object(value: unknown, path: string, allowed: readonly string[], what: string): Json | undefined {
    if (!isObject(value)) {
      this.fail(path, value, `an object (${what})`);
      return undefined;
    }
    for (const key of Object.keys(value)) {
      if (!allowed.includes(key)) {
        const at = path === '' ? key : `${path}.${key}`;
        this.issues.push({
          path: at,
          message: `is not a known field (a typo?); expected only ${allowed.join(', ')}; received ${describe(value[key])}`,
        });
      }
    }
    return value;
  }

  integer(value: unknown, path: string, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.fail(path, value, `an integer from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }

  number(value: unknown, path: string, fallback: number, min: number, max: number): number {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
      this.fail(path, value, `a number from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }

  boolean(value: unknown, path: string, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') {
      this.fail(path, value, 'true or false');
      return fallback;
    }
    return value;
  }

  string(value: unknown, path: string, expected = 'a non-empty string'): string | null {
    if (value === undefined) return null;
    if (typeof value !== 'string' || value.trim().length === 0) {
      this.fail(path, value, expected);
      return null;
    }
    return value;
  }

  oneOf<T extends string>(value: unknown, path: string, choices: readonly T[], fallback: T): T {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
      this.fail(path, value, `one of ${choices.map((c) => `"${c}"`).join(', ')}`);
      return fallback;
    }
    return value as T;
  }

  /** `host:port`; with `allowZero` port 0 (any free port) is accepted. */
  address(value: unknown, path: string, allowZero: boolean): Address {
    const min = allowZero ? 0 : 1;
    const expected = `"host:port" with a port from ${min} to 65535 (e.g. "127.0.0.1:8080" or "[::1]:8080")`;
    const parsed = typeof value === 'string' ? parseAddress(value) : undefined;
    if (parsed === undefined || parsed.port < min) {
      this.fail(path, value, expected);
      return { host: '127.0.0.1', port: 0 };
    }
    return parsed;
  }

  root(raw: unknown): ProxyConfig | undefined {
    const o = this.object(raw, '', ROOT_KEYS, 'the proxy configuration');
    if (o === undefined) {
      this.issues.splice(0, this.issues.length, {
        path: '(root)',
        message: `must be an object (the proxy configuration); received ${describe(raw)}`,
      });
      return undefined;
    }
    let name = DEFAULT_NAME;
    if (o.name !== undefined) {
      if (typeof o.name === 'string' && NAME.test(o.name)) name = o.name;
      else this.fail('name', o.name, NAME_EXPECTED);
    }
    if (o.listen === undefined) this.fail('listen', undefined, 'the service address, "host:port" (required)');
    if (o.admin === undefined) this.fail('admin', undefined, 'the admin (stats) address, "host:port" (required)');
    const pairGiven = o.pair !== undefined;
    // With a pair the service address is shared with the peer (a virtual IP): "any free port" cannot be shared.
    const listen =
      o.listen === undefined ? { host: '127.0.0.1', port: 0 } : this.address(o.listen, 'listen', !pairGiven);
    const admin = o.admin === undefined ? { host: '127.0.0.1', port: 0 } : this.address(o.admin, 'admin', true);
    if (admin.port !== 0 && admin.port === listen.port && admin.host === listen.host) {
      this.fail('admin', o.admin, `an address other than listen (${String(o.listen)})`);
    }
    const backends = this.backends(o.backends);
    const algorithm = this.oneOf<AlgorithmName>(o.algorithm, 'algorithm', ALGORITHMS, 'round-robin');
    const algorithmOptions = this.algorithmOptions(o.algorithmOptions, algorithm);
    const hashKey = o.hashKey === undefined ? null : this.hashKey(o.hashKey);
    if (hashKey === null && o.hashKey === undefined && KEYED_ALGORITHMS.has(algorithm)) {
      this.fail(
        'hashKey',
        undefined,
        `where algorithm "${algorithm}" finds the request's key: { "source": "header" | "cookie", "name": ... } or { "source": "path" | "client-ip" }`,
      );
    }
    return {
      name,
      listen,
      admin,
      backends,
      algorithm,
      algorithmOptions,
      hashKey,
      health: this.health(o.health),
      timeouts: this.timeouts(o.timeouts),
      retries: this.retries(o.retries),
      pair: o.pair === undefined ? null : this.pair(o.pair),
      log: this.log(o.log),
    };
  }

  backends(value: unknown): BackendConfig[] {
    if (!Array.isArray(value) || value.length === 0) {
      this.fail('backends', value, 'a non-empty array of { "id", "url" } (required)');
      return [];
    }
    const out: BackendConfig[] = [];
    const seen = new Map<string, number>();
    value.forEach((item: unknown, i) => {
      const path = `backends[${i}]`;
      const o = this.object(item, path, BACKEND_KEYS, '{ "id", "url", "weight", "backup", "maxInFlight" }');
      if (o === undefined) return;
      let id = `#${i}`;
      if (typeof o.id === 'string' && NAME.test(o.id)) {
        id = o.id;
        const first = seen.get(id);
        if (first !== undefined) this.fail(`${path}.id`, o.id, `unique, but backends[${first}] has the same id`);
        else seen.set(id, i);
      } else {
        this.fail(`${path}.id`, o.id, NAME_EXPECTED);
      }
      const url = this.backendUrl(o.url, `${path}.url`);
      const weight = this.number(o.weight, `${path}.weight`, 1, 0, 1_000_000);
      const backup = this.boolean(o.backup, `${path}.backup`, false);
      const maxInFlight =
        o.maxInFlight === undefined ? null : this.integer(o.maxInFlight, `${path}.maxInFlight`, 1, 1, 1_000_000_000);
      out.push({ id, url: url.url, host: url.host, port: url.port, weight, backup, maxInFlight });
    });
    return out;
  }

  backendUrl(value: unknown, path: string): { url: string; host: string; port: number } {
    const fallback = { url: 'http://127.0.0.1:1', host: '127.0.0.1', port: 1 };
    const expected = 'an http:// URL with a host and a port and no path, e.g. "http://127.0.0.1:8001"';
    if (typeof value !== 'string') {
      this.fail(path, value, expected);
      return fallback;
    }
    if (/^https:/i.test(value)) {
      this.issues.push({
        path,
        message: `uses https, which this example proxy does not support (it speaks plain HTTP to backends; terminate TLS on the backend side or add it); expected ${expected}; received ${describe(value)}`,
      });
      return fallback;
    }
    // The URL class would drop an explicit default port (":80"), so the port is read from the text.
    const match = /^http:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(value);
    const port = match === null ? Number.NaN : Number(match[2]);
    if (match === null || port < 1 || port > 65535) {
      this.fail(path, value, expected);
      return fallback;
    }
    const host = (match[1] as string).replace(/^\[|\]$/g, '');
    return { url: value.replace(/\/$/, ''), host, port };
  }

  algorithmOptions(value: unknown, algorithm: AlgorithmName): Json {
    if (value === undefined) return {};
    const allowed = ALGORITHM_OPTIONS[algorithm];
    if (!isObject(value)) {
      this.fail('algorithmOptions', value, `an object (options of algorithm "${algorithm}")`);
      return {};
    }
    for (const key of Object.keys(value)) {
      if (allowed.includes(key)) continue;
      const owners = ALGORITHMS.filter((a) => ALGORITHM_OPTIONS[a].includes(key)).map((a) => `"${a}"`);
      const known = owners.length === 0 ? 'is not an option of any algorithm' : `applies to ${owners.join(', ')}`;
      const takes =
        allowed.length === 0
          ? `algorithm "${algorithm}" takes no options`
          : `"${algorithm}" takes ${allowed.join(', ')}`;
      this.issues.push({
        path: `algorithmOptions.${key}`,
        message: `${known}; ${takes}; received ${describe(value[key])}`,
      });
    }
    return value;
  }

  hashKey(value: unknown): HashKeyConfig | null {
    const expected = '{ "source": "header" | "cookie", "name": ... } or { "source": "path" | "client-ip" }';
    const o = this.object(value, 'hashKey', ['source', 'name'], expected);
    if (o === undefined) return null;
    const source = o.source;
    if (source === 'header' || source === 'cookie') {
      const name = o.name;
      const valid = source === 'header' ? HEADER_NAME : /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
      if (typeof name !== 'string' || !valid.test(name)) {
        this.fail('hashKey.name', name, `the ${source} name to hash, e.g. "${source === 'header' ? 'x-user' : 'sid'}"`);
        return null;
      }
      return { source, name: source === 'header' ? name.toLowerCase() : name };
    }
    if (source === 'path' || source === 'client-ip') {
      if (o.name !== undefined) this.fail('hashKey.name', o.name, `absent for source "${source}"`);
      return { source };
    }
    this.fail('hashKey.source', source, 'one of "header", "cookie", "path", "client-ip"');
    return null;
  }

  health(value: unknown): HealthConfig {
    const defaults: HealthConfig = {
      check: null,
      passive: this.passive(undefined),
      slowStartMs: 0,
      panicThreshold: 0.5,
    };
    if (value === undefined) return defaults;
    const o = this.object(value, 'health', HEALTH_KEYS, '{ "check", "passive", "slowStartMs", "panicThreshold" }');
    if (o === undefined) return defaults;
    return {
      check: o.check === undefined ? null : this.check(o.check),
      passive: o.passive === false ? null : this.passive(o.passive),
      slowStartMs: this.integer(o.slowStartMs, 'health.slowStartMs', 0, 0, MAX_MS),
      panicThreshold: this.number(o.panicThreshold, 'health.panicThreshold', 0.5, 0, 1),
    };
  }

  check(value: unknown): CheckConfig | null {
    const o = this.object(value, 'health.check', CHECK_KEYS, 'the active check');
    if (o === undefined) return null;
    let path = '/health';
    if (o.path !== undefined) {
      if (typeof o.path === 'string' && o.path.startsWith('/') && !/\s/.test(o.path)) path = o.path;
      else this.fail('health.check.path', o.path, 'a path starting with "/", e.g. "/health"');
    }
    const intervalMs = this.integer(o.intervalMs, 'health.check.intervalMs', 2000, 10, MAX_MS);
    const timeoutMs = this.integer(o.timeoutMs, 'health.check.timeoutMs', Math.min(1000, intervalMs / 2), 1, MAX_MS);
    if (timeoutMs >= intervalMs)
      this.fail('health.check.timeoutMs', o.timeoutMs, `less than intervalMs (${intervalMs})`);
    let expectStatus: readonly [number, number] = [200, 399];
    if (o.expectStatus !== undefined) {
      const e = o.expectStatus;
      if (
        Array.isArray(e) &&
        e.length === 2 &&
        e.every((s) => Number.isInteger(s) && s >= 100 && s <= 599) &&
        (e[0] as number) <= (e[1] as number)
      ) {
        expectStatus = [e[0] as number, e[1] as number];
      } else {
        this.fail('health.check.expectStatus', e, 'a status range [min, max] within 100-599, e.g. [200, 399]');
      }
    }
    return {
      path,
      intervalMs,
      timeoutMs,
      rise: this.integer(o.rise, 'health.check.rise', 2, 1, 100),
      fall: this.integer(o.fall, 'health.check.fall', 3, 1, 100),
      expectStatus,
    };
  }

  passive(value: unknown): PassiveConfig | null {
    const fallback: PassiveConfig = {
      consecutiveFailures: 5,
      baseEjectionMs: 30_000,
      maxEjectionMs: 300_000,
      maxEjectedPercent: 10,
    };
    if (value === undefined || value === true) return fallback;
    const o = this.object(value, 'health.passive', PASSIVE_KEYS, 'passive ejection settings, or false');
    if (o === undefined) return fallback;
    const baseEjectionMs = this.integer(o.baseEjectionMs, 'health.passive.baseEjectionMs', 30_000, 1, MAX_MS);
    const maxEjectionMs = this.integer(
      o.maxEjectionMs,
      'health.passive.maxEjectionMs',
      Math.max(300_000, baseEjectionMs),
      1,
      MAX_MS,
    );
    if (maxEjectionMs < baseEjectionMs) {
      this.fail('health.passive.maxEjectionMs', o.maxEjectionMs, `at least baseEjectionMs (${baseEjectionMs})`);
    }
    return {
      consecutiveFailures: this.integer(o.consecutiveFailures, 'health.passive.consecutiveFailures', 5, 1, 1_000_000),
      baseEjectionMs,
      maxEjectionMs,
      maxEjectedPercent: this.number(o.maxEjectedPercent, 'health.passive.maxEjectedPercent', 10, 0, 100),
    };
  }

  timeouts(value: unknown): TimeoutsConfig {
    const o = value === undefined ? {} : this.object(value, 'timeouts', TIMEOUT_KEYS, 'timeouts in milliseconds');
    const t = o ?? {};
    return {
      connectMs: this.integer(t.connectMs, 'timeouts.connectMs', 5000, 1, MAX_MS),
      responseMs: this.integer(t.responseMs, 'timeouts.responseMs', 30_000, 1, MAX_MS),
      drainMs: this.integer(t.drainMs, 'timeouts.drainMs', 10_000, 0, MAX_MS),
      keepAliveMs: this.integer(t.keepAliveMs, 'timeouts.keepAliveMs', 4000, 1, MAX_MS),
      clientMs: this.integer(t.clientMs, 'timeouts.clientMs', 30_000, 1, MAX_MS),
      tunnelMs: this.integer(t.tunnelMs, 'timeouts.tunnelMs', 3_600_000, 1, MAX_MS),
    };
  }

  retries(value: unknown): RetriesConfig {
    const o = value === undefined ? {} : this.object(value, 'retries', RETRY_KEYS, '{ "count", "redispatch" }');
    const r = o ?? {};
    return {
      count: this.integer(r.count, 'retries.count', 1, 0, 10),
      redispatch: this.boolean(r.redispatch, 'retries.redispatch', true),
    };
  }

  pair(value: unknown): PairConfig | null {
    const o = this.object(value, 'pair', PAIR_KEYS, 'the active/passive pair');
    if (o === undefined) return null;
    const elector = this.oneOf(o.elector, 'pair.elector', ['peer', 'redis', 'postgres'] as const, 'peer');
    const own: readonly string[] = PAIR_ELECTOR_KEYS[elector];
    for (const key of Object.keys(o)) {
      if ((PAIR_COMMON_KEYS as readonly string[]).includes(key) || own.includes(key)) continue;
      if (!PAIR_KEYS.includes(key)) continue; // reported above as unknown
      const owners = Object.entries(PAIR_ELECTOR_KEYS)
        .filter(([, keys]) => (keys as readonly string[]).includes(key))
        .map(([name]) => `"${name}"`);
      this.issues.push({
        path: `pair.${key}`,
        message: `is a field of the ${owners.join(' and ')} elector, not of "${elector}"; received ${describe(o[key])}`,
      });
    }
    const base: PairBase = {
      priority: this.integer(o.priority, 'pair.priority', 100, 1, 254),
      preempt: this.boolean(o.preempt, 'pair.preempt', true),
      standby: this.oneOf(o.standby, 'pair.standby', ['refuse', '503'] as const, 'refuse'),
      onElected: this.string(o.onElected, 'pair.onElected', 'a shell command (a non-empty string)'),
      onDemoted: this.string(o.onDemoted, 'pair.onDemoted', 'a shell command (a non-empty string)'),
    };
    return elector === 'peer' ? this.peerPair(o, base) : this.storePair(o, elector, base);
  }

  private peerPair(o: Json, base: PairBase): PeerPairConfig {
    if (o.bind === undefined) {
      this.fail('pair.bind', undefined, 'the UDP address this node hears its peers on, "host:port" (required)');
    }
    const bind = o.bind === undefined ? { host: '127.0.0.1', port: 0 } : this.address(o.bind, 'pair.bind', false);
    const peers: Address[] = [];
    if (!Array.isArray(o.peers) || o.peers.length === 0) {
      this.fail('pair.peers', o.peers, 'a non-empty array of the other nodes\' UDP addresses, e.g. ["127.0.0.1:7002"]');
    } else {
      o.peers.forEach((peer: unknown, i) => {
        const address = this.address(peer, `pair.peers[${i}]`, false);
        if (address.port !== 0 && address.port === bind.port && address.host === bind.host) {
          this.fail(`pair.peers[${i}]`, peer, `another node's address, not this node's bind (${String(o.bind)})`);
        }
        peers.push(address);
      });
    }
    return {
      elector: 'peer',
      ...base,
      bind,
      peers,
      advertMs: this.integer(o.advertMs, 'pair.advertMs', 1000, 10, 60_000),
      secret: this.string(o.secret, 'pair.secret', 'a non-empty string shared by the pair'),
    };
  }

  private storePair(o: Json, elector: 'redis' | 'postgres', base: PairBase): StorePairConfig {
    const schemes = elector === 'redis' ? ['redis:', 'rediss:'] : ['postgres:', 'postgresql:'];
    const example = elector === 'redis' ? 'redis://127.0.0.1:6379' : 'postgres://user@127.0.0.1:5432/db';
    const expected = `a ${schemes.map((s) => `${s}//`).join(' or ')} URL, e.g. "${example}" (required)`;
    let url = '';
    const parsed = typeof o.url === 'string' ? parseUrl(o.url) : null;
    if (parsed === null || !schemes.includes(parsed.protocol) || parsed.hostname === '') {
      this.fail('pair.url', typeof o.url === 'string' ? redactPassword(o.url) : o.url, expected);
    } else {
      url = o.url as string;
    }
    const leaseMs = this.integer(o.leaseMs, 'pair.leaseMs', 3000, 100, 600_000);
    const renewDefault = Math.max(10, Math.floor(leaseMs / 3));
    const renewMs = this.integer(o.renewMs, 'pair.renewMs', renewDefault, 10, 600_000);
    // createElector's rule: a leader stops trusting its lease leaseMs / 10 before it can expire,
    // and must have renewed by then.
    if (o.renewMs !== undefined && renewMs >= leaseMs * 0.9) {
      this.fail(
        'pair.renewMs',
        o.renewMs,
        `below 90% of pair.leaseMs (${leaseMs}), so a leader renews before it stops trusting its lease`,
      );
    }
    const identifier = /^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$/;
    const table = this.string(o.table, 'pair.table', 'a table name (letters, digits, _; optionally "schema.table")');
    if (table !== null && !identifier.test(table)) {
      this.fail(
        'pair.table',
        o.table,
        'a table name (letters, digits, _, not starting with a digit; optionally "schema.table")',
      );
    }
    const lease = this.string(o.lease, 'pair.lease', 'a lease name (a non-empty string)') ?? DEFAULT_LEASE;
    if (elector === 'redis' && (lease.endsWith(':token') || lease.endsWith(':reserved'))) {
      this.fail('pair.lease', lease, 'a name not ending in ":token" or ":reserved" (the store keeps those keys)');
    }
    return {
      elector,
      ...base,
      url,
      lease,
      leaseMs,
      renewMs,
      prefix: this.string(o.prefix, 'pair.prefix', 'a key prefix (a non-empty string)'),
      table,
    };
  }

  log(value: unknown): LogConfig {
    const o = value === undefined ? {} : this.object(value, 'log', LOG_KEYS, '{ "format", "access" }');
    const l = o ?? {};
    return {
      format: this.oneOf(l.format, 'log.format', ['text', 'json'] as const, 'text'),
      access: this.boolean(l.access, 'log.access', true),
    };
  }
}

function parseUrl(text: string): URL | null {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}

/**
 * A URL with its password replaced by `***`, for messages and logs: the one in the user info and a
 * `password` query parameter (both ioredis and pg read it). Text that is not a URL gets the
 * `//user:password@` pattern masked.
 */
export function redactPassword(text: string): string {
  const url = parseUrl(text);
  if (url === null) return text.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
  if (url.password !== '') url.password = '***';
  if (url.searchParams.has('password')) url.searchParams.set('password', '***');
  return url.href;
}

/** Parses `host:port` or `[v6]:port`; `undefined` when it is neither. */
export function parseAddress(text: string): Address | undefined {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port > 65535) return undefined;
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port };
}

/** `host:port` as a URL authority (IPv6 bracketed). */
export function authority(address: Address): string {
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}
