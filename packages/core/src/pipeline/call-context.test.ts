import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CallInfo } from '../call/call-info.js';
import { SecurityError } from '../errors/security-error.js';
import { CallState, StateCallInfo, addResponseHeadersLater, type CallContext } from './call-context.js';
import { createRateLimit } from '../ratelimit/rate-limit.js';
import { createPipeline } from './pipeline.js';
import { createAuthenticator } from '../guard/authenticate.js';

/** What a pipeline's controls read of a call: a gRPC call with nothing in it. */
function callInfo(): CallInfo {
  return {
    transport: 'grpc',
    operation: '/pkg.S/M',
    requestId: 'r',
    peerAddress: undefined,
    peerCertificate: undefined,
    headers: { get: () => undefined, getAll: () => [] },
    deadline: undefined,
    signal: new AbortController().signal,
  };
}

function state(onReleaseError: (error: unknown) => void = () => undefined) {
  const ended: SecurityError[] = [];
  const s = new CallState({ requestId: 'r', deadline: undefined, end: (error) => ended.push(error), onReleaseError });
  return { s, ended };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CallState', () => {
  it('enforces a deadline longer than Node’s longest timer at its time, not at once', () => {
    vi.useFakeTimers({ now: 0 });
    const { s, ended } = state();
    const thirtyDays = 30 * 24 * 3_600_000;
    s.limitDeadline(thirtyDays);
    vi.advanceTimersByTime(1_000);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(thirtyDays - 1_001);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(ended.map((e) => e.code)).toEqual(['deadline_exceeded']);
  });

  it('ends the call the grace after a deadline the transport enforces, when asked to; a tighter limit wins', () => {
    vi.useFakeTimers({ now: 0 });
    const ended: SecurityError[] = [];
    const init = { requestId: 'r', end: (error: SecurityError) => ended.push(error), onReleaseError: () => undefined };
    const backstopped = new CallState({ ...init, deadline: 1_000, transportDeadlineGraceMs: 500 });
    vi.advanceTimersByTime(1_499);
    expect(ended).toEqual([]);
    vi.advanceTimersByTime(1);
    // The client's own deadline: its budget, a refusal line rather than a server failure.
    expect(ended.map((e) => [e.code, e.reason])).toEqual([['deadline_exceeded', 'client_deadline']]);
    expect(backstopped.deadline).toBe(1_000);

    const tighter = new CallState({ ...init, deadline: 11_500, transportDeadlineGraceMs: 500 });
    tighter.limitDeadline(Date.now() + 200);
    vi.advanceTimersByTime(200);
    expect(ended).toHaveLength(2);
    // A deadline a control set is the server's.
    expect(ended[1]?.reason).toBe('deadline_exceeded');

    // Without the option, the transport's deadline is the transport's business.
    new CallState({ ...init, deadline: Date.now() + 100 });
    vi.advanceTimersByTime(10_000);
    expect(ended).toHaveLength(2);
  });

  it('runs what waits for the handler once it stops, at once when it has stopped or never started, and once only', () => {
    vi.useFakeTimers({ now: 0 });
    const { s } = state();
    const ran: string[] = [];
    s.afterHandler(() => ran.push('before start'), 1_000);
    expect(ran).toEqual(['before start']);
    s.handlerStarted();
    expect(s.handlerRunning).toBe(true);
    const wait = (): number => ran.push('waited');
    s.afterHandler(wait, 1_000);
    s.afterHandler(wait, 1_000);
    s.afterHandler(() => ran.push('short'), 10);
    s.afterHandler(() => ran.push('no wait'), 0);
    expect(ran).toEqual(['before start', 'no wait']);
    vi.advanceTimersByTime(10);
    expect(ran).toEqual(['before start', 'no wait', 'short']);
    s.handlerStopped();
    s.handlerStopped();
    expect(s.handlerRunning).toBe(false);
    expect(ran).toEqual(['before start', 'no wait', 'short', 'waited']);
    // Its timer was cleared: nothing runs twice.
    vi.advanceTimersByTime(5_000);
    s.afterHandler(() => ran.push('after stop'), 1_000);
    expect(ran).toEqual(['before start', 'no wait', 'short', 'waited', 'after stop']);
  });

  it('ends the wait for a handler that never stops after maxWaitMs; refuses a wait that is no time', () => {
    vi.useFakeTimers({ now: 0 });
    const errors: unknown[] = [];
    const { s } = state((error) => errors.push(error));
    s.handlerStarted();
    let ran = 0;
    s.afterHandler(() => {
      ran += 1;
      throw new Error('release failed');
    }, 2_000);
    vi.advanceTimersByTime(1_999);
    expect(ran).toBe(0);
    vi.advanceTimersByTime(1);
    expect(ran).toBe(1);
    // A throwing callback is reported like a release.
    expect(errors).toHaveLength(1);
    s.handlerStopped();
    expect(ran).toBe(1);
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => {
        s.afterHandler(() => undefined, bad);
      }).toThrow(/afterHandler: the longest wait must be a finite number of ms/);
    }
  });

  it('runs every release even when one throws and the reporter of that throws too', () => {
    const { s } = state(() => {
      throw new Error('log sink down');
    });
    const ran: number[] = [];
    s.addRelease(() => ran.push(1));
    s.addRelease(() => {
      throw new Error('release failed');
    });
    s.addRelease(() => ran.push(3));
    expect(() => {
      s.finish('ended');
    }).not.toThrow();
    expect(ran).toEqual([1, 3]);
  });

  it('aborts the signal after ending: as a timeout for a deadline, as an abort otherwise', () => {
    const timedOut = state();
    const seen: string[] = [];
    timedOut.s.signal.addEventListener('abort', () =>
      seen.push(`aborted after ${String(timedOut.ended.length)} answer(s)`),
    );
    timedOut.s.end(new SecurityError('deadline_exceeded'));
    expect((timedOut.s.signal.reason as DOMException).name).toBe('TimeoutError');
    expect(seen).toEqual(['aborted after 1 answer(s)']);

    const refused = state();
    refused.s.end(new SecurityError('payload_too_large'));
    expect((refused.s.signal.reason as DOMException).name).toBe('AbortError');
    expect(refused.s.endedEarly).toBe(true);
  });

  it('refuses an already passed deadline, and ignores one later than the current', () => {
    vi.useFakeTimers({ now: 10_000 });
    const { s } = state();
    expect(() => {
      s.limitDeadline(9_000);
    }).toThrow(SecurityError);
    s.limitDeadline(20_000);
    s.limitDeadline(30_000);
    expect(s.deadline).toBe(20_000);
  });

  it('refuses a call whose own deadline has passed, whatever deadline it is given', () => {
    vi.useFakeTimers({ now: 10_000 });
    const init = { requestId: 'r', end: () => undefined, onReleaseError: () => undefined };
    // The client's deadline (the transport's, with its grace): a refusal of the client's budget.
    const clients = new CallState({ ...init, deadline: 10_000, transportDeadlineGraceMs: 500 });
    expect(() => {
      clients.limitDeadline(20_000);
    }).toThrow(expect.objectContaining({ code: 'deadline_exceeded', reason: 'client_deadline' }));
    const open = new CallState({ ...init, deadline: 10_001, transportDeadlineGraceMs: 500 });
    open.limitDeadline(20_000);
    expect(open.deadline).toBe(10_001);
  });
});

