/**
 * `npm run bench:proxy`: HTTP throughput and latency of the example proxy (examples/proxy) against
 * the same two demo web servers reached directly and, when `haproxy` is on PATH, through HAProxy
 * with an equivalent config. Everything runs on 127.0.0.1.
 *
 *   npm run bench:proxy                               # autocannon, 50 connections, 2 s warm-up + 10 s per target
 *   npm run bench:proxy -- --duration 5 --connections 100
 *   npm run bench:proxy -- --tool wrk                 # wrk (C, one thread) instead of autocannon
 *   npm run bench:proxy -- --no-haproxy               # skip HAProxy even when installed
 *
 * The load generator runs in a process of its own (autocannon in a forked child), so it never
 * shares an event loop with a server. On a 2-core machine it still competes for the cores with the
 * proxy and the web servers: read the numbers as a comparison made under the same conditions.
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  canConnect,
  freeTcpPort,
  getJson,
  httpGet,
  ProcessRegistry,
  proxyReady,
  REPO_ROOT,
  removeTempDirs,
  type Stats,
  spawnProxy,
  startWebServer,
  tempDir,
  until,
  type WebServer,
  writeConfig,
} from '../test/proxy/support/processes.js';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  duration: number;
  connections: number;
  warmup: number;
  tool: 'autocannon' | 'wrk';
  haproxy: boolean;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { duration: 10, connections: 50, warmup: 2, tool: 'autocannon', haproxy: true };
  const value = (i: number, name: string): string => {
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${name} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.includes('=') ? (arg.split('=', 2) as [string, string]) : [arg, undefined];
    const take = () => {
      if (inline !== undefined) return inline;
      const v = value(i, flag);
      i++;
      return v;
    };
    switch (flag) {
      case '--duration':
        options.duration = positive(take(), flag);
        break;
      case '--connections':
        options.connections = positive(take(), flag);
        break;
      case '--warmup':
        options.warmup = Number(take());
        break;
      case '--tool': {
        const tool = take();
        if (tool !== 'autocannon' && tool !== 'wrk') throw new Error(`--tool must be autocannon or wrk, got ${tool}`);
        options.tool = tool;
        break;
      }
      case '--no-haproxy':
        options.haproxy = false;
        break;
      default:
        throw new Error(`unknown option ${arg}`);
    }
  }
  return options;
}

function positive(v: string, name: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${v}`);
  return n;
}

function onPath(command: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Load generators

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  non2xx: number;
}

interface WorkerRequest {
  url: string;
  connections: number;
  duration: number;
}

interface AutocannonResult {
  requests: { average: number; total: number };
  errors: number;
  timeouts: number;
  non2xx: number;
}

type Autocannon = (
  opts: Record<string, unknown>,
  done: (error: Error | null, result: AutocannonResult) => void,
) => {
  on(event: 'response', listener: (client: unknown, status: number, bytes: number, ms: number) => void): void;
};

/** The `q`-quantile of sorted `xs`. */
function quantile(xs: Float64Array, q: number): number {
  if (xs.length === 0) return Number.NaN;
  return xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] as number;
}

/**
 * The child side: runs autocannon once and sends the result to the parent over IPC. Latencies are
 * collected from the `response` events: autocannon's own histogram keeps whole milliseconds, too
 * coarse for loopback.
 */
async function runWorker(request: WorkerRequest): Promise<void> {
  const require = createRequire(import.meta.url);
  const autocannon = require('autocannon') as Autocannon;
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  const r = await new Promise<AutocannonResult>((resolve, reject) => {
    const instance = autocannon(
      { url: request.url, connections: request.connections, duration: request.duration, pipelining: 1 },
      (error, result) => (error ? reject(error) : resolve(result)),
    );
    instance.on('response', (_client, _status, _bytes, ms) => {
      if (n === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[n++] = ms;
    });
  });
  const sorted = latencies.subarray(0, n).sort();
  const result: LoadResult = {
    rps: r.requests.average,
    p50: quantile(sorted, 0.5),
    p99: quantile(sorted, 0.99),
    requests: r.requests.total,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
  };
  process.send?.(result);
}

function autocannonRun(request: WorkerRequest): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ['--worker', JSON.stringify(request)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let result: LoadResult | undefined;
    child.on('message', (m) => {
      result = m as LoadResult;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (result !== undefined) resolve(result);
      else reject(new Error(`autocannon worker exited with code ${code} and no result`));
    });
  });
}

