// rtgate browser client: one connection to an rtgate server over WebTransport (first choice) or
// WebSocket (fallback), with the handshake, heartbeat, acknowledged requests, reconnection with
// backoff and jitter, a bounded send queue, and restoration of presence subscriptions, chat
// conversations and channel subscriptions after a reconnect. No dependencies; the wire contract
// is PROTOCOL.md.

import { Backoff, DEFAULT_BACKOFF } from './backoff.js';
import { Conversation } from './conversation.js';
import { Emitter } from './emitter.js';
import { Presence } from './presence.js';
import { Subscription } from './subscription.js';
import {
  RtgateError,
  WtFailureMemory,
  defaultStorage,
  forgetWtFailures,
  openWebSocket,
  openWebTransport,
  webTransportAvailable,
} from './transports.js';

export { Backoff, Conversation, Presence, RtgateError, Subscription };

export const PROTOCOL_VERSION = 1;

const DEFAULTS = {
  transport: 'auto',
  certificateHash: 'auto',
  wtPort: 4433,
  wtOpenTimeout: 5000,
  wtFallbackDelay: 300,
  wtFailureMemory: 10 * 60 * 1000,
  wtRetryInterval: 60 * 1000,
  wtProbeInterval: 1000,
  connectTimeout: 20000,
  requestTimeout: 10000,
  maxQueue: 100,
  autoConnect: true,
};

const DEFAULT_RECONNECT = { ...DEFAULT_BACKOFF, maxAttempts: Infinity, stableAfter: 10000 };

/** Whether a close code allows reconnecting automatically (PROTOCOL.md, Codes). */
export function isRetryable(code, disconnectFrame) {
  if (disconnectFrame && disconnectFrame.reconnect === false) return false;
  return !(code >= 3500 && code <= 3999);
}

// Close codes of the codes that end a session (PROTOCOL.md, Codes). Used when a refused
// handshake's `error` frame arrived but its `disconnect` frame did not: on WebTransport the close
// can overtake it, and browsers may not expose the QUIC close code.
const CLOSE_CODES = new Map([
  ['server_shutdown', 3000],
  ['ping_timeout', 3001],
  ['token_expired', 3002],
  ['slow_consumer', 3003],
  ['handshake_timeout', 3004],
  ['server_busy', 3005],
  ['rate_limit_flood', 3006],
  ['payload_too_large', 3007],
  ['too_many_connections', 3008],
  ['server_error', 3009],
  ['force_reconnect', 3010],
  ['auth_required', 3500],
  ['invalid_token', 3501],
  ['protocol_error', 3502],
  ['unsupported_version', 3503],
  ['force_disconnect', 3504],
  ['token_revoked', 3505],
]);

/**
 * Closes that refused the token itself: the same token would be refused again. `token_revoked`
 * is one (a different token may still be welcome); `force_disconnect` is not: the backend ended
 * the session or the user, and a new token would not change its mind.
 */
function isTokenRefusal(code) {
  return code === 3002 || code === 3500 || code === 3501 || code === 3505;
}

const MAX_REFUSED = 16; // refused tokens remembered, oldest forgotten first

// The longest delay timers take (about 24.8 days); a longer one would fire at once. Options past
// it mean "never".
const MAX_DELAY = 2 ** 31 - 1;

function deriveUrls(opts) {
  const base = opts.url ?? globalThis.location?.origin;
  if (!base) throw new RtgateError('bad_option', 'option `url` is required outside a page');
  const u = new URL(base);
  const wsUrl = opts.wsUrl ?? `${u.protocol === 'https:' ? 'wss:' : 'ws:'}//${u.host}/ws`;
  const wtUrl = opts.wtUrl ?? `https://${u.hostname}:${opts.wtPort}/wt`;
  return { base: u.origin, wsUrl, wtUrl };
}

export class RtgateClient extends Emitter {
  /** @param {import('./rtgate.js').ClientOptions} options */
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.options.reconnect = { ...DEFAULT_RECONNECT, ...(options.reconnect ?? {}) };
    const { base, wsUrl, wtUrl } = deriveUrls(this.options);
    this.url = base;
    this.wsUrl = wsUrl;
    this.wtUrl = wtUrl;
    this._clock = options.clock ?? {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (t) => clearTimeout(t),
      now: () => Date.now(),
    };
    this._now = typeof this._clock.now === 'function' ? () => this._clock.now() : () => Date.now();
    this._fetch = options.fetch ?? ((...a) => globalThis.fetch(...a));
    this._openers = {
      webtransport: options.transports?.webtransport ?? openWebTransport,
      websocket: options.transports?.websocket ?? openWebSocket,
    };
    this._wtAvailable = options.transports?.webtransport ? () => true : webTransportAvailable;
    this._random = options.random ?? Math.random;
    this._wtOrigin = originOf(wtUrl);
    this._wtFailures = new WtFailureMemory(
      options.storage === undefined ? defaultStorage() : options.storage,
      () => this.options.wtFailureMemory,
      this._now,
    );
    this.backoff = new Backoff(this.options.reconnect, this._random);

