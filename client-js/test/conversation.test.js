import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import { RtgateClient, forgetTransportChoice } from '../src/rtgate.js';
import { FakeClock, HELLO, clientOptions, fakeTransport, settle } from './fakes.js';

const CONV = '0193a1c2-0000-7000-8000-000000000001';

function msg(seq, extra = {}) {
  return {
    id: `m${seq}`,
    conversationId: CONV,
    seq,
    senderId: 'bob',
    content: `hello ${seq}`,
    replyToId: null,
    clientMessageId: null,
    createdAt: seq,
    ...extra,
  };
}

/** A fake REST endpoint over `store` (seq -> message) that records its queries. */
function fakeRest(store) {
  const calls = [];
  const fetch = async (url, init) => {
    const u = new URL(url);
    calls.push({ path: u.pathname, query: Object.fromEntries(u.searchParams), auth: init?.headers?.Authorization });
    const after = Number(u.searchParams.get('after_seq') ?? 0);
    const before = Number(u.searchParams.get('before_seq') ?? Infinity);
    const limit = Number(u.searchParams.get('limit') ?? 50);
    const all = [...store.values()].filter((m) => m.seq > after && m.seq < before).sort((a, b) => a.seq - b.seq);
    const messages = all.slice(0, limit);
    return { ok: true, status: 200, json: async () => ({ messages, hasMore: all.length > limit }) };
  };
  return { fetch, calls };
}

async function connected(store = new Map()) {
  const clock = new FakeClock();
  const wt = fakeTransport('webtransport');
  const rest = fakeRest(store);
  const client = new RtgateClient(clientOptions(clock, { fetch: rest.fetch, transports: { webtransport: wt.open } }));
  client.connect();
  await settle();
  wt.last.push(HELLO);
  await settle();
  return { client, clock, wt, rest };
}

function ackLast(conn, event, data) {
  const f = conn.events(event).at(-1);
  conn.push({ type: 'ack', id: f.id, data });
  return f;
}

beforeEach(() => forgetTransportChoice());

