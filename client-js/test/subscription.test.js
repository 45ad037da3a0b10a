// Channel subscriptions (src/subscription.js) against a scripted server: the subscribe ack and its
// position, publications in offset order once, recovery with `since` after a reconnect, the
// `channel:unsubscribed` codes, refusals that stop or retry, and the requests that need a
// subscription. A fake clock; no wall-clock waits.

import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { RtgateClient, RtgateError, Subscription, forgetTransportChoice } from '../src/rtgate.js';
import { FakeClock, HELLO, clientOptions, fakeTransport, settle } from './fakes.js';

const CH = 'news:sports';

async function connected(opts = {}) {
  const clock = new FakeClock();
  const wt = fakeTransport('webtransport');
  const client = new RtgateClient(clientOptions(clock, { transports: { webtransport: wt.open }, ...opts }));
  client.connect();
  await settle();
  wt.last.push(HELLO);
  await settle();
  return { client, clock, wt };
}

/** Drops the connection and completes the reconnect (the first backoff delay is 500 ms at random 0.5; 1 s covers it). */
async function reconnect(clock, wt) {
  wt.last.drop();
  await clock.advance(1000);
  wt.last.push(HELLO);
  await settle();
}

/** Records a subscription's events as [name, arg] in order. */
function record(sub) {
  const seen = [];
  for (const ev of ['state', 'subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error']) {
    sub.on(ev, (arg) => seen.push([ev, arg]));
  }
  return {
    seen,
    of: (name) => seen.filter(([ev]) => ev === name).map(([, a]) => a),
    offsets: () => seen.filter(([ev]) => ev === 'publication').map(([, p]) => p.offset),
  };
}

const pub = (offset, extra = {}) => ({
  type: 'event',
  event: 'channel:publication',
  data: { channel: CH, offset, data: { n: offset }, ...extra },
});

function ack(conn, frame, data) {
  conn.push({ type: 'ack', id: frame.id, data });
}

function refuse(conn, frame, code) {
  conn.push({ type: 'error', id: frame.id, code, message: code });
}

const lastSubscribe = (conn) => conn.events('channel:subscribe').at(-1);

/** Subscribes and acks at `offset`/`epoch`; returns the subscription. */
async function subscribed(client, wt, { offset = 5, epoch = 'e1', options = {} } = {}) {
  const sub = client.subscribe(CH, options);
  await settle();
  ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset, epoch, recovered: false, publications: [] });
  assert.equal(sub.state, 'subscribed');
  return sub;
}

beforeEach(() => forgetTransportChoice());

