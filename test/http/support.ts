/**
 * Real-server helpers shared by the HTTP integration tests (fetch, node agent, undici).
 *
 * Everything listens on 127.0.0.1, port 0. Register cleanup with `afterEach(closeAll)`: every
 * TestServer is registered on construction, and `defer`/`track` add anything else (agents,
 * balancers, dispatchers) so that no handle outlives its test.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { type BackendStats, type Balancer, type BalancerOptions, createBalancer } from '../../src/index.js';
import { expectNoOpenHandles } from '../support/handles.js';
import { freeTcpPort } from '../support/ports.js';

/** A request handler; `server` is the TestServer that received the request. */
export type Handler = (req: IncomingMessage, res: ServerResponse, server: TestServer) => void;

/** What a TestServer remembers about each request it received (in arrival order). */
export interface RequestRecord {
  readonly method: string;
  /** Path and query as received, e.g. `/base/api/x?q=1`. */
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  /** The server-side socket the request arrived on (see `TestServer.requestClosed`). */
  readonly socket: Socket;
}

/** Options of a TestServer. */
export interface TestServerOptions {
  /** Serve HTTPS with this key and certificate (PEM); `url` is then `https://127.0.0.1:<port>`. */
  readonly tls?: { readonly key: string | Buffer; readonly cert: string | Buffer };
}

