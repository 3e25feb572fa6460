// The plan's frontend `sfuService.ts` (shared/seed/000_*.md, "Day 1-2: mediasoup-client Service"),
// written for this test page: the same calls in the same order, plus choir's push channel
// (`GET /api/voice/events/:channelId/:userId`, Server-Sent Events) so that a participant also
// consumes producers that appear after it joined.

import * as mediasoupClient from 'mediasoup-client';

/** The push channel's event types (each SSE `data:` is JSON with this `type`). */
export const EVENT_TYPES = [
  'newProducer',
  'producerClosed',
  'participantLeft',
  'producerPaused',
  'producerResumed',
  'transportClosed',
  // choir's speaking indicators (README): the plan's frontend ignores them.
  'speakingChanged',
  'dominantSpeaker',
];

export class SFUService {
  constructor(apiClient, log) {
    this.api = apiClient;
    this.log = log;
    this.device = undefined;
    this.sendTransport = undefined;
    this.recvTransport = undefined;
    this.audioProducer = undefined;
    /** producerId -> { consumer, userId } */
    this.consumers = new Map();
    this.channelId = undefined;
    this.userId = undefined;
    this.events = undefined;
    /** Consumes one at a time (existing and pushed producers), in arrival order. */
    this.queue = Promise.resolve();
    /** producerIds consumed or being consumed (a producer may be both listed and pushed). */
    this.seen = new Set();
  }

  async init(channelId, userId) {
    this.channelId = channelId;
    this.userId = userId;

    this.device = new mediasoupClient.Device();

    const { data } = await this.api.get(`/voice/rtp-capabilities/${channelId}`);
    await this.device.load({ routerRtpCapabilities: data.rtpCapabilities });

    await this.createSendTransport();
    await this.createRecvTransport();
  }

  async createSendTransport() {
    const { data } = await this.api.post('/voice/create-transport', {
      channelId: this.channelId,
      userId: this.userId,
      direction: 'send',
    });

    this.sendTransport = this.device.createSendTransport(data);
    this.watchTransport(this.sendTransport, 'send');

    this.sendTransport.on('connect', async ({ dtlsParameters }, callback, errback) => {
      try {
        await this.api.post('/voice/connect-transport', {
          channelId: this.channelId,
          userId: this.userId,
          transportId: this.sendTransport.id,
          dtlsParameters,
        });
        callback();
      } catch (error) {
        errback(error);
      }
    });

    this.sendTransport.on('produce', async ({ kind, rtpParameters }, callback, errback) => {
      try {
        const { data } = await this.api.post('/voice/produce', {
          channelId: this.channelId,
          userId: this.userId,
          kind,
          rtpParameters,
        });
        callback({ id: data.producerId });
      } catch (error) {
        errback(error);
      }
    });
  }

  async createRecvTransport() {
    const { data } = await this.api.post('/voice/create-transport', {
      channelId: this.channelId,
      userId: this.userId,
      direction: 'recv',
    });

    this.recvTransport = this.device.createRecvTransport(data);
    this.watchTransport(this.recvTransport, 'recv');

    this.recvTransport.on('connect', async ({ dtlsParameters }, callback, errback) => {
      try {
        await this.api.post('/voice/connect-transport', {
          channelId: this.channelId,
          userId: this.userId,
          transportId: this.recvTransport.id,
          dtlsParameters,
        });
        callback();
      } catch (error) {
        errback(error);
      }
    });
  }

  watchTransport(transport, direction) {
    transport.on('connectionstatechange', (state) =>
      this.log('transport', `${direction} transport ${transport.id}: ${state}`),
    );
  }

  async produceAudio(track, codecOptions) {
    this.audioProducer = await this.sendTransport.produce({ track, codecOptions });
  }

  async consumeAudio(producerId, userId) {
    const { data } = await this.api.post('/voice/consume', {
      channelId: this.channelId,
      userId: this.userId,
      producerId,
      rtpCapabilities: this.device.rtpCapabilities,
    });

    const consumer = await this.recvTransport.consume(data);
    this.consumers.set(producerId, { consumer, userId });

    return { userId, producerId, track: consumer.track };
  }

  /**
   * Consumes `producerId` unless already done; serialized with every other consume. Resolves to
   * the plan's `{ userId, track }` (plus producerId and where it came from), or null if skipped.
   */
  consumeOnce(producerId, userId, source) {
    if (this.seen.has(producerId) || userId === this.userId) return Promise.resolve(null);
    this.seen.add(producerId);
    const run = this.queue.then(async () => {
      if (!this.recvTransport || this.recvTransport.closed || !this.seen.has(producerId)) {
        return null;
      }
      return { ...(await this.consumeAudio(producerId, userId)), source };
    });
    // One failed consume must not stall the ones queued after it; the caller sees the error.
    this.queue = run.catch(() => {});
    return run;
  }

  async consumeExisting() {
    const { data } = await this.api.get(`/voice/producers/${this.channelId}/${this.userId}`);

    const tracks = [];
    for (const { userId, producerId } of data.producers) {
      const result = await this.consumeOnce(producerId, userId, 'list');
      if (result) tracks.push(result);
    }
    return tracks;
  }

  /**
   * Opens the push channel and resolves once it is open (so nothing published after this is
   * missed by the `producers` call that follows). `onEvent` gets each parsed event.
   */
  subscribe(onEvent, { timeoutMs = 10000 } = {}) {
    const url = `${this.api.base}/voice/events/${encodeURIComponent(this.channelId)}/${encodeURIComponent(this.userId)}`;
    const events = new EventSource(url);
    this.events = events;
    const handle = (msg) => {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch {
        this.log('error', `push channel: data is not JSON: ${msg.data}`);
        return;
      }
      if (msg.type !== 'message' && data.type !== msg.type) {
        this.log('error', `push channel: event ${msg.type} carries type ${data.type}`);
      }
      onEvent(data);
    };
    events.onmessage = handle;
    for (const type of EVENT_TYPES) events.addEventListener(type, handle);
    events.onerror = () => this.log('events', `push channel error (readyState ${events.readyState})`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('push channel did not open')), timeoutMs);
      events.onopen = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  closeConsumer(producerId) {
    const entry = this.consumers.get(producerId);
    this.consumers.delete(producerId);
    this.seen.delete(producerId);
    entry?.consumer.close();
    return entry;
  }

  async cleanup() {
    this.events?.close();
    this.audioProducer?.close();
    this.consumers.forEach(({ consumer }) => consumer.close());
    this.consumers.clear();
    this.sendTransport?.close();
    this.recvTransport?.close();

    if (this.channelId && this.userId) {
      await this.api.post('/voice/leave', {
        channelId: this.channelId,
        userId: this.userId,
      });
    }
  }
}
