const BLOCK = 512;
const EMPTY = Buffer.alloc(0);
/** The most of a long name (GNU `L`) or of extended headers (PAX `x`) kept to read a name from. */
const MAX_NAME_DATA = 64 * 1024;

/** What the scan is doing at the current position of the stream. */
type State =
  | { readonly kind: 'header' }
  | {
      readonly kind: 'member';
      left: number;
      readonly padding: number;
      readonly data: MemberData;
      /** A GNU `L` or PAX `x` member: its data names the next member. */
      readonly names: boolean;
    }
  | { readonly kind: 'padding'; left: number }
  | { readonly kind: 'off' };

/** Where a member's bytes go: a check of a file's content, or the name data of the next one. */
type MemberData = { readonly push: (chunk: Buffer) => void } | undefined;

/**
 * The members of a tar archive as its bytes stream past (a PyTorch checkpoint of the legacy
 * format is a tar whose `pickle` member `torch.load` unpickles): each member's name, and each
 * regular file's bytes to a check of its own. Only a stream whose first block is a tar header
 * (its checksum right) is read as one; anything else, and anything after the archive's end, is
 * passed over. GNU long names (`L`) and PAX `path` records name the member that follows them.
 *
 * @example
 * ```ts
 * // internal to @fluxguard/core: the upload check's tar scan
 * const members = new TarMembers((name) => checkName(name), () => new PickleImportScan(refuse));
 * for await (const chunk of upload) members.push(chunk);
 * ```
 */
export class TarMembers {
  readonly #onName: (name: string) => void;
  readonly #contentCheck: () => { push(chunk: Uint8Array): void };
  #state: State = { kind: 'header' };
  /** A header block cut between chunks. */
  #partial: Buffer = EMPTY;
  /** The data of the `L` or `x` member being read, and its type. */
  #longName: Buffer[] | undefined;
  #longNameType = '';
  /** The name a GNU `L` or PAX `x` header gave the next member. */
  #nextName: string | undefined;

  constructor(onName: (name: string) => void, contentCheck: () => { push(chunk: Uint8Array): void }) {
    this.#onName = onName;
    this.#contentCheck = contentCheck;
  }

  /** Whether the archive has ended, or the stream was no tar: nothing more is read. */
  get finished(): boolean {
    return this.#state.kind === 'off';
  }

  push(chunk: Uint8Array): void {
    let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (data.length > 0 && this.#state.kind !== 'off') {
      const state = this.#state;
      if (state.kind === 'header') {
        const need = BLOCK - this.#partial.length;
        if (data.length < need) {
          this.#partial = Buffer.concat([this.#partial, data]);
          return;
        }
        const block =
          this.#partial.length === 0 ? data.subarray(0, BLOCK) : Buffer.concat([this.#partial, data.subarray(0, need)]);
        this.#partial = EMPTY;
        data = data.subarray(need);
        this.#header(block);
        continue;
      }
      const take = Math.min(state.left, data.length);
      if (state.kind === 'member') state.data?.push(data.subarray(0, take));
      state.left -= take;
      data = data.subarray(take);
      if (state.left > 0) continue;
      this.#state =
        state.kind === 'member' && state.padding > 0 ? { kind: 'padding', left: state.padding } : { kind: 'header' };
      if (state.kind === 'member' && state.names) this.#nameFromData();
    }
  }

  #header(block: Buffer): void {
    if (!validHeader(block)) {
      // An archive ends with zero blocks; a stream that is no tar has no header to begin with.
      this.#state = { kind: 'off' };
      return;
    }
    const size = sizeOf(block);
    const type = String.fromCharCode(block[156] ?? 0);
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (type === 'L' || type === 'x') {
      this.#longName = [];
      const names = this.#longName;
      let kept = 0;
      const collect = {
        push: (chunk: Buffer) => {
          if (kept >= MAX_NAME_DATA) return;
          names.push(chunk.subarray(0, MAX_NAME_DATA - kept));
          kept += chunk.length;
        },
      };
      this.#longNameType = type;
      this.#state = size > 0 ? { kind: 'member', left: size, padding, data: collect, names: true } : { kind: 'header' };
      if (size === 0) this.#nameFromData();
      return;
    }
    const name = this.#nextName ?? nameOf(block);
    this.#nextName = undefined;
    this.#onName(name);
    // Regular files ('0', NUL, '7'); links, directories and devices carry no content.
    const data = type === '0' || type === '\0' || type === '7' ? this.#contentCheck() : undefined;
    this.#state = size > 0 ? { kind: 'member', left: size, padding, data, names: false } : { kind: 'header' };
  }

  /** The name the finished `L` or `x` header's data gives the member after it. */
  #nameFromData(): void {
    const text = Buffer.concat(this.#longName ?? []).toString('utf8');
    this.#longName = undefined;
    if (this.#longNameType === 'L') this.#nextName = text.replace(/\0.*$/s, '');
    else {
      // PAX records: "<length> <key>=<value>\n".
      const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(text)?.[1];
      if (path !== undefined) this.#nextName = path;
    }
  }
}

/** A header block: its checksum (bytes 148–155 counted as spaces) is what it says. */
function validHeader(block: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
  const stated = parseInt(
    block
      .toString('latin1', 148, 156)
      .replace(/[\0 ]+$/, '')
      .trim(),
    8,
  );
  // An all-zero block sums to 256 (the spaces) and states nothing: the archive's end.
  return Number.isFinite(stated) && stated === sum && sum !== 8 * 0x20;
}

/** The member's size: octal, or base-256 (GNU) when the first byte's high bit is set. */
function sizeOf(block: Buffer): number {
  const first = block[124] ?? 0;
  if ((first & 0x80) !== 0) {
    let size = 0;
    for (let i = 125; i < 136; i++) size = size * 256 + (block[i] ?? 0);
    return size;
  }
  const value = parseInt(
    block
      .toString('latin1', 124, 136)
      .replace(/[\0 ]+$/, '')
      .trim() || '0',
    8,
  );
  return Number.isFinite(value) ? value : 0;
}

/** The name field, after the ustar prefix when there is one. */
function nameOf(block: Buffer): string {
  const field = (from: number, to: number) => block.toString('utf8', from, to).replace(/\0.*$/s, '');
  const name = field(0, 100);
  const ustar = block.toString('latin1', 257, 262) === 'ustar';
  const prefix = ustar ? field(345, 500) : '';
  return prefix === '' ? name : `${prefix}/${name}`;
}
