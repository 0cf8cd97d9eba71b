/**
 * IP address parsing for `ip-hash`, without allocating: the address is written into a
 * caller-owned 16-byte buffer. IPv4 gives 4 bytes; IPv6 gives 16, except that an IPv4-mapped
 * address (`::ffff:a.b.c.d`, in any spelling) gives the 4 bytes of its IPv4 address, so a client
 * that reaches a dual-stack listener hashes the same either way. A zone id (`fe80::1%eth0`) is
 * ignored: it names the local interface, not the client.
 */

/**
 * Parses `text` into `out` (at least 16 bytes), masked to the prefix length of its family.
 * @returns 4 for IPv4 (or IPv4-mapped IPv6), 16 for IPv6, or 0 when `text` is not an address.
 */
export function parseIp(text: string, out: Uint8Array, ipv4Prefix: number, ipv6Prefix: number): number {
  const length = text.indexOf(':') >= 0 ? parseIpv6(text, out) : parseIpv4(text, 0, text.length, out, 0) ? 4 : 0;
  if (length === 4) mask(out, 4, ipv4Prefix);
  else if (length === 16) mask(out, 16, ipv6Prefix);
  return length;
}

/** Keeps the first `prefix` bits of `out[0..length)`, zeroing the rest. */
function mask(out: Uint8Array, length: number, prefix: number): void {
  for (let i = 0; i < length; i++) {
    const bits = prefix - i * 8;
    if (bits >= 8) continue;
    out[i] = bits <= 0 ? 0 : (out[i] as number) & (0xff << (8 - bits));
  }
}

/** Parses a dotted quad in text[start, end) into out[at..at+4). No leading zeros (they read as octal elsewhere). */
function parseIpv4(text: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i < end ? text.charCodeAt(i) : 0x2e; // a virtual '.' closes the last part
    if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && value === 0) return false; // leading zero
      value = value * 10 + (c - 0x30);
      digits++;
      if (value > 255) return false;
    } else if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[at + part] = value;
      part++;
      value = 0;
      digits = 0;
    } else {
      return false;
    }
  }
  return part === 4;
}

/** Parses an IPv6 address into out[0..16); returns 16, 4 for IPv4-mapped, or 0 when invalid. */
function parseIpv6(text: string, out: Uint8Array): number {
  let end = text.indexOf('%');
  if (end === 0) return 0;
  if (end < 0) end = text.length;
  else if (end === text.length - 1) return 0; // an empty zone id
  let groups = 0; // 16-bit groups written so far
  let gap = -1; // the group index where '::' stands
  let i = 0;
  if (text.charCodeAt(0) === 0x3a) {
    if (text.charCodeAt(1) !== 0x3a) return 0;
    gap = 0;
    i = 2;
    if (i === end) {
      out.fill(0, 0, 16);
      return 16;
    }
  }
  for (;;) {
    // One group: up to 4 hex digits, or a trailing dotted quad.
    let value = 0;
    let digits = 0;
    let j = i;
    for (; j < end && digits <= 4; j++) {
      const c = text.charCodeAt(j);
      const d = hexDigit(c);
      if (d < 0) break;
      value = (value << 4) | d;
      digits++;
    }
    if (j < end && text.charCodeAt(j) === 0x2e) {
      // Embedded IPv4 in the last 32 bits.
      if (groups > 6 || !parseIpv4(text, i, end, out, groups * 2)) return 0;
      groups += 2;
      break;
    }
    if (digits === 0 || digits > 4) return 0;
    if (groups === 8) return 0;
    out[groups * 2] = value >> 8;
    out[groups * 2 + 1] = value & 0xff;
    groups++;
    if (j === end) break;
    if (text.charCodeAt(j) !== 0x3a) return 0;
    j++;
    if (j < end && text.charCodeAt(j) === 0x3a) {
      if (gap >= 0) return 0; // a second '::'
      gap = groups;
      j++;
      if (j === end) break;
    } else if (j === end) {
      return 0; // a trailing single ':'
    }
    i = j;
  }
  if (gap >= 0) {
    if (groups === 8) return 0; // '::' must stand for at least one group
    const tail = groups - gap;
    out.copyWithin(16 - tail * 2, gap * 2, groups * 2);
    out.fill(0, gap * 2, 16 - tail * 2);
  } else if (groups !== 8) {
    return 0;
  }
  if (isIpv4Mapped(out)) {
    out.copyWithin(0, 12, 16);
    return 4;
  }
  return 16;
}

function isIpv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
