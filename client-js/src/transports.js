// The two transports behind one small connection interface, so the client above never knows which
// one it runs on:
//
//   conn.kind            'webtransport' | 'websocket'
//   conn.send(frame)     reliable, in order (the WT bidi stream / one WS text message per frame)
//   conn.sendVolatile(f) may be lost (a WT datagram when it fits; otherwise like send)
//   conn.close(code, r)  closes the transport; onclose still fires once
//   conn.probe()         WebTransport only: sends an empty datagram, false when it cannot
//   conn.onframe(obj)    set by the client: one decoded server frame
//   conn.onclose({code, reason})  set by the client: fires exactly once
//
// The browser constructors are looked up at call time (not import time) so a page or a test that
// removes `WebTransport` after loading the module gets the fallback.

import { FrameSplitter, decodeJson, encodeDatagram, encodeFrame } from './framing.js';

/** An Error with a machine-readable `code`, like the server's `error` frames. */
export class RtgateError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.name = 'RtgateError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

export function webTransportAvailable() {
  return typeof globalThis.WebTransport === 'function';
}

class BaseConnection {
  constructor(kind) {
    this.kind = kind;
    this.onframe = () => {};
    this.onclose = () => {};
    this._closed = false;
  }

  _deliver(frame) {
    if (!this._closed) this.onframe(frame);
  }

  _finish(info) {
    if (this._closed) return;
    this._closed = true;
    this.onclose(info);
  }
}

class WebTransportConnection extends BaseConnection {
  constructor(wt, stream) {
    super('webtransport');
    this.wt = wt;
    this.writer = stream.writable.getWriter();
    this.splitter = new FrameSplitter();
    this._readStream(stream.readable.getReader());
    this._readDatagrams();
    wt.closed.then(
      (info) => this._finish({ code: info?.closeCode ?? 1000, reason: info?.reason ?? '' }),
      (err) => this._finish({ code: 1006, reason: String(err?.message ?? err) }),
    );
    try {
      this.dgWriter = wt.datagrams.writable.getWriter();
    } catch {
      this.dgWriter = null;
    }
  }

  async _readStream(reader) {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const body of this.splitter.push(value)) {
          let frame;
          try {
            frame = decodeJson(body);
          } catch {
            continue; // Not JSON: nothing the client could act on.
          }
          this._deliver(frame);
        }
      }
      this._finish({ code: 1000, reason: 'stream ended' });
    } catch (err) {
      this._finish({ code: 1006, reason: String(err?.message ?? err) });
    }
  }

  async _readDatagrams() {
    let reader;
    try {
      reader = this.wt.datagrams.readable.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        try {
          this._deliver(decodeJson(value));
        } catch {
          // A malformed datagram is dropped like a lost one.
        }
      }
    } catch {
      // The session ended; the stream reader reports the close.
    }
  }

  send(frame) {
    if (this._closed) return;
    this.writer.write(encodeFrame(frame)).catch(() => {});
  }

  sendVolatile(frame) {
    const bytes = encodeDatagram(frame);
    const max = this.wt.datagrams?.maxDatagramSize ?? 0;
    if (this.dgWriter && bytes.length <= max) {
      this.dgWriter.write(bytes).catch(() => {});
    } else {
      this.send(frame);
    }
  }

  /**
   * Sends an empty datagram, which the server ignores: a packet that makes a dead path show. A
   * QUIC peer that forgot the connection (a restarted server) answers it with a stateless reset,
   * and the browser only learns of that when it sends something. False when the session has no
   * datagrams (nothing is sent).
   */
  probe() {
    if (this._closed || !this.dgWriter) return false;
    this.dgWriter.write(new Uint8Array(0)).catch(() => {});
    return true;
  }

  close(code = 1000, reason = 'client disconnect') {
    try {
      this.wt.close({ closeCode: code, reason });
    } catch {
      // Already closed.
    }
    this._finish({ code, reason });
  }
}

class WebSocketConnection extends BaseConnection {
  constructor(ws) {
    super('websocket');
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this._deliver(frame);
    };
    ws.onclose = (ev) => this._finish({ code: ev.code, reason: ev.reason });
    ws.onerror = () => {};
  }

  send(frame) {
    if (this._closed || this.ws.readyState !== 1) return;
    this.ws.send(JSON.stringify(frame));
  }

  sendVolatile(frame) {
    this.send(frame);
  }

  close(code = 1000, reason = 'client disconnect') {
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closed.
    }
    this._finish({ code, reason });
  }
}

/**
 * Opens a WebTransport session and its one bidirectional stream.
 * @param {{url: string, certificateHashes?: Array<{algorithm: string, value: Uint8Array}>, signal?: AbortSignal}} o
 */
