/**
 * Client-side timeouts of examples/proxy: `timeouts.clientMs` (HAProxy's `timeout client`) and
 * `timeouts.tunnelMs` (`timeout tunnel`), in-process with real node:http backends on loopback.
 * Only outcomes are asserted (slot released, no failure charged, sockets closed, the access
 * line), never durations.
 */
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { send, type TestBackend, until } from './support-net.js';
import { backend, cleanups, closeAll, type LogEvent, proxy, type RunningProxy } from './support-proxy.js';

afterEach(closeAll);

function proxyFor(web: TestBackend, timeouts: Record<string, number>): Promise<RunningProxy> {
  return proxy({ backends: [{ id: 'web1', url: web.url }], timeouts });
}

/** The balancer's slots held, summed over the backends. */
function slotsHeld(p: RunningProxy): number {
  return p.handle.balancer.stats().reduce((sum, s) => sum + s.inFlight, 0);
}

function failures(p: RunningProxy): number {
  return p.handle.balancer.stats().reduce((sum, s) => sum + s.failures, 0);
}

function accessLines(p: RunningProxy): LogEvent[] {
  return p.events.filter((e) => e.event === 'access');
}

/** Waits until the exchange is over: nothing in flight, no slot held, its access line written. */
async function settled(p: RunningProxy, lines = 1): Promise<LogEvent> {
  await until(() => p.handle.inFlight === 0 && slotsHeld(p) === 0, 'the slot to be released');
  await until(() => accessLines(p).length >= lines, 'the access line');
  return accessLines(p)[lines - 1] as LogEvent;
}

interface RawClient {
  readonly socket: Socket;
  /** Starts reading (and recording) what the proxy sends; a client that never calls it never reads. */
  read(): void;
  received(): string;
  closed(): boolean;
}

/** A raw TCP client on the proxy's port. */
async function rawClient(port: number): Promise<RawClient> {
  const socket = connect(port, '127.0.0.1');
  cleanups.push(() => {
    socket.destroy();
  });
  let data = '';
  let isClosed = false;
  socket.on('error', () => {});
  socket.on('close', () => {
    isClosed = true;
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return {
    socket,
    read: () => {
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        data += chunk;
      });
    },
    received: () => data,
    closed: () => isClosed,
  };
}

describe('timeouts.clientMs (timeout client)', () => {
  it('closes a client that stops reading a streamed response, releases the slot, aborts the backend request', async () => {
    let backendClosed = false;
    let backendWrote = 0;
    const web1 = await backend('web1', (req, res) => {
      req.socket.on('close', () => {
        backendClosed = true;
      });
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 120);
      // An endless body, written as fast as the proxy takes it.
      const pump = (): void => {
        while (!res.destroyed) {
          backendWrote += chunk.length;
          if (!res.write(chunk)) return;
        }
      };
      res.on('drain', pump);
      pump();
    });
    const p = await proxyFor(web1, { clientMs: 300 });
    const client = await rawClient(p.port);
    // The client never reads (read() is not called): its socket stays paused.
    client.socket.write('GET /big HTTP/1.1\r\nHost: test\r\n\r\n');

    const line = await settled(p);
    expect(line.status).toBe(499);
    expect(line.error).toBe('client-timeout@web1');
    expect(line.backend).toBe('web1');
    expect(backendWrote).toBeGreaterThan(0);
    expect(failures(p)).toBe(0);
    await until(() => backendClosed, "the backend's connection to be closed");
    client.read(); // a paused socket does not see its connection close until it reads
    await until(() => client.closed(), "the client's connection to be closed");
    expect(p.handle.balancer.stats()[0]?.state).toBe('healthy');
  });

  it('closes a client that sends half of its Content-Length body and goes silent', async () => {
    let backendClosed = false;
    let received = 0;
    const web1 = await backend('web1', (req, res) => {
      req.socket.on('close', () => {
        backendClosed = true;
      });
      req.on('data', (chunk: Buffer) => {
        received += chunk.length;
      });
      req.on('end', () => res.end('thanks'));
    });
    const p = await proxyFor(web1, { clientMs: 300 });
    const client = await rawClient(p.port);
    client.read();
    client.socket.write('POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n');
    client.socket.write(Buffer.alloc(50_000, 97));

    const line = await settled(p);
    expect(line.status).toBe(499);
    expect(line.error).toBe('client-timeout@web1');
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(100_000);
    expect(failures(p)).toBe(0);
    await until(() => backendClosed, "the backend's connection to be closed");
    await until(() => client.closed(), "the client's connection to be closed");
    expect(client.received()).toBe(''); // no answer of the proxy's own
  });

  // The margins below (a chunk or byte every 100 ms against a 1 s timeout) leave room for a loaded
  // machine's pauses; what is tested is that the flow re-arms the timer, for longer than its span.
  it('does not cut a slow but flowing response (a chunk every 100 ms for 2 s, clientMs 1000)', async () => {
    const chunk = 'y'.repeat(256 * 1024); // larger than the socket's buffer: the client's reading is waited on
    const web1 = await backend('web1', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      let sent = 0;
      const timer = setInterval(() => {
        res.write(chunk);
        if (++sent === 20) {
          clearInterval(timer);
          res.end();
        }
      }, 100);
      res.on('close', () => clearInterval(timer));
    });
    const p = await proxyFor(web1, { clientMs: 1000 });
    const answer = await send(`${p.url}/slow`);
    expect(answer.status).toBe(200);
    expect(answer.body.length).toBe(20 * chunk.length);
    const line = await settled(p);
    expect(line.status).toBe(200);
    expect(line.error).toBeUndefined();
    expect(p.handle.balancer.stats()[0]?.successes).toBe(1);
  });

  it('does not time the client while the exchange waits on a slow backend after the body', async () => {
    const web1 = await backend('web1', (req, res) => {
      req.resume();
      req.on('end', () => setTimeout(() => res.end('late'), 2000));
    });
    const p = await proxyFor(web1, { clientMs: 1000 });
    const client = await rawClient(p.port);
    client.read();
    client.socket.write('POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n12345');
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.socket.write('67890');
    await until(() => client.received().endsWith('late'), 'the late answer');
    const line = await settled(p);
    expect(line.status).toBe(200);
    expect(line.error).toBeUndefined();
    expect(client.closed()).toBe(false); // the keep-alive connection stays
  });
});

