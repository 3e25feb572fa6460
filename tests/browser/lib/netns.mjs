// A network namespace of the suite's own for the scenarios that need a real interface address.
// Firefox gathers no loopback ICE candidate (with any pref): it offers only the addresses of the
// machine's interfaces, and test traffic must not go to those. So those scenarios run in a fresh
// namespace made here: `lo` up and a veth pair with 198.18.0.1/24 and 198.18.0.2/24 (RFC 2544's
// benchmarking range), both ends inside, and a default route through it. choir binds and
// announces 198.18.0.1, Firefox gathers 198.18.0.1, and nothing leaves the namespace. It ends
// with its last process: there is nothing to clean up.
//
// The driver re-runs itself inside with `unshare --net` (as root, as in CI), or with
// `unshare --net --map-root-user` where unprivileged user namespaces are allowed.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The namespace's addresses: choir's RTC address, the veth's other end. */
export const NETNS = { rtcIp: '198.18.0.1', peerIp: '198.18.0.2', prefix: 24 };

/** True inside the namespace made by `netnsCommand` (set for the inner driver). */
export const insideNetns = () => process.env.CHOIR_TEST_NETNS === '1';

/**
 * The command prefix that runs a program in a new network namespace, or `{ error }` saying
 * why there is none here (no unshare, no privilege, no ip).
 */
export function netnsCommand() {
  const ip = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => spawnSync(p, ['-V']).status === 0);
  if (!ip) return { error: '`ip` (Debian package iproute2) is not installed' };
  const tries = [['unshare', '--net'], ['unshare', '--net', '--map-root-user']];
  const errors = [];
  for (const prefix of tries) {
    const r = spawnSync(prefix[0], [...prefix.slice(1), ip, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1'], {
      encoding: 'utf8',
      timeout: 10000,
    });
    if (r.status === 0) return { prefix, ip };
    errors.push(`${prefix.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  }
  return { error: `cannot make a network namespace with a veth pair (${errors.join('; ')})` };
}

/** Inside the new namespace: lo, the veth pair, the addresses and the default route. */
export async function setupNetns(ip) {
  const steps = [
    ['link', 'set', 'lo', 'up'],
    ['link', 'add', 'choir0', 'type', 'veth', 'peer', 'name', 'choir1'],
    ['addr', 'add', `${NETNS.rtcIp}/${NETNS.prefix}`, 'dev', 'choir0'],
    ['addr', 'add', `${NETNS.peerIp}/${NETNS.prefix}`, 'dev', 'choir1'],
    ['link', 'set', 'choir0', 'up'],
    ['link', 'set', 'choir1', 'up'],
    // Browsers gather host candidates only on an interface that has a route out.
    ['route', 'add', 'default', 'via', NETNS.peerIp, 'dev', 'choir0'],
  ];
  for (const args of steps) {
    try {
      await run(ip, args, { timeout: 10000 });
    } catch (e) {
      throw new Error(`setting up the network namespace: ip ${args.join(' ')}: ${e.stderr || e.message}`);
    }
  }
  const { stdout } = await run(ip, ['-4', '-o', 'addr', 'show'], { timeout: 10000 });
  for (const want of ['127.0.0.1', NETNS.rtcIp, NETNS.peerIp]) {
    if (!stdout.includes(`inet ${want}/`)) throw new Error(`network namespace: ${want} missing after setup:\n${stdout}`);
  }
  return stdout.trim().split('\n').map((l) => l.replace(/\s+/g, ' ').split(' ').slice(1, 4).join(' '));
}
