// Transport choice with both transports at hand: the race ("happy eyeballs"), the per-origin
// memory of WebTransport failures with its background probes, and the empty datagrams that test a
// silent WebTransport session. A fake clock, fake transports and a fake localStorage.

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { RtgateClient, forgetTransportChoice } from '../src/rtgate.js';
import { FakeClock, FakeStorage, HELLO, clientOptions, fakeTransport, settle } from './fakes.js';

const T0 = 1_700_000_000_000; // the fake clock's start, ms since the epoch
const KEY = 'rtgate:wt-failed:https://127.0.0.1:4433';
const MINUTE = 60 * 1000;

function setup(opts = {}, { wt = [], ws = [], storage = new FakeStorage(), clock = new FakeClock(T0) } = {}) {
  const wtT = fakeTransport('webtransport', wt);
  const wsT = fakeTransport('websocket', ws);
  const client = new RtgateClient(
    clientOptions(clock, { storage, transports: { webtransport: wtT.open, websocket: wsT.open }, ...opts }),
  );
  const seen = [];
  for (const ev of ['connect', 'disconnect', 'error', 'event', 'reconnect_attempt']) {
    client.on(ev, (...args) => seen.push([ev, ...args]));
  }
  const count = (ev) => seen.filter((s) => s[0] === ev).length;
  return { client, clock, wtT, wsT, storage, seen, count };
}

// A server whose heartbeat does not end sessions within these tests' minutes of silence.
const QUIET = { ...HELLO, heartbeat: { intervalMs: 3600000, timeoutMs: 3600000 } };

/** Completes the handshake on `conn` (default: the latest connection of `t`, once opened). */
async function accept(t, conn, hello = QUIET) {
  await settle();
  (conn ?? t.last).push(hello);
  await settle();
}

/** A connection the client must not listen to: frames and a close on it change nothing. */
async function assertInert(conn, client, count) {
  const before = { connect: count('connect'), event: count('event'), disconnect: count('disconnect') };
  const state = client.state;
  conn.onframe(HELLO);
  conn.onframe({ type: 'event', event: 'x', data: 1 });
  conn.onclose({ code: 1006, reason: 'gone' });
  await settle();
  assert.deepEqual(
    { connect: count('connect'), event: count('event'), disconnect: count('disconnect') },
    before,
  );
  assert.equal(client.state, state);
}

beforeEach(() => forgetTransportChoice(null));

