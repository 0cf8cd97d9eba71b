/**
 * `fairpick/node`: the parts of fairpick that need Node.js (or a runtime with its `node:` modules):
 * HTTP and TCP health probes, and a VRRP-like peer elector over UDP.
 *
 * @packageDocumentation
 */

export type { UrlBackend } from '../http/policy.js';
export type { BalancedAgentExtras, BalancedAgentOptions, BalancedHttpsAgentOptions } from './balanced-agent.js';
export { createBalancedAgent, createBalancedHttpsAgent } from './balanced-agent.js';
export type { PeerAddress, PeerElectorOptions } from './peer-elector.js';
export { createPeerElector } from './peer-elector.js';
export type { HttpBackend, HttpProbeOptions, Probe, TcpBackend, TcpHostBackend, TcpUrlBackend } from './probes.js';
export { httpProbe, tcpProbe } from './probes.js';
