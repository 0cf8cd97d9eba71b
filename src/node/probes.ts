import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { FairpickError } from '../errors.js';
import { describe, invalid, isObject } from '../validate.js';

/** A health probe, as `health.active.probe` takes it. */
export type Probe<B> = (backend: B, signal: AbortSignal) => Promise<boolean>;

/** A backend an HTTP probe can reach: it has a `url` (`http:` or `https:`). */
export interface HttpBackend {
  /** The backend's base URL, e.g. `http://10.0.0.11:8080`. */
  readonly url: string;
}

/** Options of {@link httpProbe}. */
export interface HttpProbeOptions {
  /**
   * The path checked, resolved against the backend's `url` (so `/health` replaces any base path
   * and `health` is appended to it).
   * @defaultValue '/health'
   */
  readonly path?: string;
  /**
   * The request method.
   * @defaultValue 'GET'
   */
  readonly method?: string;
  /**
   * Which responses count as healthy: an inclusive status range `[min, max]`, or a predicate on the
   * status and headers (HAProxy `http-check expect`).
   * @defaultValue [200, 399], as HAProxy's `option httpchk`
   */
  readonly expect?: readonly [number, number] | ((status: number, headers: IncomingHttpHeaders) => boolean);
  /** Extra request headers (a `Host` header, a token). */
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * An active health check over HTTP(S): one request to the backend's `url` + `path` on a fresh
 * connection (`Connection: close`, no agent, so checks neither reuse nor leak pooled sockets),
 * healthy when the status is expected. The response body is discarded and the socket destroyed;
 * the balancer's signal aborts the request at its timeout. A network error is unhealthy.
 *
 * @example
 * ```ts
 * createBalancer({ algorithm: 'round-robin', backends,
 *   health: { active: { probe: httpProbe({ path: '/healthz', expect: [200, 299] }) } } });
 * ```
 * @throws `FairpickError` `ERR_INVALID_ARGUMENT` for a bad option, here; a backend without a
 *   valid http(s) `url` makes its checks reject with the same code (each counts as a failure).
 */
export function httpProbe<B extends HttpBackend>(options: HttpProbeOptions = {}): Probe<B> {
  if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
  const path = options.path ?? '/health';
  if (typeof path !== 'string' || path.length === 0) throw invalid('options.path', path, 'a non-empty string');
  const method = options.method ?? 'GET';
  if (typeof method !== 'string' || !/^[A-Z]+$/.test(method)) {
    throw invalid('options.method', method, 'an HTTP method in capitals, e.g. GET or HEAD');
  }
  const accepts = statusCheck(options.expect);
  const headers = options.headers ?? {};
  if (!isObject(headers as unknown) || Object.values(headers).some((v) => typeof v !== 'string')) {
    throw invalid('options.headers', headers, 'an object of string header values');
  }
  return (backend, signal) =>
    new Promise<boolean>((resolve, reject) => {
      let target: URL;
      try {
        target = new URL(path, backend.url);
      } catch {
        reject(invalid('backend.url', backend.url, 'an absolute http: or https: URL'));
        return;
      }
      if (target.protocol !== 'http:' && target.protocol !== 'https:') {
        reject(invalid('backend.url', backend.url, 'an absolute http: or https: URL'));
        return;
      }
      if (signal.aborted) {
        resolve(false);
        return;
      }
      const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
      const req = send(target, {
        method,
        agent: false,
        headers: { ...headers, connection: 'close' },
        signal,
      });
      req.once('response', (res) => {
        let ok: boolean;
        try {
          ok = accepts(res.statusCode ?? 0, res.headers) === true;
        } catch {
          ok = false; // a predicate that throws fails the check, as a probe that throws does
        }
        res.resume();
        res.destroy();
        req.destroy();
        resolve(ok);
      });
      req.once('error', () => resolve(false));
      req.end();
    });
}

function statusCheck(expect: HttpProbeOptions['expect']): (status: number, headers: IncomingHttpHeaders) => boolean {
  if (expect === undefined) return (status) => status >= 200 && status <= 399;
  if (typeof expect === 'function') return expect;
  if (
    Array.isArray(expect) &&
    expect.length === 2 &&
    expect.every((s) => Number.isInteger(s) && s >= 100 && s <= 599) &&
    expect[0] <= expect[1]
  ) {
    const [min, max] = expect;
    return (status) => status >= min && status <= max;
  }
  throw invalid('options.expect', expect, 'a status range [min, max] within 100-599, or a predicate function');
}

/** A backend a TCP probe can reach through its `url` (host and port, or the scheme's default port). */
export interface TcpUrlBackend {
  /** The backend's URL, e.g. `redis://10.0.0.5:6379` or `http://10.0.0.11`. */
  readonly url: string;
}

/** A backend a TCP probe can reach through `host` and `port` fields. */
export interface TcpHostBackend {
  /** Host name or address. */
  readonly host: string;
  /** TCP port. */
  readonly port: number;
}

/** A backend a TCP probe can reach. */
export type TcpBackend = TcpUrlBackend | TcpHostBackend;

/**
 * An active health check that opens a TCP connection and closes it at once: healthy when the
 * connection is accepted (HAProxy's default `check`). The address comes from the backend's
 * `host` and `port`, or else from its `url` (the scheme's default port when the URL has none).
 * The balancer's signal aborts the attempt at its timeout; a refused or reset connection is unhealthy.
 *
 * @throws nothing here; a backend without a usable address makes its checks reject with
 *   `ERR_INVALID_ARGUMENT` (each counts as a failure).
 */
export function tcpProbe<B extends TcpBackend>(): Probe<B> {
  return (backend, signal) =>
    new Promise<boolean>((resolve, reject) => {
      let address: { host: string; port: number };
      try {
        address = tcpAddress(backend);
      } catch (error) {
        reject(error);
        return;
      }
      if (signal.aborted) {
        resolve(false);
        return;
      }
      const socket = connect({ host: address.host, port: address.port });
      const done = (ok: boolean): void => {
        signal.removeEventListener('abort', onAbort);
        socket.destroy();
        resolve(ok);
      };
      const onAbort = (): void => done(false);
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { 'http:': 80, 'https:': 443, 'ws:': 80, 'wss:': 443 };

function tcpAddress(backend: TcpBackend): { host: string; port: number } {
  const b = backend as { host?: unknown; port?: unknown; url?: unknown };
  if (typeof b.host === 'string' && Number.isInteger(b.port)) {
    return { host: b.host, port: b.port as number };
  }
  if (typeof b.url === 'string') {
    try {
      const url = new URL(b.url);
      const port = url.port === '' ? DEFAULT_PORTS[url.protocol] : Number(url.port);
      if (port !== undefined && url.hostname !== '') {
        return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port };
      }
    } catch {
      // reported below
    }
  }
  throw new FairpickError(
    'ERR_INVALID_ARGUMENT',
    `backend must have host and port, or a url with a host and port; received url ${describe(b.url)}`,
  );
}
