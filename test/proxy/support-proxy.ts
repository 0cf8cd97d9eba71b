/**
 * The in-process harness of the proxy tests: real backends and proxies on 127.0.0.1 port 0, the
 * proxy's JSON log captured as events, and everything closed after each test (register the file's
 * cleanup with `afterEach(closeAll)`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { formatIssue, parseConfig } from '../../examples/proxy/src/config.js';
import { type ProxyHandle, startProxy } from '../../examples/proxy/src/main.js';
import { expectNoOpenHandles } from '../support/handles.js';
import { startBackend, type TestBackend } from './support-net.js';

/** One line of the proxy's JSON log. */
export type LogEvent = Record<string, unknown> & { event: string };

/** A proxy started in this process. */
export interface RunningProxy {
  readonly handle: ProxyHandle;
  /** Every log line so far, parsed. */
  readonly events: LogEvent[];
  /** The service URL (empty while a standby does not listen). */
  readonly url: string;
  /** The service port (0 while a standby does not listen). */
  readonly port: number;
}

/** What `closeAll` closes, in reverse order of registration (proxies before their backends). */
export const cleanups: (() => Promise<void> | void)[] = [];

/** Closes everything registered since the last call; for `afterEach`. */
export async function closeAll(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await expectNoOpenHandles();
}

/** A real backend, closed by `closeAll`. */
export async function backend(
  name: string,
  handler?: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<TestBackend> {
  const started = await startBackend(name, handler);
  cleanups.push(() => started.close());
  return started;
}

/** A proxy from a raw config (listen and admin on port 0, JSON log, a short drain), closed by `closeAll`. */
export async function proxy(raw: Record<string, unknown>): Promise<RunningProxy> {
  const result = parseConfig({
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    log: { format: 'json' },
    ...raw,
    timeouts: { drainMs: 2000, ...(raw.timeouts as Record<string, unknown> | undefined) },
  });
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  const events: LogEvent[] = [];
  const handle = await startProxy(result.config, {
    log: {
      write: (chunk: string) => {
        for (const line of chunk.split('\n')) if (line.length > 0) events.push(JSON.parse(line) as LogEvent);
      },
    },
  });
  cleanups.push(() => handle.close());
  const url = handle.listenUrl ?? '';
  return { handle, events, url, port: url === '' ? 0 : Number(new URL(url).port) };
}
