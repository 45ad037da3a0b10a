// Test doubles: a manual clock and scripted transports, so the client's timing logic runs
// deterministically with no wall-clock waits.

export const tick = () => new Promise((r) => setImmediate(r));

export async function settle(n = 5) {
  for (let i = 0; i < n; i++) await tick();
}

export class FakeClock {
  constructor(start = 0) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + Math.max(0, ms), fn, ms });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.time;
  }

  /** Pending timers' delays, for asserting what was scheduled. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.time);
  }

  /** Advances time by ms, firing due timers in order and letting promises settle between them. */
  async advance(ms) {
    const end = this.time + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
      await settle();
    }
    this.time = end;
    await settle();
  }
}

/** A connection the test plays the server side of. */
export class FakeConn {
  constructor(kind) {
    this.kind = kind;
    this.sent = [];
    this.volatile = [];
    this.closed = null;
    this.probes = 0; // empty datagrams sent
    this.datagrams = true; // false: the session has no datagrams, probe() sends nothing
    this.onframe = () => {};
    this.onclose = () => {};
  }
  send(frame) {
    this.sent.push(structuredClone(frame));
  }
  sendVolatile(frame) {
    this.volatile.push(structuredClone(frame));
  }
  probe() {
    if (this.closed || !this.datagrams) return false;
    this.probes += 1;
    return true;
  }
  close(code = 1000, reason = '') {
    if (this.closed) return;
    this.closed = { code, reason };
    this.onclose({ code, reason });
  }
  // server side
  push(frame) {
    this.onframe(frame);
  }
  drop(code = 1006, reason = 'gone') {
    if (this.closed) return;
    this.closed = { code, reason };
    this.onclose({ code, reason });
  }
  events(name) {
    return this.sent.filter((f) => f.type === 'event' && (!name || f.event === name));
  }
}

/**
 * A transport factory whose behaviour is scripted per call: 'open' (default), 'fail', 'hang', or
 * 'late' (pending until the test calls `open()` or `fail()` on its entry in `deferred`).
 * `conns` collects every opened connection, `calls` every attempt, `params` what each got.
 */
export function fakeTransport(kind, script = []) {
  const t = {
    calls: 0,
    conns: [],
    params: [],
    deferred: [],
    script,
    fallback: 'open',
    open: async (params) => {
      const how = t.script[t.calls] ?? t.fallback;
      t.calls += 1;
      t.params.push(params);
      const make = () => {
        const conn = new FakeConn(kind);
        t.conns.push(conn);
        return conn;
      };
      if (how === 'fail') throw Object.assign(new Error(`${kind} failed`), { code: 'transport_failed' });
      if (how === 'hang') return new Promise(() => {});
      if (how === 'late') {
        return new Promise((resolve, reject) => {
          t.deferred.push({
            open: () => {
              const conn = make();
              resolve(conn);
              return conn;
            },
            fail: () => reject(Object.assign(new Error(`${kind} failed`), { code: 'transport_failed' })),
          });
        });
      }
      return make();
    },
    get last() {
      return t.conns[t.conns.length - 1];
    },
  };
  return t;
}

/** localStorage's API over a Map; `broken: true` makes every call throw, like a blocked one. */
export class FakeStorage {
  constructor(entries = {}, { broken = false } = {}) {
    this.map = new Map(Object.entries(entries));
    this.broken = broken;
  }
  _check() {
    if (this.broken) throw new Error('SecurityError: storage is disabled');
  }
  get length() {
    this._check();
    return this.map.size;
  }
  key(i) {
    this._check();
    return [...this.map.keys()][i] ?? null;
  }
  getItem(k) {
    this._check();
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this._check();
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this._check();
    this.map.delete(k);
  }
}

/** The options every unit test's client starts from: a fake clock, a fixed random, no autoconnect. */
export function clientOptions(clock, extra = {}) {
  return {
    url: 'http://127.0.0.1:3000',
    certificateHash: 'none',
    clock,
    random: () => 0.5,
    token: 'tok',
    autoConnect: false,
    ...extra,
  };
}

export const HELLO = {
  type: 'connected',
  v: 1,
  sessionId: 's',
  userId: 'alice',
  deviceId: 'd',
  instanceId: 'rtg-test',
  expiresAt: 0,
  heartbeat: { intervalMs: 25000, timeoutMs: 20000 },
  limits: { maxFrameBytes: 65536 },
};
