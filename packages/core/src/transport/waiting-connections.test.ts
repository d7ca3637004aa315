import { describe, expect, it } from 'vitest';
import { WaitingConnections } from './waiting-connections.js';

describe('WaitingConnections', () => {
  it('gives up the oldest connection of the address waiting on the most', () => {
    const waiting = new WaitingConnections<string>();
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
    const waiting = new WaitingConnections<string>();
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
    const waiting = new WaitingConnections<string>();
    waiting.add('a', '203.0.113.1');
    waiting.add('b', '203.0.113.1');
    waiting.add('a', '203.0.113.1'); // counted once
    expect(waiting.delete('a')).toBe(true);
    expect(waiting.delete('a')).toBe(false);
    expect(waiting.takeFromBusiest()).toBe('b');
    expect(waiting.takeFromBusiest()).toBeUndefined();
    expect(waiting.size).toBe(0);
  });
});
