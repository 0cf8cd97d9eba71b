/**
 * Request forwarding: the service side of the proxy.
 *
 * Every request becomes an {@link Exchange}: acquire a backend from the balancer, open (or reuse)
 * a keep-alive connection to it, stream the request body and the response body through, and
 * release the balancer's slot exactly once when the response has been written out whole or has
 * failed. Connect errors and connect timeouts of idempotent requests are retried on another
 * backend (HAProxy's `retries` with `option redispatch`), as long as no byte of the request body
 * was consumed: the body is only piped once the backend connection is up, so a refused connection
 * never eats it.
 *
 * The per-request path avoids closures: the listeners are module-level functions that find their
 * exchange on the emitter they are attached to (the way Node's own http code does it).
 */
import {
  Agent,
  type ClientRequest,
  createServer,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type BackendSpec, type Balancer, isFairpickError, type PickContext, type Slot } from 'fairpick';
import { authority, type BackendConfig, KEYED_ALGORITHMS, type ProxyConfig } from './config.js';
import { displayIp, requestHeaders, stripHopByHop } from './headers.js';
import type { Logger } from './log.js';

/** A backend as the balancer holds it: the configured fields plus its connection pool. */
export interface ProxyBackend extends BackendSpec {
  readonly id: string;
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
  readonly maxInFlight?: number;
  /** One keep-alive pool per backend, as HAProxy keeps idle server connections per server. */
  readonly agent: Agent;
}

/** Builds the balancer's backend objects, each with its own keep-alive agent. */
export function proxyBackends(config: ProxyConfig): ProxyBackend[] {
  return config.backends.map((b: BackendConfig) => {
    const agent = new Agent({
      keepAlive: true,
      // Idle pooled connections are closed after keepAliveMs: below the backends' own idle
      // timeout (Node's default is 5 s), so the proxy does not reuse a connection the backend is
      // closing at that very moment.
      timeout: config.timeouts.keepAliveMs,
      // The most recently used socket first: the least likely to have been closed by the backend.
      scheduling: 'lifo',
      noDelay: true,
    });
    const backend = { id: b.id, url: b.url, host: b.host, port: b.port, weight: b.weight, backup: b.backup, agent };
    return b.maxInFlight === null ? backend : { ...backend, maxInFlight: b.maxInFlight };
  });
}

/** Methods safe to send twice (RFC 9110 section 9.2.2), which a connect failure may retry elsewhere. */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * Why an attempt failed, as the access log names it.
 * - `connect-error`, `connect-timeout`: the connection to the backend could not be made;
 * - `stale-connection`: a pooled keep-alive connection was closed by the backend while idle;
 * - `upstream-reset`: the connection broke after the request was sent and before any response
 *   byte (the backend crashed or closed it);
 * - `response-timeout`: no response (or no body byte) within `timeouts.responseMs`;
 * - `upstream-error`: anything else (an unparseable response).
 * The first four may be retried (see {@link isRetryable}); the last two never are.
 */
type Failure =
  | 'connect-error'
  | 'connect-timeout'
  | 'stale-connection'
  | 'upstream-reset'
  | 'response-timeout'
  | 'upstream-error';

/**
 * Failures after which an idempotent request whose body was not streamed yet may go to another
 * backend: the backend cannot have produced an answer the client saw, and sending an idempotent
 * request twice is harmless (RFC 9110 section 9.2.2). HAProxy's `retry-on conn-failure
 * empty-response`, Envoy's `retry_on: connect-failure,reset`. A response timeout is not retried:
 * the backend may still be working on the request, and a retry would double the load of a slow pool.
 */
function isRetryable(failure: Failure): boolean {
  return failure !== 'response-timeout' && failure !== 'upstream-error';
}

/** Errors that mean the connection broke, as opposed to a malformed response. */
function isReset(error: NodeJS.ErrnoException): boolean {
  return error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.code === 'ECONNABORTED';
}

const EXCHANGE = Symbol('fairpick.exchange');
const CONNECTING = Symbol('fairpick.connecting');
interface Carries {
  [EXCHANGE]?: Exchange;
}
interface SocketCarries {
  [CONNECTING]?: ClientRequest | undefined;
}