describe('conversation', () => {
  test('delivers in seq order once: duplicates dropped, gaps filled over REST', async () => {
    const store = new Map([1, 2, 3, 4, 5, 6].map((s) => [s, msg(s)]));
    const { client, wt, rest } = await connected(store);
    const conv = client.conversation(CONV);
    const got = [];
    conv.on('message', (m) => got.push(m.seq));
    const joined = conv.join();
    ackLast(wt.last, 'conversation:join', { conversationId: CONV, lastSeq: 1, recovered: 0, hasMore: false });
    await joined;
    wt.last.push({ type: 'event', event: 'message:new', data: msg(2) });
    wt.last.push({ type: 'event', event: 'message:new', data: msg(2) }); // duplicate
    wt.last.push({ type: 'event', event: 'message:new', data: msg(5) }); // gap: 3, 4 missing
    wt.last.push({ type: 'event', event: 'message:new', data: msg(6) });
    await settle();
    assert.deepEqual(got, [2, 3, 4, 5, 6]);
    assert.equal(rest.calls.length, 1);
    assert.deepEqual(rest.calls[0].query, { after_seq: '2', before_seq: '5', limit: '200' });
    assert.equal(rest.calls[0].path, `/api/conversations/${CONV}/messages`);
    assert.equal(rest.calls[0].auth, 'Bearer tok');
  });

  test('rejoins with sinceSeq after a reconnect and shows recovered messages once', async () => {
    const store = new Map();
    const { client, clock, wt } = await connected(store);
    const conv = client.conversation(CONV);
    const got = [];
    conv.on('message', (m) => got.push(m.seq));
    const joined = conv.join();
    ackLast(wt.last, 'conversation:join', { conversationId: CONV, lastSeq: 0, recovered: 0, hasMore: false });
    await joined;
    wt.last.push({ type: 'event', event: 'message:new', data: msg(1) });
    wt.last.drop();
    await clock.advance(1000);
    await settle();
    wt.last.push(HELLO);
    await settle();
    const rejoin = wt.last.events('conversation:join')[0];
    assert.deepEqual(rejoin.data, { conversationId: CONV, sinceSeq: 1 });
    // Recovery arrives before the ack, then the ack, then a live message and a late duplicate.
    wt.last.push({ type: 'event', event: 'message:new', data: msg(2) });
    wt.last.push({ type: 'event', event: 'message:new', data: msg(3) });
    wt.last.push({ type: 'ack', id: rejoin.id, data: { conversationId: CONV, lastSeq: 3, recovered: 2, hasMore: false } });
    wt.last.push({ type: 'event', event: 'message:new', data: msg(4) });
    wt.last.push({ type: 'event', event: 'message:new', data: msg(3) });
    await settle();
    assert.deepEqual(got, [1, 2, 3, 4]);
  });

  test('recovery truncated by the server (hasMore) is completed over REST', async () => {
    const store = new Map(Array.from({ length: 300 }, (_, i) => [i + 1, msg(i + 1)]));
    const { client, clock, wt, rest } = await connected(store);
    const conv = client.conversation(CONV);
    const got = [];
    conv.on('message', (m) => got.push(m.seq));
    conv.join();
    ackLast(wt.last, 'conversation:join', { conversationId: CONV, lastSeq: 0, recovered: 0, hasMore: false });
    await settle();
    wt.last.drop();
    await clock.advance(1000);
    wt.last.push(HELLO);
    await settle();
    // The server pushes only the newest 100 (201..300).
    for (let s = 201; s <= 300; s++) wt.last.push({ type: 'event', event: 'message:new', data: msg(s) });
    ackLast(wt.last, 'conversation:join', { conversationId: CONV, lastSeq: 300, recovered: 100, hasMore: true });
    await settle(20);
    assert.deepEqual(got, Array.from({ length: 300 }, (_, i) => i + 1));
    assert.equal(rest.calls[0].query.after_seq, '0');
    assert.equal(rest.calls[0].query.before_seq, '201');
  });

  test('send carries a clientMessageId and is retried with the same one after a drop', async () => {
    const { client, clock, wt } = await connected();
    const conv = client.conversation(CONV);
    const sent = conv.send('hi <b>there</b>');
    const first = wt.last.events('message:send')[0];
    assert.match(first.data.clientMessageId, /^[A-Za-z0-9:._-]{1,64}$/);
    assert.equal(first.data.content, 'hi <b>there</b>');
    wt.last.drop();
    await clock.advance(1000);
    wt.last.push(HELLO);
    await settle();
    const retry = wt.last.events('message:send')[0];
    assert.equal(retry.data.clientMessageId, first.data.clientMessageId);
    wt.last.push({ type: 'ack', id: retry.id, data: { id: 'm1', seq: 1, createdAt: 1, duplicate: true } });
    assert.equal((await sent).duplicate, true);
  });

  test('typing is volatile and only for a joined conversation', async () => {
    const { client, wt } = await connected();
    const conv = client.conversation(CONV);
    assert.equal(conv.typing(true), false);
    conv.join();
    assert.equal(conv.typing(true), true);
    assert.deepEqual(wt.last.volatile.at(-1).data, { conversationId: CONV, isTyping: true });
    const seen = [];
    conv.on('typing', (t) => seen.push(t));
    wt.last.push({ type: 'event', event: 'typing', data: { conversationId: CONV, userId: 'bob', isTyping: true } });
    assert.equal(seen[0].userId, 'bob');
  });

  test('a join issued offline happens on connect, before queued sends', async () => {
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
    const conv = client.conversation(CONV);
    conv.join();
    conv.send('queued');
    client.connect();
    await settle();
    wt.last.push(HELLO);
    await settle();
    assert.deepEqual(
      wt.last.events().map((f) => f.event),
      ['conversation:join', 'message:send'],
    );
  });
});

test('a join whose answer was lost is sent once more after the reconnect, not twice', async () => {
  const { client, clock, wt } = await connected();
  const conv = client.conversation(CONV);
  const joined = conv.join();
  wt.last.drop();
  await clock.advance(1000);
  wt.last.push(HELLO);
  await settle();
  const joins = wt.last.events('conversation:join');
  assert.equal(joins.length, 1);
  wt.last.push({ type: 'ack', id: joins[0].id, data: { conversationId: CONV, lastSeq: 7, recovered: 0, hasMore: false } });
  assert.equal((await joined).lastSeq, 7);
  assert.equal(conv.lastSeq, 7);
});
