// A channel subscription that survives reconnects (the wire contract: "Channels" in the
// protocol). States: `unsubscribed` → `subscribing` → `subscribed`; `subscribing` means the app
// wants it and the server has not (yet, or any more) confirmed it: while the client is offline,
// while a subscribe waits for its token or its ack, and while a refused-for-now subscribe
// (`unavailable`) waits for its backoff delay.
//
// Position and recovery: the subscription keeps `offset` and `epoch`, from the subscribe ack and
// from every publication. After a reconnect (or a `channel:unsubscribed` that asks for it) it
// subscribes again with `since` = that position, so the publications it missed arrive in the ack,
// oldest first, and are delivered before any live one; `recovered` in the `subscribed` event says
// whether that worked (false: the app should reload its state). A publication at or below the
// position is a duplicate and is dropped.

import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { RtgateError } from './transports.js';

/** Subscribe refusals that may succeed later: retried with the client's backoff. */
const RETRYABLE = new Set(['unavailable', 'internal_error', 'overloaded', 'rate_limit_exceeded']);

/** `channel:unsubscribed` codes after which the client subscribes again by itself. */
const RESUBSCRIBE = new Set(['subscription_expired', 'state_lost']);

function isPosition(p) {
  return p !== null && typeof p === 'object' && Number.isSafeInteger(p.offset) && p.offset >= 0 && typeof p.epoch === 'string';
}

/** The presence list of a subscribe ack: an array of clients, whichever shape the server used. */
function presenceList(p) {
  if (Array.isArray(p)) return p;
  if (Array.isArray(p?.clients)) return p.clients;
  return undefined;
}

export class Subscription extends Emitter {
  /**
   * Made by `client.subscribe(channel, options)`, not directly.
   * @param {import('./rtgate.js').RtgateClient} client
   * @param {string} channel
   */
  constructor(client, channel, options = {}) {
    super();
    if (options.since !== undefined && !isPosition(options.since)) {
      throw new TypeError('`since` must be {offset: integer >= 0, epoch: string}');
    }
    if (options.getToken !== undefined && typeof options.getToken !== 'function') {
      throw new TypeError('`getToken` must be a function');
    }
    this.client = client;
    this.channel = channel;
    /** @type {'unsubscribed'|'subscribing'|'subscribed'} */
    this.state = 'unsubscribed';
    /** The offset of the last publication delivered, or where the history stood; null if unknown. */
    this.offset = options.since?.offset ?? null;
    /** The epoch `offset` belongs to; null if unknown, '' in a channel without history. */
    this.epoch = options.since?.epoch ?? null;
    this.options = {
      getToken: options.getToken,
      data: options.data,
      recover: options.recover ?? true,
    };
    // The app's own `since` is used until a subscribe succeeds, even without `recover`.
    this._since = options.since !== undefined;
    this._gen = 0; // increments whenever an attempt in progress must be forgotten
    this._pending = false; // an attempt (token, then request) is in progress on this connection
    this._onServer = false; // a subscribe went out on this connection and nothing undid it since
    this._retryTimer = null;
    this._backoff = new Backoff(client.options.reconnect, client._random);
    this._waiters = new Set();
    this._removed = false;
    /** The last `subscribed` event's context. */
    this.lastSubscribed = null;
  }

  // ---- the app's side ------------------------------------------------------------------------

  /** Starts subscribing (no-op unless `unsubscribed`); kept across reconnects until unsubscribe(). */
  subscribe() {
    if (this._removed) throw new RtgateError('removed', `the subscription to ${this.channel} was removed from its client`);
    if (this.state !== 'unsubscribed') return;
    this._backoff.reset();
    this._setSubscribing('subscribe_called', 'subscribe() called');
    this._start();
  }

  /** Ends the subscription here and on the server; it stays `unsubscribed` until subscribe(). */
  unsubscribe() {
    if (this.state === 'unsubscribed') return;
    const onServer = this._onServer;
    this._setUnsubscribed('unsubscribe_called', 'unsubscribe() called');
    if (onServer && this.client.connected) {
      // In order after the subscribe, so the server ends unsubscribed even if that subscribe's
      // ack is still on its way (it is ignored: the attempt was forgotten).
      this.client._call('channel:unsubscribe', { channel: this.channel }, {}, (err) => {
        if (err && err.code !== 'disconnected') this._emit('error', err);
      });
    }
  }

