// HTTP/2 written by hand, for the attacks and odd requests Node's own client will not make:
// frames in any order, header blocks of any size, streams reset as they open.

/** The connection preface every HTTP/2 client sends first (RFC 9113 §3.4), without its SETTINGS. */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Frame types and flags these helpers' users write or read (RFC 9113 §6). */
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/**
 * One HTTP/2 frame: the 9-byte header, then `payload`.
 *
 * @example
 * ```ts
 * socket.write(Buffer.concat([PREFACE, h2Frame(FRAME.SETTINGS, 0, 0)]));
 * ```
 */
export function h2Frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/**
 * A header block of literal fields without indexing, each with a new name (RFC 7541 §6.2.2),
 * no Huffman: any name and value, as long as the sender likes.
 *
 * @example
 * ```ts
 * const block = hpackLiterals([[':method', 'POST'], [':path', '/pkg.Svc/Get']]);
 * socket.write(h2Frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, block));
 * ```
 */
export function hpackLiterals(fields: readonly (readonly [string, string])[]): Buffer {
  const length = (n: number): Buffer => {
    if (n < 127) return Buffer.from([n]);
    const bytes = [127];
    let rest = n - 127;
    while (rest >= 128) {
      bytes.push((rest % 128) + 128);
      rest = Math.floor(rest / 128);
    }
    bytes.push(rest);
    return Buffer.from(bytes);
  };
  return Buffer.concat(
    fields.flatMap(([name, value]) => [
      Buffer.from([0x00]),
      length(name.length),
      Buffer.from(name, 'latin1'),
      length(value.length),
      Buffer.from(value, 'latin1'),
    ]),
  );
}
