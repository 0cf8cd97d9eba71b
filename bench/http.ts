/**
 * `node --import tsx bench/http.ts`: what the HTTP client integrations cost over the plain client they
 * wrap, in requests per second and in client CPU per request, against real servers on 127.0.0.1.
 *
 *   node --import tsx bench/http.ts                              # 5 runs x 7 cases, 0.3 s warm-up + 2 s each, 32 loops
 *   node --import tsx bench/http.ts --duration 5 --warmup 1 --concurrency 64 --runs 5
 *   node --import tsx bench/http.ts --only undici               # cases whose name contains "undici"
 *
 * Two `node:http` servers answering a 13-byte body run in a child process, so they never share the
 * client's event loop. The client runs `--concurrency` loops, each sending one request at a time and
 * reading its body to the end, for `--warmup` seconds (not counted) and then `--duration` seconds.
 * The cases of each group run interleaved (A B C A B C ...) `--runs` times; the table gives the
 * median of the runs, their range, and the client's CPU time (user + system) per request, which
 * shows a client's own cost even when the server is the bottleneck. See bench/README.md.
 */
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { BalancedPool, Pool, request, fetch as undiciFetch } from 'undici';
import { balancedFetch, type FetchFunction } from '../src/fetch/index.js';
import { createBalancer } from '../src/index.js';
import { createBalancedAgent } from '../src/node/index.js';
import { BalancedDispatcher } from '../src/undici/index.js';

const BODY = 'hello, world\n';

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

interface Ready {
  readonly ports: [number, number];
}

async function serve(): Promise<void> {
  const hits = [0, 0];
  const servers = [0, 1].map((i) =>
    http.createServer((req, res) => {
      hits[i] = (hits[i] ?? 0) + 1;
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
      res.end(BODY);
    }),
  );
  const ports: number[] = [];
  for (const server of servers) {
    server.keepAliveTimeout = 60_000;
    server.maxRequestsPerSocket = 0;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    ports.push(address.port);
  }
  process.on('message', (message) => {
    if (message === 'hits') process.send?.({ hits: [...hits] });
  });
  process.on('disconnect', () => process.exit(0));
  process.send?.({ ports: [ports[0] ?? 0, ports[1] ?? 0] } satisfies Ready);
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

interface Options {
  duration: number;
  warmup: number;
  concurrency: number;
  runs: number;
  only: string | null;
}

function parseOptions(argv: readonly string[]): Options {
  const options: Options = { duration: 2, warmup: 0.3, concurrency: 32, runs: 5, only: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.includes('=') ? (arg.split('=', 2) as [string, string]) : [arg, undefined];
    const take = (): string => {
      if (inline !== undefined) return inline;
      const value = argv[++i];
      if (value === undefined) throw new Error(`${flag} needs a value`);
      return value;
    };
    const positive = (value: string, integer = false): number => {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
        throw new Error(`${flag} must be a positive ${integer ? 'integer' : 'number'}, got ${value}`);
      }
      return n;
    };
    switch (flag) {
      case '--duration':
        options.duration = positive(take());
        break;
      case '--warmup':
        options.warmup = Number(take());
        if (!(options.warmup >= 0)) throw new Error('--warmup must be >= 0');
        break;
      case '--concurrency':
        options.concurrency = positive(take(), true);
        break;
      case '--runs':
        options.runs = positive(take(), true);
        break;
      case '--only':
        options.only = take();
        break;
      default:
        throw new Error(`unknown option ${arg}`);
    }
  }
  return options;
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

interface Case {
  readonly name: string;
  /** The case this one is compared with, in the same group; none for a baseline. */
  readonly baseline?: string;
  /** One request, its body read to the end. */
  readonly send: () => Promise<void>;
  readonly close: () => Promise<void>;
}

interface Group {
  readonly name: string;
  readonly what: string;
  readonly cases: readonly Case[];
}

function readAll(res: http.IncomingMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    let length = 0;
    res.on('data', (chunk: Buffer) => {
      length += chunk.length;
    });
    res.on('end', () => (length === BODY.length ? resolve() : reject(new Error(`short body: ${length}`))));
    res.on('error', reject);
  });
}

function httpGet(url: string, agent: http.Agent): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      readAll(res).then(resolve, reject);
    });
    req.on('error', reject);
  });
}

async function undiciGet(url: string, dispatcher: Pool | BalancedPool | BalancedDispatcher): Promise<void> {
  const res = await request(url, { dispatcher });
  const text = await res.body.text();
  if (res.statusCode !== 200 || text.length !== BODY.length) throw new Error(`status ${res.statusCode}`);
}

