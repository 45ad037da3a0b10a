// A minimal event emitter: the only one the client needs, so the package stays dependency-free.
// A listener that throws is reported through `onListenerError` and never breaks the emitter's caller
// (a bug in application code must not kill the connection loop).

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  off(event, fn) {
    if (fn === undefined) this._listeners.delete(event);
    else this._listeners.get(event)?.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        this._onListenerError(err, event);
      }
    }
  }

  _onListenerError(err) {
    // Surfaced, not swallowed, but asynchronously so the emitting code path completes.
    setTimeout(() => {
      throw err;
    }, 0);
  }
}