describe('subscribe', () => {
  test('sends channel:subscribe, goes subscribing → subscribed, keeps the ack position', async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH, { data: { color: 'red' } });
    assert.ok(sub instanceof Subscription);
    const rec = record(sub);
    assert.equal(sub.state, 'subscribing');
    const frame = lastSubscribe(wt.last);
    assert.deepEqual(frame.data, { channel: CH, data: { color: 'red' } });
    const ready = sub.ready();
    const presence = [{ clientId: 'c1', userId: 'bob', deviceId: 'd1' }];
    ack(wt.last, frame, { channel: CH, offset: 5, epoch: 'e1', recovered: false, publications: [], presence });
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.of('state'), ['subscribed']);
    const ctx = { channel: CH, recovered: false, wasRecovering: false, offset: 5, epoch: 'e1', presence };
    assert.deepEqual(rec.of('subscribed'), [ctx]);
    assert.deepEqual(await ready, ctx);
    assert.deepEqual([sub.offset, sub.epoch], [5, 'e1']);
  });

  test('a subscription made offline subscribes on connect, before the sends queued meanwhile', async () => {
    const clock = new FakeClock();
    const wt = fakeTransport('webtransport');
    const client = new RtgateClient({
      url: 'http://127.0.0.1:3000',
      certificateHash: 'none',
      clock,
      token: 't',
      transports: { webtransport: wt.open },
      autoConnect: false,
    });
    const sub = client.subscribe(CH);
    assert.equal(sub.state, 'subscribing');
    client.request('sys:echo', {}).catch(() => {});
    client.connect();
    await settle();
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(
      wt.last.events().map((f) => f.event),
      ['channel:subscribe', 'sys:echo'],
    );
  });

  test('a subscription made in a connect listener subscribes once', async () => {
    const clock = new FakeClock();
    const wt = fakeTransport('webtransport');
    const client = new RtgateClient({
      url: 'http://127.0.0.1:3000',
      certificateHash: 'none',
      clock,
      token: 't',
      transports: { webtransport: wt.open },
      autoConnect: false,
    });
    // The subscription starts at once, then the restore that follows the listeners sees it.
    client.on('connect', ({ session }) => client.subscribe(`notify:#${session.userId}`));
    client.connect();
    await settle();
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(wt.last.events('channel:subscribe').map((f) => f.data), [{ channel: 'notify:#alice' }]);
  });

  test('`since` starts from a known position', async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH, { since: { offset: 3, epoch: 'e1' } });
    const rec = record(sub);
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 3, epoch: 'e1' } });
    ack(wt.last, lastSubscribe(wt.last), {
      channel: CH, offset: 5, epoch: 'e1', recovered: true,
      publications: [{ offset: 4, data: 'a' }, { offset: 5, data: 'b' }],
    });
    assert.deepEqual(rec.offsets(), [4, 5]);
    assert.deepEqual(rec.of('subscribed')[0].wasRecovering, true);
    assert.equal(rec.of('publication')[0].channel, CH);
  });

  test('subscribing twice to one channel throws; subscription() finds it; removeSubscription frees it', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt);
    assert.throws(() => client.subscribe(CH), (e) => e instanceof RtgateError && e.code === 'already_subscribed');
    assert.equal(client.subscription(CH), sub);
    assert.equal(client.subscription('other'), null);
    assert.deepEqual(client.subscriptions(), [sub]);
    client.removeSubscription(sub);
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(wt.last.events('channel:unsubscribe').at(-1).data, { channel: CH });
    assert.equal(client.subscription(CH), null);
    assert.throws(() => sub.subscribe(), (e) => e.code === 'removed');
    const again = client.subscribe(CH);
    assert.notEqual(again, sub);
    assert.equal(wt.last.events('channel:subscribe').length, 2);
  });
});

describe('publications', () => {
  test('in offset order, each once: duplicates dropped, the position follows', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5 });
    const rec = record(sub);
    for (const o of [5, 6, 6, 7, 4, 8]) wt.last.push(pub(o));
    assert.deepEqual(rec.offsets(), [6, 7, 8]);
    assert.equal(sub.offset, 8);
    assert.deepEqual(rec.of('publication')[0], { channel: CH, offset: 6, data: { n: 6 } });
  });

  test('a channel without history: publications have no offset and all arrive', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 0, epoch: '' });
    const rec = record(sub);
    for (const n of [1, 1, 2]) wt.last.push({ type: 'event', event: 'channel:publication', data: { channel: CH, data: n } });
    assert.deepEqual(rec.of('publication').map((p) => p.data), [1, 1, 2]);
  });

  test("the ack's publications come before a live one sent right behind it in the same turn", async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH, { since: { offset: 2, epoch: 'e1' } });
    const rec = record(sub);
    // As when one WebTransport chunk holds both frames: dispatched one after the other, no await.
    ack(wt.last, lastSubscribe(wt.last), {
      channel: CH, offset: 4, epoch: 'e1', recovered: true,
      publications: [{ offset: 3, data: 'c' }, { offset: 4, data: 'd' }],
    });
    wt.last.push(pub(5));
    assert.deepEqual(rec.offsets(), [3, 4, 5]);
    await settle();
    assert.deepEqual(rec.offsets(), [3, 4, 5]);
  });

  test('join and leave are passed on; other channels and other events are not', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt);
    const rec = record(sub);
    const info = { userId: 'bob', clientId: 'c2', deviceId: 'p1', data: { color: 'red' } };
    wt.last.push({ type: 'event', event: 'channel:join', data: { channel: CH, info } });
    wt.last.push({ type: 'event', event: 'channel:leave', data: { channel: CH, info } });
    wt.last.push({ type: 'event', event: 'channel:join', data: { channel: 'news:other', info } });
    wt.last.push({ type: 'event', event: 'channel:publication', data: { channel: 'news:other', offset: 99, data: 1 } });
    assert.deepEqual(rec.seen, [
      ['join', { channel: CH, info }],
      ['leave', { channel: CH, info }],
    ]);
  });
});

