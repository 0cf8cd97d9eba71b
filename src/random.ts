/**
 * The default source of randomness: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator,
 * from PractRand), seeded from `Math.random()` once per balancer. `Math.random()` itself boxes
 * every result in V8 (16 bytes a call); this keeps its state in an Int32Array, so a pick that
 * draws random numbers allocates nothing. Not for cryptography.
 */
export function createDefaultRandom(): () => number {
  const s = new Int32Array(4);
  for (let i = 0; i < 4; i++) s[i] = Math.floor(Math.random() * 4294967296);
  const next = (): number => {
    const a = s[0] as number;
    const b = s[1] as number;
    const c = s[2] as number;
    const d = s[3] as number;
    const t = (((a + b) | 0) + d) | 0;
    s[3] = (d + 1) | 0;
    s[0] = b ^ (b >>> 9);
    s[1] = (c + (c << 3)) | 0;
    const r = (c << 21) | (c >>> 11);
    s[2] = (r + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  // Discard the first outputs, which still show the seed's structure.
  for (let i = 0; i < 12; i++) next();
  return next;
}
