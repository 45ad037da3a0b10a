// The demo page's own behaviour against the real server: one interval timer however often it
// connects, presence shown as unknown while this client is not connected, messages typed offline
// kept in view until stored, conversations the user is added to, and a refused token ending in
// "sign in again" instead of a reconnect loop.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Server, clientPage, countIntervals, launchBrowser, openDemo, rest, token, waitState } from './harness.js';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});


/** Alice creates a conversation with `members` in the demo UI and has joined it. */
async function createAndJoin(page, members) {
  await page.fill('#new-members', members);
  await page.click('#create');
  await page.waitForFunction(() => window.rtgateDemo.conversation?.joined && window.rtgateDemo.conversation.lastSeq !== null);
  return page.inputValue('#conv-id');
}

/** Drops the page's connection as a network failure would; the client reconnects by itself. */
async function dropConnection(page) {
  await page.evaluate(() => window.rtgateDemo.client._conn.close(1000, 'dropped by the test'));
}

describe('demo', () => {
  let server;
  before(async () => {
    server = new Server();
    await server.start();
  });
  after(async () => server.dispose());

  test('keeps one interval timer through connects, disconnects, reconnects and events', async () => {
    const { page, context, errors } = await openDemo(browser, server, token('ivy'), { initScript: countIntervals });
    await waitState(page, 'connected');
    await createAndJoin(page, 'bob');
    for (let i = 0; i < 3; i++) {
      await page.click('#disconnect');
      await waitState(page, 'disconnected');
      await page.click('#connect');
      await waitState(page, 'connected');
    }
    await dropConnection(page); // disconnect, reconnect_attempt, reconnect
    await waitState(page, 'reconnecting');
    await waitState(page, 'connected');
    // One of the page's own (the typing sweep) at most, whatever happened before.
    const live = await page.evaluate(() => window.__liveIntervals());
    assert.ok(live <= 1, `${live} intervals are running`);
    assert.deepEqual(errors, []);
    await context.close();
  });

  test('presence dots are unknown while this client reconnects and after Disconnect', async () => {
    const { page, context, errors } = await openDemo(browser, server, token('alice'));
    await waitState(page, 'connected');
    await createAndJoin(page, 'bob');
    const bob = await clientPage(browser, server, token('bob'));
    const bobDot = '#members li[data-user-id="bob"]';
    await page.waitForSelector(`${bobDot}.online`);

    await page.evaluate(() => {
      // Time to look at the page while it is reconnecting: the first attempt 3 s after the drop
      // (randomization 0 would make it immediate; a fixed draw of 0.5 with randomization 1 gives
      // exactly the base).
      const { backoff } = window.rtgateDemo.client;
      Object.assign(backoff.opts, { initialDelay: 3000, randomization: 1 });
      backoff.random = () => 0.5;
    });
    await dropConnection(page);
    await waitState(page, 'reconnecting');
    assert.equal(await page.locator(`${bobDot}.online`).count(), 0, 'not green while reconnecting');
    assert.equal(await page.getAttribute(bobDot, 'data-presence'), 'unknown');
    await waitState(page, 'connected');
    await page.waitForSelector(`${bobDot}.online`);

    await page.click('#disconnect');
    await waitState(page, 'disconnected');
    assert.equal(await page.locator(`${bobDot}.online`).count(), 0, 'not green after Disconnect');
    assert.equal(await page.getAttribute(bobDot, 'data-presence'), 'unknown');
    assert.equal(await page.getAttribute(bobDot, 'title'), 'unknown (not connected)');
    assert.deepEqual(errors, []);
    await bob.context.close();
    await context.close();
  });

  test('a message typed while offline stays in view as "sending…", then shows once as sent', async () => {
    const { page, context, errors } = await openDemo(browser, server, token('alice'));
    await waitState(page, 'connected');
    await createAndJoin(page, 'bob');
    await page.click('#disconnect');
    await waitState(page, 'disconnected');

    await page.fill('#compose', 'typed while offline');
    await page.click('#send');
    const item = page.locator('#messages li', { hasText: 'typed while offline' });
    await item.waitFor({ timeout: 5000 });
    assert.equal(await item.getAttribute('data-status'), 'sending');
    assert.equal(await item.locator('.status').textContent(), 'sending…');

    await page.click('#connect');
    await waitState(page, 'connected');
    await page.waitForSelector('#messages li[data-status="sent"]');
    // Let the echo of the message (message:new) arrive too: it must not add a second copy.
    await page.waitForFunction(() => window.rtgateDemo.conversation.lastSeq === 1);
    const items = await page.$$eval('#messages li', (els) =>
      els.map((e) => [e.dataset.seq, e.dataset.status, e.querySelector('.content').textContent]),
    );
    assert.deepEqual(items, [['1', 'sent', 'typed while offline']]);
    assert.deepEqual(errors, []);
    await context.close();
  });

  test('a user added to a conversation sees it and opens it without pasting its id', async () => {
    const aliceToken = token('alice');
    const { page, context, errors } = await openDemo(browser, server, token('carol'));
    await waitState(page, 'connected');
    const title = '<img src=x onerror="window.__xss=1"> plans';
    const created = await rest(server, aliceToken, 'POST', '/api/conversations', { title, members: ['carol'] });

    // Pushed as conversation:added while connected.
    const entry = page.locator(`#conversations li[data-conversation-id="${created.id}"]`);
    await entry.waitFor({ timeout: 10000 });
    assert.equal(await entry.locator('button').textContent(), title);
    assert.equal(await page.locator('#conversations img').count(), 0);

    // Listed from GET /api/conversations after a connect, for what was missed while away.
    await page.click('#disconnect');
    await waitState(page, 'disconnected');
    const missed = await rest(server, aliceToken, 'POST', '/api/conversations', { title: 'while away', members: ['carol'] });
    await page.click('#connect');
    await waitState(page, 'connected');
    await page.locator(`#conversations li[data-conversation-id="${missed.id}"]`).waitFor({ timeout: 10000 });

    await entry.locator('button').click();
    await page.waitForFunction((id) => window.rtgateDemo.conversation?.id === id && window.rtgateDemo.conversation.joined, created.id);
    const alice = await clientPage(browser, server, aliceToken);
    await alice.send(created.id, 'hello carol');
    await page.locator('#messages li', { hasText: 'hello carol' }).waitFor({ timeout: 10000 });
    assert.equal(await page.textContent('#conv-title'), title);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.deepEqual(errors, []);
    await alice.context.close();
    await context.close();
  });
});

