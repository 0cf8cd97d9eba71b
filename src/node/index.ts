/**
 * `fairpick/node`: the parts of fairpick that need Node.js (or a runtime with its `node:` modules):
 * HTTP and TCP health probes.
 *
 * @packageDocumentation
 */
export type { HttpBackend, HttpProbeOptions, Probe, TcpBackend, TcpHostBackend, TcpUrlBackend } from './probes.js';
export { httpProbe, tcpProbe } from './probes.js';
