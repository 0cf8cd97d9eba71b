import { describe, expect, it } from 'vitest';
import { type Balancer, createBalancer, FairpickError, isFairpickError } from '../src/index.js';

interface Web {
  readonly id: string;
  readonly url?: string;
  readonly weight?: number;
  readonly backup?: boolean;
  readonly maxInFlight?: number;
}

function pool(): Balancer<Web> {
  return createBalancer<Web>({
    algorithm: 'least-connections',
    backends: [
      { id: 'a', url: 'http://127.0.0.1:1', weight: 2 },
      { id: 'b', url: 'http://127.0.0.1:2', maxInFlight: 3 },
    ],
  });
}

/** Everything observable about a balancer's configuration and counters. */
function observe(lb: Balancer<Web>) {
  return { backends: [...lb.backends], stats: lb.stats() };
}

/** Asserts that `fn` throws ERR_INVALID_ARGUMENT with a message matching `message`. */
function expectInvalid(fn: () => unknown, message: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(FairpickError);
  expect(isFairpickError(thrown, 'ERR_INVALID_ARGUMENT')).toBe(true);
  expect((thrown as FairpickError).message).toMatch(message);
}

describe('createBalancer rejects bad options', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['options not an object', 42, /options must be an object; received 42/],
    ['unknown algorithm', { algorithm: 'fastest' }, /options\.algorithm must be one of .*'p2c'.*; received "fastest"/],
    ['algorithm of the wrong type', { algorithm: 7 }, /options\.algorithm .*received 7/],
    [
      'backends not an array',
      { backends: { id: 'a' } },
      /options\.backends must be an array of backends; received an object/,
    ],
    ['backend not an object', { backends: ['a'] }, /options\.backends\[0\] must be an object .*received "a"/],
    ['backend null', { backends: [null] }, /options\.backends\[0\] must be an object .*received null/],
    [
      'missing id',
      { backends: [{ url: 'x' }] },
      /options\.backends\[0\]\.id must be a non-empty string; received undefined/,
    ],
    ['empty id', { backends: [{ id: '' }] }, /options\.backends\[0\]\.id must be a non-empty string; received ""/],
    ['numeric id', { backends: [{ id: 1 }] }, /options\.backends\[0\]\.id must be a non-empty string; received 1/],
    [
      'duplicate id',
      { backends: [{ id: 'a' }, { id: 'a' }] },
      /options\.backends\[1\]\.id must be unique; received "a"/,
    ],
    [
      'negative weight',
      { backends: [{ id: 'a', weight: -1 }] },
      /options\.backends\[0\]\.weight must be a finite number >= 0; received -1/,
    ],
    [
      'NaN weight',
      { backends: [{ id: 'a', weight: Number.NaN }] },
      /weight must be a finite number >= 0; received NaN/,
    ],
    ['infinite weight', { backends: [{ id: 'a', weight: Number.POSITIVE_INFINITY }] }, /weight .*received Infinity/],
    ['string weight', { backends: [{ id: 'a', weight: '2' }] }, /weight .*received "2"/],
    [
      'fractional maxInFlight',
      { backends: [{ id: 'a', maxInFlight: 1.5 }] },
      /maxInFlight must be a positive integer.*received 1\.5/,
    ],
    [
      'zero maxInFlight',
      { backends: [{ id: 'a', maxInFlight: 0 }] },
      /maxInFlight must be a positive integer.*received 0/,
    ],
    [
      'backup not a boolean',
      { backends: [{ id: 'a', backup: 'yes' }] },
      /backup must be true or false; received "yes"/,
    ],
    ['random not a function', { random: 0.5 }, /options\.random must be a function; received 0\.5/],
    ['now not a function', { now: 'x' }, /options\.now must be a function/],
    ['unknown option', { algorithm: 'random', weights: [] }, /options\.weights is not an option of createBalancer/],
    [
      'option of another algorithm',
      { algorithm: 'random', load: 'peak-ewma' },
      /options\.load applies to algorithm 'p2c', not 'random'/,
    ],
    [
      'bad p2c load',
      { algorithm: 'p2c', load: 'latency' },
      /options\.load must be 'in-flight' or 'peak-ewma'; received "latency"/,
    ],
    ['bad p2c decayMs', { algorithm: 'p2c', decayMs: 0 }, /options\.decayMs must be a finite number > 0; received 0/],
  ];
  it.each(cases)('%s', (_name, options, message) => {
    expectInvalid(() => createBalancer(options as never), message);
  });

  it('accepts an empty pool, whose pick throws ERR_NO_BACKEND', () => {
    const lb = createBalancer({ algorithm: 'random', backends: [] });
    expect(() => lb.pick()).toThrow(/the pool is empty/);
    expect(
      isFairpickError(
        catchError(() => lb.pick()),
        'ERR_NO_BACKEND',
      ),
    ).toBe(true);
  });
});

