import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import type { Dispatcher } from 'undici';
import { describe, expectTypeOf, it } from 'vitest';
import { type BalancedFetch, balancedFetch } from '../src/fetch/index.js';
import { type BackendStats, type Balancer, createBalancer, type Slot } from '../src/index.js';
import { createBalancedAgent, createBalancedHttpsAgent } from '../src/node/index.js';
import { BalancedDispatcher } from '../src/undici/index.js';

interface Upstream {
  readonly id: string;
  readonly url: string;
}

describe('createBalancer is generic in the backend type', () => {
  it('hands back the declared backend type from pick, acquire, get and backends', () => {
    const lb = createBalancer<Upstream>({ algorithm: 'p2c', backends: [{ id: 'a', url: 'http://127.0.0.1:1' }] });
    expectTypeOf(lb).toEqualTypeOf<Balancer<Upstream>>();
    expectTypeOf(lb.pick()).toEqualTypeOf<Upstream>();
    expectTypeOf(lb.pick().url).toBeString();
    expectTypeOf(lb.acquire()).toEqualTypeOf<Slot<Upstream>>();
    expectTypeOf(lb.acquire().backend).toEqualTypeOf<Upstream>();
    expectTypeOf(lb.get('a')).toEqualTypeOf<Upstream | undefined>();
    expectTypeOf(lb.backends).toEqualTypeOf<readonly Upstream[]>();
    expectTypeOf(lb.stats()).toEqualTypeOf<BackendStats[]>();
  });

  it('infers the backend type from the backends option', () => {
    const lb = createBalancer({ algorithm: 'random', backends: [{ id: 'a', host: '127.0.0.1', port: 80 }] });
    expectTypeOf(lb.pick().port).toBeNumber();
    expectTypeOf(lb.pick().host).toBeString();
  });

  it('types event payloads as the backend type', () => {
    const lb = createBalancer<Upstream>({ algorithm: 'random' });
    lb.on('added', (b) => expectTypeOf(b).toEqualTypeOf<Upstream>());
    expectTypeOf(lb.on('removed', () => {})).toEqualTypeOf<() => void>();
  });

  it('rejects options of another algorithm and misspelt algorithms at compile time', () => {
    // @ts-expect-error load belongs to p2c
    createBalancer({ algorithm: 'random', load: 'in-flight' });
    // @ts-expect-error no such algorithm
    createBalancer({ algorithm: 'fastest' });
    // @ts-expect-error load takes 'in-flight' or 'peak-ewma'
    createBalancer({ algorithm: 'p2c', load: 'latency' });
    // @ts-expect-error a backend needs an id
    createBalancer({ algorithm: 'random', backends: [{ url: 'x' }] });
  });
});

describe('the HTTP integrations take balancers of backends with a url', () => {
  it('accept a balancer of url backends and return fetch, a Dispatcher and agents', () => {
    const lb = createBalancer<Upstream>({
      algorithm: 'round-robin',
      backends: [{ id: 'a', url: 'http://127.0.0.1:1' }],
    });
    const f = balancedFetch(lb, { retries: 2, key: (r) => r.headers.get('x-user') ?? undefined });
    expectTypeOf(f).toEqualTypeOf<BalancedFetch>();
    expectTypeOf(f('/x')).toEqualTypeOf<Promise<Response>>();
    expectTypeOf(new BalancedDispatcher(lb, { connections: 8 })).toMatchTypeOf<Dispatcher>();
    expectTypeOf(createBalancedAgent(lb, { maxSockets: 4 })).toEqualTypeOf<HttpAgent>();
    expectTypeOf(createBalancedHttpsAgent(lb)).toEqualTypeOf<HttpsAgent>();
  });

  it('refuse a balancer whose backends have no url', () => {
    const lb = createBalancer({ algorithm: 'round-robin', backends: [{ id: 'a' }] });
    // @ts-expect-error backends need a url
    balancedFetch(lb);
    // @ts-expect-error backends need a url
    new BalancedDispatcher(lb);
    // @ts-expect-error backends need a url
    createBalancedAgent(lb);
  });

  it('name the agent affinity option hashKey, leaving key to TLS', () => {
    const lb = createBalancer<Upstream>({ algorithm: 'maglev' });
    createBalancedHttpsAgent(lb, { key: 'PEM', hashKey: (req) => req.path });
    // @ts-expect-error key is the TLS private key, not a function
    createBalancedAgent(lb, { key: (req: unknown) => String(req) });
  });
});
