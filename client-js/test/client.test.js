import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { Backoff } from '../src/backoff.js';
import { RtgateClient, forgetTransportChoice, isRetryable } from '../src/rtgate.js';
import { FakeClock, HELLO, fakeTransport, settle } from './fakes.js';

function setup(opts = {}, { wt = [], ws = [] } = {}) {
  const clock = new FakeClock();
  const wtT = fakeTransport('webtransport', wt);
  const wsT = fakeTransport('websocket', ws);
  const tokens = [];
  const client = new RtgateClient({
    url: 'http://127.0.0.1:3000',
    certificateHash: 'none',
    clock,
    random: () => 0.5,
    getToken: async () => {
      tokens.push(tokens.length);
      return `tok-${tokens.length}`;
    },
    transports: { webtransport: wtT.open, websocket: wsT.open },
    autoConnect: false,
    ...opts,
  });
  const seen = [];
  for (const ev of ['connect', 'disconnect', 'reconnect', 'reconnect_attempt', 'reconnect_failed', 'stopped']) {
    client.on(ev, (...args) => seen.push([ev, ...args]));
  }
  return { client, clock, wtT, wsT, tokens, seen };
}

/** Completes the handshake on the latest connection of `t`. */
async function accept(t, hello = HELLO) {
  await settle();
  t.last.push(hello);
  await settle();
}

beforeEach(() => forgetTransportChoice());

/** A small seeded PRNG (mulberry32): the same sequence on every run, uniform in [0, 1). */
function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('backoff', () => {
  test('doubles from 1 s up to a 10 s base, each delay within ±50 % of its base; the first from 0', () => {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const b = new Backoff({}, () => r);
      const delays = Array.from({ length: 10 }, () => b.next());
      delays.forEach((d, i) => {
        const base = Math.min(10000, 1000 * 2 ** i);
        const low = i === 0 ? 0 : base * 0.5;
        const high = i === 0 ? base : base * 1.5;
        assert.ok(d >= low && d <= high, `attempt ${i + 1}: ${d}`);
        assert.ok(d > 0);
      });
    }
    const mid = new Backoff({}, () => 0.5);
    assert.deepEqual(
      Array.from({ length: 6 }, () => mid.next()),
      [500, 2000, 4000, 8000, 10000, 10000],
    );
    // The jitter applies after the cap: the top of the range is maxDelay × 1.5, not maxDelay.
    const high = new Backoff({}, () => 0.999999);
    assert.deepEqual(
      Array.from({ length: 6 }, () => high.next()),
      [1000, 3000, 6000, 12000, 15000, 15000],
    );
  });

  test('at the cap, delays spread uniformly over [maxDelay × 0.5, maxDelay × 1.5)', () => {
    const b = new Backoff({}, seeded(20240601));
    const n = 20000;
    const delays = [];
    for (let i = 0; i < n; i++) {
      b.attempts = 29; // a long outage: the base is long capped
      delays.push(b.next());
    }
    const min = Math.min(...delays);
    const max = Math.max(...delays);
    assert.ok(min >= 5000 && max < 15000, `range [${min}, ${max}]`);
    // The whole range is used, both ends included.
    assert.ok(min < 5050, `lowest delay ${min}`);
    assert.ok(max > 14950, `highest delay ${max}`);
    // No herd: no single value is shared by more than a tiny fraction of the clients.
    const counts = new Map();
    for (const d of delays) counts.set(d, (counts.get(d) ?? 0) + 1);
    const top = Math.max(...counts.values());
    assert.ok(top / n < 0.002, `${top} of ${n} delays share one value`);
    // Uniform: ten equal bins of 1 s each hold 10 % ± 1.5 % of the delays.
    const bins = new Array(10).fill(0);
    for (const d of delays) bins[Math.min(9, Math.floor((d - 5000) / 1000))] += 1;
    for (const [i, c] of bins.entries()) {
      assert.ok(Math.abs(c / n - 0.1) < 0.015, `bin ${i}: ${c} of ${n}`);
    }
  });

  test('is configurable and resets', () => {
    // Without randomization the first attempt is immediate (its range is [0, 0)).
    const b = new Backoff({ initialDelay: 100, multiplier: 3, maxDelay: 500, randomization: 0 });
    assert.deepEqual([b.next(), b.next(), b.next()], [1, 300, 500]);
    b.reset();
    assert.equal(b.next(), 1);
  });

  test('never yields zero, even with zero initial delay and full randomization', () => {
    const b = new Backoff({ initialDelay: 0, randomization: 1 }, () => 0);
    assert.ok(b.next() >= 1);
    b.attempts = 5000; // multiplier ** n is Infinity here; 0 × Infinity must not leak out as NaN
    assert.equal(b.next(), 1);
  });
});

describe('connecting', () => {
  test('sends connect with token, device and v:1, then reports connected', async () => {
    const { client, wtT, seen } = setup({ device: 'laptop-1' });
    client.connect();
    assert.equal(client.state, 'connecting');
    await settle();
    assert.deepEqual(wtT.last.sent[0], { type: 'connect', v: 1, token: 'tok-1', device: 'laptop-1' });
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.equal(client.transport, 'webtransport');
    assert.equal(seen[0][0], 'connect');
  });

  test('answers ping with pong', async () => {
    const { client, wtT } = setup();
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'ping' });
    assert.deepEqual(wtT.last.sent.at(-1), { type: 'pong' });
  });

  test('calls getToken before every connect', async () => {
    const { client, clock, wtT, tokens } = setup();
    client.connect();
    await accept(wtT);
    wtT.last.drop(1006);
    await clock.advance(2000);
    assert.equal(tokens.length, 2);
    assert.equal(wtT.last.sent[0].token, 'tok-2');
  });
});