/** The state of one proxied request, from the client's request to the end of its response. */
class Exchange {
  readonly started = performance.now();
  attempts = 0;
  /** The backends already tried, for `exclude` on a retry. */
  tried: Set<string> | null = null;
  slot: Slot<ProxyBackend> | null = null;
  /** The backend of the current (or last) attempt. */
  backend: ProxyBackend | null = null;
  upstream: ClientRequest | null = null;
  upstreamRes: IncomingMessage | null = null;
  attemptStarted = 0;
  connected = false;
  /** The connect timeout of a new connection (pooled ones need none). */
  connectTimer: NodeJS.Timeout | undefined = undefined;
  bodyStarted = false;
  /** Time to the backend's response headers: the latency reported to the balancer. */
  ttfbMs = 0;
  status = 0;
  error: string | null = null;
  headers: string[] | null = null;

  constructor(
    readonly proxy: ProxyServer,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly clientIp: string,
    readonly hasBody: boolean,
  ) {}
}

/** The counters behind the stats page and /metrics. */
export interface ProxyCounters {
  /** Responses by status code (499: the client went away first). */
  readonly codes: Map<number, number>;
  /** Attempts retried on another backend. */
  retries: number;
}

/** The forwarding server; it does not decide when to listen (see pair.ts). */
export class ProxyServer {
  readonly server: Server;
  readonly counters: ProxyCounters = { codes: new Map(), retries: 0 };
  /** Requests and tunnels being served. */
  inFlight = 0;
  /** False on a standby in standby mode "503": every request is answered 503. */
  serving = true;
  /** False once the listener closed (demotion, shutdown): responses then close their connection. */
  private accepting = true;
  private readonly tunnels = new Set<Socket>();
  private boundUrl: string | null = null;
  private idleWaiters: (() => void)[] = [];
  readonly connectMs: number;
  readonly responseMs: number;
  private readonly retries: number;
  private readonly redispatch: boolean;
  private readonly keyed: boolean;
  private readonly ipHash: boolean;

