/** Small helpers the test files share. */

/** The output of splitmix32 as an unsigned 32-bit integer: a small, well-mixed seeded PRNG. */
export function splitmix32Bits(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let z = state ^ (state >>> 16);
    z = Math.imul(z, 0x21f0aaad);
    z ^= z >>> 15;
    z = Math.imul(z, 0x735a2d97);
    z ^= z >>> 15;
    return z >>> 0;
  };
}

/** splitmix32 as uniform numbers in [0, 1), for a balancer's `random` option. */
export function splitmix32(seed: number): () => number {
  const bits = splitmix32Bits(seed);
  return () => bits() / 4294967296;
}

/** `xs[i]`, failing loudly instead of returning undefined (noUncheckedIndexedAccess). */
export function at<T>(xs: ArrayLike<T>, i: number): T {
  const x = xs[i];
  if (x === undefined) throw new Error(`index ${i} out of range (length ${xs.length})`);
  return x;
}