  /**
   * Resolves with the `subscribed` context once subscribed (at once if it is); rejects with the
   * reason when the subscription is or becomes unsubscribed (`not_subscribed`, or the refusal:
   * `permission_denied`…), or with `timeout` after `timeoutMs` (none by default).
   */
  ready(timeoutMs = 0) {
    if (this.state === 'subscribed') return Promise.resolve(this.lastSubscribed);
    if (this.state === 'unsubscribed') {
      return Promise.reject(new RtgateError('not_subscribed', `not subscribed to ${this.channel}`));
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject, timer: null };
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        waiter.timer = this.client._clock.setTimeout(() => {
          this._waiters.delete(waiter);
          reject(new RtgateError('timeout', `not subscribed to ${this.channel} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._waiters.add(waiter);
    });
  }

  /** Publishes (where the namespace lets clients); resolves with `{offset?, epoch?}`. */
  publish(data) {
    return this._request('channel:publish', { channel: this.channel, data });
  }

  /** Who is subscribed: `{clients: [{clientId, userId, deviceId, data?}]}`. */
  presence() {
    return this._request('channel:presence', { channel: this.channel });
  }

  /** `{clients, users}`: how many connections and distinct users are subscribed. */
  presenceStats() {
    return this._request('channel:presence-stats', { channel: this.channel });
  }

  /**
   * Reads the channel's history: `{publications, offset, epoch}`. Not passed through
   * `publication` and not counted in the position.
   */
  history({ since, limit, reverse } = {}) {
    const data = { channel: this.channel };
    if (since !== undefined) data.since = since;
    if (limit !== undefined) data.limit = limit;
    if (reverse !== undefined) data.reverse = reverse;
    return this._request('channel:history', data);
  }

  /**
   * The request, once subscribed: these events need a subscription on this connection. Waits up
   * to the client's `requestTimeout` for one; an unsubscribed subscription rejects at once.
   */
  _request(event, data) {
    if (this.state === 'subscribed') return this.client.request(event, data);
    return this.ready(this.client.options.requestTimeout).then(() => this._request(event, data));
  }

  // ---- states ----------------------------------------------------------------------------------

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  _setSubscribing(code, reason) {
    this._setState('subscribing');
    this._emit('subscribing', { code, reason });
  }

  /** Stops for good (until subscribe()): forgets any attempt, tells the app, fails the waiters. */
  _setUnsubscribed(code, reason, err) {
    this._forget();
    this._setState('unsubscribed');
    if (err) this._emit('error', err);
    this._emit('unsubscribed', { code, reason });
    const failure = err ?? new RtgateError('not_subscribed', `not subscribed to ${this.channel}: ${reason}`);
    for (const w of this._waiters) {
      if (w.timer !== null) this.client._clock.clearTimeout(w.timer);
      w.reject(failure);
    }
    this._waiters.clear();
  }

  /** Forgets the attempt in progress and any retry; the server's side is gone or being undone. */
  _forget() {
    this._gen += 1;
    this._pending = false;
    this._onServer = false;
    this._clearRetry();
  }

  _clearRetry() {
    if (this._retryTimer !== null) {
      this.client._clock.clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
  }

  // ---- subscribing -----------------------------------------------------------------------------

  /** One attempt on the current connection: the token (when there is `getToken`), then the request. */
  _start() {
    if (this.state !== 'subscribing' || this._pending || !this.client.connected) return;
    this._clearRetry();
    this._pending = true;
    const gen = ++this._gen;
    const conn = this.client._conn;
    const { getToken } = this.options;
    if (!getToken) {
      this._send(gen, conn, undefined);
      return;
    }
    let token;
    try {
      token = getToken(this.channel);
    } catch (err) {
      this._tokenFailed(gen, err);
      return;
    }
    if (token && typeof token.then === 'function') {
      token.then(
        (t) => this._send(gen, conn, t),
        (err) => this._tokenFailed(gen, err),
      );
    } else {
      // A synchronous token keeps the subscribe ahead of the sends queued while offline.
      this._send(gen, conn, token);
    }
  }

  _send(gen, conn, token) {
    if (gen !== this._gen || conn !== this.client._conn || !this.client.connected) return;
    const data = { channel: this.channel };
    if (this.options.getToken) {
      if (typeof token !== 'string' || token === '') {
        this._setUnsubscribed('no_token', 'getToken() returned no token', new RtgateError('no_token', `getToken() returned no token for ${this.channel}`));
        return;
      }
      data.token = token;
    }
    const since = (this.options.recover || this._since) && this.epoch ? { offset: this.offset, epoch: this.epoch } : null;
    if (since && isPosition(since)) data.since = since;
    if (this.options.data !== undefined) data.data = this.options.data;
    const wasRecovering = data.since !== undefined;
    this._onServer = true;
    // No timeout: the answer comes, or the connection ends (the heartbeat notices a dead one).
    // A timed-out subscribe would be of unknown outcome, and its retry `already_subscribed`.
    this.client._call('channel:subscribe', data, { timeout: 0 }, (err, ack) => this._onReply(gen, wasRecovering, err, ack));
  }

  _tokenFailed(gen, err) {
    if (gen !== this._gen) return;
    this._pending = false;
    // Like the client's own getToken: a token service that is down comes back, so retry.
    this._emit('error', err instanceof RtgateError ? err : new RtgateError('token_failed', String(err?.message ?? err)));
    this._scheduleRetry();
  }

  _scheduleRetry() {
    this._clearRetry();
    const delay = this._backoff.next();
    this._retryTimer = this.client._clock.setTimeout(() => {
      this._retryTimer = null;
      this._start(); // offline: the next connect starts it instead
    }, delay);
  }

  _onReply(gen, wasRecovering, err, ack) {
    if (gen !== this._gen) return; // unsubscribed, disconnected or superseded meanwhile
    this._pending = false;
    if (err) {
      this._onServer = false;
      if (err.code === 'disconnected') return; // the next connect subscribes again
      if (RETRYABLE.has(err.code)) {
        this._emit('error', err);
        this._scheduleRetry();
        return;
      }
      // A subscription token that had already expired (a cached one, say): ask getToken once
      // more, as the client does for its own token; a second refusal is final.
      if (err.code === 'permission_denied' && err.details?.reason === 'token_expired'
        && this.options.getToken && !this._retriedExpired) {
        this._retriedExpired = true;
        this._onServer = false;
        this._start();
        return;
      }
      // permission_denied, bad_channel, limit_exceeded, validation_failed, already_subscribed…:
      // the same subscribe would be refused again.
      this._setUnsubscribed(err.code, err.message, err);
      return;
    }
    this._onSubscribed(ack && typeof ack === 'object' ? ack : {}, wasRecovering);
  }

  _onSubscribed(ack, wasRecovering) {
    this._backoff.reset();
    this._retriedExpired = false;
    this._since = false;
    const recovered = ack.recovered === true;
    const publications = Array.isArray(ack.publications) ? ack.publications : [];
    // Not recovered: what came before is gone (another epoch, or history too short); the position
    // restarts from the ack's.
    if (!recovered) this.offset = null;
    if (typeof ack.epoch === 'string') this.epoch = ack.epoch;
    const ctx = { channel: this.channel, recovered, wasRecovering, offset: ack.offset, epoch: ack.epoch };
    const presence = presenceList(ack.presence);
    if (presence) ctx.presence = presence;
    this.lastSubscribed = ctx;
    const gen = this._gen;
    this._setState('subscribed');
    this._emit('subscribed', ctx);
    for (const w of this._waiters) {
      if (w.timer !== null) this.client._clock.clearTimeout(w.timer);
      w.resolve(ctx);
    }
    this._waiters.clear();
    // Missed publications first, oldest first; live ones only come after this ack.
    for (const pub of publications) {
      if (gen !== this._gen) return; // a listener unsubscribed
      this._deliver(pub);
    }
    if (gen !== this._gen) return;
    if (Number.isSafeInteger(ack.offset) && (this.offset === null || ack.offset > this.offset)) {
      this.offset = ack.offset;
    }
  }

  _deliver(pub) {
    if (pub === null || typeof pub !== 'object') return;
    if (Number.isSafeInteger(pub.offset)) {
      if (this.offset !== null && pub.offset <= this.offset) return; // a duplicate
      this.offset = pub.offset;
    }
    this._emit('publication', { ...pub, channel: this.channel });
  }

  // ---- the client's side -------------------------------------------------------------------------

  /** A connection is up: subscribe if the app wants to be. */
  _restore() {
    this._start();
  }

  /** The connection ended: the server forgot the subscription; the next connect subscribes again. */
  _onDisconnect() {
    this._forget();
    if (this.state === 'subscribed') this._setSubscribing('transport_closed', 'connection lost');
  }

  /**
   * The backend subscribed this connection (`channel:subscribed`), first step: the server has the
   * subscription now, so an attempt of ours in progress is forgotten (its answer, an
   * `already_subscribed` say, is stale). Returns the generation the second step must still see.
   */
  _onServerSubscribing() {
    const wasSubscribed = this.state === 'subscribed';
    this._forget();
    this._onServer = true; // an unsubscribe() from here on tells the server
    const gen = this._gen; // before the events: a listener that unsubscribes changes it
    if (!wasSubscribed) this._setSubscribing('server_subscribed', 'subscribed by the server');
    return gen;
  }

  /** Second step, after the client's `server_subscribed` listeners: the push is the ack. */
  _onServerSubscribed(gen, data) {
    if (gen !== this._gen) return; // a listener unsubscribed, or the connection ended
    this._onSubscribed(data, false);
  }

  /** A server push about this channel. */
  _onEvent(name, data) {
    if (this.state !== 'subscribed') return; // about a subscription already ended here
    switch (name) {
      case 'channel:publication':
        this._deliver(data);
        break;
      case 'channel:join':
        this._emit('join', data);
        break;
      case 'channel:leave':
        this._emit('leave', data);
        break;
      case 'channel:unsubscribed': {
        const code = typeof data.code === 'string' ? data.code : 'unsubscribed';
        const reason = typeof data.reason === 'string' ? data.reason : '';
        // Known codes as the contract says; a code a newer server adds follows its `resubscribe`.
        const again = RESUBSCRIBE.has(code) || (code !== 'unsubscribed' && data.resubscribe === true);
        if (!again) {
          this._setUnsubscribed(code, reason);
          return;
        }
        this._forget();
        this._setSubscribing(code, reason);
        this._start(); // a fresh token from getToken, and `since` to recover (or learn it failed)
        break;
      }
      default:
        break;
    }
  }
}
