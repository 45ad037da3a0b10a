// The single-file build (scripts/bundle.mjs → dist/rtgate.esm.js): the same exports as
// src/rtgate.js, the client working from it, and a bundler that refuses what it cannot handle
// instead of writing a wrong file.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';

import { bundle } from '../scripts/bundle.mjs';
import * as src from '../src/rtgate.js';
import { FakeClock, HELLO, fakeTransport, settle } from './fakes.js';

const dir = mkdtempSync(join(tmpdir(), 'rtgate-bundle-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Imports the single file built from `files` ({name: source}) with `entry`. */
async function build(files, entry = 'main.js') {
  const srcDir = mkdtempSync(join(dir, 'src-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(srcDir, name, '..'), { recursive: true });
    writeFileSync(join(srcDir, name), text);
  }
  const out = join(srcDir, 'out.mjs');
  writeFileSync(out, bundle({ srcDir, entry }));
  return import(pathToFileURL(out).href);
}

describe('the single-file build of src/', () => {
  let m;
  before(async () => {
    const out = join(dir, 'rtgate.esm.js');
    writeFileSync(out, bundle());
    m = await import(pathToFileURL(out).href);
  });

  test('exports the same names as src/rtgate.js, default included', () => {
    assert.deepEqual(Object.keys(m).sort(), Object.keys(src).sort());
    assert.equal(m.default, m.RtgateClient);
    assert.equal(m.PROTOCOL_VERSION, 1);
    for (const name of Object.keys(src)) assert.equal(typeof m[name], typeof src[name], name);
  });

  test('is one module: no import or export left but the final export list', async () => {
    const text = bundle();
    assert.doesNotMatch(text, /^import\b/m);
    assert.equal(text.match(/^export\b/gm).length, 1);
  });

  test('runs the client: handshake, request and ack, chat delivery, presence versions, channels', async () => {
    const clock = new FakeClock();
    const wt = fakeTransport('webtransport');
    const client = new m.RtgateClient({
      url: 'http://127.0.0.1:3000',
      certificateHash: 'none',
      clock,
      random: () => 0.5,
      token: 'tok',
      transports: { webtransport: wt.open },
      autoConnect: false,
    });
    client.connect();
    await settle();
    assert.deepEqual(wt.last.sent[0], { type: 'connect', v: 1, token: 'tok' });
    wt.last.push(HELLO);
    assert.equal(client.state, 'connected');

    const echo = client.request('sys:echo', { a: 1 });
    const bad = client.request('no:such');
    const [e1, e2] = wt.last.events();
    wt.last.push({ type: 'ack', id: e1.id, data: { a: 1 } });
    wt.last.push({ type: 'error', id: e2.id, code: 'unknown_event', message: 'x' });
    assert.deepEqual(await echo, { a: 1 });
    await assert.rejects(bad, (e) => e instanceof m.RtgateError && e.code === 'unknown_event');

    const conv = client.conversation('c1');
    const seqs = [];
    conv.on('message', (msg) => seqs.push(msg.seq));
    const joined = conv.join();
    const join = wt.last.events('conversation:join').at(-1);
    wt.last.push({ type: 'ack', id: join.id, data: { conversationId: 'c1', lastSeq: 0, recovered: 0, hasMore: false } });
    await joined;
    for (const seq of [1, 1, 2]) wt.last.push({ type: 'event', event: 'message:new', data: { conversationId: 'c1', seq } });
    assert.deepEqual(seqs, [1, 2]);

    const sub = client.presence.subscribe(['bob']);
    const s = wt.last.events('presence:subscribe').at(-1);
    wt.last.push({ type: 'event', event: 'presence:update', data: { userId: 'bob', status: 'online', version: 5 } });
    wt.last.push({ type: 'ack', id: s.id, data: { users: [{ userId: 'bob', online: false, devices: 0, version: 4 }] } });
    await sub;
    assert.equal(client.presence.get('bob').online, true);

    const news = client.subscribe('news:sports');
    assert.ok(news instanceof m.Subscription);
    const offsets = [];
    news.on('publication', (p) => offsets.push(p.offset));
    const c = wt.last.events('channel:subscribe').at(-1);
    wt.last.push({ type: 'ack', id: c.id, data: { channel: 'news:sports', offset: 1, epoch: 'e', recovered: false, publications: [] } });
    for (const offset of [1, 2, 2, 3]) {
      wt.last.push({ type: 'event', event: 'channel:publication', data: { channel: 'news:sports', offset, data: {} } });
    }
    assert.deepEqual(offsets, [2, 3]);

    wt.last.push({ type: 'disconnect', code: 3501, reason: 'invalid_token', reconnect: false });
    wt.last.drop(3501);
    await clock.advance(60000);
    assert.equal(client.state, 'disconnected');
    assert.equal(wt.calls, 1);
  });

  test('Backoff from the build spreads delays after the cap', () => {
    let i = 0;
    const b = new m.Backoff({}, () => [0, 0.999999][i++ % 2]);
    b.attempts = 20;
    assert.deepEqual([b.next(), b.next()], [5000, 15000]);
  });
});

describe('the bundler', () => {
  test('handles renamed, default and namespace imports, re-exports, and shared modules', async () => {
    const out = await build({
      'a.js': "export const A = 'a';\nexport default function named() { return 'd'; }\n",
      'lib/b.js': "import { A as renamed } from '../a.js';\nexport class B { get a() { return renamed; } }\n",
      'c.js': "import * as ns from './a.js';\nexport { B as Bee } from './lib/b.js';\nexport const fromNs = ns.A;\n",
      'main.js':
        "import dflt, { A } from './a.js';\n" + // a combined form the bundler does not read
        'export { A };\n',
    }).catch((err) => err);
    assert.match(String(out), /cannot read/);

    const ok = await build({
      'a.js': "export const A = 'a';\nexport default function named() { return 'd'; }\n",
      'lib/b.js': "import { A as renamed } from '../a.js';\nexport class B { get a() { return renamed; } }\n",
      'c.js': "import * as ns from './a.js';\nexport { B as Bee } from './lib/b.js';\nexport const fromNs = ns.A;\n",
      'main.js': [
        "import named from './a.js';",
        "import { Bee, fromNs } from './c.js';",
        "import { A } from './a.js';",
        'const local = 1;',
        'export { A, Bee, fromNs, local as one };',
        'export default named;',
        '',
      ].join('\n'),
    });
    assert.deepEqual(Object.keys(ok).sort(), ['A', 'Bee', 'default', 'fromNs', 'one']);
    assert.equal(new ok.Bee().a, 'a');
    assert.equal(ok.fromNs, 'a');
    assert.equal(ok.default(), 'd');
    assert.equal(ok.one, 1);
  });

  test('keeps modules apart: the same top-level name in two modules does not clash', async () => {
    const out = await build({
      'x.js': 'const secret = 1;\nexport const x = () => secret;\n',
      'main.js': "import { x } from './x.js';\nconst secret = 2;\nexport const both = () => [x(), secret];\n",
    });
    assert.deepEqual(out.both(), [1, 2]);
  });

  test('refuses dependencies, cycles, exported let, export *, and names not exported', () => {
    const refuse = (files, pattern) => {
      const srcDir = mkdtempSync(join(dir, 'bad-'));
      for (const [name, text] of Object.entries(files)) writeFileSync(join(srcDir, name), text);
      assert.throws(() => bundle({ srcDir, entry: 'main.js' }), pattern);
    };
    refuse({ 'main.js': "import { x } from 'some-package';\nexport { x };\n" }, /no dependencies/);
    refuse(
      { 'main.js': "import { b } from './b.js';\nexport const a = 1;\n", 'b.js': "import { a } from './main.js';\nexport const b = 2;\n" },
      /cycle/,
    );
    refuse({ 'main.js': 'export let n = 0;\n' }, /live binding/);
    refuse({ 'main.js': "export * from './b.js';\n", 'b.js': 'export const b = 1;\n' }, /cannot read/);
    refuse({ 'main.js': "import { nope } from './b.js';\nexport { nope };\n", 'b.js': 'export const b = 1;\n' }, /does not export/);
    refuse({ 'main.js': "export const f = () => import('./b.js');\n", 'b.js': '' }, /dynamic import/);
  });
});
