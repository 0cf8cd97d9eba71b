import { FairpickError } from './errors.js';
import type { BackendSettings } from './pool.js';

/** A short, readable rendering of a received value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string')
    return value.length > 60 ? `${JSON.stringify(value.slice(0, 60))}...` : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'symbol') return value.toString();
  return 'an object';
}

/** The error for a value that is not what a field expects. */
export function invalid(field: string, value: unknown, expected: string): FairpickError {
  return new FairpickError('ERR_INVALID_ARGUMENT', `${field} must be ${expected}; received ${describe(value)}`);
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function requireId(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw invalid(field, value, 'a non-empty string');
  return value;
}

export function requireWeight(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw invalid(field, value, 'a finite number >= 0');
  }
  return value;
}

export function requireMaxInFlight(
  value: unknown,
  field: string,
  expected = 'a positive integer (omit it for no limit)',
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalid(field, value, expected);
  }
  return value;
}

export function requireBoolean(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw invalid(field, value, 'true or false');
  return value;
}

export function requirePositiveNumber(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(field, value, 'a finite number > 0');
  }
  return value;
}

export function requireFunction<F>(value: unknown, field: string): F {
  if (typeof value !== 'function') throw invalid(field, value, 'a function');
  return value as F;
}

/** Validates one backend object and returns the settings fairpick reads from it. */
export function backendSettings(value: unknown, field: string): BackendSettings {
  if (!isObject(value)) throw invalid(field, value, 'an object with a non-empty string id');
  const id = requireId(value.id, `${field}.id`);
  const weight = value.weight === undefined ? 1 : requireWeight(value.weight, `${field}.weight`);
  const backup = value.backup === undefined ? false : requireBoolean(value.backup, `${field}.backup`);
  const maxInFlight =
    value.maxInFlight === undefined
      ? Number.POSITIVE_INFINITY
      : requireMaxInFlight(value.maxInFlight, `${field}.maxInFlight`);
  return { id, weight, backup, maxInFlight };
}

/** Validates a list of backends, ids unique, without changing anything. */
export function backendList(value: unknown, field: string): BackendSettings[] {
  if (!Array.isArray(value)) throw invalid(field, value, 'an array of backends');
  const seen = new Set<string>();
  const settings: BackendSettings[] = [];
  for (let i = 0; i < value.length; i++) {
    const s = backendSettings(value[i], `${field}[${i}]`);
    if (seen.has(s.id)) {
      throw new FairpickError(
        'ERR_INVALID_ARGUMENT',
        `${field}[${i}].id must be unique; received ${describe(s.id)}, which an earlier backend already uses`,
      );
    }
    seen.add(s.id);
    settings.push(s);
  }
  return settings;
}