describe('racing WebTransport and WebSocket', () => {
  test('WebTransport that opens at once wins, and WebSocket is never started', async () => {
    const { client, clock, wtT, wsT, storage } = setup();
    client.connect();
    await accept(wtT);
    assert.equal(client.transport, 'webtransport');
    await clock.advance(5000);
    assert.equal(wsT.calls, 0);
    assert.equal(storage.getItem(KEY), null, 'nothing remembered');
  });

  test('WebSocket starts after wtFallbackDelay (300 ms by default) and wins when WebTransport hangs', async () => {
    const { client, clock, wtT, wsT, storage, count } = setup({}, { wt: ['hang'] });
    client.connect();
    await clock.advance(299);
    assert.equal(wsT.calls, 0);
    await clock.advance(1);
    assert.equal(wsT.calls, 1);
    await accept(wsT);
    assert.equal(client.state, 'connected');
    assert.equal(client.transport, 'websocket');
    assert.equal(wtT.params[0].signal.aborted, true, 'the WebTransport open is aborted');
    assert.equal(count('error'), 0, 'a slow WebTransport that lost is no error');
    assert.equal(storage.getItem(KEY), String(T0 + 300), 'the failure is remembered with its time');
  });

  test('WebTransport failing before the delay starts WebSocket at once', async () => {
    const { client, wsT, seen } = setup({}, { wt: ['fail'] });
    client.connect();
    await settle();
    assert.equal(wsT.calls, 1, 'no wait for the delay');
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
    assert.deepEqual(
      seen.filter((s) => s[0] === 'error').map((s) => s[1].code),
      ['transport_failed'],
    );
  });

  test('WebTransport still wins when it opens after WebSocket was started but before it opened', async () => {
    const { client, clock, wtT, wsT, storage, count } = setup({}, { wt: ['late'], ws: ['late'] });
    client.connect();
    await clock.advance(300);
    assert.equal(wsT.calls, 1);
    const wt = wtT.deferred[0].open();
    await accept(wtT, wt);
    assert.equal(client.transport, 'webtransport');
    assert.equal(wsT.params[0].signal.aborted, true);
    // The WebSocket opens anyway: closed at once, and nothing on it reaches the client.
    const ws = wsT.deferred[0].open();
    await settle();
    assert.deepEqual(ws.closed, { code: 1000, reason: 'too late' });
    await assertInert(ws, client, count);
    assert.equal(client.transport, 'webtransport');
    assert.equal(storage.getItem(KEY), null);
  });

  test('the losing WebTransport is closed when it opens after WebSocket won, and never emits', async () => {
    const { client, clock, wtT, wsT, count } = setup({}, { wt: ['late'] });
    client.connect();
    await clock.advance(300);
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
    const wt = wtT.deferred[0].open();
    await settle();
    assert.deepEqual(wt.closed, { code: 1000, reason: 'too late' });
    await assertInert(wt, client, count);
    assert.equal(count('connect'), 1);
    assert.equal(wsT.last.closed, null, 'the WebSocket session is untouched');
  });

  test('a loser that fails after the winner opened reports nothing', async () => {
    const { client, clock, wtT, wsT, count } = setup({}, { wt: ['late'] });
    client.connect();
    await clock.advance(300);
    await accept(wsT);
    wtT.deferred[0].fail();
    await settle();
    assert.equal(count('error'), 0);
    assert.equal(client.state, 'connected');
  });

  test('WebSocket failing while WebTransport is still opening: WebTransport can still win', async () => {
    const { client, clock, wtT, wsT, storage } = setup({}, { wt: ['late'], ws: ['fail'] });
    client.connect();
    await clock.advance(300);
    assert.equal(client.state, 'connecting');
    wtT.deferred[0].open();
    await accept(wtT);
    assert.equal(client.transport, 'webtransport');
    assert.equal(wsT.calls, 1);
    assert.equal(storage.getItem(KEY), null);
  });

  test('both failing fail the attempt (both reported), and nothing is remembered', async () => {
    const { client, wtT, wsT, storage, seen } = setup({}, { wt: ['fail'], ws: ['fail'] });
    client.connect();
    await settle();
    assert.equal(client.state, 'reconnecting');
    assert.equal(wtT.calls, 1);
    assert.equal(wsT.calls, 1);
    assert.equal(seen.filter((s) => s[0] === 'error').length, 2);
    assert.equal(storage.getItem(KEY), null);
  });

  test('wtOpenTimeout gives WebTransport up while WebSocket keeps its own budget', async () => {
    const { client, clock, wtT, wsT, seen } = setup({ wtOpenTimeout: 2000 }, { wt: ['hang'], ws: ['late'] });
    client.connect();
    await clock.advance(2000);
    assert.equal(wtT.params[0].signal.aborted, true);
    assert.deepEqual(seen.filter((s) => s[0] === 'error').map((s) => s[1].code), ['transport_timeout']);
    assert.equal(client.state, 'connecting');
    wsT.deferred[0].open();
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
  });

  test('wtFallbackDelay: 0 starts both at once; Infinity waits for WebTransport to fail', async () => {
    const a = setup({ wtFallbackDelay: 0 }, { wt: ['hang'] });
    a.client.connect();
    await a.clock.advance(0);
    assert.equal(a.wsT.calls, 1);

    forgetTransportChoice(null);
    const b = setup({ wtFallbackDelay: Infinity, wtOpenTimeout: 4000 }, { wt: ['hang'] });
    b.client.connect();
    await b.clock.advance(3999);
    assert.equal(b.wsT.calls, 0);
    await b.clock.advance(1);
    assert.equal(b.wsT.calls, 1);
  });

  test('disconnect() during the race aborts it: no WebSocket is started, a late one is closed', async () => {
    const { client, clock, wtT, wsT, count } = setup({}, { wt: ['late'] });
    client.connect();
    await clock.advance(100);
    client.disconnect();
    await clock.advance(1000);
    assert.equal(wsT.calls, 0);
    assert.equal(wtT.params[0].signal.aborted, true);
    const wt = wtT.deferred[0].open();
    await settle();
    assert.ok(wt.closed);
    assert.equal(count('connect'), 0);
    assert.equal(client.state, 'disconnected');
  });

  test('a connect timeout during the race aborts both transports', async () => {
    const { client, clock, wtT, wsT } = setup({ connectTimeout: 1000 }, { wt: ['hang'], ws: ['hang'] });
    client.connect();
    await clock.advance(1000);
    assert.equal(client.state, 'reconnecting');
    assert.equal(wtT.params[0].signal.aborted, true);
    assert.equal(wsT.params[0].signal.aborted, true);
  });
});

