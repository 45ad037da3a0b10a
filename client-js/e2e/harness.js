// Runs the real rtgate binary and a headless Chromium for the browser tests; engines.js adds
// Firefox and runs a file's cases in each browser.
//
// The binary is RTGATE_BIN or ../target/debug/rtgate (scripts/test builds it first). Chromium is
// Debian's /usr/bin/chromium (CHROMIUM_PATH overrides), driven through playwright-core.
//
// The binary embeds client-js/ as it was when it was built. Pages opened through `newContext`
// get the client and demo files of this checkout instead, with the server's status and headers
// (content type, CSP): in CI the binary is built from the same checkout and nothing changes, and
// locally the tests run against the client being edited, with a binary built from elsewhere.

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.RTGATE_BIN ?? resolve(here, '../../target/debug/rtgate');
/**
 * Where screenshots of the demo go: client-js/docs/ with UPDATE_SCREENSHOTS=1 (they are checked
 * in), a temporary directory otherwise.
 */
export const SHOTS = process.env.UPDATE_SCREENSHOTS
  ? resolve(here, '../docs')
  : mkdtempSync(join(tmpdir(), 'rtgate-shots-'));
mkdirSync(SHOTS, { recursive: true });

const SECRET = 'client-js-e2e-secret-0123456789abcdef';

/** The environment minus shared services: each test server is alone, in memory and SQLite. */
function serverEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k === 'REDIS_URL' || k === 'DATABASE_URL' || k.startsWith('RTGATE_')) delete env[k];
  return env;
}

/** A token for `sub`, valid for an hour unless `extra` names another `--ttl`. */
export function token(sub, ...extra) {
  const ttl = extra.includes('--ttl') ? [] : ['--ttl', '1h'];
  return execFileSync(BIN, ['token', '--sub', sub, ...ttl, '--jwt-secret', SECRET, ...extra], {
    encoding: 'utf8',
  }).trim();
}

/**
 * A server process on loopback. `start()` can be called again after `stop()` and reuses the same
 * ports and database file, like a restarted deployment. `config`: the text of a TOML file passed
 * with `--config` (channel namespaces, say).
 */
export class Server {
  constructor(args = [], { config } = {}) {
    this.dir = mkdtempSync(join(tmpdir(), 'rtgate-e2e-'));
    this.args = args;
    if (config !== undefined) {
      const file = join(this.dir, 'rtgate.toml');
      writeFileSync(file, config);
      this.args = ['--config', file, ...args];
    }
    this.http = '127.0.0.1:0';
    this.wt = '127.0.0.1:0';
    this.proc = null;
    this.logs = [];
  }

  async start() {
    const proc = spawn(
      BIN,
      [
        'serve',
        '--http-addr', this.http,
        '--wt-addr', this.wt,
        '--sqlite-path', join(this.dir, 'rtgate.sqlite'),
        '--jwt-secret', SECRET,
        '--log', 'warn',
        ...this.args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: serverEnv() },
    );
    this.proc = proc;
    proc.stderr.on('data', (d) => this.logs.push(String(d)));
    const ready = await new Promise((resolveReady, reject) => {
      const lines = createInterface({ input: proc.stdout });
      const timer = setTimeout(() => reject(new Error(`no READY line\n${this.logs.join('')}`)), 30000);
      lines.on('line', (line) => {
        if (!line.startsWith('READY ')) return;
        clearTimeout(timer);
        resolveReady(line);
      });
      // A binary that is missing (being rebuilt, say) fails the start instead of the process.
      proc.on('error', (err) => {
        clearTimeout(timer);
        if (this.proc === proc) this.proc = null; // nothing to stop
        reject(new Error(`cannot run ${BIN}: ${err.message}`));
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        const logs = this.logs.join('');
        if (this.args.includes('--config') && /unexpected argument '--config'/.test(logs)) {
          reject(new Error(`${BIN} does not support --config (a build from before the configuration file): rebuild it\n${logs}`));
          return;
        }
        reject(new Error(`rtgate exited with ${code}\n${logs}`));
      });
    });
    const field = (name) => ready.split(' ').find((kv) => kv.startsWith(`${name}=`)).slice(name.length + 1);
    this.http = field('http');
    this.wt = field('wt');
    this.certHex = field('cert_sha256');
  }

