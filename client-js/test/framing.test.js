import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FrameSplitter, decodeJson, encodeFrame } from '../src/framing.js';

test('length-prefixed frames survive any chunking', () => {
  const frames = [{ type: 'ping' }, { type: 'event', event: 'x', data: 'é😀'.repeat(50) }, { type: 'pong' }];
  const bytes = Uint8Array.from(frames.flatMap((f) => [...encodeFrame(f)]));
  assert.deepEqual([...bytes.subarray(0, 4)], [0, 0, 0, 15]);
  for (const size of [1, 2, 3, 5, 7, 64, bytes.length]) {
    const s = new FrameSplitter();
    const out = [];
    for (let i = 0; i < bytes.length; i += size) out.push(...s.push(bytes.slice(i, i + size)));
    assert.deepEqual(out.map(decodeJson), frames, `chunk size ${size}`);
  }
});

test('an oversized length prefix is refused before buffering the body', () => {
  const s = new FrameSplitter(10);
  assert.throws(() => s.push(Uint8Array.from([0, 0, 0, 11])), /exceeds/);
});
