// Type declarations for the rtgate browser client (src/rtgate.js and the modules it re-exports).
// The wire contract behind them is PROTOCOL.md in the rtgate repository.

export declare const PROTOCOL_VERSION: 1;

export type TransportKind = 'webtransport' | 'websocket';
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** An Error carrying the server's machine-readable code (or a client-side one, see README). */
export declare class RtgateError extends Error {
  constructor(code: string, message?: string, details?: unknown);
  readonly name: 'RtgateError';
  /** e.g. `unknown_event`, `validation_failed`, `rate_limit_exceeded`, `timeout`, `disconnected`, `queue_full`. */
  readonly code: string;
  readonly details?: any;
}

export interface ReconnectOptions {
  /** Base delay of the first reconnect, ms. Default 1000. */
  initialDelay?: number;
  /** Growth factor of the base per attempt. Default 2. */
  multiplier?: number;
  /**
   * Cap of the *base* delay, ms. Default 10000. The jitter is applied after the cap, so an actual
   * delay can reach `maxDelay × (1 + randomization)`.
   */
  maxDelay?: number;
  /**
   * Each delay is drawn uniformly from `[base × (1 − r), base × (1 + r))`, except the first
   * attempt's, drawn from `[0, base × 2r)` (1 ms with `r` = 0). Default 0.5.
   */
  randomization?: number;
  /** Attempts before giving up with `reconnect_failed`. Default Infinity. */
  maxAttempts?: number;
  /** Connected this long (ms) counts as stable and resets the backoff. Default 10000. */
  stableAfter?: number;
}

export interface CertificateHash {
  algorithm: 'sha-256';
  value: Uint8Array;
}

/** A connection as the transports hand it to the client; for custom transports and tests. */
export interface TransportConnection {
  readonly kind: TransportKind;
  send(frame: object): void;
  sendVolatile(frame: object): void;
  close(code?: number, reason?: string): void;
  /**
   * WebTransport only, optional: sends an empty datagram (a liveness probe the server ignores);
   * returns false when the session has no datagrams. The client calls it while the server is silent.
   */
  probe?(): boolean;
  onframe: (frame: any) => void;
  onclose: (info: { code: number; reason: string }) => void;
}

export type TransportOpener = (params: {
  url: string;
  certificateHashes?: CertificateHash[];
  signal?: AbortSignal;
  /** The `WebSocket` option, passed to the WebSocket opener. */
  WebSocket?: new (url: string) => WebSocket;
}) => Promise<TransportConnection>;

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** ms since the epoch. Default `Date.now()`. */
  now?(): number;
}

