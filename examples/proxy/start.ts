/**
 * `npm start`: the seed's setup on one machine, loopback only. Two demo web servers
 * (webserver01, webserver02) behind two proxies (haproxy01, haproxy02) that elect one active node
 * over UDP and share the service address 127.0.0.1:8080: the leader binds it, the standby does
 * not listen on it (standby "refuse"), and after a failover the new leader binds it.
 *
 * Every child's output is shown prefixed with its name. Ctrl-C (SIGINT to the process group) or
 * a SIGINT/SIGTERM to this process alone stops the children with SIGTERM, waits for them and
 * exits 0. The children also stop by themselves if this process dies: they are started with an
 * IPC channel and exit when it closes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type Address, authority, formatIssue, loadConfig, type ProxyConfig } from './src/config.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const CONFIGS = ['haproxy01', 'haproxy02'].map((name) => join(HERE, 'configs', `${name}.json`));
/** How long the whole setup may take to come up (the first election alone takes about 3.6 s). */
const READY_DEADLINE_MS = 20_000;
const colour = process.stdout.isTTY === true;
const COLOURS = [36, 35, 33, 32, 34];

interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  exited: boolean;
  readonly done: Promise<void>;
}

const children: Child[] = [];
let stopping = false;

function say(text: string): void {
  process.stdout.write(`${colour ? '\u001b[1m[start]\u001b[0m' : '[start]'} ${text}\n`);
}

function launch(name: string, script: string, args: readonly string[], index: number): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, script), ...args], {
    cwd: ROOT,
    // An IPC channel: when this process dies, the child sees 'disconnect' and stops.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const prefix = colour ? `\u001b[${COLOURS[index % COLOURS.length]}m[${name}]\u001b[0m` : `[${name}]`;
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    createInterface({ input: stream }).on('line', (line) => process.stdout.write(`${prefix} ${line}\n`));
  }
  const entry: Child = {
    name,
    process: child,
    exited: false,
    done: new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        entry.exited = true;
        if (!stopping) say(`${name} (pid ${child.pid}) exited (${signal ?? `code ${code}`})`);
        resolve();
      });
    }),
  };
  children.push(entry);
  return entry;
}

async function stopAll(code: number): Promise<never> {
  stopping = true;
  for (const child of children) if (!child.exited) child.process.kill('SIGTERM');
  // The proxies drain for up to timeouts.drainMs; anything still running after that is killed.
  const killer = setTimeout(() => {
    for (const child of children) {
      if (!child.exited) {
        say(`${child.name} did not stop in time; killing it`);
        child.process.kill('SIGKILL');
      }
    }
  }, 15_000);
  await Promise.all(children.map((child) => child.done));
  clearTimeout(killer);
  say('stopped');
  process.exit(code);
}

function tcpFree(address: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(address.port, address.host, () => server.close(() => resolve(true)));
  });
}

function udpFree(address: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket(address.host.includes(':') ? 'udp6' : 'udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind(address.port, address.host, () => socket.close(() => resolve(true)));
  });
}

/** GET url; resolves to the status and body, or `null` when nothing answers. */
function get(url: string): Promise<{ status: number; body: string } | null> {
  return new Promise((resolve) => {
    const req = request(url, { agent: false, timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
    req.end();
  });
}

async function waitFor(what: string, url: string, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    if (stopping) return;
    const crashed = children.find((child) => child.exited);
    if (crashed !== undefined) throw new Error(`${crashed.name} exited while starting`);
    const answer = await get(url);
    if (answer !== null && answer.status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${what} did not answer at ${url} within ${READY_DEADLINE_MS / 1000} s`);
}

async function main(): Promise<void> {
  const configs: ProxyConfig[] = [];
  for (const file of CONFIGS) {
    const result = await loadConfig(file);
    if (!result.ok) {
      for (const issue of result.issues) process.stderr.write(`${relative(ROOT, file)}: ${formatIssue(issue)}\n`);
      process.exit(1);
    }
    configs.push(result.config);
  }
  // The web servers are the backends of the first proxy (both proxies share them).
  const webs = (configs[0] as ProxyConfig).backends.map((backend, i) => ({
    name: `webserver${String(i + 1).padStart(2, '0')}`,
    id: backend.id,
    address: { host: backend.host, port: backend.port },
  }));

  const needed: { what: string; address: Address; udp: boolean }[] = [
    ...webs.map((web) => ({ what: `${web.name} (${web.id})`, address: web.address, udp: false })),
    ...configs.flatMap((c) => [
      { what: `${c.name} admin`, address: c.admin, udp: false },
      ...(c.pair?.elector !== 'peer' ? [] : [{ what: `${c.name} elector (UDP)`, address: c.pair.bind, udp: true }]),
    ]),
    { what: 'the service address', address: (configs[0] as ProxyConfig).listen, udp: false },
  ];
  const busy: string[] = [];
  for (const { what, address, udp } of needed) {
    if (!(udp ? await udpFree(address) : await tcpFree(address))) {
      busy.push(`${udp ? 'UDP' : 'TCP'} ${authority(address)} (for ${what})`);
    }
  }
  if (busy.length > 0) {
    process.stderr.write(
      `error: ${busy.length === 1 ? 'a port is' : 'ports are'} already in use: ${busy.join(', ')}\n`,
    );
    process.stderr.write(
      'Stop whatever holds it (e.g. a previous `npm start`: `ss -ltnup | grep -E "800[12]|8080|900[12]|700[12]"`).\n',
    );
    process.exit(1);
  }

  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  for (const [i, web] of webs.entries()) {
    launch(web.name, 'webserver.ts', ['--name', web.id, '--listen', authority(web.address)], i);
  }
  for (const [i, file] of CONFIGS.entries()) {
    launch((configs[i] as ProxyConfig).name, 'proxy.ts', ['--config', relative(ROOT, file)], webs.length + i);
  }

  const deadline = Date.now() + READY_DEADLINE_MS;
  try {
    for (const web of webs) await waitFor(web.name, `http://${authority(web.address)}/health`, deadline);
    for (const c of configs) await waitFor(`${c.name} admin`, `http://${authority(c.admin)}/healthz`, deadline);
    await waitFor(
      'the service (an elected leader)',
      `http://${authority((configs[0] as ProxyConfig).listen)}/`,
      deadline,
    );
  } catch (error) {
    if (stopping) return;
    say(`error: ${(error as Error).message}; stopping`);
    await stopAll(1);
  }
  if (stopping) return;

  let leader = '?';
  for (const c of configs) {
    const stats = await get(`http://${authority(c.admin)}/stats.json`);
    if (stats !== null && (JSON.parse(stats.body) as { role: string }).role === 'leader') leader = c.name;
  }
  const service = `http://${authority((configs[0] as ProxyConfig).listen)}/`;
  const pid = (name: string): string => String(children.find((child) => child.name === name)?.process.pid ?? '?');
  const pad = (text: string): string => text.padEnd(13);
  const lines = [
    '',
    'fairpick example: two web servers behind an active/passive pair of proxies, on loopback.',
    '',
    `  ${pad('service')}${service}   (the leader, now ${leader}, serves it)`,
    ...configs.map((c) => `  ${pad(c.name)}stats http://${authority(c.admin)}/   pid ${pid(c.name)}`),
    ...webs.map((web) => `  ${pad(web.name)}http://${authority(web.address)}/   pid ${pid(web.name)}`),
    '',
    `  try:   curl ${service}`,
    `         kill -9 ${pid(leader)}    # the leader; the standby takes over within about 4 s`,
    '  Ctrl-C stops everything.',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
  void stopAll(1);
});
