// A short Chromium call through the impairing relay with assertions on the listener's getStats:
// the skeleton of issue 21's browser test (NACK and FEC act, concealment stays low), built from
// the bench's modules. On loopback (no namespace, no Firefox), a few seconds of warm-up.
//   node benches/quality/smoke.mjs --choir target/release/choir --loss 0.1 --expect-fec --expect-nack --max-concealed 3
//   node benches/quality/smoke.mjs --p2p --loss 0.1 --expect-fec
// Exits 0 when every expectation holds, 1 otherwise; prints the window's stats either way.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { launchBrowser } from '../../tests/browser/lib/browser.mjs';
import { startChoir } from '../../tests/browser/lib/choir.mjs';
import { freePortRange } from '../../tests/browser/lib/ports.mjs';
import { withTimeout } from '../../tests/browser/lib/util.mjs';
import { runCall, windowStats } from './call.mjs';
import { LEG_DELAY_MS } from './cases.mjs';
import { startRelay } from './relay.mjs';
import { buildPage, startServer } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const { values: o } = parseArgs({
  options: {
    choir: { type: 'string' },
    p2p: { type: 'boolean', default: false },
    // With --p2p: audio NACK negotiated on both sides.
    nack: { type: 'boolean', default: false },
    loss: { type: 'string', default: '0.1' },
    seed: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '8' },
    measure: { type: 'string', default: '10' },
    'codec-options': { type: 'string' },
    'expect-fec': { type: 'boolean', default: false },
    'expect-nack': { type: 'boolean', default: false },
    'max-concealed': { type: 'string' },
    speech: { type: 'string', default: path.join(root, 'target', 'quality', 'speech.wav') },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
  },
});
if (!o.p2p && !o.choir) {
  console.error('--choir PATH or --p2p');
  process.exit(2);
}

const loss = Number(o.loss);
const leg = { loss, delayMs: LEG_DELAY_MS };
const c = {
  name: o.p2p ? 'p2p' : 'choir',
  system: o.p2p ? 'p2p' : 'choir',
  p2pNack: o.nack,
  up: leg,
  down: leg,
  codecOptions: o['codec-options'] ? JSON.parse(o['codec-options']) : undefined,
};
const ip = '127.0.0.1';
const [lo, hi] = await freePortRange(50, ip);
let next = lo;
const relay = startRelay({ seed: Number(o.seed), ip, ports: () => (next > hi ? (next = lo) : next++) });
const dist = await buildPage(path.join(root, 'target', 'quality', 'dist'));
const server = await startServer({ dist, wav: o.speech, relay, ip });
const choir = o.p2p ? null : await startChoir({ bin: path.resolve(o.choir), logFile: path.join(root, 'target', 'quality', 'smoke-choir.log'), logFilter: 'choir=info', consentTimeout: '30s' });
const browser = await launchBrowser({ executablePath: o.chromium, pageUrl: 'about:blank' });
let failed = [];
try {
  const page = await browser.openPage(`${server.url}/`, { viewport: { width: 400, height: 300 } });
  await withTimeout(page.waitForFunction(() => window.quality), 15000, 'window.quality');
  const r = await runCall({ c, speakerPage: page, listenerPage: page, server, choir, relayIp: ip, warmupS: Number(o.warmup), measureS: Number(o.measure) });
  const w = windowStats(r.stats);
  console.log(`${c.name}, ${loss * 100} % loss on each leg: ${JSON.stringify(w)}`);
  if (o['expect-fec'] && !(w.fecPackets > 0)) failed.push(`fecPacketsReceived ${w.fecPackets}, expected > 0`);
  if (o['expect-nack'] && !(w.nackCount > 0)) failed.push(`nackCount ${w.nackCount}, expected > 0`);
  const max = o['max-concealed'] === undefined ? null : Number(o['max-concealed']);
  if (max !== null && !(w.concealedPct <= max)) failed.push(`concealed ${w.concealedPct?.toFixed(1)} %, expected ≤ ${max} %`);
} catch (e) {
  failed = [e.message];
} finally {
  await browser.close();
  await choir?.stop();
  await server.close();
  await relay.close();
}
console.log(failed.length ? `smoke: FAILED: ${failed.join('; ')}` : 'smoke: ok');
process.exit(failed.length ? 1 : 0);
