/**
 * Request forwarding: the service side of the proxy.
 *
 * Every request becomes an {@link Exchange}: acquire a backend from the balancer, send the request
 * through that backend's undici `Pool` (keep-alive connections), stream the request body and the
 * response body through, and release the balancer's slot exactly once when the response has been
 * written out whole or has failed. Connect errors and connect timeouts of idempotent requests are
 * retried on another backend (HAProxy's `retries` with `option redispatch`), as long as no byte of
 * the request body was consumed: undici reads the body only once the backend connection is up, so
 * a refused connection never eats it.
 *
 * The per-request path uses undici's low-level `dispatch()` with a handler object of its own (an
 * {@link Attempt}): no `ClientRequest`, no response stream, no `pipe()`, no per-request socket
 * timers (undici's parser keeps one coarse timer per connection for the response timeouts). Node's
 * `http` client is kept only for upgrades (WebSocket), which are rare and long-lived.
 */
import {
  type ClientRequest,
  createServer,
  type IncomingMessage,
  request,
  type Server,
  ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type BackendSpec, type Balancer, isFairpickError, type PickContext, type Slot } from 'fairpick';
import { type Dispatcher, Pool } from 'undici';
import { authority, type BackendConfig, KEYED_ALGORITHMS, type ProxyConfig } from './config.js';
import { displayIp, hasDuplicateHost, requestHeaders, responseHeaders, stripHopByHop } from './headers.js';
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
  readonly pool: Pool;
}

