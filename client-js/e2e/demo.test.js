// The demo page's own behaviour against the real server: one interval timer however often it
// connects, and a refused token ending in "sign in again" instead of a reconnect loop.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Server, launchBrowser, openDemo, token, waitState } from './harness.js';

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Counts the page's live intervals: installed before the demo's own scripts run. */
function countIntervals() {
  const live = new Set();
  const set = window.setInterval.bind(window);
  const clear = window.clearInterval.bind(window);
  window.setInterval = (...args) => {
    const id = set(...args);
    live.add(id);
    return id;
  };
  window.clearInterval = (id) => {
    live.delete(id);
    return clear(id);
  };
  window.__liveIntervals = () => live.size;
}

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
