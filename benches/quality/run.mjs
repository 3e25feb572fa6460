// The voice-quality benchmark's driver (issue 21, item 1): real Chromium (and a Firefox
// listener) through the impairing relay, P2P and choir builds on the same network and speech
// file; writes each case's recording and stats, then scores them (score.py: PESQ, STOI, PLCMOS,
// DNSMOS, delays) into a CSV, a markdown table and a plot. scripts/quality.sh installs what it
// needs and runs it:
//   node benches/quality/run.mjs --speech target/quality/speech.wav --choir choir-before=target/release/choir
// Everything runs in a network namespace of its own when one can be made (Firefox gathers no
// loopback candidate); without one, on loopback and without the Firefox cases.
import { spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchBrowser } from '../../tests/browser/lib/browser.mjs';
import { startChoir } from '../../tests/browser/lib/choir.mjs';
import { launchFirefox } from '../../tests/browser/lib/firefox.mjs';
import { insideNetns, NETNS, netnsCommand, setupNetns } from '../../tests/browser/lib/netns.mjs';
import { freePortRange } from '../../tests/browser/lib/ports.mjs';
import { startPulse } from '../../tests/browser/lib/pulse.mjs';
import { killChildren, withTimeout } from '../../tests/browser/lib/util.mjs';
import { RATE, runCall, windowStats } from './call.mjs';
import { matrix } from './cases.mjs';
import { startRelay } from './relay.mjs';
import { buildPage, startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');

const { values: opts } = parseArgs({
  options: {
    choir: { type: 'string', multiple: true, default: [] },
    'choir-red': { type: 'string', multiple: true, default: [] },
    'no-p2p': { type: 'boolean', default: false },
    // Also P2P with audio NACK negotiated (both SDPs munged): what retransmission alone buys.
    'p2p-nack': { type: 'boolean', default: false },
    'no-firefox': { type: 'boolean', default: false },
    'no-netns': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    speech: { type: 'string', default: path.join(root, 'target', 'quality', 'speech.wav') },
    out: { type: 'string' },
    seed: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '20' },
    measure: { type: 'string' },
    'codec-options': { type: 'string' },
    'p2p-no-twcc': { type: 'boolean', default: false },
    // The Chromium listener in a page of its own (its own AudioContext): checks the two-clock
    // delay estimate that the Firefox cases rely on against the one-clock one.
    'separate-listener': { type: 'boolean', default: false },
    python: { type: 'string', default: path.join(root, 'target', 'quality-venv', 'bin', 'python') },
    'no-score': { type: 'boolean', default: false },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    firefox: { type: 'string', default: process.env.FIREFOX ?? '/usr/bin/firefox-esr' },
    list: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (opts.help) {
  console.log(`node benches/quality/run.mjs [--choir [NAME=]PATH]... [--choir-red [NAME=]PATH]... [--no-p2p] [--quick] [--only SUBSTR,...]
  [--p2p-nack] [--separate-listener] [--no-firefox] [--no-netns] [--seed N] [--warmup S] [--measure S] [--codec-options JSON]
  [--speech WAV] [--out DIR] [--python PATH] [--no-score] [--list]`);
  process.exit(0);
}

const systems = [
  ...(opts['no-p2p'] ? [] : [{ name: 'p2p', p2p: true }]),
  ...(opts['p2p-nack'] ? [{ name: 'p2p-nack', p2p: true, nack: true }] : []),
  ...opts.choir.map((spec) => {
    const [name, bin] = spec.includes('=') ? spec.split(/=(.*)/s) : ['choir', spec];
    return { name, bin: path.resolve(bin) };
  }),
  // The speaker on choir's try-it client (RED) instead of the plan's mediasoup-client flow.
  ...opts['choir-red'].map((spec) => {
    const [name, bin] = spec.includes('=') ? spec.split(/=(.*)/s) : ['choir-red', spec];
    return { name, bin: path.resolve(bin), redSpeaker: true };
  }),
];
let cases = matrix(systems, { quick: opts.quick, firefox: !opts['no-firefox'] });
if (opts.only) {
  const want = opts.only.split(',');
  cases = cases.filter((c) => want.some((w) => c.name.includes(w)));
}
if (opts['codec-options']) {
  const co = JSON.parse(opts['codec-options']);
  for (const c of cases) if (c.system === 'choir') c.codecOptions = co;
}
for (const c of cases) if (c.system === 'p2p') c.p2pNoTwcc = opts['p2p-no-twcc'];
if (opts.list || !cases.length) {
  for (const c of cases) console.log(c.name);
  if (!cases.length) console.log('no case selected');
  process.exit(cases.length ? 0 : 2);
}

// ---- the network namespace ----
if (!opts['no-netns'] && !insideNetns()) {
  const ns = netnsCommand();
  if (!ns.error) {
    const args = [...ns.prefix.slice(1), process.execPath, ...process.argv.slice(1)];
    const child = spawn(ns.prefix[0], args, { stdio: 'inherit', env: { ...process.env, CHOIR_TEST_NETNS: '1', CHOIR_TEST_IP: ns.ip } });
    process.on('SIGINT', () => child.kill('SIGINT'));
    process.on('SIGTERM', () => child.kill('SIGTERM'));
    child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
    await new Promise(() => {});
  }
  console.log(`no network namespace (${ns.error}): on loopback, without the Firefox cases`);
  cases = cases.filter((c) => c.listener !== 'firefox');
}
const inNetns = insideNetns();
if (inNetns) console.log(`network namespace: ${(await setupNetns(process.env.CHOIR_TEST_IP)).join(', ')}`);
const relayIp = inNetns ? NETNS.rtcIp : '127.0.0.1';

process.on('SIGINT', () => {
  killChildren();
  process.exit(130);
});

const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const out = path.resolve(opts.out ?? path.join(root, 'target', 'quality', `run-${stamp}`));
await mkdir(path.join(out, 'cases'), { recursive: true });
const measureS = opts.measure ? Number(opts.measure) : wavSeconds(opts.speech);
const warmupS = Number(opts.warmup);
const seed = Number(opts.seed);

const git = (...a) => spawnSync('git', ['-C', root, ...a], { encoding: 'utf8' }).stdout.trim();
const run = {
  date: new Date().toISOString(),
  commit: git('rev-parse', '--short', 'HEAD'),
  dirty: git('status', '--porcelain').length > 0,
  machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.release()}`,
  command: `node benches/quality/run.mjs ${process.argv.slice(2).join(' ')}`,
  systems,
  seed,
  warmupS,
  measureS,
  relayIp,
  speech: opts.speech,
  cases: [],
};

const dist = await buildPage(path.join(root, 'target', 'quality', 'dist'));
await copyFile(opts.speech, path.join(out, 'speech.wav'));
const [portLo, portHi] = await freePortRange(300, relayIp);
let nextPort = portLo;
const ports = () => {
  if (nextPort > portHi) nextPort = portLo;
  return nextPort++;
};

const chromium = await launchBrowser({ executablePath: opts.chromium, pageUrl: 'about:blank' });
run.chromium = chromium.version;
console.log(`Chromium ${chromium.version}; ${cases.length} cases, ${warmupS} s warm-up + ${measureS.toFixed(1)} s measured each; results in ${out}`);
let firefox = null;
let pulse = null;

const started = Date.now();
for (const [i, c] of cases.entries()) {
  const t = Date.now();
  process.stdout.write(`[${i + 1}/${cases.length}] ${c.name} ... `);
  try {
    const r = await runCase(c);
    const w = windowStats(r.stats);
    const f = (x, d = 1) => (x === null ? '–' : x.toFixed(d));
    console.log(`ok (${((Date.now() - t) / 1000).toFixed(0)} s): concealed ${f(w.concealedPct)} %, lost ${f(w.lostPct)} %, FEC ${w.fecPackets ?? '–'}, NACK ${w.nackCount ?? '–'}, jitter buffer ${f(w.jitterBufferMs, 0)} ms`);
  } catch (e) {
    console.log(`FAILED: ${e.message}`);
    run.cases.push({ ...c, dir: null, error: e.message });
  }
}
await chromium.close();
await firefox?.close();
await pulse?.stop();
run.wallS = Math.round((Date.now() - started) / 1000);
await writeFile(path.join(out, 'run.json'), JSON.stringify(run, null, 2));
console.log(`recorded ${run.cases.filter((c) => !c.error).length}/${cases.length} cases in ${run.wallS} s`);

let status = run.cases.some((c) => c.error) ? 1 : 0;
if (!opts['no-score']) {
  const score = spawnSync(opts.python, [path.join(here, 'score.py'), 'score', out], { stdio: 'inherit' });
  if (score.status !== 0) status = 1;
  else {
    for (const f of ['results.csv', 'results.md', 'quality.png']) await copyFile(path.join(out, f), path.join(path.dirname(out), f)).catch(() => {});
    console.log(`results: ${path.join(path.dirname(out), 'results.md')} (and .csv, quality.png)`);
  }
}
process.exit(status);

async function runCase(c) {
  const dir = path.join(out, 'cases', c.name.replace(/\//g, '_'));
  await mkdir(dir, { recursive: true });
  const relay = startRelay({ seed, ip: relayIp, ports });
  const server = await startServer({ dist, wav: opts.speech, relay });
  let choir = null;
  const pages = [];
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  try {
    if (c.system === 'choir') {
      choir = await startChoir({ bin: c.bin, logFile: path.join(dir, 'choir.log'), logFilter: 'choir=info', consentTimeout: '30s' });
    }
    const speakerPage = await openBench(chromium, server.url);
    pages.push(speakerPage);
    let listenerPage = speakerPage;
    if (c.listener === 'chromium' && opts['separate-listener']) {
      listenerPage = await openBench(chromium, server.url);
      pages.push(listenerPage);
    } else if (c.listener === 'firefox') {
      if (!firefox) {
        pulse = await startPulse(out);
        firefox = await launchFirefox({ executablePath: opts.firefox, pageUrl: 'about:blank', micHz: 440, pulseEnv: pulse.env });
        run.firefox = firefox.version;
      }
      listenerPage = await openBench(firefox, server.url);
      pages.push(listenerPage);
    }
    const r = await runCall({ c, speakerPage, listenerPage, server, choir, relayIp, warmupS, measureS });
    await writeWav(path.join(dir, 'received.wav'), r.pcm);
    const meta = { ...c, dir: path.relative(out, dir), rotateFrames: r.rotateFrames, measureFrames: r.measureFrames, fileFrames: r.fileFrames, sameClock: r.sameClock, setupMs: r.setupMs, stats: r.stats, relay: relay.taps(), bridges: server.bridges, choirStats: r.choirStats, eventLoopDelayMs: { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 } };
    await writeFile(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 2));
    run.cases.push({ ...c, dir: meta.dir });
    return r;
  } finally {
    for (const p of pages) {
      const context = typeof p.context === 'function' ? p.context() : p.browserContext();
      await withTimeout(context.close(), 10000, 'closing a page').catch(() => {});
    }
    if (choir) {
      const e = await choir.stop();
      if (e.code !== 0) console.log(`(choir exited ${JSON.stringify(e)})`);
    }
    await server.close();
    await relay.close();
  }
}

/** A bench page in a fresh browser context of `browser`. */
async function openBench(browser, url) {
  const page = await browser.openPage(`${url}/`, { viewport: { width: 400, height: 300 } });
  page.on('console', (m) => {
    const text = typeof m.text === 'function' ? m.text() : String(m);
    if (/error|fail/i.test(text)) console.log(`   [page] ${text}`);
  });
  await withTimeout(page.waitForFunction(() => window.quality), 15000, 'window.quality');
  return page;
}

function wavSeconds(file) {
  const r = spawnSync('python3', ['-c', `import wave,sys; w=wave.open(sys.argv[1]); print(w.getnframes()/w.getframerate())`, file], { encoding: 'utf8' });
  const s = Number(r.stdout);
  if (!(s > 0)) throw new Error(`cannot read ${file}: ${r.stderr}`);
  return s;
}

async function writeWav(file, pcm) {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + pcm.length, 4);
  h.write('WAVE', 8);
  h.write('fmt ', 12);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(RATE, 24);
  h.writeUInt32LE(RATE * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(pcm.length, 40);
  await writeFile(file, Buffer.concat([h, pcm]));
}
