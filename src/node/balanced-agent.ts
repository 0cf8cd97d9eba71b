import { type AgentOptions, type ClientRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions } from 'node:https';
import { isIP } from 'node:net';
import {
  backendTarget,
  checkBackendUrls,
  optionsObject,
  type PickFields,
  parseUrl,
  type UrlBackend,
} from '../http/policy.js';
import { monotonicNow } from '../runtime.js';
import type { Balancer, ReleaseResult } from '../types.js';
import { invalid, requireFunction } from '../validate.js';

/** What fairpick adds to Node's agent options. */
export interface BalancedAgentExtras {
  /**
   * The origin that stands for "the pool": requests to its host name are balanced, others are
   * served as by a plain agent. Only the host name is compared.
   * @defaultValue 'http://fairpick'
   */
  readonly origin?: string;
  /**
   * The affinity key of a request, for the hash algorithms (read `req.path` or `req.getHeader`).
   * Named `hashKey` here because `key` is the TLS private key among Node's agent options.
   */
  readonly hashKey?: (request: ClientRequest) => string | Uint8Array | undefined;
  /** The client address of a request, for `ip-hash`. */
  readonly clientIp?: (request: ClientRequest) => string | undefined;
  /**
   * Response statuses that count as a backend failure (passive health, `failures` in stats).
   * A predicate that throws fails the request with its error; the backend is neither blamed nor
   * credited.
   * @defaultValue every 5xx status
   */
  readonly failureStatuses?: readonly number[] | ((status: number) => boolean);
  /**
   * The clock for latencies, in milliseconds.
   * @defaultValue `performance.now`
   */
  readonly now?: () => number;
}

/** Options of {@link createBalancedAgent}: Node's `http.Agent` options (keep-alive on by default) and fairpick's. */
export interface BalancedAgentOptions extends AgentOptions, BalancedAgentExtras {}

/** Options of {@link createBalancedHttpsAgent}: Node's `https.Agent` options (keep-alive on by default) and fairpick's. */
export interface BalancedHttpsAgentOptions extends HttpsAgentOptions, BalancedAgentExtras {}

// Node's Agent has this method; @types/node leaves it out.
type AddRequest = (this: HttpAgent, req: ClientRequest, options: ConnectOptions) => void;
interface ConnectOptions {
  host?: string | null;
  hostname?: string | null;
  port?: number | string | null;
  servername?: string;
}

interface Settings {
  readonly lb: Balancer<UrlBackend>;
  readonly protocol: 'http:' | 'https:';
  readonly host: string;
  readonly hashKey: BalancedAgentExtras['hashKey'];
  readonly clientIp: BalancedAgentExtras['clientIp'];
  readonly isFailure: (status: number) => boolean;
  readonly now: () => number;
}

/**
 * An `http.Agent` whose requests to the placeholder host (`http://fairpick`) go to backends the
 * balancer picks, so `http.request`, axios and got are balanced with no other change. Each request
 * is picked on its own, then served from its backend's keep-alive pool (Node pools sockets per host
 * and port), so the balancing is per request even on reused connections. The `Host` header becomes
 * the backend's, unless the request set its own to another name than the placeholder.
 *
 * A request counts in flight from the pick until it closes (response read, or error), and is
 * released with `ok` (a response whose status is not in `failureStatuses`) and its time to the
 * response headers. Unlike `balancedFetch`, an agent cannot resend a request: there are no retries
 * here (the client's own retry logic picks again, and passive health keeps it off a failing backend).
 * Backend urls must be `http:` origins with no base path (an agent chooses where to connect, not the path).
 *
 * @example
 * ```ts
 * const agent = createBalancedAgent(lb, { maxSockets: 50 });
 * const api = axios.create({ baseURL: 'http://fairpick', httpAgent: agent, proxy: false });
 * ```
 * @throws `FairpickError` `ERR_INVALID_ARGUMENT` for a bad option or a backend whose `url` does not fit.
 */
