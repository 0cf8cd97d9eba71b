/**
 * The admin server, on every node (leader or standby): the HTML stats page (HAProxy's
 * `stats uri`), /stats.json, /metrics (Prometheus text format 0.0.4) and /healthz.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { BackendStats, Balancer } from 'fairpick';
import { DEFAULT_NAME } from './config.js';
import type { ProxyBackend, ProxyCounters } from './proxy-server.js';

export type Role = 'leader' | 'standby' | 'standalone';

/** What the admin pages read, all of it live. */
export interface AdminSource {
  readonly name: string;
  readonly balancer: Balancer<ProxyBackend>;
  readonly counters: ProxyCounters;
  role(): Role;
  token(): number | null;
  draining(): boolean;
  inFlight(): number;
}

export interface BackendSnapshot {
  readonly id: string;
  readonly url: string;
  readonly state: BackendStats['state'];
  readonly pickable: boolean;
  readonly weight: number;
  readonly effectiveWeight: number;
  readonly backup: boolean;
  readonly inFlight: number;
  readonly requests: number;
  readonly errors: number;
  readonly latencyMs: number;
  /** `at` is a wall-clock time in milliseconds since the epoch. */
  readonly lastCheck: { readonly ok: boolean; readonly at: number; readonly durationMs: number } | null;
}

/** The body of /stats.json. */
export interface StatsSnapshot {
  readonly name: string;
  readonly role: Role;
  readonly token: number | null;
  readonly algorithm: string;
  readonly panicking: boolean;
  readonly draining: boolean;
  readonly inFlight: number;
  readonly retries: number;
  readonly responses: Readonly<Record<string, number>>;
  readonly backends: readonly BackendSnapshot[];
}

const HEALTH_STATES = ['healthy', 'slow-start', 'ejected', 'down'] as const;

export function snapshot(source: AdminSource): StatsSnapshot {
  const lb = source.balancer;
  // The balancer's clock is performance.now(); checks are shown on the wall clock.
  const wallOffset = Date.now() - performance.now();
  const stats = lb.stats();
  const backends = lb.backends.map((backend, i): BackendSnapshot => {
    const s = stats[i] as BackendStats;
    return {
      id: s.id,
      url: backend.url,
      state: s.state,
      pickable: s.pickable,
      weight: s.weight,
      effectiveWeight: round(s.effectiveWeight, 100),
      backup: s.backup,
      inFlight: s.inFlight,
      requests: s.picks,
      errors: s.failures,
      latencyMs: round(s.ewmaMs, 10),
      lastCheck:
        s.lastCheck === null
          ? null
          : {
              ok: s.lastCheck.ok,
              at: Math.round(wallOffset + s.lastCheck.at),
              durationMs: round(s.lastCheck.durationMs, 10),
            },
    };
  });
  const responses: Record<string, number> = {};
  for (const [code, n] of [...source.counters.codes].sort((a, b) => a[0] - b[0])) responses[String(code)] = n;
  return {
    name: source.name,
    role: source.role(),
    token: source.token(),
    algorithm: lb.algorithm,
    panicking: lb.panicking,
    draining: source.draining(),
    inFlight: source.inFlight(),
    retries: source.counters.retries,
    responses,
    backends,
  };
}

function round(value: number, factor: number): number {
  return Math.round(value * factor) / factor;
}

export function createAdminServer(source: AdminSource): Server {
  return createServer((req, res) => {
    try {
      route(source, req, res);
    } catch (error) {
      send(res, 500, 'text/plain; charset=utf-8', `500 Internal Server Error: ${(error as Error).message}\n`);
    }
  });
}

