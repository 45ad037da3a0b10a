// The browsers the e2e cases run in, behind one small page API, so a case is written once and run
// in each engine:
//
//   chromium  Debian's /usr/bin/chromium (CHROMIUM_PATH overrides) through playwright-core, as
//             launched by harness.js, pages loading this checkout's client (harness.newContext).
//   firefox   Debian's /usr/bin/firefox-esr (FIREFOX_PATH overrides) through puppeteer-core over
//             WebDriver BiDi: no geckodriver, and puppeteer-core never downloads a browser. It is
//             pinned to 24.43.1, the newest release that runs on Node 20 (25.x needs Node 22.12).
//
// `describeEngines(fn)` makes one `describe` per engine, launches its browser before the cases and
// closes it after; `fn(b)` declares the cases with `b`, whose `openDemo` and `newPage` give pages
// with the same methods in both engines (see `PageApi`). Firefox is skipped, with the reason, when
// firefox-esr is not installed, except with CI=true, where its cases fail instead.

import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';

import puppeteer from 'puppeteer-core';

import { SHOTS, launchBrowser, newContext } from './harness.js';

export const FIREFOX_PATH = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

/**
 * Firefox preferences for the e2e runs, on top of puppeteer's own. Firefox ESR 153 needs none for
 * WebTransport to a loopback server with a self-signed certificate given by
 * `serverCertificateHashes` (ECDSA P-256, 14 days, as the server makes): it is on by default. `network.webtransport.enabled`
 * is the switch that matters (false makes the client fall back to WebSocket, and the WebTransport
 * cases fail), so it is pinned here; `network.http.http3.enable` does not gate WebTransport.
 */
export const FIREFOX_PREFS = {
  'network.webtransport.enabled': true,
};

/**
 * What a case gets from `openDemo` and `newPage`, the same in both engines.
 * @typedef {object} PageApi
 * @property {(url: string) => Promise<void>} goto
 * @property {(fn: Function, arg?: unknown) => Promise<any>} evaluate  runs `fn(arg)` in the page
 * @property {(selector: string, value: string) => Promise<void>} fill
 * @property {(selector: string) => Promise<void>} click
 * @property {(selector: string) => Promise<string|null>} textContent
 * @property {(selector: string, name: string) => Promise<string|null>} getAttribute
 * @property {(selector: string) => Promise<number>} count  elements matching now, without waiting
 * @property {(selector: string, options?: {timeout?: number}) => Promise<void>} waitForSelector
 * @property {(fn: Function, arg?: unknown, options?: {timeout?: number}) => Promise<void>} waitForFunction
 * @property {(ms: number) => Promise<void>} sleep
 * @property {(options: {path: string}) => Promise<void>} screenshot
 * @property {() => Promise<void>} close  closes the page and its own browser context
 */

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Selectors and actions are waited for up to this long, as in Playwright's defaults. */
const ACTION_TIMEOUT = 30000;

/** A Playwright page (in its own context) as a `PageApi`. */
function playwrightPage(page, context) {
  return {
    goto: async (url) => {
      await page.goto(url);
    },
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    fill: (selector, value) => page.fill(selector, value),
    click: (selector) => page.click(selector),
    textContent: (selector) => page.textContent(selector),
    getAttribute: (selector, name) => page.getAttribute(selector, name),
    count: (selector) => page.locator(selector).count(),
    waitForSelector: async (selector, { timeout = ACTION_TIMEOUT } = {}) => {
      await page.waitForSelector(selector, { timeout });
    },
    waitForFunction: async (fn, arg, { timeout = ACTION_TIMEOUT } = {}) => {
      await page.waitForFunction(fn, arg, { timeout });
    },
    sleep,
    screenshot: async ({ path }) => {
      await page.screenshot({ path });
    },
    close: () => context.close(),
  };
}

/** A Puppeteer page (in its own browser context) as a `PageApi`. */
function puppeteerPage(page, context) {
  /** Waits for `selector` to be in the document, runs `fn(element, arg)` on it. */
  const onElement = async (selector, fn, arg) => {
    const handle = await page.waitForSelector(selector, { timeout: ACTION_TIMEOUT });
    try {
      return await handle.evaluate(fn, arg);
    } finally {
      await handle.dispose();
    }
  };
  return {
    goto: async (url) => {
      await page.goto(url);
    },
    evaluate: (fn, arg) => page.evaluate(fn, arg),
    // Sets the value and fires input and change, as Playwright's fill does (no key by key typing).
    fill: (selector, value) =>
      page.locator(selector).setTimeout(ACTION_TIMEOUT).fill(value, { typingThreshold: 0 }),
    click: (selector) => page.locator(selector).setTimeout(ACTION_TIMEOUT).click(),
    textContent: (selector) => onElement(selector, (el) => el.textContent),
    getAttribute: (selector, name) => onElement(selector, (el, n) => el.getAttribute(n), name),
    count: (selector) => page.evaluate((s) => document.querySelectorAll(s).length, selector),
    waitForSelector: async (selector, { timeout = ACTION_TIMEOUT } = {}) => {
      const handle = await page.waitForSelector(selector, { timeout });
      await handle?.dispose();
    },
    waitForFunction: async (fn, arg, { timeout = ACTION_TIMEOUT } = {}) => {
      const handle = await page.waitForFunction(fn, { timeout }, arg);
      await handle.dispose();
    },
    sleep,
    screenshot: async ({ path }) => {
      await page.screenshot({ path });
    },
    close: () => context.close(),
  };
}