describe('remembering that WebTransport failed', () => {
  test('while remembered, connects over WebSocket directly; a successful background probe forgets it', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0 - 1000) });
    const { client, clock, wtT, wsT, count } = setup({}, { storage });
    client.connect();
    await accept(wsT);
    assert.equal(client.transport, 'websocket');
    assert.equal(wtT.calls, 0, 'no WebTransport in the way of the connect');
    // The probe: one wtRetryInterval (60 s) after the failure.
    await clock.advance(MINUTE - 1000 - 1);
    assert.equal(wtT.calls, 0);
    await clock.advance(1);
    assert.equal(wtT.calls, 1);
    assert.equal(wtT.params[0].url, 'https://127.0.0.1:4433/wt');
    assert.deepEqual(wtT.last.closed, { code: 1000, reason: 'probe' }, 'the probe session is closed');
    await assertInert(wtT.last, client, count);
    assert.equal(storage.getItem(KEY), null, 'forgotten');
    // The WebSocket session stays; the next connect races again, and WebTransport wins.
    assert.equal(client.transport, 'websocket');
    assert.equal(wsT.last.closed, null);
    await clock.advance(10 * MINUTE);
    assert.equal(wtT.calls, 1, 'no more probes once forgotten');
    wsT.last.drop(1006);
    await clock.advance(1000); // past the first reconnect delay (500 ms with random 0.5)
    await accept(wtT);
    assert.equal(client.transport, 'webtransport');
  });

  test('the probe uses the same URL and certificate hashes as a connect', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const fetches = [];
    const fetch = async (url) => {
      fetches.push(url);
      return { ok: true, json: async () => ({ selfSigned: true, bytes: [1, 2, 3] }) };
    };
    const { client, clock, wtT, wsT } = setup(
      { certificateHash: 'auto', fetch, wtUrl: 'https://rt.example:4444/wt' },
      { storage },
    );
    storage.setItem('rtgate:wt-failed:https://rt.example:4444', String(T0));
    client.connect();
    await accept(wsT);
    await clock.advance(MINUTE);
    assert.equal(wtT.calls, 1);
    assert.equal(wtT.params[0].url, 'https://rt.example:4444/wt');
    assert.deepEqual(wtT.params[0].certificateHashes, [{ algorithm: 'sha-256', value: new Uint8Array([1, 2, 3]) }]);
    assert.deepEqual(fetches, ['http://127.0.0.1:3000/cert-hash']);
  });

  test('a failing probe keeps the failure (from now) and probes again at most once per wtRetryInterval', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const { client, clock, wtT, wsT } = setup({ wtRetryInterval: 5000 }, { storage, wt: ['fail', 'hang'] });
    client.connect();
    await accept(wsT);
    await clock.advance(5000);
    assert.equal(wtT.calls, 1);
    assert.equal(storage.getItem(KEY), String(T0 + 5000), 'still failing: remembered from now');
    await clock.advance(4999);
    assert.equal(wtT.calls, 1);
    await clock.advance(1);
    assert.equal(wtT.calls, 2);
    // This probe hangs: given up after wtOpenTimeout, then the next one an interval later.
    await clock.advance(5000);
    assert.equal(wtT.params[1].signal.aborted, true);
    assert.equal(storage.getItem(KEY), String(T0 + 15000));
    // A reconnect meanwhile neither races nor probes early.
    wsT.last.drop(1006);
    await clock.advance(1000);
    await accept(wsT);
    assert.equal(wsT.calls, 2);
    await clock.advance(3999);
    assert.equal(wtT.calls, 2);
    await clock.advance(1);
    assert.equal(wtT.calls, 3, 'T0 + 20 s');
    assert.equal(storage.getItem(KEY), null, 'that probe opened');
    assert.equal(client.transport, 'websocket');
  });

  test('WebSocket winning the race remembers the failure; the next reconnect goes straight to WebSocket', async () => {
    const { client, clock, wtT, wsT, storage } = setup({}, { wt: ['hang'] });
    client.connect();
    await clock.advance(300);
    await accept(wsT);
    assert.equal(storage.getItem(KEY), String(T0 + 300));
    wsT.last.drop(1006);
    await clock.advance(1000);
    await accept(wsT);
    assert.equal(wtT.calls, 1, 'not raced again');
    assert.equal(wsT.calls, 2);
    assert.equal(client.transport, 'websocket');
  });

  test('the memory expires after wtFailureMemory', async () => {
    const ten = 10 * MINUTE;
    const fresh = setup({}, { storage: new FakeStorage({ [KEY]: String(T0 - ten + 1) }) });
    fresh.client.connect();
    await settle();
    assert.equal(fresh.wtT.calls, 0, 'still remembered 1 ms before the end');

    const old = setup({}, { storage: new FakeStorage({ [KEY]: String(T0 - ten) }) });
    old.client.connect();
    await accept(old.wtT);
    assert.equal(old.client.transport, 'webtransport', 'expired: raced again');
    assert.equal(old.storage.getItem(KEY), null, 'and removed');

    const custom = setup({ wtFailureMemory: 1000 }, { storage: new FakeStorage({ [KEY]: String(T0 - 1000) }) });
    custom.client.connect();
    await settle();
    assert.equal(custom.wtT.calls, 1);

    // A timestamp from the future or garbage is not trusted.
    for (const bad of [String(T0 + 5000), 'yesterday']) {
      const s = setup({}, { storage: new FakeStorage({ [KEY]: bad }) });
      s.client.connect();
      await settle();
      assert.equal(s.wtT.calls, 1, bad);
    }
  });

  test('expiry while the page lives: with no probe in between, the next connect races again', async () => {
    const { client, clock, wtT, wsT } = setup({ wtRetryInterval: Infinity }, { wt: ['fail'] });
    client.connect();
    await accept(wsT);
    client.disconnect();
    await clock.advance(10 * MINUTE - 1);
    client.connect();
    await accept(wsT);
    assert.equal(wtT.calls, 1);
    client.disconnect();
    await clock.advance(1);
    client.connect();
    await accept(wtT);
    assert.equal(wtT.calls, 2);
    assert.equal(client.transport, 'webtransport');
  });

  test('per origin: another WebTransport origin is raced as usual', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const { client, wtT } = setup({ wtPort: 4434 }, { storage });
    client.connect();
    await accept(wtT);
    assert.equal(client.transport, 'webtransport');
    assert.equal(storage.getItem(KEY), String(T0), 'the other origin stays remembered');
  });

  test('without localStorage (or when it throws) the memory is kept for the page, shared by its clients', async () => {
    for (const storage of [null, new FakeStorage({}, { broken: true })]) {
      forgetTransportChoice(null);
      const clock = new FakeClock(T0);
      const a = setup({}, { storage, clock, wt: ['fail'] });
      a.client.connect();
      await accept(a.wsT);
      const b = setup({}, { storage, clock });
      b.client.connect();
      await accept(b.wsT);
      assert.equal(b.wtT.calls, 0, 'the second client goes straight to WebSocket');
      assert.equal(b.client.transport, 'websocket');
      forgetTransportChoice(null);
      const c = setup({}, { storage, clock });
      c.client.connect();
      await accept(c.wtT);
      assert.equal(c.client.transport, 'webtransport', 'forgetTransportChoice() forgets it');
    }
  });

  test('forgetTransportChoice(storage) removes the failures from the storage, and only them', async () => {
    const storage = new FakeStorage({ [KEY]: '1', 'rtgate:wt-failed:https://x:1': '2', 'app:key': 'v' });
    forgetTransportChoice(storage);
    assert.deepEqual([...storage.map.keys()], ['app:key']);
  });

  test('clients of one page probe an origin once per interval between them', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const clock = new FakeClock(T0);
    const a = setup({}, { storage, clock, wt: ['hang'] });
    const b = setup({}, { storage, clock, wt: ['hang'] });
    a.client.connect();
    b.client.connect();
    await accept(a.wsT);
    await accept(b.wsT);
    await clock.advance(MINUTE);
    assert.equal(a.wtT.calls + b.wtT.calls, 1);
  });

  test('a forced transport does not consult the memory; a forced WebTransport that works forgets it', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const wt = setup({ transport: 'webtransport' }, { storage });
    wt.client.connect();
    await accept(wt.wtT);
    assert.equal(wt.client.transport, 'webtransport');
    assert.equal(storage.getItem(KEY), null);

    const ws = setup({ transport: 'websocket' }, { storage });
    ws.client.connect();
    await accept(ws.wsT);
    assert.equal(storage.getItem(KEY), null);
    await ws.clock.advance(2 * MINUTE);
    assert.equal(ws.wtT.calls, 0, 'no probes');
  });

  test('a stopped client probes no more', async () => {
    const storage = new FakeStorage({ [KEY]: String(T0) });
    const { client, clock, wtT, wsT } = setup({}, { storage });
    client.connect();
    await accept(wsT);
    client.disconnect();
    await clock.advance(2 * MINUTE);
    assert.equal(wtT.calls, 0);
  });
});

