/**
 * Wiring: a validated configuration becomes a running proxy. The balancer (with its health
 * checks), the forwarding server, the admin server and, for a pair, the elector that decides
 * when the service address is served. `proxy.ts` (the CLI) and the tests both start the proxy
 * through {@link startProxy}.
 */
import type { Server } from 'node:http';
import { type Balancer, createBalancer } from 'fairpick';
import { httpProbe } from 'fairpick/node';
import { type AdminSource, createAdminServer, type Role } from './admin.js';
import { type Address, authority, balancerOptions, type ProxyConfig } from './config.js';
import { Logger, type LogSink } from './log.js';
import { Pair } from './pair.js';
import { type ProxyBackend, ProxyServer, proxyBackends } from './proxy-server.js';

export interface StartOptions {
  /** Where log lines go. @defaultValue process.stdout */
  readonly log?: LogSink;
}

/** A running proxy. */
export interface ProxyHandle {
  readonly config: ProxyConfig;
  readonly balancer: Balancer<ProxyBackend>;
  /** The admin server's URL (`http://127.0.0.1:9001`), with the real port when the config said 0. */
  readonly adminUrl: string;
  /** The service URL while this node listens on it, else `null` (a standby in mode "refuse"). */
  readonly listenUrl: string | null;
  readonly role: Role;
  /** The fencing token while leading, else `null`. */
  readonly token: number | null;
  /** Requests and tunnels being served. */
  readonly inFlight: number;
  /**
   * Graceful shutdown: stop accepting at once, resign leadership at once, let the requests in
   * flight finish within `timeouts.drainMs`, then close the connections left, the backend pools,
   * the balancer and the admin server. Idempotent.
   */
  close(): Promise<void>;
}

/** Longest a shutdown waits for an onDemoted hook (e.g. removing a virtual IP) to finish. */
const HOOK_WAIT_MS = 10_000;

/**
 * Starts a proxy. Resolves once the admin server listens and the service address is bound
 * (standalone, or standby mode "503") or the elector runs (a pair); rejects, with everything
 * closed again, when an address cannot be bound.
 */
export async function startProxy(config: ProxyConfig, options: StartOptions = {}): Promise<ProxyHandle> {
  const log = new Logger(config.log.format, options.log ?? process.stdout);
  const backends = proxyBackends(config);
  const check = config.health.check;
  const probe = httpProbe<ProxyBackend>(check === null ? {} : { path: check.path, expect: check.expectStatus });
  const balancer = createBalancer(balancerOptions(config, backends, probe));
  balancer.on('health', (e) => log.event('health', { backend: e.id, from: e.from, to: e.to, reason: e.reason }));
  balancer.on('panic', (e) => log.event('panic', { active: e.active }));

  const proxy = new ProxyServer(config, balancer, log);
  let pair: Pair | null = null;
  let draining = false;
  let closing: Promise<void> | null = null;
  /** Bumped on every transition, so a bind that finishes after a demotion is undone. */
  let generation = 0;
  const refuse = config.pair?.standby === 'refuse';

  const source: AdminSource = {
    name: config.name,
    balancer,
    counters: proxy.counters,
    role: () => (pair === null ? 'standalone' : pair.isLeader ? 'leader' : 'standby'),
    token: () => (pair === null ? null : pair.token),
    draining: () => draining,
    inFlight: () => proxy.inFlight,
  };
  const admin = createAdminServer(source);

  /** The new leader binds the shared service address; the old one may still be letting go of it. */
  const bindService = async (): Promise<void> => {
    const mine = ++generation;
    let failures = 0;
    while (mine === generation && closing === null && pair?.isLeader === true) {
      try {
        const url = await proxy.listen();
        if (mine !== generation || closing !== null || pair?.isLeader !== true) {
          proxy.unlisten();
          return;
        }
        log.event('listening', { url, role: 'leader' });
        return;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? 'error';
        failures++;
        if (failures === 1 || failures % 50 === 0) {
          log.event('listen-retry', { address: authority(config.listen), error: code, attempts: failures });
        }
        // In use: the old leader is closing it. Not available: the onElected hook is still adding the address.
        const transient = code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL';
        await new Promise((resolve) => setTimeout(resolve, transient ? 100 : 1000));
      }
    }
  };

  try {
    const adminUrl = await listenOn(admin, config.admin, 'admin');
    log.event('admin-listening', { url: adminUrl });
    if (config.pair === null) {
      const url = await listenService(proxy);
      log.event('role', { role: 'standalone' });
      log.event('listening', { url, role: 'standalone' });
    } else {
      proxy.serving = false;
      if (!refuse) {
        // Standby mode "503": listen now, answer 503 with Retry-After until elected.
        const url = await listenService(proxy);
        log.event('listening', { url, role: 'standby' });
      }
      pair = new Pair(config.name, config.pair, log, {
        elected: () => {
          proxy.serving = true;
          if (refuse) void bindService();
        },
        demoted: () => {
          generation++;
          proxy.serving = false;
          if (refuse && proxy.url !== null) {
            const url = proxy.url;
            proxy.unlisten();
            log.event('not-listening', { url });
          }
        },
      });
      try {
        await pair.start();
      } catch (error) {
        if (config.pair.elector !== 'peer') throw error; // its client package is missing
        throw new Error(`cannot bind the pair's UDP address ${authority(config.pair.bind)}: ${errorText(error)}`);
      }
    }
    const handle: ProxyHandle = {
      config,
      balancer,
      adminUrl,
      get listenUrl() {
        return proxy.url;
      },
      get role() {
        return source.role();
      },
      get token() {
        return source.token();
      },
      get inFlight() {
        return proxy.inFlight;
      },
      close: () => {
        closing ??= shutdown();
        return closing;
      },
    };
    return handle;
  } catch (error) {
    // Nothing half-started stays behind: a proxy either starts whole or not at all.
    closing = Promise.resolve();
    proxy.unlisten();
    proxy.server.closeAllConnections();
    await proxy.closePools();
    balancer.close();
    await pair?.stop();
    await closeServer(admin);
    log.flush();
    throw error;
  }

  async function shutdown(): Promise<void> {
    draining = true;
    generation++;
    log.event('draining', { inFlight: proxy.inFlight });
    proxy.unlisten(); // stop accepting at once: the peer can bind the address
    const resigned = pair?.stop(); // resign at once: the peer takes over without waiting
    await proxy.drain(config.timeouts.drainMs);
    await resigned;
    await proxy.closePools();
    balancer.close();
    await pair?.hooksSettled(HOOK_WAIT_MS);
    await closeServer(admin);
    log.event('stopped');
    log.flush();
  }
}

async function listenService(proxy: ProxyServer): Promise<string> {
  try {
    return await proxy.listen();
  } catch (error) {
    throw new Error(`cannot listen on the service address ${authority(proxy.config.listen)}: ${errorText(error)}`);
  }
}

async function listenOn(server: Server, address: Address, what: string): Promise<string> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(address.port, address.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    throw new Error(`cannot listen on the ${what} address ${authority(address)}: ${errorText(error)}`);
  }
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  return `http://${authority({ host: address.host, port })}`;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function errorText(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  if (e.code === 'EADDRINUSE') return 'the address is already in use (EADDRINUSE)';
  if (e.code === 'EADDRNOTAVAIL') return 'no interface has this address (EADDRNOTAVAIL)';
  if (e.code === 'EACCES') return 'permission denied (EACCES; ports below 1024 need privileges)';
  return e.message ?? String(error);
}