/** The part of `localStorage` the client uses to remember WebTransport failures. */
export interface FailureStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** The server's HTTP origin, e.g. `http://127.0.0.1:3000`. Default: the page's origin. */
  url?: string;
  /** WebSocket URL. Default: `ws(s)://<url host>/ws`. */
  wsUrl?: string;
  /** WebTransport URL. Default: `https://<url hostname>:<wtPort>/wt`. */
  wtUrl?: string;
  /** WebTransport UDP port used for the default `wtUrl`. Default 4433. */
  wtPort?: number;
  /**
   * Called before every connect and reconnect; return a fresh JWT. Throw when none can be had right
   * now (the attempt is retried with backoff); return `''` when nobody is signed in (the client
   * stops with `auth_required`). Returning a token the server already refused stops the client
   * (README, Reconnection rules). Also called when the server warns that the session's token is
   * about to expire (`sys:token-expiring`), to replace it without reconnecting (README, Token
   * refresh).
   */
  getToken?: () => string | Promise<string>;
  /** A fixed token, when `getToken` is not given. */
  token?: string;
  /** Device id sent in `connect` (1–64 chars of `[A-Za-z0-9._:-]`). */
  device?: string;
  /**
   * `auto` (default): WebTransport when available, raced against WebSocket (see
   * `wtFallbackDelay`), and WebSocket alone while a WebTransport failure is remembered; or one
   * transport, forced (the failure memory is not consulted then).
   */
  transport?: 'auto' | TransportKind;
  /**
   * `auto` (default): fetch `<url>/cert-hash` and pass it as `serverCertificateHashes` when the
   * server uses its self-signed dev certificate; `none`: never; or the SHA-256 bytes themselves.
   */
  certificateHash?: 'auto' | 'none' | ArrayLike<number>;
  /**
   * With both transports as candidates, how long WebTransport opens alone before WebSocket is
   * started alongside it, ms; the first to open wins, and WebTransport fails over to WebSocket at
   * once when it fails outright. Default 300: long enough for WebTransport to open on a working
   * network (two round trips), short enough that a network dropping UDP costs little. `0` starts
   * both together; `Infinity` starts WebSocket only once WebTransport failed or timed out.
   */
  wtFallbackDelay?: number;
  /**
   * How long an opening WebTransport is given up after, ms, when WebSocket is a candidate too, and
   * a background probe. Default 5000. (A forced WebTransport has `connectTimeout`.)
   */
  wtOpenTimeout?: number;
  /**
   * How long a WebTransport failure (WebSocket won the race) is remembered for the origin of the
   * WebTransport URL, ms: meanwhile every connect to it goes straight to WebSocket. In
   * `localStorage` (`rtgate:wt-failed:<origin>`) when usable, else in memory. Default 600000 (10 min).
   */
  wtFailureMemory?: number;
  /**
   * While a WebTransport failure is remembered, a WebTransport session is opened and closed in the
   * background at most once per this many ms; when it opens, the failure is forgotten and the next
   * connect uses WebTransport (the current WebSocket session stays). Default 60000 (1 min).
   */
  wtRetryInterval?: number;
  /**
   * While connected over WebTransport and nothing arrives from the server for this many ms, an
   * empty datagram is sent, and one more every interval while the silence lasts, so that a
   * restarted server's stateless reset ends the session within about a second. Costs one small
   * packet per second per silent client. `0` turns it off. Default 1000.
   */
  wtProbeInterval?: number;
  /**
   * Where WebTransport failures are remembered. Default: `localStorage` when the page has a usable
   * one; `null`: in this page's memory only.
   */
  storage?: FailureStorage | null;
  /** Whole connect attempt (token, transport, handshake), ms. Default 20000. */
  connectTimeout?: number;
  /** Default `request` timeout, ms (0 = none). Default 10000. */
  requestTimeout?: number;
  /** Sends kept while disconnected. Default 100. */
  maxQueue?: number;
  /** Connect from the constructor. Default true. */
  autoConnect?: boolean;
  /**
   * The WebSocket constructor to use instead of `globalThis.WebSocket`: for Node before 22, which
   * has none (e.g. the `ws` package's, or Node 20's own behind `--experimental-websocket`).
   */
  WebSocket?: new (url: string) => WebSocket;
  reconnect?: ReconnectOptions;
  /** Test seams. */
  transports?: Partial<Record<TransportKind, TransportOpener>>;
  clock?: Clock;
  random?: () => number;
  fetch?: typeof fetch;
}

/** The server's `connected` frame. */
export interface SessionInfo {
  type: 'connected';
  v: number;
  sessionId: string;
  userId: string;
  deviceId: string;
  instanceId: string;
  /** When the session's token expires, ms since the epoch; updated by each token refresh. */
  expiresAt: number;
  heartbeat: { intervalMs: number; timeoutMs: number };
  limits: { maxFrameBytes: number };
}

export interface RateLimitInfo {
  limit?: number;
  windowMs?: number;
  resetAt?: number;
  /** The event that was refused, when it was a request. */
  event?: string;
}

export interface PresenceStatus {
  userId: string;
  online: boolean;
  /** Devices online, from the last snapshot (subscribe/query ack). */
  devices?: number;
  /** The device whose connect or disconnect caused the last update. */
  deviceId?: string;
  /** When the last update happened, Unix ms. */
  at?: number;
  /**
   * The server's presence version of this state (strictly increasing per user); absent from an
   * older server. Entries with a version at or below the one applied are ignored.
   */
  version?: number;
}

/** One entry of a `presence:subscribe` / `presence:query` ack. */
export interface PresenceSnapshot {
  userId: string;
  online: boolean;
  devices: number;
  version?: number;
}

/** Why the client stopped reconnecting by itself (the `stopped` event). */
export interface StopInfo {
  /**
   * The code name: `token_expired`, `invalid_token`, `auth_required`, `token_revoked`,
   * `force_disconnect`, `protocol_error`, `unsupported_version`, …
   */
  reason: string;
  /** Its numeric close code (3002, 3501, 3500, 3505, 3504, 3502, 3503, …). */
  code: number;
  /**
   * True when the token was refused (`token_expired`, `auth_required`, `invalid_token`,
   * `token_revoked`): the user must sign in again, then call `connect()`.
   */
  auth: boolean;
  /** The server's or the client's explanation, for humans and logs. */
  message?: string;
}

