#!/usr/bin/env node
// The browser suite: the plan's mediasoup-client frontend and choir's own try-it page in
// Debian's headless Chromium and Firefox ESR against a choir it starts itself. See README.md.
//
//   node run.mjs --choir ../../target/release/choir [--only a,b] [--headed] [--list]
//                [--chromium /usr/bin/chromium] [--firefox /usr/bin/firefox-esr]
//                [--choir-log FILTER] [--chrome-log] [--verbose] [--keep]
//
// Scenarios marked `netns` (the Firefox ones) run in a second driver process inside a network
// namespace of their own (lib/netns.mjs); this one starts it and merges its results.
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildPage } from './build.mjs';
import { cascadeScenarios } from './cascade.mjs';
import { firefoxScenarios } from './firefox.mjs';
import { launchBrowser } from './lib/browser.mjs';
import { startChoir } from './lib/choir.mjs';
import { launchFirefox } from './lib/firefox.mjs';
import { insideNetns, NETNS, netnsCommand, setupNetns } from './lib/netns.mjs';
import { PageUser } from './lib/pageuser.mjs';
import { startPulse } from './lib/pulse.mjs';
import { serveStatic } from './lib/static.mjs';
import { CheckFailed, fmt, killChildren, withTimeout } from './lib/util.mjs';
import { writeToneWav } from './lib/wav.mjs';
import { lossScenarios } from './loss.mjs';
import { pageScenarios } from './page.mjs';
import { scenarios as chromiumScenarios } from './scenarios.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const scenarios = [...chromiumScenarios, ...lossScenarios, ...firefoxScenarios, ...pageScenarios, ...cascadeScenarios];

const USAGE = `usage: node run.mjs [options]
  --choir PATH       choir binary (default ../../target/release/choir)
  --chromium PATH    Chromium binary (default /usr/bin/chromium, or $CHROMIUM)
  --firefox PATH     Firefox binary (default /usr/bin/firefox-esr, or $FIREFOX)
  --artifacts DIR    where screenshots of choir's page go (default ../../target/browser-artifacts)
  --only NAMES       run only these scenarios (comma-separated; see --list)
  --list             list the scenarios and exit
  --headed           show the browser windows (needs a display: a desktop, or xvfb-run)
  --slow-mo MS       with --headed: pause this long before each scenario ends, to look around
  --choir-log FILTER choir's --log filter (default "choir=debug")
  --chrome-log       also log Chromium's WebRTC internals (RTP demuxing, receive streams) to
                     <logs>/<scenario>/chromium.log, and print its warnings on failure
  --verbose          print every page's console and choir's log as they come
  --keep             keep the run's logs directory even when everything passed`;

const { values: opts } = parseArgs({
  options: {
    choir: { type: 'string', default: '../../target/release/choir' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    firefox: { type: 'string', default: process.env.FIREFOX ?? '/usr/bin/firefox-esr' },
    artifacts: { type: 'string', default: path.join(here, '..', '..', 'target', 'browser-artifacts') },
    // Internal: the driver re-run inside the network namespace.
    'netns-inner': { type: 'boolean', default: false },
    'run-dir': { type: 'string' },
    results: { type: 'string' },
    only: { type: 'string' },
    list: { type: 'boolean', default: false },
    headed: { type: 'boolean', default: false },
    'slow-mo': { type: 'string', default: '0' },
    'choir-log': { type: 'string', default: 'choir=debug' },
    'chrome-log': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
if (opts.list) {
  for (const s of scenarios) console.log(`${s.name.padEnd(20)} ${s.netns ? '[netns] ' : ''}${s.description}`);
  process.exit(0);
}

/** The whole suite must end well within CI's limit even if something hangs. */
const SUITE_LIMIT_MS = 15 * 60 * 1000;
/** The driver running inside the network namespace, while it runs. */
let innerDriver = null;
const suiteTimer = setTimeout(() => {
  console.error(`\nbrowser suite: over ${SUITE_LIMIT_MS / 60000} minutes, giving up`);
  stopAll();
  process.exit(3);
}, SUITE_LIMIT_MS);
suiteTimer.unref();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`\nbrowser suite: ${signal}, stopping choir and the browsers`);
    stopAll();
    process.exit(130);
  });
}

/** Kills what this driver started; the inner driver gets SIGTERM, to stop what it started. */
function stopAll() {
  innerDriver?.kill('SIGTERM');
  killChildren();
}

