import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The project's rule: every public export has TSDoc with an `@example`. The public exports are
 * those of every entry that a published package's `exports` names (its `fluxguard-source`
 * file), walked with the type checker of one program, aliases resolved to their declarations.
 * A declaration tagged `@internal` is not public.
 */
const root = fileURLToPath(new URL('..', import.meta.url));

interface PackageJson {
  readonly name: string;
  readonly private?: boolean;
  readonly exports?: Readonly<Record<string, string | Readonly<Record<string, string>>>>;
}

/** The source file of every entry of every published package, as `package/subpath` → path. */
function publicEntries(): ReadonlyMap<string, string> {
  const entries = new Map<string, string>();
  for (const dir of readdirSync(join(root, 'packages'))) {
    const manifest = JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')) as PackageJson;
    if (manifest.private === true) continue;
    for (const [subpath, target] of Object.entries(manifest.exports ?? {})) {
      const source = typeof target === 'string' ? undefined : target['fluxguard-source'];
      if (source === undefined) continue;
      entries.set(`${manifest.name}${subpath.slice(1)}`, join(root, 'packages', dir, source));
    }
  }
  return entries;
}

/** Every public export whose declaration has no `@example`, as `entry: name (file)`. */
function exportsWithoutExample(entries: ReadonlyMap<string, string>): string[] {
  const program = ts.createProgram([...entries.values()], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    noEmit: true,
    skipLibCheck: true,
    types: ['node'],
  });
  const checker = program.getTypeChecker();
  const missing: string[] = [];
  for (const [entry, file] of entries) {
    const source = program.getSourceFile(file);
    const module = source === undefined ? undefined : checker.getSymbolAtLocation(source);
    if (module === undefined) throw new Error(`${entry}: ${file} is not a module of the program`);
    for (const exported of checker.getExportsOfModule(module)) {
      const symbol = (exported.flags & ts.SymbolFlags.Alias) === 0 ? exported : checker.getAliasedSymbol(exported);
      const declaration = symbol.declarations?.[0];
      if (declaration === undefined) continue;
      const tags = ts.getJSDocTags(declaration).map((tag) => tag.tagName.text);
      if (tags.includes('internal') || tags.includes('example')) continue;
      missing.push(`${entry}: ${exported.name} (${relative(root, declaration.getSourceFile().fileName)})`);
    }
  }
  return missing;
}

describe('TSDoc of the public API', () => {
  it('covers the entries of every published package', () => {
    const entries = publicEntries();
    expect([...entries.keys()]).toEqual(
      expect.arrayContaining([
        '@fluxguard/core',
        '@fluxguard/core/adapter',
        '@fluxguard/core/dev-pki',
        '@fluxguard/grpc',
        '@fluxguard/express',
        'fluxguard',
      ]),
    );
  });

  it('gives every public export an @example', () => {
    expect(exportsWithoutExample(publicEntries())).toEqual([]);
  });
});
