import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type ConfigIssue,
  formatIssue,
  loadConfig,
  type ProxyConfig,
  parseConfig,
} from '../../examples/proxy/src/config.js';

type Raw = Record<string, unknown>;

/** The smallest valid configuration; each row below breaks one thing in a fresh copy. */
function base(): Raw {
  return {
    listen: '127.0.0.1:8080',
    admin: '127.0.0.1:9001',
    backends: [
      { id: 'web1', url: 'http://127.0.0.1:8001' },
      { id: 'web2', url: 'http://127.0.0.1:8002' },
    ],
  };
}

function issuesOf(raw: unknown): readonly ConfigIssue[] {
  const result = parseConfig(raw);
  if (result.ok) throw new Error('expected the configuration to be refused');
  return result.issues;
}

/** `raw` without `key`. */
function without(raw: Raw, key: string): Raw {
  return Object.fromEntries(Object.entries(raw).filter(([k]) => k !== key));
}

/** `raw` with `patch` merged into backends[i]. */
function withBackend(raw: Raw, i: number, patch: Raw): Raw {
  return { ...raw, backends: (raw.backends as Raw[]).map((b, j) => (j === i ? { ...b, ...patch } : b)) };
}

const pairFields = { bind: '127.0.0.1:7001', peers: ['127.0.0.1:7002'] };

