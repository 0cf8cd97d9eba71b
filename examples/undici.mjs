// An undici dispatcher that balances each request over one undici Pool per backend.
// Run it with `npm run build && node examples/undici.mjs`.
import { createServer } from 'node:http';
import { createBalancer } from 'fairpick';
import { BalancedDispatcher } from 'fairpick/undici';
import { fetch, request } from 'undici';

const servers = await Promise.all(
  ['web1', 'web2'].map(
    (name) =>
      new Promise((resolve) => {
        const server = createServer((req, res) => res.end(`${name} ${req.url}`));
        server.listen(0, '127.0.0.1', () => resolve(server));
      }),
  ),
);

const lb = createBalancer({
  algorithm: 'round-robin',
  backends: servers.map((server, i) => ({
    id: `web${i + 1}`,
    url: `http://127.0.0.1:${server.address().port}`,
    weight: i === 0 ? 3 : 1, // web1 takes three requests in four
  })),
});
// Pool options (connections, keep-alive timeouts…) apply to each backend's pool.
const dispatcher = new BalancedDispatcher(lb, { connections: 16, retries: 1 });

const answers = [];
for (let i = 0; i < 8; i++) {
  const { statusCode, body } = await request(`http://fairpick/users/${i}`, { dispatcher });
  answers.push(`${statusCode} ${await body.text()}`);
}
console.log(answers.join('\n'));

// undici's fetch takes the same dispatcher.
const res = await fetch('http://fairpick/health', { dispatcher });
console.log('fetch:', res.status, await res.text());

await dispatcher.close(); // closes every backend's pool once their requests are done
lb.close();
for (const server of servers) server.close();
