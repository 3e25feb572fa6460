// choir's own browser client: the voice API (/api/voice) over two RTCPeerConnections, with no
// dependencies. It is what the try-it page at `/` uses, and a second client implementation next to
// mediasoup-client for choir's browser tests.
//
// The SDP of choir's side (ICE-lite, DTLS, SRTP; one m-line per producer or consumer) is written
// by ./sdp.js from the voice API's TransportOptions and the ORTC parameters of produce/consume.
//
// Events (EventTarget, `event.detail`):
//   participant    {userId, producerId, paused, speaking}    someone appeared or changed
//   participantgone {userId, reason}
//   track          {userId, producerId, track}               a remote user's audio track
//   trackgone      {userId, producerId}
//   connection     {direction, state}                        an RTCPeerConnection's state
//   problem        {message}                                 something the user should know

import { localDtls, OPUS, parseLocalAudio, recvCapabilities, recvOffer, sendAnswer } from './sdp.js';

/** The voice API over fetch; `token` (a JWT) is sent as a bearer token when set. */
export class VoiceApi {
  constructor(base = '/api/voice', token = '') {
    this.base = base;
    this.token = token;
  }

  async request(method, path, body) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let res;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, `cannot reach choir (${e.message})`);
    }
    // Cluster mode: the node (and region) that served the reply.
    const node = res.headers.get('x-choir-node');
    if (node) this.served = { node, region: res.headers.get('x-choir-region') ?? '' };
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      throw new ApiError(res.status, `${method} ${path}: reply is not JSON`);
    }
    if (!res.ok) throw new ApiError(res.status, data?.error ?? `${method} ${path} failed`);
    return data;
  }

  get(path) {
    return this.request('GET', path);
  }

  post(path, body) {
    return this.request('POST', path, body);
  }

  eventsUrl(channelId, userId) {
    const url = `${this.base}/events/${encodeURIComponent(channelId)}/${encodeURIComponent(userId)}`;
    return this.token ? `${url}?token=${encodeURIComponent(this.token)}` : url;
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A serial queue: each task starts when the previous one has ended (well or not). */
function serial() {
  let tail = Promise.resolve();
  return (task) => {
    const run = tail.then(task);
    tail = run.catch(() => {});
    return run;
  };
}

export class ChoirClient extends EventTarget {
  /** @param {{api?: string, token?: string}} options */
  constructor({ api = '/api/voice', token = '' } = {}) {
    super();
    this.api = new VoiceApi(api, token);
    this.channelId = null;
    this.userId = null;
    /** userId -> {userId, producerId, paused, speaking, volume, track, ssrc} */
    this.remotes = new Map();
    /** producerId -> consumer entry (see #consume) */
    this.consumers = new Map();
    this.send = null;
    this.recv = null;
    this.producerId = null;
    this.muted = false;
    /** Whether choir says we speak (speakingChanged about us). */
    this.speaking = false;
    this.joined = false;
    this.router = null;
    this.queue = serial();
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Joins `channelId` as `userId`, publishing `track` (a microphone track, or null to listen
   * only). Resolves once published and the channel's current producers are being consumed.
   */
  async join(channelId, userId, track) {
    if (this.joined) throw new Error('already joined');
    this.channelId = channelId;
    this.userId = userId;
    this.joined = true;
    let transportsReady = () => {};
    try {
      const enc = encodeURIComponent;
      const { rtpCapabilities } = await this.api.get(`/rtp-capabilities/${enc(channelId)}`);
      this.router = rtpCapabilities;
      this.caps = recvCapabilities(rtpCapabilities);
      // The push channel first, so that no producer appearing from now on is missed; what it
      // announces is consumed once our recv transport exists (a newProducer can arrive while
      // the transports are still being created: a remote region's speaker, say).
      const gate = new Promise((resolve) => {
        transportsReady = resolve;
      });
      this.queue(() => gate);
      await this.#subscribe();
      const body = { channelId, userId };
      const [sendOptions, recvOptions] = [
        await this.api.post('/create-transport', { ...body, direction: 'send' }),
        await this.api.post('/create-transport', { ...body, direction: 'recv' }),
      ];
      // The room's node that holds our transports (cluster mode; null on a single node).
      this.served = this.api.served ?? null;
      this.recv = { options: recvOptions, pc: null, version: 0, connected: false, order: [] };
      transportsReady();
      if (track) await this.#publish(sendOptions, track);
      const { producers } = await this.api.get(`/producers/${enc(channelId)}/${enc(userId)}`);
      for (const p of producers) this.#added(p);
    } catch (e) {
      transportsReady();
      await this.leave().catch(() => {});
      throw e;
    }
  }

  #subscribe() {
    return new Promise((resolve, reject) => {
      const events = new EventSource(this.api.eventsUrl(this.channelId, this.userId));
      this.events = events;
      let open = false;
      const timer = setTimeout(() => {
        events.close();
        reject(new Error('the push channel (events) did not open within 10 s'));
      }, 10000);
      events.onopen = () => {
        open = true;
        clearTimeout(timer);
        resolve();
      };
      events.onerror = () => {
        if (!open) {
          clearTimeout(timer);
          events.close();
          reject(new Error('the push channel (events) was refused'));
        } else if (events.readyState === EventSource.CLOSED && this.joined) {
          this.#emit('problem', { message: 'choir closed the push channel' });
        }
      };
      const handle = (msg) => {
        try {
          this.#onEvent(JSON.parse(msg.data));
        } catch (e) {
          this.#emit('problem', { message: `bad push event: ${e.message}` });
        }
      };
      events.onmessage = handle;
      for (const type of [
        'newProducer',
        'producerClosed',
        'producerPaused',
        'producerResumed',
        'participantLeft',
        'transportClosed',
        'speakingChanged',
        'dominantSpeaker',
        'audioLevels',
      ]) {
        events.addEventListener(type, handle);
      }
    });
  }

  #onEvent(e) {
    if (e.userId === this.userId) {
      // Only speaking says something about us that we do not know already.
      if (e.type === 'speakingChanged') {
        this.speaking = !!e.speaking;
        this.#emit('participant', { userId: this.userId, self: true, speakingKnown: true });
      }
      if (e.type !== 'transportClosed' && e.type !== 'dominantSpeaker') return;
    }
    const remote = this.remotes.get(e.userId);
    switch (e.type) {
      case 'newProducer':
        this.#added(e);
        break;
      case 'producerClosed':
        this.#closeConsumer(e.producerId);
        break;
      case 'producerPaused':
      case 'producerResumed':
        if (remote) this.#update(remote, { paused: e.type === 'producerPaused', speaking: false });
        break;
      case 'speakingChanged':
        if (remote) this.#update(remote, { speaking: !!e.speaking, volume: e.volume ?? null, speakingKnown: true });
        break;
      case 'dominantSpeaker':
        this.dominant = e.userId;
        for (const r of this.remotes.values()) this.#emit('participant', r);
        break;
      case 'participantLeft':
        this.#gone(e.userId, e.reason);
        break;
      case 'transportClosed':
        this.#emit('problem', { message: `choir closed a transport (${e.reason})` });
        break;
      default:
        break;
    }
  }

  #update(remote, fields) {
    Object.assign(remote, fields);
    this.#emit('participant', remote);
  }

  /** A producer listed or pushed: show its user, consume it (once). */
  #added({ userId, producerId, paused = false, speaking = false, node = null, region = null }) {
    if (userId === this.userId || this.consumers.has(producerId)) return;
    const remote = this.remotes.get(userId) ?? { userId, speaking: false, volume: null, track: null };
    // node, region: set for a participant of another region's node (cascade).
    this.remotes.set(userId, Object.assign(remote, { producerId, paused, speaking, node, region }));
    this.#emit('participant', remote);
    const entry = { producerId, userId, closed: false };
    this.consumers.set(producerId, entry);
    this.queue(() => this.#consume(entry)).catch((e) => {
      this.#emit('problem', { message: `cannot receive ${userId}: ${e.message}` });
    });
  }

  #gone(userId, reason) {
    const remote = this.remotes.get(userId);
    if (!remote) return;
    if (remote.producerId) this.#closeConsumer(remote.producerId);
    this.remotes.delete(userId);
    this.#emit('participantgone', { userId, reason });
  }

  async #publish(options, track) {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.send = { pc, options, track };
    this.#watch(pc, 'send', options);
    const stream = new MediaStream([track]);
    const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const local = parseLocalAudio(pc.localDescription.sdp);
    const uris = new Set(this.router.headerExtensions.map((e) => e.uri));
    const opus = this.router.codecs.find((c) => c.mimeType.toLowerCase() === 'audio/opus');
    const answer = sendAnswer(options, local, uris, opus);
    // choir answers a=setup:passive: the browser is the DTLS client.
    await this.api.post('/connect-transport', {
      channelId: this.channelId,
      userId: this.userId,
      transportId: options.id,
      dtlsParameters: { role: 'client', fingerprints: [local.fingerprint] },
    });
    const { producerId } = await this.api.post('/produce', {
      channelId: this.channelId,
      userId: this.userId,
      kind: 'audio',
      rtpParameters: {
        mid: local.mid,
        codecs: [
          // RED first when the answer gave it: what the browser sends (choir unpacks it).
          ...(answer.red ? [{ ...OPUS, mimeType: 'audio/red', payloadType: local.redPt, parameters: {}, rtcpFeedback: [] }] : []),
          {
            ...OPUS,
            payloadType: local.pt,
            parameters: local.fmtp,
            // With NACK in the answer the browser resends what choir asks for.
            rtcpFeedback: answer.nack ? [{ type: 'nack', parameter: '' }] : [],
          },
        ],
        headerExtensions: answer.extensions.map((e) => ({ uri: e.uri, id: e.id, encrypt: false, parameters: {} })),
        encodings: local.ssrc === undefined ? [] : [{ ssrc: local.ssrc }],
        rtcp: { cname: local.cname ?? '', reducedSize: true },
      },
    });
    this.producerId = producerId;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this.send.transceiver = transceiver;
  }

  async #consume(entry) {
    if (!this.joined || entry.closed) return;
    const reply = await this.api.post('/consume', {
      channelId: this.channelId,
      userId: this.userId,
      producerId: entry.producerId,
      rtpCapabilities: this.caps,
    });
    Object.assign(entry, { id: reply.id, mid: reply.rtpParameters.mid, rtpParameters: reply.rtpParameters });
    entry.ssrc = reply.rtpParameters.encodings[0]?.ssrc;
    const recv = this.recv;
    recv.order.push(entry);
    if (!recv.pc) {
      recv.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
      this.#watch(recv.pc, 'recv', recv.options);
    }
    await this.#negotiate();
    if (!this.joined) return;
    const transceiver = recv.pc.getTransceivers().find((t) => t.mid === entry.mid);
    if (!transceiver) throw new Error(`no transceiver for mid ${entry.mid}`);
    entry.transceiver = transceiver;
    const remote = this.remotes.get(entry.userId);
    if (entry.closed || !remote) return;
    Object.assign(remote, { track: transceiver.receiver.track, ssrc: entry.ssrc, consumerId: entry.id, mid: entry.mid, rtpParameters: entry.rtpParameters });
    this.#emit('track', { userId: entry.userId, producerId: entry.producerId, track: transceiver.receiver.track });
    this.#emit('participant', remote);
  }

  /** Applies choir's offer for the current consumers; connects the transport the first time. */
  async #negotiate() {
    const recv = this.recv;
    recv.version += 1;
    await recv.pc.setRemoteDescription({ type: 'offer', sdp: recvOffer(recv.options, recv.order, recv.version) });
    const answer = await recv.pc.createAnswer();
    if (!recv.connected) {
      const dtls = localDtls(answer.sdp);
      recv.connected = true;
      await this.api.post('/connect-transport', {
        channelId: this.channelId,
        userId: this.userId,
        transportId: recv.options.id,
        dtlsParameters: { role: dtls.setup === 'passive' ? 'server' : 'client', fingerprints: [dtls.fingerprint] },
      });
    }
    await recv.pc.setLocalDescription(answer);
  }

  #closeConsumer(producerId) {
    const entry = this.consumers.get(producerId);
    if (!entry || entry.closed) return;
    entry.closed = true;
    this.consumers.delete(producerId);
    const remote = this.remotes.get(entry.userId);
    if (remote?.producerId === producerId) {
      remote.track = null;
      this.#emit('trackgone', { userId: entry.userId, producerId });
    }
    if (entry.mid !== undefined && this.recv?.pc) {
      this.queue(() => this.joined && this.#negotiate()).catch((e) => {
        this.#emit('problem', { message: `renegotiation failed: ${e.message}` });
      });
    }
  }

  #watch(pc, direction, options) {
    pc.addEventListener('connectionstatechange', () => {
      const state = pc.connectionState;
      this.#emit('connection', { direction, state });
      if (state === 'failed' && this.joined) {
        this.#emit('problem', { message: `The ${direction} connection failed (ICE or DTLS). ${reachability(options)}` });
      }
    });
  }

  /**
   * Why media does not flow yet, if it does not: a connection (send, or recv once there is
   * someone to receive) that is not connected. `null` when all is well.
   */
  connectionProblem() {
    for (const [direction, t] of [['send', this.send], ['recv', this.recv]]) {
      const state = t?.pc?.connectionState;
      if (t?.pc && state !== 'connected' && state !== 'closed') {
        return `No ${direction} connection to choir yet (${state}). ${reachability(t.options)}`;
      }
    }
    return null;
  }

  /** Mutes (choir stops forwarding, the others see "muted") or unmutes the microphone. */
  async setMuted(muted) {
    if (!this.producerId) return;
    const body = { channelId: this.channelId, userId: this.userId, producerId: this.producerId };
    if (muted) {
      this.send.track.enabled = false;
      await this.api.post('/pause-producer', body);
    } else {
      await this.api.post('/resume-producer', body);
      this.send.track.enabled = true;
    }
    this.muted = muted;
  }

  /** Leaves: tells choir, closes both connections and the push channel. */
  async leave() {
    const wasJoined = this.joined;
    this.joined = false;
    this.events?.close();
    this.send?.pc.close();
    this.recv?.pc?.close();
    this.send?.track.stop();
    this.consumers.clear();
    this.remotes.clear();
    this.producerId = null;
    if (wasJoined && this.channelId) {
      await this.api.post('/leave', { channelId: this.channelId, userId: this.userId }).catch(() => {});
    }
    this.send = null;
    this.recv = null;
  }

  /**
   * One getStats() snapshot of both connections: for each, the selected candidate pair
   * (protocol, local and remote address, round-trip time, state); the sent stream (packets, and
   * what choir reports back: loss, jitter, RTT); per remote user the received stream.
   */
  async stats() {
    const out = { send: null, recv: null, remotes: [] };
    if (this.send?.pc) {
      const report = await this.send.pc.getStats();
      out.send = { ...selectedPair(report), state: this.send.pc.connectionState };
      for (const s of report.values()) {
        if (s.type === 'outbound-rtp' && s.kind === 'audio') out.send.packetsSent = s.packetsSent;
        if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') {
          out.send.reportedLost = s.packetsLost;
          out.send.reportedJitterMs = s.jitter === undefined ? null : s.jitter * 1000;
          if (out.send.rttMs == null && s.roundTripTime !== undefined) out.send.rttMs = s.roundTripTime * 1000;
        }
      }
    }
    if (this.recv?.pc) {
      const report = await this.recv.pc.getStats();
      out.recv = { ...selectedPair(report), state: this.recv.pc.connectionState };
      const bySsrc = new Map();
      for (const s of report.values()) if (s.type === 'inbound-rtp' && s.kind === 'audio') bySsrc.set(s.ssrc, s);
      for (const r of this.remotes.values()) {
        const s = bySsrc.get(r.ssrc);
        out.remotes.push({
          userId: r.userId,
          packetsReceived: s?.packetsReceived ?? 0,
          packetsLost: s?.packetsLost ?? 0,
          jitterMs: s?.jitter === undefined ? null : s.jitter * 1000,
          audioLevel: s?.audioLevel ?? null,
        });
      }
    }
    return out;
  }
}

/** What an operator checks when a browser cannot reach choir's media ports. */
function reachability(options) {
  const where = options.iceCandidates.map((c) => `${c.protocol.toUpperCase()} ${c.address ?? c.ip}:${c.port}`).join(', ');
  return (
    `This browser cannot reach choir's media address (${where}): check that choir's RTC ports are open ` +
    '(UDP, and TCP for browsers that cannot use UDP) and that choir announces an address this browser can ' +
    'reach (SFU_ANNOUNCED_IP, or SFU_LISTEN_IPS behind NAT).'
  );
}

/** The selected ICE candidate pair of a stats report: protocol, addresses, RTT. */
function selectedPair(report) {
  let pair;
  for (const s of report.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  }
  if (!pair) {
    // Firefox has no transport stats: its selected pair says so itself.
    for (const s of report.values()) {
      if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
    }
  }
  if (!pair) return { protocol: null };
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  const addr = (c) => (c ? `${c.address ?? c.ip}:${c.port}` : null);
  return {
    protocol: remote?.protocol ?? local?.protocol ?? null,
    local: addr(local),
    remote: addr(remote),
    pairState: pair.state,
    rttMs: pair.currentRoundTripTime === undefined ? null : pair.currentRoundTripTime * 1000,
  };
}
