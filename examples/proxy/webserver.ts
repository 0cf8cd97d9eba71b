/**
 * The demo web server behind the proxy:
 * `node --import tsx examples/proxy/webserver.ts --name web1 --listen 127.0.0.1:8001`.
 *
 * - `GET /health` answers 200 `ok`; every response carries `x-served-by: <name>`
 * - `GET /` (and any other path) answers `hello from <name>`
 * - `GET /slow?ms=N` answers after N ms; `GET /stream?chunks=N&ms=M` sends N chunks M ms apart
 * - `POST|PUT /echo` streams the request body back, the request headers as JSON in `x-echo-headers`
 * - `GET /status/<code>` answers that status
 * - an upgrade on `/ws` answers 101 (with a correct `Sec-WebSocket-Accept`) and echoes every byte
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

const { values } = parseArgs({ options: { name: { type: 'string' }, listen: { type: 'string' } } });
const name = values.name ?? 'web';
const listen = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(values.listen ?? '127.0.0.1:0');
if (listen === null) {
  process.stderr.write(`error: --listen must be host:port; received ${JSON.stringify(values.listen)}\n`);
  process.exit(1);
}
const host = (listen[1] as string).replace(/^\[|\]$/g, '');
const port = Number(listen[2]);

const sockets = new Set<Socket>();

function handle(req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('x-served-by', name);
  const url = new URL(req.url ?? '/', 'http://localhost');
  const path = url.pathname;
  const number = (key: string, fallback: number, max: number): number => {
    const n = Number(url.searchParams.get(key) ?? fallback);
    return Number.isFinite(n) && n >= 0 ? Math.min(n, max) : fallback;
  };
  if (path === '/health') {
    res.setHeader('content-type', 'text/plain');
    res.end('ok\n');
  } else if (path === '/echo' && (req.method === 'POST' || req.method === 'PUT')) {
    res.setHeader('x-echo-headers', JSON.stringify(req.headers));
    res.setHeader('content-type', req.headers['content-type'] ?? 'application/octet-stream');
    res.flushHeaders(); // the headers go out before the body has arrived: a streaming echo
    req.pipe(res);
  } else if (path === '/slow') {
    const timer = setTimeout(() => res.end(`slow answer from ${name}\n`), number('ms', 1000, 600_000));
    res.on('close', () => clearTimeout(timer));
  } else if (path === '/stream') {
    const chunks = number('chunks', 5, 10_000);
    const ms = number('ms', 100, 60_000);
    res.setHeader('content-type', 'text/plain');
    let sent = 0;
    const next = (): void => {
      if (res.destroyed) return;
      if (sent === chunks) {
        res.end();
        return;
      }
      sent++;
      res.write(`chunk ${sent} of ${chunks} from ${name}\n`);
      timer = setTimeout(next, ms);
    };
    let timer = setTimeout(next, 0);
    res.on('close', () => clearTimeout(timer));
  } else if (path.startsWith('/status/')) {
    const code = Number(path.slice('/status/'.length));
    if (!Number.isInteger(code) || code < 200 || code > 599) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('status must be 200-599\n');
    } else {
      res.writeHead(code, { 'content-type': 'text/plain' }).end(`status ${code} from ${name}\n`);
    }
  } else {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from ${name}\n`);
  }
}

const server = createServer(handle);
server.on('connection', (socket: Socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
});
server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
  const key = req.headers['sec-websocket-key'];
  if (!(req.url ?? '').startsWith('/ws') || typeof key !== 'string') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  const accept = createHash('sha1')
    .update(key + WEBSOCKET_GUID)
    .digest('base64');
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-served-by: ${name}\r\n\r\n`,
  );
  if (head.length > 0) socket.write(head);
  socket.on('error', () => socket.destroy());
  socket.pipe(socket); // echo every byte
});

server.listen(port, host, () => {
  const address = server.address();
  const bound = typeof address === 'object' && address !== null ? address.port : port;
  const authority = host.includes(':') ? `[${host}]:${bound}` : `${host}:${bound}`;
  process.stdout.write(`${JSON.stringify({ event: 'listening', name, url: `http://${authority}` })}\n`);
});
server.on('error', (error: NodeJS.ErrnoException) => {
  process.stderr.write(`error: ${name} cannot listen on ${values.listen}: ${error.code ?? error.message}\n`);
  process.exit(1);
});

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // Upgraded sockets and slow answers are not waited for: a demo server stops at once.
  for (const socket of sockets) socket.destroy();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.send !== undefined) process.on('disconnect', stop);
