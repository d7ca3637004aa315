import { describe, expect, it } from 'vitest';
import { mayOverlap, overlapWitness } from './pattern.js';

describe('mayOverlap', () => {
  // The route order check skips a pair only where mayOverlap says no: it must never say so of a
  // pair that overlapWitness finds a request for.
  const patterns = [
    'GET /v1/items/:id',
    'GET /v1/items/export',
    'GET /v1/:collection/:id',
    'GET /v1/files/*path',
    'GET /v1/files/report.:ext',
    'GET /v1/files/report.pdf',
    'POST /v1/items',
    'POST /v1/items/:id',
    '* /v1/any/:id',
    '* /v1/*rest',
    'DELETE /v1/items/:id',
    'HEAD /v1/items/:id',
    'GET /',
    'GET /v1',
    'GET /v1/items/:id/history',
    'PUT /v1/artifacts/*path',
    'GET /static/:tenant',
    'GET /static/*file',
  ];

  it('is false only for pairs no request matches both of', () => {
    const overlaps = mayOverlap(patterns);
    let skipped = 0;
    for (const [i, a] of patterns.entries()) {
      for (const [j, b] of patterns.entries()) {
        if (overlaps(i, j)) continue;
        skipped += 1;
        expect(overlapWitness(a, b), `${a} / ${b}`).toBeUndefined();
      }
    }
    // It does skip: another method, or a literal segment that differs.
    expect(skipped).toBeGreaterThan(patterns.length * 4);
    expect(overlaps(0, 1)).toBe(true);
    expect(overlaps(0, 6)).toBe(false);
  });
});
