import fc from 'fast-check';
import { expect, it } from 'vitest';
import { type BackendSpec, createBalancer } from '../src/index.js';

const KEYS = Array.from({ length: 3000 }, (_, i) => `/objects/${i}/${(i * 2654435761) % 9973}`);

// The ring applies a change by merging into the previous ring (see src/pickers/ring-hash.ts):
// whatever the history of changes, the result must be the ring a fresh build gives.
it('ring-hash: after any sequence of adds, removes, weight and tier changes, picks equal a fresh build (deterministic)', () => {
  const op = fc.oneof(
    fc.record({
      kind: fc.constant('add' as const),
      id: fc.integer({ min: 0, max: 14 }),
      weight: fc.integer({ min: 0, max: 4 }),
    }),
    fc.record({ kind: fc.constant('remove' as const), id: fc.integer({ min: 0, max: 14 }) }),
    fc.record({
      kind: fc.constant('weight' as const),
      id: fc.integer({ min: 0, max: 14 }),
      weight: fc.integer({ min: 0, max: 4 }),
    }),
    fc.record({ kind: fc.constant('backup' as const), id: fc.integer({ min: 0, max: 14 }), backup: fc.boolean() }),
  );
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 25 }), (ops) => {
      const lb = createBalancer<BackendSpec>({ algorithm: 'ring-hash', vnodes: 40 });
      const pool = new Map<string, BackendSpec>();
      for (const o of ops) {
        const id = `node-${o.id}`;
        const present = pool.get(id);
        if (o.kind === 'add' && present === undefined) {
          pool.set(id, { id, weight: o.weight });
          lb.add({ id, weight: o.weight });
        } else if (o.kind === 'remove' && present !== undefined) {
          pool.delete(id);
          lb.remove(id);
        } else if (o.kind === 'weight' && present !== undefined) {
          pool.set(id, { ...present, weight: o.weight });
          lb.update(id, { weight: o.weight });
        } else if (o.kind === 'backup' && present !== undefined) {
          pool.set(id, { ...present, backup: o.backup });
          lb.update(id, { backup: o.backup });
        }
      }
      const fresh = createBalancer<BackendSpec>({ algorithm: 'ring-hash', vnodes: 40, backends: [...pool.values()] });
      const pickable = [...pool.values()].some((b) => (b.weight ?? 1) > 0);
      for (const key of KEYS) {
        if (!pickable) {
          expect(() => lb.pick({ key })).toThrow(/no backend/);
          continue;
        }
        if (lb.pick({ key }).id !== fresh.pick({ key }).id) {
          expect.fail(`key ${key}: ${lb.pick({ key }).id} after the changes, ${fresh.pick({ key }).id} built fresh`);
        }
      }
    }),
    { seed: 0x41b9, numRuns: 150 },
  );
}, 60_000); // CPU-bound (about 5 s here): room for a slow machine
