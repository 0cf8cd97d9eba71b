/**
 * MurmurHash3 x86_32 (Austin Appleby, public domain), over the UTF-8 bytes of a string or over a
 * byte array. Strings are encoded inline from their UTF-16 code units, so hashing a string
 * allocates nothing and equals hashing `new TextEncoder().encode(string)`: a lone surrogate
 * becomes U+FFFD, as TextEncoder does.
 *
 * This function is part of fairpick's public contract: the hash pickers place keys and backends
 * with it, so the same key maps to the same backend in every process and every release of the
 * same major version.
 */

import { invalid } from '../validate.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

// Streaming state for one hash. The core is single-threaded and hashing never re-enters, so a
// module-level accumulator avoids allocating one per call.
let h = 0;
let block = 0;
let length = 0;

function begin(seed: number): void {
  h = seed | 0;
  block = 0;
  length = 0;
}

function put(byte: number): void {
  block |= byte << ((length & 3) << 3);
  length++;
  if ((length & 3) === 0) {
    mixBlock(block);
    block = 0;
  }
}

function mixBlock(k: number): void {
  h ^= scramble(k);
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** The final mix, as a signed 32-bit integer: what the pickers use (see {@link hashString}). */
function finish(): number {
  if ((length & 3) !== 0) h ^= scramble(block);
  h ^= length;
  return mix32(h);
}

function scramble(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

/** MurmurHash3's finaliser: a bijective 32-bit mixer with full avalanche. Returns an unsigned 32-bit integer. */
export function fmix32(x: number): number {
  return mix32(x) >>> 0;
}

/** {@link fmix32} as a signed 32-bit integer (same bits). */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/**
 * MurmurHash3 x86_32 of the UTF-8 encoding of `text`, without allocating.
 * @param text - any string; lone surrogates are hashed as U+FFFD (EF BF BD).
 * @param seed - a 32-bit seed (an integer; taken modulo 2^32). @defaultValue 0
 * @returns an unsigned 32-bit integer.
 * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` when `text` is not a string or `seed` not an integer.
 */
export function murmur3(text: string, seed = 0): number {
  if (typeof text !== 'string') throw invalid('text', text, 'a string');
  requireSeed(seed);
  return hashString(text, seed) >>> 0;
}

/**
 * MurmurHash3 x86_32 of a byte array.
 * @param bytes - the input.
 * @param seed - a 32-bit seed (an integer; taken modulo 2^32). @defaultValue 0
 * @param length - how many bytes of `bytes` to hash, from the start: an integer from 0 to
 *   `bytes.length`. @defaultValue bytes.length
 * @returns an unsigned 32-bit integer.
 * @throws {@link FairpickError} `ERR_INVALID_ARGUMENT` for a value outside those.
 */
export function murmur3Bytes(bytes: Uint8Array, seed = 0, length: number = bytes?.length): number {
  if (!(bytes instanceof Uint8Array)) throw invalid('bytes', bytes, 'a Uint8Array');
  requireSeed(seed);
  if (!Number.isInteger(length) || length < 0 || length > bytes.length) {
    throw invalid('length', length, `an integer from 0 to ${bytes.length}`);
  }
  return hashBytes(bytes, seed, length) >>> 0;
}

function requireSeed(seed: unknown): void {
  if (!Number.isInteger(seed)) throw invalid('seed', seed, 'an integer');
}

/**
 * {@link murmur3} without argument checks, for the hot path. It returns the same 32 bits as a
 * signed integer: V8 keeps an int32 unboxed where an unsigned value of 2^31 or more would be
 * allocated as a heap number when passed between functions it does not inline.
 */
export function hashString(text: string, seed: number): number {
  begin(seed);
  const n = text.length;
  for (let i = 0; i < n; i++) {
    // Fast path: four ASCII characters on a block boundary are one block, as they are four bytes.
    if ((length & 3) === 0 && i + 3 < n) {
      const c0 = text.charCodeAt(i);
      const c1 = text.charCodeAt(i + 1);
      const c2 = text.charCodeAt(i + 2);
      const c3 = text.charCodeAt(i + 3);
      if ((c0 | c1 | c2 | c3) < 0x80) {
        mixBlock(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
        length += 4;
        i += 3;
        continue;
      }
    }
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      put(c);
      continue;
    }
    if (c < 0x800) {
      put(0xc0 | (c >> 6));
      put(0x80 | (c & 0x3f));
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < n ? text.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
        put(0xf0 | (c >> 18));
        put(0x80 | ((c >> 12) & 0x3f));
        put(0x80 | ((c >> 6) & 0x3f));
        put(0x80 | (c & 0x3f));
        continue;
      }
      c = 0xfffd; // a lone surrogate, as TextEncoder encodes it
    }
    put(0xe0 | (c >> 12));
    put(0x80 | ((c >> 6) & 0x3f));
    put(0x80 | (c & 0x3f));
  }
  return finish();
}

/** {@link murmur3Bytes} without argument checks, for the hot path; signed, as {@link hashString}. */
export function hashBytes(bytes: Uint8Array, seed: number, length: number): number {
  begin(seed);
  for (let i = 0; i < length; i++) put(bytes[i] as number);
  return finish();
}
