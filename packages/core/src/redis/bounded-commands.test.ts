// The deadline and the cap every Redis store of fluxguard puts on its commands, against a real
// redis-server that answers, hangs (SIGSTOP) and comes back.
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type RedisUnderTest } from '@fluxguard/test-support/redis';
import { captureWarnings } from '@fluxguard/test-support/warnings';
import { boundedCommands, warnOfClientTimeout, type BoundedCommands } from './bounded-commands.js';

let redis: RedisUnderTest;
let client: Redis;

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  if (client.status !== 'ready') await once(client, 'ready');
});

afterAll(async () => {
  client.disconnect();
  await redis.stop();
});

/**
 * A client with ioredis's own 100 ms commandTimeout, the cap of 5 commands over it, and the
 * commands it sent (to wait for the client's own rejections).
 */
async function impatientCommands() {
  const impatient = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1, commandTimeout: 100 });
  impatient.on('error', () => undefined);
  await impatient.ping();
  return { impatient, commands: boundedCommands(50, 5, impatient, 100), sent: [] as Promise<unknown>[] };
}

/**
 * Sends pings until one goes through once Redis answers again: while it is taken as slow, a ping
 * is answered at once and the next probe goes as soon as a late answer has come.
 */
async function answeredAgain(commands: BoundedCommands, redisClient: Redis = client): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    if ((await commands.run(() => redisClient.ping()).catch(() => undefined)) === 'PONG') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('Redis was still taken as slow after 50 attempts');
}

/** Keeps the event loop busy, as a flood of calls does, for `ms`. */
function busy(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // Nothing else runs meanwhile: no timer, no socket read.
  }
}