export function createBalancedAgent<B extends UrlBackend>(lb: Balancer<B>, options?: BalancedAgentOptions): HttpAgent {
  const { settings, agentOptions } = configure(lb, options, 'http:');
  const add = HttpAgent.prototype as unknown as { addRequest: AddRequest };
  class BalancedAgent extends HttpAgent {
    addRequest(req: ClientRequest, connect: ConnectOptions): void {
      route(settings, req, connect, () => add.addRequest.call(this, req, connect));
    }
  }
  return new BalancedAgent({ keepAlive: true, ...agentOptions });
}

/**
 * The `https.Agent` variant of {@link createBalancedAgent}, for `https:` backends: TLS is set up
 * with each backend's host name (SNI and certificate check), and your TLS options apply to all.
 *
 * @example
 * ```ts
 * const agent = createBalancedHttpsAgent(lb, { ca: readFileSync('internal-ca.pem') });
 * https.get('https://fairpick/health', { agent }, (res) => res.resume());
 * ```
 * @throws `FairpickError` `ERR_INVALID_ARGUMENT` for a bad option or a backend whose `url` does not fit.
 */
export function createBalancedHttpsAgent<B extends UrlBackend>(
  lb: Balancer<B>,
  options?: BalancedHttpsAgentOptions,
): HttpsAgent {
  const { settings, agentOptions } = configure(lb, options, 'https:');
  const add = HttpsAgent.prototype as unknown as { addRequest: AddRequest };
  class BalancedHttpsAgent extends HttpsAgent {
    addRequest(req: ClientRequest, connect: ConnectOptions): void {
      route(settings, req, connect, () => add.addRequest.call(this, req, connect));
    }
  }
  return new BalancedHttpsAgent({ keepAlive: true, ...agentOptions });
}

function configure<O extends BalancedAgentExtras>(
  lb: Balancer<UrlBackend>,
  options: O | undefined,
  protocol: 'http:' | 'https:',
): { settings: Settings; agentOptions: Omit<O, keyof BalancedAgentExtras> } {
  const { origin, hashKey, clientIp, failureStatuses, now, ...agentOptions } = optionsObject(options, 'options');
  if (typeof lb?.acquire !== 'function') throw invalid('lb', lb, 'a balancer from createBalancer');
  const placeholder = typeof (origin ?? 'http://fairpick') === 'string' ? parseUrl(origin ?? 'http://fairpick') : null;
  if (placeholder === null || placeholder.hostname === '') {
    throw invalid('options.origin', origin, "a URL whose host name stands for the pool, e.g. 'http://fairpick'");
  }
  let isFailure = (status: number) => status >= 500 && status <= 599;
  if (typeof failureStatuses === 'function') isFailure = failureStatuses;
  else if (failureStatuses !== undefined) {
    if (!Array.isArray(failureStatuses) || failureStatuses.some((s) => !Number.isInteger(s) || s < 100 || s > 599)) {
      throw invalid('options.failureStatuses', failureStatuses, 'an array of HTTP statuses (100-599) or a predicate');
    }
    const set = new Set(failureStatuses);
    isFailure = (status) => set.has(status);
  }
  checkBackendUrls(lb.backends);
  for (const backend of lb.backends) fits(backend, protocol);
  const settings: Settings = {
    lb,
    protocol,
    host: placeholder.hostname,
    hashKey: hashKey === undefined ? undefined : requireFunction(hashKey, 'options.hashKey'),
    clientIp: clientIp === undefined ? undefined : requireFunction(clientIp, 'options.clientIp'),
    isFailure,
    now: now === undefined ? monotonicNow : requireFunction<() => number>(now, 'options.now'),
  };
  return { settings, agentOptions };
}

// An agent picks the connection, not the request line: the url must be a bare origin of its scheme.
function fits(backend: UrlBackend, protocol: 'http:' | 'https:'): ReturnType<typeof backendTarget> {
  const target = backendTarget(backend);
  if (target.protocol !== protocol || target.basePath !== '') {
    throw invalid(
      `backend ${JSON.stringify(backend.id)} url`,
      backend.url,
      `a ${protocol.slice(0, -1)} origin with no path, for an ${protocol === 'http:' ? 'http' : 'https'}.Agent`,
    );
  }
  return target;
}