describe('transport choice', () => {
  test('falls back to WebSocket when WebTransport fails, and remembers it', async () => {
    const { client, clock, wtT, wsT } = setup({}, { wt: ['fail'] });
    const errors = [];
    client.on('error', (e) => errors.push(e));
    client.connect();
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
    assert.equal(errors.length, 1);
    wsT.last.drop(1006);
    await clock.advance(1500);
    await accept(wsT);
    assert.equal(wtT.calls, 1, 'WebTransport is not tried again on this page');
    assert.equal(wsT.calls, 2);
  });

  test('WebSocket starts after wtFallbackDelay when WebTransport has not opened, and wins', async () => {
    const { client, clock, wtT, wsT } = setup({ wtFallbackDelay: 3000 }, { wt: ['hang'] });
    client.connect();
    await clock.advance(2999);
    assert.equal(wsT.calls, 0);
    await clock.advance(1);
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
    assert.equal(wtT.calls, 1);
  });

  test('uses WebSocket only when WebTransport is missing', async () => {
    const clock = new FakeClock();
    const wsT = fakeTransport('websocket');
    const saved = globalThis.WebTransport;
    delete globalThis.WebTransport;
    try {
      const client = new RtgateClient({
        url: 'http://127.0.0.1:3000',
        clock,
        token: 't',
        transports: { websocket: wsT.open },
        autoConnect: false,
      });
      client.connect();
      await accept(wsT);
      assert.equal(client.transport, 'websocket');
    } finally {
      if (saved) globalThis.WebTransport = saved;
    }
  });

  test('uses an injected WebSocket constructor where there is no global one (Node 20)', async () => {
    class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        FakeWebSocket.last = this;
        queueMicrotask(() => {
          this.readyState = 1;
          this.onopen?.();
        });
      }
      send(text) {
        this.sent.push(JSON.parse(text));
      }
      close(code, reason) {
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
    }
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    try {
      const client = new RtgateClient({
        url: 'http://127.0.0.1:3000',
        token: 't',
        WebSocket: FakeWebSocket,
        clock: new FakeClock(),
        autoConnect: false,
      });
      client.connect();
      await settle();
      const ws = FakeWebSocket.last;
      assert.equal(ws?.url, 'ws://127.0.0.1:3000/ws');
      assert.deepEqual(ws.sent[0], { type: 'connect', v: 1, token: 't' });
      ws.onmessage({ data: JSON.stringify(HELLO) });
      assert.equal(client.state, 'connected');
      assert.equal(client.transport, 'websocket');
      client.disconnect();
      assert.deepEqual(ws.sent.at(-1), { type: 'disconnect' });
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test('a forced transport is the only one tried', async () => {
    const a = setup({ transport: 'websocket' });
    a.client.connect();
    await accept(a.wsT);
    assert.equal(a.wtT.calls, 0);

    forgetTransportChoice();
    const b = setup({ transport: 'webtransport' }, { wt: ['fail'] });
    b.client.connect();
    await settle();
    assert.equal(b.wsT.calls, 0);
    assert.equal(b.client.state, 'reconnecting');
  });

  test('remembers WebTransport when it worked, keeping the fallback for a later failure', async () => {
    const { client, clock, wtT, wsT } = setup();
    client.connect();
    await accept(wtT);
    wtT.script[1] = 'fail';
    wtT.last.drop(1006);
    await clock.advance(1500);
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
  });
});

describe('reconnection', () => {
  test('schedules attempts with growing, capped, jittered delays and never a zero delay', async () => {
    const { client, clock, wtT, seen } = setup(
      { transport: 'webtransport', random: () => 0.999 },
      {},
    );
    wtT.fallback = 'fail';
    client.connect();
    await settle();
    for (let i = 0; i < 7; i++) {
      const [, , delay] = seen.filter((s) => s[0] === 'reconnect_attempt').at(-1);
      await clock.advance(delay);
    }
    const attempts = seen.filter((s) => s[0] === 'reconnect_attempt');
    assert.deepEqual(
      attempts.map((a) => a[1]),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    attempts.forEach(([, n, delay]) => {
      const base = Math.min(10000, 1000 * 2 ** (n - 1));
      // The first attempt draws from [0, base), every later one from [base × 0.5, base × 1.5).
      const [low, high] = n === 1 ? [0, base] : [base * 0.5, base * 1.5];
      assert.ok(delay >= low && delay <= high, `attempt ${n}: ${delay}`);
    });
    assert.equal(attempts.at(-1)[2], 14990);
    assert.equal(client.state, 'reconnecting');
  });

  test('does not reconnect after a close in the 3500-3999 range', async () => {
    const { client, clock, wtT, seen } = setup();
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3502, reason: 'protocol_error', reconnect: false });
    wtT.last.drop(3502, 'protocol_error');
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.deepEqual(seen.slice(-2), [
      ['disconnect', 'protocol_error', 3502],
      ['stopped', { reason: 'protocol_error', code: 3502, auth: false }],
    ]);
    assert.equal(wtT.calls, 1);
    assert.equal(seen.filter((s) => s[0] === 'reconnect_attempt').length, 0);
  });

  test('does not reconnect on a terminal close code even without a disconnect frame', async () => {
    const { client, clock, wsT } = setup({ transport: 'websocket' });
    client.connect();
    await accept(wsT);
    wsT.last.drop(3503, 'unsupported_version');
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wsT.calls, 1);
  });

  test('refused handshake with invalid_token stops', async () => {
    const { client, clock, wtT, seen } = setup({ getToken: () => 'bad' });
    const errors = [];
    client.on('error', (e) => errors.push(e.code));
    client.connect();
    await settle();
    wtT.last.push({ type: 'error', code: 'invalid_token', message: 'bad' });
    wtT.last.push({ type: 'disconnect', code: 3501, reason: 'invalid_token', reconnect: false });
    wtT.last.drop(3501);
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.deepEqual(errors, ['invalid_token']);
    assert.deepEqual(seen.at(-2), ['disconnect', 'invalid_token', 3501]);
    assert.equal(seen.at(-1)[0], 'stopped');
    assert.equal(wtT.calls, 1);
  });

  test('waits at least retryAfterMs after server_shutdown, then reconnects', async () => {
    const { client, clock, wtT, seen } = setup();
    client.connect();
    await accept(wtT);
    wtT.last.push({
      type: 'disconnect',
      code: 3000,
      reason: 'server_shutdown',
      reconnect: true,
      retryAfterMs: 4200,
    });
    wtT.last.drop(3000);
    assert.deepEqual(seen.at(-2), ['disconnect', 'server_shutdown', 3000]);
    assert.deepEqual(seen.at(-1), ['reconnect_attempt', 1, 4200]);
    await clock.advance(4199);
    assert.equal(wtT.calls, 1);
    await clock.advance(1);
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.deepEqual(seen.at(-1), ['reconnect', 1]);
  });

  test('resets the backoff only after a stable connection', async () => {
    // At random 0.5 the first delay is 1000 × U[0, 1) = 500 ms, the second 2000 × U[0.5, 1.5) = 2000 ms.
    const { client, clock, wtT, seen } = setup({ reconnect: { stableAfter: 5000 } });
    client.connect();
    await accept(wtT);
    wtT.last.drop();
    assert.deepEqual(seen.at(-1), ['reconnect_attempt', 1, 500]);
    await clock.advance(500);
    await accept(wtT);
    wtT.last.drop(); // dropped right away: the backoff keeps growing
    assert.deepEqual(seen.at(-1), ['reconnect_attempt', 2, 2000]);
    await clock.advance(2000);
    await accept(wtT);
    await clock.advance(5000);
    wtT.last.drop();
    assert.deepEqual(seen.at(-1), ['reconnect_attempt', 1, 500]);
  });

  test('gives up after maxAttempts with reconnect_failed', async () => {
    const { client, clock, wtT, seen } = setup({
      transport: 'webtransport',
      reconnect: { maxAttempts: 2 },
    });
    wtT.fallback = 'fail';
    client.connect();
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.equal(seen.at(-1)[0], 'reconnect_failed');
    assert.equal(wtT.calls, 3);
  });

  test('a handshake that never completes times out after connectTimeout', async () => {
    const { client, clock, wtT } = setup({ connectTimeout: 20000 });
    client.connect();
    await clock.advance(19999);
    assert.equal(client.state, 'connecting');
    await clock.advance(1);
    assert.equal(client.state, 'reconnecting');
    assert.ok(wtT.conns[0].closed);
  });

  test('disconnect() stops for good', async () => {
    const { client, clock, wtT, seen } = setup();
    client.connect();
    await accept(wtT);
    client.disconnect();
    assert.deepEqual(wtT.conns[0].sent.at(-1), { type: 'disconnect' });
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.deepEqual(seen.at(-1), ['disconnect', 'client_disconnect', 1000]);
    assert.equal(wtT.calls, 1);
  });
});

