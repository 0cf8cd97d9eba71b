import { FairpickError } from '../errors.js';
import type { BackendSpec } from '../types.js';
import { invalid, isObject, requireBoolean, requireFunction } from '../validate.js';
import type { HealthOptions } from './options.js';

/** Active-check settings with their defaults applied (HAProxy's). */
export interface ActiveSettings<B> {
  readonly probe: (backend: B, signal: AbortSignal) => boolean | Promise<boolean>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly rise: number;
  readonly fall: number;
  readonly jitter: number;
  readonly startDown: boolean;
}

/** Passive-ejection settings with their defaults applied (Envoy's). */
export interface PassiveSettings {
  readonly consecutiveFailures: number;
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  readonly maxEjectedPercent: number;
}

/** Health settings after validation. */
export interface HealthSettings<B> {
  readonly active: ActiveSettings<B> | undefined;
  readonly passive: PassiveSettings | undefined;
  readonly slowStartMs: number;
  readonly slowStartAggression: number;
  readonly panicThreshold: number;
}

const HEALTH_KEYS = ['active', 'passive', 'slowStartMs', 'slowStartAggression', 'panicThreshold'];
const ACTIVE_KEYS = ['probe', 'intervalMs', 'timeoutMs', 'rise', 'fall', 'jitter', 'startDown'];
const PASSIVE_KEYS = ['consecutiveFailures', 'baseEjectionMs', 'maxEjectionMs', 'maxEjectedPercent'];

/** Validates `options.health` whole and applies the defaults. */
export function healthSettings<B extends BackendSpec>(options: HealthOptions<B> | undefined): HealthSettings<B> {
  if (options === undefined) {
    return { active: undefined, passive: undefined, slowStartMs: 0, slowStartAggression: 1, panicThreshold: 0.5 };
  }
  if (!isObject(options as unknown)) throw invalid('options.health', options, 'an object');
  onlyKeys(options, HEALTH_KEYS, 'options.health');
  return {
    active: options.active === undefined ? undefined : activeSettings(options.active),
    passive: passiveSettings(options.passive),
    slowStartMs: number(options.slowStartMs, 'options.health.slowStartMs', 0, 0, Number.MAX_SAFE_INTEGER),
    slowStartAggression: positive(options.slowStartAggression, 'options.health.slowStartAggression', 1),
    panicThreshold: number(options.panicThreshold, 'options.health.panicThreshold', 0.5, 0, 1),
  };
}

function activeSettings<B>(value: unknown): ActiveSettings<B> {
  const field = 'options.health.active';
  if (!isObject(value)) throw invalid(field, value, 'an object with a probe function');
  onlyKeys(value, ACTIVE_KEYS, field);
  const probe = requireFunction<ActiveSettings<B>['probe']>(value.probe, `${field}.probe`);
  const intervalMs = positive(value.intervalMs, `${field}.intervalMs`, 2000);
  const timeoutMs = positive(value.timeoutMs, `${field}.timeoutMs`, Math.min(1000, intervalMs / 2));
  if (timeoutMs >= intervalMs) {
    throw invalid(`${field}.timeoutMs`, timeoutMs, `less than intervalMs (${intervalMs})`);
  }
  return {
    probe,
    intervalMs,
    timeoutMs,
    rise: count(value.rise, `${field}.rise`, 2),
    fall: count(value.fall, `${field}.fall`, 3),
    jitter: number(value.jitter, `${field}.jitter`, 0, 0, 0.99),
    startDown: value.startDown === undefined ? false : requireBoolean(value.startDown, `${field}.startDown`),
  };
}

function passiveSettings(value: unknown): PassiveSettings | undefined {
  const field = 'options.health.passive';
  if (value === undefined || value === false) return undefined;
  const o = value === true ? {} : value;
  if (!isObject(o)) throw invalid(field, value, 'true, false or an object');
  onlyKeys(o, PASSIVE_KEYS, field);
  const baseEjectionMs = positive(o.baseEjectionMs, `${field}.baseEjectionMs`, 30_000);
  const maxEjectionMs = positive(o.maxEjectionMs, `${field}.maxEjectionMs`, Math.max(300_000, baseEjectionMs));
  if (maxEjectionMs < baseEjectionMs) {
    throw invalid(`${field}.maxEjectionMs`, maxEjectionMs, `at least baseEjectionMs (${baseEjectionMs})`);
  }
  return {
    consecutiveFailures: count(o.consecutiveFailures, `${field}.consecutiveFailures`, 5),
    baseEjectionMs,
    maxEjectionMs,
    maxEjectedPercent: number(o.maxEjectedPercent, `${field}.maxEjectedPercent`, 10, 0, 100),
  };
}

function onlyKeys(value: object, allowed: readonly string[], field: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new FairpickError(
        'ERR_INVALID_ARGUMENT',
        `${field}.${key} is not a health option; expected only ${allowed.join(', ')}`,
      );
    }
  }
}

function positive(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(field, value, 'a finite number > 0');
  }
  return value;
}

function count(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalid(field, value, 'a positive integer');
  }
  return value;
}

function number(value: unknown, field: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw invalid(field, value, `a number from ${min} to ${max}`);
  }
  return value;
}