const selected = opts.only
  ? opts.only.split(',').map((name) => {
      const s = scenarios.find((x) => x.name === name.trim());
      if (!s) {
        console.error(`unknown scenario ${name}; known: ${scenarios.map((x) => x.name).join(', ')}`);
        process.exit(2);
      }
      return s;
    })
  : scenarios;

const choirBin = path.resolve(opts.choir);
for (const [what, file] of [['choir', choirBin], ['Chromium', opts.chromium]]) {
  if (!existsSync(file)) {
    console.error(`${what} not found at ${file}`);
    process.exit(2);
  }
}

const inner = opts['netns-inner'];
if (inner && !insideNetns()) {
  console.error('--netns-inner is for the driver run.mjs starts inside its network namespace');
  process.exit(2);
}
if (inner) console.log(`   network namespace: ${(await setupNetns(process.env.CHOIR_TEST_IP)).join(', ')}`);
const runDir = opts['run-dir'] ?? (await mkdtemp(path.join(os.tmpdir(), 'choir-browser-')));
const artifacts = path.resolve(opts.artifacts);
await mkdir(artifacts, { recursive: true });
const fakeMicHz = 1000;
const fakeMic = path.join(runDir, `tone-${fakeMicHz}hz.wav`);
await writeToneWav(fakeMic, { hz: fakeMicHz, seconds: 2 });

const t0 = Date.now();
const dist = await buildPage();
const site = await serveStatic(dist);
if (!inner) console.log(`page ${site.url} (built in ${Date.now() - t0} ms); logs in ${runDir}`);

const results = [];
const measurements = [];
/** PulseAudio for Firefox, started with the first Firefox of this driver. */
let pulse = null;

for (const scenario of selected.filter((s) => inner || !s.netns)) {
  const result = await runScenario(scenario);
  results.push(result);
  const mark = result.ok ? 'ok  ' : 'FAIL';
  console.log(`${mark} ${scenario.name} (${fmt(result.ms / 1000)} s)${result.ok ? '' : `: ${result.error}`}`);
}
await pulse?.stop();
await site.close();
if (inner) {
  await writeFile(opts.results, JSON.stringify({ results, measurements }));
  process.exit(0);
}
const namespaced = selected.filter((s) => s.netns);
if (namespaced.length) await runInNetns(namespaced);

printSummary();
const failed = results.filter((r) => !r.ok).length;
if (!failed && !opts.keep) await rm(runDir, { recursive: true, force: true });
else console.log(`logs kept in ${runDir}`);
process.exit(failed ? 1 : 0);

/**
 * Runs `list` in a second driver inside a new network namespace and takes over its results;
 * where no namespace can be made, they are skipped, saying why.
 */
async function runInNetns(list) {
  const ns = netnsCommand();
  if (ns.error) {
    console.log(`\n-- SKIPPING ${list.map((s) => s.name).join(', ')}: ${ns.error}. These scenarios need a network namespace (run as root, as CI does, or allow unprivileged user namespaces).`);
    for (const s of list) results.push({ name: s.name, ok: true, skipped: true, ms: 0, error: ns.error });
    return;
  }
  const file = path.join(runDir, 'netns-results.json');
  const pass = ['choir', 'chromium', 'firefox', 'choir-log', 'slow-mo', 'artifacts'].flatMap((k) => [`--${k}`, String(opts[k])]);
  const flags = ['headed', 'chrome-log', 'verbose'].filter((k) => opts[k]).map((k) => `--${k}`);
  const args = [...ns.prefix.slice(1), process.execPath, fileURLToPath(import.meta.url), '--netns-inner', '--run-dir', runDir, '--results', file, '--only', list.map((s) => s.name).join(','), ...pass, ...flags];
  console.log(`\n== in a network namespace of its own (${ns.prefix.join(' ')}; choir on ${NETNS.rtcIp}): ${list.map((s) => s.name).join(', ')}`);
  innerDriver = spawn(ns.prefix[0], args, { stdio: 'inherit', env: { ...process.env, CHOIR_TEST_NETNS: '1', CHOIR_TEST_IP: ns.ip } });
  const exit = await new Promise((resolve) => {
    innerDriver.on('exit', (code, signal) => resolve({ code, signal }));
    innerDriver.on('error', (e) => resolve({ code: null, error: String(e) }));
  });
  innerDriver = null;
  const got = await readFile(file, 'utf8').then(JSON.parse, () => null);
  for (const s of list) {
    const r = got?.results.find((x) => x.name === s.name);
    results.push(r ?? { name: s.name, ok: false, ms: 0, error: `the namespace driver ended (${JSON.stringify(exit)}) without a result` });
  }
  measurements.push(...(got?.measurements ?? []));
}