describe('recovery after a reconnect', () => {
  test('resubscribes with since; missed publications in order before live ones, each once', async () => {
    const { client, clock, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    const rec = record(sub);
    wt.last.push(pub(6));
    wt.last.drop();
    assert.equal(sub.state, 'subscribing');
    wt.last.push(pub(7)); // a dead connection delivers nothing more
    await clock.advance(1000);
    wt.last.push(HELLO);
    await settle();
    const frame = lastSubscribe(wt.last);
    assert.deepEqual(frame.data, { channel: CH, since: { offset: 6, epoch: 'e1' } });
    ack(wt.last, frame, {
      channel: CH, offset: 8, epoch: 'e1', recovered: true,
      publications: [{ offset: 7, data: 7 }, { offset: 8, data: 8 }],
    });
    wt.last.push(pub(8)); // a duplicate of a recovered one
    wt.last.push(pub(9));
    assert.deepEqual(rec.offsets(), [6, 7, 8, 9]);
    const subscribedEvents = rec.of('subscribed');
    assert.equal(subscribedEvents.length, 1);
    assert.equal(subscribedEvents[0].recovered, true);
    assert.equal(subscribedEvents[0].wasRecovering, true);
    assert.deepEqual(rec.of('state'), ['subscribing', 'subscribed']);
    assert.deepEqual(rec.of('subscribing'), [{ code: 'transport_closed', reason: 'connection lost' }]);
  });

  test('recovery failed (new epoch): recovered false, the position restarts from the ack', async () => {
    const { client, clock, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    const rec = record(sub);
    wt.last.push(pub(6));
    await reconnect(clock, wt);
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 2, epoch: 'e2', recovered: false, publications: [] });
    assert.deepEqual(rec.of('subscribed').map((c) => [c.recovered, c.wasRecovering]), [[false, true]]);
    assert.deepEqual([sub.offset, sub.epoch], [2, 'e2']);
    wt.last.push(pub(3)); // below the old epoch's 6, new in e2
    assert.deepEqual(rec.offsets(), [6, 3]);
  });

  test("recover: false still starts from the app's since, also when the first attempt is retried", async () => {
    const { client, clock, wt } = await connected();
    const sub = client.subscribe(CH, { since: { offset: 3, epoch: 'e1' }, recover: false });
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable');
    await clock.advance(1000);
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 3, epoch: 'e1' } });
    await reconnect(clock, wt); // its answer lost with the connection
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 3, epoch: 'e1' } });
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 4, epoch: 'e1', recovered: true, publications: [{ offset: 4, data: 'd' }] });
    assert.equal(sub.offset, 4);
    const conns = wt.conns.length;
    wt.last.drop();
    await clock.advance(2000); // the client's second reconnect in a row
    assert.equal(wt.conns.length, conns + 1);
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH });
  });

  test('recover: false resubscribes without since', async () => {
    const { client, clock, wt } = await connected();
    await subscribed(client, wt, { options: { recover: false } });
    await reconnect(clock, wt);
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH });
  });

  test('a subscribe whose answer was lost is sent once after the reconnect, not twice', async () => {
    const { client, clock, wt } = await connected();
    const sub = client.subscribe(CH);
    const first = lastSubscribe(wt.last);
    await reconnect(clock, wt);
    assert.equal(wt.last.events('channel:subscribe').length, 1);
    // The old connection's ack can never count.
    wt.conns[0].push({ type: 'ack', id: first.id, data: { channel: CH, offset: 1, epoch: 'x', recovered: false, publications: [] } });
    assert.equal(sub.state, 'subscribing');
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 1, epoch: 'e1', recovered: false, publications: [] });
    assert.equal(sub.state, 'subscribed');
    await clock.advance(20000);
    assert.equal(wt.last.events('channel:subscribe').length, 1);
  });

  test('only subscriptions the app still wants are restored', async () => {
    const { client, clock, wt } = await connected();
    const kept = await subscribed(client, wt);
    const dropped = client.subscribe('news:other');
    ack(wt.last, lastSubscribe(wt.last), { channel: 'news:other', offset: 0, epoch: '', recovered: false, publications: [] });
    dropped.unsubscribe();
    await reconnect(clock, wt);
    assert.deepEqual(wt.last.events('channel:subscribe').map((f) => f.data.channel), [CH]);
    assert.equal(kept.state, 'subscribing');
    assert.equal(dropped.state, 'unsubscribed');
  });

  test('disconnect() and connect() keep the subscription and recover it', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    client.disconnect();
    assert.equal(sub.state, 'subscribing');
    client.connect();
    await settle();
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(lastSubscribe(wt.last).data.since, { offset: 5, epoch: 'e1' });
  });
});

