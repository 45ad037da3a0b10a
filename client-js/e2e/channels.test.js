// Channel subscriptions in a real browser against the real server, each page's client forced to
// one transport and every case run over WebTransport and over WebSocket: delivery to several
// pages in offset order and rendered as text, recovery after a dropped connection, a failed
// recovery after a restart (new epoch), a refused subscription that is not retried, presence and
// join/leave; in namespaces from a configuration file: subscription tokens that expire and are
// renewed without a gap, claims, client publishing, volatile namespaces (datagrams on
// WebTransport); and the demo's Live channel panel.
//
// The backend publishes from a page of its own with `sys:channel-publish` (`--dev-events`). Pages
// record what their client sees (see `installRecorder`): the subscription's events in order, the
// channel frames the server sent and the channel requests the client wrote, so a test can tell a
// server that sent something twice from a client that dropped the copy.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SHOTS, Server, clientPage, countIntervals, launchBrowser, openDemo, token, waitState } from './harness.js';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

const TRANSPORTS = ['webtransport', 'websocket'];
const DEV = ['--dev-events'];
/** A restart that takes seconds, not the default grace. */
const FAST_RESTART = ['--shutdown-grace', '2s', '--shutdown-reconnect-spread', '500ms'];
/**
 * A short heartbeat. Chromium sometimes closes a closed page's WebTransport session without
 * sending a packet (seen through a UDP relay); then only the heartbeat tells the server, after
 * ping interval + pong timeout (45 s by default).
 */
