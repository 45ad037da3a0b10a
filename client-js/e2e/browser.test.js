// The client in real browsers (headless Chromium and Firefox, see engines.js) against the real
// rtgate binary: WebTransport with the dev certificate hash, the WebSocket fallback, reconnecting
// across a server restart, terminal refusals, and text rendering of hostile strings. Every case
// runs once per engine.
// Screenshots of the demo in each state go to SHOTS (see harness.js; Firefox's are firefox-*.png).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { describeEngines } from './engines.js';
import { Server, token, waitState } from './harness.js';

async function echo(page, data) {
  return page.evaluate((d) => window.rtgateDemo.client.request('sys:echo', d), data);
}

describeEngines((b) => {
  describe('transports', () => {
    let server;
    before(async () => {
      server = new Server();
      await server.start();
    });
    after(async () => server?.dispose());

    test('connects over WebTransport using the certificate hash', async () => {
      const { page, errors } = await b.openDemo(server, token('alice'));
      await waitState(page, 'connected');
      assert.equal(await page.textContent('#transport'), 'via webtransport');
      assert.equal(await page.textContent('#status-text'), 'connected');
      assert.deepEqual(await echo(page, { hello: 'wt' }), { hello: 'wt' });
      // Volatile path: a datagram round trip through sys:volatile-echo.
      const pushed = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const c = window.rtgateDemo.client;
            c.onEvent('sys:volatile-echo', resolve);
            c.request('sys:volatile-echo', { typing: true });
          }),
      );
      assert.deepEqual(pushed, { typing: true });
      await page.screenshot({ path: b.shot('connected.png') });
      assert.deepEqual(errors, []);
      await page.close();
    });

    // Chromium used to reject this at times with "Connection lost": the QUIC close overtook the
    // capsule on its way up to the page. The server's driver now holds the QUIC close for a
    // moment after the browser answers the capsule (vendor/README.md, patch 4).
    test('a server-ended session resolves WebTransport.closed with its code and reason', async () => {
      // The raw browser API, no client library: the CLOSE_WEBTRANSPORT_SESSION capsule is what
      // puts the code into WebTransportCloseInfo (a bare QUIC close rejects `closed` instead).
      const { page, errors } = await b.newPage(server);
      await page.goto(`${server.origin}/?wtPort=${server.wtPort}`);
      const info = await page.evaluate(
        async ([wtPort, hex]) => {
          const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
          const wt = new WebTransport(`https://127.0.0.1:${wtPort}/wt`, {
            serverCertificateHashes: [{ algorithm: 'sha-256', value: bytes }],
          });
          await wt.ready;
          const stream = await wt.createBidirectionalStream();
          const body = new TextEncoder().encode(JSON.stringify({ type: 'connect', v: 1, token: 'not-a-jwt' }));
          const frame = new Uint8Array(4 + body.length);
          new DataView(frame.buffer).setUint32(0, body.length);
          frame.set(body, 4);
          const writer = stream.writable.getWriter();
          await writer.write(frame);
          // Drain the frames the server sends first (error, disconnect).
          const reader = stream.readable.getReader();
          (async () => {
            try {
              while (!(await reader.read()).done);
            } catch {}
          })();
          try {
            const closed = await wt.closed;
            return { resolved: true, closeCode: closed.closeCode, reason: closed.reason };
          } catch (e) {
            return { resolved: false, error: String(e) };
          }
        },
        [server.wtPort, server.certHex],
      );
      assert.deepEqual(info, { resolved: true, closeCode: 3501, reason: 'invalid_token' });
      assert.deepEqual(errors, []);
      await page.close();
    });

    test('falls back to WebSocket when the browser has no WebTransport', async () => {
      const { page, errors } = await b.openDemo(server, token('bob'), {
        initScript: () => {
          delete window.WebTransport;
        },
      });
      await waitState(page, 'connected');
      assert.equal(await page.textContent('#transport'), 'via websocket');
      assert.deepEqual(await echo(page, [1, 'ws']), [1, 'ws']);
      assert.deepEqual(errors, []);
      await page.close();
    });

    test('the transport option forces WebSocket', async () => {
      const { page } = await b.openDemo(server, token('carol'), { query: '&transport=websocket' });
      await waitState(page, 'connected');
      assert.equal(await page.textContent('#transport'), 'via websocket');
      await page.close();
    });

    test('falls back to WebSocket when WebTransport cannot open (UDP port closed)', async () => {
      const { page } = await b.openDemo(server, token('dave'));
      // Point WebTransport at a port nothing listens on before connecting again.
      await waitState(page, 'connected');
      const transport = await page.evaluate(async (wtPort) => {
        const { RtgateClient } = await import('/client/rtgate.js');
        const c = new RtgateClient({
          token: document.getElementById('token').value.trim(),
          wtPort,
          wtOpenTimeout: 3000,
        });
        await new Promise((r) => c.once('connect', r));
        const kind = c.transport;
        c.disconnect();
        return kind;
      }, 9);
      assert.equal(transport, 'websocket');
      await page.close();
    });

    test('an invalid token ends in red "disconnected", "sign in again", with no reconnect', async () => {
      const { page } = await b.openDemo(server, 'not-a-jwt');
      await waitState(page, 'disconnected');
      await page.waitForFunction(() => document.getElementById('status-text').textContent.includes('invalid_token'));
      assert.equal(await page.textContent('#status-text'), 'disconnected: invalid_token (3501) — sign in again');
      assert.match(await page.textContent('#signin-hint'), /refused this token \(invalid_token\).*Connect/);
      await page.sleep(1500);
      assert.equal(await page.getAttribute('#status', 'data-state'), 'disconnected');
      await page.screenshot({ path: b.shot('disconnected.png') });
      await page.close();
    });
  });

  describe('reconnection', () => {
    let server;
    before(async () => {
      server = new Server(['--shutdown-grace', '2s', '--shutdown-reconnect-spread', '500ms']);
      await server.start();
    });
    after(async () => server?.dispose());

    test('the page reconnects by itself after the server restarts on the same ports', async () => {
      const { page, errors } = await b.openDemo(server, token('erin'));
      await waitState(page, 'connected');
      const firstCert = server.certHex;
      await server.stop();
      await waitState(page, 'reconnecting');
      // Let at least one attempt fail against the stopped server.
      await page.waitForFunction(() => window.rtgateDemo.attempt >= 2, null, { timeout: 15000 });
      assert.match(await page.textContent('#status-text'), /^reconnecting \(attempt \d+\)$/);
      await page.screenshot({ path: b.shot('reconnecting.png') });
      await server.start();
      assert.notEqual(server.certHex, firstCert, 'a restart makes a new dev certificate');
      await waitState(page, 'connected', 30000);
      // Back on WebTransport: the client fetched the new certificate hash.
      assert.equal(await page.textContent('#transport'), 'via webtransport');
      assert.deepEqual(await echo(page, 'after restart'), 'after restart');
      assert.deepEqual(errors, []);
      await page.close();
    });
  });

  describe('rendering', () => {
    let server;
    before(async () => {
      server = new Server();
      await server.start();
    });
    after(async () => server?.dispose());

    test('a hostile user id is shown as text and runs nothing', async () => {
      // The JWT `sub` comes back in `connected.userId` and the page shows it.
      const payload = '<img src=x onerror="window.__xss=1">';
      const { page, errors } = await b.openDemo(server, token(payload));
      await waitState(page, 'connected');
      assert.equal(await page.textContent('#user'), `as ${payload}`);
      assert.equal(await page.count('header img'), 0);
      await page.sleep(300);
      assert.equal(await page.evaluate(() => window.__xss), undefined);
      assert.deepEqual(errors, []);
      await page.close();
    });
  });
});
