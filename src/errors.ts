/**
 * The stable codes a {@link FairpickError} carries.
 *
 * - `ERR_INVALID_ARGUMENT`: a call received a value it cannot use; the message names the field,
 *   the value received and what was expected. The call changed nothing.
 * - `ERR_NO_BACKEND`: no backend could be chosen (the pool is empty, drained, excluded or full).
 * - `ERR_TIMEOUT`: an attempt of a balanced HTTP request got no response headers within its
 *   `timeoutMs` (`fairpick/fetch`, `fairpick/undici`).
 * - `ERR_UPSTREAM`: every attempt of a balanced `fetch` failed; `cause` is the last attempt's
 *   error and `attempts` lists each backend tried with its error.
 */
export type FairpickErrorCode = 'ERR_INVALID_ARGUMENT' | 'ERR_NO_BACKEND' | 'ERR_TIMEOUT' | 'ERR_UPSTREAM';

// A brand shared by every copy of the package loaded in one realm, so that
// `isFairpickError` recognises errors thrown by another copy (two versions in
// one dependency tree), where `instanceof` would not.
const BRAND: unique symbol = Symbol.for('fairpick.error') as never;

/** The error every fairpick API throws on purpose. Check {@link FairpickError.code}, never the message. */
export class FairpickError extends Error {
  /** A stable, documented code; see {@link FairpickErrorCode}. */
  readonly code: FairpickErrorCode;

  /**
   * @param code - the stable code.
   * @param message - what went wrong and what was expected.
   * @param options - `cause`, when another error led to this one.
   */
  constructor(code: FairpickErrorCode, message: string, options?: { readonly cause?: unknown }) {
    super(message, options);
    this.name = 'FairpickError';
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
  }
}

/**
 * True when `value` is a {@link FairpickError}, from this or any other copy of fairpick,
 * and, when `code` is given, carries that code.
 */
export function isFairpickError(value: unknown, code?: FairpickErrorCode): value is FairpickError {
  if (typeof value !== 'object' || value === null) return false;
  if ((value as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (value as FairpickError).code === code;
}
