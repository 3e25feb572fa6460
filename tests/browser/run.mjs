#!/usr/bin/env node
// The browser suite: the plan's mediasoup-client frontend in Debian's headless Chromium against a
// choir it starts itself. See README.md.
//
//   node run.mjs --choir ../../target/release/choir [--only a,b] [--headed] [--list]
//                [--chromium /usr/bin/chromium] [--choir-log FILTER] [--chrome-log] [--verbose] [--keep]
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildPage } from './build.mjs';
import { launchBrowser } from './lib/browser.mjs';
import { startChoir } from './lib/choir.mjs';
import { serveStatic } from './lib/static.mjs';
import { CheckFailed, fmt, killChildren, withTimeout } from './lib/util.mjs';
import { writeToneWav } from './lib/wav.mjs';
import { scenarios } from './scenarios.mjs';

const USAGE = `usage: node run.mjs [options]
  --choir PATH       choir binary (default ../../target/release/choir)
  --chromium PATH    Chromium binary (default /usr/bin/chromium, or $CHROMIUM)
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
  for (const s of scenarios) console.log(`${s.name.padEnd(14)} ${s.description}`);
  process.exit(0);
}

/** The whole suite must end well within CI's limit even if something hangs. */
const SUITE_LIMIT_MS = 9 * 60 * 1000;
const suiteTimer = setTimeout(() => {
  console.error(`\nbrowser suite: over ${SUITE_LIMIT_MS / 60000} minutes, giving up`);
  killChildren();
  process.exit(3);
}, SUITE_LIMIT_MS);
suiteTimer.unref();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`\nbrowser suite: ${signal}, stopping choir and Chromium`);
    killChildren();
    process.exit(130);
  });
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

const runDir = await mkdtemp(path.join(os.tmpdir(), 'choir-browser-'));
const fakeMicHz = 1000;
const fakeMic = path.join(runDir, `tone-${fakeMicHz}hz.wav`);
await writeToneWav(fakeMic, { hz: fakeMicHz, seconds: 2 });

const t0 = Date.now();
const dist = await buildPage();
const site = await serveStatic(dist);
console.log(`page ${site.url} (built in ${Date.now() - t0} ms); logs in ${runDir}`);

const results = [];
const measurements = [];

for (const scenario of selected) {
  const result = await runScenario(scenario);
  results.push(result);
  const mark = result.ok ? 'ok  ' : 'FAIL';
  console.log(`${mark} ${scenario.name} (${fmt(result.ms / 1000)} s)${result.ok ? '' : `: ${result.error}`}`);
}

await site.close();
printSummary();
const failed = results.filter((r) => !r.ok).length;
if (!failed && !opts.keep) await rm(runDir, { recursive: true, force: true });
else console.log(`logs kept in ${runDir}`);
process.exit(failed ? 1 : 0);

async function runScenario(scenario) {
  const started = Date.now();
  const dir = path.join(runDir, scenario.name);
  await mkdir(dir, { recursive: true });
  const result = { name: scenario.name, ok: false, ms: 0, error: null, notes: [] };
  let choir;
  let browser;
  const onLog = opts.verbose ? (who, line) => console.log(`  [${scenario.name} ${who}] ${line}`) : undefined;
  try {
    console.log(`\n-- ${scenario.name}: ${scenario.description}`);
    choir = await startChoir({
      bin: choirBin,
      logFile: path.join(dir, 'choir.log'),
      logFilter: opts['choir-log'],
      consentTimeout: '5s',
      extraArgs: scenario.choirArgs ?? [],
    });
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
    if (results.length === 0) console.log(`   Chromium ${browser.version}, choir at ${choir.url}, RTC ports ${choir.rtcPorts.join('-')}`);
    const t = {
      choir,
      channel: `${scenario.name}-${process.pid}`,
      options: { fakeMicHz },
      user: (name) => browser.openUser(name),
      users: () => browser.users,
      measure: (name, text) => {
        measurements.push({ name, text });
        console.log(`   ${name}: ${text}`);
      },
      note: (text) => console.log(`   ${text}`),
    };
    await withTimeout(scenario.run(t), scenario.timeoutMs, `scenario ${scenario.name}`);
    if (opts.headed && Number(opts['slow-mo'])) await new Promise((r) => setTimeout(r, Number(opts['slow-mo'])));
    result.ok = true;
  } catch (e) {
    result.error = e.message.split('\n')[0];
    console.log(`   FAILED: ${e.message}`);
    if (e.details !== undefined) console.log(`   details: ${JSON.stringify(e.details, null, 1).slice(0, 4000)}`);
    if (!(e instanceof CheckFailed)) console.log(e.stack);
    await diagnose(dir, browser, choir);
  } finally {
    if (browser) {
      await browser.close();
      browser.logStream.end();
    }
    if (choir) {
      const exit = await choir.stop();
      if (exit.code !== 0 && result.ok) {
        result.ok = false;
        result.error = `choir did not exit cleanly on SIGTERM: ${JSON.stringify(exit)}`;
        console.log(`   FAILED: ${result.error}\n   choir log (tail):\n${choir.tail(40).map((l) => `     ${l}`).join('\n')}`);
      } else if (exit.code === 0) {
        console.log(`   choir stopped (SIGTERM -> exit 0 in ${exit.ms} ms)`);
      }
    }
  }
  result.ms = Date.now() - started;
  return result;
}

/** Prints and saves what the pages and choir saw: page logs, getStats, API calls, counters. */
async function diagnose(dir, browser, choir) {
  const dump = { choir: {}, users: {} };
  if (choir && !choir.exited()) {
    dump.choir.health = await choir.health().catch((e) => String(e));
    dump.choir.stats = await choir.stats().catch((e) => String(e));
  }
  for (const user of browser?.users ?? []) {
    const u = { logs: user.logs };
    if (!user.closed) {
      u.state = await user.state().catch((e) => String(e));
      u.stats = await user.stats().catch((e) => String(e));
      u.calls = await user.apiCalls().catch((e) => String(e));
    }
    dump.users[user.name] = u;
  }
  await writeFile(path.join(dir, 'diagnostics.json'), JSON.stringify(dump, null, 1));
  console.log(`   --- diagnostics (full: ${path.join(dir, 'diagnostics.json')}, choir log: ${choir?.logFile})`);
  console.log(`   choir health: ${JSON.stringify(dump.choir.health)}`);
  console.log(`   choir stats: ${JSON.stringify(dump.choir.stats?.total ?? dump.choir.stats)}`);
  for (const [name, u] of Object.entries(dump.users)) {
    console.log(`   [${name}] last page log lines:`);
    for (const line of u.logs.slice(-12)) console.log(`     ${line}`);
    if (u.stats && typeof u.stats === 'object') {
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
  if (choir) {
    console.log('   choir log (tail):');
    for (const line of choir.tail(40)) console.log(`     ${line}`);
  }
}

function printSummary() {
  console.log('\n== browser suite summary');
  const w = Math.max(...results.map((r) => r.name.length), 8);
  console.log(`${'scenario'.padEnd(w)}  result  time`);
  for (const r of results) {
    console.log(`${r.name.padEnd(w)}  ${r.ok ? 'pass  ' : 'FAIL  '}  ${fmt(r.ms / 1000).padStart(5)} s${r.ok ? '' : `  ${r.error}`}`);
  }
  console.log(`${'total'.padEnd(w)}  ${results.filter((r) => r.ok).length}/${results.length}    ${fmt((Date.now() - t0) / 1000).padStart(5)} s`);
  if (measurements.length) {
    console.log('\nmeasurements:');
    for (const m of measurements) console.log(`  ${m.name}: ${m.text}`);
  }
  const passed = results.filter((r) => r.ok).length;
  console.log(`\nbrowser: ${passed} passed, ${results.length - passed} failed`);
}
