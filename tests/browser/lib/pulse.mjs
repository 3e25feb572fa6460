// PulseAudio with a null sink, for Firefox: without a sound server Firefox's AudioContext stays
// "suspended", so neither the test tones nor the analysers run. One server per driver, in its own
// XDG_RUNTIME_DIR (no user session, no cookie: anonymous auth on its unix socket), stopped at the
// end.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { CheckFailed, sleep, trackChild } from './util.mjs';

/**
 * Starts `pulseaudio` with its runtime directory under `dir`; resolves to `{ env, stop }` where
 * `env` is what a client (Firefox) needs to find it.
 */
export async function startPulse(dir) {
  if (spawnSync('pulseaudio', ['--version']).status !== 0) {
    throw new CheckFailed('pulseaudio is not installed (Debian package pulseaudio; scripts/test.sh installs it)');
  }
  const runtime = path.join(dir, 'xdg-runtime');
  await mkdir(runtime, { recursive: true, mode: 0o700 });
  const socket = path.join(runtime, 'pulse', 'native');
  const env = { ...process.env, XDG_RUNTIME_DIR: runtime, HOME: runtime, XDG_CONFIG_HOME: path.join(runtime, 'config') };
  const log = createWriteStream(path.join(dir, 'pulseaudio.log'));
  const args = [
    '--daemonize=no',
    '--exit-idle-time=-1',
    '--disallow-exit',
    '--use-pid-file=no',
    '--log-target=stderr',
    '-n',
    // 48 kHz like Opus: Firefox's AudioContext takes the device's rate, so nothing resamples.
    '--load=module-null-sink sink_name=null rate=48000',
    '--load=module-native-protocol-unix auth-anonymous=1',
  ];
  const child = trackChild(spawn('pulseaudio', args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  const end = Date.now() + 10000;
  while (!existsSync(socket)) {
    if (exited) throw new CheckFailed(`pulseaudio exited at start: ${JSON.stringify(exited)} (see ${path.join(dir, 'pulseaudio.log')})`);
    if (Date.now() > end) throw new CheckFailed(`pulseaudio: no socket ${socket} after 10 s`);
    await sleep(50);
  }
  return {
    env: { XDG_RUNTIME_DIR: runtime, PULSE_SERVER: `unix:${socket}` },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(timer);
      }
      log.end();
    },
  };
}