async function runScenario(scenario) {
  const started = Date.now();
  const dir = path.join(runDir, scenario.name);
  await mkdir(dir, { recursive: true });
  const result = { name: scenario.name, ok: false, ms: 0, error: null, notes: [] };
  let choir;
  let browser;
  /**
   * Browsers the scenario launched itself (t.launch), other choirs (t.startChoir), page users.
   * A scenario with `ownChoirs` gets no choir of the driver's (t.choir is null): it starts its
   * own with t.startChoir.
   */
  const launched = [];
  const choirs = [];
  const pageUsers = [];
  const onLog = opts.verbose ? (who, line) => console.log(`  [${scenario.name} ${who}] ${line}`) : undefined;
  const note = (text) => console.log(`   ${text}`);
  const consentTimeout = scenario.consentTimeout ?? '5s';
  const newChoir = (logFile, extraArgs, env) =>
    startChoir({ bin: choirBin, logFile, logFilter: opts['choir-log'], consentTimeout, extraArgs, env });
  /** What the scenario asked to run at its end (t.cleanup), after the browsers and choirs stopped. */
  const cleanups = [];

  /** Another browser process: Chromium or Firefox, with a fake microphone playing `micHz`. */
  async function launch(kind, { micHz = fakeMicHz } = {}) {
    const log = createWriteStream(path.join(dir, `${kind}-${launched.length}.log`));
    let b;
    if (kind === 'chromium') {
      const wav = path.join(runDir, `tone-${micHz}hz.wav`);
      if (!existsSync(wav)) await writeToneWav(wav, { hz: micHz, seconds: 2 });
      b = await launchBrowser({
        executablePath: opts.chromium,
        headed: opts.headed,
        pageUrl: site.url,
        fakeAudioFile: wav,
        onLog,
        browserLog: (line) => log.write(`${line}\n`),
        webrtcLog: opts['chrome-log'],
      });
    } else if (kind === 'firefox') {
      if (!existsSync(opts.firefox)) {
        throw new CheckFailed(`Firefox not found at ${opts.firefox} (apt-get install firefox-esr; scripts/test.sh installs it)`);
      }
      pulse ??= await startPulse(runDir);
      b = await launchFirefox({ executablePath: opts.firefox, headed: opts.headed, pageUrl: site.url, micHz, pulseEnv: pulse.env, onLog, browserLog: (line) => log.write(line) });
    } else {
      throw new Error(`unknown browser ${kind}`);
    }
    b.logStream = log;
    launched.push(b);
    note(`${kind === 'chromium' ? 'Chromium ' : ''}${b.version}, fake microphone ${micHz} Hz`);
    return b;
  }

  try {
    console.log(`\n-- ${scenario.name}: ${scenario.description}`);
    // Inside the namespace choir binds and announces its veth address (Firefox gathers no loopback).
    const netnsArgs = inner ? ['--listen-ips', NETNS.rtcIp] : [];
    if (!scenario.ownChoirs) choir = await newChoir(path.join(dir, 'choir.log'), [...netnsArgs, ...(scenario.choirArgs ?? [])]);
    if (!scenario.ownBrowsers) {
      const chromiumLog = createWriteStream(path.join(dir, 'chromium.log'));
      browser = await launchBrowser({
        executablePath: opts.chromium,
        headed: opts.headed,
        pageUrl: site.url,
        fakeAudioFile: fakeMic,
        onLog,
        browserLog: (line) => chromiumLog.write(`${line}\n`),
        webrtcLog: opts['chrome-log'],
      });
      browser.logStream = chromiumLog;
    }
    if (results.length === 0 && browser && choir) console.log(`   Chromium ${browser.version}, choir at ${choir.url}, RTC ports ${choir.rtcPorts.join('-')}`);
    if (scenario.ownBrowsers && choir) note(`choir at ${choir.url}, RTC ${inner ? NETNS.rtcIp : '127.0.0.1'} ports ${choir.rtcPorts.join('-')}, consent timeout ${consentTimeout}`);
    const t = {
      name: scenario.name,
      choir,
      channel: `${scenario.name}-${process.pid}`,
      options: { fakeMicHz },
      user: (name) => browser.openUser(name),
      /** The scenario's Chromium (unless it has its own browsers). */
      browser,
      /** The run's logs directory and this scenario's own one in it. */
      runDir,
      dir,
      users: () => browser.users,
      /** The address choir's candidates carry in this scenario. */
      rtcIp: inner ? NETNS.rtcIp : '127.0.0.1',
      launch,
      /** choir's try-it page (or `url`) in a tab of `b`, as `name`. */
      async pageUser(b, name, { url } = {}) {
        const u = await PageUser.open(b, name, url ?? `${choir.url}/`, { probe: path.join(dist, 'probe.js'), onLog });
        pageUsers.push(u);
        return u;
      },
      /**
       * Another choir for this scenario, with exactly `args` beyond the suite's defaults (and
       * `env` added to its environment); stopped by the driver like the first one.
       */
      async startChoir(args, { env } = {}) {
        const c = await newChoir(path.join(dir, `choir-${choirs.length + 2}.log`), args, env);
        choirs.push(c);
        return c;
      },
      /** Runs `fn` when the scenario ends (passed or not), after its browsers and choirs stopped. */
      cleanup: (fn) => cleanups.push(fn),
      /** A file kept with the suite's artifacts (not deleted with the logs). */
      artifact: (name) => path.join(artifacts, name),
      measure: (name, text) => {
        measurements.push({ name, text });
        console.log(`   ${name}: ${text}`);
      },
      note,
    };
    await withTimeout(scenario.run(t), scenario.timeoutMs, `scenario ${scenario.name}`);
    if (opts.headed && Number(opts['slow-mo'])) await new Promise((r) => setTimeout(r, Number(opts['slow-mo'])));
    result.ok = true;
  } catch (e) {
    result.error = e.message.split('\n')[0];
    console.log(`   FAILED: ${e.message}`);
    if (e.details !== undefined) console.log(`   details: ${JSON.stringify(e.details, null, 1).slice(0, 4000)}`);
    if (!(e instanceof CheckFailed)) console.log(e.stack);
    // A bug in the diagnostics must not end the run.
    await diagnose(dir, [browser, ...launched], [choir, ...choirs].filter(Boolean), pageUsers).catch((d) => console.log(`   diagnostics failed: ${d.stack}`));
  } finally {
    for (const b of [browser, ...launched]) {
      if (!b) continue;
      await b.close();
      b.logStream.end();
    }
    for (const c of [choir, ...choirs]) {
      if (!c) continue;
      const exit = await c.stop();
      if (exit.code !== 0 && result.ok) {
        result.ok = false;
        result.error = `choir did not exit cleanly on SIGTERM: ${JSON.stringify(exit)}`;
        console.log(`   FAILED: ${result.error}\n   choir log (tail):\n${c.tail(40).map((l) => `     ${l}`).join('\n')}`);
      } else if (exit.code === 0) {
        console.log(`   choir stopped (SIGTERM -> exit 0 in ${exit.ms} ms)`);
      }
    }
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (e) {
        console.log(`   cleanup failed: ${e.message}`);
        if (result.ok) {
          result.ok = false;
          result.error = `cleanup failed: ${e.message.split('\n')[0]}`;
        }
      }
    }
  }
  result.ms = Date.now() - started;
  return result;
}

