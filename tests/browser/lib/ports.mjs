// Port ranges for the choirs this suite starts: outside the kernel's ephemeral range (where
// Chromium's own sockets and every port-0 bind on the machine land), every port probed free for
// UDP and TCP on 127.0.0.1 before use — the same rule as the Rust harness (tests/common/net.rs).
// A port taken between the probe and choir's bind is skipped by choir in per-transport mode; in
// single-port mode choir fails at start, and startChoir (choir.mjs) retries on a fresh range.
import { readFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

/** The lowest port a range starts at: above the well-known and common service ports. */
const LOWEST = 10000;

/** [first, last] of /proc/sys/net/ipv4/ip_local_port_range (Linux's default if unreadable). */
export function ephemeralRange() {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && lo > 0 && hi >= lo) return [lo, hi];
  } catch {
    // not Linux, or no /proc: the default
  }
  return [32768, 60999];
}

function udpFree(port, host) {
  return new Promise((resolve) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind({ port, address: host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

function tcpFree(port, host) {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** Whether `port` is free now for both UDP and TCP on `host`. */
export async function portFree(port, host = '127.0.0.1') {
  return (await udpFree(port, host)) && (await tcpFree(port, host));
}

let calls = 0;

/**
 * `n` consecutive ports outside the ephemeral range, all free for UDP and TCP now: [min, max].
 * The start is pseudo-random per process and call so that concurrent runs rarely probe the same
 * ports.
 */
export async function freePortRange(n, host = '127.0.0.1') {
  const [lo, hi] = ephemeralRange();
  const below = Math.max(0, lo - n - LOWEST);
  const above = Math.max(0, 65535 - n - hi);
  if (below + above === 0) throw new Error(`no room for ${n} ports outside the ephemeral range ${lo}-${hi}`);
  for (let attempt = 0; attempt < 200; attempt++) {
    const seed = (process.pid * 2654435761 + Date.now() * 40503 + calls++ * 7919 + attempt * 104729) >>> 0;
    const k = seed % (below + above);
    const base = k < below ? LOWEST + k : hi + 1 + (k - below);
    let free = true;
    // In batches: hundreds of binds at once would hit the fd limit for no gain.
    for (let p = base; free && p < base + n; p += 50) {
      const batch = [];
      for (let q = p; q < Math.min(p + 50, base + n); q++) batch.push(portFree(q, host));
      free = (await Promise.all(batch)).every(Boolean);
    }
    if (free) return [base, base + n - 1];
  }
  throw new Error(`no ${n} free consecutive ports outside the ephemeral range ${lo}-${hi}`);
}

/** Whether choir's output says it could not bind a port at start. */
export function isBindFailure(text) {
  return /Address already in use|cannot bind/.test(text);
}
