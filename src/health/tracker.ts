import type { Endpoint } from '../pool.js';
import type { Timers } from '../timers.js';
import type { HealthReason, HealthState } from '../types.js';
import type { HealthSettings } from './settings.js';

/** What the tracker needs from the balancer. */
export interface TrackerHost<B> {
  readonly now: () => number;
  readonly random: () => number;
  readonly timers: Timers;
  /** Every backend in the pool. */
  endpoints(): Iterable<Endpoint<B>>;
  /** The pickable set or an effective weight changed: rebuild the pickers. */
  changed(): void;
  /** A backend changed state. */
  transitioned(ep: Endpoint<B>, from: HealthState, to: HealthState, reason: HealthReason): void;
}

/** A check of one backend in progress, and its timers. */
interface ProbeState {
  timer: unknown;
  /** The timeout of the check in progress. */
  timeout: unknown;
  controller: AbortController | undefined;
  /** The probe's promise has not settled yet (it may outlive its timeout). */
  pending: boolean;
}

/**
 * The health state machine of every backend. A backend's state follows from its flags:
 * down while an operator or its checks hold it down, else ejected while an ejection lasts, else in
 * slow start while its weight ramps, else healthy. Every change of state is reported once, with
 * the reason of the change that caused it, and makes the balancer rebuild its pickers.
 */
export class HealthTracker<B> {
  private readonly attached = new Set<Endpoint<B>>();
  private readonly probes = new Map<Endpoint<B>, ProbeState>();
  private readonly ejections = new Map<Endpoint<B>, unknown>();
  private rampTimer: unknown;
  private closed = false;

  constructor(
    private readonly settings: HealthSettings<B>,
    private readonly host: TrackerHost<B>,
    /** Whether effective weights ramp during slow start (not for hash pickers). */
    private readonly ramps: boolean,
  ) {}

  /** Starts tracking a backend. `spread` places its first check in the interval; `joining` means added to a running pool. */
  attach(ep: Endpoint<B>, spread: number, joining: boolean): void {
    this.attached.add(ep);
    const active = this.settings.active;
    if (active !== undefined) {
      ep.probeDown = active.startDown;
      const probe: ProbeState = { timer: undefined, timeout: undefined, controller: undefined, pending: false };
      this.probes.set(ep, probe);
      if (!this.closed) this.schedule(ep, probe, spread * active.intervalMs);
    }
    if (joining && !ep.probeDown) this.startRamp(ep);
    ep.state = this.derive(ep);
    ep.effectiveWeight = ep.weight * ep.rampFactor;
  }

  /** Stops tracking a removed backend: its timers stop and its check in progress is aborted. */
  detach(ep: Endpoint<B>): void {
    this.attached.delete(ep);
    this.stopRamp(ep);
    const probe = this.probes.get(ep);
    if (probe !== undefined) {
      this.host.timers.clearTimeout(probe.timer);
      this.host.timers.clearTimeout(probe.timeout);
      probe.controller?.abort(new Error('backend removed'));
      this.probes.delete(ep);
    }
    const ejection = this.ejections.get(ep);
    if (ejection !== undefined) this.host.timers.clearTimeout(ejection);
    this.ejections.delete(ep);
  }

  /** A request ended: passive outlier detection. */
  observe(ep: Endpoint<B>, ok: boolean): void {
    const passive = this.settings.passive;
    // A removed backend's last requests still release; they no longer count.
    if (passive === undefined || this.closed || !this.attached.has(ep)) return;
    if (ok) {
      ep.passiveFailures = 0;
      return;
    }
    ep.passiveFailures++;
    if (ep.passiveFailures < passive.consecutiveFailures) return;
    // The count restarts whether or not this ejects (as Envoy's consecutive_5xx): a backend the
    // cap spared needs a new run of failures, not one more.
    ep.passiveFailures = 0;
    if (ep.state !== 'healthy' && ep.state !== 'slow-start') return;
    if (!this.mayEject()) return;
    const now = this.host.now();
    // A backend earns one step of its ejection multiplier back per baseEjectionMs spent healthy.
    if (ep.restoredAt !== undefined) {
      const earned = Math.floor((now - ep.restoredAt) / passive.baseEjectionMs);
      ep.ejectionLevel = Math.max(0, ep.ejectionLevel - earned);
    }
    ep.ejectionLevel++;
    ep.ejections++;
    const duration = Math.min(passive.baseEjectionMs * ep.ejectionLevel, passive.maxEjectionMs);
    ep.ejectedUntil = now + duration;
    this.ejections.set(
      ep,
      this.host.timers.setTimeout(() => this.restore(ep), duration),
    );
    this.update(ep, 'passive');
  }

