// npm run bench [-- <filter>...] [--runs=N] [--single-process]
//
// ns per pick() and per acquire()+release() for every built-in algorithm, beside the floor of
// an array-index loop measured in the same run (and, for the hash pickers, a second floor:
// murmur3 over the same keys), then the DESIGN.md section 8 targets, the bytes allocated per
// pick and the hash pickers' rebuild cost. See bench/README.md.

import { fork } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Bench, type FnReturnedObject } from 'tinybench';
import {
  ALGORITHMS,
  type AllocResult,
  allocPerOp,
  BATCH,
  type Case,
  casesFor,
  consume,
  isFloor,
  KEY_COUNT,
  type Kind,
  REBUILD_BUDGET_MS,
  REBUILD_MAX_REPS,
  REBUILD_MIN_REPS,
  REBUILD_WARMUP,
  type RebuildResult,
  rebuildCaseName,
  rebuildCost,
  SIZES,
  sinkValue,
  WEIGHTED_N,
} from './cases.js';

/** tinybench time budget per task, and its warmup, in milliseconds. */
const TIME_MS = 250;
const WARMUP_MS = 200;

interface Row {
  readonly group: string;
  readonly name: string;
  readonly label: string;
  readonly n: number;
  readonly weighted: boolean;
  readonly kind: Kind;
  /** Median of the per-batch means, ns per operation. */
  readonly ns: number;
  /** Mean of the per-batch means, ns per operation. */
  readonly meanNs: number;
  /** Batches (tinybench samples) measured. */
  readonly batches: number;
  /** With --runs=N > 1: the lowest and highest `ns` of the N processes. */
  readonly nsMin: number;
  readonly nsMax: number;
}

interface Report {
  readonly group: string;
  readonly rows: Row[];
  readonly allocs: AllocResult[];
  readonly rebuilds: RebuildResult[];
  readonly sink: number;
}

const argv = process.argv.slice(2);
const childGroup = argv.find((a) => a.startsWith('--child='))?.slice('--child='.length);
const singleProcess = argv.includes('--single-process');
const runs = Number(argv.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? 1);
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs=N takes a positive integer');
const filters = argv.filter((a) => !a.startsWith('--'));
const GROUPS = ALGORITHMS.map((a) => a.label);

function matches(name: string): boolean {
  return filters.length === 0 || filters.some((f) => name.includes(f));
}

function algorithmOf(group: string) {
  const algorithm = ALGORITHMS.find((a) => a.label === group);
  if (algorithm === undefined) throw new Error(`unknown group ${group}`);
  return algorithm;
}

/** The group's tasks the filter selects, with the floors at each n they use (every ratio needs them). */
function selectedCases(group: string): Case[] {
  const all = casesFor(algorithmOf(group));
  const sizes = new Set(all.filter((c) => !isFloor(c.kind) && matches(c.name)).map((c) => c.n));
  return all.filter((c) => sizes.has(c.n) && (isFloor(c.kind) || matches(c.name)));
}

/** The pool sizes whose rebuild cost the filter selects (tasks named like `maglev n=100 add+remove`). */
function selectedRebuilds(group: string): number[] {
  const algorithm = algorithmOf(group);
  if (!algorithm.rebuild) return [];
  return algorithm.sizes.filter((n) => matches(rebuildCaseName(algorithm.label, n)));
}

/** Runs one group's tasks in this process. */
async function runGroup(group: string): Promise<Report> {
  const sinkBefore = sinkValue();
  const cases = selectedCases(group).map((c) => ({ ...c, runner: c.build() }));
  const bench = new Bench({ time: TIME_MS, warmupTime: WARMUP_MS, throws: true });
  for (const c of cases) {
    const runner = c.runner;
    bench.add(
      c.name,
      () => {
        const start = bench.now();
        const acc = runner.run(BATCH);
        const elapsed = bench.now() - start;
        consume(acc);
        return { overriddenDuration: elapsed / BATCH, overriddenIterationCost: elapsed } satisfies FnReturnedObject;
      },
      { async: false },
    );
  }
  if (cases.length > 0) bench.runSync();
  const rows: Row[] = cases.map((c) => {
    const result = bench.getTask(c.name)?.result;
    if (result === undefined || result.state !== 'completed') {
      throw new Error(`${c.name}: ${result?.state ?? 'missing'}`);
    }
    return {
      group,
      name: c.name,
      label: c.label,
      n: c.n,
      weighted: c.weighted,
      kind: c.kind,
      ns: result.latency.p50 * 1e6,
      meanNs: result.latency.mean * 1e6,
      batches: result.latency.samplesCount,
      nsMin: result.latency.p50 * 1e6,
      nsMax: result.latency.p50 * 1e6,
    };
  });
  const probed = cases.filter((c) => !isFloor(c.kind) && c.n === WEIGHTED_N);
  const allocs = probed.length > 0 ? await allocPerOp(probed) : [];
  // After the timed tasks and the probe, so the rebuilds' garbage disturbs neither.
  const algorithm = algorithmOf(group);
  const rebuilds = selectedRebuilds(group).map((n) => rebuildCost(algorithm, n));
  return { group, rows, allocs, rebuilds, sink: sinkValue() - sinkBefore };
}

