import { describe, expect, it } from 'vitest';
import { ConnectionsByAddress, SEARCH_PER_ADDRESS, SEARCH_TOTAL } from './connections-by-address.js';

describe('ConnectionsByAddress', () => {
  it('gives up the oldest connection of the address waiting on the most', () => {
    const waiting = new ConnectionsByAddress<string>();
    waiting.add('victim', '198.51.100.9');
    for (let i = 0; i < 3; i++) waiting.add(`a${String(i)}`, '203.0.113.1');
    for (let i = 0; i < 2; i++) waiting.add(`b${String(i)}`, '203.0.113.2');
    expect(waiting.size).toBe(6);
    expect(waiting.takeFromBusiest()).toBe('a0');
    // Two each now: the address that came to two first gives up its oldest, then the other.
    expect(waiting.takeFromBusiest()).toBe('b0');
    expect(waiting.takeFromBusiest()).toBe('a1');
    // One each: the victim's address goes only now, tied with the others.
    expect(['a2', 'b1', 'victim']).toContain(waiting.takeFromBusiest());
    expect(waiting.size).toBe(2);
  });

  it('keeps a client with one connection waiting while a flood from one address grows', () => {
    const waiting = new ConnectionsByAddress<string>();
    waiting.add('victim', '198.51.100.9');
    // At the cap of 4: each new connection of the flood makes room by closing one.
    for (let i = 0; i < 3; i++) waiting.add(`f${String(i)}`, '203.0.113.1');
    for (let i = 3; i < 1_000; i++) {
      expect(waiting.takeFromBusiest()).not.toBe('victim');
      waiting.add(`f${String(i)}`, '203.0.113.1');
    }
    expect(waiting.size).toBe(4);
  });

  it('forgets a connection whose handshake ended, and gives none when none waits', () => {
    const waiting = new ConnectionsByAddress<string>();
    waiting.add('a', '203.0.113.1');
    waiting.add('b', '203.0.113.1');
    waiting.add('a', '203.0.113.1'); // counted once
    expect(waiting.delete('a')).toBe('203.0.113.1');
    expect(waiting.delete('a')).toBeUndefined();
    expect(waiting.takeFromBusiest()).toBe('b');
    expect(waiting.takeFromBusiest()).toBeUndefined();
    expect(waiting.size).toBe(0);
  });

  it('gives the first connection a search accepts, by address held most, each address oldest first', () => {
    const held = new ConnectionsByAddress<string>();
    held.add('victim', '198.51.100.9');
    for (let i = 0; i < 3; i++) held.add(`a${String(i)}`, '203.0.113.1');
    for (let i = 0; i < 2; i++) held.add(`b${String(i)}`, '203.0.113.2');
    const busy = new Set(['a0', 'a1', 'a2', 'b0']);
    const idle = (connection: string): boolean => !busy.has(connection);
    // Every connection of the address holding most is busy: the next address gives its first idle one.
    expect(held.takeFromBusiest(idle)).toBe('b1');
    // Then the victim's one, only once no other address holds an idle one.
    expect(held.takeFromBusiest(idle)).toBe('victim');
    expect(held.takeFromBusiest(idle)).toBeUndefined();
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
    expect(held.takeFromBusiest(idle)).toBe('idle0');
    expect(looked).toHaveLength(SEARCH_PER_ADDRESS + 1);
    // The pool's connections looked at go last: the next search looks at the next ones.
    looked.length = 0;
    expect(held.takeFromBusiest(idle)).toBe('idle1');
    expect(looked.slice(0, SEARCH_PER_ADDRESS)).toEqual(
      Array.from({ length: SEARCH_PER_ADDRESS }, (_, i) => `pool${String(SEARCH_PER_ADDRESS + i)}`),
    );

    // Busy pools from more addresses than a search looks at: it gives up, after SEARCH_TOTAL.
    const busy = new ConnectionsByAddress<string>();
    for (let a = 0; a < 20; a++)
      for (let i = 0; i < 10; i++) busy.add(`p${String(a)}-${String(i)}`, `192.0.2.${String(a)}`);
    looked.length = 0;
    expect(busy.takeFromBusiest(idle)).toBeUndefined();
    expect(looked).toHaveLength(SEARCH_TOTAL);
    // The addresses it went through go last among those holding as many.
    looked.length = 0;
    busy.takeFromBusiest(idle);
    expect(looked[0]).toBe(`p${String(SEARCH_TOTAL / SEARCH_PER_ADDRESS)}-0`);
    expect(busy.size).toBe(200);
  });
});