  constructor(
    readonly config: ProxyConfig,
    readonly balancer: Balancer<ProxyBackend>,
    readonly log: Logger,
  ) {
    this.connectMs = config.timeouts.connectMs;
    this.responseMs = config.timeouts.responseMs;
    this.retries = config.retries.count;
    this.redispatch = config.retries.redispatch;
    this.keyed = KEYED_ALGORITHMS.has(config.algorithm);
    this.ipHash = config.algorithm === 'ip-hash';
    this.server = createServer({ keepAliveTimeout: config.timeouts.keepAliveMs }, (req, res) => this.handle(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      new Tunnel(this, req, socket as Socket, head).start(),
    );
    // A client that sends garbage gets Node's 400 and its connection closed; nothing to log per byte.
    this.server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** The service URL while listening, else `null`. */
  get url(): string | null {
    return this.boundUrl;
  }

  /** Binds the service address; rejects with the listen error (EADDRINUSE...). */
  async listen(): Promise<string> {
    const { host, port } = this.config.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    const address = this.server.address();
    const bound = typeof address === 'object' && address !== null ? address.port : port;
    this.accepting = true;
    this.boundUrl = `http://${authority({ host, port: bound })}`;
    return this.boundUrl;
  }

  /**
   * Stops accepting connections at once (the address is free for the peer). Requests in progress
   * finish; their connections close after their response instead of staying alive.
   */
  unlisten(): void {
    this.accepting = false;
    this.boundUrl = null;
    if (this.server.listening) this.server.close(); // Node >= 19 also closes the idle connections
    this.server.closeIdleConnections();
  }

  /**
   * Waits until nothing is in flight or `deadlineMs` has passed, closing connections as they
   * become idle; then closes whatever is left (slow responses, WebSocket tunnels).
   */
  async drain(deadlineMs: number): Promise<void> {
    this.unlisten();
    const deadline = performance.now() + deadlineMs;
    while (this.inFlight > 0 && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(100, Math.max(1, deadline - performance.now())));
        this.idleWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.server.closeIdleConnections();
    }
    this.server.closeAllConnections();
    for (const socket of this.tunnels) socket.destroy();
  }

  /** Closes the idle keep-alive connections to the backends. */
  closeAgents(): void {
    for (const backend of this.balancer.backends) backend.agent.destroy();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.inFlight++;
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    const hasBody = te !== undefined || (cl !== undefined && cl !== '0');
    const ex = new Exchange(this, req, res, displayIp(req.socket.remoteAddress ?? 'unknown'), hasBody);
    (res as Carries)[EXCHANGE] = ex;
    res.on('close', onClientClose);
    if (!this.accepting) res.shouldKeepAlive = false;
    if (!this.serving) {
      respondLocal(ex, 503, 'this proxy is the standby; try the active one');
      return;
    }
    dispatch(ex);
  }

  /** The pick context of a request: its hash key, or the client address for ip-hash; `exclude` on retries. */
  pickContext(req: IncomingMessage, clientIp: string, exclude: ReadonlySet<string> | null): PickContext | undefined {
    if (this.keyed) {
      const key = requestKey(this.config, req, clientIp) ?? randomKey();
      return exclude === null ? { key } : { key, exclude };
    }
    if (this.ipHash) return exclude === null ? { clientIp } : { clientIp, exclude };
    return exclude === null ? undefined : { exclude };
  }

  /** The ids a retry must avoid: those tried (redispatch), or every other one (retry on the same server). */
  excludeFor(tried: Set<string>, last: string): ReadonlySet<string> {
    if (this.redispatch) return tried;
    const others = new Set<string>();
    for (const b of this.balancer.backends) if (b.id !== last) others.add(b.id);
    return others;
  }

  mayRetry(method: string | undefined, attempts: number): boolean {
    return method !== undefined && IDEMPOTENT.has(method) && attempts <= this.retries;
  }

  /** Called once per request or tunnel, when it is over. */
  finished(
    method: string,
    path: string,
    status: number,
    backend: string | null,
    started: number,
    attempts: number,
    client: string,
    error: string | null,
  ): void {
    this.inFlight--;
    const codes = this.counters.codes;
    codes.set(status, (codes.get(status) ?? 0) + 1);
    if (this.config.log.access) {
      this.log.access(method, path, status, backend, performance.now() - started, attempts, client, error);
    }
    if (!this.accepting) setImmediate(closeIdle, this.server);
    if (this.inFlight === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  trackTunnel(socket: Socket, open: boolean): void {
    if (open) this.tunnels.add(socket);
    else this.tunnels.delete(socket);
  }
}

function closeIdle(server: Server): void {
  server.closeIdleConnections();
}

/** The request's hash key per `hashKey`; `undefined` when the request lacks it. */
function requestKey(config: ProxyConfig, req: IncomingMessage, clientIp: string): string | undefined {
  const source = config.hashKey;
  if (source === null) return undefined;
  switch (source.source) {
    case 'header': {
      const value = req.headers[source.name];
      const first = Array.isArray(value) ? value[0] : value;
      return first === undefined || first.length === 0 ? undefined : first;
    }
    case 'cookie': {
      const header = req.headers.cookie;
      return header === undefined ? undefined : cookieValue(header, source.name);
    }
    case 'path': {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      return q < 0 ? url : url.slice(0, q);
    }
    case 'client-ip':
      return clientIp;
  }
}

export function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return value.length === 0 ? undefined : value;
    }
  }
  return undefined;
}

/**
 * A request without its hash key is spread by a fresh random key, never all onto the one
 * backend an empty key would hash to (HAProxy falls back to round robin in that case).
 */
function randomKey(): string {
  return Math.random().toString(36).slice(2);
}

function carried(emitter: object): Exchange {
  return (emitter as Carries)[EXCHANGE] as Exchange;
}

/** One attempt: pick a backend (avoiding those tried) and send the request there. */
function dispatch(ex: Exchange): void {
  const proxy = ex.proxy;
  const exclude = ex.tried === null || ex.backend === null ? null : proxy.excludeFor(ex.tried, ex.backend.id);
  let slot: Slot<ProxyBackend>;
  try {
    slot = proxy.balancer.acquire(proxy.pickContext(ex.req, ex.clientIp, exclude));
  } catch (error) {
    if (ex.attempts > 0) {
      // Nothing left to retry on: answer with the failure of the last attempt.
      failWith(ex, ex.error ?? 'upstream-error');
    } else if (isFairpickError(error, 'ERR_NO_BACKEND')) {
      ex.error = 'no-backend';
      respondLocal(ex, 503, 'no backend is available to serve this request');
    } else {
      ex.error = 'pick-error';
      proxy.log.event('error', { message: (error as Error).message });
      respondLocal(ex, 500, 'the proxy could not choose a backend');
    }
    return;
  }
  const backend = slot.backend;
  ex.attempts++;
  ex.slot = slot;
  ex.backend = backend;
  ex.connected = false;
  ex.attemptStarted = performance.now();
  ex.headers ??= upstreamHeaders(ex.req, ex.clientIp, false);
  const up = request({
    host: backend.host,
    port: backend.port,
    method: ex.req.method,
    path: ex.req.url,
    headers: ex.headers,
    agent: backend.agent,
    setHost: false,
  });
  (up as Carries)[EXCHANGE] = ex;
  ex.upstream = up;
  up.on('socket', onUpstreamSocket);
  up.on('response', onUpstreamResponse);
  up.on('timeout', onUpstreamTimeout);
  up.on('error', onUpstreamError);
  // Without a body the request is complete now; Node sends it when the socket is ready. With a
  // body, nothing is read from the client before the connection is up (see upstreamConnected).
  if (!ex.hasBody) up.end();
}

