// A balanced fetch: requests to http://fairpick (or relative URLs) go to the backend the balancer
// picks, with retries on another backend. Run it with `npm run build && node examples/fetch.mjs`.
import { createServer } from 'node:http';
import { createBalancer } from 'fairpick';
import { balancedFetch } from 'fairpick/fetch';

// Three web servers on loopback; web3 answers 503 to everything, as an overloaded server would.
const servers = await Promise.all(
  ['web1', 'web2', 'web3'].map(
    (name) =>
      new Promise((resolve) => {
        const server = createServer((req, res) => {
          res.statusCode = name === 'web3' ? 503 : 200;
          res.end(`${name} answered ${req.method} ${req.url}\n`);
        });
        server.listen(0, '127.0.0.1', () => resolve(server));
      }),
  ),
);

const lb = createBalancer({
  algorithm: 'round-robin',
  backends: servers.map((server, i) => ({ id: `web${i + 1}`, url: `http://127.0.0.1:${server.address().port}` })),
  health: { passive: { consecutiveFailures: 3 } }, // three 5xx in a row eject a backend for 30 s
});

const fetch = balancedFetch(lb, { retries: 2, timeoutMs: 2000 });

const seen = {};
for (let i = 0; i < 30; i++) {
  const res = await fetch(`/items/${i}`); // relative: balanced
  const text = await res.text(); // reading the body ends the request's time in flight
  const who = text.split(' ')[0];
  seen[who] = (seen[who] ?? 0) + 1;
  if (res.status !== 200) throw new Error(`unexpected ${res.status}`);
}
console.log('30 requests, every one 200; answered by', seen);
for (const s of lb.stats())
  console.log(`${s.id}: ${s.state}, picks ${s.picks}, failures ${s.failures}, in flight ${s.inFlight}`);

lb.close();
for (const server of servers) server.close();
