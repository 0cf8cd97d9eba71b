/**
 * Tests of `ip-hash`: the address parser (src/hash/ip.ts) and the balancer built on it
 * (src/algorithms.ts, src/hash/key.ts).
 *
 * Everything here is deterministic (zero tolerance). fast-check runs with pinned seeds and the
 * "random" addresses of the determinism test come from a seeded PRNG, so every run is identical.
 * Where a property could hold trivially (a balancer that always returns one backend would keep
 * every /24 together), a companion assertion shows the picks do vary; each such companion fails
 * for a correct implementation with probability below 1e-50 (stated where asserted).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIp } from '../src/hash/ip.js';
import {
  type BackendSpec,
  type Balancer,
  type BalancerOptions,
  createBalancer,
  FairpickError,
  isFairpickError,
} from '../src/index.js';
import { splitmix32Bits } from './support/util.js';

// ---------------------------------------------------------------------------------------------
// Helpers

/** Parses with the given prefixes into a buffer pre-filled with 0xaa; returns the bytes written. */
function parse(text: string, ipv4Prefix = 32, ipv6Prefix = 128): number[] | 0 {
  const out = new Uint8Array(16).fill(0xaa);
  const length = parseIp(text, out, ipv4Prefix, ipv6Prefix);
  if (length === 0) return 0;
  expect([4, 16]).toContain(length);
  return Array.from(out.subarray(0, length));
}

/** The 16 bytes of eight 16-bit groups, big-endian. */
function groups(...g: number[]): number[] {
  expect(g).toHaveLength(8);
  return g.flatMap((x) => [x >> 8, x & 0xff]);
}

const hex = (n: number) => n.toString(16);

const METHODS = ['maglev', 'ring-hash', 'rendezvous'] as const;
type Method = (typeof METHODS)[number];

const BACKENDS: readonly BackendSpec[] = Array.from({ length: 10 }, (_, i) => ({ id: `backend-${i}` }));

function ipHash(method: Method, extra: { ipv4Prefix?: number; ipv6Prefix?: number } = {}, backends = BACKENDS) {
  return createBalancer({ algorithm: 'ip-hash', method, backends, ...extra });
}

/** Builds a balancer from options the types would reject, to test run-time validation. */
const createUnchecked = (options: Record<string, unknown>) =>
  createBalancer(options as unknown as BalancerOptions<BackendSpec>);

/** Runs `fn`, expects a FairpickError, and returns it. */
function thrown(fn: () => unknown): FairpickError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(FairpickError);
    return error as FairpickError;
  }
  throw new Error('expected a FairpickError, but nothing was thrown');
}

const pickId = (lb: Balancer<BackendSpec>, clientIp: string) => lb.pick({ clientIp }).id;

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet);
const group = fc.integer({ min: 0, max: 0xffff });

// ---------------------------------------------------------------------------------------------
// parseIp: valid forms