export interface ClientEvents {
  state: (state: ConnectionState) => void;
  /** Every time a connection is established (first and after reconnects). */
  connect: (info: { transport: TransportKind; session: SessionInfo }) => void;
  /**
   * A connection ended, or a handshake was refused for good; `reason` is the server's snake_case
   * code name or a client one.
   */
  disconnect: (reason: string, code: number) => void;
  /**
   * The client stopped reconnecting by itself (a terminal close, or a token the server refused);
   * `state` is `disconnected`. Emitted after `disconnect`.
   */
  stopped: (info: StopInfo) => void;
  reconnect_attempt: (attempt: number, delayMs: number) => void;
  /** A reconnect succeeded after `attempts` attempts. */
  reconnect: (attempts: number) => void;
  reconnect_failed: () => void;
  error: (err: RtgateError | Error) => void;
  rate_limit_exceeded: (info: RateLimitInfo) => void;
  presence: (status: PresenceStatus) => void;
  /** Every server-pushed event. */
  event: (name: string, data: any) => void;
  /**
   * A token refresh succeeded: after `sys:token-expiring`, `getToken()` gave a new token and the
   * server accepted it (`sys:refresh`). The session now runs on it (`client.token`) and ends at
   * `expiresAt` (ms since the epoch, also `client.session.expiresAt`).
   */
  token_refreshed: (info: { expiresAt: number }) => void;
  /**
   * A token refresh failed: `getToken()` threw (`token_failed`) or returned no token
   * (`auth_required`) or the session's own token (`token_unchanged`), or the server refused the
   * new one (`forbidden`, `validation_failed`) or did not answer (`timeout`). The connection stays
   * up until the old token expires, then the usual reconnection rules apply.
   */
  token_refresh_failed: (err: RtgateError) => void;
  /**
   * The server subscribed this connection to a channel (`channel:subscribed`): the app's own
   * Subscription to it, or a new one made for it. Emitted before the Subscription's `subscribed`
   * event and the publications that came with it, so listeners attached here see them all.
   */
  server_subscribed: (sub: Subscription<unknown>) => void;
}

export interface RequestOptions {
  /** ms; 0 = none. Default: the client's `requestTimeout`. */
  timeout?: number;
  /** Keep it queued and resend it after a reconnect when its answer was lost (idempotent events). */
  retry?: boolean;
}

declare class Emitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  on<K extends keyof E>(event: K, fn: E[K]): () => void;
  once<K extends keyof E>(event: K, fn: E[K]): () => void;
  off<K extends keyof E>(event: K, fn?: E[K]): void;
}

export declare class RtgateClient extends Emitter<ClientEvents> {
  constructor(options?: ClientOptions);
  readonly options: Required<Omit<ClientOptions, 'transports' | 'clock' | 'random' | 'fetch' | 'WebSocket'>>;
  readonly url: string;
  readonly wsUrl: string;
  readonly wtUrl: string;
  readonly state: ConnectionState;
  readonly connected: boolean;
  /** The transport of the current connection, or null. */
  readonly transport: TransportKind | null;
  /** The current connection's `connected` frame (its `expiresAt` updated by refreshes), or null. */
  readonly session: SessionInfo | null;
  /** The last token from `getToken` sent in `connect`, or accepted by a token refresh. */
  readonly token: string | null;
  /** Sends waiting for a connection. */
  readonly queued: number;
  readonly presence: Presence;
  readonly backoff: Backoff;
  /** Connects; after a `stopped`, also forgets the refused tokens and tries again. */
  connect(): void;
  disconnect(): void;
  close(): void;
  /** Resolves with the ack's `data`; rejects with an RtgateError. */
  request<T = any>(event: string, data?: unknown, opts?: RequestOptions): Promise<T>;
  /** Fire and forget. Returns false when dropped (volatile while offline, or queue full). */
  emit(event: string, data?: unknown, opts?: { volatile?: boolean }): boolean;
  /** Listens to one server-pushed event; returns the unsubscribe function. */
  onEvent(name: string, fn: (data: any) => void): () => void;
  offEvent(name: string, fn?: (data: any) => void): void;
  conversation(id: string): Conversation;
  /**
   * Subscribes to a channel; the Subscription subscribes again after every reconnect, recovering
   * missed publications, until `unsubscribe()`. `T` is the type of the publications' `data`.
   * Throws `already_subscribed` (an RtgateError) when this client has a Subscription to `channel`
   * already (its own, or one the server made: `server_subscribed`): use `subscription(channel)`,
   * or `removeSubscription` first.
   */
  subscribe<T = unknown>(channel: string, options?: SubscriptionOptions): Subscription<T>;
  /** This client's Subscription to `channel`, or null. */
  subscription<T = unknown>(channel: string): Subscription<T> | null;
  /** Every Subscription of this client, whatever its state. */
  subscriptions(): Subscription<unknown>[];
  /** Unsubscribes and forgets a Subscription (or the one to that channel), freeing its channel. */
  removeSubscription(sub: Subscription<any> | string): void;
}