function upstreamHeaders(req: IncomingMessage, clientIp: string, upgrade: boolean): string[] {
  const headers = requestHeaders(req.rawHeaders, {
    clientIp,
    proto: 'http',
    upgrade,
    chunked: req.headers['transfer-encoding'] !== undefined,
  });
  // HTTP/1.0 clients may omit Host; the backend speaks HTTP/1.1, which requires one.
  if (req.headers.host === undefined) headers.push('Host', req.socket.localAddress ?? 'localhost');
  return headers;
}

function onUpstreamSocket(this: ClientRequest, socket: Socket): void {
  const ex = carried(this);
  if (ex.upstream !== this) return;
  if (socket.connecting) {
    // A new connection: it belongs to this request alone until it is up. Its connect timeout is
    // a timer of its own: the agent's idle timeout (keepAliveMs) is armed on every socket it
    // creates and takes precedence over a request's `timeout` option, and
    // ClientRequest.setTimeout() only arms once the socket is connected.
    socket.setTimeout(0);
    ex.connectTimer = setTimeout(onConnectTimeout, ex.proxy.connectMs, this);
    (socket as SocketCarries)[CONNECTING] = this;
    socket.once('connect', onSocketConnect);
  } else {
    upstreamConnected(ex, this); // a pooled keep-alive connection
  }
}

function onSocketConnect(this: Socket): void {
  const up = (this as SocketCarries)[CONNECTING];
  (this as SocketCarries)[CONNECTING] = undefined;
  if (up === undefined) return;
  const ex = carried(up);
  clearTimeout(ex.connectTimer);
  if (ex.upstream === up) upstreamConnected(ex, up);
}

function onConnectTimeout(up: ClientRequest): void {
  const ex = carried(up);
  if (ex.upstream === up && !ex.connected) attemptFailed(ex, 'connect-timeout');
}

function upstreamConnected(ex: Exchange, up: ClientRequest): void {
  ex.connected = true;
  // From now on the idle timeout of the backend connection is the response timeout (HAProxy's
  // `timeout server`): no response headers, or no body byte, for responseMs.
  up.setTimeout(ex.proxy.responseMs);
  if (ex.hasBody && !ex.bodyStarted) {
    ex.bodyStarted = true;
    ex.req.pipe(up); // streamed with backpressure; pipe ends `up` when the client's body ends
  }
}

function onUpstreamResponse(this: ClientRequest, upstreamRes: IncomingMessage): void {
  const ex = carried(this);
  if (ex.upstream !== this) {
    upstreamRes.destroy();
    return;
  }
  const res = ex.res;
  ex.upstreamRes = upstreamRes;
  ex.error = null; // an earlier attempt's failure was retried away; `attempts` still shows it
  ex.ttfbMs = performance.now() - ex.attemptStarted;
  ex.status = upstreamRes.statusCode ?? 502;
  (upstreamRes as Carries)[EXCHANGE] = ex;
  upstreamRes.on('error', onUpstreamBodyError);
  if (res.destroyed) return; // the client left; onClientClose cleans up
  try {
    const headers = stripHopByHop(upstreamRes.rawHeaders);
    const message = upstreamRes.statusMessage;
    if (message) res.writeHead(ex.status, message, headers);
    else res.writeHead(ex.status, headers);
  } catch (error) {
    // A header Node refuses to send (an invalid character): the backend's answer is unusable.
    ex.upstreamRes = null;
    upstreamRes.destroy();
    ex.proxy.log.event('error', { backend: ex.backend?.id ?? null, message: (error as Error).message });
    failWith(ex, `upstream-error@${ex.backend?.id ?? '-'}`);
    return;
  }
  upstreamRes.pipe(res);
}

