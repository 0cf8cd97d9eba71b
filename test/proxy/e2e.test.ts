/**
 * End-to-end tests of the example reverse proxy (examples/proxy: its CLI, config validation, JSON
 * log lines, admin endpoints, pair failover and drain), from the outside: real
 * proxy and web server processes on 127.0.0.1, random free ports, JSON log lines on stdout.
 * Nothing here asserts a duration: every wait polls a condition with a generous deadline.
 */
import { readFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  backendState,
  canConnect,
  freeTcpPorts,
  freeUdpPorts,
  httpGet,
  type LogLine,
  type Proc,
  ProcessRegistry,
  proxyReady,
  type Response,
  removeTempDirs,
  sleep,
  spawnProxy,
  startWebServer,
  stats,
  tempDir,
  until,
  type WebServer,
  writeConfig,
} from './support/processes.js';

// Each describe gets a test timeout above the helpers' 20 s deadlines, so that a condition that
// never comes fails with the helper's message (and the process transcript), not a bare timeout.

/** Processes of one test, killed after it whatever happened. */
const registry = new ProcessRegistry();
/** Web servers a describe block shares, killed after it. */
const shared = new ProcessRegistry();

afterEach(async () => {
  await registry.killAll();
});

afterAll(async () => {
  await shared.killAll();
  await registry.killAll();
  await removeTempDirs();
});

type Json = Record<string, unknown>;

function backendsOf(servers: WebServer[], weights: number[] = []): Json[] {
  return servers.map((s, i) => ({
    id: s.name,
    url: s.url,
    ...(weights[i] === undefined ? {} : { weight: weights[i] }),
  }));
}

/** A standalone proxy config on ports picked by the OS, logging JSON. */
function proxyConfig(servers: WebServer[], extra: Json = {}): Json {
  return {
    name: 'e2e',
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    backends: backendsOf(servers),
    log: { format: 'json', access: true },
    ...extra,
  };
}

/** Writes `config`, starts a proxy with it and waits until it serves. */
async function startProxy(config: Json, label = 'proxy') {
  const proc = spawnProxy(registry, await writeConfig(config), [], label);
  const { admin, listen } = await proxyReady(proc);
  return { proc, admin, listen: listen as string };
}

/** `n` sequential GETs with `headers`, returning the `x-served-by` of each (all must be 200). */
async function servedBy(url: string, n: number, headers: Record<string, string> = {}): Promise<string[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      const res = await httpGet(url, { agent, headers });
      expect(res.status, res.body).toBe(200);
      names.push(String(res.headers['x-served-by']));
    }
    return names;
  } finally {
    agent.destroy();
  }
}

