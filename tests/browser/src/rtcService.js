// The plan's frontend `rtcService.ts` ("Day 3: Replace P2P in rtcService"): join = init the SFU
// service, get the microphone, produce, consume the existing producers, play each remote stream
// in an <audio> element. Two test additions: the page may publish a tone instead of the
// microphone, and it follows choir's push channel (consume new producers, drop closed ones).
// Every remote track also gets an analyser, so the driver can tell whom this page hears.

import { audioContext, currentAudioContext, toneTrack, TrackAnalyser } from './audio.js';

export class RTCService {
  constructor(sfuService, log) {
    this.sfu = sfuService;
    this.log = log;
    this.localStream = undefined;
    /** producerId -> remote entry (see addRemote) */
    this.remotes = new Map();
    /** Every remote ever added, closed ones included. */
    this.history = [];
    /** Push events received: { at, ...event }. */
    this.events = [];
    this.errors = [];
    this.joinedAt = null;
  }

  /**
   * @param {{ tone?: number, mic?: boolean, gain?: number, dtx?: boolean }} source  a tone
   *   frequency (and its gain), or the microphone (`getUserMedia` with the plan's constraints;
   *   Chromium's fake capture device in tests); `dtx`: produce with Opus DTX on (true) or off
   *   (false) instead of the router's default.
   */
  async joinVoiceChannel(channelId, userId, source) {
    this.log('join', `joining ${channelId} as ${userId} (${source.mic ? 'microphone' : `tone ${source.tone} Hz`})`);
    await audioContext();

    // 1. Init SFU
    await this.sfu.init(channelId, userId);

    // 1b. choir's push channel, open before listing producers so that none is missed.
    await this.sfu.subscribe((event) => this.onEvent(event));

    // 2. Get microphone
    if (source.mic) {
      this.localStream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true },
      });
    } else {
      this.localStream = new MediaStream([await toneTrack(source.tone, source.gain)]);
    }

    // 3. Produce audio
    const audioTrack = this.localStream.getAudioTracks()[0];
    // `dtx` given (the speaking scenarios): Opus DTX on or off as asked. Not given: the plan's
    // produce() without codec options, and the router's `usedtx=1` decides (DTX on).
    await this.sfu.produceAudio(audioTrack, source.dtx === undefined ? undefined : { opusDtx: source.dtx });

    // 4. Consume existing
    const tracks = await this.sfu.consumeExisting();
    for (const result of tracks) this.playRemoteAudio(result);

    this.joinedAt = performance.now();
    this.log('join', `joined: producer ${this.sfu.audioProducer.id}, ${tracks.length} existing`);
  }

  async leaveVoiceChannel() {
    this.localStream?.getTracks().forEach((t) => t.stop());
    for (const producerId of [...this.remotes.keys()]) this.removeRemote(producerId, 'leave');
    await this.sfu.cleanup();
    this.log('leave', 'left');
  }

  onEvent(event) {
    this.events.push({ at: performance.now(), ...event });
    this.log('event', JSON.stringify(event));
    switch (event.type) {
      case 'newProducer':
        this.sfu
          .consumeOnce(event.producerId, event.userId, 'push')
          .then((result) => result && this.playRemoteAudio(result))
          .catch((e) => this.error(`consume ${event.producerId} (pushed): ${e.message ?? e}`));
        break;
      case 'producerClosed':
        this.removeRemote(event.producerId, 'producerClosed');
        break;
      case 'participantLeft':
        for (const [producerId, remote] of this.remotes) {
          if (remote.userId === event.userId) this.removeRemote(producerId, 'participantLeft');
        }
        break;
      case 'transportClosed':
        this.error(`choir closed transport ${event.transportId}: ${event.reason}`);
        break;
      default:
        break;
    }
  }

  playRemoteAudio({ userId, producerId, track, source }) {
    const stream = new MediaStream([track]);
    // As in the plan: an <audio> element plays it (Chromium also only pulls remote WebRTC
    // audio into WebAudio while a media element plays the track).
    const audio = new Audio();
    audio.srcObject = stream;
    audio.play().catch((e) => this.error(`audio.play for ${userId}: ${e.message}`));

    const remote = {
      userId,
      producerId,
      consumerId: this.sfu.consumers.get(producerId)?.consumer.id,
      ssrc: this.sfu.consumers.get(producerId)?.consumer.rtpParameters.encodings?.[0]?.ssrc,
      mid: this.sfu.consumers.get(producerId)?.consumer.rtpParameters.mid,
      headerExtensions: this.sfu.consumers
        .get(producerId)
        ?.consumer.rtpParameters.headerExtensions?.map((e) => `${e.id} ${e.uri}`),
      source,
      audio,
      analyser: new TrackAnalyser(currentAudioContext(), track),
      addedAt: performance.now(),
      firstHeardAt: null,
      lastHeardAt: null,
      maxGapMs: 0,
      closedAt: null,
      closedBy: null,
    };
    this.remotes.set(producerId, remote);
    this.history.push(remote);
    this.log('remote', `consuming ${userId} (producer ${producerId}, via ${source})`);
  }

  removeRemote(producerId, why) {
    const remote = this.remotes.get(producerId);
    this.remotes.delete(producerId);
    this.sfu.closeConsumer(producerId);
    if (!remote) return;
    remote.closedAt = performance.now();
    remote.closedBy = why;
    remote.audio.pause();
    remote.audio.srcObject = null;
    remote.analyser.disconnect();
    this.log('remote', `stopped consuming ${remote.userId} (${why})`);
  }

  error(message) {
    this.errors.push(message);
    this.log('error', message);
  }
}
