import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Tests that talk to real sockets, processes, Redis or PostgreSQL: they run one file at a time, so
// that their real timers never compete with another file for the CPU (CI has 2 cores).
const REAL_IO = [
  'test/http/**/*.test.ts',
  'test/proxy/**/*.test.ts',
  'test/node/**/*.test.ts',
  'test/integration/**/*.test.ts',
  'test/quick-start.test.ts',
];

export default defineConfig({
  resolve: {
    // Tests and in-process examples import the package by name; run them against the source.
    alias: [
      { find: /^fairpick$/, replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)) },
      {
        find: /^fairpick\/(node|fetch|undici|redis|postgres)$/,
        replacement: fileURLToPath(new URL('./src/$1/index.ts', import.meta.url)),
      },
    ],
  },
  test: {
    pool: 'forks',
    testTimeout: 20_000,
    projects: [
      {
        // Pure computation on fake clocks (pickers, hashing, health and election models, property
        // tests): nothing in them depends on real time, so they share the cores, first.
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: REAL_IO,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
          typecheck: { enabled: true, include: ['test/**/*.test-d.ts'], tsconfig: './tsconfig.test.json' },
        },
      },
      {
        extends: true,
        test: { name: 'io', include: REAL_IO, maxWorkers: 1, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