// [what, how to break the base, the field path, text naming the value, text naming the expectation]
const BAD: readonly [string, (raw: Raw) => Raw, string, string, string][] = [
  ['missing listen', (r) => without(r, 'listen'), 'listen', 'nothing', '"host:port"'],
  ['missing admin', (r) => without(r, 'admin'), 'admin', 'nothing', '"host:port"'],
  [
    'port out of range',
    (r) => ({ ...r, listen: '127.0.0.1:70000' }),
    'listen',
    '"127.0.0.1:70000"',
    'port from 0 to 65535',
  ],
  ['not host:port', (r) => ({ ...r, admin: 'localhost' }), 'admin', '"localhost"', '"host:port"'],
  [
    'port 0 with a pair',
    (r) => ({ ...r, listen: '127.0.0.1:0', pair: pairFields }),
    'listen',
    '"127.0.0.1:0"',
    'port from 1 to 65535',
  ],
  [
    'admin on the service address',
    (r) => ({ ...r, admin: '127.0.0.1:8080' }),
    'admin',
    '"127.0.0.1:8080"',
    'other than listen',
  ],
  ['no backends', (r) => ({ ...r, backends: [] }), 'backends', 'an array of length 0', 'non-empty array'],
  ['backends not an array', (r) => ({ ...r, backends: 'web1' }), 'backends', '"web1"', 'non-empty array'],
  ['duplicate id', (r) => withBackend(r, 1, { id: 'web1' }), 'backends[1].id', '"web1"', 'unique'],
  ['empty id', (r) => withBackend(r, 0, { id: '' }), 'backends[0].id', '""', 'a name of letters'],
  [
    'URL without a port',
    (r) => withBackend(r, 0, { url: 'http://127.0.0.1' }),
    'backends[0].url',
    '"http://127.0.0.1"',
    'with a host and a port',
  ],
  [
    'URL with a path',
    (r) => withBackend(r, 0, { url: 'http://127.0.0.1:8001/app' }),
    'backends[0].url',
    '"http://127.0.0.1:8001/app"',
    'no path',
  ],
  ['not a URL', (r) => withBackend(r, 1, { url: 'web2:8002' }), 'backends[1].url', '"web2:8002"', 'http:// URL'],
  [
    'https URL',
    (r) => withBackend(r, 1, { url: 'https://127.0.0.1:8443' }),
    'backends[1].url',
    '"https://127.0.0.1:8443"',
    'does not support',
  ],
  ['negative weight', (r) => withBackend(r, 1, { weight: -1 }), 'backends[1].weight', '-1', 'a number from 0 to'],
  ['weight as a string', (r) => withBackend(r, 0, { weight: '2' }), 'backends[0].weight', '"2"', 'a number from 0 to'],
  ['maxInFlight 0', (r) => withBackend(r, 0, { maxInFlight: 0 }), 'backends[0].maxInFlight', '0', 'an integer from 1'],
  ['backup not a boolean', (r) => withBackend(r, 0, { backup: 'yes' }), 'backends[0].backup', '"yes"', 'true or false'],
  [
    'unknown algorithm',
    (r) => ({ ...r, algorithm: 'least-conn' }),
    'algorithm',
    '"least-conn"',
    'one of "round-robin"',
  ],
  [
    'unknown key at the top',
    (r) => ({ ...r, listne: '127.0.0.1:8080' }),
    'listne',
    '"127.0.0.1:8080"',
    'expected only name, listen',
  ],
  [
    'unknown key in a backend',
    (r) => withBackend(r, 0, { wieght: 2 }),
    'backends[0].wieght',
    '2',
    'expected only id, url',
  ],
  [
    'unknown key nested',
    (r) => ({ ...r, health: { check: { intervalMS: 500 } } }),
    'health.check.intervalMS',
    '500',
    'expected only path, intervalMs',
  ],
  [
    'option of another algorithm',
    (r) => ({ ...r, algorithmOptions: { vnodes: 100 } }),
    'algorithmOptions.vnodes',
    '100',
    'takes no options',
  ],
  [
    'hash algorithm without hashKey',
    (r) => ({ ...r, algorithm: 'maglev' }),
    'hashKey',
    'nothing',
    'where algorithm "maglev" finds',
  ],
  [
    'bad hashKey.source',
    (r) => ({ ...r, algorithm: 'ring-hash', hashKey: { source: 'query', name: 'q' } }),
    'hashKey.source',
    '"query"',
    '"header", "cookie", "path", "client-ip"',
  ],
  [
    'header hashKey without a name',
    (r) => ({ ...r, algorithm: 'rendezvous', hashKey: { source: 'header' } }),
    'hashKey.name',
    'nothing',
    'the header name',
  ],
  [
    'check timeout not below the interval',
    (r) => ({ ...r, health: { check: { intervalMs: 2000, timeoutMs: 3000 } } }),
    'health.check.timeoutMs',
    '3000',
    'less than intervalMs (2000)',
  ],
  [
    'check rise 0',
    (r) => ({ ...r, health: { check: { rise: 0 } } }),
    'health.check.rise',
    '0',
    'an integer from 1 to 100',
  ],
  [
    'check interval not a number',
    (r) => ({ ...r, health: { check: { intervalMs: 'fast' } } }),
    'health.check.intervalMs',
    '"fast"',
    'an integer from 10',
  ],
  [
    'check path without a slash',
    (r) => ({ ...r, health: { check: { path: 'health' } } }),
    'health.check.path',
    '"health"',
    'starting with "/"',
  ],
  [
    'expectStatus reversed',
    (r) => ({ ...r, health: { check: { expectStatus: [399, 200] } } }),
    'health.check.expectStatus',
    'an array of length 2',
    'a status range [min, max]',
  ],
  [
    'panicThreshold above 1',
    (r) => ({ ...r, health: { panicThreshold: 2 } }),
    'health.panicThreshold',
    '2',
    'a number from 0 to 1',
  ],
  [
    'passive max below base',
    (r) => ({ ...r, health: { passive: { baseEjectionMs: 60000, maxEjectionMs: 1000 } } }),
    'health.passive.maxEjectionMs',
    '1000',
    'at least baseEjectionMs (60000)',
  ],
  ['passive as a string', (r) => ({ ...r, health: { passive: 'off' } }), 'health.passive', '"off"', 'an object'],
  [
    'negative connect timeout',
    (r) => ({ ...r, timeouts: { connectMs: -5 } }),
    'timeouts.connectMs',
    '-5',
    'an integer from 1',
  ],
  [
    'zero client timeout',
    (r) => ({ ...r, timeouts: { clientMs: 0 } }),
    'timeouts.clientMs',
    '0',
    'an integer from 1 to 2147483647',
  ],
  [
    'fractional client timeout',
    (r) => ({ ...r, timeouts: { clientMs: 1.5 } }),
    'timeouts.clientMs',
    '1.5',
    'an integer from 1',
  ],
  [
    'client timeout as a string',
    (r) => ({ ...r, timeouts: { clientMs: '30s' } }),
    'timeouts.clientMs',
    '"30s"',
    'an integer from 1',
  ],
  [
    'negative tunnel timeout',
    (r) => ({ ...r, timeouts: { tunnelMs: -1 } }),
    'timeouts.tunnelMs',
    '-1',
    'an integer from 1 to 2147483647',
  ],
  [
    'tunnel timeout beyond setTimeout',
    (r) => ({ ...r, timeouts: { tunnelMs: 2_147_483_648 } }),
    'timeouts.tunnelMs',
    '2147483648',
    'an integer from 1 to 2147483647',
  ],
  ['too many retries', (r) => ({ ...r, retries: { count: 11 } }), 'retries.count', '11', 'an integer from 0 to 10'],
  [
    'pair without peers',
    (r) => ({ ...r, pair: { bind: '127.0.0.1:7001' } }),
    'pair.peers',
    'nothing',
    'a non-empty array',
  ],
  ['pair without bind', (r) => ({ ...r, pair: { peers: ['127.0.0.1:7002'] } }), 'pair.bind', 'nothing', '"host:port"'],
  [
    'pair peer is itself',
    (r) => ({ ...r, pair: { bind: '127.0.0.1:7001', peers: ['127.0.0.1:7001'] } }),
    'pair.peers[0]',
    '"127.0.0.1:7001"',
    "another node's address",
  ],
  [
    'bad standby',
    (r) => ({ ...r, pair: { ...pairFields, standby: 'drop' } }),
    'pair.standby',
    '"drop"',
    'one of "refuse", "503"',
  ],
  [
    'pair priority 255',
    (r) => ({ ...r, pair: { ...pairFields, priority: 255 } }),
    'pair.priority',
    '255',
    'an integer from 1 to 254',
  ],
  [
    'unknown elector',
    (r) => ({ ...r, pair: { ...pairFields, elector: 'zookeeper' } }),
    'pair.elector',
    '"zookeeper"',
    'one of "peer", "redis", "postgres"',
  ],
  ['redis pair without url', (r) => ({ ...r, pair: { elector: 'redis' } }), 'pair.url', 'nothing', 'a redis:// or'],
  [
    'redis pair with a postgres url',
    (r) => ({ ...r, pair: { elector: 'redis', url: 'postgres://127.0.0.1/db' } }),
    'pair.url',
    '"postgres://127.0.0.1/db"',
    'a redis:// or rediss:// URL',
  ],
  [
    'a store url keeps its password out of the message',
    (r) => ({ ...r, pair: { elector: 'postgres', url: 'mysql://app:hunter2@db:3306/x' } }),
    'pair.url',
    '"mysql://app:***@db:3306/x"',
    'a postgres:// or postgresql:// URL',
  ],
  [
    'a peer field on a store pair',
    (r) => ({ ...r, pair: { elector: 'redis', url: 'redis://127.0.0.1:6379', bind: '127.0.0.1:7001' } }),
    'pair.bind',
    '"127.0.0.1:7001"',
    'is a field of the "peer" elector, not of "redis"',
  ],
  [
    'a redis field on a postgres pair',
    (r) => ({ ...r, pair: { elector: 'postgres', url: 'postgres://127.0.0.1/db', prefix: 'x:' } }),
    'pair.prefix',
    '"x:"',
    'is a field of the "redis" elector, not of "postgres"',
  ],
  [
    'a store field on a peer pair',
    (r) => ({ ...r, pair: { ...pairFields, leaseMs: 3000 } }),
    'pair.leaseMs',
    '3000',
    'is a field of the "redis" and "postgres" elector, not of "peer"',
  ],
  [
    'renewal not below 90% of the lease (createElector keeps a tenth as a margin)',
    (r) => ({ ...r, pair: { elector: 'redis', url: 'redis://127.0.0.1:6379', leaseMs: 3000, renewMs: 2800 } }),
    'pair.renewMs',
    '2800',
    'below 90% of pair.leaseMs (3000)',
  ],
  [
    'a redis lease name that would share the store keys of another',
    (r) => ({ ...r, pair: { elector: 'redis', url: 'redis://127.0.0.1:6379', lease: 'edge:token' } }),
    'pair.lease',
    '"edge:token"',
    'not ending in ":token" or ":reserved"',
  ],
  [
    'a store url that does not parse keeps its password out of the message',
    (r) => ({ ...r, pair: { elector: 'redis', url: 'redis//app:hunter2@db:6379' } }),
    'pair.url',
    '"redis//app:***@db:6379"',
    'a redis:// or rediss:// URL',
  ],
  [
    'bad lease table',
    (r) => ({ ...r, pair: { elector: 'postgres', url: 'postgres://127.0.0.1/db', table: 'leases; drop table x' } }),
    'pair.table',
    '"leases; drop table x"',
    'a table name',
  ],
  ['empty hook', (r) => ({ ...r, pair: { ...pairFields, onElected: '' } }), 'pair.onElected', '""', 'a shell command'],
  ['bad log format', (r) => ({ ...r, log: { format: 'xml' } }), 'log.format', '"xml"', 'one of "text", "json"'],
  // Reported by fairpick itself when the proxy builds the balancer during validation.
  [
    'maglev table size not prime',
    (r) => ({ ...r, algorithm: 'maglev', hashKey: { source: 'path' }, algorithmOptions: { tableSize: 100 } }),
    'algorithmOptions.tableSize',
    '100',
    'a prime number',
  ],
  [
    'p2c load unknown',
    (r) => ({ ...r, algorithm: 'p2c', algorithmOptions: { load: 'cpu' } }),
    'algorithmOptions.load',
    '"cpu"',
    "'in-flight' or 'peak-ewma'",
  ],
];

