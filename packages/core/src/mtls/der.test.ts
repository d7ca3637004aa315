import { describe, expect, it } from 'vitest';
import { canonicalName } from './der.js';

/** A DER element: tag, length, content. */
function tlv(tag: number, content: Buffer): Buffer {
  const length = content.length;
  const head = length < 0x80 ? [length] : [0x81, length];
  return Buffer.concat([Buffer.from([tag, ...head]), content]);
}

const UTF8 = 0x0c;
const PRINTABLE = 0x13;
const T61 = 0x14;
const NUMERIC = 0x12;
const BMP = 0x1e;
const CN = Buffer.from([0x55, 0x04, 0x03]);
const O = Buffer.from([0x55, 0x04, 0x0a]);

/** A name of relative names, each a list of attributes `[oid, tag, value bytes]`. */
function name(...rdns: [Buffer, number, Buffer][][]): Buffer {
  return tlv(
    0x30,
    Buffer.concat(
      rdns.map((rdn) =>
        tlv(
          0x31,
          Buffer.concat(rdn.map(([oid, tag, value]) => tlv(0x30, Buffer.concat([tlv(0x06, oid), tlv(tag, value)])))),
        ),
      ),
    ),
  );
}

const utf8 = (text: string) => Buffer.from(text, 'utf8');

describe('canonicalName', () => {
  it('is the same for one name in other string types, letter case and spacing, as OpenSSL compares names', () => {
    const plain = canonicalName(name([[CN, UTF8, utf8('Recheck Root')]]));
    expect(canonicalName(name([[CN, PRINTABLE, Buffer.from('  RECHECK   root ')]]))).toBe(plain);
    expect(canonicalName(name([[CN, BMP, Buffer.from('\0R\0e\0c\0h\0e\0c\0k\0 \0R\0o\0o\0t', 'latin1')]]))).toBe(plain);
    // T61String is read a byte a character, as OpenSSL reads it.
    expect(canonicalName(name([[CN, T61, Buffer.from([0xe9])]]))).toBe(canonicalName(name([[CN, UTF8, utf8('é')]])));
    // Only ASCII letters are folded, as OpenSSL folds them.
    expect(canonicalName(name([[CN, UTF8, utf8('É')]]))).not.toBe(canonicalName(name([[CN, UTF8, utf8('é')]])));
  });

  it('keeps apart what OpenSSL keeps apart', () => {
    const plain = canonicalName(name([[CN, UTF8, utf8('root')]]));
    // A byte order mark is a character of the value.
    expect(canonicalName(name([[CN, UTF8, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), utf8('root')])]]))).not.toBe(
      plain,
    );
    expect(canonicalName(name([[CN, BMP, Buffer.from('\xfe\xff\0r\0o\0o\0t', 'latin1')]]))).not.toBe(plain);
    // NumericString is compared as its DER, not as text.
    expect(canonicalName(name([[CN, NUMERIC, Buffer.from('12345')]]))).not.toBe(
      canonicalName(name([[CN, PRINTABLE, Buffer.from('12345')]])),
    );
    // Other attributes, or the same ones in other relative names, are another name.
    expect(canonicalName(name([[O, UTF8, utf8('root')]]))).not.toBe(plain);
    expect(canonicalName(name([[CN, UTF8, utf8('a')]], [[O, UTF8, utf8('b')]]))).not.toBe(
      canonicalName(
        name([
          [CN, UTF8, utf8('a')],
          [O, UTF8, utf8('b')],
        ]),
      ),
    );
  });

  it('takes the attributes of one relative name in any order', () => {
    expect(
      canonicalName(
        name([
          [CN, UTF8, utf8('a')],
          [O, UTF8, utf8('b')],
        ]),
      ),
    ).toBe(
      canonicalName(
        name([
          [O, UTF8, utf8('b')],
          [CN, UTF8, utf8('a')],
        ]),
      ),
    );
  });

  it('throws on what is not a name', () => {
    expect(() => canonicalName(Buffer.from([0x31, 0x00]))).toThrow();
    expect(() => canonicalName(tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, CN)))))).toThrow();
  });
});
