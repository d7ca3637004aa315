// An app behind a proxy (`app.set('trust proxy')`) whose peer limits trust no proxy counts every
// client as the proxy: one client used up the allowance of all, and nothing said why.
import express from 'express';
import { describe, expect, it } from 'vitest';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { fluxguard } from './index.js';
import { captureAudit, peerLimits, serve } from './testing/tls.js';

const audit = captureAudit();

function app(trustedProxies: readonly string[], trustProxy: unknown) {
  const guard = fluxguard({ audit: audit.audit, controls: peerLimits(trustedProxies, 2, 5) });
  const site = express();
  site.set('case sensitive routing', true);
  site.set('trust proxy', trustProxy);
  site.use(guard.before);
  site.get('/v1/ping', (_req, res) => res.json({ ping: true }));
  site.use(guard.after);
  return guard.wrap(site);
}

async function statuses(url: string, clients: readonly string[]): Promise<number[]> {
  const answers: number[] = [];
  for (const client of clients) {
    answers.push((await fetch(`${url}/v1/ping`, { headers: { 'x-forwarded-for': client } })).status);
  }
  return answers;
}

describe('peer limits in an app that trusts a proxy', () => {
  it('warns once that the limits count the proxy, and says nothing once they trust it too', async () => {
    const captured = captureWarnings('FLUXGUARD_TRUST_PROXY');
    const shared = await serve(app([], 'loopback'));
    const counted = await serve(app(['127.0.0.1'], 'loopback'));
    const direct = await serve(app([], false));
    try {
      // Two clients behind the proxy: the first one's calls spend the second one's allowance.
      expect(await statuses(shared.url, ['203.0.113.1', '203.0.113.1', '203.0.113.2'])).toEqual([200, 200, 429]);
      expect(await statuses(counted.url, ['203.0.113.1', '203.0.113.1', '203.0.113.2'])).toEqual([200, 200, 200]);
      expect(await statuses(direct.url, ['203.0.113.1'])).toEqual([200]);
      await captured.settled();
      const warnings = captured.messages();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('"per-peer", "brute-force.peer"');
      expect(warnings[0]).toContain('trustedProxies');
    } finally {
      captured.stop();
      await shared.close();
      await counted.close();
      await direct.close();
    }
  });
});
