// One measured call through the relay: the speaker plays the speech file, the listener records;
// after `warmupS` the listener's getStats() is read, then `measureS` (+ a tail for the delay)
// later again, and the recording of that window is fetched. Used by run.mjs for every case of
// the benchmark, and meant for a browser test too (a short call, then assertions on `stats`).
import { sleep, withTimeout } from '../../tests/browser/lib/util.mjs';
import { impairment } from './relay.mjs';

export const RATE = 48000;

/** The relay chains of a case: choir's two legs, or both in series for P2P. */
export function legsOf(c) {
  const up = impairment(c.up);
  const down = impairment(c.down);
  return c.system === 'p2p' ? { p2p: [up, down] } : { up: [up], down: [down] };
}

const evaluate = (page, what, fn, arg, ms = 30000) => withTimeout(page.evaluate(fn, arg), ms, what);

/** Waits until `page`'s audio clock reaches `frame`. */
async function untilFrame(page, frame) {
  for (;;) {
    const now = await evaluate(page, 'frame()', () => window.quality.frame());
    const left = (frame - now) / RATE;
    if (left <= 0) return now;
    await sleep(Math.min(1000, Math.max(5, left * 1000 - 20)));
  }
}

/** Stats of both sides (one page may hold both). */
async function stats(speakerPage, listenerPage, relay) {
  const l = await evaluate(listenerPage, 'stats()', () => window.quality.stats());
  const s = speakerPage === listenerPage ? l : await evaluate(speakerPage, 'stats()', () => window.quality.stats());
  return { listener: l.listener, speaker: s.speaker, relay: relay?.taps() };
}

/**
 * Runs one call. `speakerPage` / `listenerPage`: bench pages (may be the same page); `server`
 * (server.mjs) with its legs set from `c`; `choir` (tests/browser/lib/choir.mjs) for a choir
 * case. Resolves to { pcm (Buffer, 16-bit mono 48 kHz), rotateFrames, stats: { start, end },
 * timing }.
 */
export async function runCall({ c, speakerPage, listenerPage, server, choir, relayIp, warmupS, measureS, tailS = 1, channelId = 'quality' }) {
  server.legs = legsOf(c);
  const wavUrl = `${server.url}/speech.wav`;
  const control = server.url;
  let spk;
  let lis;
  const t0 = Date.now();
  if (c.system === 'p2p') {
    spk = await evaluate(speakerPage, 'p2pOffer', (o) => window.quality.p2pOffer(o), { control, wavUrl, preferIp: relayIp, noTwcc: c.p2pNoTwcc, nack: c.p2pNack });
    lis = await evaluate(listenerPage, 'p2pAnswer', (o) => window.quality.p2pAnswer(o), { offer: spk.offer, nack: c.p2pNack });
    await evaluate(speakerPage, 'p2pAccept', (o) => window.quality.p2pAccept(o), { answer: lis.answer });
  } else {
    const o = { api: choir.api, control, channelId, wavUrl, codecOptions: c.codecOptions };
    spk = c.redSpeaker
      ? await evaluate(speakerPage, 'choirRedSpeaker', (x) => window.quality.choirRedSpeaker(x), o)
      : await evaluate(speakerPage, 'choirSpeaker', (x) => window.quality.choirSpeaker(x), o);
    lis = await evaluate(listenerPage, 'choirListener', (x) => window.quality.choirListener(x), o);
  }
  const setupMs = Date.now() - t0;
  // The speaker's frame f is the listener's frame f + offset (0 in one page).
  const offset = speakerPage === listenerPage ? 0 : Math.round(((spk.frameZeroWallMs - lis.frameZeroWallMs) * RATE) / 1000);
  const warmFrames = Math.round(warmupS * RATE);
  const from = spk.startFrame + warmFrames + offset;
  const n = Math.round((measureS + tailS) * RATE);
  await untilFrame(listenerPage, from);
  const start = await stats(speakerPage, listenerPage, server.relay);
  await untilFrame(listenerPage, from + Math.round(measureS * RATE));
  const end = await stats(speakerPage, listenerPage, server.relay);
  await untilFrame(listenerPage, from + n);
  const rec = await evaluate(listenerPage, 'recording', (x) => window.quality.recording(x), { from, n }, 60000);
  const choirStats = choir ? await choir.stats().catch((e) => ({ error: e.message })) : null;
  for (const page of new Set([speakerPage, listenerPage])) {
    await evaluate(page, 'hangUp', () => window.quality.hangUp(), null, 15000).catch(() => {});
  }
  return {
    pcm: Buffer.from(rec.pcm, 'base64'),
    recordedFrom: rec.firstFrame,
    rotateFrames: warmFrames % spk.fileFrames,
    measureFrames: Math.round(measureS * RATE),
    fileFrames: spk.fileFrames,
    sameClock: speakerPage === listenerPage,
    setupMs,
    stats: { start, end },
    choirStats,
  };
}

/**
 * The listener's getStats() over the measured window: { concealedPct, lostPct, fecPackets,
 * nackCount, jitterBufferMs, packetsReceived } (what a browser test asserts on).
 */
export function windowStats({ start, end }) {
  const a = start.listener?.inbound ?? {};
  const b = end.listener?.inbound ?? {};
  const d = (k) => (a[k] === undefined || b[k] === undefined ? null : b[k] - a[k]);
  const samples = d('totalSamplesReceived');
  const lost = d('packetsLost');
  const received = d('packetsReceived');
  const emitted = d('jitterBufferEmittedCount');
  return {
    concealedPct: samples ? (100 * d('concealedSamples')) / samples : null,
    lostPct: received ? (100 * lost) / (lost + received) : null,
    fecPackets: d('fecPacketsReceived'),
    nackCount: d('nackCount'),
    jitterBufferMs: emitted ? (1000 * d('jitterBufferDelay')) / emitted : null,
    packetsReceived: received,
  };
}