export async function openWebTransport({ url, certificateHashes, signal }) {
  if (!webTransportAvailable()) {
    throw new RtgateError('transport_unavailable', 'WebTransport is not available');
  }
  const opts = certificateHashes?.length ? { serverCertificateHashes: certificateHashes } : {};
  const wt = new globalThis.WebTransport(url, opts);
  // `closed` rejects when opening fails; mark it handled so it never surfaces as unhandled.
  wt.closed.catch(() => {});
  // The client gives up on a slow open (its own timer) and aborts: close what is opening.
  signal?.addEventListener('abort', () => {
    try {
      wt.close();
    } catch {
      // Not open yet.
    }
  });
  try {
    await wt.ready;
    const stream = await wt.createBidirectionalStream();
    return new WebTransportConnection(wt, stream);
  } catch (err) {
    if (err instanceof RtgateError) throw err;
    throw new RtgateError('transport_failed', `WebTransport failed: ${err?.message ?? err}`);
  }
}

/**
 * Opens a WebSocket, with `WebSocket` (a constructor like the browser's) when given, else the
 * global one (browsers, Node 22+).
 * @param {{url: string, signal?: AbortSignal, WebSocket?: typeof globalThis.WebSocket}} o
 */
export async function openWebSocket({ url, signal, WebSocket: Impl }) {
  const WebSocketImpl = Impl ?? globalThis.WebSocket;
  if (typeof WebSocketImpl !== 'function') {
    throw new RtgateError(
      'transport_unavailable',
      'WebSocket is not available (on Node before 22, pass a WebSocket implementation as the `WebSocket` option)',
    );
  }
  const ws = new WebSocketImpl(url);
  const open = new Promise((resolve, reject) => {
    ws.onopen = () => resolve(new WebSocketConnection(ws));
    ws.onerror = () => reject(new RtgateError('transport_failed', 'WebSocket failed to open'));
    ws.onclose = (ev) =>
      reject(new RtgateError('transport_failed', `WebSocket closed while opening (${ev.code})`));
  });
  signal?.addEventListener('abort', () => {
    try {
      ws.close();
    } catch {
      // Not open yet.
    }
  });
  return open;
}

// ---- where WebTransport failed ----------------------------------------------------------------
//
// Per origin of the WebTransport URL, when WebTransport last failed (or lost the race to
// WebSocket), in ms since the epoch: in localStorage when the page has it, so a reload or another
// tab on the same network does not pay for the race again, else in memory for the page's life.

const FAILED_PREFIX = 'rtgate:wt-failed:';
const failedInMemory = new Map(); // origin -> ms since the epoch
const probeStarted = new Map(); // origin -> ms since the epoch of the last background probe

/** The page's localStorage when it can be used (absent in Node and workers, may throw when blocked). */
export function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    return s && typeof s.getItem === 'function' && typeof s.setItem === 'function' ? s : null;
  } catch {
    return null;
  }
}

/** The failure memory as one client sees it: its storage, its expiry, its clock. */
export class WtFailureMemory {
  /**
   * @param {Storage|null} storage localStorage or alike; null keeps the memory in this page only
   * @param {() => number} ttl how long a failure is remembered, ms
   * @param {() => number} now ms since the epoch
   */
  constructor(storage, ttl, now) {
    this.storage = storage;
    this.ttl = ttl;
    this.now = now;
  }

  /** When WebTransport failed for `origin`, or null when that is not (or no longer) remembered. */
  failedAt(origin) {
    let at = failedInMemory.get(origin);
    if (this.storage) {
      try {
        const raw = this.storage.getItem(FAILED_PREFIX + origin);
        if (raw !== null) at = Number(raw);
      } catch {
        // Storage refused: the copy in memory is all there is.
      }
    }
    if (at === undefined) return null;
    const age = this.now() - at;
    // A timestamp from the future (the clock was set back, or garbage) is not trusted either.
    if (!(age >= 0 && age < this.ttl())) {
      this.forget(origin);
      return null;
    }
    return at;
  }

  recordFailure(origin) {
    const at = this.now();
    failedInMemory.set(origin, at);
    try {
      this.storage?.setItem(FAILED_PREFIX + origin, String(at));
    } catch {
      // Quota or privacy settings: kept in memory only.
    }
  }

  forget(origin) {
    failedInMemory.delete(origin);
    try {
      this.storage?.removeItem(FAILED_PREFIX + origin);
    } catch {
      // Nothing to remove.
    }
  }

  /** When this page last started a background probe of `origin`, or undefined. */
  probedAt(origin) {
    return probeStarted.get(origin);
  }

  probing(origin) {
    probeStarted.set(origin, this.now());
  }
}

/** Forgets every remembered failure: this page's, and those in `storage` (localStorage by default). */
export function forgetWtFailures(storage = defaultStorage()) {
  failedInMemory.clear();
  probeStarted.clear();
  if (!storage) return;
  try {
    const keys = [];
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (typeof key === 'string' && key.startsWith(FAILED_PREFIX)) keys.push(key);
    }
    for (const key of keys) storage.removeItem(key);
  } catch {
    // Storage refused: nothing of ours is in it.
  }
}
