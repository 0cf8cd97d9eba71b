/**
 * Process helpers for the example proxy's end-to-end tests: free loopback ports, temporary
 * config files, spawned proxies and demo web servers with their output collected line by line,
 * and a registry that makes sure no process outlives its test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freeTcpPort } from '../../support/ports.js';

/** The repository root (the proxy and the web server run with it as their working directory). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const PROXY_SCRIPT = 'examples/proxy/proxy.ts';
export const WEBSERVER_SCRIPT = 'examples/proxy/webserver.ts';

/** How long helpers wait for a condition by default. Generous: these are deadlines, not measurements. */
export const DEADLINE_MS = 20_000;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `condition` until it returns true, failing with `what` after `deadlineMs`. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  deadlineMs = DEADLINE_MS,
  everyMs = 25,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting until ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Ports

export { freeTcpPort, freeTcpPorts, freeUdpPorts } from '../../support/ports.js';

/** Whether a TCP connection to 127.0.0.1:port is accepted. */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Temporary files

const tempDirs: string[] = [];

/** A fresh directory under the OS temp dir, removed by `removeTempDirs()`. */
export async function tempDir(prefix = 'fairpick-proxy-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
}

/** Writes `config` (an object, or raw text for broken files) as `<name>` in a fresh temp dir. */
export async function writeConfig(config: unknown, name = 'config.json'): Promise<string> {
  const dir = await tempDir();
  const file = join(dir, name);
  await writeFile(file, typeof config === 'string' ? config : `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** A line of the JSON log: `{ ts, event, ... }`. */
export type LogLine = { ts?: string; event?: string; [key: string]: unknown };

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned process with its stdout split into lines (and parsed when a line is JSON). */
export class Proc {
  readonly lines: string[] = [];
  /** The stdout lines that parsed as JSON objects, in order. */
  readonly events: LogLine[] = [];
  stderr = '';
  exit: Exit | undefined;
  readonly exited: Promise<Exit>;
  private partial = '';

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onStdout(chunk));
    child.stderr?.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise<Exit>((resolve) => {
      // 'close' rather than 'exit': it comes after stdout and stderr are drained, so `lines` is complete.
      child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      child.once('error', (error) => {
        this.stderr += `\nspawn error: ${error.message}`;
        this.exit = { code: -1, signal: null };
        resolve(this.exit);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  private onStdout(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const raw of parts) {
      const line = raw.replace(/\r$/, '');
      this.lines.push(line);
      if (line.startsWith('{')) {
        try {
          const parsed: unknown = JSON.parse(line);
          if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
            this.events.push(parsed as LogLine);
          }
        } catch {
          // Not JSON after all: kept in `lines` only.
        }
      }
    }
  }

  /** The JSON events named `event`. */
  eventsNamed(event: string): LogLine[] {
    return this.events.filter((e) => e.event === event);
  }

  /** Waits for a stdout line matching `pred`; fails if the process exits first or at the deadline. */
  async waitForLine(pred: (line: string) => boolean, what = 'a matching line', deadlineMs = DEADLINE_MS) {
    let found: string | undefined;
    await this.waitFor(
      () => {
        found = this.lines.find(pred);
        return found !== undefined;
      },
      what,
      deadlineMs,
    );
    return found as string;
  }

  /**
   * Waits for a JSON event named `event` matching `pred`, looking only at events from index `from`
   * on (pass `proc.events.length` to wait for a new one).
   */
  async waitForEvent(
    event: string,
    pred: (e: LogLine) => boolean = () => true,
    { from = 0, deadlineMs = DEADLINE_MS }: { from?: number; deadlineMs?: number } = {},
  ): Promise<LogLine> {
    let found: LogLine | undefined;
    await this.waitFor(
      () => {
        found = this.events.slice(from).find((e) => e.event === event && pred(e));
        return found !== undefined;
      },
      `event "${event}"`,
      deadlineMs,
    );
    return found as LogLine;
  }

  private async waitFor(condition: () => boolean, what: string, deadlineMs: number): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      if (condition()) return;
      if (this.exit !== undefined) {
        // The last output may still be in the pipe: one more look after it drained.
        await sleep(20);
        if (condition()) return;
        throw new Error(`${this.label} exited (${describeExit(this.exit)}) before ${what}\n${this.transcript()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${deadlineMs} ms waiting for ${what} from ${this.label}\n${this.transcript()}`,
        );
      }
      await sleep(20);
    }
  }

  /** Sends `signal` and waits for the process to exit (SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = DEADLINE_MS): Promise<Exit> {
    if (this.exit !== undefined) return this.exit;
    this.child.kill(signal);
    const timer = setTimeout(() => {
      if (this.exit === undefined) this.child.kill('SIGKILL');
    }, graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL, as a crash. Resolves when the process is gone. */
  kill(): Promise<Exit> {
    return this.stop('SIGKILL');
  }

  /** The last output, for failure messages. */
  transcript(maxLines = 40): string {
    const out = this.lines.slice(-maxLines).join('\n');
    const err = this.stderr.split('\n').slice(-maxLines).join('\n');
    return `--- ${this.label} stdout (last ${maxLines} lines) ---\n${out}\n--- stderr ---\n${err}`;
  }
}

function describeExit(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

/**
 * Every process a test started. `killAll()` (in afterEach) sends SIGTERM, then SIGKILL after a
 * grace period, and waits for each to exit. A process.on('exit') hook SIGKILLs whatever is left if
 * the test worker itself goes away.
 */
export class ProcessRegistry {
  private readonly procs = new Set<Proc>();

  constructor() {
    process.once('exit', () => {
      for (const p of this.procs) if (p.running) p.child.kill('SIGKILL');
    });
  }

  track(p: Proc): Proc {
    this.procs.add(p);
    void p.exited.then(() => this.procs.delete(p));
    return p;
  }

  /** The processes still running. */
  get alive(): Proc[] {
    return [...this.procs].filter((p) => p.running);
  }

  async killAll(graceMs = 3000): Promise<void> {
    await Promise.all(this.alive.map((p) => p.stop('SIGTERM', graceMs)));
    this.procs.clear();
  }
}

/** Spawns `node --import tsx <script> ...args` in the repo root, stdout/stderr piped. */
export function spawnNode(registry: ProcessRegistry, label: string, script: string, args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  return registry.track(new Proc(label, child));
}

/** Starts the proxy with `--config configPath` (plus `extraArgs`, e.g. `--check`). Does not wait. */
export function spawnProxy(registry: ProcessRegistry, configPath: string, extraArgs: string[] = [], label = 'proxy') {
  return spawnNode(registry, label, PROXY_SCRIPT, ['--config', configPath, ...extraArgs]);
}

export interface WebServer {
  proc: Proc;
  name: string;
  port: number;
  url: string;
}

/**
 * Starts a demo web server and waits for its `listening` line, on a free port (from `freeTcpPort`,
 * which nothing else takes while the server is down), or on `port` to restart it on the one it had.
 */
export async function startWebServer(registry: ProcessRegistry, name: string, port = 0): Promise<WebServer> {
  if (port === 0) port = await freeTcpPort();
  const proc = spawnNode(registry, name, WEBSERVER_SCRIPT, ['--name', name, '--listen', `127.0.0.1:${port}`]);
  const line = await proc.waitForEvent('listening');
  const url = String(line.url);
  return { proc, name, port: Number(new URL(url).port), url };
}

/** Waits for the proxy's `admin-listening` and `listening` events and returns their URLs. */
export async function proxyReady(proc: Proc, { service = true }: { service?: boolean } = {}) {
  const admin = String((await proc.waitForEvent('admin-listening')).url);
  const listen = service ? String((await proc.waitForEvent('listening')).url) : undefined;
  return { admin, listen };
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * One HTTP request with node:http. `agent: false` (the default) opens a fresh connection, so a
 * request after a SIGTERM really tests whether new connections are accepted.
 */
export function httpGet(
  url: string,
  {
    headers = {},
    agent = false,
    method = 'GET',
    timeoutMs = DEADLINE_MS,
  }: { headers?: Record<string, string>; agent?: Agent | false; method?: string; timeoutMs?: number } = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers, agent }, (res) => {
      res.setEncoding('utf8');
      let body = '';
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`response aborted: ${method} ${url}`)));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms: ${method} ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

/** GET `url` and parse the body as JSON (throws on a non-200). */
export async function getJson<T = unknown>(url: string): Promise<T> {
  const res = await httpGet(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.body}`);
  return JSON.parse(res.body) as T;
}

/** The `/stats.json` shape of the contract (the fields the tests read). */
export interface Stats {
  name: string;
  role: 'leader' | 'standby' | 'standalone';
  token: number | null;
  algorithm: string;
  panicking: boolean;
  backends: {
    id: string;
    url: string;
    state: string;
    pickable: boolean;
    weight: number;
    effectiveWeight: number;
    backup: boolean;
    inFlight: number;
    requests: number;
    errors: number;
    latencyMs: number;
    lastCheck: { ok: boolean; at: string | number; durationMs: number } | null;
  }[];
}

export function stats(adminUrl: string): Promise<Stats> {
  return getJson<Stats>(`${adminUrl}/stats.json`);
}

/** The state of backend `id` in /stats.json. */
export async function backendState(adminUrl: string, id: string): Promise<string | undefined> {
  return (await stats(adminUrl)).backends.find((b) => b.id === id)?.state;
}