async function fetchGet(send: (url: string) => Promise<Response>, url: string): Promise<void> {
  const res = await send(url);
  const text = await res.text();
  if (res.status !== 200 || text.length !== BODY.length) throw new Error(`status ${res.status}`);
}

function groups(a: string, b: string): Group[] {
  const backends = [
    { id: 'a', url: a },
    { id: 'b', url: b },
  ];
  const balancer = () => createBalancer({ algorithm: 'round-robin', backends });

  const pool = new Pool(a);
  const dispatcher = new BalancedDispatcher(balancer());
  const balancedPool = new BalancedPool([a, b]);

  // Both fetch cases use undici's fetch (7.x, the package), with its global dispatcher (an Agent).
  const plainFetch: FetchFunction = (input, init) =>
    undiciFetch(
      input as Parameters<typeof undiciFetch>[0],
      init as Parameters<typeof undiciFetch>[1],
    ) as unknown as Promise<Response>;
  const fetchBalanced = balancedFetch(balancer(), { fetch: plainFetch });

  const agent = new http.Agent({ keepAlive: true });
  const balancedAgent = createBalancedAgent(balancer());

  return [
    {
      name: 'undici',
      what: 'undici.request(url, { dispatcher })',
      cases: [
        { name: 'undici Pool (1 server)', send: () => undiciGet(`${a}/`, pool), close: () => pool.close() },
        {
          name: 'BalancedDispatcher (2)',
          baseline: 'undici Pool (1 server)',
          send: () => undiciGet('http://fairpick/', dispatcher),
          close: () => dispatcher.close(),
        },
        {
          name: 'undici BalancedPool (2)',
          baseline: 'undici Pool (1 server)',
          send: () => undiciGet(`${a}/`, balancedPool),
          close: () => balancedPool.close(),
        },
      ],
    },
    {
      name: 'fetch',
      what: "undici's fetch (7.x) with its global Agent, injected into balancedFetch",
      cases: [
        { name: 'fetch (1 server)', send: () => fetchGet(plainFetch, `${a}/`), close: async () => {} },
        {
          name: 'balancedFetch (2)',
          baseline: 'fetch (1 server)',
          send: () => fetchGet(fetchBalanced, '/'),
          close: async () => {},
        },
      ],
    },
    {
      name: 'http',
      what: 'http.get with a keep-alive agent',
      cases: [
        {
          name: 'http.Agent (1 server)',
          send: () => httpGet(`${a}/`, agent),
          close: async () => agent.destroy(),
        },
        {
          name: 'createBalancedAgent (2)',
          baseline: 'http.Agent (1 server)',
          send: () => httpGet('http://fairpick/', balancedAgent),
          close: async () => balancedAgent.destroy(),
        },
      ],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

interface Sample {
  readonly rps: number;
  /** Client CPU (user + system) per request, in microseconds. */
  readonly cpuUs: number;
  readonly requests: number;
  readonly errors: number;
  /** Requests each server received during the measured window. */
  readonly hits: readonly number[];
}

async function measure(
  send: () => Promise<void>,
  options: Options,
  serverHits: () => Promise<number[]>,
  firstError: (error: unknown) => void,
): Promise<Sample> {
  let stop = false;
  let completed = 0;
  let errors = 0;
  const loop = async () => {
    while (!stop) {
      try {
        await send();
        completed++;
      } catch (error) {
        errors++;
        firstError(error);
      }
    }
  };
  const loops = Array.from({ length: options.concurrency }, loop);
  await sleep(options.warmup * 1000);
  const hits0 = await serverHits();
  const n0 = completed;
  const e0 = errors;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(options.duration * 1000);
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const requests = completed - n0;
  const failed = errors - e0;
  stop = true;
  await Promise.all(loops);
  const hits1 = await serverHits();
  return {
    rps: (requests * 1000) / (t1 - t0),
    cpuUs: (cpu.user + cpu.system) / Math.max(1, requests),
    requests,
    errors: failed,
    hits: hits1.map((h, i) => h - (hits0[i] ?? 0)),
  };
}

function undiciVersion(): string {
  const file = fileURLToPath(new URL('../node_modules/undici/package.json', import.meta.url));
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const child = fork(fileURLToPath(import.meta.url), ['--server'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = await new Promise<Ready>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Ready));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`server process exited with ${code}`)));
  });
  const serverHits = () =>
    new Promise<number[]>((resolve) => {
      child.once('message', (m) => resolve((m as { hits: number[] }).hits));
      child.send('hits');
    });
  const [portA, portB] = ready.ports;
  const all = groups(`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`);
  const selected = all
    .map((g) => ({
      ...g,
      cases: g.cases.filter((c) => options.only === null || `${g.name} ${c.name}`.includes(options.only)),
    }))
    .filter((g) => g.cases.length > 0);
  const count = selected.reduce((n, g) => n + g.cases.length, 0);
  const seconds = count * options.runs * (options.warmup + options.duration);
  console.log(
    `node ${process.version}, undici ${undiciVersion()}, ` +
      `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${os.platform()} ${os.arch()}`,
  );
  console.log(
    `${count} cases x ${options.runs} runs, ${options.concurrency} concurrent loops, ${options.warmup} s warm-up + ` +
      `${options.duration} s each: about ${Math.ceil(seconds)} s\n`,
  );

  const samples = new Map<string, Sample[]>();
  const errors = new Map<string, unknown>();
  for (const group of selected) {
    for (let run = 0; run < options.runs; run++) {
      // Interleaved: every case of the group once per run, in a rotating order.
      const order = group.cases.map((_, i) => group.cases[(i + run) % group.cases.length] as Case);
      for (const c of order) {
        const sample = await measure(c.send, options, serverHits, (e) => {
          if (!errors.has(c.name)) errors.set(c.name, e);
        });
        const list = samples.get(c.name) ?? [];
        list.push(sample);
        samples.set(c.name, list);
        process.stderr.write(
          `  run ${run + 1} ${c.name.padEnd(26)} ${sample.rps.toFixed(0).padStart(7)} req/s ${sample.cpuUs.toFixed(1).padStart(6)} us cpu/req\n`,
        );
      }
    }
    for (const c of group.cases) await c.close();
  }
  child.disconnect();

  // The table.
  const rows: string[][] = [];
  const med = (name: string, f: (s: Sample) => number) => median((samples.get(name) ?? []).map(f));
  for (const group of selected) {
    for (const c of group.cases) {
      const list = samples.get(c.name) ?? [];
      const rps = med(c.name, (s) => s.rps);
      const cpu = med(c.name, (s) => s.cpuUs);
      const lo = Math.min(...list.map((s) => s.rps));
      const hi = Math.max(...list.map((s) => s.rps));
      const base = c.baseline !== undefined && samples.has(c.baseline) ? c.baseline : undefined;
      const vs = (x: number, y: number, sign: 1 | -1) =>
        `${sign * (x / y - 1) * 100 >= 0 ? '+' : ''}${(sign * (x / y - 1) * 100).toFixed(1)}%`;
      const [ha, hb] = list.reduce(([x, y], s) => [x + (s.hits[0] ?? 0), y + (s.hits[1] ?? 0)], [0, 0]);
      const total = ha + hb;
      rows.push([
        c.name,
        rps.toFixed(0),
        `${lo.toFixed(0)}-${hi.toFixed(0)}`,
        base === undefined
          ? 'baseline'
          : vs(
              rps,
              med(base, (s) => s.rps),
              -1,
            ),
        cpu.toFixed(1),
        base === undefined
          ? 'baseline'
          : vs(
              cpu,
              med(base, (s) => s.cpuUs),
              1,
            ),
        total === 0 ? '-' : `${((ha / total) * 100).toFixed(0)}/${((hb / total) * 100).toFixed(0)}`,
        String(list.reduce((n, s) => n + s.errors, 0)),
      ]);
    }
  }
  const header = ['case', 'req/s', 'range', 'overhead', 'cpu us/req', 'cpu overhead', 'a/b %', 'errors'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));
  console.log(
    '\noverhead: how much fewer req/s than the baseline (+ is slower); cpu overhead: how much more client CPU per' +
      '\nrequest (+ is costlier). a/b: the share of the measured requests each server received.',
  );
  if (samples.has('BalancedDispatcher (2)') && samples.has('undici BalancedPool (2)')) {
    const ratio = med('BalancedDispatcher (2)', (s) => s.rps) / med('undici BalancedPool (2)', (s) => s.rps);
    const cpuRatio = med('BalancedDispatcher (2)', (s) => s.cpuUs) / med('undici BalancedPool (2)', (s) => s.cpuUs);
    console.log(
      `BalancedDispatcher / BalancedPool: ${ratio.toFixed(3)}x the req/s, ${cpuRatio.toFixed(3)}x the client CPU per request`,
    );
  }
  for (const [name, error] of errors) console.error(`first error of ${name}:`, error);
  if (errors.size > 0) process.exitCode = 1;
}

if (process.argv.includes('--server')) await serve();
else await main();
