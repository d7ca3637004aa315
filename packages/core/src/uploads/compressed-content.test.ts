import { constants, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CompressedContent, type CompressedRefusal, type StreamCheck } from './compressed-content.js';

/** A check that reads everything and is never finished: it counts what it was given. */
class CountingCheck implements StreamCheck {
  bytes = 0;
  readonly finished = false;
  push(chunk: Uint8Array): void {
    this.bytes += chunk.byteLength;
  }
  end(): void {
    // Nothing to judge at the end.
  }
}

class Refused extends Error {
  constructor(readonly reason: CompressedRefusal) {
    super(reason);
  }
}

describe('CompressedContent', () => {
  it('stops the check within 64 KiB past the ratio, though one slice of input inflates to 8 MiB', () => {
    // 12 KB that inflate to 12 MiB: the first 8 KiB piece given to the inflater alone makes 8 MiB.
    const bomb = gzipSync(Buffer.from('I1\n'.repeat(4 * 1024 * 1024)), { level: constants.Z_BEST_COMPRESSION });
    expect(bomb.length).toBeLessThan(16 * 1024);
    const check = new CountingCheck();
    const content = new CompressedContent(
      () => check,
      16,
      (reason) => {
        throw new Refused(reason);
      },
    );
    expect(() => {
      content.push(bomb);
      content.end();
    }).toThrow(expect.objectContaining({ reason: 'compression_ratio_exceeded' }));
    // What the ratio allows for the bytes given to the inflater (at most all of them), plus one piece.
    expect(check.bytes).toBeLessThanOrEqual(16 * bomb.length + 1024 * 1024 + 64 * 1024);
  });
});