describe('timeouts.tunnelMs (timeout tunnel)', () => {
  async function wsBackend(): Promise<{ web1: TestBackend; closed: () => number }> {
    let closedSockets = 0;
    const web1 = await backend('web1');
    web1.server.on('upgrade', (_req: IncomingMessage, socket: Socket, head: Buffer) => {
      socket.on('close', () => {
        closedSockets++;
      });
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n');
      if (head.length > 0) socket.write(head);
      socket.pipe(socket); // echo
    });
    return { web1, closed: () => closedSockets };
  }

  async function upgrade(port: number): Promise<RawClient> {
    const client = await rawClient(port);
    client.read();
    client.socket.write('GET /ws HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n');
    await until(() => client.received().includes('\r\n\r\n'), 'the 101');
    expect(client.received()).toMatch(/^HTTP\/1\.1 101 /);
    return client;
  }

  it('closes both sides of a tunnel idle beyond tunnelMs', async () => {
    const { web1, closed } = await wsBackend();
    const p = await proxyFor(web1, { tunnelMs: 300, clientMs: 100 });
    const client = await upgrade(p.port);
    client.socket.write('x');
    await until(() => client.received().endsWith('x'), 'the echo');

    await until(() => client.closed(), "the client's connection to be closed");
    await until(() => closed() === 1, "the backend's connection to be closed");
    const line = await settled(p);
    expect(line.status).toBe(101);
    expect(line.error).toBe('tunnel-timeout@web1');
    expect(failures(p)).toBe(0);
  });

  it('keeps a tunnel open while bytes flow (one every 100 ms for 2 s, tunnelMs 1000)', async () => {
    const { web1, closed } = await wsBackend();
    const p = await proxyFor(web1, { tunnelMs: 1000, clientMs: 100 });
    const client = await upgrade(p.port);
    const start = client.received().length;
    for (let i = 0; i < 20; i++) {
      client.socket.write('z');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await until(() => client.received().length - start === 20, 'twenty echoes');
    expect(client.closed()).toBe(false);
    expect(closed()).toBe(0);
    expect(p.handle.inFlight).toBe(1);

    client.socket.end();
    const line = await settled(p);
    expect(line.status).toBe(101);
    expect(line.error).toBeUndefined();
    await until(() => closed() === 1, "the backend's connection to be closed");
  });
});