describe('channel:unsubscribed from the server', () => {
  test('subscription_expired: a fresh token from getToken, resubscribed with since', async () => {
    const { client, wt } = await connected();
    const asked = [];
    const getToken = async (channel) => {
      asked.push(channel);
      return `sub-${asked.length}`;
    };
    const sub = client.subscribe(CH, { getToken });
    const rec = record(sub);
    await settle();
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, token: 'sub-1' });
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 5, epoch: 'e1', recovered: false, publications: [] });
    wt.last.push({
      type: 'event', event: 'channel:unsubscribed',
      data: { channel: CH, code: 'subscription_expired', reason: 'subscription token expired', resubscribe: false },
    });
    assert.equal(sub.state, 'subscribing');
    await settle();
    assert.deepEqual(asked, [CH, CH]);
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, token: 'sub-2', since: { offset: 5, epoch: 'e1' } });
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 5, epoch: 'e1', recovered: true, publications: [] });
    assert.deepEqual(rec.of('state'), ['subscribed', 'subscribing', 'subscribed']);
    assert.equal(rec.of('subscribing')[0].code, 'subscription_expired');
    assert.deepEqual(rec.of('unsubscribed'), []);
  });

  test('state_lost: resubscribes with since at once, and recovery says it failed', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    const rec = record(sub);
    // The code decides, with or without the `resubscribe` hint.
    wt.last.push({
      type: 'event', event: 'channel:unsubscribed',
      data: { channel: CH, code: 'state_lost', reason: 'epoch changed' },
    });
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 5, epoch: 'e1' } });
    wt.last.push(pub(6)); // none should come before the new ack; if it does, it is not delivered
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 0, epoch: 'e2', recovered: false, publications: [] });
    assert.deepEqual(rec.of('subscribed').map((c) => [c.recovered, c.wasRecovering]), [[false, true]]);
    assert.deepEqual(rec.offsets(), []);
    assert.equal(wt.last.events('channel:subscribe').length, 2);
  });

  test('unsubscribed: stays unsubscribed, also after a reconnect', async () => {
    const { client, clock, wt } = await connected();
    const sub = await subscribed(client, wt);
    const rec = record(sub);
    wt.last.push({
      type: 'event', event: 'channel:unsubscribed',
      data: { channel: CH, code: 'unsubscribed', reason: 'removed by the backend', resubscribe: false },
    });
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(rec.of('unsubscribed'), [{ code: 'unsubscribed', reason: 'removed by the backend' }]);
    wt.last.push(pub(6));
    await reconnect(clock, wt);
    assert.equal(wt.last.events('channel:subscribe').length, 0);
    assert.deepEqual(rec.offsets(), []);
    await assert.rejects(sub.publish('x'), (e) => e.code === 'not_subscribed');
  });

  test('a code a newer server adds follows its resubscribe flag', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt);
    wt.last.push({ type: 'event', event: 'channel:unsubscribed', data: { channel: CH, code: 'moved', resubscribe: true } });
    assert.equal(sub.state, 'subscribing');
    assert.equal(wt.last.events('channel:subscribe').length, 2);
  });
});

