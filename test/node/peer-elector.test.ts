import { createSocket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import type { Elector } from '../../src/index.js';
import { isFairpickError } from '../../src/index.js';
import { createPeerElector, type PeerElectorOptions } from '../../src/node/index.js';
import { freeUdpPorts } from '../support/ports.js';

const running: Elector[] = [];

afterEach(async () => {
  await Promise.all(running.splice(0).map((e) => e.stop()));
});

/** Polls `condition` until it holds, failing after a generous deadline (no duration is asserted). */
async function until(condition: () => boolean, what: string, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// Long enough that a loaded machine's pauses (a few hundred ms) are not mistaken for a dead leader:
// a standby takes over after about 3 adverts plus skew of silence.
const ADVERT = 150;

/** Simulates a crash: the node's socket closes without the resign advert a stop() sends. */
function crash(elector: Elector): void {
  const internals = elector as unknown as { socket: { close(): void } | undefined };
  internals.socket?.close();
  internals.socket = undefined;
}

/** Electors for `priorities`, each knowing all the others as peers. */
async function cluster(priorities: number[], extra: Partial<PeerElectorOptions>[] = []) {
  const ports = await freeUdpPorts(priorities.length);
  const make = (i: number) =>
    createPeerElector({
      name: 'pair',
      id: `node${i}`,
      bind: { host: '127.0.0.1', port: ports[i] as number },
      peers: ports.filter((_, j) => j !== i).map((port) => ({ host: '127.0.0.1', port })),
      priority: priorities[i] as number,
      advertMs: ADVERT,
      secret: 's3cret',
      ...extra[i],
    });
  const electors = priorities.map((_, i) => make(i));
  return { electors, ports };
}

describe('createPeerElector over loopback UDP', () => {
  it('two nodes: the higher priority leads; killing it (no resign) makes the other lead', async () => {
    const { electors } = await cluster([200, 100]);
    const [a, b] = electors as [Elector, Elector];
    running.push(a, b);
    const events: string[] = [];
    a.on('elected', () => events.push('a elected'));
    b.on('elected', () => events.push('b elected'));
    await a.start();
    await b.start();
    await until(() => a.isLeader, 'a leads');
    await new Promise((resolve) => setTimeout(resolve, 6 * ADVERT));
    expect(b.isLeader).toBe(false);
    expect(await b.leader()).toBe('node0');
    crash(a);
    await until(() => b.isLeader, 'b takes over');
    expect(events).toEqual(['a elected', 'b elected']);
  });

  it('a clean stop resigns and the other takes over; tokens grow', async () => {
    const { electors } = await cluster([200, 100]);
    const [a, b] = electors as [Elector, Elector];
    running.push(a, b);
    await a.start();
    await b.start();
    await until(() => a.isLeader, 'a leads');
    const first = a.token as number;
    await a.stop();
    await until(() => b.isLeader, 'b takes over after the resign');
    expect(b.token).toBeGreaterThan(first);
  });

  it('three nodes: a higher priority that returns preempts; with preempt false it waits', async () => {
    const { electors } = await cluster([100, 50, 200]);
    const [a, b, c] = electors as [Elector, Elector, Elector];
    running.push(a, b);
    await a.start();
    await b.start();
    await until(() => a.isLeader, 'a leads');
    running.push(c);
    const demoted: string[] = [];
    a.on('demoted', (e) => demoted.push(e.reason));
    await c.start();
    await until(() => c.isLeader && !a.isLeader, 'c preempts a');
    expect(demoted).toEqual(['preempted']);
    await until(() => !b.isLeader, 'b stays standby');
    // A node of higher priority with preempt: false does not take over from a running leader.
    await c.stop();
    await until(() => a.isLeader, 'a leads again');
    const { electors: again } = await cluster([100, 200], [{}, { preempt: false }]);
    const [low, high] = again as [Elector, Elector];
    running.push(low, high);
    await low.start();
    await until(() => low.isLeader, 'low leads');
    await high.start();
    await new Promise((resolve) => setTimeout(resolve, 6 * ADVERT));
    expect(high.isLeader).toBe(false);
    expect(low.isLeader).toBe(true);
  });

  it('ignores adverts with a bad HMAC or none', async () => {
    const { electors, ports } = await cluster([100, 150]);
    const [a] = electors as [Elector, Elector];
    running.push(a);
    await a.start();
    await until(() => a.isLeader, 'a leads alone');
    // A forger on b's port claims a higher priority: unsigned, then with a wrong signature.
    const forger = createSocket('udp4');
    await new Promise<void>((resolve) => forger.bind(ports[1], '127.0.0.1', resolve));
    const body = JSON.stringify({ v: 1, name: 'pair', id: 'node9', priority: 254, epoch: 99 });
    for (let i = 0; i < 10; i++) {
      forger.send(body, ports[0] as number, '127.0.0.1');
      forger.send(`${body}\n${'00'.repeat(32)}`, ports[0] as number, '127.0.0.1');
      await new Promise((resolve) => setTimeout(resolve, ADVERT / 2));
    }
    expect(a.isLeader).toBe(true);
    expect(await a.leader()).toBe('node0');
    await new Promise<void>((resolve) => forger.close(() => resolve()));
  });

  it('rejects bad options', () => {
    const base = {
      name: 'pair',
      id: 'a',
      bind: { host: '127.0.0.1', port: 1 },
      peers: [{ host: '127.0.0.1', port: 2 }],
    };
    for (const [bad, field] of [
      [{ ...base, priority: 255 }, 'options.priority'],
      [{ ...base, peers: [] }, 'options.peers'],
      [{ ...base, bind: { host: '127.0.0.1', port: 70000 } }, 'options.bind'],
      [{ ...base, advertMs: 0 }, 'options.advertMs'],
      [{ ...base, secret: '' }, 'options.secret'],
      [{ ...base, id: '' }, 'options.id'],
    ] as const) {
      let error: unknown;
      try {
        createPeerElector(bad as PeerElectorOptions);
      } catch (e) {
        error = e;
      }
      expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
      expect((error as Error).message).toContain(field);
    }
  });
});
