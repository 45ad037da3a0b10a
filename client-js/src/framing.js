// WebTransport stream framing (PROTOCOL.md): each frame is a 4-byte big-endian length followed by
// that many bytes of UTF-8 JSON. Datagrams carry one JSON frame each, with no prefix.

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Encodes one frame object as length-prefixed bytes. */
export function encodeFrame(frame) {
  const body = encoder.encode(JSON.stringify(frame));
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

/** Encodes one frame object for a datagram (no prefix). */
export function encodeDatagram(frame) {
  return encoder.encode(JSON.stringify(frame));
}

export function decodeJson(bytes) {
  return JSON.parse(decoder.decode(bytes));
}

/**
 * Splits a byte stream into frames whatever the chunking. `push` returns the complete frames'
 * bodies (raw bytes) found so far; a partial frame stays buffered until the rest arrives.
 */
export class FrameSplitter {
  constructor(maxFrameBytes = 16 * 1024 * 1024) {
    this.max = maxFrameBytes;
    this.buf = new Uint8Array(0);
  }

  push(chunk) {
    if (this.buf.length === 0) {
      this.buf = chunk;
    } else {
      const joined = new Uint8Array(this.buf.length + chunk.length);
      joined.set(this.buf, 0);
      joined.set(chunk, this.buf.length);
      this.buf = joined;
    }
    const frames = [];
    let off = 0;
    while (this.buf.length - off >= 4) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset + off, 4).getUint32(0, false);
      if (len > this.max) throw new Error(`frame of ${len} bytes exceeds ${this.max}`);
      if (this.buf.length - off - 4 < len) break;
      frames.push(this.buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    this.buf = off === 0 ? this.buf : this.buf.slice(off);
    return frames;
  }
}