describe('refusals', () => {
  for (const code of ['permission_denied', 'bad_channel', 'limit_exceeded']) {
    test(`${code}: unsubscribed with an error, never retried`, async () => {
      const { client, clock, wt } = await connected();
      const sub = client.subscribe(CH);
      const rec = record(sub);
      const ready = sub.ready();
      refuse(wt.last, lastSubscribe(wt.last), code);
      assert.equal(sub.state, 'unsubscribed');
      assert.deepEqual(rec.of('error').map((e) => e.code), [code]);
      assert.deepEqual(rec.of('unsubscribed'), [{ code, reason: code }]);
      await assert.rejects(ready, (e) => e.code === code);
      await clock.advance(20000);
      await reconnect(clock, wt);
      assert.equal(wt.last.events('channel:subscribe').length, 0);
    });
  }

  test('an already expired subscription token: getToken is asked once more, then the refusal is final', async () => {
    const { client, wt } = await connected();
    const tokens = ['stale', 'fresh'];
    const sub = client.subscribe(CH, { getToken: () => tokens.shift() ?? 'stale-again' });
    await settle();
    const expired = (frame) =>
      wt.last.push({ type: 'error', id: frame.id, code: 'permission_denied', message: 'permission denied', details: { reason: 'token_expired' } });
    expired(lastSubscribe(wt.last));
    await settle();
    assert.deepEqual(wt.last.events('channel:subscribe').map((f) => f.data.token), ['stale', 'fresh']);
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 0, epoch: 'e1', recovered: false, publications: [] });
    assert.equal(sub.state, 'subscribed');
    // A later expired refusal gets its one retry again; a second in a row is final.
    sub.unsubscribe();
    sub.subscribe();
    await settle();
    expired(lastSubscribe(wt.last));
    await settle();
    expired(lastSubscribe(wt.last));
    await settle();
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(wt.last.events('channel:subscribe').length, 4);
  });

  test('permission_denied without the token_expired reason is final at once, also with getToken', async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH, { getToken: () => 'tok' });
    await settle();
    refuse(wt.last, lastSubscribe(wt.last), 'permission_denied');
    await settle();
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(wt.last.events('channel:subscribe').length, 1);
  });

  test("unavailable: retried after the client's backoff delays, which reset on success", async () => {
    const { client, clock, wt } = await connected();
    const sub = client.subscribe(CH);
    const rec = record(sub);
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable');
    assert.equal(sub.state, 'subscribing');
    // At random 0.5: the first retry after 1000 × U[0, 1) = 500 ms, the second after 2000 ms.
    await clock.advance(499);
    assert.equal(wt.last.events('channel:subscribe').length, 1);
    await clock.advance(1);
    assert.equal(wt.last.events('channel:subscribe').length, 2);
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable');
    await clock.advance(1999);
    assert.equal(wt.last.events('channel:subscribe').length, 2);
    await clock.advance(1);
    assert.equal(wt.last.events('channel:subscribe').length, 3);
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 0, epoch: '', recovered: false, publications: [] });
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.of('error').map((e) => e.code), ['unavailable', 'unavailable']);
    // Ended and refused again later: the delays start from the first one.
    wt.last.push({ type: 'event', event: 'channel:unsubscribed', data: { channel: CH, code: 'state_lost', resubscribe: true } });
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable');
    await clock.advance(499);
    assert.equal(wt.last.events('channel:subscribe').length, 4);
    await clock.advance(1);
    assert.equal(wt.last.events('channel:subscribe').length, 5);
  });

  test('a retry pending when the connection drops is replaced by the subscribe after the reconnect', async () => {
    const { client, clock, wt } = await connected();
    const tokens = [];
    client.subscribe(CH, { getToken: () => new Promise((resolve) => tokens.push(resolve)) });
    tokens.shift()('t1');
    await settle();
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable');
    await clock.advance(1000); // the first retry
    tokens.shift()('t2');
    await settle();
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable'); // the next one is due 2000 ms later
    await reconnect(clock, wt);
    assert.equal(tokens.length, 1, 'the reconnect asked for a token');
    // The old retry's time comes while the new attempt still waits for its token.
    await clock.advance(3000);
    assert.equal(tokens.length, 1, 'and nothing else did');
    tokens.shift()('t3');
    await settle();
    assert.deepEqual(wt.last.events('channel:subscribe').map((f) => f.data.token), ['t3']);
  });

  test('getToken throwing is retried with backoff; getToken returning no token stops', async () => {
    const { client, clock, wt } = await connected();
    let calls = 0;
    const sub = client.subscribe(CH, {
      getToken: () => {
        calls += 1;
        if (calls === 1) throw new Error('token service down');
        return calls === 2 ? 'sub-tok' : '';
      },
    });
    const rec = record(sub);
    assert.equal(wt.last.events('channel:subscribe').length, 0);
    await clock.advance(1000);
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, token: 'sub-tok' });
    assert.deepEqual(rec.of('error').map((e) => e.code), []); // the first error came before record()
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 0, epoch: '', recovered: false, publications: [] });
    wt.last.push({ type: 'event', event: 'channel:unsubscribed', data: { channel: CH, code: 'subscription_expired', resubscribe: true } });
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(rec.of('unsubscribed').map((u) => u.code), ['no_token']);
    assert.equal(wt.last.events('channel:subscribe').length, 1);
  });

  test('a token asked for on a connection that dropped is not sent on the next one', async () => {
    const { client, clock, wt } = await connected();
    const waiting = [];
    client.subscribe(CH, { getToken: () => new Promise((resolve) => waiting.push(resolve)) });
    wt.last.drop();
    await clock.advance(1000);
    wt.last.push(HELLO);
    await settle();
    assert.equal(waiting.length, 2);
    waiting[0]('stale');
    waiting[1]('fresh');
    await settle();
    assert.deepEqual(wt.last.events('channel:subscribe').map((f) => f.data.token), ['fresh']);
    assert.deepEqual(wt.conns[0].events('channel:subscribe'), []);
  });
});