function onUpstreamBodyError(this: IncomingMessage): void {
  const ex = carried(this);
  if (ex.upstreamRes !== this) return;
  // The backend's connection broke mid-body: the client's response cannot be completed, and a
  // truncated body must not look complete, so its connection is closed too.
  ex.error ??= `upstream-aborted@${ex.backend?.id ?? '-'}`;
  release(ex, false, performance.now() - ex.attemptStarted);
  ex.res.destroy();
}

function onUpstreamTimeout(this: ClientRequest): void {
  const ex = carried(this);
  if (ex.upstream !== this) return;
  const upstreamRes = ex.upstreamRes;
  if (!ex.connected) {
    return; // connects are timed by onConnectTimeout
  } else if (upstreamRes === null) {
    attemptFailed(ex, 'response-timeout');
  } else if (!upstreamRes.complete) {
    ex.error ??= `response-timeout@${ex.backend?.id ?? '-'}`;
    release(ex, false, performance.now() - ex.attemptStarted);
    this.destroy();
    ex.res.destroy();
  }
}

function onUpstreamError(this: ClientRequest, error: NodeJS.ErrnoException): void {
  const ex = carried(this);
  if (ex.upstream !== this) return;
  if (ex.upstreamRes !== null) {
    if (!ex.upstreamRes.complete) {
      ex.error ??= `upstream-aborted@${ex.backend?.id ?? '-'}`;
      release(ex, false, performance.now() - ex.attemptStarted);
      ex.res.destroy();
    }
    return;
  }
  if (!ex.connected) attemptFailed(ex, 'connect-error');
  else if (!isReset(error)) attemptFailed(ex, 'upstream-error');
  // On a pooled connection, most likely closed by the backend while it sat idle (the request
  // never reached it); on a fresh one, the backend went away with the request.
  else attemptFailed(ex, this.reusedSocket ? 'stale-connection' : 'upstream-reset');
}

/** An attempt failed before any response: retry elsewhere if that is safe, else answer 502/504. */
function attemptFailed(ex: Exchange, failure: Failure): void {
  const up = ex.upstream;
  ex.upstream = null;
  clearTimeout(ex.connectTimer);
  up?.destroy();
  const backend = ex.backend as ProxyBackend;
  // A stale pooled connection says nothing about the backend's health; the other failures do.
  if (failure === 'stale-connection') release(ex, undefined, 0);
  else release(ex, false, performance.now() - ex.attemptStarted);
  ex.error = `${failure}@${backend.id}`;
  if (isRetryable(failure) && !ex.bodyStarted && !ex.res.destroyed && ex.proxy.mayRetry(ex.req.method, ex.attempts)) {
    ex.tried ??= new Set();
    ex.tried.add(backend.id);
    ex.proxy.counters.retries++;
    dispatch(ex);
    return;
  }
  failWith(ex, ex.error);
}

/** Answers the client for a failed exchange: 504 for timeouts, 502 for the rest. */
function failWith(ex: Exchange, error: string): void {
  ex.error = error;
  if (error.startsWith('connect-timeout') || error.startsWith('response-timeout')) {
    respondLocal(ex, 504, 'the backend did not answer in time');
  } else {
    respondLocal(ex, 502, 'the backend failed to answer');
  }
}

/** Releases the current attempt's slot, once. `ok` undefined: neither a success nor a failure. */
function release(ex: Exchange, ok: boolean | undefined, latencyMs: number): void {
  const slot = ex.slot;
  if (slot === null) return;
  ex.slot = null;
  if (ok === undefined) slot.release();
  else slot.release({ ok, latencyMs });
}

/** A short plain-text answer from the proxy itself (502, 503, 504). */
function respondLocal(ex: Exchange, status: number, text: string): void {
  ex.status = status;
  const res = ex.res;
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body = `${status} ${STATUS_CODES[status] ?? ''}: ${text}\n`;
  const headers: Record<string, string | number> = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  };
  if (status === 503) headers['retry-after'] = 1;
  res.writeHead(status, headers);
  res.end(body);
}