describe('CallState response headers', () => {
  it('keeps the headers controls add, a second value joined as a list', () => {
    const s = new CallState({
      requestId: 'r',
      deadline: undefined,
      end: () => undefined,
      onReleaseError: () => undefined,
    });
    expect(s.responseHeaders).toBeUndefined();
    s.addResponseHeader('ratelimit-policy', '"per-peer";q=100;w=1');
    s.addResponseHeader('ratelimit-policy', '"uploads";q=20;w=60');
    s.addResponseHeader('ratelimit', '"per-peer";r=99;t=1');
    expect(Object.fromEntries(s.responseHeaders ?? [])).toEqual({
      'ratelimit-policy': '"per-peer";q=100;w=1, "uploads";q=20;w=60',
      ratelimit: '"per-peer";r=99;t=1',
    });
  });

  it.each([
    ['RateLimit', 'x'],
    ['rate limit', 'x'],
    ['', 'x'],
    ['x-note', 'a\r\nset-cookie: session=stolen'],
    ['x-note', 'a\nb'],
    ['x-note', 'caf\u00e9'],
    ['x-note', '\u0000'],
  ])('refuses the header %j: %j, which could split the response', (name, value) => {
    const { s } = state();
    expect(() => {
      s.addResponseHeader(name, value);
    }).toThrow(TypeError);
    expect(s.responseHeaders?.size ?? 0).toBe(0);
  });

  it('makes headers added for later only when they are read, once, in the order they were added', () => {
    const { s } = state();
    const render = vi.fn((): [string, string][] => [
      ['ratelimit-policy', '"per-peer";q=100;w=1'],
      ['ratelimit', '"per-peer";r=99;t=1'],
    ]);
    s.addResponseHeader('ratelimit-policy', '"first";q=1;w=1');
    addResponseHeadersLater(s, render);
    expect(render).not.toHaveBeenCalled();
    // Added after: joined behind the ones added for later, as if those had been written at once.
    s.addResponseHeader('ratelimit-policy', '"uploads";q=20;w=60');
    expect(render).toHaveBeenCalledTimes(1);
    addResponseHeadersLater(s, () => [['ratelimit', '"uploads";r=19;t=60']]);
    expect(Object.fromEntries(s.responseHeaders ?? [])).toEqual({
      'ratelimit-policy': '"first";q=1;w=1, "per-peer";q=100;w=1, "uploads";q=20;w=60',
      ratelimit: '"per-peer";r=99;t=1, "uploads";r=19;t=60',
    });
    expect(Object.fromEntries(s.responseHeaders ?? [])).toHaveProperty(
      'ratelimit',
      '"per-peer";r=99;t=1, "uploads";r=19;t=60',
    );
    expect(render).toHaveBeenCalledTimes(1);
  });

  it('adds headers for later at once, with their checks, on a context that is no call state of core', () => {
    const added: [string, string][] = [];
    const context = { addResponseHeader: (name: string, value: string) => added.push([name, value]) };
    addResponseHeadersLater(context as unknown as CallContext, () => [['ratelimit', '"a";r=1;t=1']]);
    expect(added).toEqual([['ratelimit', '"a";r=1;t=1']]);
  });

  it('is rendered by no method a handler could call on its context', () => {
    const { s } = state();
    expect(Object.getOwnPropertyNames(CallState.prototype).filter((name) => /later/i.test(name))).toEqual([]);
    expect(Object.keys(s)).not.toContain('addResponseHeadersLater');
  });
});

