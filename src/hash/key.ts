import { FairpickError } from '../errors.js';
import type { PickRequest } from '../pickers/picker.js';
import { describe } from '../validate.js';
import { parseIp } from './ip.js';
import { hashBytes, hashString } from './murmur3.js';

/**
 * Where a hash picker takes its 32-bit key hash from. Part of the public contract: a key's hash
 * is `murmur3(key, 0)` over its UTF-8 bytes (or over the bytes of a `Uint8Array` key).
 */
export interface KeySource {
  /**
   * The request's key hash, as a signed 32-bit integer (the bits of `murmur3(key, 0)`); throws
   * `ERR_INVALID_ARGUMENT` when the request has no usable key.
   */
  hash(request: PickRequest): number;
}

/** Hashes `ctx.key`. */
export class RequestKey implements KeySource {
  constructor(private readonly algorithm: string) {}

  hash(request: PickRequest): number {
    const key = request.key;
    if (typeof key === 'string') return hashString(key, 0);
    if (key instanceof Uint8Array) return hashBytes(key, 0, key.length);
    throw new FairpickError(
      'ERR_INVALID_ARGUMENT',
      `ctx.key must be a string or a Uint8Array for algorithm '${this.algorithm}'; received ${describe(key)}`,
    );
  }
}

/** Hashes `ctx.clientIp`: its address bytes (IPv4-mapped IPv6 as IPv4), masked to the prefixes. */
export class ClientIpKey implements KeySource {
  private readonly bytes = new Uint8Array(16);

  constructor(
    private readonly ipv4Prefix: number,
    private readonly ipv6Prefix: number,
  ) {}

  hash(request: PickRequest): number {
    const ip = request.clientIp;
    if (typeof ip !== 'string') {
      throw new FairpickError(
        'ERR_INVALID_ARGUMENT',
        `ctx.clientIp must be an IPv4 or IPv6 address for algorithm 'ip-hash'; received ${describe(ip)}`,
      );
    }
    const length = parseIp(ip, this.bytes, this.ipv4Prefix, this.ipv6Prefix);
    if (length === 0) {
      throw new FairpickError(
        'ERR_INVALID_ARGUMENT',
        `ctx.clientIp must be an IPv4 or IPv6 address; received ${describe(ip)}`,
      );
    }
    return hashBytes(this.bytes, 0, length);
  }
}
