import { spawnSync } from 'node:child_process';
import { inspect } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { hiddenSlot } from './hidden-slot.js';

describe('hiddenSlot', () => {
  it('keeps a value on an object, and replaces it', () => {
    const slot = hiddenSlot<number>();
    const target = { id: '42' };
    expect(slot.get(target)).toBeUndefined();
    slot.set(target, 1);
    expect(slot.get(target)).toBe(1);
    slot.set(target, 2);
    expect(slot.get(target)).toBe(2);
  });

  it('is seen by nothing else: keys, symbols, inspect, JSON, spread, another slot', () => {
    const slot = hiddenSlot<string>();
    const other = hiddenSlot<string>();
    const target = { id: '42' };
    slot.set(target, 'secret-value');
    expect(Reflect.ownKeys(target)).toEqual(['id']);
    expect(inspect(target, { showHidden: true, depth: 5 })).not.toContain('secret-value');
    expect(JSON.stringify(target)).toBe('{"id":"42"}');
    expect(slot.get({ ...target })).toBeUndefined();
    expect(other.get(target)).toBeUndefined();
  });

  it('keeps a value aside on an engine that refuses private fields to objects that cannot be extended', () => {
    // V8 has this rule behind a flag (Node 26); an engine without the flag adds the field, and
    // the value must be kept either way.
    const rule = '--js-nonextensible-applies-to-private';
    const known = spawnSync(process.execPath, ['--v8-options'], { encoding: 'utf8' }).stdout.includes(rule);
    if (known) setFlagsFromString(rule);
    try {
      const slot = hiddenSlot<number>();
      const frozen = Object.freeze({ id: '1' });
      const sealed = Object.preventExtensions({ id: '2' });
      const open = { id: '3' };
      slot.set(frozen, 1);
      slot.set(sealed, 2);
      slot.set(open, 3);
      slot.set(frozen, 4);
      expect([slot.get(frozen), slot.get(sealed), slot.get(open)]).toEqual([4, 2, 3]);
      expect(slot.get({ id: '1' })).toBeUndefined();
      expect(Reflect.ownKeys(frozen)).toEqual(['id']);
    } finally {
      if (known) setFlagsFromString(`--no-${rule.slice(2)}`);
    }
  });

  it('cannot be forged through any property a sender controls', () => {
    const slot = hiddenSlot<string>();
    const forged = JSON.parse('{"#value":"forged","value":"forged","Slot":"forged"}') as object;
    expect(slot.get(forged)).toBeUndefined();
    const headers = new Map([['value', 'forged']]);
    expect(slot.get(headers)).toBeUndefined();
  });

  it('keeps a value on a class instance, not on its copies, and on a frozen object (kept aside)', () => {
    const slot = hiddenSlot<number>();
    const carrier = new Map<string, string>();
    slot.set(carrier, 7);
    expect(slot.get(carrier)).toBe(7);
    expect(slot.get(new Map(carrier))).toBeUndefined();
    const frozen = Object.freeze({ id: '1' });
    slot.set(frozen, 3);
    expect(slot.get(frozen)).toBe(3);
    slot.set(frozen, 4);
    expect(slot.get(frozen)).toBe(4);
    expect(Reflect.ownKeys(frozen)).toEqual(['id']);
  });
});