  /** Operator drain (HAProxy `set server state maint`). Checks go on, but cannot bring it back. */
  markDown(ep: Endpoint<B>): void {
    ep.manualDown = true;
    this.update(ep, 'manual');
  }

  /** Operator return: clears the drain, a failed check state and an ejection. */
  markUp(ep: Endpoint<B>): void {
    const wasUp = ep.state === 'healthy' || ep.state === 'slow-start';
    ep.manualDown = false;
    ep.probeDown = false;
    ep.consecutiveFailures = 0;
    this.endEjection(ep);
    if (!wasUp) this.startRamp(ep);
    this.update(ep, 'manual');
  }

  /** Stops every timer and aborts every check in progress. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // No timer will run again: finish the ramps and the ejections now rather than leave backends
    // at a fraction of their weight, or ejected, for good.
    for (const ep of this.attached) {
      if (ep.rampStart === undefined && ep.ejectedUntil === 0) continue;
      this.stopRamp(ep);
      this.endEjection(ep);
      this.update(ep, 'recovered');
    }
    for (const [, probe] of this.probes) {
      this.host.timers.clearTimeout(probe.timer);
      this.host.timers.clearTimeout(probe.timeout);
      probe.controller?.abort(new Error('balancer closed'));
    }
    for (const [, timer] of this.ejections) this.host.timers.clearTimeout(timer);
    this.ejections.clear();
    if (this.rampTimer !== undefined) this.host.timers.clearTimeout(this.rampTimer);
    this.rampTimer = undefined;
  }

  /** The state a backend's flags imply. */
  private derive(ep: Endpoint<B>): HealthState {
    if (ep.manualDown || ep.probeDown) return 'down';
    if (ep.ejectedUntil > 0) return 'ejected';
    if (ep.rampStart !== undefined) return 'slow-start';
    return 'healthy';
  }

  /** Re-derives the state; on a change, records it, reports it and has the pickers rebuilt. */
  private update(ep: Endpoint<B>, reason: HealthReason): void {
    const from = ep.state;
    const to = this.derive(ep);
    ep.effectiveWeight = ep.weight * ep.rampFactor;
    if (to === from) {
      this.host.changed(); // the weight may have changed
      return;
    }
    ep.state = to;
    this.host.changed();
    this.host.transitioned(ep, from, to, reason);
  }

  private mayEject(): boolean {
    const passive = this.settings.passive as NonNullable<HealthSettings<B>['passive']>;
    let total = 0;
    let ejected = 0;
    for (const ep of this.host.endpoints()) {
      total++;
      if (ep.ejectedUntil > 0) ejected++;
    }
    if ((ejected + 1) * 100 <= passive.maxEjectedPercent * total) return true;
    return ejected === 0 && total >= 2;
  }

  private restore(ep: Endpoint<B>): void {
    this.ejections.delete(ep);
    if (this.closed) return;
    this.endEjection(ep);
    if (!ep.manualDown && !ep.probeDown) this.startRamp(ep);
    this.update(ep, 'recovered');
  }

  private endEjection(ep: Endpoint<B>): void {
    if (ep.ejectedUntil === 0) return;
    const timer = this.ejections.get(ep);
    if (timer !== undefined) this.host.timers.clearTimeout(timer);
    this.ejections.delete(ep);
    ep.ejectedUntil = 0;
    ep.restoredAt = this.host.now();
  }

  // --- active checks -------------------------------------------------------------------------

  private schedule(ep: Endpoint<B>, probe: ProbeState, delayMs: number): void {
    probe.timer = this.host.timers.setTimeout(() => this.check(ep, probe), delayMs);
  }