/** `1.23ms` / `456.00us` / `1.2s` in milliseconds. */
function wrkMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (m === null) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

function wrkRun(request: WorkerRequest): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const args = ['-t1', `-c${request.connections}`, `-d${request.duration}s`, '--latency', request.url];
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with code ${code}\n${out}`));
      const pct = (p: string) => wrkMs(new RegExp(`^\\s*${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? '');
      const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? 0);
      const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      resolve({
        rps: num(/^Requests\/sec:\s+([\d.]+)/m),
        p50: pct('50'),
        p99: pct('99'),
        requests: num(/^\s*(\d+) requests in/m),
        errors: socketErrors ? socketErrors.slice(1).reduce((s, x) => s + Number(x), 0) : 0,
        non2xx: num(/Non-2xx or 3xx responses:\s+(\d+)/),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// CPU time of a process (Linux /proc): the figure that the other processes on the machine disturb least

let clockTicks: number | undefined;

/** User + system CPU seconds of `pid` (all its threads), or undefined where /proc is not there. */
function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Targets

const registry = new ProcessRegistry();
const others: ChildProcess[] = [];

async function startHaproxy(
  servers: WebServer[],
  nbthread: number | undefined,
): Promise<{ url: string; pid: number | undefined }> {
  const port = await freeTcpPort();
  const dir = await tempDir('fairpick-bench-haproxy-');
  const file = join(dir, 'haproxy.cfg');
  await writeFile(
    file,
    [
      'global',
      '  maxconn 4096',
      ...(nbthread === undefined ? [] : [`  nbthread ${nbthread}`]),
      'defaults',
      '  mode http',
      '  option http-keep-alive',
      '  http-reuse always',
      '  timeout connect 5s',
      '  timeout client 30s',
      '  timeout server 30s',
      'frontend fe',
      `  bind 127.0.0.1:${port}`,
      '  default_backend be',
      'backend be',
      '  balance roundrobin',
      ...servers.map((s) => `  server ${s.name} 127.0.0.1:${s.port}`),
      '',
    ].join('\n'),
  );
  const child = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  others.push(child);
  await until(() => {
    if (child.exitCode !== null) throw new Error(`haproxy exited with code ${child.exitCode}`);
    return canConnect(port);
  }, `haproxy listens on ${port}`);
  return { url: `http://127.0.0.1:${port}`, pid: child.pid };
}

function stopOthers(): Promise<void> {
  return Promise.all(
    others.splice(0).map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 3000).unref();
        }),
    ),
  ).then(() => undefined);
}

