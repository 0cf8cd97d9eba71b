// npm run bench:quality
//
// How evenly the hash pickers spread keys, and how many keys move when the pool changes, measured
// on 1,000,000 URL-path keys. Prints the results, writes them to docs/hashing-quality.md and draws
// docs/hashing-shares.svg (each backend's share at n = 10). See bench/README.md.

import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Balancer, createBalancer, murmur3 } from '../src/index.js';
import { buildMaglevTable, DEFAULT_TABLE_SIZE } from '../src/pickers/maglev.js';
import { DEFAULT_VNODES } from '../src/pickers/ring-hash.js';
import { urlPaths } from './cases.js';

const KEYS = 1_000_000;
const KEY_SEED = 0x9a11;
const SIZES = [10, 100] as const;
const BUILD_REPS = 5;
const PICKERS = ['ring-hash', 'maglev', 'rendezvous'] as const;
type PickerName = (typeof PICKERS)[number];
const PICKER_NOTE: Record<PickerName, string> = {
  'ring-hash': `ring-hash (${DEFAULT_VNODES} vnodes)`,
  maglev: `maglev (${DEFAULT_TABLE_SIZE} slots)`,
  rendezvous: 'rendezvous',
};
const COLORS: Record<PickerName, string> = { 'ring-hash': '#4e79a7', maglev: '#f28e2b', rendezvous: '#59a14f' };

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const MD_PATH = join(root, 'docs', 'hashing-quality.md');
const SVG_PATH = join(root, 'docs', 'hashing-shares.svg');

interface QBackend {
  readonly id: string;
  /** The backend's number: its index in the counts. */
  readonly i: number;
}

const backend = (i: number): QBackend => ({ id: `backend-${i}`, i });
const pool = (n: number): QBackend[] => Array.from({ length: n }, (_, i) => backend(i));

