/**
 * One proxy instance: `npm run proxy -- --config path/to/proxy.json [--check]`.
 *
 * The configuration is validated whole before anything listens; with `--check` the proxy only
 * validates it and exits (as `haproxy -c`). SIGTERM or SIGINT drain it gracefully and exit 0.
 */
import { parseArgs } from 'node:util';
import { formatIssue, loadConfig } from './src/config.js';
import { type ProxyHandle, startProxy } from './src/main.js';

const USAGE = 'usage: npm run proxy -- --config <file> [--check]';

async function main(): Promise<number> {
  let values: { config?: string | undefined; check?: boolean | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n${USAGE}\n`);
    return 1;
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.config === undefined) {
    process.stderr.write(`error: --config <file> is required\n${USAGE}\n`);
    return 1;
  }
  const file = values.config;
  const result = await loadConfig(file);
  if (!result.ok) {
    process.stderr.write(result.issues.map((issue) => `${formatIssue(issue)}\n`).join(''));
    return 1;
  }
  if (values.check === true) {
    process.stdout.write(`config ok: ${file}\n`);
    return 0;
  }
  let handle: ProxyHandle;
  try {
    handle = await startProxy(result.config);
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`);
    return 1;
  }
  let stopping = false;
  const stop = (): void => {
    // A second signal (Ctrl-C reaches the whole process group, and start.ts forwards SIGTERM too)
    // does not cut the drain short: it is bounded by timeouts.drainMs anyway.
    if (stopping) return;
    stopping = true;
    handle.close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`error while stopping: ${(error as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Started by start.ts with an IPC channel: if start.ts dies without stopping us, stop too.
  if (process.send !== undefined) process.on('disconnect', stop);
  return -1; // keep running
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