describe('requests on a subscription', () => {
  test('publish, presence, presence stats and history send their events and resolve with the ack', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt);
    const published = sub.publish({ text: 'hi' });
    ack(wt.last, wt.last.events('channel:publish').at(-1), { offset: 6, epoch: 'e1' });
    assert.deepEqual(await published, { offset: 6, epoch: 'e1' });
    assert.deepEqual(wt.last.events('channel:publish').at(-1).data, { channel: CH, data: { text: 'hi' } });

    const clients = [{ clientId: 'c1', userId: 'alice', deviceId: 'd' }];
    const presence = sub.presence();
    ack(wt.last, wt.last.events('channel:presence').at(-1), { clients });
    assert.deepEqual(await presence, { clients });
    assert.deepEqual(wt.last.events('channel:presence').at(-1).data, { channel: CH });

    const stats = sub.presenceStats();
    ack(wt.last, wt.last.events('channel:presence-stats').at(-1), { clients: 3, users: 2 });
    assert.deepEqual(await stats, { clients: 3, users: 2 });

    const history = sub.history({ since: { offset: 1, epoch: 'e1' }, limit: 2, reverse: false });
    const h = wt.last.events('channel:history').at(-1);
    assert.deepEqual(h.data, { channel: CH, since: { offset: 1, epoch: 'e1' }, limit: 2, reverse: false });
    const publications = [{ offset: 2, data: 'b' }, { offset: 3, data: 'c' }];
    ack(wt.last, h, { publications, offset: 6, epoch: 'e1' });
    assert.deepEqual(await history, { publications, offset: 6, epoch: 'e1' });
    assert.deepEqual(wt.last.events('channel:history').length, 1);
    assert.equal(sub.offset, 5, 'history is a read, not a delivery');

    const bare = sub.history();
    assert.deepEqual(wt.last.events('channel:history').at(-1).data, { channel: CH });
    refuse(wt.last, wt.last.events('channel:history').at(-1), 'permission_denied');
    await assert.rejects(bare, (e) => e.code === 'permission_denied');
    assert.equal(sub.state, 'subscribed', 'a refused request does not end the subscription');
  });

  test('a publish while subscribing waits for the ack; on an unsubscribed subscription it rejects', async () => {
    const { client, clock, wt } = await connected();
    const sub = client.subscribe(CH);
    const published = sub.publish('early');
    await settle();
    assert.equal(wt.last.events('channel:publish').length, 0);
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 0, epoch: '', recovered: false, publications: [] });
    await settle();
    assert.deepEqual(wt.last.events().map((f) => f.event), ['channel:subscribe', 'channel:publish']);
    ack(wt.last, wt.last.events('channel:publish').at(-1), {});
    assert.deepEqual(await published, {});

    sub.unsubscribe();
    await assert.rejects(sub.publish('late'), (e) => e.code === 'not_subscribed');
    await assert.rejects(sub.presence(), (e) => e.code === 'not_subscribed');

    // Never subscribed within the request timeout: `timeout`.
    sub.subscribe();
    const slow = assert.rejects(sub.history(), (e) => e.code === 'timeout');
    await clock.advance(9999);
    assert.equal(wt.last.events('channel:history').length, 0);
    await clock.advance(1);
    await slow;
  });
});