  get origin() {
    return `http://${this.http}`;
  }

  get wtPort() {
    return Number(this.wt.split(':').pop());
  }

  /** SIGTERM, as a deployment restart does; resolves when the process has exited. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
    this.proc = null;
  }

  async dispose() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The checkout's file for a path the server serves from its embedded copy, or null. */
function localAsset(pathname) {
  if (pathname === '/') return resolve(here, '../demo/index.html');
  const m = /^\/(client|demo)\/([A-Za-z0-9._-]+)$/.exec(pathname);
  if (!m) return null;
  return resolve(here, m[1] === 'client' ? '../src' : '../demo', m[2]);
}

const reportedStale = new Set();

/** A browser context whose pages load this checkout's client and demo from `server`. */
export async function newContext(browser, server) {
  const context = await browser.newContext();
  const origin = new URL(server.origin).origin;
  // A replaced demo page is a fulfilled document: allow it to reach the loopback server, as the
  // page the server itself serves may.
  await context.grantPermissions(['local-network-access'], { origin });
  await context.route(
    (url) => url.origin === origin && localAsset(url.pathname) !== null,
    async (route) => {
      const response = await route.fetch();
      const file = localAsset(new URL(route.request().url()).pathname);
      // Only what the server serves is replaced: a file it does not serve stays a 404.
      if (response.status() !== 200) return route.fulfill({ response });
      const body = readFileSync(file);
      // The same bytes: let the request through untouched (a fulfilled document has no IP
      // address, and Chromium's local network access checks treat it as public).
      if (body.equals(await response.body())) return route.continue();
      if (!reportedStale.has(file)) {
        reportedStale.add(file);
        console.log(`# note: ${BIN} serves an older ${file}; the tests use the checkout's`);
      }
      const headers = { ...response.headers() };
      delete headers['content-length'];
      delete headers['content-encoding'];
      return route.fulfill({ status: 200, headers, body });
    },
  );
  return context;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    // --no-sandbox: the tests run as root in CI. QUIC stays enabled: WebTransport needs it.
    args: ['--no-sandbox'],
  });
}

/** Opens the demo page, signs in with `tok`, and clicks Connect. */
export async function openDemo(browser, server, tok, { query = '', initScript } = {}) {
  const context = await newContext(browser, server);
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${server.origin}/?wtPort=${server.wtPort}${query}`);
  await page.fill('#token', tok);
  await page.click('#connect');
  return { page, context, errors };
}

/**
 * Another user in their own page, driving the client directly (`window.other`), over the transport
 * forced by `transport`: WebSocket unless told (to mix transports with the demo's WebTransport).
 * `initScript` runs in the page before any of its scripts.
 */
export async function clientPage(browser, server, tok, { transport = 'websocket', initScript } = {}) {
  const context = await newContext(browser, server);
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${server.origin}/?wtPort=${server.wtPort}`);
  await page.evaluate(
    async ([t, kind, wtPort]) => {
      const { RtgateClient } = await import('/client/rtgate.js');
      const c = new RtgateClient({ token: t, transport: kind, wtPort });
      window.other = c;
      await new Promise((r) => c.once('connect', r));
    },
    [tok, transport, server.wtPort],
  );
  return {
    page,
    context,
    errors,
    send: (conversationId, content) =>
      page.evaluate(([id, text]) => window.other.conversation(id).send(text), [conversationId, content]),
  };
}

/** A REST call to `server` as the holder of `tok`, from Node. */
export async function rest(server, tok, method, path, body) {
  const res = await fetch(`${server.origin}${path}`, {
    method,
    headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Waits for the demo's `#status` to show `state`; `page` is Playwright's or engines.js' page. */
export async function waitState(page, state, timeout = 20000) {
  await page.waitForSelector(`#status[data-state="${state}"]`, { timeout });
}

/** Counts the page's live intervals: pass as `initScript`, so it is
 * installed before the demo's own scripts run (runs in the page, not in Node). */
export function countIntervals() {
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
