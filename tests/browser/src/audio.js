// WebAudio helpers: a tone per page (what it publishes) and an analyser per remote track (what it
// hears: level and FFT peak).

let context;

/** The page's AudioContext (Chromium runs it without a gesture: --autoplay-policy flag). */
export async function audioContext() {
  if (!context) context = new AudioContext({ latencyHint: 'interactive' });
  if (context.state !== 'running') await context.resume();
  return context;
}

/** The context made by audioContext() (joinVoiceChannel awaits it before any remote appears). */
export function currentAudioContext() {
  return context;
}

/** The GainNode of the last tone made (the speaking scenarios gate it). */
let toneAmp = null;
export const toneGain = () => toneAmp;

/** A live audio track carrying a sine tone: OscillatorNode -> MediaStreamAudioDestinationNode. */
export async function toneTrack(frequency, gain = 0.3) {
  const ctx = await audioContext();
  const osc = new OscillatorNode(ctx, { type: 'sine', frequency });
  const amp = new GainNode(ctx, { gain });
  toneAmp = amp;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(amp).connect(dest);
  osc.start();
  const track = dest.stream.getAudioTracks()[0];
  track.addEventListener('ended', () => osc.stop(), { once: true });
  return track;
}

/** RMS level above which a remote track counts as "heard" (the tones are ~0.2 RMS). */
export const HEARD_RMS = 0.02;

/** Level and spectrum of one remote track. */
export class TrackAnalyser {
  constructor(ctx, track) {
    this.sampleRate = ctx.sampleRate;
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    // A short window for the level (reacts within ~20 ms), a long one for frequency resolution.
    this.levelNode = new AnalyserNode(ctx, { fftSize: 1024, smoothingTimeConstant: 0 });
    this.fftNode = new AnalyserNode(ctx, { fftSize: 8192, smoothingTimeConstant: 0 });
    this.source.connect(this.levelNode);
    this.source.connect(this.fftNode);
    this.time = new Float32Array(this.levelNode.fftSize);
    this.bins = new Float32Array(this.fftNode.frequencyBinCount);
  }

  rms() {
    this.levelNode.getFloatTimeDomainData(this.time);
    let sum = 0;
    for (const x of this.time) sum += x * x;
    return Math.sqrt(sum / this.time.length);
  }

  /** The strongest frequency (parabolic interpolation between bins) and its level in dB. */
  peak() {
    this.fftNode.getFloatFrequencyData(this.bins);
    let best = 1;
    for (let i = 2; i < this.bins.length - 1; i++) if (this.bins[i] > this.bins[best]) best = i;
    const [a, b, c] = [this.bins[best - 1], this.bins[best], this.bins[best + 1]];
    const denom = a - 2 * b + c;
    const shift = Number.isFinite(denom) && denom !== 0 ? (0.5 * (a - c)) / denom : 0;
    const binHz = this.sampleRate / this.fftNode.fftSize;
    return { hz: (best + shift) * binHz, db: b };
  }

  disconnect() {
    this.source.disconnect();
  }
}