describe('CallState refusal', () => {
  it('keeps the first refusal a start hook noted', () => {
    const { s } = state();
    expect(s.refusal).toBeUndefined();
    const first = new SecurityError('unauthenticated', { reason: 'bad_signature' });
    s.noteRefusal(first);
    s.noteRefusal(new SecurityError('permission_denied'));
    expect(s.refusal).toBe(first);
  });

  it.each([
    ['synchronously', false],
    ['asynchronously', true],
  ])('is noted by the pipeline when a start hook refuses %s, for an earlier control’s release', async (_how, async) => {
    const refused = new SecurityError('unauthenticated', { reason: 'bad_signature' });
    const seen: unknown[] = [];
    const pipeline = createPipeline('test', [
      {
        name: 'refuses',
        stage: 'authentication',
        onStart: () => {
          if (async) return Promise.reject(refused);
          throw refused;
        },
      },
      {
        name: 'watches',
        stage: 'pre-authentication',
        onStart: (_call, context) => () => seen.push(context.refusal),
      },
    ]);
    const { s } = state();
    const info = callInfo();
    await expect(Promise.resolve().then(() => pipeline.start(info, s))).rejects.toBe(refused);
    s.finish('ended');
    expect(seen).toEqual([refused]);
  });

  it('tells whenRefused listeners at the refusal itself, once, and a late listener at once', () => {
    const reported: unknown[] = [];
    const { s } = state((error) => reported.push(error));
    const told: unknown[] = [];
    s.whenRefused((refusal) => told.push(refusal));
    s.whenRefused(() => {
      throw new Error('listener failed');
    });
    s.whenRefused((refusal) => told.push(refusal));
    const refused = new SecurityError('unauthenticated', { reason: 'bad_signature' });
    s.noteRefusal(refused);
    expect(told).toEqual([refused, refused]);
    expect(reported).toHaveLength(1);
    s.noteRefusal(new SecurityError('permission_denied'));
    expect(told).toHaveLength(2);
    s.whenRefused((refusal) => told.push(refusal));
    expect(told).toEqual([refused, refused, refused]);
  });

  it('tells whenAllowed listeners once every start hook allowed the call, and never a refused one', async () => {
    const told: string[] = [];
    // A control that listens, then the authentication stage's `onStart`.
    const listenedTo = (authenticate: () => Promise<void>) =>
      createPipeline('test', [
        {
          name: 'listens',
          stage: 'pre-authentication',
          onStart: (_call, context) => {
            context.whenAllowed(() => told.push('allowed'));
          },
        },
        { name: 'authenticates', stage: 'authentication', onStart: authenticate },
      ]);
    const allowed = state().s;
    await listenedTo(() => {
      told.push('authentication');
      return Promise.resolve();
    }).start(callInfo(), allowed);
    expect(told).toEqual(['authentication', 'allowed']);
    allowed.whenAllowed(() => told.push('late'));
    expect(told).toEqual(['authentication', 'allowed', 'late']);

    const refused = state().s;
    const refusal = new SecurityError('unauthenticated', { reason: 'bad_signature' });
    await expect(listenedTo(() => Promise.reject(refusal)).start(callInfo(), refused)).rejects.toBe(refusal);
    refused.whenAllowed(() => told.push('late on a refused call'));
    refused.noteAllowed();
    expect(told).toEqual(['authentication', 'allowed', 'late']);
  });

  it('is undefined for a call that every control allowed', async () => {
    const seen: unknown[] = [];
    const pipeline = createPipeline('test', [
      { name: 'watches', stage: 'pre-authentication', onStart: (_call, context) => () => seen.push(context.refusal) },
      { name: 'allows', stage: 'authentication', onStart: () => Promise.resolve() },
    ]);
    const { s } = state();
    await pipeline.start({ ...callInfo(), transport: 'http', operation: 'GET /x' }, s);
    s.finish('ended');
    expect(seen).toEqual([undefined]);
  });
});

