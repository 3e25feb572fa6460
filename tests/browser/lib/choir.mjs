// Starts choir on free ports (API on 127.0.0.1:0, RTC on a port range of its own, announced IP
// 127.0.0.1), talks to its API, and stops it with SIGTERM (expecting exit status 0).
//
// The API port is the kernel's choice (port 0: bound atomically, no window for another process
// to take it). The RTC range lies outside the ephemeral range, every port probed free for UDP
// and TCP (lib/ports.mjs); if choir still cannot bind at start (a port taken since the probe:
// single-port mode binds its shard ports then), it is started again on a fresh range.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { freePortRange, isBindFailure } from './ports.mjs';
import { CheckFailed, trackChild, withTimeout } from './util.mjs';

/** RTC ports per choir. */
const RTC_PORTS = 400;
const START_ATTEMPTS = 5;

export async function startChoir(opts) {
  for (let attempt = 1; ; attempt++) {
    const [min, max] = await freePortRange(RTC_PORTS);
    try {
      return await startOnce(opts, min, max);
    } catch (e) {
      if (!(e instanceof BindFailure) || attempt >= START_ATTEMPTS) throw e;
      const why = e.message.split('\n').find(isBindFailure) ?? e.message;
      console.log(`   choir could not bind its RTC ports ${min}-${max} (attempt ${attempt}): ${why.trim()}; retrying`);
    }
  }
}

/** choir exited at start because a port was taken. */
class BindFailure extends CheckFailed {}

async function startOnce({ bin, logFile, logFilter, consentTimeout = '5s', extraArgs = [], env = {} }, min, max) {
  const defaults = [
    ['--listen', '127.0.0.1:0'],
    ['--announced-ip', '127.0.0.1'],
    ['--rtc-listen-ip', '127.0.0.1'],
    ['--rtc-min-port', String(min)],
    ['--rtc-max-port', String(max)],
    ['--consent-timeout', consentTimeout],
    ['--log', logFilter],
  ];
  // A setting in `extraArgs` replaces the default (choir refuses one given twice).
  const args = [...defaults.filter(([flag]) => !extraArgs.includes(flag)).flat(), ...extraArgs];
  const child = trackChild(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
  const log = createWriteStream(logFile);
  const envText = Object.keys(env).map((k) => `${k}=… `).join('');
  log.write(`$ ${envText}${bin} ${args.join(' ')}\n`);
  const tail = [];
  const keep = (chunk) => {
    log.write(chunk);
    for (const line of chunk.toString().split('\n')) if (line) tail.push(line);
    if (tail.length > 400) tail.splice(0, tail.length - 400);
  };
  child.stderr.on('data', keep);
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
    child.on('error', (e) => {
      exited = { code: null, signal: null, error: e };
      resolve(exited);
    });
  });
  const closed = new Promise((resolve) => {
    child.on('close', () => exit.then(resolve));
    child.on('error', () => exit.then(resolve));
  });
  const listening = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      keep(chunk);
      out += chunk;
      const m = out.match(/choir listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    // 'close': the process ended and its output was read to the end (the bind error included).
    closed.then((e) => {
      const text = tail.join('\n');
      const Failure = isBindFailure(text) ? BindFailure : CheckFailed;
      reject(new Failure(`choir exited before listening: ${JSON.stringify(e)}\n${text}`));
    });
  });
  let url;
  try {
    url = await withTimeout(listening, 10000, 'choir printing "choir listening on ..."');
  } catch (e) {
    if (!exited) child.kill('SIGKILL');
    await exit;
    await new Promise((resolve) => log.end(resolve));
    throw e;
  }
  const api = `${url}/api`;

  async function request(method, path, body) {
    const res = await fetch(`${api}/voice${path}`, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(5000),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new CheckFailed(`${method} /api/voice${path} -> ${res.status}: ${data?.error}`);
    return data;
  }

  return {
    url,
    api,
    rtcPorts: [min, max],
    logFile,
    tail: (n = 80) => tail.slice(-n),
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body),
    health: () => request('GET', '/health'),
    stats: () => request('GET', '/stats'),
    /** SIGTERM, then waits for the exit; resolves to { code, signal, ms } (SIGKILL after 10 s). */
    async stop() {
      if (exited) return { ...exited, ms: 0, alreadyExited: true };
      const t = Date.now();
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      const e = await exit;
      clearTimeout(timer);
      await new Promise((resolve) => log.end(resolve));
      return { ...e, ms: Date.now() - t };
    },
    exited: () => exited,
  };
}