/** The server's refusal of a handshake: `error`, then `disconnect`, then the close (PROTOCOL.md). */
function refuse(conn, reason, code, { frame = true } = {}) {
  conn.push({ type: 'error', code: reason, message: `refused: ${reason}` });
  if (frame) {
    conn.push({ type: 'disconnect', code, reason, message: `refused: ${reason}`, reconnect: code < 3500 });
  }
  conn.drop(frame ? code : 1006, frame ? reason : '');
}

/** A getToken that returns the given tokens in turn, then repeats the last; records its calls. */
function tokens(...list) {
  const calls = [];
  const getToken = async () => {
    const t = list[Math.min(calls.length, list.length - 1)];
    calls.push(t);
    return t;
  };
  return { getToken, calls };
}

describe('reconnection rules for refused tokens', () => {
  test('token_expired, then getToken returns the same token: stops without sending it again', async () => {
    const t = tokens('old');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3002, reason: 'token_expired', message: 'token expired', reconnect: true });
    wtT.last.drop(3002, 'token_expired');
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wtT.calls, 1, 'the refused token is never sent again');
    assert.equal(t.calls.length, 2, 'getToken was asked once for a fresh token');
    assert.deepEqual(
      seen.filter((s) => s[0] === 'stopped'),
      [['stopped', { reason: 'token_expired', code: 3002, auth: true, message: 'getToken() returned the token the server refused (token_expired)' }]],
    );
    assert.equal(seen.filter((s) => s[0] === 'reconnect_attempt').length, 1);
    assert.deepEqual(
      seen.filter((s) => s[0] === 'disconnect'),
      [['disconnect', 'token_expired', 3002]],
      'one disconnect for the one session that ended',
    );
  });

  test('token_expired with a fixed token stops at once', async () => {
    const { client, clock, wtT, seen } = setup({ getToken: undefined, token: 'fixed' });
    client.connect();
    await settle();
    refuse(wtT.last, 'token_expired', 3002);
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wtT.calls, 1);
    assert.equal(seen.filter((s) => s[0] === 'reconnect_attempt').length, 0);
    assert.deepEqual(seen.at(-1), ['stopped', { reason: 'token_expired', code: 3002, auth: true, message: 'refused: token_expired' }]);
  });

  test('token_expired, then a fresh token from getToken: reconnects with it', async () => {
    const t = tokens('old', 'new');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3002, reason: 'token_expired', reconnect: true });
    wtT.last.drop(3002, 'token_expired');
    await clock.advance(1000);
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.equal(wtT.last.sent[0].token, 'new');
    assert.equal(seen.filter((s) => s[0] === 'stopped').length, 0);
  });

  test('invalid_token, and getToken keeps returning the refused token: stops, no loop', async () => {
    const t = tokens('bad');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'invalid_token', 3501);
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wtT.calls, 1);
    assert.ok(t.calls.length <= 2, `getToken called ${t.calls.length} times`);
    assert.deepEqual(seen.filter((s) => s[0] === 'disconnect'), [['disconnect', 'invalid_token', 3501]]);
    const stopped = seen.filter((s) => s[0] === 'stopped');
    assert.equal(stopped.length, 1);
    assert.equal(seen.at(-1), stopped[0], 'stopped comes last');
    assert.equal(stopped[0][1].reason, 'invalid_token');
    assert.equal(stopped[0][1].code, 3501);
    assert.equal(stopped[0][1].auth, true);
  });

  test('invalid_token, then a different token: one more attempt; refused again: stops', async () => {
    const t = tokens('bad-1', 'bad-2', 'bad-3', 'bad-4');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'invalid_token', 3501);
    await clock.advance(1500);
    assert.equal(wtT.calls, 2);
    assert.equal(wtT.last.sent[0].token, 'bad-2');
    refuse(wtT.last, 'invalid_token', 3501);
    await clock.advance(120000);
    assert.equal(wtT.calls, 2, 'a second refusal in a row is final');
    assert.equal(client.state, 'disconnected');
    assert.equal(seen.filter((s) => s[0] === 'stopped').length, 1);
  });

  test('the refusal counts even when the disconnect frame is lost (close code not exposed)', async () => {
    // On WebTransport a browser may not expose the QUIC close code and the close can overtake the
    // disconnect frame; the handshake's `error` frame still says why.
    const { client, clock, wtT, seen } = setup({ getToken: tokens('bad').getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'invalid_token', 3501, { frame: false });
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wtT.calls, 1);
    assert.deepEqual(seen.filter((s) => s[0] === 'stopped').map((s) => [s[1].reason, s[1].code]), [['invalid_token', 3501]]);
  });

  test('getToken returning no token stops with auth_required; a throwing getToken is retried', async () => {
    const empty = setup({ getToken: async () => '' });
    empty.client.connect();
    await empty.clock.advance(120000);
    assert.equal(empty.client.state, 'disconnected');
    assert.equal(empty.wtT.calls, 0);
    assert.deepEqual(empty.seen.at(-1), ['stopped', { reason: 'auth_required', code: 3500, auth: true, message: 'getToken() returned no token' }]);

    let calls = 0;
    const failing = setup({
      getToken: async () => {
        calls += 1;
        if (calls < 3) throw new Error('token service down');
        return 'tok';
      },
    });
    failing.client.connect();
    await failing.clock.advance(10000);
    await accept(failing.wtT);
    assert.equal(failing.client.state, 'connected');
    assert.equal(calls, 3);
  });

  test('other terminal closes stop at once, whatever getToken would return', async () => {
    const t = tokens('a', 'b', 'c');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'unsupported_version', 3503);
    await clock.advance(120000);
    assert.equal(wtT.calls, 1);
    assert.equal(t.calls.length, 1);
    assert.deepEqual(seen.at(-1), ['stopped', { reason: 'unsupported_version', code: 3503, auth: false, message: 'refused: unsupported_version' }]);
  });

  test('connect() after a stop tries again, even with the same token', async () => {
    const t = tokens('bad');
    const { client, clock, wtT } = setup({ getToken: t.getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'invalid_token', 3501);
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    client.connect();
    await settle();
    assert.equal(wtT.calls, 2, 'an explicit connect() is the app saying something changed');
    await accept(wtT);
    assert.equal(client.state, 'connected');
  });

  test('a connection that succeeded resets the one extra attempt', async () => {
    const t = tokens('a', 'b', 'c', 'd');
    const { client, clock, wtT } = setup({ getToken: t.getToken });
    client.connect();
    await settle();
    refuse(wtT.last, 'invalid_token', 3501);
    await clock.advance(1500);
    await accept(wtT); // 'b' was accepted
    wtT.last.push({ type: 'disconnect', code: 3501, reason: 'invalid_token', reconnect: false });
    wtT.last.drop(3501);
    await clock.advance(2000); // the second reconnect: the backoff has not reset yet
    assert.equal(wtT.calls, 3, 'a fresh token gets its one attempt again');
    assert.equal(wtT.last.sent[0].token, 'c');
  });
});