function count(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

/** The text of `<td data-field="field">` in `<tr data-backend="id">` of the stats page, tags stripped. */
function htmlCell(html: string, id: string, field: string): string | undefined {
  const row = new RegExp(`<tr[^>]*data-backend="${id}"[^>]*>([\\s\\S]*?)</tr>`).exec(html)?.[1];
  if (row === undefined) return undefined;
  const cell = new RegExp(`<td[^>]*data-field="${field}"[^>]*>([\\s\\S]*?)</td>`).exec(row)?.[1];
  return cell?.replace(/<[^>]*>/g, '').trim();
}

function metricValue(metrics: string, name: string, backend: string): string | undefined {
  const re = new RegExp(`^${name}\\{[^}]*backend="${backend}"[^}]*\\}\\s+(\\S+)$`, 'm');
  return re.exec(metrics)?.[1];
}

/** Deduplicates consecutive repeats: ['a','a','b','a'] -> ['a','b','a']. */
function transitions(xs: string[]): string[] {
  return xs.filter((x, i) => i === 0 || xs[i - 1] !== x);
}

describe.sequential('traffic spreads as configured', { timeout: 60_000 }, () => {
  let web1: WebServer;
  let web2: WebServer;

  beforeAll(async () => {
    [web1, web2] = await Promise.all([startWebServer(shared, 'web1'), startWebServer(shared, 'web2')]);
  });
  afterAll(() => shared.killAll());

  it('round-robin over two web servers: 20 GETs are served 10 and 10', async () => {
    const { listen } = await startProxy(proxyConfig([web1, web2], { algorithm: 'round-robin' }));
    expect(count(await servedBy(`${listen}/`, 20))).toEqual({ web1: 10, web2: 10 });
  });

  it('round-robin with weights 3:1: 40 GETs are served 30 and 10', async () => {
    const config = proxyConfig([web1, web2], { algorithm: 'round-robin', backends: backendsOf([web1, web2], [3, 1]) });
    const { listen } = await startProxy(config);
    expect(count(await servedBy(`${listen}/`, 40))).toEqual({ web1: 30, web2: 10 });
  });

  it('maglev on the x-user header: each user always lands on the same server, and both servers get users', async () => {
    const config = proxyConfig([web1, web2], {
      algorithm: 'maglev',
      hashKey: { source: 'header', name: 'x-user' },
    });
    const { listen } = await startProxy(config);
    const users = Array.from({ length: 20 }, (_, i) => `user-${i}`);
    const first = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      for (const user of users) {
        const [server] = await servedBy(`${listen}/u/${round}`, 1, { 'x-user': user });
        const seen = first.get(user);
        if (seen === undefined) first.set(user, server as string);
        else expect(server, `${user} in round ${round}`).toBe(seen);
      }
    }
    const perServer = count([...first.values()]);
    expect(Object.keys(perServer).sort()).toEqual(['web1', 'web2']);
    // Requests without the key are spread, not all sent to one backend.
    expect(Object.keys(count(await servedBy(`${listen}/anonymous`, 20))).sort()).toEqual(['web1', 'web2']);
  });
});

describe.sequential('a backend that dies', { timeout: 60_000 }, () => {
  it('costs no failed request under load, shows down in stats.json, /metrics and the page, and comes back through slow-start', async () => {
    const web1 = await startWebServer(registry, 'web1');
    const web2 = await startWebServer(registry, 'web2');
    const {
      proc: proxy,
      admin,
      listen,
    } = await startProxy(
      proxyConfig([web1, web2], {
        algorithm: 'round-robin',
        health: {
          // fall 3: a killed backend refuses at once (down after three checks), while one check slowed
          // by a loaded machine does not mark a live backend down.
          check: { path: '/health', intervalMs: 200, timeoutMs: 180, rise: 1, fall: 3 },
          // Short ejections, so that a passive ejection during the kill does not outlast the test.
          passive: { consecutiveFailures: 5, baseEjectionMs: 200, maxEjectionMs: 400 },
          slowStartMs: 2000,
        },
      }),
    );
    await until(async () => (await backendState(admin, 'web1')) === 'healthy', 'web1 is healthy');
    const before = (await httpGet(`${admin}/metrics`)).body;
    expect(before).toMatch(/^# HELP fairpick_backend_up /m);
    expect(before).toMatch(/^# TYPE fairpick_backend_up gauge$/m);
    expect(metricValue(before, 'fairpick_backend_up', 'web1')).toBe('1');

    // Four client loops on keep-alive connections, bounded in count and time.
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const failures: string[] = [];
    const served: string[] = [];
    let stop = false;
    const stopAt = Date.now() + 40_000;
    const loop = async () => {
      while (!stop && Date.now() < stopAt && served.length + failures.length < 20_000) {
        try {
          const res: Response = await httpGet(`${listen}/load`, { agent });
          if (res.status === 200) served.push(String(res.headers['x-served-by']));
          else failures.push(`status ${res.status}: ${res.body.slice(0, 200)}`);
        } catch (error) {
          failures.push(String(error));
        }
      }
    };
    const loops = Promise.all([loop(), loop(), loop(), loop()]);
    try {
      await until(() => served.length >= 100, '100 requests were served before the kill');
      await web1.proc.kill();
      const atKill = served.length;
      await until(() => served.length >= atKill + 300, '300 more requests were served after the kill');
      await until(async () => (await backendState(admin, 'web1')) === 'down', 'stats.json shows web1 down');
    } finally {
      stop = true;
      await loops;
      agent.destroy();
    }
    expect(failures).toEqual([]);
    expect(count(served).web1).toBeGreaterThan(0);
    // The kill did hit requests: some were answered only on a second attempt (elsewhere).
    const retried = await proxy.waitForEvent('access', (e) => Number(e.attempts) >= 2);
    expect(retried).toMatchObject({ status: 200, backend: 'web2' });

    // Shown down everywhere.
    const down = await stats(admin);
    expect(down.backends.find((b) => b.id === 'web1')).toMatchObject({ state: 'down', pickable: false });
    expect(down.backends.find((b) => b.id === 'web2')).toMatchObject({ state: 'healthy', pickable: true });
    const metrics = (await httpGet(`${admin}/metrics`)).body;
    expect(metricValue(metrics, 'fairpick_backend_up', 'web1')).toBe('0');
    expect(metricValue(metrics, 'fairpick_backend_up', 'web2')).toBe('1');
    expect(metrics).toMatch(/^fairpick_backend_state\{[^}]*backend="web1"[^}]*state="down"[^}]*\}\s+1$/m);
    const page = (await httpGet(`${admin}/`)).body;
    expect(htmlCell(page, 'web1', 'state')).toBe('down');
    expect(htmlCell(page, 'web2', 'state')).toBe('healthy');

    // Restarted on the same port: down -> slow-start -> healthy.
    const states: string[] = [];
    await startWebServer(registry, 'web1', web1.port);
    await until(
      async () => {
        const state = (await backendState(admin, 'web1')) ?? 'missing';
        states.push(state);
        return state === 'healthy';
      },
      'web1 is healthy again',
      20_000,
      20,
    );
    const seq = transitions(states);
    expect(seq[0], seq.join(' -> ')).toBe('down');
    expect(seq.slice(-2), seq.join(' -> ')).toEqual(['slow-start', 'healthy']);
    for (const s of seq) expect(['down', 'ejected', 'slow-start', 'healthy']).toContain(s);
  });
});