/** Prints and saves what the pages and choir saw: page logs, getStats, API calls, counters. */
async function diagnose(dir, browsers, choirs, pageUsers = []) {
  const dump = { choir: {}, users: {} };
  // The scenario's first choir, and its others (`choirs` in diagnostics.json) when it has several.
  const [choir, ...others] = choirs;
  const counters = async (c) => {
    if (!c || c.exited()) return {};
    return { health: await c.health().catch((e) => String(e)), stats: await c.stats().catch((e) => String(e)) };
  };
  dump.choir = await counters(choir);
  if (others.length) dump.choirs = await Promise.all(others.map(counters));
  for (const user of [...browsers.flatMap((b) => b?.users ?? []), ...pageUsers]) {
    const u = { logs: user.logs };
    if (!user.closed) {
      u.state = await user.state().catch((e) => String(e));
      u.stats = await user.stats().catch((e) => String(e));
      u.calls = await user.apiCalls().catch((e) => String(e));
    }
    dump.users[user.name] = u;
  }
  await writeFile(path.join(dir, 'diagnostics.json'), JSON.stringify(dump, null, 1));
  console.log(`   --- diagnostics (full: ${path.join(dir, 'diagnostics.json')}, choir log${choirs.length > 1 ? 's' : ''}: ${choirs.map((c) => c.logFile).join(', ')})`);
  for (const [i, d] of [dump.choir, ...(dump.choirs ?? [])].entries()) {
    const which = choirs.length > 1 ? ` ${path.basename(choirs[i].logFile, '.log')}` : '';
    console.log(`   choir${which} health: ${JSON.stringify(d.health)}`);
    console.log(`   choir${which} stats: ${JSON.stringify(d.stats?.total ?? d.stats)}`);
  }
  for (const [name, u] of Object.entries(dump.users)) {
    console.log(`   [${name}] last page log lines:`);
    for (const line of u.logs.slice(-12)) console.log(`     ${line}`);
    if (u.stats && typeof u.stats === 'object' && u.stats.ui) {
      console.log(`     page: ${JSON.stringify(u.stats.ui)}`);
      console.log(`     panel: ${JSON.stringify(u.stats.panel)}`);
    } else if (u.stats && typeof u.stats === 'object') {
      for (const dir of ['send', 'recv']) {
        const s = u.stats[dir];
        if (!s) continue;
        const pair = s.pairs.find((p) => p.id === s.transport[0]?.selectedCandidatePairId) ?? s.pairs[0];
        console.log(`     ${dir}: transport ${JSON.stringify(s.transport[0])} pair ${JSON.stringify(pair)}`);
      }
      for (const c of u.stats.consumers) console.log(`     consumer of ${c.userId}: ${JSON.stringify(c.inbound[0])}`);
      for (const r of u.state?.remotes ?? []) {
        const c = u.stats.consumers.find((x) => x.producerId === r.producerId);
        if (c && !c.inbound.length) {
          console.log(`     ! consumer of ${r.userId} (ssrc ${r.ssrc}, mid ${r.mid}, via ${r.source}): no inbound-rtp in getStats, Chromium matched no packet to it`);
        }
      }
      if (u.stats.producer) console.log(`     producer: ${JSON.stringify(u.stats.producer.outbound[0])}`);
    }
  }
  if (opts['chrome-log']) {
    const { readFile } = await import('node:fs/promises');
    const text = await readFile(path.join(dir, 'chromium.log'), 'utf8').catch(() => '');
    const lines = text.split('\n').map((l) => l.replace(/^.*?:(INFO|ERROR|WARNING|VERBOSE\d):\S+\] /, '$1 '));
    const conflicts = lines.filter((l) => /conflict|Unable to add sink|could not be added/i.test(l));
    const unsignaled = lines.filter((l) => /Creating unsignaled receive stream/.test(l));
    console.log(`   Chromium WebRTC log: ${unsignaled.length} "Creating unsignaled receive stream", ${conflicts.length} demuxer conflicts; first ones:`);
    for (const line of conflicts.slice(0, 9)) console.log(`     ${line}`);
  }
  for (const c of choirs) {
    console.log(`   ${path.basename(c.logFile)} (tail):`);
    for (const line of c.tail(40)) console.log(`     ${line}`);
  }
}