/** The end of every exchange: the response was written whole, or the connection went away. */
function onClientClose(this: ServerResponse): void {
  const ex = carried(this);
  if (this.writableFinished) {
    // Released only now, when the response is complete: in-flight counts stay true for
    // least-connections and p2c, and a 5xx counts against the backend (passive ejection).
    release(ex, ex.status < 500, ex.ttfbMs);
  } else {
    if (ex.error === null) ex.error = ex.backend === null ? 'client-aborted' : `client-aborted@${ex.backend.id}`;
    if (ex.status === 0 || ex.upstreamRes === null) ex.status = 499; // nginx's "client closed request"
    const up = ex.upstream;
    ex.upstream = null;
    clearTimeout(ex.connectTimer);
    up?.destroy(); // stop the backend's work; its connection is not reused
    release(ex, undefined, 0); // the client left: not the backend's fault, either way
  }
  const served = ex.upstreamRes !== null ? (ex.backend?.id ?? null) : null;
  ex.proxy.finished(
    ex.req.method ?? '-',
    ex.req.url ?? '-',
    ex.status,
    served,
    ex.started,
    ex.attempts,
    ex.clientIp,
    ex.error,
  );
}

/**
 * A WebSocket (or any HTTP/1.1 upgrade) passed through: the upgrade request goes to a backend
 * with `Connection: upgrade`; on its 101 the two sockets are piped both ways until either side
 * closes or fails, which closes both. Upgrades are rare and long-lived, so this path uses plain
 * closures and a fresh connection (a tunnel never returns to a pool).
 */
class Tunnel {
  private readonly started = performance.now();
  private readonly clientIp: string;
  private attempts = 0;
  private tried: Set<string> | null = null;
  private slot: Slot<ProxyBackend> | null = null;
  private backend: ProxyBackend | null = null;
  private upstream: ClientRequest | null = null;
  private upstreamSocket: Socket | null = null;
  private status = 0;
  private served = false;
  private error: string | null = null;
  private closed = false;

  constructor(
    private readonly proxy: ProxyServer,
    private readonly req: IncomingMessage,
    private readonly socket: Socket,
    private readonly head: Buffer,
  ) {
    this.clientIp = displayIp(socket.remoteAddress ?? 'unknown');
  }

  start(): void {
    this.proxy.inFlight++;
    this.proxy.trackTunnel(this.socket, true);
    this.socket.on('error', () => this.socket.destroy());
    this.socket.on('close', () => this.clientClosed());
    if (!this.proxy.serving) {
      this.replyLocal(503, 'this proxy is the standby; try the active one');
      return;
    }
    this.dispatch();
  }

  private dispatch(): void {
    const proxy = this.proxy;
    const exclude = this.tried === null || this.backend === null ? null : proxy.excludeFor(this.tried, this.backend.id);
    try {
      this.slot = proxy.balancer.acquire(proxy.pickContext(this.req, this.clientIp, exclude));
    } catch (error) {
      if (this.attempts > 0) this.failWith(this.error ?? 'upstream-error');
      else if (isFairpickError(error, 'ERR_NO_BACKEND')) {
        this.error = 'no-backend';
        this.replyLocal(503, 'no backend is available to serve this request');
      } else {
        this.error = 'pick-error';
        this.replyLocal(500, 'the proxy could not choose a backend');
      }
      return;
    }
    const backend = this.slot.backend;
    this.backend = backend;
    this.attempts++;
    let connected = false;
    const up = request({
      host: backend.host,
      port: backend.port,
      method: this.req.method,
      path: this.req.url,
      headers: upstreamHeaders(this.req, this.clientIp, true),
      agent: false,
      timeout: proxy.connectMs,
      setHost: false,
    });
    this.upstream = up;
    const onConnected = (): void => {
      connected = true;
      up.setTimeout(proxy.responseMs);
    };
    up.on('socket', (socket: Socket) => {
      if (socket.connecting) socket.once('connect', onConnected);
      else onConnected();
    });
    up.on('timeout', () => {
      if (this.upstream !== up) return;
      this.attemptFailed(connected ? 'response-timeout' : 'connect-timeout');
    });
    up.on('error', (error: NodeJS.ErrnoException) => {
      if (this.upstream !== up) return;
      this.attemptFailed(!connected ? 'connect-error' : isReset(error) ? 'upstream-reset' : 'upstream-error');
    });
    up.on('upgrade', (res: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer) => {
      if (this.upstream !== up) {
        upstreamSocket.destroy();
        return;
      }
      this.upgraded(res, upstreamSocket, upstreamHead);
    });
    up.on('response', (res: IncomingMessage) => {
      if (this.upstream !== up) {
        res.destroy();
        return;
      }
      this.refused(res);
    });
    up.end();
  }

