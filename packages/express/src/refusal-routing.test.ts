// Where a refusal goes. `fluxguard().before` answers its controls' refusals at once: they never
// reach the app's routes or its error middleware, so an error middleware that calls `next()`
// (to log and carry on, say) cannot resume a refused request into the routes behind it.
// `controls()` mounted on its own passes a refusal to `next(err)`, as Express middleware does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express, { type ErrorRequestHandler } from 'express';
import { SecurityError, type Control } from '@fluxguard/core';
import { controls, fluxguard, type ProblemDetails } from './index.js';
import { captureAudit, serve, type Served } from './testing/tls.js';

/** Refuses a request that asks to be refused, by the header it names. */
function refusing(name: string, header: string): Control {
  return {
    name,
    stage: 'caller-limit',
    onStart(call) {
      if (call.headers.get(header) === 'yes') throw new SecurityError('permission_denied', { reason: `app.${name}` });
      return undefined;
    },
  };
}

const audit = captureAudit();
const handled: string[] = [];
const errorsSeen: string[] = [];
let served: Served;

beforeAll(async () => {
  const app = express();
  const { before, after } = fluxguard({ audit: audit.audit, controls: [refusing('first', 'x-refuse-first')] });
  app.use(before);
  // An error middleware of the app that logs and carries on: a careless pattern, but a common one.
  const carryOn: ErrorRequestHandler = (err, req, _res, next) => {
    errorsSeen.push(`${req.fluxguard.requestId}:${(err as SecurityError).code}`);
    next();
  };
  app.use(carryOn);
  app.use(controls('second', [refusing('second', 'x-refuse-second')]));
  app.use(carryOn);
  app.get('/secret', (req, res) => {
    handled.push(req.fluxguard.requestId);
    res.json({ secret: 'the handler ran' });
  });
  app.use(after);
  served = await serve(app);
});

afterAll(async () => {
  await served.close();
});

describe('a refusal of fluxguard().before', () => {
  it('is answered at once: the routes and the app error middleware behind never see it', async () => {
    const res = await fetch(`${served.url}/secret`, {
      headers: { 'x-request-id': 'before-1', 'x-refuse-first': 'yes' },
    });
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    const body = (await res.json()) as ProblemDetails;
    expect(body).toMatchObject({ code: 'permission_denied', requestId: 'before-1' });
    expect(handled).not.toContain('before-1');
    expect(errorsSeen.filter((e) => e.startsWith('before-1'))).toEqual([]);
    expect(
      audit
        .lines()
        .filter((l) => l.requestId === 'before-1')
        .map((l) => l.reason),
    ).toEqual(['app.first']);
  });

  it('answers 200 refusals sent at once, each once, none reaching the handler', async () => {
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        fetch(`${served.url}/secret`, {
          headers: { 'x-request-id': `flood-${String(i)}`, 'x-refuse-first': 'yes' },
        }).then(async (res) => [res.status, ((await res.json()) as ProblemDetails).requestId] as const),
      ),
    );
    expect(answers.filter(([status]) => status !== 403)).toEqual([]);
    expect(new Set(answers.map(([, id]) => id)).size).toBe(200);
    expect(handled.filter((id) => id.startsWith('flood-'))).toEqual([]);
    expect(errorsSeen.filter((e) => e.startsWith('flood-'))).toEqual([]);
  });
});

describe('a refusal of controls() mounted on its own', () => {
  it('goes to next(err), like any Express middleware: an app error middleware sees it', async () => {
    const res = await fetch(`${served.url}/secret`, {
      headers: { 'x-request-id': 'alone-1', 'x-refuse-second': 'yes' },
    });
    expect(errorsSeen).toContain('alone-1:permission_denied');
    // This app's error middleware then resumed the request: what fluxguard().before prevents.
    expect(res.status).toBe(200);
    expect(handled).toContain('alone-1');
  });

  it('serves a request no control refuses', async () => {
    const res = await fetch(`${served.url}/secret`, { headers: { 'x-request-id': 'ok-1' } });
    expect(res.status).toBe(200);
    expect(handled).toContain('ok-1');
  });
});
