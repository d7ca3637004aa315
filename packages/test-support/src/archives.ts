// Archives built byte by byte, as Python writes them, for the tests of the upload check.
import { randomBytes } from 'node:crypto';
import { constants, gzipSync } from 'node:zlib';

/** A tar member to build: `type` is the header's type flag (`'0'` a file, `'5'` a directory, `'x'` PAX). */
export interface TarMemberSpec {
  readonly name: string;
  readonly data: Buffer;
  readonly type?: string;
}

/**
 * One tar member as Python's tarfile writes it: a ustar header (name, mode, size, type,
 * checksum), the data, and zeros to the next 512-byte block.
 *
 * @example
 * ```ts
 * const upload = Buffer.concat([tarMember({ name: 'pickle', data: pickled }), TAR_END]);
 * ```
 */
export function tarMember({ name, data, type = '0' }: TarMemberSpec): Buffer {
  const header = Buffer.alloc(512);
  header.write(name.slice(0, 99), 0, 'utf8');
  header.write('0000644\0', 100, 'latin1');
  header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  header.write(type, 156, 'latin1');
  header.write('ustar\x0000', 257, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return Buffer.concat([header, data, Buffer.alloc((512 - (data.length % 512)) % 512)]);
}

/** Two zero blocks: where a tar ends. */
export const TAR_END: Buffer = Buffer.alloc(1024);

/**
 * A whole tar of these members, ended by {@link TAR_END}.
 *
 * @example
 * ```ts
 * const dataset = tar([{ name: 'data/train.csv', data: Buffer.from('a,b\n1,2\n') }]);
 * ```
 */
export function tar(members: readonly TarMemberSpec[]): Buffer {
  return Buffer.concat([...members.map(tarMember), TAR_END]);
}

/**
 * A gzipped tar of `count` empty members with random 40-character names, then the members of
 * `after`: a header for the upload check to read every 512 bytes, about 13.5 times as large
 * inflated (under the default ratio of 16), the costliest content per byte sent that it accepts.
 *
 * @example
 * ```ts
 * const flood = gzippedEmptyMembers(20_000); // about 750 KB, 10 MB inflated
 * ```
 */
export function gzippedEmptyMembers(count: number, after: readonly TarMemberSpec[] = []): Buffer {
  const members = Array.from({ length: count }, () => ({ name: randomBytes(30).toString('base64url'), data: EMPTY }));
  return gzipSync(tar([...members, ...after]), { level: constants.Z_BEST_COMPRESSION });
}

const EMPTY = Buffer.alloc(0);
