// The ears of the driver in choir's own try-it page (web/): evaluated into that page, it finds
// the page's remote <audio> elements (`#audio-out audio[data-user]`), puts an analyser on each
// one's track, and answers the same questions as the test page's window.choir (state, listen,
// waitLevel), so lib/checks.mjs works on both. It reads the page; it changes nothing in it.
import { HEARD_RMS, TrackAnalyser } from './audio.js';
import { extmapsOf, levelHeld, median, recordPeerConnections, round, sleep } from './measure.js';

const ctx = new AudioContext({ latencyHint: 'interactive' });

/** The page's RTCPeerConnections (it makes them at join, after this runs): for negotiated(). */
const peerConnections = recordPeerConnections();

/** track id -> { userId, analyser, firstHeardAt, lastHeardAt, maxGapMs, level } */
const remotes = new Map();
const t0 = performance.now();

/** Follows the page's audio elements: an analyser per new track, none for removed ones. */
function scan() {
  const seen = new Set();
  for (const audio of document.querySelectorAll('#audio-out audio[data-user]')) {
    const track = audio.srcObject?.getAudioTracks?.()[0];
    if (!track) continue;
    seen.add(track.id);
    if (!remotes.has(track.id)) {
      remotes.set(track.id, {
        userId: audio.dataset.user,
        analyser: new TrackAnalyser(ctx, track),
        addedAt: performance.now(),
        firstHeardAt: null,
        lastHeardAt: null,
        maxGapMs: 0,
        level: 0,
      });
    }
  }
  for (const [id, r] of remotes) {
    if (!seen.has(id)) {
      r.analyser.disconnect();
      remotes.delete(id);
    }
  }
}

function sample() {
  scan();
  const now = performance.now();
  for (const r of remotes.values()) {
    r.level = r.analyser.rms();
    if (r.level < HEARD_RMS) continue;
    if (r.firstHeardAt === null) r.firstHeardAt = now;
    else r.maxGapMs = Math.max(r.maxGapMs, now - r.lastHeardAt);
    r.lastHeardAt = now;
  }
}
setInterval(sample, 10);

window.__choirProbe = {
  async ready() {
    if (ctx.state !== 'running') await ctx.resume();
    return ctx.state;
  },

  state() {
    const now = performance.now();
    return {
      audioContext: ctx.state,
      remotes: [...remotes.values()].map((r) => ({
        userId: r.userId,
        level: round(r.level, 4),
        firstHeardMs: r.firstHeardAt === null ? null : round(r.firstHeardAt - t0),
        heardAfterAddMs: r.firstHeardAt === null ? null : round(r.firstHeardAt - r.addedAt),
        maxGapMs: round(r.maxGapMs),
        silentForMs: r.lastHeardAt === null ? null : round(now - r.lastHeardAt),
      })),
      errors: [],
    };
  },

  /**
   * The header extensions of the page's client: what its producer sends (choir's answer on the
   * send connection, written from the browser's offer) and, per remote user, what choir's
   * consumer offered (written from `consume`'s reply) and what the browser accepted.
   */
  negotiated() {
    const live = peerConnections.filter((pc) => pc.signalingState !== 'closed');
    const send = live.find((pc) => pc.localDescription?.type === 'offer');
    const recv = live.find((pc) => pc.remoteDescription?.type === 'offer');
    const sendMid = send?.getTransceivers()[0]?.mid;
    const consumers = [];
    for (const audio of document.querySelectorAll('#audio-out audio[data-user]')) {
      const track = audio.srcObject?.getAudioTracks?.()[0];
      const mid = recv?.getTransceivers().find((t) => t.receiver.track === track)?.mid;
      consumers.push({
        userId: audio.dataset.user,
        mid,
        offered: extmapsOf(recv?.remoteDescription?.sdp, mid),
        accepted: extmapsOf(recv?.localDescription?.sdp, mid),
      });
    }
    return { producer: extmapsOf(send?.remoteDescription?.sdp, sendMid), consumers };
  },

  /**
   * The receive connection's inbound-rtp audio streams from its own getStats(): codec, packets,
   * bytes, concealment, FEC, audio level and energy; and the codec lines of choir's offer and
   * the browser's answer.
   */
  async inbound() {
    const recv = peerConnections.find((pc) => pc.signalingState !== 'closed' && pc.remoteDescription?.type === 'offer');
    if (!recv) return null;
    const report = await recv.getStats();
    const streams = [];
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp' || s.kind !== 'audio') continue;
      const codec = report.get(s.codecId);
      streams.push({
        mid: s.mid,
        codec: codec?.mimeType ?? null,
        payloadType: codec?.payloadType ?? null,
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        totalSamplesReceived: s.totalSamplesReceived,
        concealedSamples: s.concealedSamples,
        fecPacketsReceived: s.fecPacketsReceived,
        nackCount: s.nackCount,
        bytesReceived: s.bytesReceived,
        audioLevel: s.audioLevel,
        totalAudioEnergy: s.totalAudioEnergy,
        timestamp: s.timestamp,
      });
    }
    const lines = (sdp) => (sdp ?? '').split('\r\n').filter((l) => /^(m=audio|a=rtpmap:|a=fmtp:)/.test(l));
    return { streams, offer: lines(recv.remoteDescription.sdp), answer: lines(recv.localDescription?.sdp) };
  },

  async listen(ms = 1000, everyMs = 50) {
    const seen = new Map();
    const end = performance.now() + ms;
    while (performance.now() < end) {
      scan();
      for (const [id, r] of remotes) {
        let s = seen.get(id);
        if (!s) seen.set(id, (s = { r, levels: [], peaks: [] }));
        const level = r.analyser.rms();
        s.levels.push(level);
        if (level >= HEARD_RMS) s.peaks.push(r.analyser.peak().hz);
      }
      await sleep(everyMs);
    }
    return [...seen.values()].map(({ r, levels, peaks }) => ({
      userId: r.userId,
      heardFraction: round(peaks.length / levels.length, 3),
      peakHz: round(median(peaks)),
      minLevel: round(Math.min(...levels), 4),
      maxLevel: round(Math.max(...levels), 4),
    }));
  },

  async waitLevel(userId, heard, { timeoutMs = 5000, holdMs = 100 } = {}) {
    const analyserOf = () => {
      scan();
      return [...remotes.values()].find((x) => x.userId === userId)?.analyser;
    };
    const ms = await levelHeld(analyserOf, heard, { timeoutMs, holdMs });
    if (ms !== null) return ms;
    throw new Error(`the track from ${userId} was not ${heard ? 'heard' : 'silent'} for ${holdMs} ms within ${timeoutMs} ms`);
  },
};