// ---------------------------------------------------------------------------------------------
// Pairs

interface PairNode {
  proc: Proc;
  admin: string;
  electedFile: string;
}

interface PairPorts {
  service: number;
  admins: [number, number];
  udp: [number, number];
}

async function pairPorts(): Promise<PairPorts> {
  const [service, a0, a1] = (await freeTcpPorts(3)) as [number, number, number];
  const [u0, u1] = (await freeUdpPorts(2)) as [number, number];
  return { service, admins: [a0, a1], udp: [u0, u1] };
}

/** Starts node `i` (0 or 1) of a peer-elected pair sharing one service port (`standby: "refuse"`). */
async function startPairNode(
  i: 0 | 1,
  ports: PairPorts,
  servers: WebServer[],
  priority: number,
  extra: Json = {},
): Promise<PairNode> {
  const dir = await tempDir();
  const electedFile = join(dir, 'elected.log');
  const name = `lb${i}`;
  const config = {
    name,
    listen: `127.0.0.1:${ports.service}`,
    admin: `127.0.0.1:${ports.admins[i]}`,
    backends: backendsOf(servers),
    algorithm: 'round-robin',
    pair: {
      elector: 'peer',
      bind: `127.0.0.1:${ports.udp[i]}`,
      peers: [`127.0.0.1:${ports.udp[1 - i]}`],
      priority,
      // Not shorter: a standby takes over after about 3 adverts + skew of silence, and a loaded
      // machine can pause a process for several hundred ms.
      advertMs: 400,
      standby: 'refuse',
      onElected: `echo "$FAIRPICK_ROLE $FAIRPICK_TOKEN" >> '${electedFile}'`,
    },
    log: { format: 'json', access: true },
    ...extra,
  };
  const proc = spawnProxy(registry, await writeConfig(config), [], name);
  const { admin } = await proxyReady(proc, { service: false });
  return { proc, admin, electedFile };
}