describe('probing a silent WebTransport session', () => {
  test('an empty datagram per wtProbeInterval of silence, none while frames arrive, none after the close', async () => {
    const { client, clock, wtT } = setup();
    client.connect();
    await accept(wtT);
    const conn = wtT.last;
    await clock.advance(999);
    assert.equal(conn.probes, 0);
    await clock.advance(1);
    assert.equal(conn.probes, 1, 'silent for 1 s');
    await clock.advance(1000);
    assert.equal(conn.probes, 2, 'one more per interval while silence lasts');
    // Anything received ends the silence.
    await clock.advance(500);
    conn.push({ type: 'event', event: 'x' });
    await clock.advance(999);
    assert.equal(conn.probes, 2);
    await clock.advance(1);
    assert.equal(conn.probes, 3, '1 s after the last frame');
    // A steady stream of frames: no probes at all.
    for (let i = 0; i < 10; i++) {
      await clock.advance(600);
      conn.push({ type: 'ping' });
    }
    assert.equal(conn.probes, 3);
    conn.drop(1006);
    await clock.advance(5000);
    assert.equal(conn.probes, 3, 'none after the close');
    assert.equal(client.state, 'reconnecting');
  });

  test('the heartbeat watchdog still closes a session that stays silent', async () => {
    const { client, clock, wtT, seen } = setup();
    client.connect();
    await accept(wtT, undefined, { ...HELLO, heartbeat: { intervalMs: 2000, timeoutMs: 1000 } });
    await clock.advance(2999);
    assert.equal(wtT.conns[0].probes, 2);
    assert.equal(client.state, 'connected');
    await clock.advance(1);
    assert.equal(client.state, 'reconnecting');
    assert.deepEqual(seen.find((s) => s[0] === 'disconnect'), ['disconnect', 'heartbeat_timeout', 1006]);
  });

  test('wtProbeInterval sets the interval; 0 turns probes off', async () => {
    const a = setup({ wtProbeInterval: 250 });
    a.client.connect();
    await accept(a.wtT);
    await a.clock.advance(1000);
    assert.equal(a.wtT.last.probes, 4);

    const b = setup({ wtProbeInterval: 0 });
    b.client.connect();
    await accept(b.wtT);
    await b.clock.advance(5000);
    assert.equal(b.wtT.last.probes, 0);
  });

  test('no probes without datagrams, and none on WebSocket', async () => {
    const a = setup();
    a.client.connect();
    await settle();
    a.wtT.last.datagrams = false;
    await accept(a.wtT);
    await a.clock.advance(5000);
    assert.equal(a.wtT.last.probes, 0);
    assert.equal(a.client.state, 'connected');

    const b = setup({ transport: 'websocket' });
    b.client.connect();
    await accept(b.wsT);
    await b.clock.advance(5000);
    assert.equal(b.wsT.last.probes, 0);
  });

  test('disconnect() stops the probes', async () => {
    const { client, clock, wtT } = setup();
    client.connect();
    await accept(wtT);
    await clock.advance(1000);
    client.disconnect();
    await clock.advance(5000);
    assert.equal(wtT.last.probes, 1);
  });
});
