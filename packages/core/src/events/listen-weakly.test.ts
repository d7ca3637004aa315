import { EventEmitter } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { listenWeakly } from './listen-weakly.js';

/** Collects garbage across a few turns: a WeakRef read in a turn holds its target to the end of it. */
async function collectGarbage(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('listenWeakly', () => {
  it('calls every owner through one listener per emitter and event', () => {
    const emitter = new EventEmitter();
    const owners = Array.from({ length: 50 }, () => ({}));
    const calls: unknown[] = [];
    for (const [i, owner] of owners.entries()) listenWeakly(emitter, 'close', owner, (value) => calls.push([i, value]));
    emitter.emit('close', 'gone');
    expect(emitter.listenerCount('close')).toBe(1);
    expect(calls).toHaveLength(50);
    expect(calls[49]).toEqual([49, 'gone']);
  });

  it('keeps events and emitters apart', () => {
    const first = new EventEmitter();
    const second = new EventEmitter();
    const owner = {};
    const calls: string[] = [];
    listenWeakly(first, 'close', owner, () => calls.push('first close'));
    listenWeakly(first, 'error', owner, () => calls.push('first error'));
    listenWeakly(second, 'close', owner, () => calls.push('second close'));
    first.emit('error', new Error('x'));
    second.emit('close');
    expect(calls).toEqual(['first error', 'second close']);
  });

  it('replaces the callback of an owner registered again, calling it once', () => {
    const emitter = new EventEmitter();
    const owner = {};
    const calls: string[] = [];
    listenWeakly(emitter, 'close', owner, () => calls.push('old'));
    listenWeakly(emitter, 'close', owner, () => calls.push('new'));
    emitter.emit('close');
    expect(calls).toEqual(['new']);
  });

  it('puts its one listener before those already there when asked to', () => {
    const emitter = new EventEmitter();
    const calls: string[] = [];
    emitter.on('exit', () => calls.push('earlier'));
    listenWeakly(emitter, 'exit', {}, () => calls.push('weak'), { first: true });
    emitter.emit('exit');
    expect(calls).toEqual(['weak', 'earlier']);
  });

  it('keeps no owner alive, and its listener stays once they are gone', async () => {
    const emitter = new EventEmitter();
    let collected = 0;
    const registry = new FinalizationRegistry(() => {
      collected += 1;
    });
    let calls = 0;
    const register = (): void => {
      for (let i = 0; i < 100; i++) {
        const owner = { state: new Array(100).fill(i) };
        // The callback refers to its owner: held through the owner, it keeps nothing alive.
        listenWeakly(emitter, 'error', owner, () => (calls += owner.state.length));
        registry.register(owner, i);
      }
    };
    register();
    await collectGarbage();
    expect(collected).toBeGreaterThan(90);
    // An 'error' without a listener would throw here.
    expect(() => emitter.emit('error', new Error('late'))).not.toThrow();
    expect(emitter.listenerCount('error')).toBe(1);
    expect(calls).toBeLessThan(1000);
  });
});
