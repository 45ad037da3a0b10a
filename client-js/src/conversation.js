// The chat helper for one conversation: join (and rejoin after every reconnect with the last seq
// seen), send with a clientMessageId so a retried send is never stored twice, typing, and the
// delivery rule of the chat contract that makes every message reach the app once and in order:
//
//   keep lastSeq; drop seq <= lastSeq (duplicate); deliver seq == lastSeq + 1; on seq > lastSeq + 1
//   buffer it and fetch the gap over REST (GET /api/conversations/{id}/messages?after_seq&before_seq).

import { Emitter } from './emitter.js';
import { RtgateError } from './transports.js';

const PAGE = 200; // the REST maximum

let counter = 0;
/** A clientMessageId: 1..64 chars of [A-Za-z0-9:._-], unique enough per user and conversation. */
export function newClientMessageId() {
  counter = (counter + 1) % 0x100000;
  const rand = globalThis.crypto?.randomUUID?.() ?? `${Math.random().toString(36).slice(2)}`;
  return `c:${Date.now().toString(36)}.${counter.toString(36)}.${rand.replaceAll('-', '').slice(0, 16)}`;
}

export class Conversation extends Emitter {
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    /** The highest seq delivered to the app; null until the first join or message. */
    this.lastSeq = null;
    /** Whether the app wants this conversation joined (it is rejoined after reconnects). */
    this.joined = false;
    this._buffer = new Map(); // seq -> message, ahead of a gap
    this._fetching = false;
    this._joining = null;
  }

  /**
   * Joins; from now on `message` events arrive in seq order. Resolves with the server's ack
   * `{conversationId, lastSeq, recovered, hasMore}` (after the next connect when offline).
   */
  join() {
    this.joined = true;
    if (this.client.connected) return this._join();
    return new Promise((resolve, reject) => {
      const offOk = this.once('joined', (ack) => {
        offErr();
        resolve(ack);
      });
      const offErr = this.once('join_error', (err) => {
        offOk();
        reject(err);
      });
    });
  }

  async leave() {
    this.joined = false;
    this._buffer.clear();
    if (this.client.connected) {
      await this.client.request('conversation:leave', { conversationId: this.id });
    }
  }

  /**
   * Sends a message. While disconnected it waits in the client's queue, and a send whose answer
   * was lost with the connection is sent again with the same clientMessageId, so it is stored
   * once. Resolves with `{id, seq, createdAt, duplicate}`.
   */
  send(content, opts = {}) {
    const data = {
      conversationId: this.id,
      content,
      clientMessageId: opts.clientMessageId ?? newClientMessageId(),
    };
    if (opts.replyToId) data.replyToId = opts.replyToId;
    return this.client.request('message:send', data, { retry: true, timeout: opts.timeout ?? 0 });
  }

  /** Tells the other members whether this user is typing. Volatile: dropped while offline. */
  typing(isTyping = true) {
    if (!this.joined) return false;
    return this.client.emit(
      'typing',
      { conversationId: this.id, isTyping: Boolean(isTyping) },
      { volatile: true },
    );
  }

  /** Older messages (ascending), for scrolling back; not passed through `message`. */
  async history({ beforeSeq, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (beforeSeq !== undefined) q.set('before_seq', String(beforeSeq));
    return this.client._getJson(`/api/conversations/${encodeURIComponent(this.id)}/messages?${q}`);
  }

  async _join() {
    if (this._joining) return this._joining;
    const data = { conversationId: this.id };
    if (this.lastSeq !== null) data.sinceSeq = this.lastSeq;
    // Joining is idempotent: a join whose answer is lost with the connection stays queued and is
    // sent again (once: the rejoin after the reconnect reuses this same request).
    this._joining = this.client.request('conversation:join', data, { retry: true, timeout: 0 });
    try {
      const ack = await this._joining;
      if (this.lastSeq === null) {
        this.lastSeq = ack?.lastSeq ?? 0;
      } else if (typeof ack?.lastSeq === 'number' && ack.lastSeq > this.lastSeq) {
        // Messages the server holds that never reached us (and none buffered past them yet).
        this._fillGap(ack.lastSeq + 1);
      }
      this._emit('joined', ack);
      return ack;
    } catch (err) {
      this._emit('join_error', err);
      throw err;
    } finally {
      this._joining = null;
    }
  }

  _restore() {
    if (!this.joined) return;
    this._join().catch((err) => this.client._emit('error', err));
  }

  _onEvent(name, data) {
    if (name === 'message:new') this._onMessage(data);
    else if (name === 'typing') this._emit('typing', data);
    else if (name === 'conversation:removed') {
      this.joined = false;
      this._buffer.clear();
      this._emit('removed', data);
    }
  }

  _onMessage(msg) {
    if (!this.joined || typeof msg?.seq !== 'number') return;
    if (this.lastSeq === null) {
      // A live message before the first join ack: it is the baseline (no gaps follow it).
      this.lastSeq = msg.seq - 1;
    }
    if (msg.seq <= this.lastSeq) return;
    if (msg.seq === this.lastSeq + 1) {
      this._deliver(msg);
      this._drain();
      return;
    }
    this._buffer.set(msg.seq, msg);
    this._fillGap();
  }

  _deliver(msg) {
    this.lastSeq = msg.seq;
    this._emit('message', msg);
  }

  _drain() {
    while (this._buffer.has(this.lastSeq + 1)) {
      const next = this._buffer.get(this.lastSeq + 1);
      this._buffer.delete(next.seq);
      this._deliver(next);
    }
    for (const seq of this._buffer.keys()) if (seq <= this.lastSeq) this._buffer.delete(seq);
  }

  /** Fetches (lastSeq, before) over REST, delivering in order; `before` defaults to the buffer. */
  async _fillGap(upTo) {
    if (this._fetching) return;
    this._fetching = true;
    try {
      for (;;) {
        const buffered = this._buffer.size ? Math.min(...this._buffer.keys()) : undefined;
        const before = buffered ?? upTo;
        if (before === undefined || before <= this.lastSeq + 1) break;
        const q = new URLSearchParams({
          after_seq: String(this.lastSeq),
          before_seq: String(before),
          limit: String(PAGE),
        });
        const path = `/api/conversations/${encodeURIComponent(this.id)}/messages?${q}`;
        const body = await this.client._getJson(path);
        const from = this.lastSeq;
        for (const m of body.messages ?? []) {
          if (m.seq === this.lastSeq + 1) this._deliver(m);
        }
        this._drain();
        if (this.lastSeq === from) {
          // No progress: the server has nothing for the gap (deleted, or never stored). Say so and
          // move past it rather than hold every later message back for ever.
          this.client._emit(
            'error',
            new RtgateError('gap_unfilled', `messages ${from + 1}..${before - 1} are missing`),
          );
          this.lastSeq = before - 1;
          this._drain();
        }
        if (buffered === undefined && this.lastSeq + 1 >= upTo) break;
      }
    } catch (err) {
      // Offline or refused: the next message or rejoin tries again.
      this.client._emit('error', err);
      return;
    } finally {
      this._fetching = false;
    }
    // Messages buffered while the fetch ran may have opened a new gap.
    if (this._buffer.size && Math.min(...this._buffer.keys()) > this.lastSeq + 1) this._fillGap();
  }
}