export default RtgateClient;

export declare function isRetryable(code: number, disconnectFrame?: { reconnect?: boolean } | null): boolean;
/**
 * Forgets every remembered WebTransport failure: in this page's memory and in `storage`
 * (default `localStorage`; `null`: memory only).
 */
export declare function forgetTransportChoice(storage?: Pick<Storage, 'length' | 'key' | 'removeItem'> | null): void;

export declare class Backoff {
  constructor(opts?: Omit<ReconnectOptions, 'maxAttempts' | 'stableAfter'>, random?: () => number);
  readonly attempts: number;
  /** The un-jittered delay of attempt `n` (1-based): `min(maxDelay, initialDelay × multiplier^(n−1))`. */
  base(attempt: number): number;
  /** A jittered delay for attempt `n`, uniform over `[base × (1 − r), base × (1 + r))` (`[0, base × 2r)` for `n` = 1), ≥ 1 ms; does not count. */
  delay(attempt: number): number;
  /** Counts an attempt and returns its jittered delay. */
  next(): number;
  reset(): void;
}

export declare class Presence {
  readonly watched: Set<string>;
  readonly status: Map<string, PresenceStatus>;
  /**
   * Watches users (kept across reconnects); resolves with their presence as the client now holds
   * it (a snapshot older than an update already applied does not overwrite it).
   */
  subscribe(userIds: string[]): Promise<PresenceStatus[]>;
  unsubscribe(userIds: string[]): Promise<void>;
  /** One-off lookup; resolves with the server's snapshot (applied to watched users when newer). */
  query(userIds: string[]): Promise<PresenceSnapshot[]>;
  get(userId: string): PresenceStatus | undefined;
}

export interface ChatMessage {
  id: string;
  conversationId: string;
  seq: number;
  senderId: string;
  content: string;
  replyToId: string | null;
  clientMessageId: string | null;
  createdAt: number;
}

export interface JoinAck {
  conversationId: string;
  lastSeq: number;
  recovered: number;
  hasMore: boolean;
}

export interface SendAck {
  id: string;
  seq: number;
  createdAt: number;
  duplicate: boolean;
}

export interface ConversationEvents {
  /** Each message once, in seq order, including those recovered after a reconnect. */
  message: (msg: ChatMessage) => void;
  typing: (t: { conversationId: string; userId: string; isTyping: boolean }) => void;
  joined: (ack: JoinAck) => void;
  join_error: (err: RtgateError) => void;
  removed: (data: { conversationId: string }) => void;
}

export declare class Conversation extends Emitter<ConversationEvents> {
  readonly id: string;
  /** The highest seq delivered through `message`. */
  readonly lastSeq: number | null;
  readonly joined: boolean;
  join(): Promise<JoinAck>;
  leave(): Promise<void>;
  send(
    content: string,
    opts?: { replyToId?: string; clientMessageId?: string; timeout?: number },
  ): Promise<SendAck>;
  typing(isTyping?: boolean): boolean;
  history(opts?: { beforeSeq?: number; limit?: number }): Promise<{ messages: ChatMessage[]; hasMore: boolean }>;
}

// ---- channels ------------------------------------------------------------------------------------

export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** A place in a channel's history: an offset means something only with its epoch. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** A connection in a channel's presence, or the publisher of a publication. */
export interface ClientInfo {
  userId: string;
  clientId: string;
  deviceId: string;
  /** The subscriber's `data` (subscribe option) or its subscription token's `info`. */
  data?: unknown;
}

export interface Publication<T = unknown> {
  channel: string;
  data: T;
  /** In channels with history; absent otherwise. */
  offset?: number;
  /** With `publisher_info` in the namespace. */
  info?: ClientInfo;
}

