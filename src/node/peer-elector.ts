import { createHmac, timingSafeEqual } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import type { DemotedEvent, ElectedEvent, Elector, ElectorEvents } from '../election/elector.js';
import { FairpickError } from '../errors.js';
import { Emitter } from '../events.js';
import { monotonicNow } from '../runtime.js';
import { hostTimers, type Timers } from '../timers.js';
import { invalid, isObject, requireBoolean, requireId } from '../validate.js';

/** A UDP address. */
export interface PeerAddress {
  /** Host name or address, e.g. '10.0.0.2' or '127.0.0.1'. */
  readonly host: string;
  /** UDP port. */
  readonly port: number;
}

/** Options of {@link createPeerElector}. */
export interface PeerElectorOptions {
  /** The role's name; adverts for another name are ignored (keepalived's `virtual_router_id`). */
  readonly name: string;
  /** This node's unique id. */
  readonly id: string;
  /** Where this node listens for adverts. */
  readonly bind: PeerAddress;
  /** The other nodes (unicast peers). */
  readonly peers: readonly PeerAddress[];
  /**
   * 1-254; the higher wins (keepalived's `priority`).
   * @defaultValue 100
   */
  readonly priority?: number;
  /**
   * Time between a leader's adverts (keepalived's `advert_int`).
   * @defaultValue 1000
   */
  readonly advertMs?: number;
  /**
   * Whether a higher priority takes the role from a lower one.
   * @defaultValue true
   */
  readonly preempt?: boolean;
  /**
   * With `preempt`, how long a higher priority waits after it starts before it preempts
   * (keepalived's `preempt_delay`).
   * @defaultValue 0
   */
  readonly preemptDelayMs?: number;
  /** A secret shared by the nodes: adverts are signed with HMAC-SHA256 and unsigned or forged ones ignored. */
  readonly secret?: string;
  /** The clock. @defaultValue performance.now */
  readonly now?: () => number;
  /** The timers. @defaultValue the runtime's, unref'ed */
  readonly timers?: Timers;
}

interface Advert {
  readonly v: 1;
  readonly name: string;
  readonly id: string;
  readonly priority: number;
  readonly epoch: number;
}

/**
 * A leader elector for two or three hosts with no shared store: VRRP-like adverts over UDP unicast,
 * as keepalived. The leader sends an advert every `advertMs`; a standby that hears none for the
 * master-down interval, 3 x advertMs + (256 - priority) / 256 x advertMs, takes over, so the highest
 * priority alive wins the race. A leader that stops sends a priority-0 advert, and the standbys take
 * over after their skew time only. The token is an epoch that each new leader sets above every epoch
 * it has heard.
 *
 * **Split brain.** Like keepalived, this elects two leaders when the hosts cannot hear each other
 * (a network partition, a firewall dropping the adverts): each thinks the other is dead. The
 * tokens then offer no protection either, since nothing totally orders them. When that is
 * unacceptable, use a lease store (`MemoryLeaseStore` in one process, or the Redis and PostgreSQL
 * stores), which cannot elect two leaders.
 */
export function createPeerElector(options: PeerElectorOptions): Elector {
  return new PeerElector(options);
}

class PeerElector implements Elector {
  private readonly name: string;
  private readonly id: string;
  private readonly bind: PeerAddress;
  private readonly peers: readonly PeerAddress[];
  private readonly priority: number;
  private readonly advertMs: number;
  private readonly preempt: boolean;
  private readonly preemptDelayMs: number;
  private readonly secret: string | undefined;
  private readonly now: () => number;
  private readonly timers: Timers;
  private readonly emitter = new Emitter<ElectorEvents>();
  private socket: Socket | undefined;
  private master = false;
  private epoch = 0;
  private highestEpoch = 0;
  private startedAt = 0;
  private masterId: string | undefined;
  private advertTimer: unknown;
  private downTimer: unknown;

