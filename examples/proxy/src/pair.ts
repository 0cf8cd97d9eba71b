/**
 * The active/passive pair, as keepalived runs it for two HAProxy nodes: a UDP peer elector
 * (VRRP-like adverts, `fairpick/node`) makes one node the leader; only the leader serves. On each
 * transition the configured hook runs (keepalived's `notify_master` / `notify_backup`) with the
 * role and the fencing token in its environment, e.g. to move a virtual IP.
 */
import { spawn } from 'node:child_process';
import type { Elector } from 'fairpick';
import { createPeerElector } from 'fairpick/node';
import type { PairConfig } from './config.js';
import type { Logger } from './log.js';

/** The UDP election group: adverts for another name are ignored. */
export const ELECTION_NAME = 'fairpick-proxy';

/** What the pair tells the proxy. */
export interface PairHandlers {
  /** This node became the leader. */
  elected(token: number): void;
  /** This node stopped leading (another took over, or it resigned). */
  demoted(reason: string): void;
}

/** Longest a hook may run before it is killed. */
const HOOK_TIMEOUT_MS = 30_000;
/** Hook output kept for the log. */
const HOOK_OUTPUT_LIMIT = 4096;

export class Pair {
  private readonly elector: Elector;
  private leading = false;
  private currentToken: number | null = null;
  /** Hooks run one after the other, in the order of the transitions (an add before its delete). */
  private hooks: Promise<void> = Promise.resolve();

  constructor(
    private readonly name: string,
    private readonly config: PairConfig,
    private readonly log: Logger,
    handlers: PairHandlers,
  ) {
    this.elector = createPeerElector({
      name: ELECTION_NAME,
      id: name,
      bind: config.bind,
      peers: config.peers,
      priority: config.priority,
      preempt: config.preempt,
      advertMs: config.advertMs,
      ...(config.secret === null ? {} : { secret: config.secret }),
    });
    this.elector.on('elected', ({ token }) => {
      this.leading = true;
      this.currentToken = token;
      this.log.event('role', { role: 'leader', token });
      handlers.elected(token);
      this.runHook('onElected', this.config.onElected, { role: 'leader', token, reason: null });
    });
    this.elector.on('demoted', ({ token, reason }) => {
      this.leading = false;
      this.currentToken = null;
      this.log.event('role', { role: 'standby', reason, token });
      handlers.demoted(reason);
      this.runHook('onDemoted', this.config.onDemoted, { role: 'standby', token, reason });
    });
    this.elector.on('error', (error) => this.log.event('elector-error', { message: error.message }));
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The fencing token of the current leadership, or `null` on a standby. */
  get token(): number | null {
    return this.currentToken;
  }

  /** Binds the UDP socket and starts campaigning; rejects when the bind fails. */
  async start(): Promise<void> {
    this.log.event('role', { role: 'standby', reason: 'starting' });
    await this.elector.start();
  }

  /** Resigns at once when leading (a priority-0 advert: the peer takes over without waiting). */
  async stop(): Promise<void> {
    await this.elector.stop();
  }

  /** Resolves when the hooks started so far have finished, or after `timeoutMs`. */
  async hooksSettled(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.hooks, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private runHook(
    hook: 'onElected' | 'onDemoted',
    command: string | null,
    info: { role: string; token: number; reason: string | null },
  ): void {
    if (command === null) return;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      FAIRPICK_ROLE: info.role,
      FAIRPICK_TOKEN: String(info.token),
      FAIRPICK_NAME: this.name,
    };
    if (info.reason !== null) env.FAIRPICK_REASON = info.reason;
    this.hooks = this.hooks.then(() =>
      runCommand(command, env).then((result) => this.log.event('hook', { hook, command, ...result })),
    );
  }
}

interface HookResult {
  readonly code: number | null;
  readonly signal: string | null;
  readonly output: string;
}

/**
 * Runs a shell command and collects its output for the log (not inherited: with the JSON log
 * format every line on stdout must stay one JSON object).
 */
function runCommand(command: string, env: NodeJS.ProcessEnv): Promise<HookResult> {
  return new Promise((resolve) => {
    let output = '';
    const collect = (chunk: Buffer): void => {
      if (output.length < HOOK_OUTPUT_LIMIT) output += chunk.toString('utf8');
    };
    const child = spawn(command, {
      shell: true,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: HOOK_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error) => resolve({ code: null, signal: null, output: error.message }));
    child.on('close', (code, signal) =>
      resolve({ code, signal, output: output.slice(0, HOOK_OUTPUT_LIMIT).trimEnd() }),
    );
  });
}
