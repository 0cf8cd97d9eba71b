import { createServer } from 'node:http';
import { createBalancer } from 'fairpick';

// Two small web servers on loopback, standing in for your upstreams.
const servers = await Promise.all(
  ['web1', 'web2'].map(
    (name) =>
      new Promise((resolve) => {
        const server = createServer((_req, res) => res.end(name));
        server.listen(0, '127.0.0.1', () => resolve(server));
      }),
  ),
);

const lb = createBalancer({
  algorithm: 'least-connections',
  backends: servers.map((server, i) => ({
    id: `web${i + 1}`,
    url: `http://127.0.0.1:${server.address().port}`,
    weight: i === 0 ? 2 : 1, // web1 takes twice the share of web2
  })),
});

const answers = { web1: 0, web2: 0 };
await Promise.all(
  Array.from({ length: 30 }, async () => {
    const slot = lb.acquire(); // choose a backend and count the request in flight
    const started = performance.now();
    try {
      const res = await fetch(`${slot.backend.url}/hello`);
      answers[await res.text()]++;
      slot.release({ ok: res.ok, latencyMs: performance.now() - started });
    } catch (error) {
      slot.release({ ok: false });
      throw error;
    }
  }),
);

console.log('answers:', answers);
for (const s of lb.stats()) console.log(`${s.id}: weight ${s.weight}, picks ${s.picks}, in flight ${s.inFlight}`);
lb.close();
for (const server of servers) server.close();