describe('heartbeat', () => {
  test('a server silent past interval + timeout is treated as dead', async () => {
    const { client, clock, wtT, seen } = setup();
    client.connect();
    await accept(wtT, { ...HELLO, heartbeat: { intervalMs: 1000, timeoutMs: 500 } });
    await clock.advance(1400);
    wtT.last.push({ type: 'ping' }); // any frame proves the server alive
    await clock.advance(1499);
    assert.equal(client.state, 'connected');
    await clock.advance(1);
    assert.equal(client.state, 'reconnecting');
    assert.deepEqual(
      seen.find((s) => s[0] === 'disconnect'),
      ['disconnect', 'heartbeat_timeout', 1006],
    );
    assert.ok(wtT.conns[0].closed);
  });
});

describe('requests and the queue', () => {
  test('request resolves with the ack and rejects with the server code', async () => {
    const { client, wtT } = setup();
    client.connect();
    await accept(wtT);
    const ok = client.request('sys:echo', { a: 1 });
    const bad = client.request('no:such', null);
    const [e1, e2] = wtT.last.events();
    wtT.last.push({ type: 'ack', id: e1.id, data: { a: 1 } });
    wtT.last.push({ type: 'error', id: e2.id, code: 'unknown_event', message: 'x' });
    assert.deepEqual(await ok, { a: 1 });
    await assert.rejects(bad, (e) => e.code === 'unknown_event' && e instanceof Error);
  });

  test('rate_limit_exceeded rejects and is reported with its details', async () => {
    const { client, wtT } = setup();
    const infos = [];
    client.on('rate_limit_exceeded', (i) => infos.push(i));
    client.connect();
    await accept(wtT);
    const p = client.request('message:send', {});
    const details = { limit: 30, windowMs: 60000, resetAt: 1 };
    wtT.last.push({ type: 'error', id: wtT.last.events()[0].id, code: 'rate_limit_exceeded', details });
    await assert.rejects(p, (e) => e.code === 'rate_limit_exceeded' && e.details.limit === 30);
    assert.deepEqual(infos, [{ ...details, event: 'message:send' }]);
  });

  test('request times out on the client', async () => {
    const { client, clock, wtT } = setup();
    client.connect();
    await accept(wtT);
    const p = client.request('sys:echo', 1, { timeout: 500 });
    const rejected = assert.rejects(p, (e) => e.code === 'timeout');
    await clock.advance(499);
    assert.equal(client._inflight.size, 1);
    await clock.advance(1);
    await rejected;
    assert.equal(client._inflight.size, 0);
  });

  test('sends issued while disconnected are flushed in order after connecting', async () => {
    const { client, wtT } = setup();
    const a = client.request('sys:echo', 1);
    client.emit('x:fire', 2);
    const c = client.request('sys:echo', 3);
    assert.equal(client.queued, 3);
    client.connect();
    await accept(wtT);
    const ev = wtT.last.events();
    assert.deepEqual(
      ev.map((f) => [f.event, f.data]),
      [
        ['sys:echo', 1],
        ['x:fire', 2],
        ['sys:echo', 3],
      ],
    );
    assert.equal(ev[1].id, undefined);
    wtT.last.push({ type: 'ack', id: ev[0].id, data: 1 });
    wtT.last.push({ type: 'ack', id: ev[2].id, data: 3 });
    assert.deepEqual([await a, await c], [1, 3]);
  });

  test('a retryable send lost with the connection is resent before later sends, same payload', async () => {
    const { client, clock, wtT } = setup();
    client.connect();
    await accept(wtT);
    const first = client.request('message:send', { clientMessageId: 'm1' }, { retry: true, timeout: 0 });
    const plain = client.request('sys:echo', 'x');
    wtT.last.drop();
    await assert.rejects(plain, (e) => e.code === 'disconnected');
    const second = client.request('message:send', { clientMessageId: 'm2' }, { retry: true, timeout: 0 });
    await clock.advance(1000);
    await accept(wtT);
    const ev = wtT.last.events('message:send');
    assert.deepEqual(
      ev.map((f) => f.data.clientMessageId),
      ['m1', 'm2'],
    );
    wtT.last.push({ type: 'ack', id: ev[0].id, data: { seq: 1, duplicate: true } });
    wtT.last.push({ type: 'ack', id: ev[1].id, data: { seq: 2, duplicate: false } });
    assert.equal((await first).seq, 1);
    assert.equal((await second).seq, 2);
  });

  test('the queue is bounded', async () => {
    const { client } = setup({ maxQueue: 2 });
    client.request('a', 1).catch(() => {});
    client.request('b', 2).catch(() => {});
    await assert.rejects(client.request('c', 3), (e) => e.code === 'queue_full');
    assert.equal(client.queued, 2);
  });

  test('volatile emits use datagrams and are dropped while offline', async () => {
    const { client, wtT } = setup();
    assert.equal(client.emit('typing', { t: 1 }, { volatile: true }), false);
    client.connect();
    await accept(wtT);
    assert.equal(client.emit('typing', { t: 2 }, { volatile: true }), true);
    assert.deepEqual(wtT.last.volatile, [{ type: 'event', event: 'typing', data: { t: 2 } }]);
  });
});