/** The JSON body the default handler (`echo`) answers with. */
export interface EchoBody {
  readonly server: string;
  readonly method: string;
  readonly url: string;
  readonly host: string | undefined;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

// ---------------------------------------------------------------------------------------------
// Cleanup registry
// ---------------------------------------------------------------------------------------------

const cleanups: Array<() => unknown> = [];

/** Runs `fn` in the next `closeAll()` (last registered, first run). */
export function defer(fn: () => unknown): void {
  cleanups.push(fn);
}

/**
 * Registers something closeable for `closeAll()` and returns it: calls `destroy()` if it has one
 * (node agents), else `close()` (balancers, servers, undici dispatchers).
 */
export function track<T extends { destroy(): unknown } | { close(): unknown }>(thing: T): T {
  defer(() => ('destroy' in thing ? thing.destroy() : thing.close()));
  return thing;
}

/** Runs and forgets every registered cleanup; use as `afterEach(closeAll)`. Never throws half-way. */
export async function closeAll(): Promise<void> {
  const errors: unknown[] = [];
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as () => unknown;
    try {
      await fn();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  await expectNoOpenHandles();
}

// ---------------------------------------------------------------------------------------------
// Polling and small utilities
// ---------------------------------------------------------------------------------------------

/**
 * Polls `condition` every `intervalMs` (20) until it returns true (awaiting it if it is async),
 * failing after a generous `timeoutMs` (10 s). No duration is ever asserted.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  {
    timeoutMs = 10_000,
    intervalMs = 20,
    message = 'condition',
  }: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}`);
    await sleep(intervalMs);
  }
}

/** Resolves after `ms` milliseconds (for polling loops only; tests never assert durations). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads a request (or any readable stream) to the end as UTF-8 text. */
export async function readText(stream: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/** The default handler: reads the body and answers 200 with an EchoBody JSON. */
export const echo: Handler = (req, res, server) => {
  readText(req).then(
    (body) => {
      const reply: EchoBody = {
        server: server.name,
        method: req.method ?? '',
        url: req.url ?? '',
        host: req.headers.host,
        headers: req.headers,
        body,
      };
      res.writeHead(200, { 'content-type': 'application/json', 'x-server': server.name });
      res.end(JSON.stringify(reply));
    },
    () => res.destroy(),
  );
};

/** Answers every request with `status` (and a small body naming the server). */
export function respond(status: number, body?: string): Handler {
  return (req, res, server) => {
    req.resume();
    res.writeHead(status, { 'content-type': 'text/plain', 'x-server': server.name });
    res.end(body ?? `${server.name} ${status}`);
  };
}

/** Never answers: the request is held until the client or `stop()` closes the socket. */
export const hang: Handler = (req) => {
  req.resume();
};

/**
 * Sends headers and a first chunk, then holds the body open until `release()` is called
 * (which ends every held response) or the socket closes.
 */
export function streamAndHold(
  firstChunk = 'first chunk\n',
): Handler & { release(rest?: string): void; readonly held: number } {
  const open = new Set<ServerResponse>();
  const handler: Handler = (req, res, server) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain', 'x-server': server.name });
    res.write(firstChunk);
    open.add(res);
    res.on('close', () => open.delete(res));
  };
  return Object.defineProperties(handler, {
    release: {
      value(rest = 'rest\n') {
        for (const res of open) res.end(rest);
        open.clear();
      },
    },
    held: { get: () => open.size },
  }) as Handler & { release(rest?: string): void; readonly held: number };
}

// ---------------------------------------------------------------------------------------------
// TestServer
// ---------------------------------------------------------------------------------------------

/**
 * A real `node:http` server on 127.0.0.1 that can be stopped (refusing connections) and started
 * again on the same port. The handler can be swapped at any time; requests, connections and
 * socket closes are counted; `stop()` destroys every open socket.
 */
export class TestServer {
  /** Swap freely; applies to the next request. Defaults to `echo`. */
  handler: Handler;
  /** 0 until the first `start()`, then fixed for the server's life (restarts reuse it). */
  port = 0;
  /** Requests received since construction (or `reset()`), across restarts. */
  readonly requests: RequestRecord[] = [];
  /** TCP connections accepted (server 'connection' events), across restarts. */
  connections = 0;
  /** Server-side sockets that have emitted 'close', across restarts. */
  closedSockets = 0;
  /** Currently open server-side sockets. */
  readonly sockets = new Set<Socket>();
  private readonly closed = new WeakSet<Socket>();
  private readonly watched = new WeakSet<Socket>();

  private server: Server | HttpsServer | undefined;

  constructor(
    readonly name: string,
    handler: Handler = echo,
    private readonly options: TestServerOptions = {},
  ) {
    this.handler = handler;
    defer(() => this.stop());
  }

  /** Number of requests received. */
  get hits(): number {
    return this.requests.length;
  }

  /**
   * Whether the server-side socket of request number `index` (0-based, in arrival order; negative
   * counts from the end) has emitted 'close'. False when there is no such request.
   */
  requestClosed(index: number): boolean {
    const record = this.requests.at(index);
    return record !== undefined && this.closed.has(record.socket);
  }

  /** `http://127.0.0.1:<port>` (`https:` with `tls`; the port is known after the first `start()`). */
  get url(): string {
    return `${this.options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /**
   * Listens on a free port the first time, then on the same port. Resolves once listening. The
   * port comes from `freeTcpPort` rather than port 0, so that no other test's connection can take
   * it from the kernel's ephemeral range while the server is stopped between restarts.
   */
  async start(): Promise<this> {
    if (this.server !== undefined) return this;
    if (this.port === 0) this.port = await freeTcpPort();
    const listener = (req: IncomingMessage, res: ServerResponse) => {
      const socket = req.socket;
      if (!this.watched.has(socket)) {
        this.watched.add(socket);
        socket.once('close', () => this.closed.add(socket));
      }
      this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, socket });
      this.handler(req, res, this);
    };
    const tls = this.options.tls;
    const server = tls === undefined ? createServer(listener) : createHttpsServer(tls, listener);
    server.keepAliveTimeout = 30_000;
    server.on('connection', (socket: Socket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on('close', () => {
        this.sockets.delete(socket);
        this.closedSockets++;
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    this.port = address.port;
    this.server = server;
    return this;
  }

  /** Stops listening and destroys every open socket; the port then refuses connections. Idempotent. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    server.closeAllConnections();
    await closed;
  }

  /** `stop()` then `start()` on the same port. */
  async restart(): Promise<this> {
    await this.stop();
    return this.start();
  }

  /** Forgets recorded requests and counters (not open sockets). */
  reset(): void {
    this.requests.length = 0;
    this.connections = 0;
    this.closedSockets = 0;
  }
}

/** Starts `n` TestServers named `prefix0`, `prefix1`, ... (default names `s0`, `s1`, ...). */
export async function startServers(n: number, handler: Handler = echo, prefix = 's'): Promise<TestServer[]> {
  const servers = Array.from({ length: n }, (_, i) => new TestServer(`${prefix}${i}`, handler));
  await Promise.all(servers.map((s) => s.start()));
  return servers;
}

/** Starts one TestServer. */
export function startServer(name: string, handler: Handler = echo, options?: TestServerOptions): Promise<TestServer> {
  return new TestServer(name, handler, options).start();
}

// ---------------------------------------------------------------------------------------------
// Balancers over TestServers

/** A backend of these tests: one per server, id = server name, url = server url. */
export interface Web {
  readonly id: string;
  readonly url: string;
  readonly weight?: number;
}

/** One backend per server, id = server name, url = server url. */
export function backendsOf(servers: readonly TestServer[]): Web[] {
  return servers.map((s) => ({ id: s.name, url: s.url }));
}

/** A balancer closed by `closeAll`. */
export function balancer(options: BalancerOptions<Web>): Balancer<Web> {
  return track(createBalancer<Web>(options));
}

/** The stats of one backend. */
export function stat(lb: Balancer<Web>, id: string): BackendStats {
  const s = lb.stats().find((x) => x.id === id);
  if (s === undefined) throw new Error(`no backend ${id}`);
  return s;
}

/** Requests in flight over the whole pool. */
export const inFlight = (lb: Balancer<Web>): number => lb.stats().reduce((n, s) => n + s.inFlight, 0);
