/** The check behind "no open handles after each test" (used by the suites' `closeAll`). */

// What a test may leave open by mistake: sockets and servers (TCP, TLS, UDP). Not timers: vitest
// keeps refed ones of its own (a 100 ms batch of task updates), which would cost every test a wait.
const HANDLE_KINDS = new Set(['TCPSocketWrap', 'TCPServerWrap', 'TCPWRAP', 'TLSWrap', 'UDPWrap']);

function openHandles(): string[] {
  return process.getActiveResourcesInfo().filter((kind) => HANDLE_KINDS.has(kind));
}

/**
 * Waits until nothing the test opened is still open: no socket or server keeps the process alive.
 * Sockets finish closing a few ticks after their owner's `close()`, hence the wait; one still open
 * after the deadline is a leak, and the test fails naming what is left.
 */
export async function expectNoOpenHandles(): Promise<void> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const left = openHandles();
    if (left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`open handles after the test: ${left.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