function route(source: AdminSource, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', '405 Method Not Allowed\n');
    return;
  }
  const path = (req.url ?? '/').split('?')[0];
  switch (path) {
    case '/':
      send(res, 200, 'text/html; charset=utf-8', statsPage(snapshot(source)));
      return;
    case '/stats.json':
      send(res, 200, 'application/json', `${JSON.stringify(snapshot(source))}\n`);
      return;
    case '/metrics':
      send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', metrics(snapshot(source)));
      return;
    case '/healthz': {
      const draining = source.draining();
      const body = { status: draining ? 'draining' : 'ok', role: source.role() };
      send(res, draining ? 503 : 200, 'application/json', `${JSON.stringify(body)}\n`);
      return;
    }
    default:
      send(res, 404, 'text/plain; charset=utf-8', '404 Not Found: try /, /stats.json, /metrics or /healthz\n');
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/** Prometheus text format 0.0.4: a HELP and TYPE line per metric, then its samples. */
export function metrics(s: StatsSnapshot): string {
  const out: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: readonly string[]): void => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
  };
  const per = (name: string, value: (b: BackendSnapshot) => number): string[] =>
    s.backends.map((b) => `${name}{backend="${label(b.id)}"} ${value(b)}`);
  metric('fairpick_backend_up', 'gauge', 'Whether the backend can be picked now (1) or not (0).', [
    ...per('fairpick_backend_up', (b) => (b.pickable ? 1 : 0)),
  ]);
  metric(
    'fairpick_backend_state',
    'gauge',
    'The backend health state: 1 for the current state, 0 for the others.',
    s.backends.flatMap((b) =>
      HEALTH_STATES.map(
        (state) => `fairpick_backend_state{backend="${label(b.id)}",state="${state}"} ${b.state === state ? 1 : 0}`,
      ),
    ),
  );
  metric(
    'fairpick_backend_weight',
    'gauge',
    'The configured weight.',
    per('fairpick_backend_weight', (b) => b.weight),
  );
  metric(
    'fairpick_backend_effective_weight',
    'gauge',
    'The weight used for picking now (lower during slow start).',
    per('fairpick_backend_effective_weight', (b) => b.effectiveWeight),
  );
  metric(
    'fairpick_backend_backup',
    'gauge',
    'Whether the backend is in the backup tier.',
    per('fairpick_backend_backup', (b) => (b.backup ? 1 : 0)),
  );
  metric(
    'fairpick_backend_in_flight',
    'gauge',
    'Requests in flight on the backend.',
    per('fairpick_backend_in_flight', (b) => b.inFlight),
  );
  metric(
    'fairpick_backend_requests_total',
    'counter',
    'Requests sent to the backend (picks).',
    per('fairpick_backend_requests_total', (b) => b.requests),
  );
  metric(
    'fairpick_backend_failures_total',
    'counter',
    'Requests that failed on the backend (connect errors, timeouts, 5xx).',
    per('fairpick_backend_failures_total', (b) => b.errors),
  );
  metric(
    'fairpick_backend_latency_ewma_seconds',
    'gauge',
    'Peak-EWMA of the time to response headers, in seconds.',
    per('fairpick_backend_latency_ewma_seconds', (b) => b.latencyMs / 1000),
  );
  metric(
    'fairpick_backend_last_check_success',
    'gauge',
    'Whether the last active health check passed (absent before the first check).',
    s.backends
      .filter((b) => b.lastCheck !== null)
      .map((b) => `fairpick_backend_last_check_success{backend="${label(b.id)}"} ${b.lastCheck?.ok ? 1 : 0}`),
  );
  metric('fairpick_leader', 'gauge', 'Whether this node serves: 1 when leader or standalone, 0 on a standby.', [
    `fairpick_leader ${s.role === 'standby' ? 0 : 1}`,
  ]);
  metric('fairpick_fencing_token', 'gauge', 'The fencing token of the current leadership (0 when not leading).', [
    `fairpick_fencing_token ${s.token ?? 0}`,
  ]);
  metric('fairpick_panic', 'gauge', 'Whether the balancer is in panic mode.', [
    `fairpick_panic ${s.panicking ? 1 : 0}`,
  ]);
  metric('fairpick_in_flight', 'gauge', 'Requests and tunnels being served.', [`fairpick_in_flight ${s.inFlight}`]);
  metric('fairpick_retries_total', 'counter', 'Attempts retried on another backend.', [
    `fairpick_retries_total ${s.retries}`,
  ]);
  metric(
    'fairpick_requests_total',
    'counter',
    'Responses sent to clients, by status code (499: the client closed first).',
    Object.entries(s.responses).map(([code, n]) => `fairpick_requests_total{code="${code}"} ${n}`),
  );
  return `${out.join('\n')}\n`;
}