  private upgraded(res: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer): void {
    const socket = this.socket;
    if (this.closed) {
      upstreamSocket.destroy();
      return;
    }
    this.upstreamSocket = upstreamSocket;
    this.status = res.statusCode ?? 101;
    this.served = true;
    upstreamSocket.setTimeout(0); // a tunnel may idle as long as both ends like
    socket.write(rawHead(this.status, res.statusMessage, stripHopByHop(res.rawHeaders, true)));
    if (upstreamHead.length > 0) socket.write(upstreamHead);
    if (this.head.length > 0) upstreamSocket.write(this.head);
    // Bytes flow both ways with backpressure, and an end (FIN) on one side ends the other. An
    // error on the backend's side, or its close, closes the client's socket; the client's close
    // ends the backend's (see clientClosed).
    upstreamSocket.on('error', () => socket.destroy());
    upstreamSocket.on('close', () => socket.destroy());
    socket.pipe(upstreamSocket);
    upstreamSocket.pipe(socket);
  }

  /** The backend answered the upgrade request with an ordinary response: relay it and close. */
  private refused(res: IncomingMessage): void {
    this.status = res.statusCode ?? 502;
    this.served = true;
    const headers = stripHopByHop(res.rawHeaders);
    headers.push('Connection', 'close');
    this.socket.write(rawHead(this.status, res.statusMessage, headers));
    res.on('error', () => this.socket.destroy());
    res.pipe(this.socket);
  }

  private attemptFailed(failure: Failure): void {
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
    const backend = this.backend as ProxyBackend;
    this.releaseSlot(false);
    this.error = `${failure}@${backend.id}`;
    if (isRetryable(failure) && !this.closed && this.proxy.mayRetry(this.req.method, this.attempts)) {
      this.tried ??= new Set();
      this.tried.add(backend.id);
      this.proxy.counters.retries++;
      this.dispatch();
      return;
    }
    this.failWith(this.error);
  }

  private failWith(error: string): void {
    this.error = error;
    const timeout = error.startsWith('connect-timeout') || error.startsWith('response-timeout');
    this.replyLocal(
      timeout ? 504 : 502,
      timeout ? 'the backend did not answer in time' : 'the backend failed to answer',
    );
  }

  private replyLocal(status: number, text: string): void {
    this.status = status;
    const body = `${status} ${STATUS_CODES[status] ?? ''}: ${text}\n`;
    const extra = status === 503 ? ['Retry-After', '1'] : [];
    const head = rawHead(status, STATUS_CODES[status], [
      'Content-Type',
      'text/plain; charset=utf-8',
      'Content-Length',
      String(Buffer.byteLength(body)),
      ...extra,
      'Connection',
      'close',
    ]);
    if (this.socket.writable) this.socket.end(head + body);
    else this.socket.destroy();
  }

  private releaseSlot(ok: boolean | undefined): void {
    const slot = this.slot;
    if (slot === null) return;
    this.slot = null;
    if (ok === undefined) slot.release();
    else slot.release({ ok, latencyMs: performance.now() - this.started });
  }

  private clientClosed(): void {
    if (this.closed) return;
    this.closed = true;
    const up = this.upstream;
    this.upstream = null;
    up?.destroy();
    const upstreamSocket = this.upstreamSocket;
    if (upstreamSocket !== null && !upstreamSocket.destroyed) {
      // Let what the client sent last reach the backend, then close; a backend that does not
      // close its side within a second is cut off.
      upstreamSocket.end();
      upstreamSocket.setTimeout(1000, () => upstreamSocket.destroy());
    }
    if (this.status === 0) {
      this.status = 499;
      this.error ??= 'client-aborted';
    }
    this.releaseSlot(this.served ? this.status < 500 : undefined);
    this.proxy.trackTunnel(this.socket, false);
    this.proxy.finished(
      this.req.method ?? '-',
      this.req.url ?? '-',
      this.status,
      this.served ? (this.backend?.id ?? null) : null,
      this.started,
      this.attempts,
      this.clientIp,
      this.error,
    );
  }
}

/** An HTTP/1.1 response head for a raw socket. Header values come from Node's parser, which refuses CR and LF. */
function rawHead(status: number, message: string | undefined, headers: readonly string[]): string {
  let head = `HTTP/1.1 ${status} ${message || STATUS_CODES[status] || ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}
