// The impairing relay on its own (no browser): node --test benches/quality/relay.test.mjs
// Loss rates, Gilbert–Elliott bursts, determinism per seed, a retransmission drawing again,
// delay, and one candidate pair per bridge.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { test } from 'node:test';
import { impairment, startRelay } from './relay.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function udp() {
  const s = createSocket('udp4');
  await new Promise((r) => s.bind(0, '127.0.0.1', r));
  return s;
}

const rtp = (seq, ssrc = 1234) => {
  const m = Buffer.alloc(60);
  m[0] = 0x80;
  m[1] = 111;
  m.writeUInt16BE(seq & 0xffff, 2);
  m.writeUInt32BE(ssrc, 8);
  return m;
};

/** Sends RTP seqs `seqs` peer → target through one bridge; resolves to the seqs delivered. */
async function through(chain, seqs, { seed = 1 } = {}) {
  const relay = startRelay({ seed });
  const target = await udp();
  const peer = await udp();
  const got = [];
  target.on('message', (m) => got.push(m.readUInt16BE(2)));
  const b = await relay.bridge({ ip: '127.0.0.1', port: target.address().port }, chain, 't');
  for (const [i, seq] of seqs.entries()) {
    peer.send(rtp(seq), b.address.port, '127.0.0.1');
    if (i % 20 === 19) await sleep(1); // stay below the sockets' buffers
  }
  const end = Date.now() + 3000;
  const tap = () => relay.taps()[0].toTarget;
  while (tap().delivered + tap().dropped < seqs.length && Date.now() < end) await sleep(10);
  await sleep(20);
  const t = tap();
  await relay.close();
  target.close();
  peer.close();
  return { got, tap: t };
}

/** The packets of the first pass of a sequence sent twice (up to where the numbers go down). */
const first = (got) => got.slice(0, got.findIndex((s, i) => i > 0 && s < got[i - 1]));

const range = (n, from = 0) => Array.from({ length: n }, (_, i) => (from + i) & 0xffff);

test('random loss: the rate asked for, the same packets for the same seed', async () => {
  const seqs = range(5000, 65000); // wraps around 65535
  const a = await through([impairment({ loss: 0.1 })], seqs);
  const b = await through([impairment({ loss: 0.1 })], seqs);
  const c = await through([impairment({ loss: 0.1 })], seqs, { seed: 2 });
  assert.equal(a.tap.rtp, seqs.length, 'every datagram reached the relay');
  const rate = 1 - a.got.length / seqs.length;
  assert.ok(rate > 0.085 && rate < 0.115, `loss ${rate}`);
  assert.equal(a.tap.rtpDropped, seqs.length - a.got.length);
  assert.deepEqual(a.got, b.got);
  assert.notDeepEqual(a.got, c.got);
});

test('two stages in series lose 1 - (1 - p)^2', async () => {
  const seqs = range(5000);
  const { got } = await through([impairment({ loss: 0.1 }), impairment({ loss: 0.1 })], seqs);
  const rate = 1 - got.length / seqs.length;
  assert.ok(rate > 0.17 && rate < 0.21, `loss ${rate}`);
});

test('Gilbert–Elliott: the mean loss asked for, in bursts', async () => {
  const seqs = range(8000);
  const { got } = await through([impairment({ loss: 0.1, burst: { badLoss: 0.75, badMeanPackets: 4 } })], seqs);
  const have = new Set(got);
  const runs = [];
  let run = 0;
  for (const s of seqs) {
    if (!have.has(s)) run++;
    else if (run) {
      runs.push(run);
      run = 0;
    }
  }
  const rate = 1 - got.length / seqs.length;
  const meanRun = runs.reduce((x, y) => x + y, 0) / runs.length;
  assert.ok(rate > 0.08 && rate < 0.12, `loss ${rate}`);
  // Independent 10 % loss has mean runs of 1.11; these come in bursts.
  assert.ok(meanRun > 1.8, `mean run of lost packets ${meanRun}`);
});

test('a retransmission (same sequence number) draws again', async () => {
  const once = range(2000);
  const { got, tap } = await through([impairment({ loss: 0.5 })], [...once, ...once]);
  // The tap counts the second copies as repeats, and how many of them it dropped.
  assert.equal(tap.rtpRepeats, once.length);
  assert.equal(tap.rtpRepeats - tap.rtpRepeatsDropped, got.length - first(got).length);
  const firstCopies = new Set(first(got));
  const lostFirst = once.filter((s) => !firstCopies.has(s));
  const recovered = lostFirst.filter((s) => got.filter((x) => x === s).length === 1);
  assert.ok(recovered.length > lostFirst.length * 0.35, `${recovered.length} of ${lostFirst.length} recovered`);
});

test('delay, and one candidate pair per bridge (a third address is dropped)', async () => {
  const relay = startRelay({ seed: 3 });
  const target = await udp();
  const peer = await udp();
  const stray = await udp();
  const b = await relay.bridge({ ip: '127.0.0.1', port: target.address().port }, [impairment({ delayMs: 40 })], 't');
  const arrivals = [];
  target.on('message', (m, r) => arrivals.push({ at: performance.now(), port: r.port }));
  const echoed = [];
  peer.on('message', () => echoed.push(performance.now()));
  const sent = performance.now();
  peer.send(rtp(1), b.address.port, '127.0.0.1');
  await sleep(100);
  stray.send(rtp(2), b.address.port, '127.0.0.1');
  await sleep(100);
  assert.equal(arrivals.length, 1);
  assert.ok(arrivals[0].at - sent >= 39, `delivered after ${arrivals[0].at - sent} ms`);
  assert.equal(arrivals[0].port, b.address.port, 'the target sees the relay');
  target.send(rtp(3), b.address.port, '127.0.0.1');
  await sleep(100);
  assert.equal(echoed.length, 1, 'the target reaches the peer through the bridge');
  assert.equal(relay.taps()[0].strays, 1);
  await relay.close();
  for (const s of [target, peer, stray]) s.close();
});
