import { defineConfig } from 'tsup';

export default defineConfig({
  // The core and each subpath; shared code lands in chunks, which the core check follows.
  entry: {
    index: 'src/index.ts',
    'node/index': 'src/node/index.ts',
    'redis/index': 'src/redis/index.ts',
    'postgres/index': 'src/postgres/index.ts',
    'fetch/index': 'src/fetch/index.ts',
    'undici/index': 'src/undici/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  platform: 'neutral',
  external: [/^node:/, 'ioredis', 'redis', 'pg', 'undici'],
  treeshake: true,
  tsconfig: 'tsconfig.node.json',
});
