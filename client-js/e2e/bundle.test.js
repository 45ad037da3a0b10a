// The single-file build in a browser: a page with no bundler, served by a tiny HTTP server of its
// own on loopback, loads dist's rtgate.esm.js (built here from src/) with <script type="module">,
// sees the same exports as src/rtgate.js, and talks to the real server with it (another origin:
// WebTransport with the dev certificate hash from /cert-hash, which allows any origin).

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { bundle } from '../scripts/bundle.mjs';
import * as src from '../src/rtgate.js';
import { Server, launchBrowser, token } from './harness.js';

let browser;
let server;
let site;
before(async () => {
  browser = await launchBrowser();
  server = new Server();
  await server.start();
  const js = bundle();
  site = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/rtgate.esm.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      return res.end(js);
    }
    if (url.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(`<!doctype html><meta charset="utf-8"><title>bundle</title>
<script type="module">
  import * as rtgate from '/rtgate.esm.js';
  import RtgateClient from '/rtgate.esm.js';
  window.exportsSeen = Object.keys(rtgate);
  window.defaultIsClient = RtgateClient === rtgate.RtgateClient;
  window.ready = true;
</script>`);
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
});
after(async () => {
  await browser?.close();
  await server?.dispose();
  await new Promise((r) => (site ? site.close(r) : r()));
});

describe('single-file build', () => {
  test('loads from <script type="module">, exports what src/rtgate.js does, and connects', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    await page.goto(`http://127.0.0.1:${site.address().port}/`);
    await page.waitForFunction(() => window.ready === true);
    assert.deepEqual(await page.evaluate(() => window.exportsSeen), Object.keys(src));
    assert.equal(await page.evaluate(() => window.defaultIsClient), true);

    const result = await page.evaluate(
      async ([url, wtPort, tok]) => {
        const { RtgateClient } = await import('/rtgate.esm.js');
        const c = new RtgateClient({ url, wtPort, token: tok });
        const { transport } = await new Promise((r) => c.once('connect', r));
        const echo = await c.request('sys:echo', { via: 'single file' });
        c.disconnect();
        return { transport, echo, state: c.state };
      },
      [server.origin, server.wtPort, token('bundle-user')],
    );
    assert.deepEqual(result, { transport: 'webtransport', echo: { via: 'single file' }, state: 'disconnected' });
    assert.deepEqual(errors, []);
    await context.close();
  });
});
