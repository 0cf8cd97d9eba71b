import { invalid, isObject } from '../validate.js';

/**
 * A retry budget: retries may add at most `percent` of the requests seen in the last `windowMs`, plus
 * a floor of `minPerSecond` so a quiet client can still retry. Envoy's and Finagle's defaults: 20% and
 * a small floor. When every backend fails, retries stop at the budget instead of multiplying the load
 * on a struggling pool (a retry storm).
 */
export interface RetryBudgetOptions {
  /**
   * Retries allowed, as a percentage of the requests in the window (`0`-`100`).
   * @defaultValue 20
   */
  readonly percent?: number;
  /**
   * Retries always allowed per second of the window, whatever the request count (`>= 0`).
   * @defaultValue 3
   */
  readonly minPerSecond?: number;
  /**
   * The sliding window, in milliseconds (`>= 1000`).
   * @defaultValue 10000
   */
  readonly windowMs?: number;
}

// The window is kept as ten buckets: counts age out a tenth of the window at a time.
const BUCKETS = 10;

/** Counts requests and retries over a sliding window and says whether one more retry fits. @internal */
export class RetryBudget {
  private readonly requests = new Float64Array(BUCKETS);
  private readonly retries = new Float64Array(BUCKETS);
  private readonly bucketMs: number;
  private readonly floor: number;
  private readonly ratio: number;
  private bucket = 0;
  private bucketStart = Number.NEGATIVE_INFINITY;

  constructor(
    options: Required<RetryBudgetOptions>,
    private readonly now: () => number,
  ) {
    this.bucketMs = options.windowMs / BUCKETS;
    this.floor = (options.minPerSecond * options.windowMs) / 1000;
    this.ratio = options.percent / 100;
  }

  /** Counts one request (a first attempt). */
  request(): void {
    this.advance();
    this.requests[this.bucket] = (this.requests[this.bucket] ?? 0) + 1;
  }

  /** Whether one more retry fits in the budget now. */
  allows(): boolean {
    this.advance();
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < BUCKETS; i++) {
      requests += this.requests[i] ?? 0;
      retries += this.retries[i] ?? 0;
    }
    return retries + 1 <= Math.max(this.floor, requests * this.ratio);
  }

  /** Counts one retry against the budget. */
  spend(): void {
    this.advance();
    this.retries[this.bucket] = (this.retries[this.bucket] ?? 0) + 1;
  }

  // Moves to the bucket of the current time, clearing the buckets that aged out on the way.
  private advance(): void {
    const t = this.now();
    if (t < this.bucketStart + this.bucketMs) return;
    const steps = Number.isFinite(this.bucketStart) ? Math.floor((t - this.bucketStart) / this.bucketMs) : BUCKETS;
    for (let i = 0; i < Math.min(steps, BUCKETS); i++) {
      this.bucket = (this.bucket + 1) % BUCKETS;
      this.requests[this.bucket] = 0;
      this.retries[this.bucket] = 0;
    }
    this.bucketStart = Number.isFinite(this.bucketStart) ? this.bucketStart + steps * this.bucketMs : t;
  }
}

/** Validates `retryBudget` and fills in its defaults; `false` turns the budget off. @internal */
export function retryBudgetSettings(value: unknown, field: string): Required<RetryBudgetOptions> | null {
  if (value === false) return null;
  if (value === undefined || value === true) value = {};
  if (!isObject(value)) throw invalid(field, value, 'an object ({ percent, minPerSecond, windowMs }) or false');
  const percent = value.percent ?? 20;
  if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100)) {
    throw invalid(`${field}.percent`, percent, 'a number from 0 to 100');
  }
  const minPerSecond = value.minPerSecond ?? 3;
  if (typeof minPerSecond !== 'number' || !(minPerSecond >= 0) || !Number.isFinite(minPerSecond)) {
    throw invalid(`${field}.minPerSecond`, minPerSecond, 'a finite number >= 0');
  }
  const windowMs = value.windowMs ?? 10_000;
  if (typeof windowMs !== 'number' || !(windowMs >= 1000) || !Number.isFinite(windowMs)) {
    throw invalid(`${field}.windowMs`, windowMs, 'a finite number >= 1000');
  }
  for (const key of Object.keys(value)) {
    if (key !== 'percent' && key !== 'minPerSecond' && key !== 'windowMs') {
      throw invalid(`${field}.${key}`, value[key], 'no such option (percent, minPerSecond, windowMs)');
    }
  }
  return { percent, minPerSecond, windowMs };
}