/** Builds the balancer's backend objects, each with its own keep-alive pool. */
export function proxyBackends(config: ProxyConfig): ProxyBackend[] {
  const t = config.timeouts;
  return config.backends.map((b: BackendConfig) => {
    const pool = new Pool(b.url, {
      // As many connections as there are requests in flight (as Node's Agent does), one request
      // at a time on each (no pipelining: a slow response must not hold up the next request).
      connections: null,
      pipelining: 1,
      // HAProxy's `timeout connect`.
      connectTimeout: t.connectMs,
      // HAProxy's `timeout server`: no response headers within responseMs of the request being
      // sent, or no body byte for responseMs (not counted while the client is slow to read).
      headersTimeout: t.responseMs,
      bodyTimeout: t.responseMs,
      // Idle pooled connections are closed after keepAliveMs, or earlier when the backend
      // announces a shorter `Keep-Alive: timeout` (minus a margin): the proxy does not reuse a
      // connection the backend is closing at that very moment.
      keepAliveTimeout: t.keepAliveMs,
      keepAliveMaxTimeout: t.keepAliveMs,
    });
    const backend = { id: b.id, url: b.url, host: b.host, port: b.port, weight: b.weight, backup: b.backup, pool };
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

function isConnectFailure(failure: Failure): boolean {
  return failure === 'connect-error' || failure === 'connect-timeout';
}

/** Errors that mean the connection broke, as opposed to a malformed response. */
function isReset(error: NodeJS.ErrnoException): boolean {
  return (
    error.code === 'UND_ERR_SOCKET' ||
    error.code === 'ECONNRESET' ||
    error.code === 'EPIPE' ||
    error.code === 'ECONNABORTED'
  );
}

/** undici's errors carry the socket's counters when the connection broke. */
interface SocketInfo {
  readonly bytesRead?: number;
}

/**
 * Classifies the failure of an attempt that got no response. Before the request was handed to a
 * connection, only the connect can have failed; after, a broken connection is stale when it had
 * carried an earlier response (the backend closed it while it sat idle in the pool: the request
 * never reached it) and a reset otherwise.
 */
function classify(error: NodeJS.ErrnoException, connected: boolean): Failure {
  if (!connected) return error.code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connect-timeout' : 'connect-error';
  if (error.code === 'UND_ERR_HEADERS_TIMEOUT') return 'response-timeout';
  if (!isReset(error)) return 'upstream-error';
  const bytesRead = (error as { socket?: SocketInfo }).socket?.bytesRead ?? 0;
  return bytesRead > 0 ? 'stale-connection' : 'upstream-reset';
}

/** undici's answers to a request it refuses to send as it is (a header it does not allow, a bad path). */
function isBadRequest(error: NodeJS.ErrnoException): boolean {
  return error.code === 'UND_ERR_INVALID_ARG' || error.code === 'UND_ERR_NOT_SUPPORTED';
}

/**
 * The server's response objects carry their exchange in a field declared by the class, so every
 * response has the same shape (a property added afterwards would give Node's http code a second one).
 */
class ProxyResponse extends ServerResponse<IncomingMessage> {
  exchange: Exchange | null = null;
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
  /** The attempt in progress; `null` between attempts, once the response is complete, or once abandoned. */
  attempt: Attempt | null = null;
  attemptStarted = 0;
  /** The current attempt was handed to a backend connection. */
  connected = false;
  bodyStarted = false;
  /** A backend's response head was relayed to the client. */
  responded = false;
  /** Every failed attempt so far failed to connect (the backends are unreachable: 503). */
  onlyConnectFailures = true;
  /** undici's resume(), while the response is paused because the client reads slowly. */
  resume: (() => void) | null = null;
  waitingDrain = false;
  /** Time to the backend's response headers: the latency reported to the balancer. */
  ttfbMs = 0;
  status = 0;
  error: string | null = null;
  headers: string[] | null = null;
  /** onClientClose ran: the exchange is over. */
  over = false;
  /** The request body is being read and has not ended: the exchange waits on the client to send it. */
  bodyWait = false;
  /** onClientTimeout listens on the response (added once, the first time `timeouts.clientMs` is armed). */
  clientTimer = false;
  /** The client was cut off by `timeouts.clientMs`. */
  clientTimedOut = false;

  constructor(
    readonly proxy: ProxyServer,
    readonly req: IncomingMessage,
    readonly res: ProxyResponse,
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
  readonly server: Server<typeof IncomingMessage, typeof ProxyResponse>;
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
  readonly clientMs: number;
  readonly tunnelMs: number;
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
    this.clientMs = config.timeouts.clientMs;
    this.tunnelMs = config.timeouts.tunnelMs;
    this.retries = config.retries.count;
    this.redispatch = config.retries.redispatch;
    this.keyed = KEYED_ALGORITHMS.has(config.algorithm);
    this.ipHash = config.algorithm === 'ip-hash';
    this.server = createServer(
      { keepAliveTimeout: config.timeouts.keepAliveMs, ServerResponse: ProxyResponse },
      (req, res) => this.handle(req, res as ProxyResponse),
    );
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

  /**
   * Closes the backend pools: their idle keep-alive connections, and whatever is still there after
   * the drain (requests abandoned when their clients were disconnected).
   */
  async closePools(): Promise<void> {
    await Promise.all(this.balancer.backends.map((backend) => backend.pool.destroy()));
  }

  private handle(req: IncomingMessage, res: ProxyResponse): void {
    this.inFlight++;
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    const hasBody = te !== undefined || (cl !== undefined && cl !== '0');
    const ex = new Exchange(this, req, res, displayIp(req.socket.remoteAddress ?? 'unknown'), hasBody);
    res.exchange = ex;
    res.on('close', onClientClose);
    if (res.socket === null) {
      // Pipelined behind another response: Node emits no 'close' for a response that never got
      // its socket, so a client that goes away before then is seen on the request instead.
      req.once('close', () => {
        if (!ex.over && req.socket.destroyed) onClientClose.call(res);
      });
    }
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

function closeIdle(server: Server<typeof IncomingMessage, typeof ProxyResponse>): void {
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

function carried(res: ServerResponse): Exchange {
  return (res as ProxyResponse).exchange as Exchange;
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
  const req = ex.req;
  ex.attempts++;
  ex.slot = slot;
  ex.backend = backend;
  ex.connected = false;
  ex.attemptStarted = performance.now();
  ex.headers ??= upstreamHeaders(req, ex.clientIp, false);
  const attempt = new Attempt(ex);
  ex.attempt = attempt;
  // Without a body the request is complete now; with one, undici reads the client's body only once
  // a connection is up (see Attempt.onConnect), with backpressure. A request undici refuses (a
  // header it does not allow) reaches attempt.onError at once.
  backend.pool.dispatch(
    { path: req.url ?? '/', method: req.method ?? 'GET', headers: ex.headers, body: ex.hasBody ? req : null },
    attempt,
  );
}

/**
 * The headers of the request to a backend. For a request through the pool, undici frames the body
 * itself (Content-Length as received, else chunked) and sends its own `Connection`; `Expect` was
 * answered by this proxy already (Node's server sends `100 Continue`), so it is not forwarded.
 */
function upstreamHeaders(req: IncomingMessage, clientIp: string, upgrade: boolean): string[] {
  let headers = requestHeaders(req.rawHeaders, {
    clientIp,
    proto: 'http',
    upgrade,
    chunked: upgrade && req.headers['transfer-encoding'] !== undefined,
  });
  if (!upgrade && req.headers.expect !== undefined) {
    const kept: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i] as string;
      if (name.length !== 6 || name.toLowerCase() !== 'expect') kept.push(name, headers[i + 1] as string);
    }
    headers = kept;
  }
  // HTTP/1.0 clients may omit Host; the backend speaks HTTP/1.1, which requires one.
  if (req.headers.host === undefined) headers.push('Host', req.socket.localAddress ?? 'localhost');
  return headers;
}

/**
 * The undici handler of one attempt (undici's low-level dispatch API: it calls these methods
 * directly, without streams). Every method first checks that its attempt is still the exchange's
 * current one: a late callback of an attempt that was abandoned (retried, or its client gone) does
 * nothing.
 */
class Attempt implements Dispatcher.DispatchHandler {
  /** undici's abort of this request, once it is on a connection. */
  private abort: ((error?: Error) => void) | null = null;

  constructor(readonly ex: Exchange) {}

  /** The request was handed to a connection (new or pooled); undici now sends it and its body. */
  onConnect(abort: (error?: Error) => void): void {
    const ex = this.ex;
    if (ex.attempt !== this) {
      abort(); // the client left while the connection was being made
      return;
    }
    this.abort = abort;
    ex.connected = true;
    if (ex.hasBody) {
      ex.bodyStarted = true;
      // undici now reads the client's body: from here until its end the exchange waits on the client.
      if (!ex.bodyWait && !ex.req.complete) {
        ex.bodyWait = true;
        armClientTimeout(ex);
        ex.req.once('end', () => {
          ex.bodyWait = false;
          disarmClientTimeout(ex);
        });
      }
    }
  }

  /** Stops the backend's work when the client goes away; its connection is not reused. */
  cancel(): void {
    const abort = this.abort;
    this.abort = null;
    abort?.();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    const ex = this.ex;
    if (ex.attempt !== this) return false;
    if (statusCode < 200) return true; // 1xx: not relayed (100 Continue was answered by this proxy)
    const res = ex.res;
    ex.responded = true;
    ex.error = null; // an earlier attempt's failure was retried away; `attempts` still shows it
    ex.ttfbMs = performance.now() - ex.attemptStarted;
    ex.status = statusCode;
    ex.resume = resume;
    if (res.destroyed) return false; // the client left; onClientClose cleans up
    try {
      const headers = responseHeaders(rawHeaders);
      if (statusText) res.writeHead(statusCode, statusText, headers);
      else res.writeHead(statusCode, headers);
    } catch (error) {
      // A header Node refuses to send (an invalid character): the backend's answer is unusable.
      ex.attempt = null;
      ex.responded = false;
      this.cancel();
      ex.proxy.log.event('error', { backend: ex.backend?.id ?? null, message: (error as Error).message });
      ex.onlyConnectFailures = false;
      failWith(ex, `upstream-error@${ex.backend?.id ?? '-'}`);
      return false;
    }
    return true;
  }

  /** A body chunk: written to the client; `false` pauses the backend's connection until the client drains. */
  onData(chunk: Buffer): boolean {
    const ex = this.ex;
    if (ex.attempt !== this) return false;
    const res = ex.res;
    if (res.write(chunk)) return true;
    if (!ex.waitingDrain) {
      ex.waitingDrain = true;
      res.once('drain', onClientDrain);
      armClientTimeout(ex); // the client does not read: it has clientMs to make progress
    }
    return false;
  }

  onComplete(): void {
    const ex = this.ex;
    if (ex.attempt !== this) return;
    ex.attempt = null;
    ex.res.end(); // the slot is released once the client has it all (onClientClose)
  }

  onError(error: Error): void {
    const ex = this.ex;
    if (ex.attempt !== this) return;
    ex.attempt = null;
    this.abort = null;
    const failure = error as NodeJS.ErrnoException;
    if (ex.responded) {
      // The backend's connection broke (or went silent) mid-body: the client's response cannot be
      // completed, and a truncated body must not look complete, so its connection is closed too.
      const timeout = failure.code === 'UND_ERR_BODY_TIMEOUT';
      ex.error ??= `${timeout ? 'response-timeout' : 'upstream-aborted'}@${ex.backend?.id ?? '-'}`;
      release(ex, false, performance.now() - ex.attemptStarted);
      ex.res.destroy();
      return;
    }
    if (clientAborted(ex)) {
      // The client went away in the middle of its request body; undici reports the truncated
      // body as this attempt's failure. Not the backend's fault: the exchange ends as 499.
      release(ex, undefined, 0);
      if (!ex.clientTimedOut) ex.error = `client-aborted@${ex.backend?.id ?? '-'}`;
      ex.res.destroy();
      return;
    }
    if (!ex.connected && isBadRequest(failure)) {
      // Not the backend's fault: a request this proxy cannot forward as it is.
      release(ex, undefined, 0);
      ex.error = 'bad-request';
      ex.res.shouldKeepAlive = false;
      respondLocal(ex, 400, 'the request cannot be forwarded');
      return;
    }
    attemptFailed(ex, classify(failure, ex.connected));
  }
}

/**
 * Whether the client abandoned its request before sending all of it: its connection is gone, or
 * closed its sending side, while the request body is incomplete.
 */
function clientAborted(ex: Exchange): boolean {
  const socket = ex.res.socket;
  return !ex.req.complete && (ex.res.destroyed || socket === null || socket.destroyed || socket.readableEnded);
}

function onClientDrain(this: ServerResponse): void {
  const ex = carried(this);
  ex.waitingDrain = false;
  disarmClientTimeout(ex);
  ex.resume?.();
}

/**
 * HAProxy's `timeout client`, on the client's socket, armed only while the exchange waits on the
 * client (its request body, or its reading of the response): Node's socket timer, which reads and
 * write progress push back, so nothing is done per chunk. Between requests Node's own keep-alive
 * timer uses the same socket timer; while the exchange waits on the backend, it is off.
 */
function armClientTimeout(ex: Exchange): void {
  const socket = ex.res.socket;
  if (socket === null) return;
  if (!ex.clientTimer) {
    ex.clientTimer = true;
    // With a listener on the response, Node's server leaves the socket to it (see onClientTimeout).
    ex.res.on('timeout', onClientTimeout);
  }
  socket.setTimeout(ex.proxy.clientMs);
}

/** Turns `timeout client` off once the exchange no longer waits on the client (never after the response finished: the socket's timer is Node's keep-alive timer then). */
function disarmClientTimeout(ex: Exchange): void {
  if (ex.bodyWait || ex.waitingDrain) return;
  const socket = ex.res.socket;
  if (socket !== null && !ex.res.writableFinished) socket.setTimeout(0);
}

/** The client's socket was inactive for `timeouts.clientMs` while armed. */
function onClientTimeout(this: ServerResponse): void {
  const ex = carried(this);
  if (ex.over) return;
  if (!ex.waitingDrain && !ex.bodyWait) return; // a late timer: the exchange waits on the backend now
  if (!ex.waitingDrain && ex.req.readableLength > 0) {
    // The client's body is there, unread: the backend is not taking it (not the client's fault).
    this.socket?.setTimeout(ex.proxy.clientMs);
    return;
  }
  ex.clientTimedOut = true;
  ex.error = ex.backend === null ? 'client-timeout' : `client-timeout@${ex.backend.id}`;
  this.destroy(); // onClientClose ends the exchange: the backend request is aborted, the slot released
}

/** An attempt failed before any response: retry elsewhere if that is safe, else answer 502/503/504. */
function attemptFailed(ex: Exchange, failure: Failure): void {
  const backend = ex.backend as ProxyBackend;
  // A stale pooled connection says nothing about the backend's health; the other failures do.
  if (failure === 'stale-connection') release(ex, undefined, 0);
  else release(ex, false, performance.now() - ex.attemptStarted);
  if (!isConnectFailure(failure)) ex.onlyConnectFailures = false;
  ex.error = `${failure}@${backend.id}`;
  if (isRetryable(failure) && !ex.bodyStarted && !ex.res.destroyed && ex.proxy.mayRetry(ex.req.method, ex.attempts)) {
    ex.tried ??= new Set();
    ex.tried.add(backend.id);
    ex.proxy.counters.retries++;
    dispatch(ex);
    return;
  }
  // Part of the client's body went to a backend and the rest is unread: this connection cannot
  // carry another request.
  if (ex.bodyStarted) ex.res.shouldKeepAlive = false;
  failWith(ex, ex.error);
}

/**
 * Answers the client for a failed exchange: 503 when no attempt could even connect (every backend
 * tried is unreachable: HAProxy's and Envoy's answer), 504 for a response timeout, 502 for the rest
 * (a backend that broke the connection or answered garbage).
 */
function failWith(ex: Exchange, error: string): void {
  ex.error = error;
  if (ex.onlyConnectFailures) respondLocal(ex, 503, 'no backend could be reached');
  else if (error.startsWith('response-timeout')) respondLocal(ex, 504, 'the backend did not answer in time');
  else respondLocal(ex, 502, 'the backend failed to answer');
}

/** Releases the current attempt's slot, once. `ok` undefined: neither a success nor a failure. */
function release(ex: Exchange, ok: boolean | undefined, latencyMs: number): void {
  const slot = ex.slot;
  if (slot === null) return;
  ex.slot = null;
  if (ok === undefined) slot.release();
  else slot.release({ ok, latencyMs });
}

/** A short plain-text answer from the proxy itself (400, 500, 502, 503, 504). */
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
  if (ex.over) return;
  ex.over = true;
  if (this.writableFinished) {
    // Released only now, when the response is complete: in-flight counts stay true for
    // least-connections and p2c, and a 5xx counts against the backend (passive ejection).
    release(ex, ex.status < 500, ex.ttfbMs);
  } else {
    if (ex.error === null) ex.error = ex.backend === null ? 'client-aborted' : `client-aborted@${ex.backend.id}`;
    if (ex.status === 0 || !ex.responded || ex.clientTimedOut) ex.status = 499; // nginx's "client closed request"
    const attempt = ex.attempt;
    ex.attempt = null;
    attempt?.cancel(); // stop the backend's work; a request still waiting for a connection is dropped when it gets one
    release(ex, undefined, 0); // the client left: not the backend's fault, either way
  }
  const served = ex.responded ? (ex.backend?.id ?? null) : null;
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
  /** Every failed attempt so far failed to connect (then the answer is 503, as for a request). */
  private onlyConnectFailures = true;

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
    // Before the 101, `timeouts.clientMs` while the tunnel waits on the client; after it,
    // `timeouts.tunnelMs` (see upgraded and timedOut). One timer per tunnel, Node's socket timer.
    this.socket.setTimeout(this.proxy.clientMs);
    this.socket.on('timeout', () => this.timedOut());
    if (!this.proxy.serving) {
      this.replyLocal(503, 'this proxy is the standby; try the active one');
      return;
    }
    if (hasDuplicateHost(this.req.rawHeaders)) {
      // Node's http client would send both (undici refuses such a request on the other path).
      this.error = 'bad-request';
      this.replyLocal(400, 'the request has more than one Host header');
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
    upstreamSocket.setTimeout(0); // the tunnel's inactivity is timed on the client's socket
    // HAProxy's `timeout tunnel`: the client's socket timer is pushed back by bytes in both
    // directions (it reads what goes up and writes what comes down), so it fires only when both are idle.
    socket.setTimeout(this.proxy.tunnelMs);
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
    if (!isConnectFailure(failure)) this.onlyConnectFailures = false;
    this.error = `${failure}@${backend.id}`;
    if (this.served) {
      // A refusal is being relayed already (see refused): it can be cut short, never retried or
      // followed by an answer of this proxy's own in the middle of its body.
      this.socket.destroy();
      return;
    }
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
    if (this.onlyConnectFailures) this.replyLocal(503, 'no backend could be reached');
    else if (error.startsWith('response-timeout')) this.replyLocal(504, 'the backend did not answer in time');
    else this.replyLocal(502, 'the backend failed to answer');
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

  /** The client's socket timer fired: `timeouts.tunnelMs` once upgraded, `timeouts.clientMs` before. */
  private timedOut(): void {
    if (this.closed) return;
    const socket = this.socket;
    const upstreamSocket = this.upstreamSocket;
    if (upstreamSocket !== null) {
      // No byte either way for tunnelMs: both sides are closed.
      this.error ??= `tunnel-timeout@${this.backend?.id ?? '-'}`;
      upstreamSocket.destroy();
      socket.destroy();
      return;
    }
    // Waiting for the backend's answer (responseMs applies), or relaying a refusal that the client
    // reads while the backend is slow: not the client's fault; the timer re-arms with the next byte.
    if (!this.served && this.upstream !== null) return;
    if (this.served && !socket.writableNeedDrain && !socket.writableEnded) return;
    // An answer (a refusal relayed, or the proxy's own) waits on the client to read it and close.
    this.status = 499;
    this.error = this.backend === null ? 'client-timeout' : `client-timeout@${this.backend.id}`;
    socket.destroy();
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
