// The package as another project gets it: `npm pack` (which builds dist/ in `prepack`), then
// `npm install <tarball>` into a fresh project (offline: the package has no dependencies) and an
// import by package name there, with Node.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const npm = (args, cwd) =>
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' });

const CHECK = `
import { createRequire } from 'node:module';
import * as main from 'rtgate-client';
import * as single from 'rtgate-client/dist/rtgate.esm.js';
const { RtgateClient, Backoff, RtgateError, isRetryable, PROTOCOL_VERSION } = main;
const require = createRequire(import.meta.url);
const pkg = require('rtgate-client/package.json');
const client = new RtgateClient({ url: 'http://127.0.0.1:9', token: 't', autoConnect: false });
console.log(JSON.stringify({
  version: pkg.version,
  names: Object.keys(main),
  singleNames: Object.keys(single),
  defaultIsClient: main.default === RtgateClient,
  state: client.state,
  wsUrl: client.wsUrl,
  // Without jitter the first reconnect is immediate (1 ms); the defaults (1 s, doubling, ±50 %)
  // show in a fixed draw of 0.5: 1000 × U[0, 1) then 2000 × U[0.5, 1.5).
  first: new Backoff({ randomization: 0 }).next(),
  delays: ((b) => [b.next(), b.next()])(new Backoff({}, () => 0.5)),
  error: new RtgateError('x') instanceof Error,
  retryable: [isRetryable(3000), isRetryable(3501)],
  version1: PROTOCOL_VERSION,
}));
`;

test('npm pack, npm install of the tarball elsewhere, import by name', { timeout: 180000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rtgate-pack-'));
  try {
    const [info] = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], pkgDir));
    const expected = [
      'README.md',
      'dist/rtgate.esm.js',
      'package.json',
      ...readdirSync(join(pkgDir, 'src')).map((f) => `src/${f}`),
    ].sort();
    assert.deepEqual(info.files.map((f) => f.path).sort(), expected, 'what the tarball holds');

    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'pack-check', private: true, type: 'module' }));
    npm(['install', '--offline', '--ignore-scripts', join(dir, info.filename)], app);
    writeFileSync(join(app, 'check.mjs'), CHECK);
    const out = JSON.parse(execFileSync(process.execPath, ['check.mjs'], { cwd: app, encoding: 'utf8' }));

    const src = await import('../src/rtgate.js');
    assert.deepEqual(out.names, Object.keys(src), 'the package exports what src/rtgate.js does');
    assert.deepEqual(out.singleNames, Object.keys(src), 'and so does its single-file build');
    assert.equal(out.defaultIsClient, true);
    assert.equal(out.state, 'disconnected');
    assert.equal(out.wsUrl, 'ws://127.0.0.1:9/ws');
    assert.equal(out.first, 1);
    assert.deepEqual(out.delays, [500, 2000]);
    assert.equal(out.error, true);
    assert.deepEqual(out.retryable, [true, false]);
    assert.equal(out.version1, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