function label(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

// ---------------------------------------------------------------------------------------------
// The HTML page

const FIELDS = [
  'state',
  'weight',
  'effectiveWeight',
  'inFlight',
  'requests',
  'errors',
  'latencyMs',
  'lastCheck',
] as const;

function html(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function checkText(check: BackendSnapshot['lastCheck']): string {
  if (check === null) return '-';
  const ago = Math.max(0, Math.round((Date.now() - check.at) / 100) / 10);
  return `${check.ok ? 'passed' : 'failed'} in ${check.durationMs} ms, ${ago} s ago`;
}

function cell(b: BackendSnapshot, field: (typeof FIELDS)[number]): string {
  const value = field === 'lastCheck' ? checkText(b.lastCheck) : String(b[field]);
  const numeric = field !== 'state' && field !== 'lastCheck';
  return `<td data-field="${field}"${numeric ? ' class="num"' : ''}>${html(value)}</td>`;
}

function rowClass(b: BackendSnapshot): string {
  return `state-${b.state}${b.backup ? ' backup' : ''}`;
}

/** The stats page: complete without JavaScript; the script refreshes the cells from /stats.json every second. */
export function statsPage(s: StatsSnapshot): string {
  const rows = s.backends
    .map(
      (b) =>
        `<tr data-backend="${html(b.id)}" class="${rowClass(b)}"><th scope="row">${html(b.id)}</th><td>${html(b.url)}</td>` +
        `<td data-field="backup">${b.backup ? 'backup' : 'primary'}</td>${FIELDS.map((f) => cell(b, f)).join('')}</tr>`,
    )
    .join('\n');
  const codes = Object.entries(s.responses)
    .map(([code, n]) => `<tr><th scope="row">${code}</th><td class="num">${n}</td></tr>`)
    .join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${s.name === DEFAULT_NAME ? '' : `${html(s.name)} - `}fairpick proxy statistics</title>
<style>
body { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f3f4f6; color: #1f2933; }
header { background: #24364b; color: #fff; padding: 10px 18px; display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: baseline; }
header h1 { font-size: 16px; margin: 0 12px 0 0; }
header .k { color: #aab8c8; margin-right: 4px; }
.badge { padding: 1px 8px; border-radius: 9px; font-weight: 600; }
.role-leader, .role-standalone { background: #2f855a; }
.role-standby { background: #718096; }
.yes { background: #c53030; padding: 1px 6px; border-radius: 4px; }
main { padding: 14px 18px; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.12); margin-bottom: 18px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e2e8f0; text-align: left; white-space: nowrap; }
thead th { background: #4a6785; color: #fff; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.state-healthy td, tr.state-healthy th { background: #d9f2d9; }
tr.state-healthy.backup td, tr.state-healthy.backup th { background: #d6e4ff; }
tr.state-slow-start td, tr.state-slow-start th { background: #fff4bf; }
tr.state-ejected td, tr.state-ejected th { background: #ffd8a8; }
tr.state-down td, tr.state-down th { background: #ffc4c4; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border: 1px solid #cbd2d9; }
footer { color: #616e7c; padding: 0 18px 18px; }
</style>
</head>
<body>
<header>
<h1>fairpick proxy${s.name === DEFAULT_NAME ? '' : ` <span id="name">${html(s.name)}</span>`}</h1>
<div><span class="k">role</span><span id="role" class="badge role-${s.role}">${s.role}</span></div>
<div><span class="k">token</span><span id="token">${s.token ?? '-'}</span></div>
<div><span class="k">algorithm</span><span id="algorithm">${html(s.algorithm)}</span></div>
<div><span class="k">panic</span><span id="panicking"${s.panicking ? ' class="yes"' : ''}>${s.panicking ? 'yes' : 'no'}</span></div>
<div><span class="k">in flight</span><span id="inflight">${s.inFlight}</span></div>
<div><span class="k">retries</span><span id="retries">${s.retries}</span></div>
<div><span class="k">status</span><span id="draining">${s.draining ? 'draining' : 'running'}</span></div>
</header>
<main>
<table id="backends">
<caption>Backends</caption>
<thead><tr><th>Backend</th><th>URL</th><th>Tier</th><th>State</th><th>Weight</th><th>Eff. weight</th><th>In flight</th><th>Requests</th><th>Errors</th><th>Latency (ms)</th><th>Last check</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
<table id="responses">
<caption>Responses by status</caption>
<tbody>${codes || '<tr><td>none yet</td></tr>'}</tbody>
</table>
<p class="legend"><span class="state-healthy" style="background:#d9f2d9">healthy</span><span style="background:#d6e4ff">healthy backup</span><span style="background:#fff4bf">slow start</span><span style="background:#ffd8a8">ejected (passive)</span><span style="background:#ffc4c4">down (checks or operator)</span></p>
</main>
<footer>Updated <span id="updated">${new Date().toISOString()}</span>. <a href="/stats.json">/stats.json</a> <a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a></footer>
<script>
(() => {
  const fields = ${JSON.stringify(FIELDS)};
  const check = (c) => c === null ? '-' : (c.ok ? 'passed' : 'failed') + ' in ' + c.durationMs + ' ms, ' + Math.max(0, Math.round((Date.now() - c.at) / 100) / 10) + ' s ago';
  const set = (id, text) => { const el = document.getElementById(id); if (el && el.textContent !== text) el.textContent = text; };
  async function refresh() {
    try {
      const res = await fetch('/stats.json', { cache: 'no-store' });
      if (!res.ok) return;
      const s = await res.json();
      set('role', s.role);
      document.getElementById('role').className = 'badge role-' + s.role;
      set('token', s.token === null ? '-' : String(s.token));
      set('algorithm', s.algorithm);
      set('panicking', s.panicking ? 'yes' : 'no');
      document.getElementById('panicking').className = s.panicking ? 'yes' : '';
      set('inflight', String(s.inFlight));
      set('retries', String(s.retries));
      set('draining', s.draining ? 'draining' : 'running');
      set('updated', new Date().toISOString());
      for (const b of s.backends) {
        const row = document.querySelector('tr[data-backend="' + CSS.escape(b.id) + '"]');
        if (!row) continue;
        row.className = 'state-' + b.state + (b.backup ? ' backup' : '');
        for (const f of fields) {
          const td = row.querySelector('td[data-field="' + f + '"]');
          const text = f === 'lastCheck' ? check(b.lastCheck) : String(b[f]);
          if (td && td.textContent !== text) td.textContent = text;
        }
      }
      const body = document.querySelector('#responses tbody');
      const codes = Object.entries(s.responses);
      body.replaceChildren(...(codes.length === 0 ? [Object.assign(document.createElement('tr'), { innerHTML: '<td>none yet</td>' })] : codes.map(([code, n]) => {
        const tr = document.createElement('tr');
        const th = document.createElement('th'); th.scope = 'row'; th.textContent = code;
        const td = document.createElement('td'); td.className = 'num'; td.textContent = String(n);
        tr.append(th, td);
        return tr;
      })));
    } catch {
      set('updated', 'unreachable at ' + new Date().toISOString());
    }
  }
  setInterval(refresh, 1000);
})();
</script>
</body>
</html>
`;
}
