import { ClientIpKey, RequestKey } from './hash/key.js';
import type { AlgorithmName, BalancerOptions } from './options.js';
import { createLeastConnectionsPicker } from './pickers/least-connections.js';
import { createMaglevFactory, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE } from './pickers/maglev.js';
import { createP2CPicker } from './pickers/p2c.js';
import type { PickerFactory } from './pickers/picker.js';
import { createRandomPicker } from './pickers/random.js';
import { createRendezvousFactory } from './pickers/rendezvous.js';
import { createRingHashFactory, DEFAULT_MAX_RING_SIZE, DEFAULT_VNODES } from './pickers/ring-hash.js';
import { createRoundRobinPicker } from './pickers/round-robin.js';
import type { BackendSpec } from './types.js';
import { invalid } from './validate.js';

/** The options each built-in algorithm accepts beyond the common ones. */
export const ALGORITHM_OPTIONS: Readonly<Record<AlgorithmName, readonly string[]>> = {
  'round-robin': [],
  random: [],
  'least-connections': [],
  p2c: ['load', 'decayMs'],
  'ring-hash': ['vnodes', 'maxRingSize', 'boundedLoad'],
  maglev: ['tableSize', 'boundedLoad'],
  rendezvous: ['boundedLoad'],
  'ip-hash': ['method', 'ipv4Prefix', 'ipv6Prefix', 'vnodes', 'maxRingSize', 'tableSize', 'boundedLoad'],
};

/** The picker factory for a built-in algorithm, its options validated. */
export function builtInFactory<B extends BackendSpec>(
  algorithm: AlgorithmName,
  options: BalancerOptions<B>,
): PickerFactory<B> {
  const o = options as Readonly<Record<string, unknown>>;
  switch (algorithm) {
    case 'round-robin':
      return createRoundRobinPicker;
    case 'random':
      return createRandomPicker;
    case 'least-connections':
      return createLeastConnectionsPicker;
    case 'p2c': {
      const load = o.load ?? 'in-flight';
      if (load !== 'in-flight' && load !== 'peak-ewma') {
        throw invalid('options.load', load, "'in-flight' or 'peak-ewma'");
      }
      return (endpoints, env) => createP2CPicker(endpoints, env, load);
    }
    case 'ring-hash':
      return createRingHashFactory(ringSettings(o), new RequestKey(algorithm));
    case 'maglev':
      return createMaglevFactory(maglevSettings(o), new RequestKey(algorithm));
    case 'rendezvous':
      return createRendezvousFactory({ boundedLoad: boundedLoad(o) }, new RequestKey(algorithm));
    case 'ip-hash':
      return ipHashFactory(o);
  }
}

function ipHashFactory<B>(o: Readonly<Record<string, unknown>>): PickerFactory<B> {
  const method = o.method ?? 'maglev';
  if (method !== 'maglev' && method !== 'ring-hash' && method !== 'rendezvous') {
    throw invalid('options.method', method, "'maglev', 'ring-hash' or 'rendezvous'");
  }
  if (method !== 'ring-hash') {
    for (const key of ['vnodes', 'maxRingSize']) {
      if (o[key] !== undefined) throw invalid(`options.${key}`, o[key], "unset unless method is 'ring-hash'");
    }
  }
  if (method !== 'maglev' && o.tableSize !== undefined) {
    throw invalid('options.tableSize', o.tableSize, "unset unless method is 'maglev'");
  }
  const keys = new ClientIpKey(
    integerIn(o.ipv4Prefix, 'options.ipv4Prefix', 0, 32, 32),
    integerIn(o.ipv6Prefix, 'options.ipv6Prefix', 0, 128, 128),
  );
  if (method === 'ring-hash') return createRingHashFactory(ringSettings(o), keys);
  if (method === 'rendezvous') return createRendezvousFactory({ boundedLoad: boundedLoad(o) }, keys);
  return createMaglevFactory(maglevSettings(o), keys);
}

function ringSettings(o: Readonly<Record<string, unknown>>) {
  return {
    vnodes: integerIn(o.vnodes, 'options.vnodes', 1, 100_000, DEFAULT_VNODES),
    maxRingSize: integerIn(o.maxRingSize, 'options.maxRingSize', 1, 1 << 24, DEFAULT_MAX_RING_SIZE),
    boundedLoad: boundedLoad(o),
  };
}

function maglevSettings(o: Readonly<Record<string, unknown>>) {
  const tableSize = integerIn(o.tableSize, 'options.tableSize', 3, MAX_TABLE_SIZE, DEFAULT_TABLE_SIZE);
  if (!isPrime(tableSize)) throw invalid('options.tableSize', tableSize, 'a prime number (e.g. 65537)');
  return { tableSize, boundedLoad: boundedLoad(o) };
}

function boundedLoad(o: Readonly<Record<string, unknown>>): number | undefined {
  const c = o.boundedLoad;
  if (c === undefined) return undefined;
  if (typeof c !== 'number' || !Number.isFinite(c) || c <= 1) {
    throw invalid('options.boundedLoad', c, 'a finite number > 1 (e.g. 1.25)');
  }
  return c;
}

function integerIn(value: unknown, field: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(field, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}
