/**
 * `fairpick/node`: the parts of fairpick that need Node.js (or a runtime with its `node:` modules):
 * HTTP and TCP health probes, and a VRRP-like peer elector over UDP.
 *
 * @packageDocumentation
 */

export type { PeerAddress, PeerElectorOptions } from './peer-elector.js';
export { createPeerElector } from './peer-elector.js';
export type { HttpBackend, HttpProbeOptions, Probe, TcpBackend, TcpHostBackend, TcpUrlBackend } from './probes.js';
export { httpProbe, tcpProbe } from './probes.js';