describe('presence', () => {
  test('subscriptions are restored after a reconnect', async () => {
    const { client, clock, wtT } = setup();
    const updates = [];
    client.on('presence', (p) => updates.push(p));
    client.connect();
    await accept(wtT);
    const sub = client.presence.subscribe(['bob']);
    const [s1] = wtT.last.events('presence:subscribe');
    wtT.last.push({ type: 'ack', id: s1.id, data: { users: [{ userId: 'bob', online: false, devices: 0 }] } });
    await sub;
    wtT.last.push({ type: 'event', event: 'presence:update', data: { userId: 'bob', status: 'online' } });
    assert.equal(client.presence.get('bob').online, true);
    wtT.last.drop();
    await clock.advance(1000);
    await accept(wtT);
    const [s2] = wtT.last.events('presence:subscribe');
    assert.deepEqual(s2.data, { userIds: ['bob'] });
    wtT.last.push({ type: 'ack', id: s2.id, data: { users: [{ userId: 'bob', online: false, devices: 0 }] } });
    await settle();
    assert.equal(client.presence.get('bob').online, false);
    assert.deepEqual(
      updates.map((u) => u.online),
      [false, true, false],
    );
  });
});

describe('presence versions', () => {
  /** Connected, watching bob; returns the subscribe frame still waiting for its ack. */
  async function watching() {
    const ctx = setup();
    const events = [];
    ctx.client.on('presence', (p) => events.push({ ...p }));
    ctx.client.connect();
    await accept(ctx.wtT);
    const sub = ctx.client.presence.subscribe(['bob']);
    const [frame] = ctx.wtT.last.events('presence:subscribe');
    return { ...ctx, events, sub, frame };
  }
  const update = (conn, status, version, extra = {}) =>
    conn.push({
      type: 'event',
      event: 'presence:update',
      data: { userId: 'bob', status, deviceId: 'p1', at: 1, ...(version === undefined ? {} : { version }), ...extra },
    });

  test('an update with a lower version than one applied is ignored', async () => {
    const { client, wtT, events, sub, frame } = await watching();
    wtT.last.push({ type: 'ack', id: frame.id, data: { users: [{ userId: 'bob', online: false, devices: 0, version: 4 }] } });
    await sub;
    update(wtT.last, 'online', 6);
    update(wtT.last, 'offline', 5); // delivered late: older than the online above
    assert.equal(client.presence.get('bob').online, true);
    assert.equal(client.presence.get('bob').version, 6);
    update(wtT.last, 'offline', 6); // same version: already applied
    assert.equal(client.presence.get('bob').online, true);
    update(wtT.last, 'offline', 7);
    assert.equal(client.presence.get('bob').online, false);
    assert.deepEqual(
      events.map((e) => [e.online, e.version]),
      [
        [false, 4],
        [true, 6],
        [false, 7],
      ],
    );
  });

  test('a snapshot older than an update already applied does not overwrite it', async () => {
    const { client, wtT, events, sub, frame } = await watching();
    // The server registered the subscription, pushed a newer update, then the ack's snapshot
    // (read earlier) arrives.
    update(wtT.last, 'online', 9);
    wtT.last.push({ type: 'ack', id: frame.id, data: { users: [{ userId: 'bob', online: false, devices: 0, version: 8 }] } });
    const result = await sub;
    assert.equal(client.presence.get('bob').online, true);
    assert.equal(client.presence.get('bob').version, 9);
    assert.deepEqual(
      result.map((u) => [u.userId, u.online, u.version]),
      [['bob', true, 9]],
      'subscribe resolves with what the client now holds',
    );
    assert.deepEqual(
      events.map((e) => [e.online, e.version]),
      [[true, 9]],
    );
    // A newer snapshot is applied.
    const q = client.presence.query(['bob']);
    ackLastFrame(wtT.last, 'presence:query', { users: [{ userId: 'bob', online: false, devices: 0, version: 10 }] });
    await q;
    assert.equal(client.presence.get('bob').online, false);
    assert.equal(client.presence.get('bob').version, 10);
  });

  test('entries without a version (an older server) are applied as before', async () => {
    const { client, wtT, events, sub, frame } = await watching();
    wtT.last.push({ type: 'ack', id: frame.id, data: { users: [{ userId: 'bob', online: false, devices: 0 }] } });
    await sub;
    update(wtT.last, 'online');
    update(wtT.last, 'offline');
    assert.equal(client.presence.get('bob').online, false);
    assert.equal(client.presence.get('bob').version, undefined);
    assert.deepEqual(
      events.map((e) => e.online),
      [false, true, false],
    );
  });

  test('versions are compared within one connection; a new connection starts from its snapshot', async () => {
    // A snapshot taken on a new connection is newer than anything the old one delivered, even if
    // the server's counters restarted with it.
    const { client, clock, wtT, sub, frame } = await watching();
    wtT.last.push({ type: 'ack', id: frame.id, data: { users: [{ userId: 'bob', online: true, devices: 1, version: 40 }] } });
    await sub;
    wtT.last.drop();
    await clock.advance(1000);
    await accept(wtT);
    const [again] = wtT.last.events('presence:subscribe');
    wtT.last.push({ type: 'ack', id: again.id, data: { users: [{ userId: 'bob', online: false, devices: 0, version: 2 }] } });
    await settle();
    assert.equal(client.presence.get('bob').online, false);
    update(wtT.last, 'offline', 1); // but within this connection, older is still older
    update(wtT.last, 'online', 2);
    assert.equal(client.presence.get('bob').online, false);
    update(wtT.last, 'online', 3);
    assert.equal(client.presence.get('bob').online, true);
  });
});