/**
 * Over WebDriver BiDi, Firefox reports every error its console gets from a page as a page error,
 * including its own notes on a WebSocket that could not connect or was cut (the server is down
 * during a restart, say). Chromium logs those as console messages, which Playwright does not count
 * as page errors; these are dropped so that `errors` means the same in both engines: exceptions
 * and rejections the page's scripts left uncaught.
 */
const FIREFOX_NETWORK_MESSAGE =
  /^(Firefox can’t establish a connection to the server at wss?:\/\/\S+\.|The connection to wss?:\/\/\S+ was interrupted while the page was loading\.)$/;

/** Firefox's screenshots never go to docs/ (UPDATE_SCREENSHOTS refreshes Chromium's only). */
let firefoxShots;
function firefoxShot(name) {
  firefoxShots ??= process.env.UPDATE_SCREENSHOTS ? mkdtempSync(join(tmpdir(), 'rtgate-shots-')) : SHOTS;
  return join(firefoxShots, `firefox-${name}`);
}

export const chromium = {
  name: 'chromium',
  /** Chromium is required everywhere: a missing one fails its cases (as before Firefox). */
  missing: () => null,
  shot: (name) => join(SHOTS, name),
  async launch() {
    const browser = await launchBrowser();
    return {
      async newPage(server, { initScript } = {}) {
        const context = await newContext(browser, server);
        if (initScript) await context.addInitScript(initScript);
        const page = await context.newPage();
        return { page: playwrightPage(page, context), onPageError: (cb) => page.on('pageerror', cb) };
      },
      close: () => browser.close(),
    };
  },
};

export const firefox = {
  name: 'firefox',
  missing: () =>
    existsSync(FIREFOX_PATH)
      ? null
      : `${FIREFOX_PATH} is not installed (apt-get install firefox-esr, or run scripts/services.sh; FIREFOX_PATH overrides)`,
  shot: firefoxShot,
  async launch() {
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: FIREFOX_PATH,
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
    });
    return {
      // Pages get the server's embedded client and demo files as they are, unlike Chromium's
      // (harness.newContext replaces them with this checkout's): CI builds the binary from the same
      // checkout, so both engines run the same client there; locally, with a binary built from
      // another tree, Firefox tests the client that binary embeds.
      async newPage(_server, { initScript } = {}) {
        const context = await browser.createBrowserContext();
        const page = await context.newPage();
        if (initScript) await page.evaluateOnNewDocument(initScript);
        const onPageError = (cb) =>
          page.on('pageerror', (e) => {
            if (!FIREFOX_NETWORK_MESSAGE.test(e.message)) cb(e);
          });
        return { page: puppeteerPage(page, context), onPageError };
      },
      close: () => browser.close(),
    };
  },
};

export const ENGINES = [chromium, firefox];

/**
 * A `describe` per engine, named after it, with the engine's browser launched before its cases and
 * closed after them. `fn(b)` declares the cases; `b.name` is the engine's name, `b.shot(name)` the
 * path for a screenshot, and `b.openDemo` / `b.newPage` open pages (valid inside cases and hooks).
 */
export function describeEngines(fn, engines = ENGINES) {
  for (const engine of engines) {
    const missing = engine.missing();
    // In CI a missing browser is a failure, not a skip: every case fails, saying why.
    const skip = missing && process.env.CI !== 'true' ? missing : false;
    describe(engine.name, { skip }, () => {
      let browser = null;
      before(async () => {
        if (!missing) browser = await engine.launch();
      });
      after(async () => {
        await browser?.close();
      });
      const launched = () => {
        if (missing) throw new Error(missing);
        if (!browser) throw new Error(`${engine.name} is not launched`);
        return browser;
      };
      /** A page of its own (own context), `initScript` run before any script of every document. */
      const newPage = async (server, { initScript } = {}) => {
        const { page, onPageError } = await launched().newPage(server, { initScript });
        const errors = [];
        onPageError((e) => errors.push(e));
        return { page, errors };
      };
      /** Opens the demo page, signs in with `tok`, and clicks Connect. */
      const openDemo = async (server, tok, { query = '', initScript } = {}) => {
        const { page, errors } = await newPage(server, { initScript });
        await page.goto(`${server.origin}/?wtPort=${server.wtPort}${query}`);
        await page.fill('#token', tok);
        await page.click('#connect');
        return { page, errors };
      };
      fn({ name: engine.name, shot: engine.shot, newPage, openDemo });
    });
  }
}