describe('CallState.setPrincipal', () => {
  const frozen = () =>
    Object.freeze({
      subject: 'alice',
      roles: Object.freeze(['reader']),
      scopes: Object.freeze([]),
      claims: Object.freeze({ sub: 'alice' }),
      certificate: undefined,
      authenticatedBy: 'jwt' as const,
    });

  it('takes a principal frozen all through as it is, on every call', () => {
    const principal = frozen();
    for (let i = 0; i < 3; i++) {
      const { s } = state();
      s.setPrincipal(principal);
      expect(s.principal).toBe(principal);
    }
  });

  it('forgets a principal recorded since another authenticating pipeline started, and keeps one set before any', () => {
    const outer = {};
    const inner = {};
    const { s } = state();
    // Set before any authenticating pipeline: the application's own, kept by every guard.
    s.setPrincipal(frozen());
    s.enterAuthentication(outer);
    expect(s.principal?.subject).toBe('alice');
    s.setPrincipal(frozen());
    // The same pipeline again (mounted twice) keeps it; another forgets it.
    s.enterAuthentication(outer);
    expect(s.principal?.subject).toBe('alice');
    s.enterAuthentication(inner);
    expect(s.principal).toBeUndefined();
    // Recorded after a pipeline by code outside it (which may copy its caller): that pipeline's.
    s.setPrincipal(frozen());
    s.enterAuthentication(outer);
    expect(s.principal).toBeUndefined();
  });

  it('refuses a second guard after the handler started rather than leave it a caller it did not verify', () => {
    const { s } = state();
    s.enterAuthentication({});
    s.setPrincipal(frozen());
    s.seal();
    expect(() => {
      s.enterAuthentication({});
    }).toThrow(expect.objectContaining({ code: 'principal_sealed' }));
  });

  it('copies and freezes a principal that is not frozen, and leaves the original alone', () => {
    const roles = ['reader'];
    const principal = { ...frozen(), roles };
    const { s } = state();
    s.setPrincipal(principal);
    expect(s.principal).not.toBe(principal);
    expect(s.principal).toEqual(principal);
    expect(Object.isFrozen(s.principal?.roles)).toBe(true);
    roles.push('admin');
    expect(s.principal?.roles).toEqual(['reader']);
  });

  it('checks a frozen principal whose fields are getters again on every call', () => {
    let subject: unknown = 'alice';
    const principal = Object.freeze(
      Object.defineProperty({ ...frozen() }, 'subject', { get: () => subject, enumerable: true }),
    );
    state().s.setPrincipal(principal);
    subject = '';
    expect(() => {
      state().s.setPrincipal(principal);
    }).toThrow(TypeError);
  });

  it('checks a frozen principal whose role list has a getter again on every call', () => {
    let role: unknown = 'reader';
    const roles = Object.freeze(Object.defineProperty([] as string[], 0, { get: () => role, enumerable: true }));
    const principal = Object.freeze({ ...frozen(), roles });
    state().s.setPrincipal(principal);
    role = 42;
    expect(() => {
      state().s.setPrincipal(principal);
    }).toThrow(TypeError);
  });

  it('refuses a malformed principal', () => {
    expect(() => {
      state().s.setPrincipal({ ...frozen(), subject: '' });
    }).toThrow(TypeError);
    expect(() => {
      state().s.setPrincipal({ ...frozen(), authenticatedBy: 'header' } as never);
    }).toThrow(TypeError);
  });
});