/** Each key's backend number. */
function assign(lb: Balancer<QBackend>, keys: readonly string[]): Int32Array {
  const out = new Int32Array(keys.length);
  const ctx = { key: '' };
  for (let k = 0; k < keys.length; k++) {
    ctx.key = keys[k] as string;
    out[k] = lb.pick(ctx).i;
  }
  return out;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * Each backend's exact share of the 32-bit hash space on the ring, derived from the ring's
 * documented construction (DESIGN.md: the hash and the table are part of the public contract):
 * backend `id` has points murmur3(id, v) for v < vnodes; a hash goes to the first point at or
 * after it, wrapping; equal points go to the lower id. Cross-checked against the sampled shares.
 */
function ringExactShares(n: number): number[] {
  const ids = pool(n)
    .map((b) => b.id)
    .sort();
  const owner = ids.map((id) => Number(id.slice('backend-'.length)));
  const keyed = new Float64Array(n * DEFAULT_VNODES);
  let k = 0;
  ids.forEach((id, o) => {
    for (let v = 0; v < DEFAULT_VNODES; v++) keyed[k++] = murmur3(id, v) * 1048576 + o;
  });
  keyed.sort();
  const shares = new Array<number>(n).fill(0);
  const hashOf = (x: number) => Math.floor(x / 1048576);
  const ownerOf = (x: number) => owner[x - hashOf(x) * 1048576] as number;
  const total = keyed.length;
  for (let i = 0; i < total; i++) {
    const x = keyed[i] as number;
    const arc =
      i === 0 ? hashOf(x) + 2 ** 32 - hashOf(keyed[total - 1] as number) : hashOf(x) - hashOf(keyed[i - 1] as number);
    shares[ownerOf(x)] = (shares[ownerOf(x)] as number) + arc / 2 ** 32;
  }
  return shares;
}

/** Each backend's exact share of the Maglev table (entries / M), from the library's own table builder. */
function maglevExactShares(n: number): { shares: number[]; minEntries: number; maxEntries: number } {
  const eps = pool(n)
    .map((b) => ({ id: b.id, effectiveWeight: 1, i: b.i }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const table = buildMaglevTable(eps as never, DEFAULT_TABLE_SIZE);
  const entries = new Array<number>(n).fill(0);
  for (const slot of table) {
    const b = (eps[slot] as { i: number }).i;
    entries[b] = (entries[b] as number) + 1;
  }
  return {
    shares: entries.map((e) => e / DEFAULT_TABLE_SIZE),
    minEntries: Math.min(...entries),
    maxEntries: Math.max(...entries),
  };
}

interface Result {
  readonly picker: PickerName;
  readonly n: number;
  readonly shares: number[];
  readonly maxMean: number;
  readonly minMean: number;
  /** Exact share of the hash space (ring arcs, Maglev entries); undefined for rendezvous. */
  readonly exactMaxMean: number | undefined;
  readonly exactMinMean: number | undefined;
  readonly maglevEntries: { min: number; max: number } | undefined;
  readonly addMoved: number;
  readonly addElsewhere: number;
  readonly removedId: string;
  readonly removedShare: number;
  readonly removeMoved: number;
  readonly removeElsewhere: number;
  readonly buildMs: number;
  readonly seconds: number;
}

function measure(picker: PickerName, n: number, keys: readonly string[]): Result {
  const started = performance.now();
  const builds: number[] = [];
  let lb: Balancer<QBackend> | undefined;
  for (let r = 0; r < BUILD_REPS; r++) {
    const backends = pool(n);
    const t0 = performance.now();
    lb = createBalancer<QBackend>({ algorithm: picker, backends });
    builds.push(performance.now() - t0);
  }
  if (lb === undefined) throw new Error('no build');
  const base = assign(lb, keys);
  const counts = new Array<number>(n).fill(0);
  for (const b of base) counts[b] = (counts[b] as number) + 1;
  const shares = counts.map((c) => c / keys.length);
  const mean = keys.length / n;

  // One backend added: backend-n.
  lb.add(backend(n));
  const added = assign(lb, keys);
  let addMoved = 0;
  let addElsewhere = 0;
  for (let k = 0; k < keys.length; k++) {
    if (added[k] === base[k]) continue;
    addMoved++;
    if (added[k] !== n) addElsewhere++;
  }
  lb.remove(backend(n).id);

  // One backend removed from the original pool: the middle one.
  const gone = n >> 1;
  lb.remove(backend(gone).id);
  const removed = assign(lb, keys);
  let removeMoved = 0;
  let removeElsewhere = 0;
  for (let k = 0; k < keys.length; k++) {
    if (removed[k] === base[k]) continue;
    removeMoved++;
    if (base[k] !== gone) removeElsewhere++;
  }

  let exact: number[] | undefined;
  let maglevEntries: { min: number; max: number } | undefined;
  if (picker === 'ring-hash') exact = ringExactShares(n);
  if (picker === 'maglev') {
    const m = maglevExactShares(n);
    exact = m.shares;
    maglevEntries = { min: m.minEntries, max: m.maxEntries };
  }
  return {
    picker,
    n,
    shares,
    maxMean: Math.max(...counts) / mean,
    minMean: Math.min(...counts) / mean,
    exactMaxMean: exact === undefined ? undefined : Math.max(...exact) * n,
    exactMinMean: exact === undefined ? undefined : Math.min(...exact) * n,
    maglevEntries,
    addMoved: addMoved / keys.length,
    addElsewhere,
    removedId: backend(gone).id,
    removedShare: shares[gone] as number,
    removeMoved: removeMoved / keys.length,
    removeElsewhere,
    buildMs: median(builds),
    seconds: (performance.now() - started) / 1000,
  };
}

// ---- output -----------------------------------------------------------------------------

const pct = (x: number, digits = 2) => `${(x * 100).toFixed(digits)}%`;
const ratio = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(3));

function mdTable(head: string[], body: string[][], right: boolean[]): string {
  const widths = head.map((h, i) => Math.max(h.length, 3, ...body.map((r) => (r[i] ?? '').length)));
  const row = (cells: string[]) =>
    `| ${cells.map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(' | ')} |`;
  const rule = `| ${widths.map((w, i) => (right[i] ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  return [row(head), rule, ...body.map(row)].join('\n');
}

function tables(results: Result[]): string {
  const balance = mdTable(
    ['picker', 'n', 'max/mean', 'min/mean', 'exact max/mean', 'exact min/mean', 'build ms'],
    results.map((r) => [
      PICKER_NOTE[r.picker],
      String(r.n),
      ratio(r.maxMean),
      ratio(r.minMean),
      ratio(r.exactMaxMean),
      ratio(r.exactMinMean),
      r.buildMs < 10 ? r.buildMs.toFixed(3) : r.buildMs.toFixed(1),
    ]),
    [false, true, true, true, true, true, true],
  );
  const add = mdTable(
    ['picker', 'n', 'moved', 'ideal 1/(n+1)', 'moved / ideal', 'moved elsewhere'],
    results.map((r) => [
      PICKER_NOTE[r.picker],
      `${r.n} -> ${r.n + 1}`,
      pct(r.addMoved, 3),
      pct(1 / (r.n + 1), 3),
      (r.addMoved * (r.n + 1)).toFixed(3),
      String(r.addElsewhere),
    ]),
    [false, true, true, true, true, true],
  );
  const remove = mdTable(
    ['picker', 'n', 'removed', 'its share', 'moved', 'ideal 1/n', 'moved / ideal', 'moved elsewhere'],
    results.map((r) => [
      PICKER_NOTE[r.picker],
      `${r.n} -> ${r.n - 1}`,
      r.removedId,
      pct(r.removedShare, 3),
      pct(r.removeMoved, 3),
      pct(1 / r.n, 3),
      (r.removeMoved * r.n).toFixed(3),
      String(r.removeElsewhere),
    ]),
    [false, true, false, true, true, true, true, true],
  );
  return [
    '### Balance',
    '',
    'Share of the keys per backend, as a multiple of the mean (1/n). "exact" is each backend\'s share of',
    "the 32-bit hash space: ring arcs (derived from the ring's documented construction) and Maglev",
    "table entries / M (from the library's table builder); rendezvous has no table, only the sample.",
    `Build: \`createBalancer\` with n backends, median of ${BUILD_REPS}, in ms.`,
    '',
    balance,
    '',
    '### One backend added',
    '',
    `backend-n joins backend-0..n-1. "moved": keys whose backend changed; "moved elsewhere": moved keys`,
    'that did not go to the new backend (consistent hashing: 0).',
    '',
    add,
    '',
    '### One backend removed',
    '',
    'The middle backend leaves the original pool. "moved elsewhere": moved keys that were not on the',
    'removed backend (0 for ring and rendezvous; Maglev may move a few more).',
    '',
    remove,
  ].join('\n');
}

function checks(results: Result[]): string[][] {
  const out: string[][] = [];
  const get = (p: PickerName, n: number) => results.find((r) => r.picker === p && r.n === n) as Result;
  const check = (pass: boolean, what: string, measured: string, limit: string) =>
    out.push([pass ? 'PASS' : 'MISS', what, measured, limit]);
  const ring100 = get('ring-hash', 100);
  check(
    (ring100.exactMaxMean ?? 0) <= 1.25,
    'ring-hash n=100 max/mean share (exact)',
    ratio(ring100.exactMaxMean),
    '<= 1.25',
  );
  const rdv100 = get('rendezvous', 100);
  check(rdv100.maxMean <= 1.06, 'rendezvous n=100 max/mean share (1e6 keys)', ratio(rdv100.maxMean), '<= 1.06');
  for (const n of SIZES) {
    const m = get('maglev', n);
    const lo = Math.floor(DEFAULT_TABLE_SIZE / n);
    const hi = Math.ceil(DEFAULT_TABLE_SIZE / n);
    const e = m.maglevEntries ?? { min: -1, max: -1 };
    check(e.min >= lo && e.max <= hi, `maglev n=${n} table entries per backend`, `${e.min}..${e.max}`, `${lo}..${hi}`);
  }
  for (const r of results) {
    if (r.picker === 'maglev') {
      check(
        r.removeMoved <= 2 / r.n,
        `maglev n=${r.n} remove one: keys moved`,
        pct(r.removeMoved, 3),
        `<= 2/n = ${pct(2 / r.n, 3)}`,
      );
      check(
        r.addMoved <= 2 / (r.n + 1),
        `maglev n=${r.n} add one: keys moved`,
        pct(r.addMoved, 3),
        `<= 2/(n+1) = ${pct(2 / (r.n + 1), 3)}`,
      );
      continue;
    }
    check(
      r.removeElsewhere === 0,
      `${r.picker} n=${r.n} remove one: only its keys move`,
      `${r.removeElsewhere} others`,
      '0',
    );
    check(r.addElsewhere === 0, `${r.picker} n=${r.n} add one: keys move only to it`, `${r.addElsewhere} others`, '0');
    if (r.picker === 'rendezvous') {
      const p = 1 / (r.n + 1);
      const sd = Math.sqrt((p * (1 - p)) / KEYS);
      const z = (r.addMoved - p) / sd;
      check(
        Math.abs(z) <= 4,
        `rendezvous n=${r.n} add one: moved vs 1/(n+1)`,
        `${z >= 0 ? '+' : ''}${z.toFixed(2)} sd`,
        'within 4 sd',
      );
    }
  }
  return out;
}

// ---- the chart --------------------------------------------------------------------------

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Grouped bars: each backend's share of the keys, one bar per picker, with the ideal 1/n line. */
function chart(results: Result[], n: number): string {
  const series = PICKERS.map((p) => results.find((r) => r.picker === p && r.n === n) as Result);
  const W = 960;
  const H = 480;
  const left = 72;
  const right = 24;
  const top = 92;
  const bottom = 64;
  const pw = W - left - right;
  const ph = H - top - bottom;
  const max = Math.max(...series.flatMap((s) => s.shares));
  const step = 0.01; // gridline every 1 percentage point
  const yMax = Math.ceil((max + 0.004) / step) * step;
  const y = (v: number) => top + ph - (v / yMax) * ph;
  const group = pw / n;
  const barW = (group * 0.78) / series.length;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      'font-family="Helvetica, Arial, sans-serif" font-size="13">',
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="26" text-anchor="middle" font-size="17" font-weight="bold">` +
      `Share of ${KEYS.toLocaleString('en-US')} URL-path keys per backend, n = ${n}</text>`,
    `<text x="${W / 2}" y="48" text-anchor="middle" fill="#333">max/mean share: ${series
      .map((s) => `${s.picker} ${s.maxMean.toFixed(3)}`)
      .join(', ')}; min/mean: ${series.map((s) => `${s.picker} ${s.minMean.toFixed(3)}`).join(', ')}</text>`,
  );
  // Gridlines and y labels.
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    const yy = y(v).toFixed(1);
    parts.push(
      `<line x1="${left}" y1="${yy}" x2="${W - right}" y2="${yy}" stroke="#e3e3e3" stroke-width="1"/>`,
      `<text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#333">${(v * 100).toFixed(0)}%</text>`,
    );
  }
  parts.push(
    `<text transform="translate(20 ${top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">share of keys</text>`,
  );
  // Bars, with the value (in %) written up from each bar's base.
  series.forEach((s, k) => {
    s.shares.forEach((share, b) => {
      const x = left + b * group + group * 0.11 + k * barW;
      const yy = y(share);
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${yy.toFixed(1)}" width="${(barW - 1).toFixed(1)}" ` +
          `height="${(top + ph - yy).toFixed(1)}" fill="${COLORS[s.picker]}"><title>${esc(
            `${s.picker} backend-${b}: ${pct(share, 3)}`,
          )}</title></rect>`,
        `<text transform="translate(${(x + barW / 2 + 3.5).toFixed(1)} ${(top + ph - 6).toFixed(1)}) rotate(-90)" ` +
          `font-size="11" fill="#ffffff">${(share * 100).toFixed(2)}</text>`,
      );
    });
  });
  // The ideal share, over the bars.
  const yi = y(1 / n).toFixed(1);
  parts.push(
    `<line x1="${left}" y1="${yi}" x2="${W - right}" y2="${yi}" stroke="#d62728" stroke-width="2" stroke-dasharray="8 5"/>`,
  );
  // Axes and x labels.
  parts.push(
    `<line x1="${left}" y1="${top + ph}" x2="${W - right}" y2="${top + ph}" stroke="#333"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + ph}" stroke="#333"/>`,
  );
  for (let b = 0; b < n; b++) {
    parts.push(
      `<text x="${(left + b * group + group / 2).toFixed(1)}" y="${top + ph + 20}" text-anchor="middle">backend-${b}</text>`,
    );
  }
  parts.push(
    `<text x="${left + pw / 2}" y="${H - 14}" text-anchor="middle" fill="#333">` +
      'backend (the number in each bar: its share in %)</text>',
  );
  // Legend.
  const items: [string, string, boolean][] = [
    ...series.map((s): [string, string, boolean] => [PICKER_NOTE[s.picker], COLORS[s.picker], false]),
    [`ideal 1/n = ${pct(1 / n, 0)}`, '#d62728', true],
  ];
  const width = (label: string, dashed: boolean) => (dashed ? 28 : 20) + label.length * 7.4;
  const gap = 28;
  const total = items.reduce((t, [label, , dashed]) => t + width(label, dashed), 0) + gap * (items.length - 1);
  let lx = (W - total) / 2;
  const ly = 62;
  for (const [label, color, dashed] of items) {
    parts.push(
      dashed
        ? `<line x1="${lx}" y1="${ly + 6}" x2="${lx + 22}" y2="${ly + 6}" stroke="${color}" stroke-width="2" stroke-dasharray="6 4"/>`
        : `<rect x="${lx}" y="${ly}" width="14" height="12" fill="${color}"/>`,
      `<text x="${lx + (dashed ? 28 : 20)}" y="${ly + 11}">${esc(label)}</text>`,
    );
    lx += width(label, dashed) + gap;
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

// ---- main -------------------------------------------------------------------------------

const started = performance.now();
const date = new Date().toISOString();
const t0 = performance.now();
const keys = urlPaths(KEYS, KEY_SEED);
const meanLength = keys.reduce((t, k) => t + k.length, 0) / keys.length;
const genSeconds = (performance.now() - t0) / 1000;
process.stderr.write(`${KEYS} keys generated in ${genSeconds.toFixed(1)} s\n`);

const results: Result[] = [];
for (const picker of PICKERS) {
  for (const n of SIZES) {
    process.stderr.write(`${picker} n=${n} ... `);
    const r = measure(picker, n, keys);
    results.push(r);
    process.stderr.write(`${r.seconds.toFixed(1)} s\n`);
  }
}

const cpus = os.cpus();
const machine =
  `node ${process.version} (V8 ${process.versions.v8}), ${process.platform} ${process.arch}, ` +
  `${cpus.length} x ${cpus[0]?.model.trim() ?? 'unknown CPU'}`;
const setup =
  `${KEYS.toLocaleString('en-US')} distinct URL paths of 20-60 characters (mean ${meanLength.toFixed(1)}), ` +
  `generated by \`urlPaths(${KEYS}, 0x${KEY_SEED.toString(16)})\` in bench/cases.ts (mulberry32, so the same ` +
  'keys every run); backends `backend-0` .. `backend-(n-1)`, weight 1; default settings ' +
  `(ring-hash ${DEFAULT_VNODES} vnodes per unit of weight, maglev ${DEFAULT_TABLE_SIZE} slots).`;
const body = tables(results);
const checked = checks(results);
const checkTable = mdTable(['', 'DESIGN.md section 8', 'measured', 'limit'], checked, [false, false, true, true]);
const seconds = (performance.now() - started) / 1000;

console.log(`fairpick hash quality, ${date}\n${machine}\n${setup}\n\n${body}\n\n${checkTable}\n`);
console.log(`finished in ${seconds.toFixed(1)} s`);

mkdirSync(dirname(MD_PATH), { recursive: true });
writeFileSync(
  MD_PATH,
  [
    '# Hash pickers: balance and disruption',
    '',
    `Generated by \`npm run bench:quality\` (bench/quality.ts) on ${date}, ${machine}; it ran in ` +
      `${seconds.toFixed(0)} s. Do not edit by hand: run the command again.`,
    '',
    setup,
    '',
    body,
    '',
    '### Against DESIGN.md section 8',
    '',
    'Shares at n = 100 and the disruption targets. Ring-hash balance is judged on its exact share of',
    'the hash space, rendezvous on the sample, as DESIGN.md says.',
    '',
    checkTable,
    '',
    `### Each backend's share at n = 10`,
    '',
    '![Share of keys per backend at n = 10, ring-hash, maglev and rendezvous, with the ideal 1/n line](hashing-shares.svg)',
    '',
  ].join('\n'),
);
writeFileSync(SVG_PATH, chart(results, 10));
console.log(`wrote ${MD_PATH.slice(root.length + 1)} and ${SVG_PATH.slice(root.length + 1)}`);