/** Picks a backend for a request to the placeholder host and points the connection at it. */
function route(settings: Settings, req: ClientRequest, connect: ConnectOptions, next: () => void): void {
  if (connect.host !== settings.host) {
    next();
    return;
  }
  let slot: ReturnType<Balancer<UrlBackend>['acquire']> | undefined;
  let target: ReturnType<typeof backendTarget>;
  try {
    const ctx: PickFields = {};
    const key = settings.hashKey?.(req);
    if (key !== undefined) ctx.key = key;
    const ip = settings.clientIp?.(req);
    if (ip !== undefined) ctx.clientIp = ip;
    slot = settings.lb.acquire(ctx);
    target = fits(slot.backend, settings.protocol);
  } catch (error) {
    slot?.release();
    // As Node's Agent reports a failed connection: the request emits 'error', then 'close'.
    // (`req.destroy(error)` before a socket is assigned emits nothing.)
    (req as unknown as { onSocket(socket: undefined, error: Error): void }).onSocket(undefined, error as Error);
    return;
  }
  connect.host = target.hostname;
  connect.hostname = target.hostname;
  connect.port = target.port;
  // SNI names a host; an IP address is not sent (RFC 6066), as Node's own agent leaves it out.
  if (settings.protocol === 'https:') connect.servername = isIP(target.hostname) === 0 ? target.hostname : '';
  const defaultPort = settings.protocol === 'https:' ? 443 : 80;
  // The Host header Node derived from the placeholder becomes the backend's; one the caller set to
  // another name (a virtual host the backends need) is kept.
  if (!req.headersSent && namesPlaceholder(req.getHeader('host'), settings.host)) {
    const host = target.hostname.includes(':') ? `[${target.hostname}]` : target.hostname;
    req.setHeader('host', target.port === defaultPort ? host : `${host}:${target.port}`);
  }
  track(settings, req, slot);
  next();
}

/** Whether a Host header is missing or names the placeholder host (any port). */
function namesPlaceholder(header: unknown, placeholder: string): boolean {
  if (header === undefined) return true;
  const value = Array.isArray(header) ? header[0] : header;
  return parseUrl(`http://${String(value)}`)?.hostname === placeholder;
}

/** Releases the request's slot when it closes, with its outcome. */
function track(settings: Settings, req: ClientRequest, slot: { release(result?: ReleaseResult): boolean }): void {
  const started = settings.now();
  let result: ReleaseResult = {};
  let predicateError: unknown = null;
  // First among the listeners (`http.request`'s callback is one): a response whose outcome cannot
  // be judged is failed before anyone reads it.
  req.prependOnceListener('response', (res: IncomingMessage) => {
    let failure: boolean;
    try {
      failure = settings.isFailure(res.statusCode ?? 0);
    } catch (error) {
      // The caller's failureStatuses threw: the request fails with that error (its body too, so
      // that it never ends as if complete), and the backend is neither blamed nor credited.
      predicateError = error;
      res.destroy(error as Error);
      req.destroy(error as Error);
      return;
    }
    result = { ok: !failure, latencyMs: Math.max(0, settings.now() - started) };
  });
  req.once('error', (error: Error & { code?: string }) => {
    // An abort through the request's signal (or a client's cancellation, as axios's
    // `ERR_CANCELED`) is the caller's decision, not the backend's failure.
    const callers = error === predicateError || error.code === 'ABORT_ERR' || error.code === 'ERR_CANCELED';
    if (result.ok === undefined && !callers) result = { ok: false, latencyMs: Math.max(0, settings.now() - started) };
    // This listener must not make an unhandled 'error' silent: with no other listener, throw as
    // emit('error') would have.
    if (req.listenerCount('error') === 0) throw error;
  });
  req.once('close', () => slot.release(result));
}
