import { defineConfig } from 'vitest/config';

// .ci/run asks for a JSON report (FLUXGUARD_VITEST_JSON=<file>) to count passed and failed tests.
const jsonReport = process.env.FLUXGUARD_VITEST_JSON;

// Workspace packages resolve to their TypeScript sources in tests (the `fluxguard-source`
// export condition), so a test never runs against a stale build.
export default defineConfig({
  resolve: { conditions: ['fluxguard-source'] },
  ssr: { resolve: { conditions: ['fluxguard-source'] } },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'examples/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**', 'test/bench/**', 'test/scratch/**'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: jsonReport ? ['default', 'json'] : ['default'],
    ...(jsonReport ? { outputFile: { json: jsonReport } } : {}),
  },
});
