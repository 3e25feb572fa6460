// The test page: the plan's client (rtcService + sfuService) plus hooks for the driver, exposed as
// `window.choir`. The driver calls them with Playwright's page.evaluate.

import { calls, createApiClient } from './api.js';
import { currentAudioContext, HEARD_RMS, toneGain } from './audio.js';
import { codecLinesOf, extmapsOf, levelHeld, median, recordPeerConnections, round, sleep } from './measure.js';
import { RTCService } from './rtcService.js';
import { SFUService } from './sfuService.js';

/**
 * Every RTCPeerConnection mediasoup-client makes: negotiated() reads the browser's own answer on
 * the recv transport (Firefox leaves RTCRtpReceiver.getParameters().headerExtensions empty).
 */
const peerConnections = recordPeerConnections();

const logs = [];
function log(tag, message) {
  const line = `${(performance.now() / 1000).toFixed(3)} ${tag}: ${message}`;
  logs.push(line);
  console.log(line);
}
window.addEventListener('error', (e) => log('error', `uncaught: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => log('error', `unhandled rejection: ${e.reason}`));

let sfu;
let rtc;
/** performance.now() just before this page's first API call of the current join. */
let t0 = null;

/** Samples every remote track's level: first time heard, and the longest silence since. */
function sample() {
  if (!rtc) return;
  const now = performance.now();
  for (const remote of rtc.remotes.values()) {
    const level = remote.analyser.rms();
    remote.level = level;
    if (level < HEARD_RMS) continue;
    if (remote.firstHeardAt === null) remote.firstHeardAt = now;
    else remote.maxGapMs = Math.max(remote.maxGapMs, now - remote.lastHeardAt);
    remote.lastHeardAt = now;
  }
}
setInterval(sample, 10);


function remoteState(remote, now) {
  return {
    userId: remote.userId,
    producerId: remote.producerId,
    consumerId: remote.consumerId,
    ssrc: remote.ssrc,
    mid: remote.mid,
    headerExtensions: remote.headerExtensions,
    source: remote.source,
    level: round(remote.level ?? 0, 4),
    firstHeardMs: remote.firstHeardAt === null ? null : round(remote.firstHeardAt - t0),
    heardAfterAddMs: remote.firstHeardAt === null ? null : round(remote.firstHeardAt - remote.addedAt),
    maxGapMs: round(remote.maxGapMs),
    silentForMs: remote.lastHeardAt === null ? null : round(now - remote.lastHeardAt),
    closedBy: remote.closedBy,
  };
}

/**
 * RED (RFC 2198) as a router capability, after Opus, at the payload type choir sends it with
 * (`ortc.rs`, RED_PAYLOAD_TYPE): what a test adds to the router's capabilities (`join({ red })`)
 * to find out whether mediasoup-client receives RED; the router itself does not advertise it.
 */
export const RED_CAPABILITY = { kind: 'audio', mimeType: 'audio/red', clockRate: 48000, channels: 2, preferredPayloadType: 101, parameters: {}, rtcpFeedback: [] };

/** `apiClient`, but the router's rtpCapabilities it returns list RED_CAPABILITY after Opus. */
function withRedCapability(apiClient) {
  return {
    ...apiClient,
    async get(path) {
      const reply = await apiClient.get(path);
      if (path.startsWith('/voice/rtp-capabilities/')) {
        const codecs = reply.data.rtpCapabilities.codecs;
        const opus = codecs.findIndex((c) => c.mimeType.toLowerCase() === 'audio/opus');
        codecs.splice(opus + 1, 0, RED_CAPABILITY);
        log('page', `router capabilities given to device.load: ${codecs.map((c) => `${c.mimeType}/${c.preferredPayloadType}`).join(', ')}`);
      }
      return reply;
    },
  };
}

/** RTCStatsReport -> the fields the suite asserts on and prints, by stats type. */
function summarize(report) {
  const out = { inbound: [], outbound: [], transport: [], pairs: [], candidates: {} };
  for (const s of report.values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      out.inbound.push({
        codec: report.get(s.codecId)?.mimeType ?? null,
        payloadType: report.get(s.codecId)?.payloadType ?? null,
        fecPacketsReceived: s.fecPacketsReceived,
        nackCount: s.nackCount,
        ssrc: s.ssrc,
        mid: s.mid,
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost,
        jitter: s.jitter,
        audioLevel: s.audioLevel,
        totalAudioEnergy: s.totalAudioEnergy,
        totalSamplesReceived: s.totalSamplesReceived,
        concealedSamples: s.concealedSamples,
        bytesReceived: s.bytesReceived,
        jitterBufferDelay: s.jitterBufferDelay,
        jitterBufferEmittedCount: s.jitterBufferEmittedCount,
        timestamp: s.timestamp,
      });
    } else if (s.type === 'outbound-rtp' && s.kind === 'audio') {
      out.outbound.push({ ssrc: s.ssrc, packetsSent: s.packetsSent, bytesSent: s.bytesSent });
    } else if (s.type === 'transport') {
      out.transport.push({
        iceState: s.iceState,
        dtlsState: s.dtlsState,
        dtlsRole: s.dtlsRole,
        srtpCipher: s.srtpCipher,
        selectedCandidatePairId: s.selectedCandidatePairId,
        packetsSent: s.packetsSent,
        packetsReceived: s.packetsReceived,
      });
    } else if (s.type === 'candidate-pair') {
      out.pairs.push({
        id: s.id,
        state: s.state,
        nominated: s.nominated,
        local: s.localCandidateId,
        remote: s.remoteCandidateId,
        requestsSent: s.requestsSent,
        responsesReceived: s.responsesReceived,
        requestsReceived: s.requestsReceived,
        bytesSent: s.bytesSent,
        bytesReceived: s.bytesReceived,
        currentRoundTripTime: s.currentRoundTripTime,
      });
    } else if (s.type === 'local-candidate' || s.type === 'remote-candidate') {
      out.candidates[s.id] = `${s.type} ${s.protocol} ${s.address}:${s.port} ${s.candidateType}`;
    }
  }
  return out;
}

window.choir = {
  HEARD_RMS,

  async join({ api, channelId, userId, tone, mic, gain, dtx, red }) {
    if (rtc?.joinedAt && !rtc.left) throw new Error('already joined');
    const apiClient = red ? withRedCapability(createApiClient(api)) : createApiClient(api);
    sfu = new SFUService(apiClient, log);
    rtc = new RTCService(sfu, log);
    t0 = performance.now();
    await rtc.joinVoiceChannel(channelId, userId, { tone, mic, gain, dtx });
    return { joinMs: round(performance.now() - t0), producerId: sfu.audioProducer.id };
  },

  async leave() {
    await rtc.leaveVoiceChannel();
    rtc.left = true;
  },

  state() {
    const now = performance.now();
    return {
      recvHeaderExtensions: sfu?.device?.loaded
        ? sfu.device.recvRtpCapabilities.headerExtensions.filter((e) => e.kind === 'audio').map((e) => `${e.preferredId} ${e.uri}`)
        : null,
      userId: sfu?.userId,
      producerId: sfu?.audioProducer?.id,
      producerPaused: sfu?.audioProducer?.paused,
      sendState: sfu?.sendTransport?.connectionState,
      recvState: sfu?.recvTransport?.connectionState,
      visibility: document.visibilityState,
      remotes: rtc ? [...rtc.remotes.values()].map((r) => remoteState(r, now)) : [],
      closed: rtc ? rtc.history.filter((r) => r.closedAt !== null).map((r) => remoteState(r, now)) : [],
      events: rtc?.events.map((e) => ({ ...e, at: round(e.at - t0) })) ?? [],
      errors: rtc?.errors ?? [],
    };
  },

  /** Restarts the gap measurement (the longest silence per remote track). */
  resetGaps() {
    const now = performance.now();
    for (const remote of rtc.remotes.values()) {
      remote.maxGapMs = 0;
      if (remote.lastHeardAt !== null) remote.lastHeardAt = Math.max(remote.lastHeardAt, now - 10);
    }
  },

  /**
   * Listens for `ms` and reports per remote track: the fraction of samples heard, the median FFT
   * peak (Hz) and its level, and the level range.
   */
  async listen(ms = 1000, everyMs = 50) {
    const seen = new Map();
    const end = performance.now() + ms;
    while (performance.now() < end) {
      for (const remote of rtc.remotes.values()) {
        let s = seen.get(remote.producerId);
        if (!s) seen.set(remote.producerId, (s = { remote, levels: [], peaks: [], dbs: [] }));
        const level = remote.analyser.rms();
        s.levels.push(level);
        if (level >= HEARD_RMS) {
          const p = remote.analyser.peak();
          s.peaks.push(p.hz);
          s.dbs.push(p.db);
        }
      }
      await sleep(everyMs);
    }
    return [...seen.values()].map(({ remote, levels, peaks, dbs }) => ({
      userId: remote.userId,
      producerId: remote.producerId,
      heardFraction: round(peaks.length / levels.length, 3),
      peakHz: round(median(peaks)),
      peakDb: round(median(dbs)),
      minLevel: round(Math.min(...levels), 4),
      maxLevel: round(Math.max(...levels), 4),
    }));
  },

  /**
   * Waits until the track from `userId` is heard (`heard` true) or silent (false) for `holdMs` in a
   * row; resolves to the ms from this call to the moment the state began.
   */
  async waitLevel(userId, heard, { timeoutMs = 5000, holdMs = 100 } = {}) {
    const analyserOf = () => [...rtc.remotes.values()].find((r) => r.userId === userId)?.analyser;
    const ms = await levelHeld(analyserOf, heard, { timeoutMs, holdMs });
    if (ms !== null) return ms;
    throw new Error(`${sfu.userId}: the track from ${userId} was not ${heard ? 'heard' : 'silent'} for ${holdMs} ms within ${timeoutMs} ms`);
  },

  /** getStats of every consumer, the producer and both transports. */
  async stats() {
    const consumers = [];
    for (const [producerId, { consumer, userId }] of sfu?.consumers ?? []) {
      consumers.push({ userId, producerId, ...summarize(await consumer.getStats()) });
    }
    return {
      consumers,
      producer: sfu?.audioProducer ? summarize(await sfu.audioProducer.getStats()) : null,
      send: sfu?.sendTransport && !sfu.sendTransport.closed ? summarize(await sfu.sendTransport.getStats()) : null,
      recv: sfu?.recvTransport && !sfu.recvTransport.closed ? summarize(await sfu.recvTransport.getStats()) : null,
    };
  },

  /**
   * The header extensions in play ({uri, id}): this device's receive capabilities, what its
   * producer sends, and per consumer what choir's `consume` reply gave and what the browser
   * accepted from it (its SDP answer on the recv transport).
   */
  negotiated() {
    const ext = (list) => (list ?? []).map(({ uri, id }) => ({ uri, id }));
    const answer = peerConnections.find((pc) => pc.signalingState !== 'closed' && pc.localDescription?.type === 'answer');
    return {
      recvCaps: sfu.device.recvRtpCapabilities.headerExtensions
        .filter((e) => e.kind === 'audio')
        .map((e) => ({ uri: e.uri, id: e.preferredId })),
      producer: ext(sfu.audioProducer?.rtpParameters.headerExtensions),
      consumers: [...sfu.consumers].map(([producerId, { consumer, userId }]) => ({
        userId,
        producerId,
        choir: ext(consumer.rtpParameters.headerExtensions),
        receiver: extmapsOf(answer?.localDescription.sdp, consumer.rtpParameters.mid),
      })),
    };
  },

  /**
   * The codecs in play on the receive side: the device's receive capabilities (what `consume`
   * sends choir), and per consumer the codecs of choir's reply and the codec lines of the offer
   * mediasoup-client wrote from it and of the browser's answer.
   */
  codecs() {
    const pc = peerConnections.find((p) => p.signalingState !== 'closed' && p.localDescription?.type === 'answer');
    return {
      device: sfu.device.rtpCapabilities.codecs.filter((c) => c.kind === 'audio').map((c) => `${c.mimeType}/${c.preferredPayloadType}`),
      consumers: [...sfu.consumers].map(([producerId, { consumer, userId }]) => ({
        userId,
        producerId,
        choir: consumer.rtpParameters.codecs.map(({ mimeType, payloadType, parameters }) => ({ mimeType, payloadType, parameters })),
        offer: codecLinesOf(pc?.remoteDescription?.sdp, consumer.rtpParameters.mid),
        answer: codecLinesOf(pc?.localDescription?.sdp, consumer.rtpParameters.mid),
      })),
    };
  },

  /**
   * What Chromium answers to the receive offer mediasoup-client wrote, with the fmtp line of
   * payload type `pt` in it replaced by `a=fmtp:<pt> <fmtp>` (in a fresh RTCPeerConnection, the
   * call untouched): the codec lines of that answer.
   */
  async answerWithFmtp(pt, fmtp) {
    const pc = peerConnections.find((p) => p.signalingState !== 'closed' && p.localDescription?.type === 'answer');
    const sdp = pc.remoteDescription.sdp.replace(new RegExp(`^a=fmtp:${pt} .*$`, 'gm'), `a=fmtp:${pt} ${fmtp}`);
    const probe = new RTCPeerConnection();
    try {
      await probe.setRemoteDescription({ type: 'offer', sdp });
      const answer = await probe.createAnswer();
      return answer.sdp.split('\r\n').filter((l) => /^(m=audio|a=rtpmap:|a=fmtp:)/.test(l));
    } finally {
      probe.close();
    }
  },

  /**
   * Sets the published tone's gain 20 ms ahead on the audio clock and resolves to the wall-clock
   * time (Date.now(), ms) at which the context rendered that instant: the ground truth of the
   * speaking scenarios, right even when a loaded machine stalls the audio thread.
   */
  async gate(gain) {
    const amp = toneGain();
    const ctx = currentAudioContext();
    const at = ctx.currentTime + 0.02;
    amp.gain.cancelScheduledValues(0);
    amp.gain.setValueAtTime(gain, at);
    while (ctx.currentTime < at) await sleep(1);
    return Date.now();
  },

  calls: () => calls.map((c) => ({ ...c, started: round(c.started - (t0 ?? 0)), ms: round(c.ms) })),
  logs: () => logs,
};

log('page', `ready (${navigator.userAgent})`);
