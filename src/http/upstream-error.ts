import { FairpickError } from '../errors.js';

/** One failed attempt of a balanced request: the backend tried and what went wrong. */
export interface FailedAttempt {
  /** The id of the backend the attempt went to. */
  readonly backend: string;
  /** The error the attempt ended with. */
  readonly error: unknown;
}

/**
 * Every attempt of a balanced request failed (code `ERR_UPSTREAM`). `cause` is the last attempt's
 * error; {@link UpstreamError.attempts} lists every backend tried, in order, with its error.
 */
export class UpstreamError extends FairpickError {
  /** Each attempt, first to last. */
  readonly attempts: readonly FailedAttempt[];

  /**
   * @param what - the request, e.g. `GET /users`.
   * @param attempts - the failed attempts, at least one.
   */
  constructor(what: string, attempts: readonly FailedAttempt[]) {
    const list = attempts.map((a) => `${a.backend}: ${describeError(a.error)}`).join('; ');
    const last = attempts[attempts.length - 1];
    super(
      'ERR_UPSTREAM',
      `${what} failed on ${attempts.length === 1 ? 'its only attempt' : `all ${attempts.length} attempts`} (${list})`,
      {
        cause: last?.error,
      },
    );
    this.name = 'UpstreamError';
    this.attempts = attempts;
  }
}

// "fetch failed" alone says little: name the low-level cause (ECONNREFUSED…) when there is one.
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = (error as { cause?: unknown }).cause;
  const code = (cause as { code?: unknown } | undefined)?.code ?? (error as { code?: unknown }).code;
  const detail = cause instanceof Error && cause.message !== '' ? `: ${cause.message}` : '';
  return `${error.message}${detail}${typeof code === 'string' && !detail.includes(code) ? ` (${code})` : ''}`;
}