describe('boundedCommands against a real redis-server', () => {
  it("reads an answer that came while the event loop was busy, though the deadline's timer fired first", async () => {
    const commands = boundedCommands(20, 10);
    const answer = commands.run(() => client.ping());
    // Redis answers within a millisecond; the timer is due long before this process reads it.
    busy(200);
    await expect(answer).resolves.toBe('PONG');
    expect(commands.pending).toBe(0);
    // Nor is Redis taken as slow: the next command goes.
    await new Promise((resolve) => setImmediate(resolve));
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
  });

  it("waits for a command ioredis's auto-pipelining writes only once a long turn is over", async () => {
    const piped = new Redis({
      port: redis.port,
      host: '127.0.0.1',
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
    });
    piped.on('error', () => undefined);
    try {
      await piped.ping();
      const commands = boundedCommands(250, 10);
      // From the check phase, so the turn runs no poll phase before the deadline's timer is due.
      await new Promise((resolve) => setImmediate(resolve));
      const answer = commands.run(() => piped.ping());
      // The client writes the command from setImmediate: Redis cannot see it during this turn.
      busy(400);
      await expect(answer).resolves.toBe('PONG');
      expect(commands.pending).toBe(0);
    } finally {
      piped.disconnect();
    }
  });

  it('fails a command Redis does not answer in time, and counts it as waiting until Redis answers', async () => {
    const commands = boundedCommands(50, 10, undefined, 100);
    let late: Promise<number> | undefined;
    redis.pause();
    try {
      await expect(
        commands.run(() => {
          late = client.exists('k');
          return late;
        }),
      ).rejects.toThrow('Redis took longer than 50 ms');
      expect(commands.pending).toBe(1);
    } finally {
      redis.resume();
    }
    await late;
    expect(commands.pending).toBe(0);
    await answeredAgain(commands);
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
  });

  it('once a command outlasts its deadline, fails the next at once without sending them, and probes Redis once per interval', async () => {
    const commands = boundedCommands(50, 100, undefined, 150);
    let sent = 0;
    const exists = () => {
      sent += 1;
      return client.exists('probe');
    };
    redis.pause();
    try {
      await expect(commands.run(exists)).rejects.toThrow('Redis took longer than 50 ms');
      // A call that counts several rules waits out one deadline, not one for each rule.
      const refused = await Promise.allSettled(Array.from({ length: 50 }, () => commands.run(exists)));
      expect(
        refused.every((r) => r.status === 'rejected' && String(r.reason).includes('did not answer within 50 ms')),
      ).toBe(true);
      expect(sent).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      // The probe is due: one command goes and its caller waits for it within the deadline; the
      // others are held back meanwhile.
      const probe = commands.run(exists);
      await expect(commands.run(exists)).rejects.toThrow('did not answer within 50 ms');
      await expect(probe).rejects.toThrow('Redis took longer than 50 ms');
      await expect(commands.run(exists)).rejects.toThrow('did not answer within 50 ms');
      expect(sent).toBe(2);
      expect(commands.pending).toBe(2);
    } finally {
      redis.resume();
    }
    // The late answers show Redis is back: the next command probes at once, and its answer in
    // time ends the slow state.
    await answeredAgain(commands);
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
    expect(commands.pending).toBe(0);
  });

  it('serves the call that probes a Redis that answers again: the first call after a hang gets its answer', async () => {
    // A deadline a loaded machine cannot miss by scheduling alone: the probe's answer is what counts.
    const commands = boundedCommands(500, 100, undefined, 150);
    redis.pause();
    try {
      await expect(commands.run(() => client.exists('probe'))).rejects.toThrow('Redis took longer than 500 ms');
      await expect(commands.run(() => client.exists('probe'))).rejects.toThrow('did not answer within 500 ms');
    } finally {
      redis.resume();
    }
    // Past the interval the next command is a probe whatever the late answers have shown.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
    expect(commands.pending).toBe(0);
  });

  it('fails at once beyond maxPending commands waiting, so a hung Redis holds a bounded queue', async () => {
    const commands = boundedCommands(60_000, 5);
    redis.pause();
    let waiting: Promise<number>[];
    try {
      waiting = Array.from({ length: 5 }, (_, i) => commands.run(() => client.exists(`k${String(i)}`)));
      expect(commands.pending).toBe(5);
      // Settles without waiting for Redis (or the 60 s deadline): the test would time out otherwise.
      const refused = await Promise.allSettled(Array.from({ length: 200 }, () => commands.run(() => client.ping())));
      expect(refused.every((r) => r.status === 'rejected')).toBe(true);
      expect(String((refused[0] as PromiseRejectedResult).reason)).toContain('5 Redis commands are already waiting');
      expect(commands.pending).toBe(5);
    } finally {
      redis.resume();
    }
    await expect(Promise.all(waiting)).resolves.toEqual([0, 0, 0, 0, 0]);
    expect(commands.pending).toBe(0);
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
  });

  it("counts the commands ioredis's own commandTimeout gave up on until a later answer shows Redis took them", async () => {
    const { impatient, commands, sent } = await impatientCommands();
    const exists = (key: string) => () => {
      const command = impatient.exists(key);
      sent.push(command);
      return command;
    };
    redis.pause();
    try {
      const first = await Promise.allSettled(
        Array.from({ length: 5 }, (_, i) => commands.run(exists(`t${String(i)}`))),
      );
      expect(first.every((r) => r.status === 'rejected')).toBe(true);
      // ioredis rejects them too, and keeps them queued for the answer Redis still owes.
      await Promise.allSettled(sent);
      expect(commands.pending).toBe(5);
      // Once the probe is due, one command goes, though the cap is reached, to learn when Redis
      // answers again; every other fails at once.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const more = await Promise.allSettled(Array.from({ length: 100 }, () => commands.run(exists('later'))));
      expect(more.every((r) => r.status === 'rejected')).toBe(true);
      expect(sent).toHaveLength(6);
    } finally {
      redis.resume();
    }
    await Promise.allSettled(sent);
    // The next answer shows that Redis has taken everything sent before it.
    await answeredAgain(commands, impatient);
    expect(commands.pending).toBe(0);
    impatient.disconnect();
  });

  it('forgets the commands it counted once their connection closes, taking its queue with it', async () => {
    const { impatient, commands, sent } = await impatientCommands();
    redis.pause();
    try {
      await Promise.allSettled(
        Array.from({ length: 3 }, () =>
          commands.run(() => {
            const command = impatient.exists('gone');
            sent.push(command);
            return command;
          }),
        ),
      );
      await Promise.allSettled(sent);
      expect(commands.pending).toBe(3);
      const closed = once(impatient, 'close');
      impatient.disconnect();
      await closed;
      expect(commands.pending).toBe(0);
    } finally {
      redis.resume();
    }
  });

  it('adds one close listener to a client however many stores use it, and each store still forgets at a close', async () => {
    const { impatient, commands: first, sent } = await impatientCommands();
    const before = impatient.listenerCount('close');
    // Stores made one a request, by mistake: each added a listener until Node warned of a leak.
    let last = first;
    for (let i = 0; i < 50; i++) last = boundedCommands(50, 5, impatient, 100);
    expect(impatient.listenerCount('close')).toBe(before);
    redis.pause();
    try {
      for (const commands of [first, last]) {
        await Promise.allSettled(
          Array.from({ length: 2 }, () =>
            commands.run(() => {
              const command = impatient.exists('gone');
              sent.push(command);
              return command;
            }),
          ),
        );
      }
      await Promise.allSettled(sent);
      expect([first.pending, last.pending]).toEqual([2, 2]);
      const closed = once(impatient, 'close');
      impatient.disconnect();
      await closed;
      expect([first.pending, last.pending]).toEqual([0, 0]);
    } finally {
      redis.resume();
    }
  });

  it('rejects, without counting it, a command that throws before it is sent', async () => {
    const commands = boundedCommands(1_000, 1);
    await expect(
      commands.run(() => {
        throw new TypeError('bad arguments');
      }),
    ).rejects.toThrow('bad arguments');
    expect(commands.pending).toBe(0);
    await expect(commands.run(() => client.ping())).resolves.toBe('PONG');
  });
});

describe('warnOfClientTimeout', () => {
  it("warns once when a store's client has a commandTimeout of its own, and not without one", async () => {
    const captured = captureWarnings('FLUXGUARD_REDIS_COMMAND_TIMEOUT');
    try {
      warnOfClientTimeout(client, 'createRedisDenylist');
      warnOfClientTimeout({ options: { commandTimeout: 500 } }, 'createRedisDenylist');
      warnOfClientTimeout({ options: { commandTimeout: 500 } }, 'createRedisRateLimitStore');
      await captured.settled();
    } finally {
      captured.stop();
    }
    const ours = captured.warnings;
    expect(ours).toHaveLength(1);
    expect(ours[0]?.message).toMatch(/^createRedisDenylist: the ioredis client has a commandTimeout/);
  });
});
