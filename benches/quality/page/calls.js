// The two calls the bench compares, every datagram through the driver's impairing relay:
// - choir: the plan's mediasoup-client flow (tests/browser/src/sfuService.js, imported as is),
//   with an apiClient that swaps each transport's UDP candidate for a relay bridge to it
//   (the send transport's bridge is the uplink leg, the receive transport's the downlink leg);
// - P2P: two RTCPeerConnections as the plan's app made before the SFU, each side's candidates
//   replaced by one relay bridge to the speaker's host candidate (both legs in series).
import { createApiClient } from '../../../tests/browser/src/api.js';
import { SFUService } from '../../../tests/browser/src/sfuService.js';
import { ChoirClient } from '../../../web/choir-client.js';

/** Asks the driver for a relay bridge to `target` ({ ip, port }) for `leg`; resolves to { ip, port }. */
export async function bridge(control, target, leg, exclude = []) {
  const res = await fetch(`${control}/bridge`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ target, leg, exclude }),
  });
  if (!res.ok) throw new Error(`bridge ${JSON.stringify(target)} (${leg}): ${res.status} ${await res.text()}`);
  return res.json();
}

/** A create-transport reply whose ICE candidates are one: a relay bridge (for `leg`) to choir's UDP one. */
async function throughRelay(options, control, leg) {
  const udp = options.iceCandidates.find((c) => c.protocol === 'udp' && !(c.ip ?? c.address).includes(':'));
  if (!udp) throw new Error(`create-transport: no UDP IPv4 candidate in ${JSON.stringify(options.iceCandidates)}`);
  const b = await bridge(control, { ip: udp.ip ?? udp.address, port: udp.port }, leg);
  return { ...options, iceCandidates: [{ ...udp, ip: b.ip, address: b.ip, port: b.port }] };
}

/**
 * choir's apiClient, but each created transport's ICE candidates are one UDP candidate: a relay
 * bridge to choir's UDP candidate, for leg `legs[direction]`.
 */
export function relayedApi(api, control, legs) {
  const inner = createApiClient(api);
  return {
    ...inner,
    async post(path, body) {
      const reply = await inner.post(path, body);
      if (path === '/voice/create-transport') reply.data = await throughRelay(reply.data, control, legs[body.direction]);
      return reply;
    },
  };
}

const quiet = () => {};

/** The speaker's side of a choir call: join, produce `track`. Resolves to the SFUService. */
export async function choirSpeaker({ api, control, channelId, userId = 'speaker', track, codecOptions, log = quiet }) {
  const sfu = new SFUService(relayedApi(api, control, { send: 'up', recv: 'up' }), log);
  await sfu.init(channelId, userId);
  await sfu.produceAudio(track, codecOptions);
  return sfu;
}

/**
 * The speaker's side on choir's own try-it client (web/choir-client.js) instead: where the
 * browser offers RED (Chromium), its send answer puts RED first, so the speaker sends RED. Its
 * create-transport replies go through the uplink bridge. Resolves to the client.
 */
export async function choirRedSpeaker({ api, control, channelId, userId = 'speaker', track }) {
  const client = new ChoirClient({ api: `${api}/voice` });
  const post = client.api.post.bind(client.api);
  client.api.post = async (path, body) => {
    const reply = await post(path, body);
    return path === '/create-transport' ? throughRelay(reply, control, 'up') : reply;
  };
  await client.join(channelId, userId, track);
  return client;
}

/** The listener's side: join, consume every producer listed. Resolves to { sfu, consumer }. */
export async function choirListener({ api, control, channelId, userId = 'listener', log = quiet }) {
  const sfu = new SFUService(relayedApi(api, control, { send: 'down', recv: 'down' }), log);
  await sfu.init(channelId, userId);
  const tracks = await sfu.consumeExisting();
  if (tracks.length !== 1) throw new Error(`listener: ${tracks.length} producers to consume, expected 1`);
  const { consumer } = sfu.consumers.get(tracks[0].producerId);
  return { sfu, consumer, track: consumer.track, receiver: consumer.rtpReceiver };
}

// ---- P2P ----

/** Waits until `pc` has gathered all its candidates. */
function gathered(pc, ms = 10000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('ICE gathering did not complete')), ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** `sdp` with every candidate line replaced by one UDP host candidate at `addr`. */
export function withOnlyCandidate(sdp, addr) {
  const lines = sdp.split('\r\n').filter((l) => l && !l.startsWith('a=candidate:') && l !== 'a=end-of-candidates');
  const out = [];
  for (const l of lines) {
    out.push(l);
    if (l.startsWith('a=mid:')) {
      out.push(`a=candidate:1 1 udp 2122260223 ${addr.ip} ${addr.port} typ host`, 'a=end-of-candidates');
    }
  }
  return `${out.join('\r\n')}\r\n`;
}

