import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../errors/fluxguard-error.js';
import { createUploadCheck, type UploadCheckOptions } from './upload-check.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Streams `data` through a check in small chunks; the refusal, if any. */
function upload(
  data: Buffer,
  name: string,
  options: UploadCheckOptions = {},
  declared = sha(data),
  contentType?: string,
) {
  try {
    const check = createUploadCheck(options).begin({ name, sha256: declared, contentType });
    for (let i = 0; i < data.length; i += 7) check.update(data.subarray(i, i + 7));
    return check.finish();
  } catch (error) {
    return error as { code: string; reason: string; details: unknown };
  }
}

// Python's pickle.dumps({'a': 1}, protocol=4), and a ZIP whose first entry is archive/data.pkl (PyTorch).
const PICKLE = Buffer.from('80049510000000000000007d94288c016194680294752e', 'hex');
const TORCH = Buffer.concat([
  Buffer.from([0x50, 0x4b, 0x03, 0x04]),
  Buffer.alloc(22),
  Buffer.from([16, 0, 0, 0]),
  Buffer.from('archive/data.pkl'),
  Buffer.alloc(64),
]);

describe('createUploadCheck', () => {
  it('passes ordinary content whose digest matches, and returns the digest', () => {
    const data = Buffer.from('weights, in safetensors or plain bytes');
    expect(upload(data, 'models/m.safetensors')).toBe(sha(data));
  });

  it('refuses a digest that does not match, or is not one', () => {
    expect(upload(Buffer.from('x'), 'a.txt', {}, sha(Buffer.from('y')))).toMatchObject({
      code: 'invalid_argument',
      reason: 'digest_mismatch',
      details: { field: 'sha256' },
    });
    expect(upload(Buffer.from('x'), 'a.txt', {}, 'not-hex')).toMatchObject({ reason: 'digest_mismatch' });
  });

  it.each([
    ['a pickle posing as .bin', PICKLE, 'model.bin'],
    ['a PyTorch archive posing as .bin', TORCH, 'model.bin'],
    ['an ELF executable', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(60)]), 'tool.bin'],
    ['a PE executable', Buffer.concat([Buffer.from('MZ'), Buffer.alloc(60)]), 'tool.dat'],
    ['a script', Buffer.from('#!/bin/sh\nrm -rf /\n'), 'notes.txt'],
  ])('refuses %s by its first bytes', (_label, data, name) => {
    expect(upload(data, name)).toMatchObject({ code: 'invalid_argument', reason: 'content_refused' });
  });

  it.each(['model.pt', 'model.PKL', 'a/b/setup.exe', 'x.so'])('refuses the extension of %s', (name) => {
    expect(upload(Buffer.from('harmless'), name)).toMatchObject({
      reason: 'extension_refused',
      details: { field: 'path' },
    });
  });

  it('allows what a rule allows: a pickle when pickles are not refused, only listed extensions and types', () => {
    expect(typeof upload(PICKLE, 'model.bin', { refuseKinds: [] })).toBe('string');
    const onlyText = { allowedExtensions: ['.txt'], allowedContentTypes: ['text/plain'] };
    expect(typeof upload(Buffer.from('hi'), 'a.txt', onlyText, undefined, 'text/plain; charset=utf-8')).toBe('string');
    expect(upload(Buffer.from('hi'), 'a.csv', onlyText, undefined, 'text/plain')).toMatchObject({
      reason: 'extension_refused',
    });
    expect(upload(Buffer.from('hi'), 'a.txt', onlyText, undefined, 'text/html')).toMatchObject({
      reason: 'content_type_refused',
    });
  });

  it('refuses bad options', () => {
    expect(() => createUploadCheck({ refuseKinds: ['shellcode' as never] })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ refusedExtensions: ['pt'] })).toThrow(ConfigurationError);
    expect(() => createUploadCheck({ refuseKind: [] } as UploadCheckOptions)).toThrow('did you mean "refuseKinds"');
  });
});
