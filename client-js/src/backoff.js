// Reconnect delays: exponential backoff with jitter. Without jitter a server restart brings every
// client back in the same millisecond; with it they spread over ±randomization of each step.
//
// The jitter is applied after the cap: base(n) = min(maxDelay, initialDelay × multiplier^(n−1)),
// delay = base(n) × U[1 − randomization, 1 + randomization), except the first attempt, which
// draws from base(1) × U[0, 2 × randomization). Capping after the jitter would put about half of
// all clients in a long outage on exactly maxDelay, a synchronized herd.

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
    if (!(initialDelay > 0)) return 0;
    // multiplier ** n overflows to Infinity for large n; min() still yields the cap.
    return Math.min(maxDelay, initialDelay * multiplier ** Math.max(0, n - 1));
  }

  /**
   * The jittered delay of attempt `n` without counting it: uniform over
   * [base(n) × (1 − r), base(n) × (1 + r)) ([0, base(1) × 2r) for n = 1), rounded to whole ms,
   * never below 1 ms.
   */
  delay(n) {
    const r = Math.min(1, Math.max(0, this.opts.randomization));
    // The first attempt after a drop starts at zero: a client whose server just restarted is
    // back as soon as it answers, spread over the same width (base × 2r) as every later step.
    const low = n === 1 ? 0 : 1 - r;
    const jittered = this.base(n) * (low + 2 * r * this.random());
    return Math.max(1, Math.round(jittered));
  }

  /** The delay before the next attempt; counts the attempt. */
  next() {
    this.attempts += 1;
    return this.delay(this.attempts);
  }

  reset() {
    this.attempts = 0;
  }
}
