/**
 * Header rewriting for a reverse proxy, as pure functions over Node's flat raw header arrays
 * (`[name, value, name, value, ...]`, the shape of `IncomingMessage.rawHeaders`). Raw arrays keep
 * the case, the order and every repeated header (Set-Cookie) exactly as received, and both
 * `http.request({ headers })` and `res.writeHead(status, message, headers)` accept them.
 */

/**
 * Headers that describe one connection, not the message (RFC 9110 section 7.6.1), plus the
 * non-standard Proxy-Connection and the proxy credentials, which are meant for this hop only.
 * A proxy must not forward them; each side of the proxy sets its own.
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

/** The headers this proxy writes itself on the way to a backend; a client's copies are replaced or merged. */
const FORWARDING: ReadonlySet<string> = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
]);

/**
 * The lower-case names listed in every `Connection` header of `raw` (`Connection: close, x-foo`
 * names `close` and `x-foo`); RFC 9110 makes each of them hop-by-hop too. `null` when there is
 * no Connection header, so the common case allocates nothing.
 */
export function connectionTokens(raw: readonly string[]): Set<string> | null {
  let tokens: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue;
    for (const token of (raw[i + 1] as string).split(',')) {
      const t = token.trim().toLowerCase();
      if (t.length === 0) continue;
      tokens ??= new Set();
      tokens.add(t);
    }
  }
  return tokens;
}

/**
 * Whether `raw` has more than one Host header: RFC 9112 section 3.2 requires a 400, as the backend
 * and this proxy could otherwise each act on a different one. Node's parser accepts the repeat.
 */
export function hasDuplicateHost(raw: readonly string[]): boolean {
  let seen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length !== 4 || name.toLowerCase() !== 'host') continue;
    if (seen) return true;
    seen = true;
  }
  return false;
}

/**
 * `raw` without the hop-by-hop headers and without every header its Connection headers name.
 * With `keepUpgrade` (an upgrade request, or a 101 answer to one) the `Upgrade` header stays and
 * a single `Connection: upgrade` is written in place of the original Connection headers.
 */
export function stripHopByHop(raw: readonly string[], keepUpgrade = false): string[] {
  const named = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (keepUpgrade && lower === 'upgrade') {
      out.push(name, raw[i + 1] as string);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || named?.has(lower)) continue;
    out.push(name, raw[i + 1] as string);
  }
  if (keepUpgrade) out.push('Connection', 'upgrade');
  return out;
}

/** Marks the lengths of the names in `names`, so most headers are told apart without lowercasing them. */
function lengths(...names: ReadonlySet<string>[]): Uint8Array {
  const marks = new Uint8Array(32);
  for (const set of names) for (const name of set) marks[name.length] = 1;
  return marks;
}

const HOP_LENGTHS = lengths(HOP_BY_HOP);
const REQUEST_LENGTHS = lengths(HOP_BY_HOP, FORWARDING, new Set(['host']));

function text(value: Buffer | string): string {
  return typeof value === 'string' ? value : value.toString('latin1');
}

/**
 * A backend's response headers as undici hands them over (a flat array of raw `Buffer`s, case,
 * order and repeats as received), as strings without the hop-by-hop headers: what
 * `res.writeHead(status, headers)` takes. Header bytes are latin1, as Node's own parser reads them.
 * The same result as {@link stripHopByHop}, in the one pass the hot path can afford.
 */
export function responseHeaders(raw: readonly (Buffer | string)[]): string[] {
  let named: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as Buffer | string).length !== 10) continue;
    if (text(raw[i] as Buffer | string).toLowerCase() !== 'connection') continue;
    for (const token of text(raw[i + 1] as Buffer | string).split(',')) {
      const t = token.trim().toLowerCase();
      if (t.length === 0) continue;
      named ??= new Set();
      named.add(t);
    }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = text(raw[i] as Buffer | string);
    if (named !== null || HOP_LENGTHS[name.length] === 1) {
      const lower = name.toLowerCase();
      if (HOP_BY_HOP.has(lower) || named?.has(lower)) continue;
    }
    out.push(name, text(raw[i + 1] as Buffer | string));
  }
  return out;
}