describe('parseIp: valid addresses', () => {
  const V4 = [1, 2, 3, 4];
  it.each<[string, number[]]>([
    ['1.2.3.4', V4],
    ['0.0.0.0', [0, 0, 0, 0]],
    ['255.255.255.255', [255, 255, 255, 255]],
    ['10.0.100.1', [10, 0, 100, 1]],
    ['::', groups(0, 0, 0, 0, 0, 0, 0, 0)],
    ['::1', groups(0, 0, 0, 0, 0, 0, 0, 1)],
    ['1::', groups(1, 0, 0, 0, 0, 0, 0, 0)],
    ['2001:db8::1', groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)],
    ['1:2:3:4:5:6:7:8', groups(1, 2, 3, 4, 5, 6, 7, 8)],
    ['1:2:3:4:5:6:7::', groups(1, 2, 3, 4, 5, 6, 7, 0)],
    ['::2:3:4:5:6:7:8', groups(0, 2, 3, 4, 5, 6, 7, 8)],
    ['1:2::7:8', groups(1, 2, 0, 0, 0, 0, 7, 8)],
    ['2001:DB8::AbCd', groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xabcd)],
    ['FFFF:ffff:FfFf::', groups(0xffff, 0xffff, 0xffff, 0, 0, 0, 0, 0)],
    ['fe80::1%eth0', groups(0xfe80, 0, 0, 0, 0, 0, 0, 1)],
    ['fe80::1%1', groups(0xfe80, 0, 0, 0, 0, 0, 0, 1)],
    // IPv4-mapped, in every spelling: the 4 bytes of the IPv4 address.
    ['::ffff:1.2.3.4', V4],
    ['::FFFF:1.2.3.4', V4],
    ['::ffff:0102:0304', V4],
    ['::ffff:102:304', V4],
    ['0:0:0:0:0:ffff:1.2.3.4', V4],
    ['0:0:0:0:0:ffff:102:304', V4],
    ['0000:0000:0000:0000:0000:FFFF:0102:0304', V4],
    ['::ffff:1.2.3.4%eth0', V4],
    // Embedded IPv4 that is not mapped: a 16-byte IPv6 address.
    ['::1.2.3.4', [...groups(0, 0, 0, 0, 0, 0, 0, 0).slice(0, 12), 1, 2, 3, 4]],
    ['1:2:3:4:5:6:1.2.3.4', [...groups(1, 2, 3, 4, 5, 6, 0, 0).slice(0, 12), 1, 2, 3, 4]],
    ['64:ff9b::1.2.3.4', [...groups(0x64, 0xff9b, 0, 0, 0, 0, 0, 0).slice(0, 12), 1, 2, 3, 4]],
    ['::fffe:1.2.3.4', [...groups(0, 0, 0, 0, 0, 0xfffe, 0, 0).slice(0, 12), 1, 2, 3, 4]],
    ['1::ffff:1.2.3.4', [...groups(1, 0, 0, 0, 0, 0xffff, 0, 0).slice(0, 12), 1, 2, 3, 4]],
  ])('%j', (text, expected) => {
    expect(parse(text)).toEqual(expected);
  });

  it('property: any eight groups, fully expanded or with one run of zeros compressed to ::', () => {
    fc.assert(
      fc.property(
        fc.array(group, { minLength: 8, maxLength: 8 }),
        fc.nat(8),
        fc.nat(8),
        fc.boolean(),
        (g, a, b, upper) => {
          // Zero out groups [start, end) and compress them (when non-empty) to '::'.
          const start = Math.min(a, b);
          const end = Math.max(a, b);
          for (let i = start; i < end; i++) g[i] = 0;
          const parts = g.map((x) => (upper ? hex(x).toUpperCase() : hex(x)));
          const text =
            end - start >= 1 ? `${parts.slice(0, start).join(':')}::${parts.slice(end).join(':')}` : parts.join(':');
          const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
          const bytes = groups(...g);
          expect(parse(text)).toEqual(mapped ? bytes.slice(12) : bytes);
        },
      ),
      { seed: 0x69707636, numRuns: 2000 },
    );
  });

  it('property: any IPv4 address round-trips', () => {
    fc.assert(
      fc.property(ipv4, (q) => {
        expect(parse(q.join('.'))).toEqual(q);
      }),
      { seed: 0x69707634, numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// parseIp: invalid forms

describe('parseIp: invalid text returns 0', () => {
  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '1.2.3.256',
    '01.2.3.4',
    '1.2.3.04',
    '00.1.2.3',
    '1..2.3',
    '.1.2.3',
    '1.2.3.',
    '1.2.3.4.',
    '-1.2.3.4',
    '1.2.3.4:80',
    '1',
    '1::2::3',
    '::1::',
    ':1::',
    ':',
    ':::',
    ':::1',
    '1:::2',
    '1:',
    '1::2:',
    '1:2',
    '12345::',
    '00000::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8',
    '1::2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7',
    'g::1',
    '::g',
    '[::1]',
    'fe80::1%',
    '%eth0',
    ' 1.2.3.4',
    '1.2.3.4 ',
    ' ::1',
    '::1 ',
    '1.2.3.4%eth0',
    '::ffff:1.2.3.256',
    '::ffff:01.2.3.4',
    '::ffff:1.2.3',
    '::ffff:1.2.3.4.5',
    '::ffff:1.2.3.4:5',
    '1.2.3.4::',
    '1:2:3:4:5:6:7:1.2.3.4',
    '1:2:3:4:5:6::1.2.3.4',
    'localhost',
  ])('%j', (text) => {
    expect(parse(text)).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// parseIp: prefix masking

describe('parseIp: prefix masking', () => {
  it.each<[string, number, number[]]>([
    ['10.1.2.3', 32, [10, 1, 2, 3]],
    ['10.1.2.3', 24, [10, 1, 2, 0]],
    ['10.1.2.3', 16, [10, 1, 0, 0]],
    ['10.1.2.3', 8, [10, 0, 0, 0]],
    ['10.1.2.3', 0, [0, 0, 0, 0]],
    ['10.255.2.3', 12, [10, 0xf0, 0, 0]],
    ['255.255.255.255', 1, [0x80, 0, 0, 0]],
    ['255.255.255.255', 31, [255, 255, 255, 0xfe]],
    ['255.255.255.255', 20, [255, 255, 0xf0, 0]],
  ])('%s/%i', (text, prefix, expected) => {
    expect(parse(text, prefix, 128)).toEqual(expected);
  });

  const FULL = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  it.each<[string, number, number[]]>([
    ['2001:db8:1:2:3:4:5:6', 128, groups(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)],
    ['2001:db8:1:2:3:4:5:6', 64, groups(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0)],
    ['2001:db8:1:2:3:4:5:6', 48, groups(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)],
    ['2001:db8:1:2:3:4:5:6', 0, groups(0, 0, 0, 0, 0, 0, 0, 0)],
    [FULL, 127, groups(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe)],
    [FULL, 121, groups(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xff80)],
    [FULL, 56, groups(0xffff, 0xffff, 0xffff, 0xff00, 0, 0, 0, 0)],
    [FULL, 1, groups(0x8000, 0, 0, 0, 0, 0, 0, 0)],
    ['fe80::1%eth0', 64, groups(0xfe80, 0, 0, 0, 0, 0, 0, 0)],
  ])('%s/%i', (text, prefix, expected) => {
    expect(parse(text, 32, prefix)).toEqual(expected);
  });

  it('an IPv4-mapped address is masked with ipv4Prefix, not ipv6Prefix', () => {
    expect(parse('::ffff:10.1.2.3', 24, 128)).toEqual([10, 1, 2, 0]);
    expect(parse('::ffff:10.1.2.3', 32, 0)).toEqual([10, 1, 2, 3]);
    expect(parse('::ffff:0a01:0203', 8, 64)).toEqual([10, 0, 0, 0]);
  });

  it('ipv4Prefix leaves IPv6 addresses alone and ipv6Prefix leaves IPv4 addresses alone', () => {
    expect(parse('2001:db8::1', 0, 128)).toEqual(groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    expect(parse('10.1.2.3', 32, 0)).toEqual([10, 1, 2, 3]);
  });

  it('property: IPv4 masking keeps exactly the first p bits, for every p in 0..32', () => {
    fc.assert(
      fc.property(ipv4, fc.integer({ min: 0, max: 32 }), (q, p) => {
        const value = ((q[0] << 24) | (q[1] << 16) | (q[2] << 8) | q[3]) >>> 0;
        const kept = p === 0 ? 0 : (value & (0xffffffff << (32 - p))) >>> 0;
        expect(parse(q.join('.'), p, 128)).toEqual([
          kept >>> 24,
          (kept >>> 16) & 0xff,
          (kept >>> 8) & 0xff,
          kept & 0xff,
        ]);
      }),
      { seed: 0x6d736b34, numRuns: 1000 },
    );
  });

  it('property: IPv6 masking keeps exactly the first p bits, for every p in 0..128', () => {
    fc.assert(
      fc.property(
        fc.array(group, { minLength: 8, maxLength: 8 }).filter((g) => g[0] !== 0),
        fc.integer({ min: 0, max: 128 }),
        (g, p) => {
          const value = g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);
          const mask = ((1n << BigInt(p)) - 1n) << BigInt(128 - p);
          const kept = value & mask;
          const expected = Array.from({ length: 16 }, (_, i) => Number((kept >> BigInt(8 * (15 - i))) & 0xffn));
          expect(parse(g.map(hex).join(':'), 32, p)).toEqual(expected);
        },
      ),
      { seed: 0x6d736b36, numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The balancer: spellings of one client agree

describe.each(METHODS)("ip-hash with method '%s'", (method) => {
  it('property: a.b.c.d and its IPv4-mapped spellings pick the same backend', () => {
    const lb = ipHash(method);
    fc.assert(
      fc.property(ipv4, ([a, b, c, d]) => {
        const dotted = `${a}.${b}.${c}.${d}`;
        const hi = ((a << 8) | b).toString(16);
        const lo = ((c << 8) | d).toString(16);
        const expected = pickId(lb, dotted);
        for (const spelling of [
          `::ffff:${dotted}`,
          `::FFFF:${dotted}`,
          `0:0:0:0:0:ffff:${dotted}`,
          `::ffff:${hi}:${lo}`,
          `::ffff:${hi.padStart(4, '0')}:${lo.padStart(4, '0')}`,
          `::FFFF:${hi.toUpperCase()}:${lo.toUpperCase()}`,
        ]) {
          expect(pickId(lb, spelling)).toBe(expected);
        }
      }),
      { seed: 0x6d617070, numRuns: 300 },
    );
  });

  it('property: with ipv4Prefix 24, all 256 addresses of a /24 pick the same backend', () => {
    const lb = ipHash(method, { ipv4Prefix: 24 });
    fc.assert(
      fc.property(octet, octet, octet, (a, b, c) => {
        const expected = pickId(lb, `${a}.${b}.${c}.0`);
        for (let d = 1; d < 256; d++) expect(pickId(lb, `${a}.${b}.${c}.${d}`)).toBe(expected);
        expect(pickId(lb, `::ffff:${a}.${b}.${c}.${(a * 7 + 3) & 0xff}`)).toBe(expected);
      }),
      { seed: 0x32342020, numRuns: 50 },
    );
  });

  it('without a prefix the addresses of one /24 spread over several backends (the prefix is what groups them)', () => {
    // With 10 backends and a good hash, the 256 addresses of 10.1.2.0/24 all landing on one
    // backend has probability about 10 x 0.1^256: this cannot fail by chance.
    const lb = ipHash(method);
    const seen = new Set<string>();
    for (let d = 0; d < 256; d++) seen.add(pickId(lb, `10.1.2.${d}`));
    expect(seen.size).toBeGreaterThan(1);
  });

  it('property: with ipv6Prefix 64, addresses in the same /64 pick the same backend', () => {
    const lb = ipHash(method, { ipv6Prefix: 64 });
    const quad = fc.array(group, { minLength: 4, maxLength: 4 });
    fc.assert(
      fc.property(
        quad.filter((g) => g[0] !== 0),
        fc.array(quad, { minLength: 2, maxLength: 8 }),
        (prefix, suffixes) => {
          const head = prefix.map(hex).join(':');
          const expected = pickId(lb, `${head}::`);
          for (const s of suffixes) expect(pickId(lb, `${head}:${s.map(hex).join(':')}`)).toBe(expected);
        },
      ),
      { seed: 0x36342020, numRuns: 200 },
    );
  });

  it('without a prefix the addresses of one /64 spread over several backends', () => {
    // 256 addresses of one /64 on a single backend of 10: probability about 10 x 0.1^256.
    const lb = ipHash(method);
    const seen = new Set<string>();
    for (let i = 0; i < 256; i++) seen.add(pickId(lb, `2001:db8:1:2::${hex(i)}`));
    expect(seen.size).toBeGreaterThan(1);
  });

  it('ipv4Prefix 0 sends every IPv4 client to one backend but leaves IPv6 clients spread', () => {
    const lb = ipHash(method, { ipv4Prefix: 0 });
    const v4 = new Set<string>();
    const v6 = new Set<string>();
    for (let i = 0; i < 256; i++) {
      v4.add(pickId(lb, `${i}.${255 - i}.${i}.1`));
      v6.add(pickId(lb, `2001:db8::${hex(i)}`));
    }
    expect(v4.size).toBe(1);
    // Probability about 10 x 0.1^256 that a correct implementation fails this.
    expect(v6.size).toBeGreaterThan(1);
  });

  it('determinism: backends given in different orders pick the same backend for 1,000 addresses', () => {
    const reversed = [...BACKENDS].reverse();
    const shuffled = [...BACKENDS];
    const next = splitmix32Bits(0x73687566);
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = next() % (i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j] as BackendSpec, shuffled[i] as BackendSpec];
    }
    const balancers = [ipHash(method), ipHash(method, {}, reversed), ipHash(method, {}, shuffled)];
    const rand = splitmix32Bits(0x64657465);
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const r = rand();
      const ip =
        i % 2 === 0
          ? `${r >>> 24}.${(r >>> 16) & 0xff}.${(r >>> 8) & 0xff}.${r & 0xff}`
          : `2001:db8:${hex(r >>> 16)}:${hex(r & 0xffff)}:${hex(rand() >>> 16)}::${hex(rand() & 0xffff)}`;
      const expected = pickId(balancers[0] as Balancer<BackendSpec>, ip);
      for (const lb of balancers.slice(1)) expect(pickId(lb, ip)).toBe(expected);
      seen.add(expected);
    }
    // 1,000 addresses over 10 backends reach all 10 except with probability < 10 x 0.9^1000.
    expect(seen.size).toBe(10);
  });

  it('the same address picks the same backend on repeated calls and on a fresh balancer', () => {
    const lb = ipHash(method);
    const first = pickId(lb, '203.0.113.7');
    for (let i = 0; i < 10; i++) expect(pickId(lb, '203.0.113.7')).toBe(first);
    expect(pickId(ipHash(method), '203.0.113.7')).toBe(first);
    expect(lb.acquire({ clientIp: '203.0.113.7' }).backend.id).toBe(first);
  });
});

// ---------------------------------------------------------------------------------------------
// The balancer: errors

describe('ip-hash: a request without a usable client address', () => {
  it.each(METHODS)("method '%s': a missing clientIp throws ERR_INVALID_ARGUMENT naming ctx.clientIp", (method) => {
    const lb = ipHash(method);
    for (const call of [
      () => lb.pick(),
      () => lb.pick({}),
      () => lb.pick({ key: '1.2.3.4' }),
      () => lb.acquire(),
      () => lb.pick({ clientIp: 42 as unknown as string }),
    ]) {
      const error = thrown(call);
      expect(error.code).toBe('ERR_INVALID_ARGUMENT');
      expect(isFairpickError(error, 'ERR_INVALID_ARGUMENT')).toBe(true);
      expect(error.message).toContain('ctx.clientIp');
    }
  });

  it.each(METHODS)("method '%s': an invalid address throws ERR_INVALID_ARGUMENT naming the address", (method) => {
    const lb = ipHash(method);
    for (const address of ['1.2.3.256', 'not-an-ip', '1::2::3', '', 'fe80::1%']) {
      const error = thrown(() => lb.pick({ clientIp: address }));
      expect(error.code).toBe('ERR_INVALID_ARGUMENT');
      expect(error.message).toContain('ctx.clientIp');
      expect(error.message).toContain(JSON.stringify(address));
    }
  });

  it.each(METHODS)("method '%s': a failed pick or acquire changes nothing in stats()", (method) => {
    const lb = createBalancer({ algorithm: 'ip-hash', method, backends: BACKENDS, now: () => 0 });
    lb.acquire({ clientIp: '10.0.0.1' });
    lb.acquire({ clientIp: '2001:db8::1' }).release({ ok: true, latencyMs: 5 });
    lb.pick({ clientIp: '10.0.0.2' });
    const before = lb.stats();
    expect(before.reduce((sum, s) => sum + s.picks, 0)).toBe(3);
    for (const call of [
      () => lb.pick(),
      () => lb.acquire({}),
      () => lb.pick({ clientIp: '1.2.3.4.5' }),
      () => lb.acquire({ clientIp: '::ffff:1.2.3.256' }),
    ]) {
      thrown(call);
      expect(lb.stats()).toEqual(before);
    }
    // And the balancer still works afterwards, for the same address as before.
    const again = lb.pick({ clientIp: '10.0.0.2' });
    expect(lb.stats().find((s) => s.id === again.id)?.picks).toBe(
      (before.find((s) => s.id === again.id)?.picks as number) + 1,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Option validation

describe('ip-hash: option validation', () => {
  it.each<[string, Record<string, unknown>, string]>([
    ['ipv4Prefix 33', { ipv4Prefix: 33 }, 'options.ipv4Prefix'],
    ['ipv4Prefix -1', { ipv4Prefix: -1 }, 'options.ipv4Prefix'],
    ['ipv4Prefix 1.5', { ipv4Prefix: 1.5 }, 'options.ipv4Prefix'],
    ["ipv4Prefix '24'", { ipv4Prefix: '24' }, 'options.ipv4Prefix'],
    ['ipv4Prefix NaN', { ipv4Prefix: Number.NaN }, 'options.ipv4Prefix'],
    ['ipv6Prefix 129', { ipv6Prefix: 129 }, 'options.ipv6Prefix'],
    ['ipv6Prefix -1', { ipv6Prefix: -1 }, 'options.ipv6Prefix'],
    ['ipv6Prefix 64.5', { ipv6Prefix: 64.5 }, 'options.ipv6Prefix'],
    ["method 'jump'", { method: 'jump' }, 'options.method'],
    ['vnodes with the default method (maglev)', { vnodes: 100 }, 'options.vnodes'],
    ["vnodes with method 'maglev'", { method: 'maglev', vnodes: 100 }, 'options.vnodes'],
    ["maxRingSize with method 'rendezvous'", { method: 'rendezvous', maxRingSize: 1000 }, 'options.maxRingSize'],
    ["tableSize with method 'ring-hash'", { method: 'ring-hash', tableSize: 65537 }, 'options.tableSize'],
    ["tableSize with method 'rendezvous'", { method: 'rendezvous', tableSize: 65537 }, 'options.tableSize'],
    ['tableSize 65536 (not prime)', { method: 'maglev', tableSize: 65536 }, 'options.tableSize'],
    ['tableSize 65536 with the default method', { tableSize: 65536 }, 'options.tableSize'],
  ])('%s -> ERR_INVALID_ARGUMENT naming the option', (_name, options, field) => {
    const error = thrown(() => createUnchecked({ algorithm: 'ip-hash', backends: BACKENDS, ...options }));
    expect(error.code).toBe('ERR_INVALID_ARGUMENT');
    expect(error.message).toContain(field);
  });

  it('accepts the boundary prefixes and the method-specific options with their own method', () => {
    for (const options of [
      { ipv4Prefix: 0, ipv6Prefix: 0 },
      { ipv4Prefix: 32, ipv6Prefix: 128 },
      { method: 'maglev', tableSize: 1009 },
      { method: 'ring-hash', vnodes: 50, maxRingSize: 10_000 },
      { method: 'rendezvous' },
    ]) {
      const lb = createUnchecked({ algorithm: 'ip-hash', backends: BACKENDS, ...options });
      expect(lb.algorithm).toBe('ip-hash');
      expect(BACKENDS.map((b) => b.id)).toContain(lb.pick({ clientIp: '192.0.2.1' }).id);
    }
  });
});