describe('unsubscribe', () => {
  test('sends channel:unsubscribe, ignores later pushes, emits unsubscribed', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt);
    const rec = record(sub);
    sub.unsubscribe();
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(wt.last.events('channel:unsubscribe').map((f) => f.data), [{ channel: CH }]);
    assert.deepEqual(rec.of('unsubscribed'), [{ code: 'unsubscribe_called', reason: 'unsubscribe() called' }]);
    wt.last.push(pub(6));
    wt.last.push({ type: 'event', event: 'channel:join', data: { channel: CH, info: {} } });
    assert.deepEqual(rec.of('publication'), []);
    assert.deepEqual(rec.of('join'), []);
    sub.unsubscribe();
    assert.equal(wt.last.events('channel:unsubscribe').length, 1);
  });

  test("while the subscribe is in flight: unsubscribe follows it, and its late ack doesn't count", async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH);
    const frame = lastSubscribe(wt.last);
    sub.unsubscribe();
    assert.deepEqual(wt.last.events().map((f) => f.event), ['channel:subscribe', 'channel:unsubscribe']);
    ack(wt.last, frame, { channel: CH, offset: 0, epoch: '', recovered: false, publications: [] });
    assert.equal(sub.state, 'unsubscribed');
  });

  test('before any subscribe went out, nothing is sent', async () => {
    const { client, wt } = await connected();
    const sub = client.subscribe(CH);
    refuse(wt.last, lastSubscribe(wt.last), 'unavailable'); // waiting for its retry now
    sub.unsubscribe();
    const other = client.subscribe('news:other', { getToken: () => new Promise(() => {}) });
    other.unsubscribe(); // waiting for its token
    assert.deepEqual(wt.last.events().map((f) => f.event), ['channel:subscribe']);
  });

  test('offline nothing is sent; subscribe() again resumes from the position', async () => {
    const { client, clock, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    wt.last.drop();
    sub.unsubscribe();
    await clock.advance(1000);
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(wt.last.events(), []);
    sub.subscribe();
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 5, epoch: 'e1' } });
  });
});

