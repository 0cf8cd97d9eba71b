// The core compiles against the ECMAScript library only (no DOM, no Node types), yet health
// probes take the AbortSignal that every runtime fairpick supports provides. These declarations
// name only what the core uses; they merge with the full ones of lib.dom or @types/node.

interface AbortSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

interface AbortController {
  readonly signal: AbortSignal;
  abort(reason?: unknown): void;
}

declare var AbortController: {
  prototype: AbortController;
  new (): AbortController;
};