function printSummary() {
  console.log('\n== browser suite summary');
  const w = Math.max(...results.map((r) => r.name.length), 8);
  console.log(`${'scenario'.padEnd(w)}  result  time`);
  for (const r of results) {
    const mark = r.skipped ? 'skip  ' : r.ok ? 'pass  ' : 'FAIL  ';
    console.log(`${r.name.padEnd(w)}  ${mark}  ${fmt(r.ms / 1000).padStart(5)} s${r.ok && !r.skipped ? '' : `  ${r.error}`}`);
  }
  const passed = results.filter((r) => r.ok && !r.skipped).length;
  const skipped = results.filter((r) => r.skipped);
  console.log(`${'total'.padEnd(w)}  ${passed}/${results.length}    ${fmt((Date.now() - t0) / 1000).padStart(5)} s`);
  if (measurements.length) {
    console.log('\nmeasurements:');
    for (const m of measurements) console.log(`  ${m.name}: ${m.text}`);
  }
  const screenshots = results.some((r) => r.ok && !r.skipped && r.name.startsWith('page-'));
  if (screenshots) console.log(`\nscreenshots of choir's page: ${artifacts}`);
  const failed = results.filter((r) => !r.ok).length;
  const skip = skipped.length ? `, ${skipped.length} skipped (${skipped[0].error})` : '';
  console.log(`\nbrowser: ${passed} passed, ${failed} failed${skip}`);
}
