// WAV files the suite plays: a sine tone for Chromium's fake microphone
// (--use-file-for-fake-audio-capture), and a synthetic voice for the loss scenarios' speaker.
import { writeFile } from 'node:fs/promises';

/** 16-bit mono PCM WAV of `samples` (floats in [-1, 1]) at `rate`. */
function wav(samples, rate) {
  const n = samples.length;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVE', 8);
  buf.write('fmt ', 12);
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write('data', 36);
  buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(samples[i] * 32767), 44 + i * 2);
  return buf;
}

export async function writeToneWav(file, { hz, seconds = 2, rate = 48000, amplitude = 0.3 }) {
  const x = new Float64Array(Math.round(seconds * rate));
  for (let i = 0; i < x.length; i++) x[i] = amplitude * Math.sin((2 * Math.PI * hz * i) / rate);
  await writeFile(file, wav(x, rate));
}

/**
 * A WAV file of a synthetic voice: a buzz (harmonics of a 110–150 Hz pitch that glides, with
 * vowel-like formant weights up to 4 kHz) shaped into syllables (4 a second, with short quiet
 * gaps between words every second). What an Opus encoder in VOIP mode treats as speech (its
 * in-band FEC protects speech frames only), without a recording. Deterministic.
 */
export async function writeVoiceWav(file, { seconds = 4, rate = 48000, amplitude = 0.25 } = {}) {
  const n = Math.round(seconds * rate);
  // Two formants per syllable, alternating vowels.
  const vowels = [[700, 1200], [300, 2300], [500, 900], [400, 2000]];
  const gain = (hz, [f1, f2]) => 1 / (1 + ((hz - f1) / 150) ** 2) + 0.6 / (1 + ((hz - f2) / 200) ** 2) + 0.02;
  let phase = 0;
  let peak = 0;
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const syllable = Math.floor(t * 4);
    const inWord = t % 1 < 0.8; // a 0.2 s gap each second
    const env = inWord ? Math.sin(Math.PI * ((t * 4) % 1)) ** 2 : 0;
    const f0 = 110 + 40 * (0.5 + 0.5 * Math.sin(2 * Math.PI * 0.7 * t));
    phase += (2 * Math.PI * f0) / rate;
    const v = vowels[syllable % vowels.length];
    let s = 0;
    for (let k = 1; k * f0 < 4000; k++) s += gain(k * f0, v) * Math.sin(k * phase);
    x[i] = env * s;
    peak = Math.max(peak, Math.abs(x[i]));
  }
  for (let i = 0; i < n; i++) x[i] = (amplitude * x[i]) / peak;
  await writeFile(file, wav(x, rate));
}