export interface SubscriptionOptions {
  /**
   * The subscription token, for namespaces with `subscribe = "token"`: called before every
   * subscribe and resubscribe (after reconnects and `subscription_expired`). Throw when none can
   * be had right now (retried with backoff); return `''` when there is none (the subscription
   * ends with `no_token`).
   */
  getToken?: (channel: string) => string | Promise<string>;
  /** Start from a known position: the first subscribe recovers what came after it. */
  since?: StreamPosition;
  /** Attached to this connection's presence entry and join/leave (any JSON, at most 1 KiB). */
  data?: unknown;
  /** Resubscribe with `since` after reconnects to recover missed publications. Default true. */
  recover?: boolean;
}

/** The `subscribed` event, and what `ready()` resolves with. */
export interface SubscribedContext {
  channel: string;
  /**
   * True when every publication missed since the position was recovered (and delivered as
   * `publication` events right after this one). False after a failed recovery, a first subscribe
   * without `since`, or in a channel without history: reload the application's state.
   */
  recovered: boolean;
  /** Whether this subscribe asked to recover (`since` was sent); false when the server subscribed. */
  wasRecovering: boolean;
  /** Where the channel's history stood (0 and '' without history). */
  offset: number;
  epoch: string;
  /** Who is subscribed, when the namespace keeps presence. */
  presence?: ClientInfo[];
}

/**
 * Why the state changed. `subscribing`: `subscribe_called`, `transport_closed`,
 * `subscription_expired`, `state_lost`, `server_subscribed`, … `unsubscribed`:
 * `unsubscribe_called`, the server's `unsubscribed`, or the refusal (`permission_denied`,
 * `bad_channel`, `no_token`, …).
 */
export interface SubscriptionChange {
  code: string;
  reason: string;
}

export interface JoinLeave {
  channel: string;
  info: ClientInfo;
}

export interface SubscriptionEvents<T> {
  state: (state: SubscriptionState) => void;
  subscribing: (change: SubscriptionChange) => void;
  subscribed: (ctx: SubscribedContext) => void;
  /** The subscription ended and will not come back by itself (`subscribe()` to start again). */
  unsubscribed: (change: SubscriptionChange) => void;
  /** Each publication once, in offset order: recovered ones first, then live ones. */
  publication: (pub: Publication<T>) => void;
  join: (ctx: JoinLeave) => void;
  leave: (ctx: JoinLeave) => void;
  /** A refusal (then `unsubscribed`, or a retry for `unavailable`), a failed getToken, … */
  error: (err: RtgateError | Error) => void;
}

export interface PublishResult {
  offset?: number;
  epoch?: string;
}

export interface ChannelPresence {
  clients: ClientInfo[];
}

export interface ChannelPresenceStats {
  /** Subscribed connections. */
  clients: number;
  /** Distinct users among them. */
  users: number;
}

export interface HistoryOptions {
  /** Publications after this position (oldest first); another epoch gives none. */
  since?: StreamPosition;
  /** 1–100, default 10. */
  limit?: number;
  /** The newest `limit`, newest first. */
  reverse?: boolean;
}

export interface HistoryResult<T = unknown> {
  publications: Array<Omit<Publication<T>, 'channel'> & { channel?: string }>;
  offset: number;
  epoch: string;
}

export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The offset of the last publication delivered, or where the history stood; null if unknown. */
  readonly offset: number | null;
  /** The epoch of `offset`; '' in a channel without history; null if unknown. */
  readonly epoch: string | null;
  /** The last `subscribed` context, or null. */
  readonly lastSubscribed: SubscribedContext | null;
  /** Starts subscribing again after `unsubscribed`; no-op otherwise. */
  subscribe(): void;
  /** Ends it here and on the server; it stays `unsubscribed`. */
  unsubscribe(): void;
  /**
   * Resolves once subscribed; rejects when it is or becomes unsubscribed (`not_subscribed`, or the
   * refusal's code), or with `timeout` after `timeoutMs` (default: none).
   */
  ready(timeoutMs?: number): Promise<SubscribedContext>;
  /**
   * These wait (up to the client's `requestTimeout`) for the subscription, which the server
   * requires; on an unsubscribed one they reject with `not_subscribed`.
   */
  publish(data: T): Promise<PublishResult>;
  presence(): Promise<ChannelPresence>;
  presenceStats(): Promise<ChannelPresenceStats>;
  /** Reads history; not passed through `publication`, not counted in the position. */
  history(opts?: HistoryOptions): Promise<HistoryResult<T>>;
}
