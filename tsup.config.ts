import { defineConfig } from 'tsup';

export default defineConfig({
  // The core and each subpath; shared code lands in chunks, which the core check follows.
  entry: { index: 'src/index.ts', 'node/index': 'src/node/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  platform: 'neutral',
  external: [/^node:/],
  treeshake: true,
  tsconfig: 'tsconfig.node.json',
});
