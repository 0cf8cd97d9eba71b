/**
 * Review findings for examples/proxy: each test reproduces a defect found in review (or pins a
 * behaviour that was checked), in-process with real node:http backends on loopback.
 */
import { type IncomingMessage, request, type ServerResponse } from 'node:http';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { freeTcpPort, until } from './support-net.js';
import { backend, cleanups, closeAll, proxy, type RunningProxy } from './support-proxy.js';

afterEach(closeAll);

function totalInFlight(p: RunningProxy): number {
  return p.handle.balancer.stats().reduce((sum, s) => sum + s.inFlight, 0);
}

/** A raw TCP client on the proxy's port that records everything it receives. */
async function rawClient(port: number): Promise<{ socket: Socket; received: () => string; closed: () => boolean }> {
  const socket = connect(port, '127.0.0.1');
  cleanups.push(() => {
    socket.destroy();
  });
  let data = '';
  let isClosed = false;
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    isClosed = true;
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => data, closed: () => isClosed };
}

describe('request smuggling', () => {
  it('refuses a request with both Content-Length and Transfer-Encoding; the backend sees nothing', async () => {
    const web1 = await backend('web1');
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write(
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    await until(() => c.closed(), 'the connection closed');
    expect(c.received()).toMatch(/^HTTP\/1\.1 400/);
    expect(web1.seen.map((r) => r.url)).not.toContain('/smuggled');
  });

  it('refuses a request with two different Content-Length headers', async () => {
    const web1 = await backend('web1');
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 10\r\n\r\nabcd');
    await until(() => c.closed(), 'the connection closed');
    expect(c.received()).toMatch(/^HTTP\/1\.1 400/);
    expect(web1.seen).toHaveLength(0);
  });

  it('refuses a request with two Host headers (RFC 9112 section 3.2); the backend sees nothing', async () => {
    const web1 = await backend('web1');
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('GET /two-hosts HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n');
    await until(() => c.received().includes('\r\n\r\n'), 'an answer');
    expect(c.received()).toMatch(/^HTTP\/1\.1 400/);
    expect(web1.seen).toHaveLength(0);
    await until(() => p.handle.inFlight === 0 && totalInFlight(p) === 0, 'the exchange over');
  });

  it('refuses an upgrade request with two Host headers', async () => {
    const web1 = await backend('web1');
    let upgrades = 0;
    web1.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      upgrades++;
      socket.destroy();
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write(
      'GET /ws HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
    );
    await until(() => c.closed(), 'the connection closed');
    expect(c.received()).toMatch(/^HTTP\/1\.1 400/);
    expect([upgrades, web1.seen.length]).toEqual([0, 0]);
    await until(() => p.handle.inFlight === 0 && totalInFlight(p) === 0, 'the exchange over');
  });
});

describe('headers', () => {
  it('keeps Host (and X-Forwarded-Host) when the client names Host in Connection', async () => {
    const web1 = await backend('web1');
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('GET /h HTTP/1.1\r\nHost: public.example\r\nConnection: keep-alive, Host\r\n\r\n');
    await until(() => c.received().includes('hello from web1'), 'the answer');
    expect(web1.seen[0]?.headers.host).toBe('public.example');
    expect(web1.seen[0]?.headers['x-forwarded-host']).toBe('public.example');
  });
});

describe('backpressure', () => {
  const TOTAL = 64 * 1024 * 1024;

  it('stops reading the backend while the client does not read', async () => {
    let written = 0;
    let waiting = false;
    let done = false;
    const chunk = Buffer.alloc(64 * 1024, 120);
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200, { 'content-length': String(TOTAL) });
      const pump = (): void => {
        waiting = false;
        while (written < TOTAL) {
          written += chunk.length;
          if (!res.write(chunk)) {
            waiting = true;
            res.once('drain', pump);
            return;
          }
        }
        done = true;
        res.end();
      };
      pump();
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.pause(); // reads nothing
    c.socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    // The backend ends up blocked on its socket, far from the end, and stays there.
    let blockedAt = -1;
    let stable = 0;
    await until(() => {
      if (done) return true;
      if (waiting && written === blockedAt) stable++;
      else stable = 0;
      blockedAt = written;
      return stable >= 20;
    }, 'the backend blocked');
    expect(done).toBe(false);
    expect(written).toBeLessThan(TOTAL / 2);
    c.socket.destroy();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });

  it('stops reading the client while the backend does not read the request body', async () => {
    let started = false;
    const web1 = await backend('web1', (req) => {
      started = true;
      req.pause(); // never reads the body, never answers
    });
    // A client that went away is not noticed while its socket is paused (nothing reads it): the
    // slot is then released by the response timeout, which runs while the backend does not read.
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { responseMs: 500, drainMs: 2000 } });
    const c = await rawClient(p.port);
    c.socket.write(`PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${TOTAL}\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 120);
    let sent = 0;
    let blocked = false;
    const pump = (): void => {
      blocked = false;
      while (sent < TOTAL) {
        sent += chunk.length;
        if (!c.socket.write(chunk)) {
          blocked = true;
          c.socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
    let blockedAt = -1;
    let stable = 0;
    await until(() => {
      if (blocked && sent === blockedAt) stable++;
      else stable = 0;
      blockedAt = sent;
      return started && stable >= 20;
    }, 'the client blocked');
    expect(sent).toBeLessThan(TOTAL / 2);
    c.socket.destroy();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });
});

describe('slots', () => {
  it('releases the slot when the client goes away in the middle of its request body', async () => {
    let backendSawClose = false;
    const web1 = await backend('web1', (req, res) => {
      req.resume();
      res.on('close', () => {
        backendSawClose = true;
      });
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst');
    await until(() => web1.seen.length === 1, 'the request at the backend');
    c.socket.destroy();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0 && backendSawClose, 'the slot released');
  });

  it('releases the slot when the backend breaks the connection mid-body', async () => {
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('part', () => setTimeout(() => res.socket?.destroy(), 20));
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => c.closed(), 'the client connection closed');
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });

  it('releases the slot of a refused upgrade once the response is relayed, even if the client keeps its socket', async () => {
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('no websocket here');
    });
    web1.server.removeAllListeners('upgrade'); // node:http answers upgrade requests through 'request' then
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => c.received().includes('no websocket here'), 'the refusal relayed');
    expect(c.received()).toMatch(/^HTTP\/1\.1 404/);
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });

  it('does not append a 504 to a refused upgrade whose body stalls', async () => {
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial body'); // and nothing more
    });
    const p = await proxy({
      backends: [{ id: 'web1', url: web1.url }],
      timeouts: { responseMs: 300, drainMs: 2000 },
    });
    const c = await rawClient(p.port);
    c.socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => c.closed(), 'the client connection closed');
    expect(c.received()).toMatch(/^HTTP\/1\.1 200/);
    expect(c.received()).not.toContain('504');
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });
});

describe('pipelining', () => {
  for (const second of ['held', 'answered'] as const) {
    it(`releases the slot of a pipelined request (${second} by the backend) when the client goes away`, async () => {
      const held: ServerResponse[] = [];
      const web1 = await backend('web1', (req, res) => {
        if (req.url === '/b' && second === 'answered') res.end('b');
        else held.push(res); // never answered
      });
      const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
      const c = await rawClient(p.port);
      c.socket.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
      // The answer to /b waits behind the one to /a, which never comes.
      await until(() => web1.seen.length === 2, 'both requests at the backend');
      c.socket.destroy();
      await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'both slots released');
      await until(() => p.events.filter((e) => e.event === 'access').length === 2, 'two access lines');
    });
  }

  it('answers pipelined requests in order and releases both slots', async () => {
    const web1 = await backend('web1', (req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('slow'), 100);
      else res.end('fast');
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => c.received().includes('fast'), 'both answers');
    expect(c.received().indexOf('slow')).toBeLessThan(c.received().indexOf('fast'));
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'both slots released');
  });
});

describe('upgrades and retries', () => {
  it('releases the slot of an upgrade whose client goes away before the backend answers (by the response timeout)', async () => {
    const web1 = await backend('web1');
    const held: Socket[] = [];
    web1.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', () => {});
      socket.on('end', () => socket.destroy());
      socket.resume(); // reads, so that it sees the proxy's close
      held.push(socket); // never answers
    });
    // Nothing reads the client's socket before the backend's 101, so its close is not seen then:
    // the slot is released by the response timeout (not forever held).
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { responseMs: 300, drainMs: 2000 } });
    const c = await rawClient(p.port);
    c.socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => held.length === 1 && totalInFlight(p) === 1, 'the upgrade at the backend');
    c.socket.destroy();
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
    await until(() => held[0]?.destroyed === true, 'the backend connection closed');
  });

  it('shutdown closes an open tunnel at the drain deadline and releases its slot', async () => {
    const web1 = await backend('web1');
    web1.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { drainMs: 200 } });
    const c = await rawClient(p.port);
    c.socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => c.received().includes('101'), 'the tunnel open');
    await p.handle.close();
    await until(() => c.closed(), 'the tunnel closed');
    expect(p.handle.inFlight).toBe(0);
  });

  it('retries a PUT with its body on the other backend after a connect error, body whole', async () => {
    const bodies: string[] = [];
    const web2 = await backend('web2', (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => {
        body += chunk;
      });
      req.on('end', () => {
        bodies.push(body);
        res.end('stored');
      });
    });
    const dead = `http://127.0.0.1:${await freeTcpPort()}`;
    const p = await proxy({
      backends: [
        { id: 'dead', url: dead },
        { id: 'web2', url: web2.url },
      ],
      health: { passive: false },
    });
    const c = await rawClient(p.port);
    c.socket.write('PUT /k HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world');
    await until(() => c.received().includes('stored'), 'the answer');
    expect(bodies).toEqual(['hello world']);
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slots released');
  });
});

