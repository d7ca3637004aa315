// The metadata entries the header limits count and size: every one grpc-js holds (a skipped entry
// escapes every limit), read from grpc-js's own map one at a time, so that a call refused at the
// 101st of 900 entries is not first copied whole into a plain object.
import { describe, expect, it, vi } from 'vitest';
import { Metadata } from '@grpc/grpc-js';
import { SecurityError, createHeaderLimits, type CallInfo } from '@fluxguard/core';
import { metadataEntries, metadataHeaders } from './pipeline.js';

/** Metadata as the server makes it from a request's headers (names lowercase, `-bin` decoded). */
function received(): Metadata {
  const headers = Object.assign(Object.create(null) as Record<string, string | string[]>, {
    'x-a': '1',
    'x-multi': ['one', 'two', 'three'],
    ['__proto__']: 'hidden',
    'x-data-bin': ['Ynl0ZXM=', 'bW9yZQ=='],
    '123': 'numeric name',
    authorization: 'Bearer a',
  });
  return Metadata.fromHttp2Headers(headers);
}

const EXPECTED: readonly (readonly [string, string | Buffer])[] = [
  ['123', 'numeric name'],
  ['x-a', '1'],
  ['x-multi', 'one'],
  ['x-multi', 'two'],
  ['x-multi', 'three'],
  ['__proto__', 'hidden'],
  ['x-data-bin', Buffer.from('bytes')],
  ['x-data-bin', Buffer.from('more')],
  ['authorization', 'Bearer a'],
];

/** Entries in one order whatever the source's: `toJSON` lists `__proto__` last. */
const sorted = (entries: Iterable<readonly [string, string | Buffer]>): string[] =>
  [...entries].map(([name, value]) => `${name}=${typeof value === 'string' ? value : `bin:${value.toString('hex')}`}`).sort();

describe('metadataEntries', () => {
  it('lists every entry grpc-js holds, repeated names, __proto__ and binary values included', () => {
    const metadata = received();
    const entries = [...metadataEntries(metadata)];
    expect(entries).toEqual(EXPECTED);
    // The Buffers grpc-js holds, not copies.
    const binary = entries.filter(([name]) => name === 'x-data-bin').map(([, value]) => value);
    expect(binary[0]).toBe(metadata.get('x-data-bin')[0]);
    expect(binary[1]).toBe(metadata.get('x-data-bin')[1]);
    expect([...(metadataHeaders(metadata).entries?.() ?? [])]).toEqual(EXPECTED);
  });

  it('lists entries added after the call arrived, and none removed', () => {
    const metadata = received();
    metadata.add('X-Later', 'late');
    metadata.remove('x-a');
    expect(sorted(metadataEntries(metadata))).toEqual(
      sorted([...EXPECTED.filter(([name]) => name !== 'x-a'), ['x-later', 'late']]),
    );
  });

  it('reads the entries without copying them all first: the header limits refuse 900 at the 101st', () => {
    const metadata = new Metadata();
    for (let i = 0; i < 900; i++) metadata.add(`x-e${String(i)}`, 'v');
    const toJSON = vi.spyOn(metadata, 'toJSON');
    const limits = createHeaderLimits();
    const call = { headers: metadataHeaders(metadata) } as unknown as CallInfo;
    let thrown: unknown;
    try {
      void limits.onStart?.(call, undefined as never);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SecurityError);
    expect(thrown).toMatchObject({ reason: 'too_many_headers' });
    expect(toJSON).not.toHaveBeenCalled();
  });

  it('lists every entry through toJSON from a grpc-js that keeps its entries otherwise', () => {
    const metadata = received();
    // What a grpc-js without the `internalRepr` map offers: its public methods only.
    const other = {
      toJSON: () => metadata.toJSON(),
      get: (name: string) => metadata.get(name),
    } as unknown as Metadata;
    expect(sorted(metadataEntries(other))).toEqual(sorted(EXPECTED));
    expect(sorted(metadataHeaders(other).entries?.() ?? [])).toEqual(sorted(EXPECTED));
  });
});
