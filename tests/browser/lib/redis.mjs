// A real redis-server for the cluster scenarios (cascade.mjs), as the Rust harness starts it
// (tests/common/redis.rs): on 127.0.0.1, a port outside the kernel's ephemeral range probed free
// (lib/ports.mjs), in memory only (`--save '' --appendonly no`), with a password; a port taken
// between the probe and redis-server's bind (it then exits) is retried on a fresh one. Stopped
// with SIGTERM (SIGKILL after 5 s); the driver's killChildren() also reaches it.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePortRange } from './ports.mjs';
import { CheckFailed, sleep, trackChild } from './util.mjs';

const PASSWORD = 'choir-browser-test-password';
const START_ATTEMPTS = 5;

/** Whether redis on `port` answers `AUTH` and `PING` within a second. */
function ping(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write(`AUTH ${PASSWORD}\r\nPING\r\n`));
    s.on('data', (d) => {
      got += d;
      if (got.includes('+PONG')) done(true);
      else if (got.includes('-')) done(false);
    });
  });
}

/** Starts redis-server; resolves to { url, port, stop() } once it answers. `logFile` gets its output. */
export async function startRedis({ logFile, bin = 'redis-server' }) {
  const log = createWriteStream(logFile);
  try {
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const [port] = await freePortRange(1);
      const dir = await mkdtemp(path.join(os.tmpdir(), 'choir-redis-'));
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD, '--dir', dir];
      log.write(`$ ${bin} ${args.map((a) => (a === '' ? "''" : a)).join(' ')}\n`);
      const child = trackChild(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
      child.stdout.on('data', (d) => log.write(d));
      child.stderr.on('data', (d) => log.write(d));
      let exited = null;
      const exit = new Promise((resolve) => {
        child.on('exit', (code, signal) => resolve((exited = { code, signal })));
        child.on('error', (e) => resolve((exited = { code: null, signal: null, error: String(e) })));
      });
      const deadline = Date.now() + 10000;
      while (!exited && Date.now() < deadline && !(await ping(port))) await sleep(50);
      if (exited?.error) throw new CheckFailed(`${bin} could not start: ${exited.error} (apt-get install redis-server; scripts/test.sh installs it)`);
      if (exited) {
        // Most likely its port was taken since the probe: another one.
        log.write(`redis-server exited at start (${JSON.stringify(exited)}), attempt ${attempt}\n`);
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() >= deadline) {
        child.kill('SIGKILL');
        await exit;
        await rm(dir, { recursive: true, force: true });
        throw new CheckFailed(`redis-server did not answer on port ${port} within 10 s (log: ${logFile})`);
      }
      return {
        port,
        url: `redis://:${PASSWORD}@127.0.0.1:${port}`,
        /** SIGTERM, SIGKILL after 5 s; resolves to its exit. */
        async stop() {
          if (!exited) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exit;
            clearTimeout(timer);
          }
          await rm(dir, { recursive: true, force: true });
          await new Promise((resolve) => log.end(resolve));
          return exited;
        },
      };
    }
  } catch (e) {
    log.end();
    throw e;
  }
  log.end();
  throw new CheckFailed(`redis-server exited at start ${START_ATTEMPTS} times (ports taken?); log: ${logFile}`);
}