/** `sdp` without transport-wide congestion control (its feedback and header extension). */
export function withoutTwcc(sdp) {
  return sdp
    .split('\r\n')
    .filter((l) => !/^a=rtcp-fb:\d+ transport-cc/.test(l) && !/^a=extmap:\d+ \S*transport-wide-cc/.test(l))
    .join('\r\n');
}

/**
 * `sdp` with `a=rtcp-fb:<opus> nack` (libwebrtc NACKs audio only when both descriptions carry
 * it; mediasoup-client's Chromium handler adds it the same way).
 */
export function withOpusNack(sdp) {
  const pt = sdp.match(/^a=rtpmap:(\d+) opus\/48000/m)?.[1];
  if (!pt || sdp.includes(`a=rtcp-fb:${pt} nack\r\n`)) return sdp;
  return sdp.replace(`a=rtpmap:${pt} opus/48000/2\r\n`, `a=rtpmap:${pt} opus/48000/2\r\na=rtcp-fb:${pt} nack\r\n`);
}

/** The UDP IPv4 host candidates ({ ip, port }) in `sdp`. */
export function hostCandidates(sdp) {
  return [...sdp.matchAll(/^a=candidate:\S+ 1 udp \d+ (\d+\.\d+\.\d+\.\d+) (\d+) typ host/gm)].map((m) => ({ ip: m[1], port: Number(m[2]) }));
}

/**
 * The speaker of a P2P call: a send-only RTCPeerConnection with `track`; its offer (all
 * candidates gathered) goes through a relay bridge to its host candidate on `preferIp`.
 * Resolves to { pc, sender, offer, bridge } (offer: what the listener gets).
 */
export async function p2pOffer({ control, track, preferIp, noTwcc = false, nack = false }) {
  // Chromium names its host candidates with mDNS unless the page may capture: ask once.
  const gum = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
  gum?.getTracks().forEach((t) => t.stop());
  const pc = new RTCPeerConnection({ iceServers: [] });
  const sender = pc.addTransceiver(track, { direction: 'sendonly' }).sender;
  const offer = await pc.createOffer();
  if (noTwcc) offer.sdp = withoutTwcc(offer.sdp);
  if (nack) offer.sdp = withOpusNack(offer.sdp);
  await pc.setLocalDescription(offer);
  await gathered(pc);
  const mine = hostCandidates(pc.localDescription.sdp);
  const target = mine.find((c) => c.ip === preferIp) ?? mine.find((c) => c.ip.startsWith('127.')) ?? mine[0];
  if (!target) throw new Error(`speaker: no UDP IPv4 host candidate in\n${pc.localDescription.sdp}`);
  // The speaker's other sockets must not pass for the listener (see relay.mjs).
  const b = await bridge(control, target, 'p2p', mine);
  return { pc, sender, offer: withOnlyCandidate(pc.localDescription.sdp, b), bridge: b };
}

/** The listener of a P2P call: answers `offer`; resolves to { pc, answer, track, receiver }. */
export async function p2pAnswer(offer, { nack = false } = {}) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const got = new Promise((resolve) => {
    pc.ontrack = (e) => resolve(e);
  });
  await pc.setRemoteDescription({ type: 'offer', sdp: offer });
  const answer = await pc.createAnswer();
  if (nack) answer.sdp = withOpusNack(answer.sdp);
  await pc.setLocalDescription(answer);
  await gathered(pc);
  const e = await got;
  return { pc, answer: pc.localDescription.sdp, track: e.track, receiver: e.receiver };
}

/** The speaker applies the listener's answer, its candidates replaced by the bridge. */
export async function p2pAccept(pc, answer, b) {
  await pc.setRemoteDescription({ type: 'answer', sdp: withOnlyCandidate(answer, b) });
}

/** Resolves once `pc`'s connection state is "connected" (rejects on failure or after `ms`). */
export function connected(pc, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connection state ${pc.connectionState} after ${ms} ms`)), ms);
    const check = () => {
      if (pc.connectionState === 'connected') {
        clearTimeout(timer);
        resolve();
      } else if (pc.connectionState === 'failed') {
        clearTimeout(timer);
        reject(new Error('connection failed'));
      }
    };
    pc.addEventListener('connectionstatechange', check);
    check();
  });
}
