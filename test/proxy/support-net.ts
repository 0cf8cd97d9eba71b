/**
 * Helpers for the proxy tests: real `node:http` backends on loopback port 0, a plain HTTP client
 * without connection pooling, free ports, and polling for a condition (no fixed sleeps).
 */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface TestBackend {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  /** Every request the backend received, in order (method, url, headers). */
  readonly seen: { method: string; url: string; headers: IncomingMessage['headers'] }[];
  close(): Promise<void>;
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** The default answer: `hello from <name>` with `x-served-by`. */
export function helloHandler(name: string): Handler {
  return (_req, res) => {
    res.setHeader('x-served-by', name);
    res.end(`hello from ${name}`);
  };
}

export async function startBackend(name: string, handler: Handler = helloHandler(name)): Promise<TestBackend> {
  const seen: TestBackend['seen'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

export { freeTcpPort, freeUdpPort } from '../support/ports.js';

export interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly rawHeaders: readonly string[];
  readonly body: string;
}

/** One request on a fresh connection (no pooling), the whole body read. */
export function send(
  url: string,
  options: { method?: string; headers?: Record<string, string> | string[]; body?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Polls `condition` until it holds; fails after a generous deadline (a hang, not a slow machine). */
export async function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  deadlineMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}