function ackLastFrame(conn, event, data) {
  const f = conn.events(event).at(-1);
  conn.push({ type: 'ack', id: f.id, data });
  return f;
}

// ---- token refresh while connected ----------------------------------------------------------------

const expiring = (expiresAt) => ({ type: 'event', event: 'sys:token-expiring', data: { expiresAt } });

/** A promise with its resolve/reject outside, for a getToken the test answers when it wants. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Records the refresh events as [name, arg]. */
function refreshEvents(client) {
  const seen = [];
  client.on('token_refreshed', (info) => seen.push(['token_refreshed', info]));
  client.on('token_refresh_failed', (err) => seen.push(['token_refresh_failed', err.code]));
  return seen;
}

describe('token refresh', () => {
  test('on sys:token-expiring: getToken, sys:refresh with the token, the expiry and token updated', async () => {
    const t = tokens('t1', 't2');
    const fetched = [];
    const fetch = async (url, init) => {
      fetched.push(init.headers.Authorization);
      return { ok: true, json: async () => ({ messages: [], hasMore: false }) };
    };
    const { client, wtT } = setup({ getToken: t.getToken, fetch });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT, { ...HELLO, expiresAt: 1000 });
    wtT.last.push(expiring(1000));
    await settle();
    assert.deepEqual(t.calls, ['t1', 't2']);
    const [frame] = wtT.last.events('sys:refresh');
    assert.deepEqual(frame.data, { token: 't2' });
    assert.equal(typeof frame.id, 'number', 'an acknowledged event');
    assert.equal(client.token, 't1', 'the new token counts once the server accepted it');
    wtT.last.push({ type: 'ack', id: frame.id, data: { expiresAt: 5000 } });
    assert.deepEqual(events, [['token_refreshed', { expiresAt: 5000 }]]);
    assert.equal(client.token, 't2');
    assert.equal(client.session.expiresAt, 5000);
    assert.equal(client.session.sessionId, HELLO.sessionId, 'the rest of the session stays');
    await client.conversation('c1').history();
    assert.deepEqual(fetched, ['Bearer t2'], 'REST calls use the refreshed token');
    assert.equal(client.state, 'connected');
  });

  test('a close that refuses the token after a refresh refuses the refreshed one', async () => {
    // getToken keeps returning the token the revoked session ran on: it is never sent again.
    const t = tokens('t1', 't2');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push(expiring(1000));
    await settle();
    wtT.last.push({ type: 'ack', id: wtT.last.events('sys:refresh')[0].id, data: { expiresAt: 5000 } });
    wtT.last.push({ type: 'disconnect', code: 3505, reason: 'token_revoked', reconnect: false });
    wtT.last.drop(3505, 'token_revoked');
    await clock.advance(120000);
    assert.equal(wtT.calls, 1);
    assert.equal(client.state, 'disconnected');
    assert.deepEqual(seen.at(-1)[1], {
      reason: 'token_revoked',
      code: 3505,
      auth: true,
      message: 'getToken() returned the token the server refused (token_revoked)',
    });
  });

  test('refused by the server: token_refresh_failed, the connection and the old token stay', async () => {
    const t = tokens('t1', 't2', 't3');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT, { ...HELLO, expiresAt: 1000 });
    wtT.last.push(expiring(1000));
    await settle();
    const [frame] = wtT.last.events('sys:refresh');
    wtT.last.push({ type: 'error', id: frame.id, code: 'forbidden', message: 'token revoked' });
    assert.deepEqual(events, [['token_refresh_failed', 'forbidden']]);
    assert.equal(client.state, 'connected');
    assert.equal(wtT.last.closed, null);
    assert.equal(client.token, 't1');
    assert.equal(client.session.expiresAt, 1000);
    // The session then ends with token_expired at the old expiry; the reconnect path takes over.
    wtT.last.push({ type: 'disconnect', code: 3002, reason: 'token_expired', reconnect: true });
    wtT.last.drop(3002, 'token_expired');
    await clock.advance(1000);
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.equal(wtT.last.sent[0].token, 't3');
    assert.equal(seen.filter((s) => s[0] === 'stopped').length, 0);
  });

  test('getToken failing, or giving no token or the same token: failed, nothing sent, still connected', async () => {
    const answers = [
      ['t1'],
      [new Error('token service down'), 'token_failed'],
      ['', 'auth_required'],
      ['t1', 'token_unchanged'],
    ];
    let n = 0;
    const getToken = async () => {
      const a = answers[n++][0];
      if (a instanceof Error) throw a;
      return a;
    };
    const { client, wtT } = setup({ getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT);
    for (let i = 1; i < answers.length; i++) {
      wtT.last.push(expiring(1000));
      await settle();
    }
    assert.deepEqual(events, answers.slice(1).map(([, code]) => ['token_refresh_failed', code]));
    assert.equal(wtT.last.events('sys:refresh').length, 0);
    assert.equal(client.state, 'connected');
    assert.equal(client.token, 't1');
  });

  test('with a fixed token nothing happens', async () => {
    const { client, wtT } = setup({ getToken: undefined, token: 'fixed' });
    const events = refreshEvents(client);
    const pushed = [];
    client.onEvent('sys:token-expiring', (d) => pushed.push(d));
    client.connect();
    await accept(wtT);
    wtT.last.push(expiring(1000));
    await settle();
    assert.deepEqual(wtT.last.events(), []);
    assert.deepEqual(events, []);
    assert.deepEqual(pushed, [{ expiresAt: 1000 }], 'the app still sees the push');
    assert.equal(client.state, 'connected');
  });

  test('overlapping notices: one refresh at a time; a notice for an older expiry is not answered twice', async () => {
    const pending = [];
    const getToken = () => {
      if (pending.length === 0) {
        pending.push(null);
        return 't1';
      }
      const d = deferred();
      pending.push(d);
      return d.promise;
    };
    const { client, wtT } = setup({ getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT, { ...HELLO, expiresAt: 1000 });
    wtT.last.push(expiring(1000));
    wtT.last.push(expiring(1000)); // a duplicate while getToken runs
    await settle();
    assert.equal(pending.length, 2, 'getToken asked once');
    pending[1].resolve('t2');
    await settle();
    wtT.last.push(expiring(1000)); // and one while sys:refresh waits for its ack
    const refreshes = wtT.last.events('sys:refresh');
    assert.equal(refreshes.length, 1);
    wtT.last.push({ type: 'ack', id: refreshes[0].id, data: { expiresAt: 5000 } });
    await settle();
    assert.equal(pending.length, 2, 'the notices were for the token just replaced');
    assert.deepEqual(events, [['token_refreshed', { expiresAt: 5000 }]]);
    // The new token's own notice starts the next refresh.
    wtT.last.push(expiring(5000));
    await settle();
    assert.equal(pending.length, 3);
  });

  test("a notice for the new token arriving before the refresh's ack is answered after it", async () => {
    const t = tokens('t1', 't2', 't3');
    const { client, wtT } = setup({ getToken: t.getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT, { ...HELLO, expiresAt: 1000 });
    wtT.last.push(expiring(1000));
    await settle();
    const [first] = wtT.last.events('sys:refresh');
    // The new token expires soon too: the server warns at once, ahead of the ack.
    wtT.last.push(expiring(1020));
    wtT.last.push({ type: 'ack', id: first.id, data: { expiresAt: 1020 } });
    await settle();
    const refreshes = wtT.last.events('sys:refresh');
    assert.deepEqual(refreshes.map((f) => f.data.token), ['t2', 't3']);
    wtT.last.push({ type: 'ack', id: refreshes[1].id, data: { expiresAt: 9000 } });
    assert.deepEqual(events, [
      ['token_refreshed', { expiresAt: 1020 }],
      ['token_refreshed', { expiresAt: 9000 }],
    ]);
    assert.equal(client.session.expiresAt, 9000);
  });

  test('no refresh after the client was closed or the connection ended', async () => {
    const d = deferred();
    let calls = 0;
    const getToken = () => (++calls === 2 ? d.promise : `t${calls}`);
    const { client, wtT } = setup({ getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT);
    wtT.last.push(expiring(1000));
    await settle();
    client.disconnect(); // while getToken runs
    d.resolve('t2');
    await settle();
    assert.equal(wtT.last.events('sys:refresh').length, 0);
    assert.deepEqual(events, []);
    assert.equal(client.token, 't1');

    const d2 = deferred();
    calls = 0;
    const dropped = setup({ getToken: () => (++calls === 2 ? d2.promise : `t${calls}`) });
    dropped.client.connect();
    await accept(dropped.wtT);
    dropped.wtT.last.push(expiring(1000));
    await settle();
    dropped.wtT.last.drop(); // the connection ends while getToken runs
    await dropped.clock.advance(1000);
    await accept(dropped.wtT);
    d2.resolve('t2');
    await settle();
    assert.equal(dropped.wtT.calls, 2);
    assert.deepEqual(dropped.wtT.conns.map((c) => c.events('sys:refresh').length), [0, 0], 'sent on neither connection');
    assert.equal(dropped.client.queued, 0);
  });

  test('a refresh lost with its connection is not reported', async () => {
    const t = tokens('t1', 't2', 't3');
    const { client, clock, wtT } = setup({ getToken: t.getToken });
    const events = refreshEvents(client);
    client.connect();
    await accept(wtT);
    wtT.last.push(expiring(1000));
    await settle();
    assert.equal(wtT.last.events('sys:refresh').length, 1);
    wtT.last.drop();
    await clock.advance(1000);
    await accept(wtT);
    assert.deepEqual(events, [], 'the reconnect sent a fresh token anyway');
    assert.equal(client.state, 'connected');
  });
});

// ---- closing codes the application's backend causes -----------------------------------------------

describe('closes asked for by the backend', () => {
  test('the code table: force_reconnect retries, force_disconnect and token_revoked do not', () => {
    assert.equal(isRetryable(3010), true);
    assert.equal(isRetryable(3504), false);
    assert.equal(isRetryable(3505), false);
  });

  test('force_reconnect (3010): reconnects after the backoff delay, with a fixed token too', async () => {
    const { client, clock, wtT, seen } = setup({ getToken: undefined, token: 'fixed' });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3010, reason: 'force_reconnect', reconnect: true });
    wtT.last.drop(3010, 'force_reconnect');
    assert.deepEqual(seen.slice(-2), [
      ['disconnect', 'force_reconnect', 3010],
      ['reconnect_attempt', 1, 500], // 1000 × U[0, 1) at random 0.5
    ]);
    await clock.advance(499);
    assert.equal(wtT.calls, 1);
    await clock.advance(1);
    assert.equal(wtT.calls, 2);
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.equal(wtT.last.sent[0].token, 'fixed');
  });

  test('force_disconnect (3504): stops at once, even when getToken has another token', async () => {
    const t = tokens('a', 'b');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3504, reason: 'force_disconnect', message: 'bye', reconnect: false });
    wtT.last.drop(3504, 'force_disconnect');
    await clock.advance(120000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wtT.calls, 1);
    assert.equal(t.calls.length, 1);
    assert.deepEqual(seen.slice(-2), [
      ['disconnect', 'force_disconnect', 3504],
      ['stopped', { reason: 'force_disconnect', code: 3504, auth: false, message: 'bye' }],
    ]);
  });

  test('token_revoked (3505), then a different token from getToken: its one attempt', async () => {
    const t = tokens('a', 'b');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3505, reason: 'token_revoked', reconnect: false });
    wtT.last.drop(3505, 'token_revoked');
    assert.deepEqual(seen.slice(-2), [
      ['disconnect', 'token_revoked', 3505],
      ['reconnect_attempt', 1, 500], // 1000 × U[0, 1) at random 0.5
    ]);
    await clock.advance(499);
    assert.equal(wtT.calls, 1);
    await clock.advance(1);
    assert.equal(wtT.calls, 2);
    assert.equal(wtT.last.sent[0].token, 'b');
    await accept(wtT);
    assert.equal(client.state, 'connected');
    assert.equal(seen.filter((s) => s[0] === 'stopped').length, 0);
  });

  test('token_revoked, then the same token: stops without sending it again', async () => {
    const t = tokens('a');
    const { client, clock, wtT, seen } = setup({ getToken: t.getToken });
    client.connect();
    await accept(wtT);
    wtT.last.push({ type: 'disconnect', code: 3505, reason: 'token_revoked', reconnect: false });
    wtT.last.drop(3505, 'token_revoked');
    await clock.advance(120000);
    assert.equal(wtT.calls, 1);
    assert.equal(client.state, 'disconnected');
    assert.equal(seen.at(-1)[0], 'stopped');
    assert.equal(seen.at(-1)[1].auth, true);
    assert.deepEqual(seen.filter((s) => s[0] === 'disconnect'), [['disconnect', 'token_revoked', 3505]]);
  });

  test('token_revoked with a fixed token stops at once; a refused handshake counts without its frame', async () => {
    const fixed = setup({ getToken: undefined, token: 'fixed' });
    fixed.client.connect();
    await accept(fixed.wtT);
    fixed.wtT.last.push({ type: 'disconnect', code: 3505, reason: 'token_revoked', reconnect: false });
    fixed.wtT.last.drop(3505, 'token_revoked');
    await fixed.clock.advance(120000);
    assert.equal(fixed.wtT.calls, 1);
    assert.deepEqual(fixed.seen.at(-1), ['stopped', { reason: 'token_revoked', code: 3505, auth: true }]);

    // A handshake refused with token_revoked whose close overtook the disconnect frame.
    const t = tokens('r1', 'r2', 'r3');
    const h = setup({ getToken: t.getToken });
    h.client.connect();
    await settle();
    refuse(h.wtT.last, 'token_revoked', 3505, { frame: false });
    await h.clock.advance(1000);
    assert.equal(h.wtT.calls, 2, 'one attempt with the different token');
    refuse(h.wtT.last, 'token_revoked', 3505, { frame: false });
    await h.clock.advance(120000);
    assert.equal(h.wtT.calls, 2, 'a second refusal in a row is final');
    assert.deepEqual(h.seen.filter((s) => s[0] === 'stopped').map((s) => [s[1].reason, s[1].code, s[1].auth]), [['token_revoked', 3505, true]]);
  });
});