describe('StateCallInfo', () => {
  const headers = { get: () => undefined, getAll: () => [] };
  const identity = { spiffeId: 'spiffe://example.org/client', dnsNames: [], subject: undefined, fingerprint256: 'AA' };

  it('reads a peer fact given as a function when a control first asks for it, and only once', () => {
    const peer = vi.fn(() => '10.0.0.1:5000');
    const certificate = vi.fn(() => identity as never);
    const info = new StateCallInfo(state().s, 'grpc', '/pkg.Svc/Get', peer, certificate, headers);
    expect(peer).not.toHaveBeenCalled();
    expect(certificate).not.toHaveBeenCalled();
    expect(info.peerAddress).toBe('10.0.0.1:5000');
    expect(info.peerAddress).toBe('10.0.0.1:5000');
    expect(info.peerCertificate).toBe(identity);
    expect(info.peerCertificate).toBe(identity);
    expect(peer).toHaveBeenCalledTimes(1);
    expect(certificate).toHaveBeenCalledTimes(1);
  });

  it('keeps a fact that was read as absent absent, and takes plain values as they are', () => {
    const none = vi.fn(() => undefined);
    const lazy = new StateCallInfo(state().s, 'grpc', '/pkg.Svc/Get', none, none, headers);
    expect(lazy.peerAddress).toBeUndefined();
    expect(lazy.peerCertificate).toBeUndefined();
    expect(lazy.peerCertificate).toBeUndefined();
    expect(none).toHaveBeenCalledTimes(2);
    const plain = new StateCallInfo(state().s, 'http', 'GET /x', '10.0.0.2', identity as never, headers);
    expect(plain.peerAddress).toBe('10.0.0.2');
    expect(plain.peerCertificate).toBe(identity);
  });
});

describe('createPipeline: its controls', () => {
  it('refuses the authentication steps of two guards in one pipeline, and a copy of one', () => {
    // One pipeline decides on one caller: the second guard's step decided on the first one's.
    const users = createAuthenticator({});
    const operators = createAuthenticator({});
    expect(() => createPipeline('fluxguard', [users, operators])).toThrow(/authentication steps of two guards/);
    expect(createPipeline('fluxguard', [users, users])).toBeDefined();
    // A copy carries no mark: its pipeline would forget no other guard's caller.
    expect(() => createPipeline('fluxguard', [{ ...operators }])).toThrow(/is a copy of an authentication step/);
  });

  it('refuses a group of controls put in the list unspread, saying how to spread it', () => {
    const limits = createRateLimit({ rules: [{ name: 'per-peer', key: 'peer', points: 5, durationSeconds: 1 }] });
    expect(() => createPipeline('fluxguard', [limits as never])).toThrow(
      'fluxguard: controls[0] is a group of controls (createRateLimit, a guard): spread its list, e.g. controls: [...limits.controls]',
    );
    expect(createPipeline('fluxguard', [...limits.controls])).toBeDefined();
  });

  it('hands on what a control that replaces messages returns, and ignores what others return', () => {
    const seen: unknown[] = [];
    const pipeline = createPipeline('fluxguard', [
      // A hook written as an arrow returns whatever its body does: that is no replacement.
      { name: 'counts', stage: 'input', onMessage: (message: unknown) => seen.push(message) },
      {
        name: 'trims',
        stage: 'input',
        replacesMessages: true,
        onMessage: (message: unknown) => String(message).trim(),
      },
      { name: 'keeps', stage: 'input', replacesMessages: true, onMessage: () => undefined },
      { name: 'reads', stage: 'input', onMessage: (message: unknown) => seen.push(message) },
    ]);
    const { s } = state();
    expect(pipeline.message('  bolt  ', callInfo(), s, 8)).toBe('bolt');
    expect(seen).toEqual(['  bolt  ', 'bolt']);
    expect(() =>
      createPipeline('fluxguard', [
        { name: 'x', stage: 'input', replacesMessages: 'yes' as never, onMessage: () => undefined },
      ]),
    ).toThrow('fluxguard: controls[0] (x): "replacesMessages" must be true or false');
  });
});