interface Row {
  target: string;
  result?: LoadResult;
  /** CPU microseconds the measured server process spent per request. */
  cpuUsPerRequest?: number | undefined;
  note?: string;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (!existsSync(join(REPO_ROOT, 'dist/index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (the proxy imports fairpick from dist/)');
  }
  if (options.tool === 'wrk' && onPath('wrk') === undefined) throw new Error('--tool wrk: wrk is not on PATH');
  const haproxy = options.haproxy ? onPath('haproxy') : undefined;
  const load = (url: string, duration: number) =>
    (options.tool === 'wrk' ? wrkRun : autocannonRun)({ url, connections: options.connections, duration });

  console.log(
    `bench:proxy: ${options.tool}, ${options.connections} connections, ${options.warmup} s warm-up + ${options.duration} s per target, node ${process.version}`,
  );
  const servers = await Promise.all([startWebServer(registry, 'web1'), startWebServer(registry, 'web2')]);
  const proxy = spawnProxy(
    registry,
    await writeConfig({
      name: 'bench',
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      backends: servers.map((s) => ({ id: s.name, url: s.url })),
      algorithm: 'round-robin',
      log: { format: 'json', access: false },
    }),
  );
  const { admin, listen } = await proxyReady(proxy);
  const fairpick = listen as string;
  for (const url of [servers[0]?.url, fairpick]) {
    const res = await httpGet(`${url}/`);
    if (res.status !== 200) throw new Error(`GET ${url}/ answered ${res.status}`);
  }

  const rows: Row[] = [];
  /** Measures `url`; `pid` is the server process whose CPU time per request is reported. */
  const measure = async (target: string, url: string, pid: number | undefined) => {
    process.stdout.write(`  ${target.padEnd(30)} `);
    if (options.warmup > 0) await load(`${url}/`, options.warmup);
    const cpu0 = cpuSeconds(pid);
    const result = await load(`${url}/`, options.duration);
    const cpu1 = cpuSeconds(pid);
    const cpuUsPerRequest =
      cpu0 === undefined || cpu1 === undefined || result.requests === 0
        ? undefined
        : ((cpu1 - cpu0) * 1e6) / result.requests;
    rows.push({ target, result, cpuUsPerRequest });
    console.log(
      `${Math.round(result.rps)} req/s, p50 ${fmtMs(result.p50)} ms, p99 ${fmtMs(result.p99)} ms, ${fmtUs(cpuUsPerRequest)} µs CPU/request`,
    );
  };

  await measure('direct (web1)', servers[0]?.url as string, servers[0]?.proc.pid);
  await measure('fairpick proxy', fairpick, proxy.pid);
  const picks = (await getJson<Stats>(`${admin}/stats.json`)).backends.map((b) => `${b.id} ${b.requests}`);
  console.log(`    fairpick picks: ${picks.join(', ')}`);
  await proxy.stop('SIGTERM', 5000);

  if (haproxy === undefined) {
    const note = options.haproxy ? 'haproxy not on PATH (apt-get install haproxy)' : 'skipped (--no-haproxy)';
    rows.push({ target: 'HAProxy', note });
  } else {
    const version = execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0] ?? '';
    console.log(`    ${version.trim()}`);
    for (const [label, nbthread] of [
      ['HAProxy nbthread 1', 1],
      ['HAProxy default threads', undefined],
    ] as const) {
      const { url, pid } = await startHaproxy(servers, nbthread);
      await measure(label, url, pid);
      await stopOthers();
    }
  }

  printTables(rows, options);
}

function fmtUs(us: number | undefined): string {
  return us === undefined ? '-' : us.toFixed(1);
}

function fmtMs(ms: number): string {
  return Number.isFinite(ms) ? (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) : '-';
}

function printTables(rows: Row[], options: Options): void {
  const direct = rows.find((r) => r.target.startsWith('direct'))?.result;
  const fairpick = rows.find((r) => r.target.startsWith('fairpick'))?.result;
  const header = [
    'target',
    'req/s',
    'p50 ms',
    'p99 ms',
    'errors',
    'non-2xx',
    'CPU µs/req',
    'x direct',
    'fairpick / this',
  ];
  const table = rows.map((row) => {
    const r = row.result;
    if (r === undefined) return [row.target, row.note ?? '-', '', '', '', '', '', '', ''];
    return [
      row.target,
      String(Math.round(r.rps)),
      fmtMs(r.p50),
      fmtMs(r.p99),
      String(r.errors),
      String(r.non2xx),
      fmtUs(row.cpuUsPerRequest),
      direct ? (r.rps / direct.rps).toFixed(2) : '-',
      row.target.startsWith('HAProxy') && fairpick ? (fairpick.rps / r.rps).toFixed(2) : '',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  console.log('');
  console.log(line(header));
  for (const row of table) console.log(line(row));
  console.log('');
  console.log(
    `Markdown (${options.tool}, ${options.connections} connections, ${options.duration} s per target after ${options.warmup} s warm-up):`,
  );
  console.log('');
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`);
  for (const row of table) console.log(`| ${row.join(' | ')} |`);
}

async function shutdown(): Promise<void> {
  await stopOthers();
  await registry.killAll(5000);
  await removeTempDirs();
}

const workerIndex = process.argv.indexOf('--worker');
if (workerIndex >= 0) {
  runWorker(JSON.parse(process.argv[workerIndex + 1] as string) as WorkerRequest).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
} else {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void shutdown().then(() => process.exit(130));
    });
  }
  main()
    .then(shutdown)
    .catch(async (error: unknown) => {
      console.error(error instanceof Error ? error.message : error);
      await shutdown();
      process.exitCode = 1;
    });
}
