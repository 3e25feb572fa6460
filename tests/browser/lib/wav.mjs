// A WAV file with a sine tone, for Chromium's fake microphone (--use-file-for-fake-audio-capture).
import { writeFile } from 'node:fs/promises';

export async function writeToneWav(file, { hz, seconds = 2, rate = 48000, amplitude = 0.3 }) {
  const n = Math.round(seconds * rate);
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
  for (let i = 0; i < n; i++) {
    const x = amplitude * Math.sin((2 * Math.PI * hz * i) / rate);
    buf.writeInt16LE(Math.round(x * 32767), 44 + i * 2);
  }
  await writeFile(file, buf);
}
