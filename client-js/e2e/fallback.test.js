// The transport race in a real browser against the real rtgate binary: with UDP black-holed
// WebSocket takes over within 1.5 s, on a working network WebTransport is chosen, a WebTransport
// failure is remembered per origin and forgotten once a background probe gets through, and a
// WebTransport session whose server was killed and restarted is noticed through the empty
// datagrams the client sends into the silence, and the client is back within 2 s of the restarted
// server's READY line (the first reconnect attempt waits 0–1 s).
//
// Every case runs once per engine (Chromium and Firefox, see engines.js), each engine with its own
// server. The pages are driven with `page.goto`, `page.evaluate(fn, oneArgument)` and `page.close()`
// only, and poll inside the page rather than through the driver.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, describe, test } from 'node:test';

import { describeEngines } from './engines.js';
import { Server, token } from './harness.js';

/**
 * A UDP port on 127.0.0.1 that reads every packet and either drops it (`mode = 'drop'`: a black
 * hole, as a network that blocks UDP looks to a browser) or relays it to `target` and the answers
 * back (`mode = 'relay'`), one upstream socket per client address.
 */
class UdpPort {
  constructor(target) {
    this.target = target;
    this.mode = 'drop';
    this.received = 0;
    this.socket = dgram.createSocket('udp4');
    this.upstream = new Map(); // "address:port" of a client -> socket towards the target
  }

  async open() {
    await new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(0, '127.0.0.1', resolve);
    });
    this.socket.on('message', (msg, from) => this._onMessage(msg, from));
    this.port = this.socket.address().port;
    return this;
  }

  _onMessage(msg, from) {
    this.received += 1;
    if (this.mode !== 'relay') return;
    const key = `${from.address}:${from.port}`;
    let up = this.upstream.get(key);
    if (!up) {
      up = dgram.createSocket('udp4');
      up.on('message', (answer) => this.socket.send(answer, from.port, from.address));
      up.on('error', () => {});
      up.bind(0, '127.0.0.1');
      this.upstream.set(key, up);
    }
    up.send(msg, this.target.port, this.target.host);
  }

  close() {
    for (const up of this.upstream.values()) up.close();
    this.socket.close();
  }
}

/**
 * A page of the server's origin with the client loaded as `window.rt`, every WebTransport and
 * WebSocket the page constructs logged in `window.opened` (kind, URL, time), and uncaught errors
 * and unhandled rejections in `window.pageErrors`. `b`: the engine (describeEngines).
 */
