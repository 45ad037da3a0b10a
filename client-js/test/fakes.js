// Test doubles: a manual clock and scripted transports, so the client's timing logic runs
// deterministically with no wall-clock waits.

export const tick = () => new Promise((r) => setImmediate(r));

export async function settle(n = 5) {
  for (let i = 0; i < n; i++) await tick();
}

export class FakeClock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.now + Math.max(0, ms), fn, ms });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
  }

  /** Pending timers' delays, for asserting what was scheduled. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.now);
  }

  /** Advances time by ms, firing due timers in order and letting promises settle between them. */
  async advance(ms) {
    const end = this.now + ms;
    await settle();
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
      await settle();
    }
    this.now = end;
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
    this.onframe = () => {};
    this.onclose = () => {};
  }
  send(frame) {
    this.sent.push(structuredClone(frame));
  }
  sendVolatile(frame) {
    this.volatile.push(structuredClone(frame));
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
 * A transport factory whose behaviour is scripted per call: 'open' (default), 'fail', 'hang'.
 * `conns` collects every opened connection, `calls` every attempt.
 */
export function fakeTransport(kind, script = []) {
  const t = {
    calls: 0,
    conns: [],
    script,
    fallback: 'open',
    open: async () => {
      const how = t.script[t.calls] ?? t.fallback;
      t.calls += 1;
      if (how === 'fail') throw Object.assign(new Error(`${kind} failed`), { code: 'transport_failed' });
      if (how === 'hang') return new Promise(() => {});
      const conn = new FakeConn(kind);
      t.conns.push(conn);
      return conn;
    },
    get last() {
      return t.conns[t.conns.length - 1];
    },
  };
  return t;
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