/** What the proxy knows about a request it forwards. */
export interface ForwardingInfo {
  /** The client's address as the proxy's socket saw it (IPv4-mapped IPv6 is shown as IPv4). */
  readonly clientIp: string | undefined;
  /** The scheme the client used to reach the proxy. */
  readonly proto: 'http' | 'https';
  /** Whether this is an upgrade request (WebSocket): then `Upgrade` is kept. */
  readonly upgrade: boolean;
  /**
   * Whether the request body arrives chunked. Transfer-Encoding is hop-by-hop and is removed, but
   * a body without a Content-Length still needs framing on the next hop, so the proxy then asks
   * for chunked again in its own name.
   */
  readonly chunked: boolean;
}

/**
 * The headers of the request to a backend: hop-by-hop headers removed, then
 * - `X-Forwarded-For`: the client address appended to any list the client sent (every copy is merged into one);
 * - `X-Forwarded-Proto` and `X-Forwarded-Host`: set to what this proxy saw (a client's value is
 *   replaced: this proxy is where the connection was accepted, and a client must not be able to
 *   claim https or another host);
 * - `Forwarded` (RFC 7239): an element `for=...;host=...;proto=...` appended to any the client sent.
 * The client's `Host` goes through unchanged (HAProxy's behaviour; NGINX would send the backend's).
 */
export function requestHeaders(raw: readonly string[], info: ForwardingInfo): string[] {
  const named = connectionTokens(raw);
  const out: string[] = [];
  let xff: string | undefined;
  let forwarded: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (named === null && REQUEST_LENGTHS[name.length] !== 1) {
      out.push(name, value); // none of the names below has this length
      continue;
    }
    const lower = name.toLowerCase();
    if (FORWARDING.has(lower)) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
      else if (lower === 'forwarded') forwarded = forwarded === undefined ? value : `${forwarded}, ${value}`;
      continue;
    }
    if (info.upgrade && lower === 'upgrade') {
      out.push(name, value);
      continue;
    }
    // Host is the request's authority, never a connection option, whatever Connection names.
    if (lower !== 'host' && (HOP_BY_HOP.has(lower) || named?.has(lower))) continue;
    if (lower === 'host') host = value;
    out.push(name, value);
  }
  const client = info.clientIp === undefined ? undefined : displayIp(info.clientIp);
  out.push('X-Forwarded-For', appendList(xff, client ?? 'unknown'));
  out.push('X-Forwarded-Proto', info.proto);
  if (host !== undefined) out.push('X-Forwarded-Host', host);
  out.push('Forwarded', appendList(forwarded, forwardedElement(client, host, info.proto)));
  if (info.upgrade) out.push('Connection', 'upgrade');
  else if (info.chunked) out.push('Transfer-Encoding', 'chunked');
  return out;
}

/**
 * One RFC 7239 forwarded-element: `for=192.0.2.60;host=example.com;proto=http`. An IPv6 address
 * is bracketed and quoted (`for="[2001:db8::1]"`), as the RFC requires, and a value that is not a
 * token (a host with a port) is quoted.
 */
export function forwardedElement(clientIp: string | undefined, host: string | undefined, proto: string): string {
  const node = clientIp === undefined ? 'unknown' : clientIp.includes(':') ? `"[${clientIp}]"` : clientIp;
  let element = `for=${node}`;
  if (host !== undefined && host.length > 0) element += `;host=${tokenOrQuoted(host)}`;
  return `${element};proto=${proto}`;
}

/** The address as people write it: `::ffff:10.0.0.1` (an IPv4 client on a dual-stack socket) becomes `10.0.0.1`. */
export function displayIp(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function appendList(existing: string | undefined, item: string): string {
  return existing === undefined || existing.trim().length === 0 ? item : `${existing}, ${item}`;
}

/** RFC 9110 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function tokenOrQuoted(value: string): string {
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`;
}