describe('config validation', () => {
  it.each(BAD)('refuses %s', (_what, breakIt, path, value, expected) => {
    const issues = issuesOf(breakIt(base()));
    expect(issues.map((i) => i.path)).toEqual([path]);
    const message = (issues[0] as ConfigIssue).message;
    expect(message).toContain(value);
    expect(message).toContain(expected);
    expect(message).not.toContain('hunter2'); // the password of the store rows
  });

  it('reports every problem at once, not only the first', () => {
    const raw = { ...withBackend(without(base(), 'listen'), 1, { weight: -3 }), retries: { count: 'two' } };
    expect(issuesOf(raw).map((i) => i.path)).toEqual(['listen', 'backends[1].weight', 'retries.count']);
  });

  it('refuses a document that is not an object', () => {
    expect(issuesOf([base()])).toEqual([
      { path: '(root)', message: 'must be an object (the proxy configuration); received an array of length 1' },
    ]);
  });

  it('prints an issue as "config error: <path>: <message>"', () => {
    expect(formatIssue({ path: 'backends[1].weight', message: 'must be x; received -1' })).toBe(
      'config error: backends[1].weight: must be x; received -1',
    );
  });

  it('applies every default to a minimal configuration', () => {
    const result = parseConfig(base());
    const expected: ProxyConfig = {
      name: 'proxy',
      listen: { host: '127.0.0.1', port: 8080 },
      admin: { host: '127.0.0.1', port: 9001 },
      backends: [
        {
          id: 'web1',
          url: 'http://127.0.0.1:8001',
          host: '127.0.0.1',
          port: 8001,
          weight: 1,
          backup: false,
          maxInFlight: null,
        },
        {
          id: 'web2',
          url: 'http://127.0.0.1:8002',
          host: '127.0.0.1',
          port: 8002,
          weight: 1,
          backup: false,
          maxInFlight: null,
        },
      ],
      algorithm: 'round-robin',
      algorithmOptions: {},
      hashKey: null,
      health: {
        check: null,
        passive: { consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectedPercent: 10 },
        slowStartMs: 0,
        panicThreshold: 0.5,
      },
      timeouts: {
        connectMs: 5000,
        responseMs: 30_000,
        drainMs: 10_000,
        keepAliveMs: 4000,
        clientMs: 30_000,
        tunnelMs: 3_600_000,
      },
      retries: { count: 1, redispatch: true },
      pair: null,
      log: { format: 'text', access: true },
    };
    expect(result).toEqual({ ok: true, config: expected });
  });

  it('reads a configuration with every field', () => {
    const raw = {
      name: 'haproxy01',
      listen: '127.0.0.1:8080',
      admin: '[::1]:9001',
      backends: [
        { id: 'web1', url: 'http://127.0.0.1:8001', weight: 3, backup: false, maxInFlight: 100 },
        { id: 'web2', url: 'http://[::1]:8002/' },
        { id: 'spare', url: 'http://localhost:8003', weight: 0.5, backup: true },
      ],
      algorithm: 'maglev',
      algorithmOptions: { tableSize: 251, boundedLoad: 1.25 },
      hashKey: { source: 'header', name: 'X-User' },
      health: {
        check: { path: '/healthz', intervalMs: 500, timeoutMs: 200, rise: 3, fall: 4, expectStatus: [200, 299] },
        passive: { consecutiveFailures: 7, baseEjectionMs: 1000, maxEjectionMs: 9000, maxEjectedPercent: 50 },
        slowStartMs: 20_000,
        panicThreshold: 0.25,
      },
      timeouts: {
        connectMs: 1000,
        responseMs: 15_000,
        drainMs: 3000,
        keepAliveMs: 2000,
        clientMs: 5000,
        tunnelMs: 60_000,
      },
      retries: { count: 3, redispatch: false },
      pair: {
        elector: 'peer',
        bind: '127.0.0.1:7001',
        peers: ['127.0.0.1:7002', '127.0.0.1:7003'],
        priority: 150,
        preempt: false,
        advertMs: 500,
        standby: '503',
        onElected: 'ip addr add 192.0.2.10/24 dev eth0',
        onDemoted: 'ip addr del 192.0.2.10/24 dev eth0',
        secret: 's3cret',
      },
      log: { format: 'json', access: false },
    };
    const expected: ProxyConfig = {
      name: 'haproxy01',
      listen: { host: '127.0.0.1', port: 8080 },
      admin: { host: '::1', port: 9001 },
      backends: [
        {
          id: 'web1',
          url: 'http://127.0.0.1:8001',
          host: '127.0.0.1',
          port: 8001,
          weight: 3,
          backup: false,
          maxInFlight: 100,
        },
        { id: 'web2', url: 'http://[::1]:8002', host: '::1', port: 8002, weight: 1, backup: false, maxInFlight: null },
        {
          id: 'spare',
          url: 'http://localhost:8003',
          host: 'localhost',
          port: 8003,
          weight: 0.5,
          backup: true,
          maxInFlight: null,
        },
      ],
      algorithm: 'maglev',
      algorithmOptions: { tableSize: 251, boundedLoad: 1.25 },
      hashKey: { source: 'header', name: 'x-user' },
      health: {
        check: { path: '/healthz', intervalMs: 500, timeoutMs: 200, rise: 3, fall: 4, expectStatus: [200, 299] },
        passive: { consecutiveFailures: 7, baseEjectionMs: 1000, maxEjectionMs: 9000, maxEjectedPercent: 50 },
        slowStartMs: 20_000,
        panicThreshold: 0.25,
      },
      timeouts: {
        connectMs: 1000,
        responseMs: 15_000,
        drainMs: 3000,
        keepAliveMs: 2000,
        clientMs: 5000,
        tunnelMs: 60_000,
      },
      retries: { count: 3, redispatch: false },
      pair: {
        elector: 'peer',
        bind: { host: '127.0.0.1', port: 7001 },
        peers: [
          { host: '127.0.0.1', port: 7002 },
          { host: '127.0.0.1', port: 7003 },
        ],
        priority: 150,
        preempt: false,
        advertMs: 500,
        standby: '503',
        onElected: 'ip addr add 192.0.2.10/24 dev eth0',
        onDemoted: 'ip addr del 192.0.2.10/24 dev eth0',
        secret: 's3cret',
      },
      log: { format: 'json', access: false },
    };
    expect(parseConfig(raw)).toEqual({ ok: true, config: expected });
  });

  it('reads a store-backed pair, with the defaults of createElector', () => {
    const redis = parseConfig({ ...base(), pair: { elector: 'redis', url: 'redis://10.0.0.5:6379/2' } });
    expect(redis.ok && redis.config.pair).toEqual({
      elector: 'redis',
      url: 'redis://10.0.0.5:6379/2',
      lease: 'fairpick-proxy',
      leaseMs: 3000,
      renewMs: 1000,
      prefix: null,
      table: null,
      priority: 100,
      preempt: true,
      standby: 'refuse',
      onElected: null,
      onDemoted: null,
    });
    const pg = parseConfig({
      ...base(),
      pair: {
        elector: 'postgres',
        url: 'postgresql://proxy@db.internal:5432/ha',
        lease: 'edge-pair',
        leaseMs: 6000,
        renewMs: 1500,
        table: 'ha.leases',
        priority: 150,
        preempt: false,
        standby: '503',
      },
    });
    expect(pg.ok && pg.config.pair).toMatchObject({
      elector: 'postgres',
      lease: 'edge-pair',
      leaseMs: 6000,
      renewMs: 1500,
      table: 'ha.leases',
      prefix: null,
      priority: 150,
      preempt: false,
      standby: '503',
    });
  });

  it('turns passive ejection off with false and accepts port 0 without a pair', () => {
    const raw = { ...base(), listen: '127.0.0.1:0', admin: '127.0.0.1:0', health: { passive: false } };
    const result = parseConfig(raw);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.health.passive).toBeNull();
    expect(result.config.listen).toEqual({ host: '127.0.0.1', port: 0 });
  });

  it('accepts the two configurations npm start uses', async () => {
    for (const name of ['haproxy01', 'haproxy02']) {
      const result = await loadConfig(new URL(`../../examples/proxy/configs/${name}.json`, import.meta.url).pathname);
      expect(result.ok && result.config.name).toBe(name);
    }
  });
});

describe('config files', () => {
  it('names the file when it cannot be read or is not JSON', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fairpick-proxy-config-'));
    try {
      const missing = join(dir, 'missing.json');
      const unreadable = await loadConfig(missing);
      expect(unreadable.ok).toBe(false);
      if (!unreadable.ok) {
        expect(unreadable.issues).toHaveLength(1);
        expect(unreadable.issues[0]?.path).toBe(missing);
        expect(unreadable.issues[0]?.message).toContain('ENOENT');
      }
      const broken = join(dir, 'broken.json');
      await writeFile(broken, '{ "listen": "127.0.0.1:8080", }');
      const invalid = await loadConfig(broken);
      expect(invalid.ok).toBe(false);
      if (!invalid.ok) {
        expect(invalid.issues[0]?.path).toBe(broken);
        expect(invalid.issues[0]?.message).toContain('is not valid JSON');
      }
      const good = join(dir, 'good.json');
      await writeFile(good, JSON.stringify(base()));
      expect((await loadConfig(good)).ok).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