describe('shutdown', () => {
  it('closes idle keep-alive client connections and finishes without waiting for drainMs', async () => {
    const web1 = await backend('web1');
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { drainMs: 60_000 } });
    const c = await rawClient(p.port);
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => c.received().includes('hello from web1'), 'the answer');
    let closed = false;
    const closing = p.handle.close().then(() => {
      closed = true;
    });
    await until(() => c.closed(), 'the idle client connection closed');
    await until(() => closed, 'the proxy closed', 10_000);
    await closing;
  });

  it('a keep-alive request in flight at shutdown finishes, and its connection closes after it', async () => {
    let answer: () => void = () => {};
    const web1 = await backend('web1', (_req, res) => {
      answer = () => res.end('done');
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }], timeouts: { drainMs: 60_000 } });
    const c = await rawClient(p.port);
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => web1.seen.length === 1, 'the request at the backend');
    let closed = false;
    const closing = p.handle.close().then(() => {
      closed = true;
    });
    answer();
    await until(() => c.received().includes('done'), 'the answer');
    await until(() => c.closed(), 'the client connection closed');
    await until(() => closed, 'the proxy closed', 10_000);
    await closing;
  });
});

describe('backend responses', () => {
  it('answers 502 to a response with both Content-Length and Transfer-Encoding', async () => {
    const raw = createNetServer((s) => {
      s.on('error', () => {});
      s.once('data', () =>
        s.end(
          'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled',
        ),
      );
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => raw.close(() => resolve())));
    const port = (raw.address() as { port: number }).port;
    const p = await proxy({ backends: [{ id: 'raw', url: `http://127.0.0.1:${port}` }] });
    const c = await rawClient(p.port);
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await until(() => c.closed(), 'the client connection closed');
    expect(c.received()).not.toContain('smuggled');
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });
});

describe('early answers', () => {
  it('releases the slot when the backend answers before the client has sent its whole body', async () => {
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(413, { connection: 'close' });
      res.end('too large');
    });
    const p = await proxy({ backends: [{ id: 'web1', url: web1.url }] });
    const c = await rawClient(p.port);
    c.socket.write('PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst');
    await until(() => c.received().includes('too large'), 'the answer');
    await until(() => totalInFlight(p) === 0 && p.handle.inFlight === 0, 'the slot released');
  });
});

void request;