describe('membership calls reject bad input and change nothing', () => {
  const cases: Array<[string, (lb: Balancer<Web>) => unknown, RegExp]> = [
    [
      'add a duplicate id',
      (lb) => lb.add({ id: 'a' }),
      /backend\.id must be an id not already in the pool; received "a"/,
    ],
    ['add a non-object', (lb) => lb.add('c' as never), /backend must be an object/],
    ['add an empty id', (lb) => lb.add({ id: '' }), /backend\.id must be a non-empty string; received ""/],
    [
      'add a negative weight',
      (lb) => lb.add({ id: 'c', weight: -2 }),
      /backend\.weight must be a finite number >= 0; received -2/,
    ],
    [
      'add a bad maxInFlight',
      (lb) => lb.add({ id: 'c', maxInFlight: -1 }),
      /backend\.maxInFlight must be a positive integer/,
    ],
    ['remove an unknown id', (lb) => lb.remove('zz'), /id must be the id of a backend in the pool; received "zz"/],
    ['remove a non-string', (lb) => lb.remove(3 as never), /id must be a non-empty string; received 3/],
    ['markDown an unknown id', (lb) => lb.markDown('zz'), /id must be the id of a backend in the pool; received "zz"/],
    ['markUp an unknown id', (lb) => lb.markUp('zz'), /id must be the id of a backend in the pool; received "zz"/],
    [
      'update an unknown id',
      (lb) => lb.update('zz', { weight: 1 }),
      /id must be the id of a backend in the pool; received "zz"/,
    ],
    [
      'update with a bad weight',
      (lb) => lb.update('a', { weight: Number.NaN }),
      /patch\.weight must be a finite number >= 0; received NaN/,
    ],
    ['update with a negative weight', (lb) => lb.update('a', { weight: -1 }), /patch\.weight .*received -1/],
    [
      'update with a bad maxInFlight',
      (lb) => lb.update('a', { maxInFlight: 0 }),
      /patch\.maxInFlight must be a positive integer, or null for no limit; received 0/,
    ],
    ['update an unknown field', (lb) => lb.update('a', { id: 'x' } as never), /patch\.id cannot be updated/],
    ['update with a non-object', (lb) => lb.update('a', 5 as never), /patch must be an object/],
    [
      'update with a good weight and a bad backup',
      (lb) => lb.update('a', { weight: 9, backup: 1 as never }),
      /patch\.backup must be true or false/,
    ],
    [
      'set with a duplicate id',
      (lb) => lb.set([{ id: 'c' }, { id: 'c' }]),
      /backends\[1\]\.id must be unique; received "c"/,
    ],
    ['set with one bad backend', (lb) => lb.set([{ id: 'x' }, { id: 'y', weight: -1 }]), /backends\[1\]\.weight/],
    ['set with a non-array', (lb) => lb.set('a' as never), /backends must be an array of backends/],
    [
      'on an unknown event',
      (lb) => lb.on('up' as never, () => {}),
      /event must be 'added' or 'removed' or 'health' or 'panic'; received "up"/,
    ],
    ['on with a non-function', (lb) => lb.on('added', 1 as never), /listener must be a function; received 1/],
    ['pick with a non-object context', (lb) => lb.pick(5 as never), /ctx must be an object or undefined; received 5/],
    [
      'pick with exclude not a Set',
      (lb) => lb.pick({ exclude: ['a'] as never }),
      /ctx\.exclude must be a Set of backend ids/,
    ],
  ];
  it.each(cases)('%s', (_name, call, message) => {
    const lb = pool();
    const held = lb.acquire();
    const before = observe(lb);
    expectInvalid(() => call(lb), message);
    expect(observe(lb)).toEqual(before);
    held.release();
  });

  it('release with a bad result throws, yet counts the request out (a leaked slot would hold maxInFlight)', () => {
    const lb = pool();
    const slot = lb.acquire({ exclude: new Set(['a']) }); // b, maxInFlight 3
    expectInvalid(() => slot.release({ latencyMs: -1 }), /result\.latencyMs must be a finite number >= 0; received -1/);
    expect(lb.stats().reduce((sum, s) => sum + s.inFlight, 0)).toBe(0);
    expect(lb.stats().find((s) => s.id === 'b')).toMatchObject({ successes: 0, failures: 0, ewmaMs: 0 });
    expect(slot.release({ ok: true })).toBe(false);
    const other = lb.acquire();
    expectInvalid(() => other.release({ ok: 'yes' as never }), /result\.ok must be true or false/);
    expect(lb.stats().reduce((sum, s) => sum + s.inFlight, 0)).toBe(0);
    expect(other.release()).toBe(false);
  });
});

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  return undefined;
}
