// Presence subscriptions that survive reconnects. The server keeps subscriptions per connection,
// so after every (re)connect the whole watched set is subscribed again and its answer, the
// current presence, replaces what may have changed while the client was away.
//
// Ordering: a server that versions presence puts a `version` on every `presence:update` and on
// every entry of a subscribe/query snapshot, strictly increasing per user. An update can be
// overtaken (a snapshot read before it but acked after it, an `offline` delivered after a newer
// `online`), so the client applies an entry only when its version is above the highest it has
// applied for that user on this connection. Entries without a version (an older server) are
// applied as they come. Versions are compared within one connection: the first snapshot of a new
// connection is read after the old one ended, so it is newer than anything the old one delivered,
// even if the server's counters started again with a restart.

const MAX_PER_REQUEST = 100; // PROTOCOL.md: `userIds` lists 1–100 user ids

/** The entry's version, when it carries a usable one. */
function versionOf(entry) {
  const v = entry?.version;
  return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

export class Presence {
  constructor(client) {
    this.client = client;
    /** User ids this client watches. */
    this.watched = new Set();
    /** userId -> {userId, online, devices?, deviceId?, at?, version?} as last applied. */
    this.status = new Map();
    /** userId -> the highest version applied on the current connection. */
    this._versions = new Map();
  }

  /** Watches users; resolves with their presence as the client holds it (once connected). */
  async subscribe(userIds) {
    const fresh = userIds.filter((id) => !this.watched.has(id));
    for (const id of userIds) this.watched.add(id);
    if (!this.client.connected || fresh.length === 0) {
      return userIds.map((id) => this.status.get(id)).filter(Boolean);
    }
    return this._subscribe(fresh);
  }

  async unsubscribe(userIds) {
    for (const id of userIds) {
      this.watched.delete(id);
      this.status.delete(id);
      this._versions.delete(id);
    }
    if (this.client.connected) {
      await this.client.request('presence:unsubscribe', { userIds });
    }
  }

  /**
   * One-off lookup, no subscription; resolves with the server's snapshot. For users this client
   * watches, a snapshot newer than what it holds is applied too.
   */
  async query(userIds) {
    const ack = await this.client.request('presence:query', { userIds });
    const users = ack?.users ?? [];
    for (const u of users) if (this.watched.has(u?.userId)) this._applySnapshot(u);
    return users;
  }

  get(userId) {
    return this.status.get(userId);
  }

  async _subscribe(ids) {
    const users = [];
    for (let i = 0; i < ids.length; i += MAX_PER_REQUEST) {
      const ack = await this.client.request('presence:subscribe', {
        userIds: ids.slice(i, i + MAX_PER_REQUEST),
      });
      for (const u of ack?.users ?? []) {
        if (typeof u?.userId !== 'string') continue;
        this._applySnapshot(u);
        const now = this.status.get(u.userId);
        if (now) users.push(now);
      }
    }
    return users;
  }

  /** A new connection: forget its predecessor's versions, subscribe the watched set again. */
  _restore() {
    this._versions.clear();
    if (this.watched.size === 0) return;
    this._subscribe([...this.watched]).catch((err) => this.client._emit('error', err));
  }

  _onUpdate(data) {
    if (!data || typeof data.userId !== 'string' || !this.watched.has(data.userId)) return;
    this._apply({
      userId: data.userId,
      online: data.status === 'online',
      deviceId: data.deviceId,
      at: data.at,
      version: versionOf(data),
    });
  }

  _applySnapshot(u) {
    this._apply({ userId: u.userId, online: Boolean(u.online), devices: u.devices, version: versionOf(u) });
  }

  /** Applies an entry unless an entry with the same or a higher version was applied already. */
  _apply(entry) {
    const { version } = entry;
    if (version !== undefined) {
      const applied = this._versions.get(entry.userId);
      if (applied !== undefined && version <= applied) return;
      this._versions.set(entry.userId, version);
    }
    const prev = this.status.get(entry.userId);
    const next = { ...prev, ...entry };
    if (version === undefined) delete next.version;
    for (const k of Object.keys(next)) if (next[k] === undefined) delete next[k];
    this.status.set(entry.userId, next);
    this.client._emit('presence', next);
  }
}