    /** @type {'connecting'|'connected'|'reconnecting'|'disconnected'} */
    this.state = 'disconnected';
    /** The transport of the current connection, or null. */
    this.transport = null;
    /** The server's `connected` frame of the current connection, or null. */
    this.session = null;
    /**
     * The last token `getToken` returned for a connect, or the one a `sys:refresh` got accepted;
     * the REST calls use it too.
     */
    this.token = null;

    this._conn = null;
    this._attempt = 0; // increments per attempt; stale async steps compare against it
    this._everConnected = false;
    this._manual = false;
    this._timers = { reconnect: null, connect: null, heartbeat: null, stable: null, silence: null, probe: null };
    this._cancelOpen = null; // aborts the transports this attempt is opening
    this._probing = false; // a background WebTransport probe is under way
    this._lastReceived = 0; // when the current connection last received anything (clock ms)
    this._localClose = null;
    this._lastDisconnect = null;
    this._handshakeError = null; // code of an `error` frame that refused this connection's handshake
    this._sentToken = null; // the token the current session runs on: its `connect` frame's, or a refresh's
    this._refused = new Map(); // token -> {reason, code, reported} of the close that refused it
    this._authRetried = false; // the one attempt with a new token after a terminal auth refusal
    this._refresh = null; // {conn, notice} of the token refresh in progress on the current connection
    this._nextId = 1;
    this._order = 0;
    this._queue = []; // entries waiting for a connection, kept in call order
    this._inflight = new Map(); // id -> entry, written and waiting for ack/error
    this._serverEvents = new Emitter();
    this._conversations = new Map();
    this._subscriptions = new Map(); // channel -> Subscription
    this.presence = new Presence(this);

    if (this.options.autoConnect) this.connect();
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /**
   * Starts connecting (no-op when already connected or connecting). An explicit call also forgets
   * the tokens the server refused: the app is saying something changed (see README, Reconnection
   * rules).
   */
  connect() {
    if (this.state === 'connected' || this.state === 'connecting') return;
    if (this.state === 'reconnecting' && this._timers.reconnect === null) return;
    this._manual = false;
    this._refused.clear();
    this._authRetried = false;
    this._clear('reconnect');
    this._setState(this._everConnected ? 'reconnecting' : 'connecting');
    this._startAttempt();
  }

  /** Closes on purpose: sends `disconnect`, stops reconnecting. Queued sends stay queued. */
  disconnect() {
    this._manual = true;
    this._attempt += 1;
    this._cancelOpen?.();
    this._refresh = null; // a token arriving from getToken now is not sent
    for (const name of Object.keys(this._timers)) this._clear(name);
    const conn = this._conn;
    if (conn) {
      conn.send({ type: 'disconnect' });
      this._localClose = { code: 1000, reason: 'client_disconnect' };
      conn.close(1000, 'client disconnect');
    } else if (this.state !== 'disconnected') {
      this._setState('disconnected');
      this._emit('disconnect', 'client_disconnect', 1000);
    }
  }

  close() {
    this.disconnect();
  }

