import type { PickerEndpoint } from './pickers/picker.js';
import type { HealthState } from './types.js';

/** The settings of a backend after validation. */
export interface BackendSettings {
  readonly id: string;
  readonly weight: number;
  readonly backup: boolean;
  /** `Infinity` for no limit, so the admission test is one comparison. */
  readonly maxInFlight: number;
}

/**
 * One backend's state. A single class for every backend keeps the objects of one hidden
 * class, so the pickers' property reads stay monomorphic.
 */
export class Endpoint<B> implements PickerEndpoint<B> {
  readonly id: string;
  backend: B;
  weight: number;
  effectiveWeight: number;
  backup: boolean;
  maxInFlight: number;
  inFlight = 0;
  picks = 0;
  successes = 0;
  failures = 0;
  state: HealthState = 'healthy';
  // Health flags; the state follows from them (see HealthTracker).
  manualDown = false;
  probeDown = false;
  /** When the current ejection ends (balancer clock), or 0 when not ejected. */
  ejectedUntil = 0;
  ejections = 0;
  /** The multiplier of the next ejection's length, earned back while healthy. */
  ejectionLevel = 0;
  restoredAt: number | undefined = undefined;
  passiveFailures = 0;
  consecutiveSuccesses = 0;
  consecutiveFailures = 0;
  lastCheckOk: boolean | undefined = undefined;
  lastCheckAt = 0;
  lastCheckMs = 0;
  /** When slow start began, or undefined when not ramping. */
  rampStart: number | undefined = undefined;
  /** effectiveWeight = weight x rampFactor. */
  rampFactor = 1;

  /** Position in its tier's current snapshot, or -1 when not pickable. */
  index = -1;
  /** Peak-EWMA latency estimate (ms) as of `ewmaStamp`; read directly by the p2c picker. */
  ewmaCost = 0;
  ewmaStamp = 0;
  readonly decayMs: number;

  constructor(backend: B, settings: BackendSettings, decayMs: number) {
    this.id = settings.id;
    this.backend = backend;
    this.weight = settings.weight;
    this.effectiveWeight = settings.weight;
    this.backup = settings.backup;
    this.maxInFlight = settings.maxInFlight;
    this.decayMs = decayMs;
  }

  /** Whether a snapshot should include it: a state that takes traffic, and a weight above 0. */
  get pickable(): boolean {
    return this.effectiveWeight > 0 && (this.state === 'healthy' || this.state === 'slow-start');
  }

  /**
   * Records a latency observation (Finagle's peak EWMA). The estimate first decays to now, as it
   * does while idle; a report above it replaces it at once (the peak), and a lower report pulls
   * it towards the report by 1 - e^(-dt/decay), dt being the time since the previous report.
   */
  observeLatency(latencyMs: number, now: number): void {
    const w = Math.exp(-Math.max(now - this.ewmaStamp, 0) / this.decayMs);
    const current = this.ewmaCost * w;
    this.ewmaCost = latencyMs > current ? latencyMs : current * w + latencyMs * (1 - w);
    this.ewmaStamp = now;
  }

  /** The estimate decayed towards 0 for the time since the last observation, without changing it. */
  latencyAt(now: number): number {
    if (this.ewmaCost === 0) return 0;
    const dt = Math.max(now - this.ewmaStamp, 0);
    return this.ewmaCost * Math.exp(-dt / this.decayMs);
  }
}
