// The client in Node against the real server, over WebSocket. Node 22 has a global WebSocket;
// Node 20 has none unless started with --experimental-websocket, so the client takes a WebSocket
// constructor as an option. The child process removes the global and passes the constructor in,
// which is what a Node 20 user (with `ws`, say) does.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import { Server, token } from './harness.js';

const entry = pathToFileURL(resolve(dirname(fileURLToPath(import.meta.url)), '../src/rtgate.js')).href;

const SCRIPT = `
const WebSocketImpl = globalThis.WebSocket;
delete globalThis.WebSocket;
const { RtgateClient } = await import(process.env.ENTRY);
const url = process.env.ORIGIN;
const token = process.env.TOKEN;

// Without a WebSocket anywhere: a clear error, not a crash.
const bare = new RtgateClient({ url, token, autoConnect: false });
const missing = await new Promise((resolve) => {
  bare.once('error', (e) => resolve(e.code));
  bare.connect();
});
bare.disconnect();

const client = new RtgateClient({ url, token, WebSocket: WebSocketImpl });
const session = await new Promise((resolve, reject) => {
  client.once('connect', ({ session }) => resolve(session));
  client.once('stopped', reject);
});
const echo = await client.request('sys:echo', { from: 'node' });
client.disconnect();
console.log(JSON.stringify({ missing, transport: 'websocket', userId: session.userId, echo, state: client.state }));
`;

describe('Node', () => {
  let server;
  before(async () => {
    server = new Server();
    await server.start();
  });
  after(async () => server?.dispose());

  test('connects with an injected WebSocket constructor and no global one', async () => {
    const flags = typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket'];
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [...flags, '--no-warnings', '--input-type=module', '-e', SCRIPT],
      { env: { ...process.env, ENTRY: entry, ORIGIN: server.origin, TOKEN: token('node-user') }, timeout: 30000 },
    );
    assert.deepEqual(JSON.parse(stdout), {
      missing: 'transport_unavailable',
      transport: 'websocket',
      userId: 'node-user',
      echo: { from: 'node' },
      state: 'disconnected',
    });
  });
});
