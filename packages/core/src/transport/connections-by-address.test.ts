import { describe, expect, it } from 'vitest';
import { ConnectionsByAddress, SEARCH_PER_ADDRESS, SEARCH_TOTAL, type Judgement } from './connections-by-address.js';

/** Takes out and returns what `busiest` gives, with `accept` taking a connection or skipping it. */
function take<T>(held: ConnectionsByAddress<T>, accept?: (connection: T) => boolean): T | undefined {
  const found = held.busiest(accept === undefined ? undefined : (c) => (accept(c) ? 'take' : 'skip'));
  if (found !== undefined) held.delete(found);
  return found;
}

describe('ConnectionsByAddress', () => {
  it('gives up the oldest connection of the address holding the most', () => {
    const held = new ConnectionsByAddress<string>();
    held.add('victim', '198.51.100.9');
    for (let i = 0; i < 3; i++) held.add(`a${String(i)}`, '203.0.113.1');
    for (let i = 0; i < 2; i++) held.add(`b${String(i)}`, '203.0.113.2');
    expect(held.size).toBe(6);
    expect(take(held)).toBe('a0');
    // Two each now: the address that came to two first gives up its oldest, then the other.
    expect(take(held)).toBe('b0');
    expect(take(held)).toBe('a1');
    // One each: the victim's address goes only now, tied with the others.
    expect(['a2', 'b1', 'victim']).toContain(take(held));
    expect(held.size).toBe(2);
  });

  it('keeps a client with one connection while a flood from one address grows', () => {
    const held = new ConnectionsByAddress<string>();
    held.add('victim', '198.51.100.9');
    // At the cap of 4: each new connection of the flood makes room by closing one.
    for (let i = 0; i < 3; i++) held.add(`f${String(i)}`, '203.0.113.1');
    for (let i = 3; i < 1_000; i++) {
      expect(take(held)).not.toBe('victim');
      held.add(`f${String(i)}`, '203.0.113.1');
    }
    expect(held.size).toBe(4);
  });

  it('forgets a connection that is taken out, and gives none when it holds none', () => {
    const held = new ConnectionsByAddress<string>();
    held.add('a', '203.0.113.1');
    held.add('b', '203.0.113.1');
    held.add('a', '203.0.113.1'); // counted once
    expect(held.addressOf('a')).toBe('203.0.113.1');
    expect(held.delete('a')).toBe('203.0.113.1');
    expect(held.delete('a')).toBeUndefined();
    expect(held.has('a')).toBe(false);
    expect(take(held)).toBe('b');
    expect(take(held)).toBeUndefined();
    expect(held.size).toBe(0);
  });

  it('orders addresses by how many they hold as they come and go, many counts apart', () => {
    const held = new ConnectionsByAddress<string>();
    // Counts far apart (1, 500, 1000): a search steps only through counts some address holds.
    for (let i = 0; i < 1_000; i++) held.add(`big${String(i)}`, '192.0.2.1');
    for (let i = 0; i < 500; i++) held.add(`mid${String(i)}`, '192.0.2.2');
    held.add('one', '192.0.2.3');
    let looked = 0;
    expect(
      held.busiest((c) => {
        looked += 1;
        return c === 'one' ? 'take' : 'skip';
      }),
    ).toBe('one');
    expect(looked).toBe(2 * SEARCH_PER_ADDRESS + 1);
    // The big address falls below the middle one: the middle one is looked at first (its
    // oldest not yet passed over).
    for (let i = 0; i < 600; i++) held.delete(`big${String(i)}`);
    expect(held.busiest()).toBe(`mid${String(SEARCH_PER_ADDRESS)}`);
    for (let i = 0; i < 500; i++) held.delete(`mid${String(i)}`);
    for (let i = 600; i < 1_000; i++) held.delete(`big${String(i)}`);
    expect(held.busiest()).toBe('one');
    held.delete('one');
    expect(held.busiest()).toBeUndefined();
    expect(held.size).toBe(0);
  });

  it('gives the first connection a search accepts, by address holding most, each address oldest first', () => {
    const held = new ConnectionsByAddress<string>();
    held.add('victim', '198.51.100.9');
    for (let i = 0; i < 3; i++) held.add(`a${String(i)}`, '203.0.113.1');
    for (let i = 0; i < 2; i++) held.add(`b${String(i)}`, '203.0.113.2');
    const busy = new Set(['a0', 'a1', 'a2', 'b0']);
    const idle = (connection: string): boolean => !busy.has(connection);
    // Every connection of the address holding most is busy: the next address gives its first idle one.
    expect(take(held, idle)).toBe('b1');
    // Then the victim's one, only once no other address holds an idle one.
    expect(take(held, idle)).toBe('victim');
    expect(take(held, idle)).toBeUndefined();
    expect(held.size).toBe(4);
  });

  it('looks at a few of each address, no more in all, and at others first on the next search', () => {
    const held = new ConnectionsByAddress<string>();
    // A pool busy for long from one address, held longer than an attacker's idle connections.
    for (let i = 0; i < 100; i++) held.add(`pool${String(i)}`, '192.0.2.1');
    for (let i = 0; i < 50; i++) held.add(`idle${String(i)}`, '203.0.113.1');
    const looked: string[] = [];
    const idle = (connection: string): boolean => {
      looked.push(connection);
      return connection.startsWith('idle');
    };
    expect(take(held, idle)).toBe('idle0');
    expect(looked).toHaveLength(SEARCH_PER_ADDRESS + 1);
    // The pool's connections looked at go last: the next search looks at the next ones.
    looked.length = 0;
    expect(take(held, idle)).toBe('idle1');
    expect(looked.slice(0, SEARCH_PER_ADDRESS)).toEqual(
      Array.from({ length: SEARCH_PER_ADDRESS }, (_, i) => `pool${String(SEARCH_PER_ADDRESS + i)}`),
    );

    // Busy pools from more addresses than a search looks at: it gives up, after SEARCH_TOTAL.
    const busy = new ConnectionsByAddress<string>();
    for (let a = 0; a < 20; a++)
      for (let i = 0; i < 10; i++) busy.add(`p${String(a)}-${String(i)}`, `192.0.2.${String(a)}`);
    looked.length = 0;
    expect(take(busy, idle)).toBeUndefined();
    expect(looked).toHaveLength(SEARCH_TOTAL);
    // The addresses it went through go last among those holding as many.
    looked.length = 0;
    take(busy, idle);
    expect(looked[0]).toBe(`p${String(SEARCH_TOTAL / SEARCH_PER_ADDRESS)}-0`);
    expect(busy.size).toBe(200);
  });

  it('takes what it must of an address only when that address has none to take, before the next address', () => {
    const held = new ConnectionsByAddress<string>();
    for (const c of ['a-busy', 'a-stirring', 'a-silent']) held.add(c, '203.0.113.1');
    for (const c of ['b-silent', 'b-2']) held.add(c, '203.0.113.2');
    const judge = (c: string): Judgement =>
      c.endsWith('silent') ? 'take' : c.endsWith('stirring') ? 'if-must' : 'skip';
    // The address holding most has a silent one: taken before its older stirring one.
    expect(held.busiest(judge)).toBe('a-silent');
    held.delete('a-silent');
    held.delete('b-2');
    // a holds the most and has none silent: its stirring one goes, before b's silent one.
    expect(held.busiest(judge)).toBe('a-stirring');
  });
});
