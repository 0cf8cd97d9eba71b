import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { util } from 'undici';

/** The callbacks of a dispatch handler in undici's original (v5-v7) form, which undici's own APIs use. @internal */
export interface LegacyHandler {
  onConnect?(abort: (err?: Error) => void, context?: unknown): void;
  onError?(err: Error): void;
  onUpgrade?(statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void;
  onResponseStarted?(): void;
  onHeaders?(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: string[] | null): void;
  onBodySent?(chunkSize: number, totalBytesSent: number): void;
}

type Modern = Required<Pick<Dispatcher.DispatchHandler, 'onRequestStart'>> & Dispatcher.DispatchHandler;

/** The controller a handler in undici's newer form receives, driven from the original callbacks. */
class Controller {
  paused = false;
  aborted = false;
  reason: Error | null = null;
  rawHeaders: Buffer[] | null = null;
  rawTrailers: string[] | null = null;
  resumeFn: (() => void) | null = null;

  constructor(private readonly abortFn: (err?: Error) => void) {}

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.resumeFn?.();
  }

  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.abortFn(reason);
  }
}

/**
 * A handler in undici's newer form (`onRequestStart`, `onResponseStart`…) seen through the original
 * callbacks, so the balancer drives one kind of handler whichever kind the caller gave.
 */
class ModernAsLegacy implements LegacyHandler {
  private controller = new Controller(() => {});

  constructor(private readonly handler: Modern) {}

  onConnect(abort: (err?: Error) => void, context?: unknown): void {
    this.controller = new Controller(abort);
    this.handler.onRequestStart(this.controller as unknown as Dispatcher.DispatchController, context);
  }

  onResponseStarted(): void {
    (this.handler as LegacyHandler).onResponseStarted?.();
  }

  onUpgrade(statusCode: number, headers: Buffer[] | string[] | null, socket: Duplex): void {
    this.handler.onRequestUpgrade?.(this.asController(), statusCode, parse(headers), socket);
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
    this.controller.resumeFn = resume;
    this.controller.rawHeaders = headers;
    this.handler.onResponseStart?.(this.asController(), statusCode, parse(headers), statusText);
    return !this.controller.paused;
  }

  onData(chunk: Buffer): boolean {
    this.handler.onResponseData?.(this.asController(), chunk);
    return !this.controller.paused;
  }

  onComplete(trailers: string[] | null): void {
    this.controller.rawTrailers = trailers;
    this.handler.onResponseEnd?.(this.asController(), parse(trailers));
  }

  onError(err: Error): void {
    if (this.handler.onResponseError === undefined) throw err;
    this.handler.onResponseError(this.asController(), err);
  }

  private asController(): Dispatcher.DispatchController {
    return this.controller as unknown as Dispatcher.DispatchController;
  }
}

function parse(raw: Buffer[] | string[] | null): Record<string, string | string[]> {
  return raw === null ? {} : (util.parseHeaders(raw) as Record<string, string | string[]>);
}

/** The caller's handler in the original form, adapting a newer-form one. @internal */
export function asLegacy(handler: Dispatcher.DispatchHandler): LegacyHandler {
  return typeof handler.onRequestStart === 'function'
    ? new ModernAsLegacy(handler as Modern)
    : (handler as LegacyHandler);
}