  constructor(options: PeerElectorOptions) {
    if (!isObject(options as unknown)) throw invalid('options', options, 'an object');
    this.name = requireId(options.name, 'options.name');
    this.id = requireId(options.id, 'options.id');
    this.bind = address(options.bind, 'options.bind');
    if (!Array.isArray(options.peers) || options.peers.length === 0) {
      throw invalid('options.peers', options.peers, 'a non-empty array of { host, port }');
    }
    this.peers = options.peers.map((p, i) => address(p, `options.peers[${i}]`));
    const priority = options.priority ?? 100;
    if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 1 || priority > 254) {
      throw invalid('options.priority', priority, 'an integer from 1 to 254 (0 means resign, 255 is reserved)');
    }
    this.priority = priority;
    this.advertMs = positive(options.advertMs, 'options.advertMs', 1000);
    this.preempt = options.preempt === undefined ? true : requireBoolean(options.preempt, 'options.preempt');
    this.preemptDelayMs =
      options.preemptDelayMs === undefined ? 0 : nonNegative(options.preemptDelayMs, 'options.preemptDelayMs');
    if (options.secret !== undefined && (typeof options.secret !== 'string' || options.secret.length === 0)) {
      throw invalid('options.secret', options.secret, 'a non-empty string');
    }
    this.secret = options.secret;
    this.now = options.now ?? monotonicNow;
    this.timers = options.timers ?? hostTimers;
  }

  get isLeader(): boolean {
    return this.master;
  }

  get token(): number | undefined {
    return this.master ? this.epoch : undefined;
  }

  async leader(): Promise<string | undefined> {
    return this.master ? this.id : this.masterId;
  }

  on<E extends keyof ElectorEvents>(event: E, listener: (payload: ElectorEvents[E]) => void): () => void {
    if (event !== 'elected' && event !== 'demoted' && event !== 'error') {
      throw invalid('event', event, "'elected', 'demoted' or 'error'");
    }
    return this.emitter.on(event, listener);
  }

  async start(): Promise<void> {
    if (this.socket !== undefined) return;
    const socket = createSocket({ type: this.bind.host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
    socket.on('message', (message) => this.receive(message));
    socket.on('error', (error) => this.emitter.emit('error', error));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.bind.port, this.bind.host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.unref();
    this.socket = socket;
    this.startedAt = this.now();
    this.armMasterDown();
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    if (socket === undefined) return;
    this.timers.clearTimeout(this.advertTimer);
    this.timers.clearTimeout(this.downTimer);
    if (this.master) {
      this.setMaster(false, 'stopped');
      await this.send(0); // resign: the standbys take over after their skew time
    }
    this.socket = undefined;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** 3 x advert + skew: the higher the priority, the sooner a standby takes over. */
  private masterDownMs(): number {
    return 3 * this.advertMs + this.skewMs();
  }

  private skewMs(): number {
    return ((256 - this.priority) / 256) * this.advertMs;
  }

  private armMasterDown(delayMs = this.masterDownMs()): void {
    this.timers.clearTimeout(this.downTimer);
    this.downTimer = this.timers.setTimeout(() => this.becomeMaster(), delayMs);
  }

  private becomeMaster(): void {
    if (this.socket === undefined || this.master) return;
    this.epoch = this.highestEpoch + 1;
    this.highestEpoch = this.epoch;
    this.masterId = this.id;
    this.setMaster(true);
    this.advertise();
  }

  private advertise(): void {
    if (!this.master || this.socket === undefined) return;
    void this.send(this.priority);
    this.advertTimer = this.timers.setTimeout(() => this.advertise(), this.advertMs);
  }

  private setMaster(master: boolean, reason: DemotedEvent['reason'] = 'preempted'): void {
    if (this.master === master) return;
    this.master = master;
    if (master) {
      const event: ElectedEvent = { token: this.epoch, at: this.now() };
      this.emitter.emit('elected', event);
    } else {
      this.timers.clearTimeout(this.advertTimer);
      this.emitter.emit('demoted', { token: this.epoch, reason, at: this.now() });
    }
  }

  private receive(message: Buffer): void {
    const advert = this.decode(message);
    if (advert === undefined || advert.name !== this.name || advert.id === this.id) return;
    this.highestEpoch = Math.max(this.highestEpoch, advert.epoch);
    if (advert.priority === 0) {
      // The master resigned: take over after the skew time only (VRRP).
      if (!this.master) this.armMasterDown(this.skewMs());
      return;
    }
    if (this.master) {
      // Another master: the higher priority (then the higher id) keeps the role.
      if (advert.priority > this.priority || (advert.priority === this.priority && advert.id > this.id)) {
        this.masterId = advert.id;
        this.setMaster(false, 'preempted');
        this.armMasterDown();
      }
      return;
    }
    this.masterId = advert.id;
    const mayPreempt =
      this.preempt && advert.priority < this.priority && this.now() - this.startedAt >= this.preemptDelayMs;
    if (mayPreempt) {
      // A lower-priority master: take the role now; it steps down when it hears our advert.
      this.becomeMaster();
      return;
    }
    this.armMasterDown();
  }

  private send(priority: number): Promise<void> {
    const socket = this.socket;
    if (socket === undefined) return Promise.resolve();
    const body = JSON.stringify({ v: 1, name: this.name, id: this.id, priority, epoch: this.epoch } satisfies Advert);
    const payload = this.secret === undefined ? body : `${body}\n${this.sign(body)}`;
    return Promise.all(
      this.peers.map(
        (peer) =>
          new Promise<void>((resolve) => {
            socket.send(payload, peer.port, peer.host, (error) => {
              if (error) this.emitter.emit('error', error);
              resolve();
            });
          }),
      ),
    ).then(() => undefined);
  }

  private sign(body: string): string {
    return createHmac('sha256', this.secret as string)
      .update(body)
      .digest('hex');
  }

  /** Parses an advert; `undefined` for anything malformed or, with a secret, not signed by it. */
  private decode(message: Buffer): Advert | undefined {
    let text = message.toString('utf8');
    if (this.secret !== undefined) {
      const cut = text.lastIndexOf('\n');
      if (cut < 0) return undefined;
      const expected = Buffer.from(this.sign(text.slice(0, cut)), 'hex');
      const given = Buffer.from(text.slice(cut + 1), 'hex');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
      text = text.slice(0, cut);
    }
    try {
      const a = JSON.parse(text) as Partial<Advert>;
      if (
        a.v !== 1 ||
        typeof a.name !== 'string' ||
        typeof a.id !== 'string' ||
        typeof a.priority !== 'number' ||
        typeof a.epoch !== 'number'
      ) {
        return undefined;
      }
      return a as Advert;
    } catch {
      return undefined;
    }
  }
}

function address(value: unknown, field: string): PeerAddress {
  if (
    !isObject(value) ||
    typeof value.host !== 'string' ||
    value.host.length === 0 ||
    !Number.isInteger(value.port) ||
    (value.port as number) < 0 ||
    (value.port as number) > 65535
  ) {
    throw new FairpickError(
      'ERR_INVALID_ARGUMENT',
      `${field} must be { host: string, port: integer 0-65535 }; received ${JSON.stringify(value)}`,
    );
  }
  return { host: value.host, port: value.port as number };
}

function positive(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw invalid(field, value, 'a number > 0');
  return value;
}

function nonNegative(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw invalid(field, value, 'a number >= 0');
  return value;
}