async function readLines(file: string): Promise<string[]> {
  try {
    return (await readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
  } catch {
    return [];
  }
}

function tokenOf(event: LogLine): number {
  expect(typeof event.token, JSON.stringify(event)).toBe('number');
  return event.token as number;
}

/** Starts node 0 (priority 200), waits until it leads and serves, then node 1 (100) as standby. */
async function startPair(servers: WebServer[]) {
  const ports = await pairPorts();
  const a = await startPairNode(0, ports, servers, 200);
  const aRole = await a.proc.waitForEvent('role', (e) => e.role === 'leader');
  await a.proc.waitForEvent('listening');
  const b = await startPairNode(1, ports, servers, 100);
  await until(async () => (await stats(b.admin)).role === 'standby', 'node 1 is standby');
  // Let node 1 hear a few adverts (advertMs 400): a standby learns the leader's epoch from them,
  // and only then can its own token be higher. (Nothing observable says it has heard one.)
  await sleep(1300);
  expect((await stats(b.admin)).role).toBe('standby');
  return { ports, a, b, aToken: tokenOf(aRole) };
}

describe.sequential('a pair of proxies', { timeout: 60_000 }, () => {
  let web1: WebServer;
  let web2: WebServer;

  beforeAll(async () => {
    [web1, web2] = await Promise.all([startWebServer(shared, 'web1'), startWebServer(shared, 'web2')]);
  });
  afterAll(() => shared.killAll());

  it('fails over: the standby takes the leader role with a higher token and serves the shared address', async () => {
    const { ports, a, b, aToken } = await startPair([web1, web2]);
    const service = `http://127.0.0.1:${ports.service}`;
    expect((await httpGet(`${service}/`)).status).toBe(200);
    expect((await stats(a.admin)).role).toBe('leader');
    expect(b.proc.eventsNamed('role').filter((e) => e.role === 'leader')).toEqual([]);
    expect(b.proc.eventsNamed('listening')).toEqual([]);
    await until(async () => (await readLines(a.electedFile)).includes(`leader ${aToken}`), 'onElected ran on node 0');

    const seen = b.proc.events.length;
    await a.proc.kill();
    const bRole = await b.proc.waitForEvent('role', (e) => e.role === 'leader', { from: seen });
    const bToken = tokenOf(bRole);
    expect(bToken).toBeGreaterThan(aToken);
    await b.proc.waitForEvent('listening');
    await until(async () => {
      try {
        return (await httpGet(`${service}/`)).status === 200;
      } catch {
        return false;
      }
    }, 'the shared service address answers 200 again');
    await until(async () => (await readLines(b.electedFile)).includes(`leader ${bToken}`), 'onElected ran on node 1');
    const after = await stats(b.admin);
    expect(after).toMatchObject({ role: 'leader', token: bToken });
  });
});

// ---------------------------------------------------------------------------------------------
// SIGTERM

describe.sequential('SIGTERM drains', { timeout: 60_000 }, () => {
  let web1: WebServer;

  beforeAll(async () => {
    web1 = await startWebServer(shared, 'web1');
  });
  afterAll(() => shared.killAll());

  /**
   * Starts a slow GET through `service` and waits until the proxy at `admin` has it in flight.
   * The response promise comes back wrapped: an async function returning it bare would wait for it.
   */
  async function slowInFlight(service: string, admin: string): Promise<{ slow: Promise<Response> }> {
    const slow = httpGet(`${service}/slow?ms=2000`);
    slow.catch(() => {}); // awaited later; keep an early rejection from being unhandled
    await until(
      async () => (await stats(admin)).backends.reduce((sum, b) => sum + b.inFlight, 0) >= 1,
      'the slow request is in flight at the proxy',
    );
    return { slow };
  }

  it('a standalone proxy finishes the request in flight, refuses new ones and exits 0', async () => {
    const { proc, admin, listen } = await startProxy(proxyConfig([web1]));
    // The same request straight to the backend, for the body the proxy must deliver in full.
    const direct = httpGet(`${web1.url}/slow?ms=2000`);
    const { slow } = await slowInFlight(listen, admin);

    const exit = proc.stop('SIGTERM');
    // The signal came while the request was in flight (the slow request cannot have ended yet).
    expect((await proc.waitForEvent('draining')).inFlight).toBe(1);
    let fresh: string;
    try {
      const res = await httpGet(`${listen}/`);
      fresh = `status ${res.status}`;
    } catch (error) {
      fresh = (error as NodeJS.ErrnoException).code ?? String(error);
    }
    expect(['ECONNREFUSED', 'status 503']).toContain(fresh);
    // The admin server still answers while the proxy drains, and says so.
    const healthz = await httpGet(`${admin}/healthz`);
    expect(healthz.status).toBe(503);
    expect(JSON.parse(healthz.body)).toMatchObject({ status: 'draining' });

    const res = await slow;
    const expected = await direct;
    expect(expected.status).toBe(200);
    expect(res.status).toBe(200);
    expect(res.body).toBe(expected.body);
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(proc.eventsNamed('stopped')).toHaveLength(1);
    const access = proc.eventsNamed('access').filter((e) => e.status === 200);
    expect(access.map((e) => e.path)).toContain('/slow?ms=2000');
  });

  it('the leader of a pair finishes its request and exits 0, and the standby takes over', async () => {
    const { ports, a, b, aToken } = await startPair([web1]);
    const service = `http://127.0.0.1:${ports.service}`;
    const { slow } = await slowInFlight(service, a.admin);

    expect(b.proc.eventsNamed('role').filter((e) => e.role === 'leader')).toEqual([]);
    const seen = b.proc.events.length;
    const exit = a.proc.stop('SIGTERM');
    expect((await a.proc.waitForEvent('draining')).inFlight).toBe(1);
    const bRole = await b.proc.waitForEvent('role', (e) => e.role === 'leader', { from: seen });
    expect(tokenOf(bRole)).toBeGreaterThan(aToken);

    // New requests to the shared address reach the new leader (the old one resigned at once and
    // stopped listening; it need not finish draining first).
    await until(async () => {
      try {
        return (await httpGet(`${service}/after-term`)).status === 200;
      } catch {
        return false;
      }
    }, 'the standby serves the shared address');
    await b.proc.waitForEvent('access', (e) => e.path === '/after-term' && e.status === 200);

    const res = await slow;
    expect(res.status).toBe(200);
    expect(res.body).toMatch(/web1/);
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(a.proc.eventsNamed('access').map((e) => e.path)).toEqual(['/slow?ms=2000']);
  });
});

// ---------------------------------------------------------------------------------------------
// Config files

describe('config files', { timeout: 30_000 }, () => {
  let ports: { listen: number; admin: number };
  const w1: Json = { id: 'web1', url: 'http://127.0.0.1:1' };
  const w2: Json = { id: 'web2', url: 'http://127.0.0.1:2' };

  beforeAll(async () => {
    const [listen, admin] = (await freeTcpPorts(2)) as [number, number];
    ports = { listen, admin };
  });

  const good = (): Json => ({
    listen: `127.0.0.1:${ports.listen}`,
    admin: `127.0.0.1:${ports.admin}`,
    backends: [w1, w2],
    log: { format: 'json' },
  });
  /** The good config without `key`. */
  const without =
    (key: string) =>
    (c: Json): Json =>
      Object.fromEntries(Object.entries(c).filter(([k]) => k !== key));
  /** The good config with `patch` merged in at the top level. */
  const patched =
    (patch: Json) =>
    (c: Json): Json => ({ ...c, ...patch });

  // Each row breaks a good config one way; the message must name `path`.
  const rows: { name: string; path: string | ((file: string) => string); edit: (c: Json) => Json | string }[] = [
    { name: 'not JSON', path: (file) => file, edit: () => '{ "listen": "127.0.0.1:1", ' },
    { name: 'missing listen', path: 'listen', edit: without('listen') },
    { name: 'missing admin', path: 'admin', edit: without('admin') },
    { name: 'empty backends', path: 'backends', edit: patched({ backends: [] }) },
    { name: 'bad weight', path: 'backends[1].weight', edit: patched({ backends: [w1, { ...w2, weight: -2 }] }) },
    { name: 'duplicate id', path: 'backends[1].id', edit: patched({ backends: [w1, { ...w2, id: 'web1' }] }) },
    {
      name: 'bad backend url',
      path: 'backends[0].url',
      edit: patched({ backends: [{ ...w1, url: 'not a url' }, w2] }),
    },
    { name: 'unknown algorithm', path: 'algorithm', edit: patched({ algorithm: 'round-robbin' }) },
    { name: 'unknown top-level key', path: 'listne', edit: patched({ listne: '127.0.0.1:1' }) },
    {
      name: 'unknown nested key',
      path: 'health.check.intervalMS',
      edit: patched({ health: { check: { path: '/health', intervalMS: 100 } } }),
    },
    { name: 'hash algorithm without hashKey', path: 'hashKey', edit: patched({ algorithm: 'maglev' }) },
    {
      name: 'bad health.check.intervalMs',
      path: 'health.check.intervalMs',
      edit: patched({ health: { check: { path: '/health', intervalMs: -5 } } }),
    },
    {
      name: 'bad pair.peers entry',
      path: 'pair.peers[0]',
      edit: patched({
        pair: { elector: 'peer', bind: '127.0.0.1:7001', peers: ['127.0.0.1:notaport'], priority: 100 },
      }),
    },
  ];

  // Concurrently (each process starts in about half a second, mostly tsx): each row has a registry
  // of its own, which the file's afterEach does not touch, and no row may bind the ports they share.
  it.concurrent.each(rows)('rejects a config with $name: exit 1, names the field, listens on nothing', async (row) => {
    const own = new ProcessRegistry();
    try {
      await rejects(row, own);
    } finally {
      await own.killAll();
    }
  });

  async function rejects(row: (typeof rows)[number], own: ProcessRegistry): Promise<void> {
    const file = await writeConfig(row.edit(good()));
    const proc = spawnProxy(own, file);
    const exit = await proc.exited;
    const path = typeof row.path === 'string' ? row.path : row.path(file);
    expect(exit, proc.transcript()).toEqual({ code: 1, signal: null });
    const errors = proc.stderr.split('\n').filter((l) => l.startsWith('config error: '));
    expect(errors.length, proc.stderr).toBeGreaterThan(0);
    expect(
      errors.some((l) => l.startsWith(`config error: ${path}: `)),
      `expected a line "config error: ${path}: ..." in:\n${proc.stderr}`,
    ).toBe(true);
    expect(proc.eventsNamed('listening')).toEqual([]);
    expect(proc.eventsNamed('admin-listening')).toEqual([]);
    expect(await canConnect(ports.listen)).toBe(false);
    expect(await canConnect(ports.admin)).toBe(false);
  }

  it('--check on a good config prints "config ok: <path>" and exits 0 without listening', async () => {
    const file = await writeConfig(good());
    const proc = spawnProxy(registry, file, ['--check']);
    expect(await proc.exited, proc.transcript()).toEqual({ code: 0, signal: null });
    expect(proc.lines).toContain(`config ok: ${file}`);
    expect(await canConnect(ports.listen)).toBe(false);
  });

  it('--check on a bad config exits 1 with the error', async () => {
    const file = await writeConfig({ ...good(), algorithm: 'fastest' });
    const proc = spawnProxy(registry, file, ['--check']);
    expect(await proc.exited, proc.transcript()).toEqual({ code: 1, signal: null });
    expect(proc.stderr).toMatch(/^config error: algorithm: .*fastest/m);
    expect(proc.lines.some((l) => l.startsWith('config ok'))).toBe(false);
  });
});