describe('server-side subscriptions', () => {
  const subscribedPush = (data) => ({
    type: 'event',
    event: 'channel:subscribed',
    data: { channel: CH, offset: 0, epoch: '', recovered: false, publications: [], ...data },
  });

  /** Collects `server_subscribed`, recording each Subscription's events from that moment on. */
  function serverSubscribed(client) {
    const handed = [];
    client.on('server_subscribed', (sub) => handed.push({ sub, state: sub.state, rec: record(sub) }));
    return handed;
  }

  test('channel:subscribed makes a subscribed Subscription and delivers its publications in order', async () => {
    const { client, clock, wt } = await connected();
    const handed = serverSubscribed(client);
    wt.last.push(subscribedPush({
      offset: 7,
      epoch: 'e1',
      recovered: true,
      publications: [pub(6).data, pub(7).data],
    }));
    assert.equal(handed.length, 1);
    const [{ sub, state, rec }] = handed;
    assert.ok(sub instanceof Subscription);
    assert.equal(state, 'subscribing', 'handed over before it is subscribed, so no event is missed');
    assert.equal(client.subscription(CH), sub);
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.seen.map(([ev, a]) => [ev, ev === 'publication' ? a.offset : a]), [
      ['state', 'subscribed'],
      ['subscribed', { channel: CH, recovered: true, wasRecovering: false, offset: 7, epoch: 'e1' }],
      ['publication', 6],
      ['publication', 7],
    ]);
    assert.deepEqual(rec.seen.at(-1)[1], { channel: CH, offset: 7, data: { n: 7 } });
    assert.deepEqual([sub.offset, sub.epoch], [7, 'e1']);
    assert.deepEqual(wt.last.events('channel:subscribe'), [], 'the client asks for nothing');
    assert.deepEqual(await sub.ready(), sub.lastSubscribed);
    // Live publications follow, each once.
    wt.last.push(pub(7));
    wt.last.push(pub(8));
    assert.deepEqual(rec.offsets(), [6, 7, 8]);
    // After a reconnect it subscribes again with since, like one the app made.
    await reconnect(clock, wt);
    assert.equal(sub.state, 'subscribing');
    assert.deepEqual(lastSubscribe(wt.last).data, { channel: CH, since: { offset: 8, epoch: 'e1' } });
    ack(wt.last, lastSubscribe(wt.last), { channel: CH, offset: 9, epoch: 'e1', recovered: true, publications: [pub(9).data] });
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.offsets(), [6, 7, 8, 9]);
    assert.throws(() => client.subscribe(CH), (e) => e instanceof RtgateError && e.code === 'already_subscribed');
  });

  test("reuses the app's Subscription: its subscribe in flight is superseded, its refusal ignored", async () => {
    const { client, wt } = await connected();
    const handed = serverSubscribed(client);
    const sub = client.subscribe(CH);
    const rec = record(sub);
    const mine = lastSubscribe(wt.last);
    wt.last.push(subscribedPush({ offset: 3, epoch: 'e1' }));
    assert.equal(handed.length, 1);
    assert.equal(handed[0].sub, sub);
    assert.equal(sub.state, 'subscribed');
    // The server already had it: the app's own subscribe is refused, which changes nothing.
    refuse(wt.last, mine, 'already_subscribed');
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.of('error'), []);
    assert.deepEqual(rec.of('unsubscribed'), []);
    assert.deepEqual(rec.of('subscribed').map((c) => [c.offset, c.epoch]), [[3, 'e1']]);
    assert.equal(client.subscriptions().length, 1);
  });

  test('an already subscribed Subscription stays subscribed, without a state change', async () => {
    const { client, wt } = await connected();
    const sub = await subscribed(client, wt, { offset: 5, epoch: 'e1' });
    const rec = record(sub);
    wt.last.push(subscribedPush({ offset: 6, epoch: 'e1', recovered: true, publications: [pub(6).data] }));
    assert.deepEqual(rec.seen.map(([ev]) => ev), ['subscribed', 'publication']);
    assert.deepEqual(rec.offsets(), [6]);
    assert.equal(sub.state, 'subscribed');
  });

  test('an app unsubscribing in server_subscribed: nothing delivered, the server told', async () => {
    const { client, wt } = await connected();
    const seen = [];
    client.on('server_subscribed', (sub) => {
      sub.on('publication', (p) => seen.push(p.offset));
      client.removeSubscription(sub);
    });
    wt.last.push(subscribedPush({ offset: 1, epoch: 'e1', recovered: true, publications: [pub(1).data] }));
    assert.deepEqual(seen, []);
    assert.equal(client.subscription(CH), null);
    assert.deepEqual(wt.last.events('channel:unsubscribe').map((f) => f.data), [{ channel: CH }]);

    // The same from the app's own Subscription's `subscribing` listener.
    const sub = client.subscribe('news:other');
    await settle();
    ack(wt.last, lastSubscribe(wt.last), { channel: 'news:other', offset: 0, epoch: '', recovered: false, publications: [] });
    sub.unsubscribe();
    sub.on('subscribing', () => sub.unsubscribe());
    wt.last.push(subscribedPush({ channel: 'news:other' }));
    assert.equal(sub.state, 'unsubscribed');
  });

  test('server-side unsubscribe: unsubscribed, not resubscribed, also after a reconnect', async () => {
    const { client, clock, wt } = await connected();
    const handed = serverSubscribed(client);
    wt.last.push(subscribedPush({ offset: 2, epoch: 'e1' }));
    const [{ sub, rec }] = handed;
    wt.last.push({
      type: 'event', event: 'channel:unsubscribed',
      data: { channel: CH, code: 'unsubscribed', reason: 'unsubscribed by the backend', resubscribe: false },
    });
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(rec.of('unsubscribed'), [{ code: 'unsubscribed', reason: 'unsubscribed by the backend' }]);
    wt.last.push(pub(3));
    assert.deepEqual(rec.offsets(), []);
    await reconnect(clock, wt);
    assert.deepEqual(wt.last.events('channel:subscribe'), []);
    assert.equal(sub.state, 'unsubscribed');
    // A later server-side subscribe brings the same object back, from its position.
    wt.last.push(subscribedPush({ offset: 4, epoch: 'e1', recovered: true, publications: [pub(3).data, pub(4).data] }));
    assert.equal(handed[1].sub, sub);
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(rec.offsets(), [3, 4]);
  });
});