const QUICK_HEARTBEAT = ['--ping-interval', '2s', '--pong-timeout', '3s'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the page side ------------------------------------------------------------------------------

/**
 * Runs in a page: records, for `window.other` (or the demo's client), the channel frames received
 * (`rec.frames`: events, acks and errors of channel requests), the channel requests written
 * (`rec.sent`, with the ids their answers carry) and, per channel watched with `watch`, the
 * subscription's events in order (`rec.events[channel]`).
 */
function installRecorder() {
  const c = window.other ?? window.rtgateDemo.client;
  const plain = (x) => {
    if (x instanceof Error) return { code: x.code, message: x.message, details: x.details ?? null };
    return x === undefined ? null : JSON.parse(JSON.stringify(x));
  };
  const rec = { frames: [], sent: [], events: {} };
  window.rec = rec;
  const channelIds = new Set();
  const onFrame = c._onFrame;
  c._onFrame = function (conn, frame) {
    const isChannelEvent = frame?.type === 'event' && String(frame.event).startsWith('channel:');
    if (isChannelEvent || ((frame?.type === 'ack' || frame?.type === 'error') && channelIds.has(frame.id))) {
      rec.frames.push(plain(frame));
    }
    return onFrame.call(this, conn, frame);
  };
  const write = c._write;
  c._write = function (entry) {
    write.call(this, entry);
    if (entry.event.startsWith('channel:')) {
      channelIds.add(entry.id);
      rec.sent.push({ id: entry.id, event: entry.event, data: plain(entry.data) });
    }
  };
  /** Subscribes to `channel` (or takes the client's subscription to it) and records its events. */
  window.watch = (channel, opts) => {
    const log = (rec.events[channel] = []);
    const sub = c.subscription(channel) ?? c.subscribe(channel, opts);
    for (const name of ['state', 'subscribing', 'subscribed', 'publication', 'join', 'leave', 'unsubscribed', 'error']) {
      sub.on(name, (x) => log.push([name, plain(x)]));
    }
    return sub;
  };
  window.sub = (channel) => c.subscription(channel);
}

// ---- the Node side ---------------------------------------------------------------------------------

/** A page of `user` whose client is forced to `transport`, with the recorder installed. */
async function subscriber(server, user, transport, { initScript } = {}) {
  const p = await clientPage(browser, server, token(user), { transport, initScript });
  await p.page.evaluate(installRecorder);
  assert.equal(await p.page.evaluate(() => window.other.transport), transport);
  return p;
}

/** The application's backend: publishes with `sys:channel-publish` from a page of its own. */
async function backend(server) {
  const p = await clientPage(browser, server, token('backend'));
  const publish = (channel, data) =>
    p.page.evaluate(([ch, d]) => window.other.request('sys:channel-publish', { channel: ch, data: d }), [channel, data]);
  return {
    ...p,
    publish,
    /** Publishes every one of `list` without waiting for the previous ack: the server orders them. */
    publishAll: (channel, list) =>
      p.page.evaluate(
        ([ch, l]) => Promise.all(l.map((d) => window.other.request('sys:channel-publish', { channel: ch, data: d }))),
        [channel, list],
      ),
    /** Publishes `prefix n` every `everyMs` until `stop()`; resolves with the acks. */
    startStream: async (channel, prefix, everyMs) => {
      await p.page.evaluate(
        ([ch, pre, ms]) => {
          const acks = [];
          let n = 0;
          let stopped = false;
          const done = (async () => {
            while (!stopped) {
              n += 1;
              acks.push(await window.other.request('sys:channel-publish', { channel: ch, data: `${pre} ${n}` }));
              await new Promise((r) => setTimeout(r, ms));
            }
            return acks;
          })();
          window.stopStream = () => {
            stopped = true;
            return done;
          };
        },
        [channel, prefix, everyMs],
      );
      return { stop: () => p.page.evaluate(() => window.stopStream()) };
    },
  };
}

const watch = (page, channel, opts) => page.evaluate(([ch, o]) => void window.watch(ch, o ?? undefined), [channel, opts ?? null]);

/** The recorded events of `channel`, without `state` and `error` unless asked for. */
async function events(page, channel, { all = false } = {}) {
  const log = await page.evaluate((ch) => window.rec.events[ch] ?? [], channel);
  return all ? log : log.filter(([name]) => name !== 'state' && name !== 'error');
}

/** One line per event, easy to compare and to read in a failure. */
function line([name, x]) {
  switch (name) {
    case 'publication':
      return `pub ${x.offset === undefined ? '-' : `#${x.offset}`} ${typeof x.data === 'string' ? x.data : JSON.stringify(x.data)}`;
    case 'subscribed':
      return `subscribed recovered=${x.recovered} wasRecovering=${x.wasRecovering}`;
    case 'subscribing':
    case 'unsubscribed':
      return `${name} ${x.code}`;
    case 'join':
    case 'leave':
      return `${name} ${x.info?.userId}`;
    case 'error':
      return `error ${x.code}`;
    default:
      return `${name} ${JSON.stringify(x)}`;
  }
}

async function lines(page, channel) {
  return (await events(page, channel)).map(line);
}

function count(page, channel, name) {
  return page.evaluate(([ch, n]) => (window.rec.events[ch] ?? []).filter(([e]) => e === n).length, [channel, name]);
}

/** Waits for the `n`th `name` event of `channel`; a timeout lists the events seen so far. */
async function waitCount(page, channel, name, n, timeout = 20000) {
  try {
    await page.waitForFunction(
      ([ch, e, k]) => (window.rec.events[ch] ?? []).filter(([x]) => x === e).length >= k,
      [channel, name, n],
      { timeout },
    );
  } catch (err) {
    if (page.isClosed()) throw err;
    const seen = (await events(page, channel, { all: true })).filter(([e]) => e !== 'state').map(line);
    throw new Error(`no ${name} #${n} on ${channel} within ${timeout} ms; events: ${JSON.stringify(seen)}`);
  }
}

/** The channel frames the server sent to this page (pushes of `channel`, and answers). */
function frames(page) {
  return page.evaluate(() => window.rec.frames);
}

/** The channel requests this page's client wrote. */
function sent(page, event, channel) {
  return page.evaluate(
    ([e, ch]) => window.rec.sent.filter((s) => s.event === e && (ch === null || s.data?.channel === ch)),
    [event, channel ?? null],
  );
}

/** The answer frame to the request written with `id`. */
async function answerTo(page, id) {
  return (await frames(page)).find((f) => (f.type === 'ack' || f.type === 'error') && f.id === id);
}

/** Offsets of the `channel:publication` frames of `channel` the server pushed. */
async function pushedOffsets(page, channel) {
  return (await frames(page))
    .filter((f) => f.type === 'event' && f.event === 'channel:publication' && f.data.channel === channel)
    .map((f) => f.data.offset);
}

/** Drops the page's connection as a network failure would; the client reconnects by itself. */
async function dropConnection(page) {
  await page.evaluate(() => (window.other ?? window.rtgateDemo.client)._conn.close(1000, 'dropped by the test'));
}

/** The next reconnect attempt comes `ms` after a drop, exactly. */
async function reconnectAfter(page, ms) {
  await page.evaluate((d) => {
    // A fixed draw of 0.5 with randomization 1 makes every delay its base exactly, the first
    // attempt's too ([0, base × 2) at 0.5 is base); randomization 0 would make the first immediate.
    const { backoff } = window.other ?? window.rtgateDemo.client;
    Object.assign(backoff.opts, { initialDelay: d, randomization: 1 });
    backoff.random = () => 0.5;
  }, ms);
}

const clientState = (page) => page.evaluate(() => window.other.state);

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

// ---- built-in namespaces ---------------------------------------------------------------------------

for (const transport of TRANSPORTS) {
  describe(`channels over ${transport}`, () => {
    let server;
    before(async () => {
      server = new Server([...DEV, ...QUICK_HEARTBEAT]);
      await server.start();
    });
    after(async () => server?.dispose());

    test('two pages get every publication once, in offset order, shown as text', async () => {
      const back = await backend(server);
      const pages = [];
      for (const user of ['alice', 'bob']) {
        const demo = await openDemo(browser, server, token(user), { query: `&transport=${transport}` });
        await waitState(demo.page, 'connected');
        assert.equal(await demo.page.textContent('#transport'), `via ${transport}`);
        await demo.page.waitForSelector('#channels .channel[data-channel="public:demo"][data-state="subscribed"]');
        await demo.page.evaluate(installRecorder);
        await watch(demo.page, 'public:demo');
        pages.push(demo);
      }

      const hostile = [
        'plain words',
        '<img src=x onerror="window.__xss=1">',
        { text: '<script>window.__xss=2</script>' },
        '<b onmouseover="window.__xss=3">bold?</b> & &amp; "quotes"',
        { html: '<iframe src="javascript:window.__xss=4"></iframe>' },
      ];
      const acks = [];
      for (const data of hostile) acks.push(await back.publish('public:demo', data));
      assert.deepEqual(acks.map((a) => a.offset), [1, 2, 3, 4, 5]);
      // A burst: the server numbers them as they come; every page must get them in that order.
      const burst = range(1, 20).map((i) => `burst ${i}`);
      const burstAcks = await back.publishAll('public:demo', burst);
      const byOffset = new Map(hostile.map((d, i) => [acks[i].offset, d]));
      burstAcks.forEach((a, i) => byOffset.set(a.offset, burst[i]));
      assert.deepEqual([...byOffset.keys()].sort((a, b) => a - b), range(1, 25), 'offsets 1..25, none shared');
      const expected = range(1, 25).map((o) => line(['publication', { offset: o, data: byOffset.get(o) }]));
      const shown = (d) => (typeof d === 'string' ? d : typeof d.text === 'string' ? d.text : JSON.stringify(d));

      for (const { page } of pages) {
        await waitCount(page, 'public:demo', 'publication', 25);
        await page.waitForFunction(
          () => document.querySelectorAll('#channels .channel[data-channel="public:demo"] li[data-offset]').length === 25,
        );
        await sleep(300); // anything extra would arrive now
        assert.deepEqual((await lines(page, 'public:demo')).filter((l) => l.startsWith('pub ')), expected);
        assert.deepEqual(await pushedOffsets(page, 'public:demo'), range(1, 25), 'the server pushed each once, in order');
        const items = await page.$$eval('#channels .channel[data-channel="public:demo"] li', (els) =>
          els.map((e) => [Number(e.dataset.offset), e.querySelector('.content').textContent]),
        );
        assert.deepEqual(items, range(1, 25).map((o) => [o, shown(byOffset.get(o))]));
        assert.equal(await page.locator('#channels img, #channels script, #channels b, #channels iframe').count(), 0);
        await page.hover('#channels .channel[data-channel="public:demo"] li[data-offset="4"]');
      }
      await sleep(300);
      for (const { page, errors } of pages) {
        assert.equal(await page.evaluate(() => window.__xss), undefined);
        assert.deepEqual(errors, []);
      }
      for (const { context } of [...pages, back]) await context.close();
    });

    test('after a dropped connection the missed publications arrive once, in order, before live ones', async () => {
      const channel = `public:recover-${transport}`;
      const back = await backend(server);
      const alice = await subscriber(server, 'alice', transport);
      await watch(alice.page, channel);
      await waitCount(alice.page, channel, 'subscribed', 1);
      for (const d of ['before 1', 'before 2']) await back.publish(channel, d);
      await waitCount(alice.page, channel, 'publication', 2);

      // Away for 3 s: time to publish three while she cannot receive them.
      await reconnectAfter(alice.page, 3000);
      await dropConnection(alice.page);
      assert.equal(await clientState(alice.page), 'reconnecting');
      for (const d of ['missed 1', 'missed 2', 'missed 3']) await back.publish(channel, d);
      assert.equal(await clientState(alice.page), 'reconnecting', 'alice was away while they were published');

      await waitCount(alice.page, channel, 'subscribed', 2);
      for (const d of ['live 1', 'live 2']) await back.publish(channel, d);
      await waitCount(alice.page, channel, 'publication', 7);
      await sleep(300);
      assert.deepEqual(await lines(alice.page, channel), [
        'subscribed recovered=false wasRecovering=false',
        'pub #1 before 1',
        'pub #2 before 2',
        'subscribing transport_closed',
        'subscribed recovered=true wasRecovering=true',
        'pub #3 missed 1',
        'pub #4 missed 2',
        'pub #5 missed 3',
        'pub #6 live 1',
        'pub #7 live 2',
      ]);

      // On the wire: the resubscribe asked from offset 2 of the same epoch; the ack carried
      // exactly the three missed, and none of them came again as a live push.
      const subs = await sent(alice.page, 'channel:subscribe', channel);
      assert.equal(subs.length, 2);
      const firstAck = await answerTo(alice.page, subs[0].id);
      assert.equal(firstAck.type, 'ack');
      assert.deepEqual(subs[1].data.since, { offset: 2, epoch: firstAck.data.epoch });
      const ack = await answerTo(alice.page, subs[1].id);
      assert.equal(ack.type, 'ack');
      assert.equal(ack.data.recovered, true);
      assert.equal(ack.data.epoch, firstAck.data.epoch);
      assert.deepEqual(ack.data.publications.map((p) => [p.offset, p.data]), [[3, 'missed 1'], [4, 'missed 2'], [5, 'missed 3']]);
      assert.deepEqual(await pushedOffsets(alice.page, channel), [1, 2, 6, 7]);
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
      await back.context.close();
    });

    test('a publication stream through two dropped connections arrives gapless and once', async () => {
      const channel = `public:stream-${transport}`;
      const back = await backend(server);
      const alice = await subscriber(server, 'alice', transport);
      await watch(alice.page, channel);
      await waitCount(alice.page, channel, 'subscribed', 1);
      await reconnectAfter(alice.page, 400);
      const stream = await back.startStream(channel, 'tick', 20);
      for (let i = 2; i <= 3; i++) {
        await waitCount(alice.page, channel, 'publication', 10 * i);
        await dropConnection(alice.page);
        await waitCount(alice.page, channel, 'subscribed', i);
      }
      await sleep(500);
      const acks = await stream.stop();
      const last = acks.at(-1).offset;
      await waitCount(alice.page, channel, 'publication', last);
      await sleep(300);
      const pubs = (await events(alice.page, channel)).filter(([n]) => n === 'publication').map(([, p]) => p.offset);
      assert.deepEqual(pubs, range(1, last));
      const subscribed = (await events(alice.page, channel)).filter(([n]) => n === 'subscribed').map(([, x]) => x.recovered);
      assert.deepEqual(subscribed, [false, true, true]);
      await alice.context.close();
      await back.context.close();
    });

    test('a refused subscription (notify:#bob as alice) ends permission_denied and is not retried', async () => {
      const back = await backend(server);
      const alice = await subscriber(server, 'alice', transport);
      const refusal = await alice.page.evaluate(() =>
        window
          .watch('notify:#bob')
          .ready(10000)
          .then(() => null, (e) => e.code),
      );
      await watch(alice.page, 'notify:#alice');
      assert.equal(refusal, 'permission_denied');
      await waitCount(alice.page, 'notify:#alice', 'subscribed', 1);
      assert.deepEqual(await lines(alice.page, 'notify:#bob'), ['unsubscribed permission_denied']);
      const [err] = (await events(alice.page, 'notify:#bob', { all: true })).filter(([n]) => n === 'error');
      assert.equal(err[1].code, 'permission_denied');

      // Longer than two retry delays of the client's backoff, then a reconnect: still one.
      await sleep(3500);
      await dropConnection(alice.page);
      await waitCount(alice.page, 'notify:#alice', 'subscribed', 2);
      await sleep(1500);
      const subs = await sent(alice.page, 'channel:subscribe', 'notify:#bob');
      assert.equal(subs.length, 1, `${subs.length} subscribe requests for notify:#bob`);
      assert.equal((await answerTo(alice.page, subs[0].id)).code, 'permission_denied');
      assert.equal(await alice.page.evaluate(() => window.sub('notify:#bob').state), 'unsubscribed');
      // Unsubscribing from a channel this connection is not subscribed to is answered, with null.
      assert.equal(await alice.page.evaluate(() => window.other.request('channel:unsubscribe', { channel: 'notify:#bob' })), null);

      // Her own channel works; bob's publication reaches nothing of hers.
      await back.publish('notify:#bob', 'for bob');
      await back.publish('notify:#alice', 'for alice');
      await waitCount(alice.page, 'notify:#alice', 'publication', 1);
      await sleep(300);
      assert.deepEqual(
        (await frames(alice.page)).filter((f) => f.type === 'event').map((f) => [f.event, f.data.channel, f.data.data]),
        [['channel:publication', 'notify:#alice', 'for alice']],
      );
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
      await back.context.close();
    });

    test('presence and join/leave across two pages', async () => {
      const channel = `public:room-${transport}`;
      const alice = await subscriber(server, 'alice', transport);
      const bob = await subscriber(server, 'bob', transport);
      const sessionId = (p) => p.page.evaluate(() => window.other.session.sessionId);
      const aliceId = await sessionId(alice);
      const bobId = await sessionId(bob);
      const entry = (p) => ({ clientId: p.clientId, userId: p.userId, data: p.data });
      const byId = (a, b) => a.clientId.localeCompare(b.clientId);

      await watch(alice.page, channel, { data: { color: 'red' } });
      await waitCount(alice.page, channel, 'subscribed', 1);
      const [[, first]] = (await events(alice.page, channel)).filter(([n]) => n === 'subscribed');
      assert.deepEqual(first.presence.map(entry), [{ clientId: aliceId, userId: 'alice', data: { color: 'red' } }]);

      await watch(bob.page, channel, { data: { color: 'blue' } });
      await waitCount(bob.page, channel, 'subscribed', 1);
      const [[, bobFirst]] = (await events(bob.page, channel)).filter(([n]) => n === 'subscribed');
      // The ack's presence is an array of client infos.
      const [bobSub] = await sent(bob.page, 'channel:subscribe', channel);
      assert.ok(Array.isArray((await answerTo(bob.page, bobSub.id)).data.presence), 'presence is an array');
      assert.deepEqual(
        bobFirst.presence.map(entry).sort(byId),
        [
          { clientId: aliceId, userId: 'alice', data: { color: 'red' } },
          { clientId: bobId, userId: 'bob', data: { color: 'blue' } },
        ].sort(byId),
      );
      await waitCount(alice.page, channel, 'join', 1);
      const [[, join]] = (await events(alice.page, channel)).filter(([n]) => n === 'join');
      assert.equal(join.channel, channel);
      assert.deepEqual(entry(join.info), { clientId: bobId, userId: 'bob', data: { color: 'blue' } });
      assert.equal(typeof join.info.deviceId, 'string');

      const presence = (p) => p.page.evaluate((ch) => window.sub(ch).presence(), channel);
      const stats = (p) => p.page.evaluate((ch) => window.sub(ch).presenceStats(), channel);
      assert.deepEqual((await presence(alice)).clients.map((c) => c.clientId).sort(), [aliceId, bobId].sort());
      assert.deepEqual(await stats(bob), { clients: 2, users: 2 });

      // Bob unsubscribes: a leave; subscribes again: a join.
      await bob.page.evaluate((ch) => window.sub(ch).unsubscribe(), channel);
      await waitCount(alice.page, channel, 'leave', 1);
      const [unsub] = await sent(bob.page, 'channel:unsubscribe', channel);
      const unsubAnswer = await answerTo(bob.page, unsub.id);
      assert.deepEqual([unsubAnswer.type, unsubAnswer.data], ['ack', null]);
      assert.deepEqual(await stats(alice), { clients: 1, users: 1 });
      await bob.page.evaluate((ch) => window.sub(ch).subscribe(), channel);
      await waitCount(alice.page, channel, 'join', 2);

      // Bob's connection drops: the server says he left, and joined again from his new connection.
      await dropConnection(bob.page);
      await waitCount(bob.page, channel, 'subscribed', 3);
      const bobId2 = await sessionId(bob);
      assert.notEqual(bobId2, bobId);
      await waitCount(alice.page, channel, 'join', 3);
      await waitCount(alice.page, channel, 'leave', 2);
      assert.deepEqual((await presence(alice)).clients.map((c) => c.clientId).sort(), [aliceId, bobId2].sort());

      // Nobody is told about themselves.
      assert.equal(await count(bob.page, channel, 'join'), 0);
      assert.equal(await count(bob.page, channel, 'leave'), 0);

      // Bob closes his page: a leave, at once or when the heartbeat notices.
      await bob.context.close();
      await waitCount(alice.page, channel, 'leave', 3);
      assert.deepEqual(await stats(alice), { clients: 1, users: 1 });

      const seen = (await events(alice.page, channel))
        .filter(([n]) => n === 'join' || n === 'leave')
        .map(([n, x]) => `${n} ${x.info.userId} ${x.info.clientId === bobId ? 1 : x.info.clientId === bobId2 ? 2 : '?'}`);
      assert.deepEqual(seen, ['join bob 1', 'leave bob 1', 'join bob 1', 'leave bob 1', 'join bob 2', 'leave bob 2']);
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
    });

    test('after a restart without Redis (history lost) the subscription says recovered: false', async () => {
      const channel = `public:epoch-${transport}`;
      const own = new Server([...DEV, ...FAST_RESTART]);
      await own.start();
      try {
        let back = await backend(own);
        const alice = await subscriber(own, 'alice', transport);
        await watch(alice.page, channel);
        await waitCount(alice.page, channel, 'subscribed', 1);
        for (const d of ['old 1', 'old 2']) await back.publish(channel, d);
        await waitCount(alice.page, channel, 'publication', 2);
        const oldEpoch = await alice.page.evaluate((ch) => window.sub(ch).epoch, channel);
        assert.ok(oldEpoch, 'an epoch');

        // Alice's first attempt comes 8 s after the restart's disconnect: the backend publishes on
        // the new server while she is away.
        await reconnectAfter(alice.page, 8000);
        await back.context.close();
        await own.stop();
        await alice.page.waitForFunction(() => window.other.state === 'reconnecting');
        await own.start();
        back = await backend(own);
        await back.publish(channel, 'new while away');
        assert.equal(await clientState(alice.page), 'reconnecting', 'alice was away');

        await waitCount(alice.page, channel, 'subscribed', 2, 30000);
        await back.publish(channel, 'new live');
        await waitCount(alice.page, channel, 'publication', 3);
        await sleep(300);
        assert.deepEqual(await lines(alice.page, channel), [
          'subscribed recovered=false wasRecovering=false',
          'pub #1 old 1',
          'pub #2 old 2',
          'subscribing transport_closed',
          'subscribed recovered=false wasRecovering=true',
          'pub #2 new live',
        ]);
        const subscribed = (await events(alice.page, channel)).filter(([n]) => n === 'subscribed').map(([, x]) => x);
        assert.notEqual(subscribed[1].epoch, oldEpoch, 'a new epoch');
        const subs = await sent(alice.page, 'channel:subscribe', channel);
        assert.deepEqual(subs[1].data.since, { offset: 2, epoch: oldEpoch });
        assert.deepEqual((await answerTo(alice.page, subs[1].id)).data.publications, []);
        // What the app reloads from: the new epoch's history.
        const history = await alice.page.evaluate((ch) => window.sub(ch).history({ limit: 10 }), channel);
        assert.equal(history.epoch, subscribed[1].epoch);
        assert.deepEqual(history.publications.map((p) => [p.offset, p.data]), [[1, 'new while away'], [2, 'new live']]);
        assert.deepEqual(await alice.page.evaluate((ch) => [window.sub(ch).offset, window.sub(ch).epoch], channel), [
          2,
          subscribed[1].epoch,
        ]);
        assert.deepEqual(alice.errors, []);
        await alice.context.close();
        await back.context.close();
      } finally {
        await own.dispose();
      }
    });
  });
}

// ---- namespaces from a configuration file ---------------------------------------------------------

const CONFIG = `
[namespaces.secret]
subscribe = "token"
history_size = 100
history_ttl = "5m"
recover = true

[namespaces.vol]
volatile = true

[namespaces.claimed]
subscribe = "claim"

[namespaces.chat]
client_publish = true
publisher_info = true
history_size = 10
recover = true
`;

/**
 * Runs in a page before its scripts: copies every WebTransport datagram the page reads to
 * `window.__datagrams` (as text), so a test can tell which frames came as datagrams.
 */
function tapDatagrams() {
  window.__datagrams = [];
  const proto = globalThis.WebTransportDatagramDuplexStream?.prototype;
  const desc = proto && Object.getOwnPropertyDescriptor(proto, 'readable');
  window.__datagramTap = Boolean(desc?.get);
  if (!desc?.get) return;
  const tapped = new WeakMap();
  const decoder = new TextDecoder();
  Object.defineProperty(proto, 'readable', {
    configurable: true,
    get() {
      let readable = tapped.get(this);
      if (!readable) {
        readable = desc.get.call(this).pipeThrough(
          new TransformStream({
            transform(chunk, controller) {
              window.__datagrams.push(decoder.decode(chunk));
              controller.enqueue(chunk);
            },
          }),
        );
        tapped.set(this, readable);
      }
      return readable;
    },
  });
}

for (const transport of TRANSPORTS) {
  describe(`configured namespaces over ${transport}`, () => {
    let server;
    before(async () => {
      // No leeway: a subscription token ends when its `exp` says.
      server = new Server([...DEV, '--jwt-leeway', '0s'], { config: CONFIG });
      await server.start();
    });
    after(async () => server?.dispose());

    test('an expiring subscription token is renewed through getToken with no gap', async () => {
      const channel = `secret:doc-${transport}`;
      const back = await backend(server);
      const alice = await subscriber(server, 'alice', transport);
      await alice.page.exposeFunction('mintSubToken', (ch) => token('alice', '--channel', ch, '--ttl', '2s'));
      await alice.page.evaluate((ch) => {
        window.tokens = [];
        window.watch(ch, {
          getToken: async (c) => {
            const t = await window.mintSubToken(c);
            window.tokens.push(t);
            return t;
          },
        });
      }, channel);
      await waitCount(alice.page, channel, 'subscribed', 1);

      // Publications every 50 ms across at least two expiries (each token lives 1–2 s).
      const stream = await back.startStream(channel, 'tick', 50);
      await waitCount(alice.page, channel, 'subscribed', 3, 15000);
      const acks = await stream.stop();
      const last = acks.at(-1).offset;
      await waitCount(alice.page, channel, 'publication', last);
      await sleep(300);

      const log = await events(alice.page, channel);
      const pubs = log.filter(([n]) => n === 'publication').map(([, p]) => p.offset);
      assert.deepEqual(pubs, range(1, last), 'every publication once, in order, none missing');
      const restarts = log.filter(([n]) => n === 'subscribing').map(([, x]) => x.code);
      assert.ok(restarts.length >= 2, `${restarts.length} renewals`);
      assert.deepEqual(new Set(restarts), new Set(['subscription_expired']));
      const subscribed = log.filter(([n]) => n === 'subscribed').map(([, x]) => [x.recovered, x.wasRecovering]);
      assert.deepEqual(subscribed.slice(1), subscribed.slice(1).map(() => [true, true]), 'each renewal recovered');
      assert.equal(await alice.page.evaluate((ch) => window.sub(ch).state, channel), 'subscribed');

      // The server's pushes, and one fresh token per subscribe.
      const pushes = (await frames(alice.page)).filter((f) => f.event === 'channel:unsubscribed').map((f) => f.data);
      assert.equal(pushes.length, restarts.length);
      for (const p of pushes) {
        assert.deepEqual({ ...p, reason: typeof p.reason }, { channel, code: 'subscription_expired', reason: 'string', resubscribe: true });
      }
      const subs = await sent(alice.page, 'channel:subscribe', channel);
      const tokens = await alice.page.evaluate(() => window.tokens);
      assert.equal(subs.length, tokens.length);
      assert.deepEqual(subs.map((s) => s.data.token), tokens);
      assert.equal(new Set(tokens).size, tokens.length, 'a new token each time');
      assert.ok(subs.slice(1).every((s) => s.data.since?.offset >= 1), 'each renewal subscribed with since');
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
      await back.context.close();
    });

    test('a subscription token already expired: getToken is asked once more, then the refusal is final', async () => {
      const channel = `secret:late-${transport}`;
      const alice = await subscriber(server, 'alice', transport);
      const stale = token('alice', '--channel', channel, '--ttl', '1s');
      await sleep(2100);
      const outcome = await alice.page.evaluate(async ([ch, t]) => {
        const sub = window.watch(ch, { getToken: () => t });
        return sub.ready(10000).then(
          () => null,
          (e) => ({ code: e.code, details: e.details }),
        );
      }, [channel, stale]);
      assert.deepEqual(outcome, { code: 'permission_denied', details: { reason: 'token_expired' } });
      await sleep(2500);
      // getToken keeps returning the stale token: one retry, then it stops.
      assert.equal((await sent(alice.page, 'channel:subscribe', channel)).length, 2);
      assert.deepEqual(await lines(alice.page, channel), ['unsubscribed permission_denied']);
      await alice.context.close();
    });

    test('subscription tokens for another user or channel, and claims, are checked', async () => {
      const channel = `secret:doc-${transport}`;
      const alice = await subscriber(server, 'alice', transport);
      const refusal = (ch, tok) =>
        alice.page.evaluate(
          ([c, t]) => {
            window.other.removeSubscription(c);
            return window
              .watch(c, t === null ? undefined : { getToken: () => t })
              .ready(10000)
              .then(() => 'subscribed', (e) => e.code);
          },
          [ch, tok],
        );
      assert.equal(await refusal(channel, token('bob', '--channel', channel)), 'permission_denied', "bob's token");
      assert.equal(await refusal(channel, token('alice', '--channel', `${channel}-other`)), 'permission_denied', 'another channel');
      assert.equal(await refusal(channel, null), 'permission_denied', 'no token');
      assert.equal(await refusal(channel, token('alice', '--channel', channel)), 'subscribed');

      // `claim`: the connection token's `channels` lists what its user may subscribe to.
      assert.equal(await refusal(`claimed:a-${transport}`, null), 'permission_denied', 'no claim');
      const carol = await clientPage(browser, server, token('carol', '--channels', `claimed:a-*,claimed:b-${transport}`), { transport });
      await carol.page.evaluate(installRecorder);
      const claimed = (ch) =>
        carol.page.evaluate((c) => window.watch(c).ready(10000).then(() => 'subscribed', (e) => e.code), ch);
      assert.equal(await claimed(`claimed:a-${transport}`), 'subscribed', 'a prefix pattern');
      assert.equal(await claimed(`claimed:b-${transport}`), 'subscribed', 'an exact entry');
      assert.equal(await claimed(`claimed:b-${transport}-x`), 'permission_denied', 'an exact entry is not a prefix');
      assert.equal(await claimed(`claimed:c-${transport}`), 'permission_denied', 'not listed');
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(carol.errors, []);
      await alice.context.close();
      await carol.context.close();
    });

    test('subscribers publish where client_publish is set, with publisher info', async () => {
      const channel = `chat:room-${transport}`;
      const alice = await subscriber(server, 'alice', transport);
      const bob = await subscriber(server, 'bob', transport);
      for (const p of [alice, bob]) {
        await watch(p.page, channel);
        await waitCount(p.page, channel, 'subscribed', 1);
      }
      const ack = await alice.page.evaluate((ch) => window.sub(ch).publish({ text: 'hi from alice' }), channel);
      assert.equal(ack.offset, 1);
      assert.equal(typeof ack.epoch, 'string');
      const aliceSession = await alice.page.evaluate(() => window.other.session);
      for (const p of [alice, bob]) {
        await waitCount(p.page, channel, 'publication', 1);
        const [[, pub]] = (await events(p.page, channel)).filter(([n]) => n === 'publication');
        assert.deepEqual(pub, {
          channel,
          offset: 1,
          data: { text: 'hi from alice' },
          info: { userId: 'alice', clientId: aliceSession.sessionId, deviceId: aliceSession.deviceId },
        });
      }
      // Publishing needs a subscription on this connection, and client_publish in the namespace.
      const publish = (p, ch) =>
        p.page.evaluate((c) => window.other.request('channel:publish', { channel: c, data: 'x' }).then(() => 'published', (e) => e.code), ch);
      assert.equal(await publish(bob, `chat:elsewhere-${transport}`), 'not_subscribed');
      await watch(bob.page, `vol:x-${transport}`);
      await waitCount(bob.page, `vol:x-${transport}`, 'subscribed', 1);
      assert.equal(await publish(bob, `vol:x-${transport}`), 'permission_denied');
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
      await bob.context.close();
    });

    test(`a volatile namespace delivers without offsets${transport === 'webtransport' ? ', as datagrams' : ''}`, async () => {
      const channel = `vol:cursor-${transport}`;
      const back = await backend(server);
      const alice = await subscriber(server, 'alice', transport, { initScript: tapDatagrams });
      await watch(alice.page, channel);
      await waitCount(alice.page, channel, 'subscribed', 1);
      const [sub] = await sent(alice.page, 'channel:subscribe', channel);
      const ack = await answerTo(alice.page, sub.id);
      assert.deepEqual(ack.data, { channel, offset: 0, epoch: '', recovered: false, publications: [] });

      const sentData = range(1, 5).map((i) => ({ x: i }));
      for (const d of sentData) {
        assert.deepEqual(await back.publish(channel, d), {}, 'no offset in a volatile namespace');
        await sleep(30);
      }
      await waitCount(alice.page, channel, 'publication', 5, 5000);
      await sleep(300);
      const pubs = (await events(alice.page, channel)).filter(([n]) => n === 'publication').map(([, p]) => p);
      assert.deepEqual(
        pubs.map((p) => p.data),
        sentData,
        'all of them, in order (loopback: no datagram is lost or reordered)',
      );
      assert.ok(pubs.every((p) => p.offset === undefined));
      const datagrams = await alice.page.evaluate(() => window.__datagrams.map((d) => JSON.parse(d)));
      const asDatagrams = datagrams.filter((f) => f.event === 'channel:publication' && f.data.channel === channel);
      if (transport === 'webtransport') {
        assert.equal(await alice.page.evaluate(() => window.__datagramTap), true, 'the datagram tap is installed');
        assert.deepEqual(asDatagrams.map((f) => f.data.data), sentData, 'every publication came as a datagram');
      } else {
        assert.deepEqual(asDatagrams, []);
      }

      // Nothing to recover: the resubscribe after a drop carries no `since`.
      await dropConnection(alice.page);
      await waitCount(alice.page, channel, 'subscribed', 2);
      const subs = await sent(alice.page, 'channel:subscribe', channel);
      assert.equal(subs.length, 2);
      assert.equal(subs[1].data.since, undefined);
      assert.deepEqual((await lines(alice.page, channel)).slice(-2), ['subscribing transport_closed', 'subscribed recovered=false wasRecovering=false']);
      await back.publish(channel, { x: 6 });
      await waitCount(alice.page, channel, 'publication', 6, 5000);
      assert.deepEqual(alice.errors, []);
      await alice.context.close();
      await back.context.close();
    });
  });
}

// ---- the demo's Live channel panel ----------------------------------------------------------------


const block = (channel) => `#channels .channel[data-channel="${channel}"]`;

/** The panel's publications of `channel`: [offset, text]. */
function shownPublications(page, channel) {
  return page.$$eval(`${block(channel)} li[data-offset]`, (els) =>
    els.map((e) => [Number(e.dataset.offset), e.querySelector('.content').textContent]),
  );
}

describe('the demo Live channel panel', () => {
  let server;
  before(async () => {
    server = new Server([...DEV, ...QUICK_HEARTBEAT]);
    await server.start();
  });
  after(async () => server?.dispose());

  for (const transport of TRANSPORTS) {
    test(`shows public:demo and the user's own notify channel, and recovers after a drop (${transport})`, async () => {
      const back = await backend(server);
      const before = (await back.publish('public:demo', 'published before')).offset;
      const alice = await openDemo(browser, server, token('alice'), { query: `&transport=${transport}` });
      await waitState(alice.page, 'connected');
      assert.equal(await alice.page.textContent('#transport'), `via ${transport}`);
      await alice.page.waitForSelector(`${block('public:demo')}[data-state="subscribed"]`);
      await alice.page.waitForSelector(`${block('notify:#alice')}[data-state="subscribed"]`);
      // A first subscribe shows the latest history.
      await alice.page.waitForSelector(`${block('public:demo')} li[data-offset="${before}"]`);

      const bob = await openDemo(browser, server, token('bob'), { query: `&transport=${transport}` });
      await waitState(bob.page, 'connected');
      await bob.page.waitForSelector(`${block('notify:#bob')}[data-state="subscribed"]`);
      // Here now: both, on both pages (the ack's list, then joins).
      for (const page of [alice.page, bob.page]) {
        await page.waitForFunction(() => {
          const names = [...document.querySelectorAll('#channel-presence li[data-client-id]')].map((li) => li.textContent.split(' ')[0]);
          return names.includes('alice') && names.includes('bob');
        });
      }

      const hello = await back.publish('public:demo', 'hello <everyone>');
      const forAlice = await back.publish('notify:#alice', { text: `for alice only (${transport})` });
      const forBob = await back.publish('notify:#bob', `for bob only (${transport})`);
      await alice.page.waitForSelector(`${block('public:demo')} li[data-offset="${hello.offset}"]`);
      await alice.page.waitForSelector(`${block('notify:#alice')} li[data-offset="${forAlice.offset}"]`);
      await bob.page.waitForSelector(`${block('notify:#bob')} li[data-offset="${forBob.offset}"]`);
      assert.deepEqual((await shownPublications(alice.page, 'notify:#alice')).at(-1), [forAlice.offset, `for alice only (${transport})`]);
      assert.deepEqual((await shownPublications(bob.page, 'notify:#bob')).at(-1), [forBob.offset, `for bob only (${transport})`]);
      assert.equal(await alice.page.locator('#channels', { hasText: 'for bob only' }).count(), 0);
      assert.deepEqual(
        await alice.page.$$eval('#channels .channel', (els) => els.map((e) => e.dataset.channel)),
        ['public:demo', 'notify:#alice'],
      );

      // Bob leaves: alice's list loses him.
      await bob.context.close();
      await alice.page.waitForFunction(
        () => ![...document.querySelectorAll('#channel-presence li')].some((li) => li.textContent.startsWith('bob ')),
      );

      // A drop: the panel recovers the two publications missed meanwhile and says so.
      await reconnectAfter(alice.page, 3000);
      await dropConnection(alice.page);
      await waitState(alice.page, 'reconnecting');
      await alice.page.waitForSelector(`${block('public:demo')}[data-state="subscribing"]`);
      assert.equal(await alice.page.textContent('#channel-presence'), 'unknown (not subscribed)');
      const missed = [await back.publish('public:demo', 'missed 1'), await back.publish('public:demo', 'missed 2')];
      assert.equal(await alice.page.getAttribute('#status', 'data-state'), 'reconnecting', 'alice was away');
      await waitState(alice.page, 'connected');
      await alice.page.waitForSelector(`${block('public:demo')}[data-state="subscribed"][data-recovered="true"]`);
      assert.equal(await alice.page.textContent(`${block('public:demo')} .recovery`), 'recovered after reconnect: 2 missed');
      await alice.page.waitForSelector(`${block('public:demo')} li[data-offset="${missed[1].offset}"]`);
      // Those of the other transport's run come before `before`.
      assert.deepEqual((await shownPublications(alice.page, 'public:demo')).filter(([o]) => o >= before), [
        [before, 'published before'],
        [hello.offset, 'hello <everyone>'],
        [missed[0].offset, 'missed 1'],
        [missed[1].offset, 'missed 2'],
      ]);
      await alice.page.waitForSelector('#channel-presence li[data-client-id]');
      if (transport === 'webtransport') await alice.page.locator('#live').screenshot({ path: join(SHOTS, 'channels.png') });

      // Signing in as someone else: the panel follows the new user's notify channel.
      await alice.page.fill('#token', token('carol'));
      await alice.page.click('#connect');
      await alice.page.waitForSelector(`${block('notify:#carol')}[data-state="subscribed"]`);
      assert.deepEqual(
        await alice.page.$$eval('#channels .channel', (els) => els.map((e) => e.dataset.channel)),
        ['public:demo', 'notify:#carol'],
      );
      assert.equal(await alice.page.locator('#channels', { hasText: 'for alice only' }).count(), 0);
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(bob.errors, []);
      await alice.context.close();
      await back.context.close();
    });
  }

  test('keeps one interval timer through connects, drops and channel traffic', async () => {
    const back = await backend(server);
    const { page, context, errors } = await openDemo(browser, server, token('ivy'), { initScript: countIntervals });
    await waitState(page, 'connected');
    await page.waitForSelector(`${block('notify:#ivy')}[data-state="subscribed"]`);
    const back2 = await backend(server);
    const streams = [await back.startStream('public:demo', 'tick', 30), await back2.startStream('notify:#ivy', 'note', 30)];
    for (let i = 0; i < 3; i++) {
      await page.click('#disconnect');
      await waitState(page, 'disconnected');
      await page.click('#connect');
      await waitState(page, 'connected');
      await page.waitForSelector(`${block('public:demo')}[data-state="subscribed"]`);
    }
    await dropConnection(page);
    await waitState(page, 'reconnecting');
    await waitState(page, 'connected');
    await page.waitForSelector(`${block('notify:#ivy')}[data-state="subscribed"]`);
    await sleep(500);
    for (const s of streams) await s.stop();
    const notes = await page.$$eval(`${block('notify:#ivy')} li[data-offset]`, (els) => els.length);
    assert.ok(notes > 0, 'notify traffic reached the panel');
    const live = await page.evaluate(() => window.__liveIntervals());
    assert.ok(live <= 1, `${live} intervals are running`);
    assert.deepEqual(errors, []);
    await context.close();
    await back.context.close();
    await back2.context.close();
  });
});
