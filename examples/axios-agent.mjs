// An http.Agent that balances: axios (or got, or http.request) with no other change.
// Run it with `npm run build && node examples/axios-agent.mjs`.
import { createServer } from 'node:http';
import axios from 'axios';
import { createBalancer } from 'fairpick';
import { createBalancedAgent } from 'fairpick/node';

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
  algorithm: 'least-connections',
  backends: servers.map((server, i) => ({ id: `web${i + 1}`, url: `http://127.0.0.1:${server.address().port}` })),
});
const agent = createBalancedAgent(lb, { maxSockets: 32 }); // keep-alive pools, one per backend

// proxy: false, so an HTTP_PROXY in the environment does not take the requests elsewhere.
const api = axios.create({ baseURL: 'http://fairpick', httpAgent: agent, proxy: false });

const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => api.get(`/orders/${i}`).then((r) => r.data)));
console.log(answers.join('\n'));
for (const s of lb.stats()) console.log(`${s.id}: picks ${s.picks}, in flight ${s.inFlight}`);

agent.destroy();
lb.close();
for (const server of servers) server.close();
