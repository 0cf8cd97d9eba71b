/**
 * Free loopback ports for tests that must know a port before something binds it (a pair's shared
 * service address, UDP peers that name each other, an address where nothing listens).
 *
 * Why not "bind port 0, read it, close it": that hands out a port from the kernel's ephemeral
 * range, the same range every outgoing connection and every other port-0 bind on the machine
 * draws from. Between the close and the test's own bind, a parallel test file's connection can
 * take it (CI saw EADDRINUSE this way). These ports come from below the ephemeral range instead,
 * from a slice of its own for each vitest worker, and a process never hands out one port twice, so
 * only a foreign program listening in that range could collide, and a bind check skips those.
 */

import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

const LOWEST = 10_000;
const SLICES = 16;

/** The first port of the kernel's ephemeral range (Linux; 32768 elsewhere, its usual value). */
function ephemeralStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(first) && first > LOWEST + SLICES * 100) return first;
  } catch {
    // Not Linux: fall through to the IANA-style default most systems keep.
  }
  return 32_768;
}

const sliceSize = Math.floor((ephemeralStart() - LOWEST) / SLICES);
const worker = Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 0);
const sliceStart = LOWEST + (Number.isInteger(worker) ? worker % SLICES : 0) * sliceSize;
const handedOut = new Set<number>();
let cursor = Math.floor(Math.random() * sliceSize);

function nextCandidate(): number {
  for (let tries = 0; tries < sliceSize; tries++) {
    const port = sliceStart + (cursor++ % sliceSize);
    if (!handedOut.has(port)) return port;
  }
  throw new Error(`no unused port left in ${sliceStart}..${sliceStart + sliceSize - 1}`);
}

function tcpBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function udpBindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    socket.once('error', () => {
      socket.close();
      resolve(false);
    });
    socket.bind(port, '127.0.0.1', () => socket.close(() => resolve(true)));
  });
}

async function freePorts(n: number, bindable: (port: number) => Promise<boolean>): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = nextCandidate();
    handedOut.add(port);
    if (await bindable(port)) ports.push(port);
  }
  return ports;
}

/** `n` distinct TCP ports on 127.0.0.1 where nothing listens. */
export function freeTcpPorts(n: number): Promise<number[]> {
  return freePorts(n, tcpBindable);
}

/** `n` distinct UDP ports on 127.0.0.1 that nothing has bound. */
export function freeUdpPorts(n: number): Promise<number[]> {
  return freePorts(n, udpBindable);
}

/** A TCP port on 127.0.0.1 where nothing listens: connecting to it is refused. */
export async function freeTcpPort(): Promise<number> {
  const [port] = await freeTcpPorts(1);
  if (port === undefined) throw new Error('no port');
  return port;
}

/** A UDP port on 127.0.0.1 that nothing has bound. */
export async function freeUdpPort(): Promise<number> {
  const [port] = await freeUdpPorts(1);
  if (port === undefined) throw new Error('no port');
  return port;
}
