// Presence subscriptions that survive reconnects. The server keeps subscriptions per connection,
// so after every (re)connect the whole watched set is subscribed again and its answer, the
// current presence, replaces what may have changed while the client was away.

const MAX_PER_REQUEST = 100; // PROTOCOL.md: `userIds` lists 1–100 user ids

export class Presence {
  constructor(client) {
    this.client = client;
    /** User ids this client watches. */
    this.watched = new Set();
    /** userId -> {userId, online, devices?, at?} as last known. */
    this.status = new Map();
  }

  /** Watches users; resolves with their current presence (once connected). */
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
    }
    if (this.client.connected) {
      await this.client.request('presence:unsubscribe', { userIds });
    }
  }

  /** One-off lookup, no subscription. */
  async query(userIds) {
    const ack = await this.client.request('presence:query', { userIds });
    return ack?.users ?? [];
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
        this._set({ userId: u.userId, online: Boolean(u.online), devices: u.devices });
        users.push(u);
      }
    }
    return users;
  }

  _restore() {
    if (this.watched.size === 0) return;
    this._subscribe([...this.watched]).catch((err) => this.client._emit('error', err));
  }

  _onUpdate(data) {
    if (!data || typeof data.userId !== 'string' || !this.watched.has(data.userId)) return;
    this._set({
      userId: data.userId,
      online: data.status === 'online',
      deviceId: data.deviceId,
      at: data.at,
    });
  }

  _set(entry) {
    const prev = this.status.get(entry.userId);
    this.status.set(entry.userId, { ...prev, ...entry });
    this.client._emit('presence', this.status.get(entry.userId));
  }
}
