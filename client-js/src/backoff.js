// Reconnect delays: exponential backoff with jitter. Without jitter a server restart brings every
// client back in the same millisecond; with it they spread over ±randomization of each step.

export const DEFAULT_BACKOFF = Object.freeze({
  initialDelay: 1000,
  multiplier: 2,
  maxDelay: 10000,
  randomization: 0.5,
});

export class Backoff {
  /**
   * @param {Partial<typeof DEFAULT_BACKOFF>} opts
   * @param {() => number} random uniform in [0, 1)
   */
  constructor(opts = {}, random = Math.random) {
    this.opts = { ...DEFAULT_BACKOFF, ...opts };
    this.random = random;
    this.attempts = 0;
  }

  /** The base (un-jittered) delay of attempt `n` (1-based), capped at maxDelay. */
  base(n) {
    const { initialDelay, multiplier, maxDelay } = this.opts;
    return Math.min(maxDelay, initialDelay * multiplier ** Math.max(0, n - 1));
  }

  /** The delay before the next attempt; counts the attempt. Never zero, never above maxDelay. */
  next() {
    this.attempts += 1;
    const { randomization, maxDelay } = this.opts;
    const base = this.base(this.attempts);
    const jittered = base * (1 - randomization + 2 * randomization * this.random());
    return Math.max(1, Math.min(maxDelay, Math.round(jittered)));
  }

  reset() {
    this.attempts = 0;
  }
}