  private nextDelay(): number {
    const active = this.settings.active as ActiveOf<B>;
    return active.intervalMs * (1 + active.jitter * (2 * this.host.random() - 1));
  }

  private check(ep: Endpoint<B>, probe: ProbeState): void {
    const active = this.settings.active as ActiveOf<B>;
    if (this.closed || this.probes.get(ep) !== probe) return;
    if (probe.pending) {
      // The last check outlived its timeout and has still not settled: never run two at once.
      this.result(ep, false, 0);
      this.schedule(ep, probe, this.nextDelay());
      return;
    }
    const controller = new AbortController();
    const started = this.host.now();
    let settled = false;
    probe.controller = controller;
    probe.pending = true;
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      this.host.timers.clearTimeout(probe.timeout);
      probe.timeout = undefined;
      probe.controller = undefined;
      if (this.closed || this.probes.get(ep) !== probe) return;
      this.result(ep, ok, this.host.now() - started);
      this.schedule(ep, probe, this.nextDelay());
    };
    probe.timeout = this.host.timers.setTimeout(() => {
      controller.abort(new Error(`health check timed out after ${active.timeoutMs} ms`));
      finish(false);
    }, active.timeoutMs);
    let outcome: boolean | Promise<boolean>;
    try {
      outcome = active.probe(ep.backend, controller.signal);
    } catch {
      outcome = false;
    }
    Promise.resolve(outcome).then(
      (ok) => {
        probe.pending = false;
        finish(ok === true);
      },
      () => {
        probe.pending = false;
        finish(false);
      },
    );
  }

  private result(ep: Endpoint<B>, ok: boolean, durationMs: number): void {
    const active = this.settings.active as ActiveOf<B>;
    ep.lastCheckOk = ok;
    ep.lastCheckAt = this.host.now();
    ep.lastCheckMs = durationMs;
    if (ok) {
      ep.consecutiveSuccesses++;
      ep.consecutiveFailures = 0;
      if (ep.probeDown && ep.consecutiveSuccesses >= active.rise) {
        ep.probeDown = false;
        if (!ep.manualDown && ep.ejectedUntil === 0) this.startRamp(ep);
        this.update(ep, 'probe');
      }
    } else {
      ep.consecutiveFailures++;
      ep.consecutiveSuccesses = 0;
      if (!ep.probeDown && ep.consecutiveFailures >= active.fall) {
        ep.probeDown = true;
        this.stopRamp(ep);
        this.update(ep, 'probe');
      }
    }
  }

  // --- slow start ----------------------------------------------------------------------------

  private startRamp(ep: Endpoint<B>): void {
    if (!this.ramps || this.settings.slowStartMs <= 0 || this.closed) return;
    ep.rampStart = this.host.now();
    ep.rampFactor = 0.1;
    this.ensureRampTimer();
  }

  private stopRamp(ep: Endpoint<B>): void {
    ep.rampStart = undefined;
    ep.rampFactor = 1;
  }

  private ensureRampTimer(): void {
    if (this.rampTimer !== undefined || this.closed) return;
    const step = Math.max(this.settings.slowStartMs / 20, 10);
    this.rampTimer = this.host.timers.setTimeout(() => {
      this.rampTimer = undefined;
      this.rampTick();
    }, step);
  }

  /** Raises each ramping backend's effective weight; the ramp ends at 100%. */
  private rampTick(): void {
    if (this.closed) return;
    const { slowStartMs, slowStartAggression } = this.settings;
    const now = this.host.now();
    let ramping = false;
    for (const ep of this.host.endpoints()) {
      if (ep.rampStart === undefined) continue;
      const t = (now - ep.rampStart) / slowStartMs;
      if (t >= 1) {
        this.stopRamp(ep);
        this.update(ep, 'recovered');
        continue;
      }
      ep.rampFactor = 0.1 + 0.9 * Math.max(0, t) ** (1 / slowStartAggression);
      ep.effectiveWeight = ep.weight * ep.rampFactor;
      ramping = true;
    }
    this.host.changed();
    if (ramping) this.ensureRampTimer();
  }
}

type ActiveOf<B> = NonNullable<HealthSettings<B>['active']>;
