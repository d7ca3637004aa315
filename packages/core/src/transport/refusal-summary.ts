/** The most addresses a summary names: the ones beyond are counted only. */
const MAX_NAMED_ADDRESSES = 16;
/** How often a summary is written while refusals go on. */
export const SUMMARY_INTERVAL_MS = 10_000;

/** What one summary line says: refusals by kind, and the first addresses they came from. */
export interface RefusalSpell {
  readonly counts: ReadonlyMap<string, number>;
  readonly addresses: readonly string[];
  /** The first refusal of a spell (written at once), or a summary of an interval. */
  readonly first: boolean;
}

/**
 * Refusals made before any call exists (a connection over its share, a failed TLS handshake),
 * which anyone can cause at the rate of their network: the first of a spell is written at once,
 * the rest as one line per interval while they go on, so a flood is never silent and never
 * floods the log.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the connection gate's and the handshake failures' lines
 * const summary = new RefusalSummary((spell) => audit.logger.warn({ event: 'x', ...Object.fromEntries(spell.counts) }, 'x'));
 * summary.note('address_share', '203.0.113.7');
 * ```
 */
export class RefusalSummary {
  readonly #write: (spell: RefusalSpell) => void;
  #counts = new Map<string, number>();
  #addresses = new Set<string>();
  #timer: NodeJS.Timeout | undefined;

  constructor(write: (spell: RefusalSpell) => void) {
    this.#write = write;
  }

  /** Notes `count` refusals of `kind` (a whole number; below 1, none), as `count` notes of one. */
  note(kind: string, address?: string, count = 1): void {
    if (!(count >= 1)) return;
    if (this.#timer !== undefined) {
      this.#add(kind, address, count);
      return;
    }
    // The first of a spell is written at once and alone, the rest of its count in the interval's line.
    this.#add(kind, address, 1);
    this.#flush(true);
    if (count > 1) this.#add(kind, address, count - 1);
    this.#timer = setInterval(() => {
      if (this.#counts.size === 0) {
        clearInterval(this.#timer);
        this.#timer = undefined;
        return;
      }
      this.#flush(false);
    }, SUMMARY_INTERVAL_MS);
    this.#timer.unref();
  }

  #add(kind: string, address: string | undefined, count: number): void {
    this.#counts.set(kind, (this.#counts.get(kind) ?? 0) + count);
    if (address !== undefined && this.#addresses.size < MAX_NAMED_ADDRESSES) this.#addresses.add(address);
  }

  #flush(first: boolean): void {
    const spell = { counts: this.#counts, addresses: [...this.#addresses], first };
    this.#counts = new Map();
    this.#addresses = new Set();
    this.#write(spell);
  }
}