describe('refused tokens in the demo', () => {
  let server;
  before(async () => {
    // No leeway: a token expires when its `exp` says.
    server = new Server(['--jwt-leeway', '0s']);
    await server.start();
  });
  after(async () => server.dispose());

  test('an expired token ends in "sign in again", not in a reconnect loop', async () => {
    const { page, context, errors } = await openDemo(browser, server, token('dora', '--ttl', '3s'));
    await waitState(page, 'connected');
    // The session ends with token_expired; the page's token is the same one.
    await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('sign in again'), null, {
      timeout: 15000,
    });
    assert.equal(await page.textContent('#status-text'), 'disconnected: token_expired (3002) — sign in again');
    assert.equal(await page.isVisible('#signin-hint'), true);
    const attempts = await page.evaluate(() => window.rtgateDemo.attempt);
    await page.waitForTimeout(4000);
    assert.equal(await page.getAttribute('#status', 'data-state'), 'disconnected');
    assert.equal(await page.evaluate(() => window.rtgateDemo.attempt), attempts, 'no further attempts');

    // Signing in again: a fresh token and Connect.
    await page.fill('#token', token('dora'));
    await page.click('#connect');
    await waitState(page, 'connected');
    assert.equal(await page.isVisible('#signin-hint'), false);
    assert.deepEqual(errors, []);
    await context.close();
  });
});
