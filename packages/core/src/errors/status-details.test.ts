import { describe, expect, it } from 'vitest';
import { retryInfoStatusDetails } from './status-details.js';

// A minimal protobuf reader, independent of the encoder under test: varints (wire type 0) and
// length-delimited fields (wire type 2) are all a google.rpc.Status with RetryInfo holds.
type Field = { readonly number: number; readonly varint: number } | { readonly number: number; readonly bytes: Buffer };

function readVarint(buf: Buffer, at: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  for (let i = at; i < buf.length; i++) {
    const byte = buf[i] ?? 0;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return [value, i + 1];
  }
  throw new Error('truncated varint');
}

function decode(buf: Buffer): Field[] {
  const fields: Field[] = [];
  let at = 0;
  while (at < buf.length) {
    const [tag, afterTag] = readVarint(buf, at);
    const number = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      const [varint, next] = readVarint(buf, afterTag);
      fields.push({ number, varint });
      at = next;
    } else if (wire === 2) {
      const [length, start] = readVarint(buf, afterTag);
      if (start + length > buf.length) throw new Error('truncated field');
      fields.push({ number, bytes: buf.subarray(start, start + length) });
      at = start + length;
    } else {
      throw new Error(`unexpected wire type ${String(wire)}`);
    }
  }
  return fields;
}

function only(fields: Field[], number: number): Field {
  const found = fields.filter((f) => f.number === number);
  expect(found).toHaveLength(1);
  const [first] = found;
  if (first === undefined) throw new Error(`no field ${String(number)}`);
  return first;
}

const varintOf = (f: Field) => ('varint' in f ? f.varint : Number.NaN);
const bytesOf = (f: Field) => ('bytes' in f ? f.bytes : Buffer.alloc(0));

/** google.rpc.Status { code = 1; message = 2; repeated Any details = 3 }, RetryInfo's delay seconds. */
function parseStatus(buf: Buffer) {
  const status = decode(buf);
  const details = status.filter((f) => f.number === 3).map((f) => decode(bytesOf(f)));
  return {
    fields: status,
    code: varintOf(only(status, 1)),
    message: bytesOf(only(status, 2)).toString('utf8'),
    details: details.map((any) => {
      const retryInfo = decode(bytesOf(only(any, 2)));
      const delay = decode(bytesOf(only(retryInfo, 1)));
      return {
        typeUrl: bytesOf(only(any, 1)).toString('utf8'),
        seconds: varintOf(only(delay, 1)),
        // Duration.nanos (2) is left out: whole seconds only.
        delayFields: delay.map((f) => f.number),
      };
    }),
  };
}

describe('retryInfoStatusDetails', () => {
  it('encodes a google.rpc.Status with the code, the message and one RetryInfo', () => {
    const status = parseStatus(retryInfoStatusDetails(8, 'Too many requests.', 30));
    expect(status.code).toBe(8);
    expect(status.message).toBe('Too many requests.');
    expect(status.details).toEqual([
      { typeUrl: 'type.googleapis.com/google.rpc.RetryInfo', seconds: 30, delayFields: [1] },
    ]);
    expect(status.fields.map((f) => f.number)).toEqual([1, 2, 3]);
  });

  it.each([
    [1, 1],
    [127, 127],
    [128, 128],
    [900, 900],
    [86_400, 86_400],
    [2.2, 3],
  ])('encodes %s seconds as %i (rounded up, multi-byte varints included)', (given, seconds) => {
    expect(parseStatus(retryInfoStatusDetails(8, 'x', given)).details[0]?.seconds).toBe(seconds);
  });

  it('keeps a message of several hundred bytes and non-ASCII text intact', () => {
    const message = `Trop de requêtes. ${'x'.repeat(300)}`;
    expect(parseStatus(retryInfoStatusDetails(14, message, 5))).toMatchObject({ code: 14, message });
  });

  it('never encodes a negative delay', () => {
    expect(parseStatus(retryInfoStatusDetails(8, 'x', -5)).details[0]?.seconds).toBe(0);
  });
});
