// The bench page's audio: one AudioContext at 48 kHz, the speech file played in a loop into a
// MediaStreamDestination (what the speaker sends), and a recorder (AudioWorklet) on a received
// track. Both share the context's frame clock, so in one page the lag between the file's frame
// and the received frame is the mouth-to-ear delay (device I/O aside).

export const RATE = 48000;

let ctx = null;
let workletLoaded = null;

export async function context() {
  if (!ctx) ctx = new AudioContext({ sampleRate: RATE, latencyHint: 'interactive' });
  if (ctx.state !== 'running') await ctx.resume();
  workletLoaded ??= ctx.audioWorklet.addModule(new URL('worklet.js', document.baseURI).href);
  await workletLoaded;
  return ctx;
}

/**
 * The wall clock (ms since the epoch) of the context's frame 0, from a (context time,
 * performance time) pair: exact between two recordings of one context, within the output
 * latency between two browsers.
 */
export function frameZeroWallMs() {
  const ts = ctx.getOutputTimestamp?.();
  if (ts && ts.performanceTime > 0) return performance.timeOrigin + ts.performanceTime - ts.contextTime * 1000;
  return performance.timeOrigin + performance.now() - ctx.currentTime * 1000;
}

/**
 * The speech file, looped into a MediaStreamDestination from `startIn` s from now; resolves to
 * `{ track, startFrame, fileFrames }`.
 */
export async function speechTrack(url, startIn = 0.2) {
  const c = await context();
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  const buffer = await c.decodeAudioData(await res.arrayBuffer());
  if (buffer.sampleRate !== RATE) throw new Error(`${url} decoded at ${buffer.sampleRate} Hz`);
  const source = new AudioBufferSourceNode(c, { buffer, loop: true });
  const dest = c.createMediaStreamDestination();
  dest.channelCount = 1;
  source.connect(dest);
  const at = c.currentTime + startIn;
  source.start(at);
  return { track: dest.stream.getAudioTracks()[0], startFrame: Math.round(at * RATE), fileFrames: buffer.length, source };
}

/** Records a received track from now on (AudioWorklet); Chromium only feeds remote audio to
 * WebAudio while a media element plays it, so a muted <audio> element does. */
export class Recorder {
  constructor(c, track) {
    this.chunks = [];
    this.stream = new MediaStream([track]);
    this.audio = new Audio();
    this.audio.muted = true;
    this.audio.srcObject = this.stream;
    this.audio.play().catch((e) => console.log(`audio.play: ${e.message}`));
    this.source = c.createMediaStreamSource(this.stream);
    this.node = new AudioWorkletNode(c, 'quality-recorder', { numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: 'explicit' });
    this.node.port.onmessage = (e) => this.chunks.push(e.data);
    this.source.connect(this.node);
  }

  get firstFrame() {
    return this.chunks.length ? this.chunks[0].frame : null;
  }

  get lastFrame() {
    const c = this.chunks.at(-1);
    return c ? c.frame + c.data.length : null;
  }

  /** Frames [from, from + n) as 16-bit PCM, base64 (zeros where nothing was recorded). */
  pcm16(from, n) {
    const out = new Int16Array(n);
    for (const { frame, data } of this.chunks) {
      const a = Math.max(from, frame);
      const b = Math.min(from + n, frame + data.length);
      for (let f = a; f < b; f++) {
        const x = Math.max(-1, Math.min(1, data[f - frame]));
        out[f - from] = Math.round(x * 32767);
      }
    }
    const bytes = new Uint8Array(out.buffer);
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(bin);
  }

  stop() {
    this.node.port.postMessage('stop');
    this.source.disconnect();
    this.audio.pause();
    this.audio.srcObject = null;
  }
}
