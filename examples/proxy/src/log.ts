/**
 * The proxy's event log: one line per event on stdout, as JSON (`{"ts","event",...}`) for
 * machines or as text for humans. Lines are buffered and written once per turn of the event
 * loop: on Linux a write to a pipe is a synchronous system call, and one per access line
 * would cost more than the proxying itself under load.
 */

/** Where log lines go: `process.stdout`, or anything with a `write(text)` (tests collect lines). */
export interface LogSink {
  write(chunk: string): unknown;
}

/** The field values a log event can carry. */
export type LogValue = string | number | boolean | null;

/** The two log formats of `log.format`. */
export type LogFormat = 'text' | 'json';

/** Flush at once past this many buffered characters, so a burst cannot grow the buffer without bound. */
const FLUSH_AT = 64 * 1024;

export class Logger {
  private buffer = '';
  private scheduled = false;

  constructor(
    readonly format: LogFormat,
    private readonly sink: LogSink,
  ) {}

  /** Logs one event: `{"ts", "event", ...fields}` (json) or `ts event key=value ...` (text). */
  event(event: string, fields: Readonly<Record<string, LogValue>> = {}): void {
    const ts = new Date().toISOString();
    let line: string;
    if (this.format === 'json') {
      line = JSON.stringify({ ts, event, ...fields });
    } else {
      line = `${ts} ${event}`;
      for (const key in fields) line += ` ${key}=${textValue(fields[key] ?? null)}`;
    }
    this.append(line);
  }

  /**
   * One access line. Kept apart from {@link Logger.event} so the per-request path builds its
   * line directly, in the order an operator reads it (as HAProxy's httplog does).
   */
  access(
    method: string,
    path: string,
    status: number,
    backend: string | null,
    ms: number,
    attempts: number,
    client: string,
    error: string | null,
  ): void {
    const ts = new Date().toISOString();
    const rounded = Math.round(ms * 10) / 10;
    let line: string;
    if (this.format === 'json') {
      line =
        error === null
          ? JSON.stringify({ ts, event: 'access', method, path, status, backend, ms: rounded, attempts, client })
          : JSON.stringify({
              ts,
              event: 'access',
              method,
              path,
              status,
              backend,
              ms: rounded,
              attempts,
              client,
              error,
            });
    } else {
      line = `${ts} access ${client} ${method} ${textValue(path)} ${status} backend=${backend ?? '-'} ms=${rounded} attempts=${attempts}`;
      if (error !== null) line += ` error=${error}`;
    }
    this.append(line);
  }

  /** Writes whatever is buffered now (on shutdown, before the process exits). */
  flush(): void {
    this.scheduled = false;
    if (this.buffer.length === 0) return;
    const chunk = this.buffer;
    this.buffer = '';
    this.sink.write(chunk);
  }

  private append(line: string): void {
    this.buffer += `${line}\n`;
    if (this.buffer.length >= FLUSH_AT) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(flushLogger, this);
    }
  }
}

function flushLogger(logger: Logger): void {
  logger.flush();
}

/** A value for the text format: bare when it is one word, else JSON-quoted so a line stays parseable. */
function textValue(value: LogValue): string {
  if (value === null) return '-';
  if (typeof value !== 'string') return String(value);
  return value.length > 0 && /^[\x21-\x7e]+$/.test(value) && !value.includes('"') ? value : JSON.stringify(value);
}
