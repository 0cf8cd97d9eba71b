import { connect } from 'node:net';

/**
 * Whether a service answers on 127.0.0.1:port. Integration tests skip with a visible reason when
 * it does not, except when FAIRPICK_REQUIRE_SERVICES=1 (set by .ci/run), where they must run.
 */
export async function serviceAvailable(port: number): Promise<boolean> {
  const up = await new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
  if (!up && process.env.FAIRPICK_REQUIRE_SERVICES === '1') {
    throw new Error(`FAIRPICK_REQUIRE_SERVICES=1 but nothing answers on 127.0.0.1:${port}`);
  }
  return up;
}

/** A name unique to this test run, for keys, tables and lease names. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6).toString(36)}`;
}