async function openPage(b, srv) {
  const { page } = await b.newPage(srv);
  await page.goto(`${srv.origin}/`);
  await page.evaluate(async () => {
    window.rt = await import('/client/rtgate.js');
    window.rt.forgetTransportChoice();
    window.pageErrors = [];
    window.addEventListener('error', (e) => window.pageErrors.push(String(e.message)));
    window.addEventListener('unhandledrejection', (e) => window.pageErrors.push(String(e.reason?.message ?? e.reason)));
    window.opened = [];
    const log = (kind, url) => window.opened.push({ kind, url: String(url), at: performance.now() });
    const WT = window.WebTransport;
    window.WebTransport = class extends WT {
      constructor(url, options) {
        super(url, options);
        log('webtransport', url);
      }
    };
    const WS = window.WebSocket;
    window.WebSocket = class extends WS {
      constructor(url, protocols) {
        super(url, protocols);
        log('websocket', url);
      }
    };
    /** Resolves when `c` emits `connect`, rejects after `ms`. */
    window.connected = (c, ms = 15000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not connected within ${ms} ms (${c.state})`)), ms);
        c.once('connect', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    /** Polls `fn` every 20 ms until it is truthy; rejects with `what` after `ms`. */
    window.until = async (fn, what, ms = 15000) => {
      const end = performance.now() + ms;
      while (!fn()) {
        if (performance.now() > end) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
  });
  return page;
}

describeEngines((b) => {
  let server;
  before(async () => {
    server = new Server();
    await server.start();
  });
  after(async () => {
    await server?.dispose();
  });

  describe('transport race and failure memory', () => {
    let blackHole;
    let page;
    before(async () => {
      blackHole = await new UdpPort({ host: '127.0.0.1', port: server.wtPort }).open();
      page = await openPage(b, server);
    });
    after(async () => {
      await page?.close();
      blackHole?.close();
    });

    test('with UDP black-holed, connected over WebSocket within 1.5 s', async () => {
      const r = await page.evaluate(
        async ({ tok, wtPort }) => {
          const t0 = performance.now();
          const c = new window.rt.RtgateClient({ token: tok, wtPort });
          const errors = [];
          c.on('error', (e) => errors.push(e.code));
          await window.connected(c);
          const ms = performance.now() - t0;
          const echo = await c.request('sys:echo', 'over ws');
          // Long enough for the abandoned WebTransport to have been given up (wtOpenTimeout).
          await new Promise((res) => setTimeout(res, 500));
          const out = {
            ms,
            transport: c.transport,
            echo,
            errors,
            opened: window.opened.map((o) => ({ kind: o.kind, at: o.at - t0 })),
            remembered: localStorage.getItem(`rtgate:wt-failed:https://127.0.0.1:${wtPort}`),
            state: c.state,
          };
          window.first = c;
          return out;
        },
        { tok: token('eve'), wtPort: blackHole.port },
      );
      console.log(`# ${b.name}: black-holed UDP: connected over ${r.transport} in ${r.ms.toFixed(0)} ms`);
      assert.equal(r.transport, 'websocket');
      assert.ok(r.ms < 1500, `connected after ${r.ms} ms`);
      assert.equal(r.echo, 'over ws');
      assert.deepEqual(r.errors, [], 'a slow WebTransport that lost the race is not an error');
      assert.deepEqual(r.opened.map((o) => o.kind), ['webtransport', 'websocket']);
      assert.ok(r.opened[1].at - r.opened[0].at >= 290, 'WebSocket only after wtFallbackDelay');
      assert.ok(blackHole.received > 0, 'WebTransport did try the black hole');
      assert.ok(Number(r.remembered) > 0, 'the failure is remembered in localStorage');
      assert.equal(r.state, 'connected', 'and the loser did not end the session');
    });

    test('the same page on the working port chooses WebTransport', async () => {
      const r = await page.evaluate(
        async ({ tok, wtPort }) => {
          const t0 = performance.now();
          const from = window.opened.length;
          const c = new window.rt.RtgateClient({ token: tok, wtPort });
          await window.connected(c);
          const ms = performance.now() - t0;
          const echo = await c.request('sys:echo', 'over wt');
          const out = { ms, transport: c.transport, echo, opened: window.opened.slice(from).map((o) => o.kind) };
          c.disconnect();
          return out;
        },
        { tok: token('frank'), wtPort: server.wtPort },
      );
      console.log(`# ${b.name}: working UDP: connected over ${r.transport} in ${r.ms.toFixed(0)} ms`);
      assert.equal(r.transport, 'webtransport');
      assert.equal(r.echo, 'over wt');
      assert.deepEqual(r.opened, ['webtransport'], 'WebTransport opened before the fallback delay');
    });

    test('the failure is remembered: the next client goes straight to WebSocket; a probe that gets through forgets it', async () => {
      const wtPort = blackHole.port;
      const r1 = await page.evaluate(
        async ({ tok, wtPort: port }) => {
          const from = window.opened.length;
          const t0 = performance.now();
          const c = new window.rt.RtgateClient({ token: tok, wtPort: port, wtRetryInterval: 1000, wtOpenTimeout: 1000 });
          window.second = c;
          await window.connected(c);
          return {
            ms: performance.now() - t0,
            transport: c.transport,
            opened: window.opened.slice(from).map((o) => o.kind),
          };
        },
        { tok: token('grace'), wtPort },
      );
      console.log(`# ${b.name}: failure remembered: the next client connected over ${r1.transport} in ${r1.ms.toFixed(0)} ms`);
      assert.equal(r1.transport, 'websocket');
      assert.deepEqual(r1.opened, ['websocket'], 'no WebTransport (and so no fallback delay) before the connect');

      // UDP gets through again: the port now relays to the server's WebTransport port.
      blackHole.mode = 'relay';
      const r2 = await page.evaluate(
        async ({ wtPort: port }) => {
          const key = `rtgate:wt-failed:https://127.0.0.1:${port}`;
          const from = window.opened.length;
          const t0 = performance.now();
          await window.until(() => localStorage.getItem(key) === null, 'the failure forgotten');
          const c = window.second;
          const out = {
            forgottenAfter: performance.now() - t0,
            probes: window.opened.slice(from).filter((o) => o.kind === 'webtransport').length,
            still: [c.state, c.transport, window.first.state, window.first.transport],
          };
          // The next connect races again, and WebTransport wins.
          c.disconnect();
          c.connect();
          await window.connected(c);
          out.reconnected = c.transport;
          out.echo = await c.request('sys:echo', 'through the relay');
          c.disconnect();
          window.first.disconnect();
          await new Promise((res) => setTimeout(res, 200));
          out.pageErrors = window.pageErrors;
          return out;
        },
        { wtPort },
      );
      console.log(`# ${b.name}: failure forgotten ${r2.forgottenAfter.toFixed(0)} ms after UDP came back (${r2.probes} probe(s))`);
      assert.ok(r2.probes >= 1);
      assert.deepEqual(r2.still, ['connected', 'websocket', 'connected', 'websocket'], 'the WebSocket sessions stay up');
      assert.equal(r2.reconnected, 'webtransport');
      assert.equal(r2.echo, 'through the relay');
      assert.deepEqual(r2.pageErrors, []);
    });
  });

  describe('a silent WebTransport session', () => {
    test('after kill -9 and a restart on the same ports, the client notices within about a second and reconnects', async () => {
      const restarted = new Server();
      await restarted.start();
      const page = await openPage(b, restarted);
      try {
        await page.evaluate(
          async ({ tok, wtPort }) => {
            // A token from getToken at every connect; the server's heartbeat (25 s + 20 s) would
            // take 45 s to notice.
            const c = new window.rt.RtgateClient({ getToken: () => tok, wtPort });
            window.c = c;
            window.events = [];
            // `epoch` (Date.now) compares with the test's own clock: the server's READY line.
            const note = (e) => window.events.push({ ...e, at: performance.now(), epoch: Date.now() });
            c.on('disconnect', (reason, code) => note({ what: 'disconnect', reason, code }));
            c.on('connect', ({ transport }) => note({ what: 'connect', transport }));
            c.on('reconnect_attempt', (n, delay) => note({ what: 'attempt', n, delay }));
            await window.connected(c);
            if (c.transport !== 'webtransport') throw new Error(`connected over ${c.transport}`);
          },
          { tok: token('heidi'), wtPort: restarted.wtPort },
        );
        // kill -9: no goodbye, the browser's QUIC connection is left to a server that forgot it.
        const proc = restarted.proc;
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await exited;
        restarted.proc = null;
        // While it is down, the port stays silent (no ICMP "port unreachable" for the browser to
        // act on): only the restarted server's stateless reset can tell the browser.
        const silent = dgram.createSocket('udp4');
        await new Promise((resolve) => silent.bind(restarted.wtPort, '127.0.0.1', resolve));
        await new Promise((resolve) => setTimeout(resolve, 2000));
        await new Promise((resolve) => silent.close(resolve));
        await restarted.start();
        const readyAt = Date.now(); // start() resolves on the READY line
        const r = await page.evaluate(async () => {
          const t0 = performance.now(); // the restarted server is answering
          await window.until(() => window.events.some((e) => e.what === 'disconnect'), 'the close noticed', 20000);
          const gone = window.events.find((e) => e.what === 'disconnect');
          await window.until(() => window.events.filter((e) => e.what === 'connect').length >= 2, 'reconnected', 20000);
          const back = window.events.filter((e) => e.what === 'connect')[1];
          const attempts = window.events.filter((e) => e.what === 'attempt').map((e) => e.delay);
          const echo = await window.c.request('sys:echo', 'after restart');
          window.c.disconnect();
          return {
            noticedAfter: gone.at - t0,
            noticedAt: gone.epoch,
            reason: gone.reason,
            reconnectedAfter: back.at - t0,
            reconnectedAt: back.epoch,
            transport: back.transport,
            attempts,
            echo,
            pageErrors: window.pageErrors,
          };
        });
        const noticedAfterReady = r.noticedAt - readyAt;
        const reconnectedAfterReady = r.reconnectedAt - readyAt;
        console.log(
          `# ${b.name}: kill -9 and restart: noticed ${noticedAfterReady} ms after READY (${r.reason}), ` +
            `reconnected over ${r.transport} ${reconnectedAfterReady} ms after READY ` +
            `(in the page: ${r.noticedAfter.toFixed(0)} and ${r.reconnectedAfter.toFixed(0)} ms after its start; ` +
            `reconnect delays ${r.attempts.join(', ')} ms)`,
        );
        // The restarted server must recognise the old connection's IDs to reset it: with a
        // connection-ID key that changed at the restart it drops the probes ("dropping packet with
        // invalid CID" at debug level), and only the browser's own loss detection ends the session,
        // seconds later.
        assert.ok(r.noticedAfter > -500, `noticed ${r.noticedAfter} ms before the restart: not by a reset`);
        assert.ok(r.noticedAfter < 1500, `noticed ${r.noticedAfter} ms after the restart`);
        // The target of the first reconnect delay (0–1 s): back within 2 s of the server answering.
        assert.ok(reconnectedAfterReady < 2000, `reconnected ${reconnectedAfterReady} ms after READY`);
        assert.equal(r.echo, 'after restart');
        assert.deepEqual(r.pageErrors, []);
      } finally {
        await page.close();
        await restarted.dispose();
      }
    });
  });
});
