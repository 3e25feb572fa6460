// The bench page: `window.quality`, driven by benches/quality/run.mjs (or a browser test) with
// page.evaluate. A page may be the speaker, the listener, or both (one page, one AudioContext:
// exact mouth-to-ear delay). The speaker plays the speech file into the call; the listener
// records what it receives and reads its getStats().
import { context, frameZeroWallMs, Recorder, RATE, speechTrack } from './audio.js';
import { choirListener, choirRedSpeaker, choirSpeaker, connected, p2pAccept, p2pAnswer, p2pOffer } from './calls.js';

const state = { speaker: null, listener: null };

const log = (tag, msg) => console.log(`${(performance.now() / 1000).toFixed(3)} ${tag}: ${msg}`);

/** The fields of interest of one stats report, by type (audio only). */
function pick(report) {
  const out = {};
  for (const s of report.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.inbound = {
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        packetsDiscarded: s.packetsDiscarded,
        fecPacketsReceived: s.fecPacketsReceived,
        fecPacketsDiscarded: s.fecPacketsDiscarded,
        nackCount: s.nackCount,
        retransmittedPacketsReceived: s.retransmittedPacketsReceived,
        totalSamplesReceived: s.totalSamplesReceived,
        concealedSamples: s.concealedSamples,
        silentConcealedSamples: s.silentConcealedSamples,
        concealmentEvents: s.concealmentEvents,
        insertedSamplesForDeceleration: s.insertedSamplesForDeceleration,
        removedSamplesForAcceleration: s.removedSamplesForAcceleration,
        jitterBufferDelay: s.jitterBufferDelay,
        jitterBufferTargetDelay: s.jitterBufferTargetDelay,
        jitterBufferEmittedCount: s.jitterBufferEmittedCount,
        jitter: s.jitter,
        bytesReceived: s.bytesReceived,
        codecId: s.codecId,
      };
    } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outbound = {
        packetsSent: s.packetsSent,
        bytesSent: s.bytesSent,
        retransmittedPacketsSent: s.retransmittedPacketsSent,
        nackCount: s.nackCount,
        targetBitrate: s.targetBitrate,
      };
    } else if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') {
      out.remoteInbound = {
        fractionLost: s.fractionLost,
        packetsLost: s.packetsLost,
        roundTripTime: s.roundTripTime,
        jitter: s.jitter,
      };
    } else if (s.type === 'codec') {
      (out.codecs ??= []).push({ id: s.id, mimeType: s.mimeType, sdpFmtpLine: s.sdpFmtpLine });
    } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      out.rttMs = s.currentRoundTripTime === undefined ? null : s.currentRoundTripTime * 1000;
    }
  }
  return out;
}

window.quality = {
  RATE,

  /** The context's frame-0 wall clock and current frame (for cross-page timing). */
  async clock() {
    const c = await context();
    return { frameZeroWallMs: frameZeroWallMs(), frame: Math.round(c.currentTime * RATE), userAgent: navigator.userAgent };
  },

  /** Speaker, choir: the speech file looped into the plan's flow (join, produce). */
  async choirSpeaker({ api, control, channelId, wavUrl, codecOptions }) {
    const speech = await speechTrack(wavUrl);
    const sfu = await choirSpeaker({ api, control, channelId, track: speech.track, codecOptions, log });
    state.speaker = { kind: 'choir', sfu, sender: sfu.audioProducer.rtpSender, speech };
    return { startFrame: speech.startFrame, fileFrames: speech.fileFrames, frameZeroWallMs: frameZeroWallMs() };
  },

  /** Speaker, choir's try-it client (RED where the browser has it): the speech file looped. */
  async choirRedSpeaker({ api, control, channelId, wavUrl }) {
    const speech = await speechTrack(wavUrl);
    const client = await choirRedSpeaker({ api, control, channelId, track: speech.track });
    const sfu = { cleanup: () => client.leave() };
    state.speaker = { kind: 'choir', sfu, sender: client.send.transceiver.sender, speech };
    return { startFrame: speech.startFrame, fileFrames: speech.fileFrames, frameZeroWallMs: frameZeroWallMs() };
  },

  /** Listener, choir: join, consume the speaker, record. */
  async choirListener({ api, control, channelId }) {
    const c = await context();
    const l = await choirListener({ api, control, channelId, log });
    state.listener = { kind: 'choir', ...l, recorder: new Recorder(c, l.track) };
    return { frameZeroWallMs: frameZeroWallMs() };
  },

  /** Speaker, P2P: the offer (through the relay) for the listener. */
  async p2pOffer({ control, wavUrl, preferIp, noTwcc, nack }) {
    const speech = await speechTrack(wavUrl);
    const o = await p2pOffer({ control, track: speech.track, preferIp, noTwcc, nack });
    state.speaker = { kind: 'p2p', pc: o.pc, sender: o.sender, speech, bridge: o.bridge };
    return { offer: o.offer, startFrame: speech.startFrame, fileFrames: speech.fileFrames, frameZeroWallMs: frameZeroWallMs() };
  },

  /** Listener, P2P: answer and record. */
  async p2pAnswer({ offer, nack }) {
    const c = await context();
    const a = await p2pAnswer(offer, { nack });
    state.listener = { kind: 'p2p', ...a, recorder: new Recorder(c, a.track) };
    return { answer: a.answer, frameZeroWallMs: frameZeroWallMs() };
  },

  /** Speaker, P2P: apply the answer, wait until connected. */
  async p2pAccept({ answer }) {
    await p2pAccept(state.speaker.pc, answer, state.speaker.bridge);
    await connected(state.speaker.pc);
  },

  /** getStats of the listener's receiver and the speaker's sender (whichever this page has). */
  async stats() {
    const out = { at: performance.now() };
    if (state.listener) out.listener = pick(await state.listener.receiver.getStats());
    if (state.speaker) out.speaker = pick(await state.speaker.sender.getStats());
    return out;
  },

  /** The listener's recorded frames (context frames [from, from + n)) as base64 16-bit PCM. */
  recording({ from, n }) {
    const r = state.listener.recorder;
    return { pcm: r.pcm16(from, n), firstFrame: r.firstFrame, lastFrame: r.lastFrame };
  },

  /** The current context frame. */
  async frame() {
    const c = await context();
    return Math.round(c.currentTime * RATE);
  },

  /** Leaves (choir) or closes (P2P) whatever this page runs. */
  async hangUp() {
    state.listener?.recorder?.stop();
    for (const side of [state.listener, state.speaker]) {
      if (!side) continue;
      if (side.kind === 'choir') await side.sfu.cleanup().catch((e) => log('error', `leave: ${e.message}`));
      else side.pc.close();
    }
    state.speaker?.speech.source.stop();
    state.listener = null;
    state.speaker = null;
  },
};