function runChild(group: string): Promise<Report> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [`--child=${group}`, ...filters], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let report: Report | undefined;
    child.on('message', (message) => {
      report = message as Report;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (report !== undefined && code === 0) resolve(report);
      else reject(new Error(`benchmark process for ${group} exited with ${signal ?? code}`));
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Merges the reports of one group's repeated runs: the median per task, with its range. */
function merge(reports: Report[]): Report {
  const first = reports[0] as Report;
  if (reports.length === 1) return first;
  const rows = first.rows.map((row) => {
    const same = reports.map((r) => r.rows.find((x) => x.name === row.name) as Row);
    const ns = same.map((r) => r.ns);
    return {
      ...row,
      ns: median(ns),
      meanNs: median(same.map((r) => r.meanNs)),
      nsMin: Math.min(...ns),
      nsMax: Math.max(...ns),
    };
  });
  const allocs = first.allocs.map((a) => {
    const same = reports.map((r) => r.allocs.find((x) => x.name === a.name) as AllocResult);
    return { ...a, bytesPerOp: median(same.map((x) => x.bytesPerOp)) };
  });
  const rebuilds = first.rebuilds.map((b) => {
    const same = reports.map((r) => r.rebuilds.find((x) => x.n === b.n) as RebuildResult);
    return {
      ...b,
      reps: same.reduce((t, x) => t + x.reps, 0),
      addMs: median(same.map((x) => x.addMs)),
      removeMs: median(same.map((x) => x.removeMs)),
      pairMs: median(same.map((x) => x.pairMs)),
      pairMinMs: Math.min(...same.map((x) => x.pairMinMs)),
      pairMaxMs: Math.max(...same.map((x) => x.pairMaxMs)),
    };
  });
  return { group: first.group, rows, allocs, rebuilds, sink: reports.reduce((t, r) => t + r.sink, 0) };
}

// ---- output -----------------------------------------------------------------------------

function fmtNs(ns: number | undefined): string {
  if (ns === undefined || !Number.isFinite(ns)) return '-';
  return ns < 10 ? ns.toFixed(2) : ns < 100 ? ns.toFixed(1) : ns.toFixed(0);
}

function table(head: string[], body: string[][], rightAlign: boolean[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (rightAlign[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function printReport(reports: Report[], seconds: number): void {
  const rows = reports.flatMap((r) => r.rows);
  const allocs = reports.flatMap((r) => r.allocs);
  const find = (label: string, n: number, weighted: boolean, kind: Kind) =>
    rows.find((r) => r.label === label && r.n === n && r.weighted === weighted && r.kind === kind);
  /** The floor measured in the same process as `label`'s tasks. */
  const floor = (label: string, n: number) =>
    rows.find((r) => r.group === label && r.kind === 'floor' && r.n === n)?.ns;
  /** The hash floor (murmur3 over the same keys) measured in the same process as `label`'s tasks. */
  const hashFloor = (label: string, n: number) =>
    rows.find((r) => r.group === label && r.kind === 'hash floor' && r.n === n)?.ns;

  const cpus = os.cpus();
  console.log(
    `fairpick pick benchmark, ${new Date().toISOString()}\n` +
      `node ${process.version} (V8 ${process.versions.v8}), ${process.platform} ${process.arch}, ` +
      `${cpus.length} x ${cpus[0]?.model.trim() ?? 'unknown CPU'}\n` +
      `${BATCH} operations per tinybench iteration, ${TIME_MS} ms per task after ${WARMUP_MS} ms warmup, ` +
      `${singleProcess ? 'every algorithm in this one process' : 'each algorithm in a process of its own'}` +
      `${runs > 1 ? `, ${runs} runs each: median of the runs, range in the last column` : ''}.\n` +
      `ns: median over batches of (batch time / ${BATCH}); mean: the same, averaged (GC pauses included).\n` +
      `floor: arr[i++ % n] in the same process, just before the tasks at that n; x floor = ns/pick / floor.\n`,
  );

  const body: string[][] = [];
  for (const algorithm of ALGORITHMS.filter((a) => a.keys === 'none')) {
    const variants: [number, boolean][] = [];
    for (const n of algorithm.sizes) {
      variants.push([n, false]);
      if (algorithm.weighted && n === WEIGHTED_N) variants.push([n, true]);
    }
    for (const [n, weighted] of variants) {
      const pick = find(algorithm.label, n, weighted, 'pick');
      const ar = find(algorithm.label, n, weighted, 'acquire+release');
      if (pick === undefined && ar === undefined) continue;
      const fl = floor(algorithm.label, n);
      body.push([
        `${algorithm.label}${weighted ? ' (weights 1..5)' : ''}`,
        String(n),
        fmtNs(pick?.ns),
        fmtNs(fl),
        pick !== undefined && fl !== undefined ? (pick.ns / fl).toFixed(2) : '-',
        fmtNs(ar?.ns),
        `${fmtNs(pick?.meanNs)} / ${fmtNs(ar?.meanNs)}`,
        ...(runs > 1 ? [pick === undefined ? '-' : `${fmtNs(pick.nsMin)}-${fmtNs(pick.nsMax)}`] : []),
      ]);
    }
  }
  console.log(
    table(
      [
        'algorithm',
        'n',
        'ns/pick',
        'floor',
        'x floor',
        'ns/acquire+release',
        'mean pick / a+r',
        ...(runs > 1 ? ['ns/pick range'] : []),
      ],
      body,
      [false, true, true, true, true, true, true, true],
    ),
  );

  // ---- hash pickers -----------------------------------------------------------------------
  const hashBody: string[][] = [];
  for (const algorithm of ALGORITHMS.filter((a) => a.keys !== 'none')) {
    for (const n of algorithm.sizes) {
      const pick = find(algorithm.label, n, false, 'pick');
      const ar = find(algorithm.label, n, false, 'acquire+release');
      if (pick === undefined && ar === undefined) continue;
      const hf = hashFloor(algorithm.label, n);
      const fl = floor(algorithm.label, n);
      hashBody.push([
        algorithm.label,
        String(n),
        fmtNs(pick?.ns),
        fmtNs(hf),
        pick !== undefined && hf !== undefined ? (pick.ns / hf).toFixed(2) : '-',
        fmtNs(fl),
        fmtNs(ar?.ns),
        `${fmtNs(pick?.meanNs)} / ${fmtNs(ar?.meanNs)}`,
        ...(runs > 1 ? [pick === undefined ? '-' : `${fmtNs(pick.nsMin)}-${fmtNs(pick.nsMax)}`] : []),
      ]);
    }
  }
  if (hashBody.length > 0) {
    console.log(
      `\nHash pickers: pick({ key }) with ${KEY_COUNT} pre-generated URL paths of 20-60 characters, cycled ` +
        `(ip-hash, default method maglev: pick({ clientIp }) with ${KEY_COUNT} IPv4 or IPv6 addresses).\n` +
        'hash floor: murmur3(key, 0) alone over the same keys, in the same process, just before the tasks at that n; ' +
        'x hash = ns/pick / hash floor.\n',
    );
    console.log(
      table(
        [
          'algorithm',
          'n',
          'ns/pick',
          'hash floor',
          'x hash',
          'arr floor',
          'ns/acquire+release',
          'mean pick / a+r',
          ...(runs > 1 ? ['ns/pick range'] : []),
        ],
        hashBody,
        [false, true, true, true, true, true, true, true, true],
      ),
    );
  }

  // ---- DESIGN.md section 8 --------------------------------------------------------------
  const checks: string[][] = [];
  let met = 0;
  let unmeasured = 0;
  const check = (what: string, value: number | undefined, limit: number, unit: string) => {
    if (value === undefined || !Number.isFinite(value)) {
      unmeasured++;
      return;
    }
    const pass = value <= limit;
    if (pass) met++;
    checks.push([pass ? 'PASS' : 'MISS', what, `${value.toFixed(2)}${unit}`, `<= ${limit}${unit}`]);
  };
  const pickRatio = (label: string, n: number, weighted: boolean) => {
    const p = find(label, n, weighted, 'pick')?.ns;
    const f = floor(label, n);
    return p !== undefined && f !== undefined ? p / f : undefined;
  };
  for (const label of ['round-robin', 'random']) {
    for (const n of SIZES) check(`${label} pick / floor, n=${n}`, pickRatio(label, n, false), 3, 'x');
    check(`${label} (weights 1..5) pick / floor, n=${WEIGHTED_N}`, pickRatio(label, WEIGHTED_N, true), 3, 'x');
  }
  for (const label of ['least-connections', 'p2c in-flight', 'p2c peak-ewma']) {
    check(`${label} pick / floor, n=10`, pickRatio(label, 10, false), 6, 'x');
  }
  const hashRatio = (label: string, n: number) => {
    const p = find(label, n, false, 'pick')?.ns;
    const f = hashFloor(label, n);
    return p !== undefined && f !== undefined ? p / f : undefined;
  };
  const growth = (label: string) => {
    const small = find(label, 10, false, 'pick')?.ns;
    const large = find(label, 1000, false, 'pick')?.ns;
    return small !== undefined && large !== undefined ? large / small : undefined;
  };
  const lc10 = find('least-connections', 10, false, 'pick')?.ns;
  const lc1000 = find('least-connections', 1000, false, 'pick')?.ns;
  check(
    'least-connections pick n=1000 / n=10',
    lc10 !== undefined && lc1000 !== undefined ? lc1000 / lc10 : undefined,
    3,
    'x',
  );
  for (const [label, limit] of [
    ['maglev', 1.5],
    ['ring-hash', 2.5],
  ] as const) {
    for (const n of [10, 100, 1000]) check(`${label} pick / hash floor, n=${n}`, hashRatio(label, n), limit, 'x');
  }
  check('maglev pick n=1000 / n=10', growth('maglev'), 1.5, 'x');
  check('ring-hash pick n=1000 / n=10', growth('ring-hash'), 3, 'x');
  for (const a of allocs.filter((x) => x.name.endsWith(' pick'))) {
    check(`${a.name}: bytes allocated per pick`, a.bytesPerOp, 0.1, ' B');
  }
  console.log(
    `\nDESIGN.md section 8 targets: ${met} of ${checks.length} met` +
      `${unmeasured > 0 ? ` (${unmeasured} not measured: filtered out)` : ''}\n`,
  );
  console.log(table(['', 'target', 'measured', 'limit'], checks, [false, false, true, true]));

  // ---- allocations ----------------------------------------------------------------------
  if (allocs.length > 0) {
    console.log(
      `\nAllocations in steady state (n=${WEIGHTED_N}, 1e6 operations in chunks of 10,000 after gc(); ` +
        'heapUsed growth per operation, chunks a GC overlapped left out)\n',
    );
    console.log(
      table(
        ['task', 'bytes/op', 'ops measured', 'ops in GC chunks'],
        allocs.map((a) => [a.name, a.bytesPerOp.toFixed(3), String(a.ops), String(a.skippedOps)]),
        [false, true, true, true],
      ),
    );
  }

  // ---- rebuild cost ---------------------------------------------------------------------
  const rebuilds = reports.flatMap((r) => r.rebuilds);
  if (rebuilds.length > 0) {
    console.log(
      '\nRebuild cost of the hash pickers: lb.add() of one new backend, then lb.remove() of it (each rebuilds ' +
        `the picker). ${REBUILD_WARMUP} untimed pairs, then at least ${REBUILD_MIN_REPS} and at most ` +
        `${REBUILD_MAX_REPS} timed pairs, until ${REBUILD_BUDGET_MS} ms have passed; medians in ms ` +
        '(ip-hash IPv6 builds the same table as IPv4: not repeated)\n',
    );
    const fmtMs = (ms: number) => (ms < 0.1 ? ms.toFixed(4) : ms < 10 ? ms.toFixed(3) : ms.toFixed(1));
    console.log(
      table(
        ['algorithm', 'n', 'add ms', 'remove ms', 'add+remove ms', 'fastest-slowest pair', 'pairs'],
        rebuilds.map((b) => [
          b.label,
          String(b.n),
          fmtMs(b.addMs),
          fmtMs(b.removeMs),
          fmtMs(b.pairMs),
          `${fmtMs(b.pairMinMs)}-${fmtMs(b.pairMaxMs)}`,
          String(b.reps),
        ]),
        [false, true, true, true, true, true, true],
      ),
    );
  }

  const sink = reports.reduce((s, r) => s + r.sink, 0);
  console.log(`\nsink ${sink} (every picked backend's weight, summed so the work cannot be optimised away)`);
  console.log(`finished in ${seconds.toFixed(1)} s`);
}

// ---- main -------------------------------------------------------------------------------

if (childGroup !== undefined) {
  const report = await runGroup(childGroup);
  process.send?.(report, () => process.disconnect());
} else {
  const started = performance.now();
  const reports: Report[] = [];
  const groups = GROUPS.filter((g) => selectedCases(g).length > 0 || selectedRebuilds(g).length > 0);
  if (groups.length === 0) {
    console.error(`no task matches ${filters.map((f) => `'${f}'`).join(' or ')}`);
    process.exit(2);
  }
  for (const [i, group] of groups.entries()) {
    const t0 = performance.now();
    process.stderr.write(`[${i + 1}/${groups.length}] ${group} ... `);
    const repeated: Report[] = [];
    for (let r = 0; r < runs; r++) repeated.push(singleProcess ? await runGroup(group) : await runChild(group));
    reports.push(merge(repeated));
    process.stderr.write(`${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  process.stderr.write('\n');
  printReport(reports, (performance.now() - started) / 1000);
  // Every operation adds a weight >= 1: a sum that is not positive means some loop did not run.
  if (!reports.every((r) => r.sink > 0 && Number.isFinite(r.sink))) {
    console.error('sink check failed: a task produced no result');
    process.exitCode = 1;
  }
}