  get connected() {
    return this.state === 'connected';
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  _clear(name) {
    if (this._timers[name] !== null) {
      this._clock.clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _set(name, ms, fn) {
    this._clear(name);
    this._timers[name] = this._clock.setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  async _getToken() {
    const { getToken, token } = this.options;
    const value = getToken ? await getToken() : token;
    if (typeof value !== 'string' || value === '') {
      const err = new RtgateError('auth_required', getToken ? 'getToken() returned no token' : 'no token');
      err.noToken = true;
      throw err;
    }
    return value;
  }

  /**
   * The transports to try for this attempt: both (raced, WebTransport first) or one. WebSocket
   * alone when forced, when the browser has no WebTransport, or while WebTransport is remembered
   * as failing for this origin.
   */
  _forced() {
    const forced = this.options.transport;
    return forced === 'webtransport' || forced === 'websocket' ? forced : null;
  }

  _plan() {
    const forced = this._forced();
    if (forced) return [forced];
    if (!this._wtAvailable()) return ['websocket'];
    if (this._wtFailures.failedAt(this._wtOrigin) !== null) return ['websocket'];
    return ['webtransport', 'websocket'];
  }

  async _certificateHashes() {
    const opt = this.options.certificateHash;
    if (opt === 'none' || opt === null || opt === false) return undefined;
    if (opt !== 'auto') return [{ algorithm: 'sha-256', value: new Uint8Array(opt) }];
    // Dev mode: the server's self-signed certificate changes at every start, so ask each time.
    try {
      const res = await this._fetch(`${this.url}/cert-hash`, { cache: 'no-store' });
      if (!res.ok) return undefined;
      const body = await res.json();
      if (!body.selfSigned || !Array.isArray(body.bytes)) return undefined;
      return [{ algorithm: 'sha-256', value: new Uint8Array(body.bytes) }];
    } catch {
      return undefined; // A production certificate needs no hash.
    }
  }

  /**
   * Starts opening one transport, giving up after `ms`. Returns `{promise, cancel}`: `cancel()`
   * (or the timeout) aborts the opener and rejects, and a connection that opens after that is
   * closed at once, with no handlers of the client's on it: it never delivers anything.
   */
  _open(kind, ms, params) {
    const abort = typeof AbortController === 'function' ? new AbortController() : null;
    let cancel;
    const promise = new Promise((resolve, reject) => {
      let done = false;
      const giveUp = (err, { aborting = true } = {}) => {
        if (done) return;
        done = true;
        this._clock.clearTimeout(timer);
        if (aborting) abort?.abort();
        reject(err);
      };
      const timer = this._clock.setTimeout(
        () => giveUp(new RtgateError('transport_timeout', `${kind} did not open within ${ms} ms`)),
        ms,
      );
      cancel = () => giveUp(new RtgateError('transport_cancelled', `${kind} no longer needed`));
      Promise.resolve()
        .then(() => this._openers[kind]({ ...params, signal: abort?.signal }))
        .then(
          (conn) => {
            if (done) return conn.close(1000, 'too late');
            done = true;
            this._clock.clearTimeout(timer);
            resolve(conn);
          },
          (err) => giveUp(err, { aborting: false }),
        );
    });
    return { promise, cancel };
  }

  _wtParams(certificateHashes) {
    return { url: this.wtUrl, certificateHashes };
  }

  _wsParams() {
    return { url: this.wsUrl, WebSocket: this.options.WebSocket };
  }

  /** A transport failure while connecting: an `error` event, unless the attempt is over. */
  _transportFailed(err, attempt) {
    if (attempt === this._attempt) this._emit('error', err);
    err.reported = true;
  }

  async _openTransport(attempt) {
    const plan = this._plan();
    if (plan.length > 1) return this._race(attempt);
    const [kind] = plan;
    // WebSocket chosen in 'auto' with WebTransport at hand: WebTransport is remembered as failing.
    if (kind === 'websocket' && !this._forced() && this._wtAvailable()) this._scheduleProbe();
    let params;
    if (kind === 'webtransport') {
      params = this._wtParams(await this._certificateHashes());
      if (attempt !== this._attempt) return null;
    } else {
      params = this._wsParams();
    }
    // Only one candidate: it gets the whole budget.
    const opening = this._open(kind, this.options.connectTimeout, params);
    this._cancelOpen = opening.cancel;
    try {
      const conn = await opening.promise;
      if (kind === 'webtransport') this._wtFailures.forget(this._wtOrigin); // it works after all
      return conn;
    } catch (err) {
      if (attempt !== this._attempt) return null;
      this._transportFailed(err, attempt);
      throw err;
    } finally {
      if (this._cancelOpen === opening.cancel) this._cancelOpen = null;
    }
  }

  /**
   * Both transports, "happy eyeballs" style: WebTransport at once, WebSocket `wtFallbackDelay`
   * later if WebTransport has not opened by then (at once if it failed), and the first to open
   * wins; the other is aborted, or closed if it opens anyway. WebTransport gives up after
   * `wtOpenTimeout`; WebSocket has the attempt's budget. Resolves with the winner, null when the
   * attempt was given up meanwhile, or rejects with the last error when both failed.
   */
  async _race(attempt) {
    const certificateHashes = await this._certificateHashes();
    if (attempt !== this._attempt) return null;
    const { wtFallbackDelay: delay, wtOpenTimeout, connectTimeout } = this.options;
    const conn = await new Promise((resolve, reject) => {
      const racers = new Map(); // kind -> {promise, cancel}
      let over = false;
      let failed = 0;
      let timer = null;
      const end = (settle) => {
        over = true;
        if (timer !== null) this._clock.clearTimeout(timer);
        if (this._cancelOpen === cancelAll) this._cancelOpen = null;
        for (const r of racers.values()) r.cancel(); // no-op for the winner
        settle();
      };
      const cancelAll = () => {
        if (!over) end(() => resolve(null));
      };
      const start = (kind) => {
        if (over || racers.has(kind)) return;
        if (attempt !== this._attempt) {
          cancelAll();
          return;
        }
        const r =
          kind === 'webtransport'
            ? this._open(kind, wtOpenTimeout, this._wtParams(certificateHashes))
            : this._open(kind, connectTimeout, this._wsParams());
        racers.set(kind, r);
        r.promise.then(
          (c) => {
            // Both opened within the same turn: the second is as late as one that opened later.
            if (over) c.close(1000, 'too late');
            else end(() => resolve(c));
          },
          (err) => {
            if (over) return;
            this._transportFailed(err, attempt);
            failed += 1;
            if (failed === 2) end(() => reject(err));
            else if (kind === 'webtransport') start('websocket'); // WebTransport failed: do not wait
          },
        );
      };
      this._cancelOpen = cancelAll;
      start('webtransport');
      if (delay <= MAX_DELAY && !over) {
        timer = this._clock.setTimeout(() => {
          timer = null;
          start('websocket');
        }, Math.max(0, delay));
      }
    });
    if (conn?.kind === 'webtransport') {
      this._wtFailures.forget(this._wtOrigin);
    } else if (conn) {
      // WebSocket won: WebTransport failed or was too slow. Use WebSocket directly for a while,
      // and find out in the background when WebTransport works again.
      this._wtFailures.recordFailure(this._wtOrigin);
      this._scheduleProbe();
    }
    return conn;
  }

  // ---- background WebTransport probes ---------------------------------------------------

  /**
   * While WebTransport is remembered as failing for this origin, tries it again in the background
   * once per `wtRetryInterval` (counted from the failure, or from this page's last probe of the
   * origin, whichever is later), whatever the current connection: a success forgets the failure,
   * so the next connect races WebTransport again; the current session stays where it is.
   */
  _scheduleProbe() {
    if (this._manual || this._probing || this._timers.probe !== null) return;
    const failedAt = this._wtFailures.failedAt(this._wtOrigin);
    if (failedAt === null) return;
    const last = Math.max(failedAt, this._wtFailures.probedAt(this._wtOrigin) ?? -Infinity);
    const wait = Math.max(0, last + this.options.wtRetryInterval - this._now());
    if (!(wait <= MAX_DELAY)) return; // `wtRetryInterval: Infinity`: no probes
    this._set('probe', wait, () => this._probe());
  }

  async _probe() {
    // A stopped client probes no more; its next connect() schedules again.
    if (this._manual || this.state === 'disconnected') return;
    const origin = this._wtOrigin;
    const failedAt = this._wtFailures.failedAt(origin);
    if (failedAt === null) return; // forgotten meanwhile (another client's probe) or expired
    const last = Math.max(failedAt, this._wtFailures.probedAt(origin) ?? -Infinity);
    if (this._now() - last < this.options.wtRetryInterval) {
      this._scheduleProbe(); // another client of this page probed meanwhile
      return;
    }
    this._wtFailures.probing(origin);
    this._probing = true;
    let ok = false;
    try {
      const params = this._wtParams(await this._certificateHashes());
      const conn = await this._open('webtransport', this.options.wtOpenTimeout, params).promise;
      conn.close(1000, 'probe');
      ok = true;
    } catch {
      // Still failing.
    }
    this._probing = false;
    if (ok) {
      this._wtFailures.forget(origin);
      return;
    }
    // Still failing: remembered from now (unless something forgot it meanwhile).
    if (this._wtFailures.failedAt(origin) !== null) this._wtFailures.recordFailure(origin);
    this._scheduleProbe();
  }

  async _startAttempt() {
    const attempt = ++this._attempt;
    this._lastDisconnect = null;
    this._localClose = null;
    this._handshakeError = null;
    // One deadline for the whole attempt: token, transport, handshake.
    this._set('connect', this.options.connectTimeout, () => {
      if (attempt !== this._attempt) return;
      this._attemptFailed(new RtgateError('connect_timeout', 'connect timed out'), attempt);
    });
    let conn;
    try {
      const token = await this._getToken();
      if (attempt !== this._attempt) return;
      const refusal = this._refused.get(token);
      if (refusal) {
        // The server already refused this very token; sending it again can only be refused again.
        this._clear('connect');
        this._attempt += 1;
        this._stop(refusal.reason, refusal.code, {
          message: `getToken() returned the token the server refused (${refusal.reason})`,
          // One `disconnect` per refusal: a session that ended was reported when it closed.
          event: !refusal.reported,
        });
        return;
      }
      this.token = token;
      conn = await this._openTransport(attempt);
      if (!conn) return;
      if (attempt !== this._attempt) {
        conn.close(1000, 'superseded');
        return;
      }
    } catch (err) {
      if (attempt !== this._attempt) return;
      this._attemptFailed(err, attempt);
      return;
    }
    this._conn = conn;
    this._sentToken = this.token;
    conn.onframe = (frame) => this._onFrame(conn, frame);
    conn.onclose = (info) => this._onClose(conn, info);
    const hello = { type: 'connect', v: PROTOCOL_VERSION, token: this.token };
    if (this.options.device) hello.device = this.options.device;
    conn.send(hello);
  }

  /** An attempt that never reached `connected` (and left no close to handle). */
  _attemptFailed(err, attempt) {
    if (attempt !== this._attempt) return;
    this._clear('connect');
    this._cancelOpen?.();
    // Transport errors were already reported one by one while trying each transport.
    if (!err.reported) this._emit('error', err);
    if (this._conn) {
      const conn = this._conn;
      this._localClose = { code: 1006, reason: err.code ?? 'connect_failed' };
      conn.close(1000, 'connect timeout');
      return; // _onClose schedules the retry
    }
    this._attempt += 1;
    if (err.noToken) {
      // No token to send: the server would answer auth_required. Only the app can fix that.
      this._stop('auth_required', 3500, { message: err.message });
      return;
    }
    this._scheduleReconnect();
  }

  _onConnected(conn, frame) {
    this._clear('connect');
    this.session = frame;
    this.transport = conn.kind;
    this._authRetried = false;
    const isReconnect = this._everConnected;
    const attempts = this.backoff.attempts;
    this._everConnected = true;
    this._setState('connected');
    this._touch();
    this._watchSilence(conn);
    // Reset the backoff only once the connection proved stable, so a server that accepts and
    // then drops at once still sees growing delays.
    this._set('stable', this.options.reconnect.stableAfter, () => this.backoff.reset());
    this._emit('connect', { transport: conn.kind, session: frame });
    if (isReconnect) this._emit('reconnect', attempts);
    // Restore server-side state first: the server handles events in order, so the rejoins are
    // processed before anything flushed from the queue.
    this.presence._restore();
    for (const conv of this._conversations.values()) conv._restore();
    for (const sub of this._subscriptions.values()) sub._restore();
    this._flush();
  }

  _touch() {
    this._lastReceived = this._now();
    const hb = this.session?.heartbeat;
    if (!hb) return;
    const ms = (hb.intervalMs ?? 25000) + (hb.timeoutMs ?? 20000);
    const conn = this._conn;
    this._set('heartbeat', ms, () => {
      if (conn !== this._conn) return;
      // The server went silent past its own ping schedule: the path is dead.
      this._localClose = { code: 1006, reason: 'heartbeat_timeout' };
      conn.close(1000, 'heartbeat timeout');
    });
  }

  /**
   * WebTransport only: while nothing arrives from the server for `wtProbeInterval`, one empty
   * datagram per interval. A server that restarted answers it with a QUIC stateless reset, which
   * closes the session now instead of at the heartbeat timeout. Not when the session has no
   * datagrams, nor on WebSocket (TCP notices a restarted peer by itself).
   */
  _watchSilence(conn) {
    const ms = this.options.wtProbeInterval;
    if (conn.kind !== 'webtransport' || typeof conn.probe !== 'function') return;
    if (!(ms > 0 && ms <= MAX_DELAY)) return;
    const check = () => {
      if (conn !== this._conn || this.state !== 'connected') return;
      const silent = this._now() - this._lastReceived;
      if (silent < ms) {
        this._set('silence', Math.min(ms, ms - silent), check);
        return;
      }
      if (conn.probe() === false) return; // no datagrams on this session
      this._set('silence', ms, check);
    };
    this._set('silence', ms, check);
  }

  _onFrame(conn, frame) {
    if (conn !== this._conn || frame === null || typeof frame !== 'object') return;
    if (this.state === 'connected') this._touch();
    switch (frame.type) {
      case 'connected':
        if (this.state !== 'connected') this._onConnected(conn, frame);
        break;
      case 'ping':
        conn.send({ type: 'pong' });
        break;
      case 'ack': {
        const entry = this._inflight.get(frame.id);
        if (entry) {
          this._inflight.delete(frame.id);
          this._settle(entry, null, frame.data ?? null);
        }
        break;
      }
      case 'error':
        this._onError(frame);
        break;
      case 'disconnect':
        this._lastDisconnect = frame;
        break;
      case 'event':
        this._onServerEvent(frame.event, frame.data);
        break;
      default:
        break; // Unknown frame types are ignored (PROTOCOL.md, Versioning).
    }
  }

  _onError(frame) {
    const err = new RtgateError(frame.code, frame.message, frame.details);
    if (this.state !== 'connected' && frame.id === undefined) this._handshakeError = frame.code;
    const entry = frame.id !== undefined ? this._inflight.get(frame.id) : undefined;
    if (frame.code === 'rate_limit_exceeded') {
      this._emit('rate_limit_exceeded', { ...(frame.details ?? {}), event: entry?.event });
    }
    if (entry) {
      this._inflight.delete(frame.id);
      this._settle(entry, err);
    } else {
      this._emit('error', err);
    }
  }

  _onServerEvent(name, data) {
    if (typeof name !== 'string') return;
    const convId = data && typeof data === 'object' ? data.conversationId : undefined;
    if (convId !== undefined) this._conversations.get(convId)?._onEvent(name, data);
    const channel = data && typeof data === 'object' ? data.channel : undefined;
    if (typeof channel === 'string' && channel !== '' && name.startsWith('channel:')) {
      if (name === 'channel:subscribed') this._onServerSubscribed(channel, data);
      else this._subscriptions.get(channel)?._onEvent(name, data);
    }
    if (name === 'presence:update') this.presence._onUpdate(data);
    if (name === 'sys:token-expiring') this._onTokenExpiring(data);
    this._serverEvents._emit(name, data);
    this._emit('event', name, data);
  }

  _onClose(conn, info) {
    if (conn !== this._conn) return;
    this._conn = null;
    this.transport = null;
    this.session = null;
    const wasConnected = this.state === 'connected';
    this._refresh = null; // the next connect sends a fresh token anyway
    for (const name of ['heartbeat', 'stable', 'connect', 'silence']) this._clear(name);
    const frame = this._lastDisconnect;
    const local = this._localClose;
    // Without a disconnect frame, a refused handshake's error frame still names the code.
    const refusal = CLOSE_CODES.has(this._handshakeError) ? this._handshakeError : null;
    const code = frame?.code ?? local?.code ?? (refusal ? CLOSE_CODES.get(refusal) : info?.code) ?? 1006;
    const reason = frame?.reason ?? local?.reason ?? refusal ?? (info?.reason || 'transport_close');
    const message = frame?.message;
    // The server forgot this connection's subscriptions; they subscribe again after the next
    // connect. Before the in-flight requests fail, so a subscribe's `disconnected` is stale.
    for (const sub of this._subscriptions.values()) sub._onDisconnect();
    this._requeueInflight();
    this._attempt += 1;
    if (this._manual) {
      this._setState('disconnected');
      this._emit('disconnect', 'client_disconnect', 1000);
      return;
    }
    const tokenRefused = isTokenRefusal(code) && !local;
    if (tokenRefused) this._refuse(this._sentToken, { reason, code, reported: wasConnected });
    if (!isRetryable(code, frame)) {
      // A terminal refusal of the token: a different token from getToken gets one attempt.
      if (tokenRefused && this.options.getToken && !this._authRetried) {
        this._authRetried = true;
        if (wasConnected) this._emit('disconnect', reason, code);
        this._scheduleReconnect();
        return;
      }
      this._stop(reason, code, { message });
      return;
    }
    if (tokenRefused && !this.options.getToken) {
      // token_expired with a fixed token: it can only be refused again.
      this._stop(reason, code, { message });
      return;
    }
    if (wasConnected) this._emit('disconnect', reason, code);
    this._scheduleReconnect(frame?.retryAfterMs);
  }

  _refuse(token, refusal) {
    if (typeof token !== 'string') return;
    this._refused.delete(token);
    this._refused.set(token, refusal);
    if (this._refused.size > MAX_REFUSED) this._refused.delete(this._refused.keys().next().value);
  }

  /**
   * Stops for good and tells the app: `disconnect` (unless `event: false`, when no connection
   * just ended), then `stopped` with whether a new token is what it takes.
   */
  _stop(reason, code, { message, event = true } = {}) {
    this._clear('reconnect');
    this._clear('probe');
    this._setState('disconnected');
    if (event) this._emit('disconnect', reason, code);
    const info = { reason, code, auth: isTokenRefusal(code) };
    if (message) info.message = message;
    this._emit('stopped', info);
  }

  _scheduleReconnect(retryAfterMs) {
    const { maxAttempts } = this.options.reconnect;
    if (this.backoff.attempts >= maxAttempts) {
      this._clear('probe');
      this._setState('disconnected');
      this._emit('reconnect_failed');
      return;
    }
    let delay = this.backoff.next();
    // `server_shutdown` / `server_busy`: the server already spread its clients with a random
    // retryAfterMs; wait at least that, jittered further by the backoff step.
    if (typeof retryAfterMs === 'number' && retryAfterMs > delay) delay = retryAfterMs;
    this._setState('reconnecting');
    this._emit('reconnect_attempt', this.backoff.attempts, delay);
    this._set('reconnect', delay, () => {
      if (this._manual) return;
      this._startAttempt();
    });
  }

  // ---- token refresh ---------------------------------------------------------------------

  /**
   * `sys:token-expiring`: the server ends this session with `token_expired` at `expiresAt` unless
   * a fresh token reaches it first. Only `getToken` can supply one; with a fixed `token` the
   * session just ends, and the reconnection rules take it from there.
   */
  _onTokenExpiring(data) {
    const expiresAt = data && typeof data === 'object' ? data.expiresAt : undefined;
    if (this._refresh) {
      // One refresh at a time. A notice meanwhile may be about the token being sent (the server
      // warns at once when little of it remains): remembered, answered when this one succeeds.
      this._refresh.notice = typeof expiresAt === 'number' ? expiresAt : Infinity;
      return;
    }
    this._startRefresh();
  }

  async _startRefresh() {
    if (!this.options.getToken || this._manual || !this._conn || this.state !== 'connected') return;
    const refresh = { conn: this._conn, notice: null };
    this._refresh = refresh;
    // A close or disconnect() clears `_refresh`: a token arriving after that is not sent (a
    // request made offline would wait in the queue and reach the next session).
    const current = () => this._refresh === refresh && this._conn === refresh.conn && this.state === 'connected';
    let token;
    try {
      token = await this._getToken();
    } catch (err) {
      if (current()) this._refreshFailed(err instanceof RtgateError ? err : new RtgateError('token_failed', String(err?.message ?? err)));
      return;
    }
    if (!current()) return;
    if (token === this._sentToken) {
      // The session already runs on it: sending it cannot move the expiry.
      this._refreshFailed(new RtgateError('token_unchanged', 'getToken() returned the token this session already has'));
      return;
    }
    this._call('sys:refresh', { token }, {}, (err, ack) => {
      if (this._refresh !== refresh) return; // the session ended meanwhile
      if (err) this._refreshFailed(err);
      else this._refreshed(refresh, token, ack);
    });
  }

  _refreshed(refresh, token, ack) {
    this._refresh = null;
    // The session runs on the new token now: the REST calls use it, and a close that refuses
    // the token later (token_expired at the new expiry, token_revoked) refuses this one.
    this.token = token;
    this._sentToken = token;
    const expiresAt = ack && typeof ack === 'object' ? ack.expiresAt : undefined;
    if (typeof expiresAt === 'number' && this.session) this.session = { ...this.session, expiresAt };
    this._emit('token_refreshed', { expiresAt });
    // A notice for an older expiry was for the token just replaced; one for this expiry (or a
    // later one) is for the new token, and needs a refresh of its own.
    if (refresh.notice !== null && !(refresh.notice < expiresAt)) this._startRefresh();
  }

  /**
   * The session stays up and ends with `token_expired` at the old expiry; the reconnect after it
   * asks getToken again. No retry here: a notice during a failed refresh was for the same token.
   */
  _refreshFailed(err) {
    this._refresh = null;
    this._emit('token_refresh_failed', err);
  }

  // ---- requests and the queue ----------------------------------------------------------

  /**
   * Sends an event and resolves with its ack `data`, or rejects with an RtgateError whose `code`
   * is the server's. Issued while disconnected, it waits in the queue (bounded by `maxQueue`).
   */
  request(event, data, opts = {}) {
    return new Promise((resolve, reject) => {
      this._call(event, data, opts, (err, value) => (err ? reject(err) : resolve(value)));
    });
  }

  /**
   * `request` with a callback, `done(err, value)`, called synchronously while the ack or error
   * frame is handled: a reply and the server pushes right behind it (decoded from the same chunk,
   * say) reach the caller in the order the server sent them, which a promise continuation cannot
   * promise. For the helpers in this package.
   */
  _call(event, data, opts, done) {
    const entry = {
      order: ++this._order,
      event,
      data,
      ack: true,
      retry: Boolean(opts.retry),
      done,
      timer: null,
      id: null,
    };
    const timeout = opts.timeout ?? this.options.requestTimeout;
    if (timeout > 0 && Number.isFinite(timeout)) {
      entry.timer = this._clock.setTimeout(() => {
        entry.timer = null;
        this._forget(entry);
        done(new RtgateError('timeout', `no answer to ${event} within ${timeout} ms`));
      }, timeout);
    }
    this._submit(entry);
  }

  /**
   * Sends an event without asking for an ack. `volatile: true` sends it as a WebTransport
   * datagram when possible and drops it (returns false) when not connected, instead of queueing.
   */
  emit(event, data, opts = {}) {
    if (opts.volatile) {
      if (!this._conn || this.state !== 'connected') return false;
      const frame = { type: 'event', event };
      if (data !== undefined) frame.data = data;
      this._conn.sendVolatile(frame);
      return true;
    }
    const entry = { order: ++this._order, event, data, ack: false, retry: false };
    try {
      this._submit(entry);
    } catch (err) {
      this._emit('error', err);
      return false;
    }
    return true;
  }

  /** Listens to one server-pushed event; returns the function that removes the listener. */
  onEvent(name, fn) {
    return this._serverEvents.on(name, fn);
  }

  offEvent(name, fn) {
    this._serverEvents.off(name, fn);
  }

  /** The chat helper for one conversation (one object per id). */
  conversation(id) {
    let conv = this._conversations.get(id);
    if (!conv) this._conversations.set(id, (conv = new Conversation(this, id)));
    return conv;
  }

  /**
   * Subscribes to a channel and returns its Subscription, which subscribes again after every
   * reconnect (recovering missed publications) until `unsubscribe()`. One Subscription per channel
   * and client: a second `subscribe` to the same channel throws `already_subscribed` (use
   * `subscription(channel)`, or `removeSubscription` first).
   */
  subscribe(channel, options = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    if (this._subscriptions.has(channel)) {
      throw new RtgateError(
        'already_subscribed',
        `this client already has a subscription to ${channel}: use client.subscription(channel)`,
      );
    }
    const sub = new Subscription(this, channel, options);
    this._subscriptions.set(channel, sub);
    sub.subscribe();
    return sub;
  }

  /**
   * `channel:subscribed`: the backend subscribed this connection to `channel`. The app's own
   * Subscription to it is reused (its listeners stay); otherwise one is made, as if by
   * `subscribe(channel)`, so it also subscribes again after a reconnect. `server_subscribed`
   * hands it over before its `subscribed` event and publications: listeners attached there miss
   * none of them.
   */
  _onServerSubscribed(channel, data) {
    let sub = this._subscriptions.get(channel);
    if (!sub) this._subscriptions.set(channel, (sub = new Subscription(this, channel)));
    const gen = sub._onServerSubscribing();
    this._emit('server_subscribed', sub);
    sub._onServerSubscribed(gen, data);
  }

  /** The Subscription to `channel`, or null. */
  subscription(channel) {
    return this._subscriptions.get(channel) ?? null;
  }

  /** Every Subscription of this client, whatever its state. */
  subscriptions() {
    return [...this._subscriptions.values()];
  }

  /** Unsubscribes and forgets a Subscription (or the one to a channel name). */
  removeSubscription(subOrChannel) {
    const channel = typeof subOrChannel === 'string' ? subOrChannel : subOrChannel?.channel;
    const sub = this._subscriptions.get(channel);
    if (!sub || (typeof subOrChannel !== 'string' && sub !== subOrChannel)) return;
    sub.unsubscribe();
    sub._removed = true;
    this._subscriptions.delete(channel);
  }

  /** Number of sends waiting for a connection. */
  get queued() {
    return this._queue.length;
  }

  _submit(entry) {
    if (this.state === 'connected' && this._conn) {
      this._write(entry);
      return;
    }
    if (this._queue.length >= this.options.maxQueue) {
      const err = new RtgateError('queue_full', `send queue full (${this.options.maxQueue})`);
      if (entry.ack) {
        this._settle(entry, err);
        return;
      }
      throw err;
    }
    this._queue.push(entry);
  }

  _write(entry) {
    const frame = { type: 'event', event: entry.event };
    if (entry.ack) {
      entry.id = this._nextId++;
      frame.id = entry.id;
      this._inflight.set(entry.id, entry);
    }
    if (entry.data !== undefined) frame.data = entry.data;
    this._conn.send(frame);
  }

  _flush() {
    const pending = this._queue.sort((a, b) => a.order - b.order);
    this._queue = [];
    for (const entry of pending) {
      if (!this._conn || this.state !== 'connected') {
        this._queue.push(entry);
        continue;
      }
      this._write(entry);
    }
  }

  /**
   * The connection ended with requests unanswered. Their outcome is unknown (PROTOCOL.md):
   * retryable ones (chat sends, deduplicated by clientMessageId) go back to the queue in their
   * original order; the others fail with `disconnected`.
   */
  _requeueInflight() {
    const entries = [...this._inflight.values()];
    this._inflight.clear();
    for (const entry of entries) {
      entry.id = null;
      if (entry.retry) this._queue.push(entry);
      else this._settle(entry, new RtgateError('disconnected', 'connection lost before the answer'));
    }
    this._queue.sort((a, b) => a.order - b.order);
  }

  _forget(entry) {
    if (entry.id !== null) this._inflight.delete(entry.id);
    const i = this._queue.indexOf(entry);
    if (i >= 0) this._queue.splice(i, 1);
  }

  _settle(entry, err, value) {
    if (entry.timer) this._clock.clearTimeout(entry.timer);
    entry.timer = null;
    entry.done?.(err ?? null, value);
  }

  /** A JSON GET against the server's REST API with the current token. */
  async _getJson(path) {
    const res = await this._fetch(`${this.url}${path}`, {
      headers: { Authorization: `Bearer ${this.token}` },
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new RtgateError(body.code ?? `http_${res.status}`, body.message, body);
    return body;
  }
}

/**
 * Forgets where WebTransport failed (README, Transport choice): in this page, and in
 * localStorage (or `storage`) for every origin. For tests, or a page that knows the network changed.
 */
export function forgetTransportChoice(storage) {
  forgetWtFailures(storage);
}

/** The origin of a URL, or the URL itself when it has none. */
function originOf(url) {
  try {
    const { origin } = new URL(url);
    return origin && origin !== 'null' ? origin : url;
  } catch {
    return url;
  }
}

export default RtgateClient;
