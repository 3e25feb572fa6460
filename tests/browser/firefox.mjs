// Firefox scenarios (issue 16): the plan's mediasoup-client flow in Firefox ESR, alone and in a
// room with Chromium. They run inside the suite's own network namespace (lib/netns.mjs: Firefox
// gathers no loopback candidate), with choir on 198.18.0.1. Firefox sends its ICE consent checks
// about every 5 s (RFC 7675), so these choirs time consent out after 15 s, not the suite's 5 s.
import { eachInbound, expectHears, HEARD_FRACTION, HZ_TOLERANCE, receiveQuality, toneOf, waitHearing } from './lib/checks.mjs';
import { check, eventually, fmt, median } from './lib/util.mjs';

export const FIREFOX_CONSENT_TIMEOUT = '15s';
export const ABS_SEND_TIME = 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time';
/** The router's header extensions (ortc.rs): uri -> id. */
export const ROUTER_EXTENSIONS = {
  'urn:ietf:params:rtp-hdrext:sdes:mid': 1,
  [ABS_SEND_TIME]: 4,
  'urn:ietf:params:rtp-hdrext:ssrc-audio-level': 10,
};
const MAX_GAP_MS = 500;

/** Joins each [user, tone] in order. */
export async function joinAll(t, pairs) {
  for (const [user, tone] of pairs) {
    await user.join({ api: t.choir.api, channelId: t.channel, userId: user.name, tone });
  }
}

/** Every user hears every other one, at its tone, and receives its packets. */
export async function expectAllHearAll(users, tones) {
  const names = users.map((u) => u.name);
  await Promise.all(users.map((u) => waitHearing(u, names.filter((n) => n !== u.name), 20000)));
  for (const u of users) {
    const others = Object.fromEntries(names.filter((n) => n !== u.name).map((n) => [n, tones[n]]));
    await expectHears(u, others, 1500);
  }
  const snaps = [];
  for (const u of users) if (u.kind !== 'page') snaps.push(await expectFlowing(u, names.filter((n) => n !== u.name)));
  snaps.minRate = Math.min(...snaps.map((s) => s.minRate));
  return snaps;
}

/**
 * From `user`'s getStats(): packets from each of `userIds` arrive at about 50 per second (at
 * least 80 %) and the audio level is above zero. The rate is taken over the stats' own
 * timestamps: Firefox refreshes its RTP stats less often than Chromium, and a busy machine
 * delays the snapshots, not the packets. Returns the later snapshot.
 */
async function expectFlowing(user, userIds, ms = 2000) {
  let minRate = Infinity;
  const after = await eachInbound(user, userIds, ms, (id, a, b) => {
    const seconds = (a.timestamp - b.timestamp) / 1000;
    const rate = (a.packetsReceived - b.packetsReceived) / seconds;
    check(seconds >= ms / 2000 && rate >= 40, `${user.name}: ${a.packetsReceived - b.packetsReceived} packets from ${id} in ${fmt(seconds, 2)} s of stats time`, { before: b, after: a });
    minRate = Math.min(minRate, rate);
  });
  if (userIds.length) after.minRate = minRate;
  return after;
}

/**
 * The room of `users` works: everyone hears everyone over the namespace's path, each consumer
 * carries only what its receiver's browser (`browserOf(name)`) negotiated; the receive quality
 * is measured as `label` (with the stream count when `streams`); then all leave and choir holds
 * nothing.
 */
async function expectRoomAndLeave(t, users, tones, browserOf, label, { streams = false } = {}) {
  const snaps = await expectAllHearAll(users, tones);
  for (const [i, u] of users.entries()) expectNamespacePath(u, snaps[i], t.rtcIp);
  const lines = await expectNarrowing(users, browserOf);
  t.note(`extensions per consumer: ${lines.join('; ')}`);
  const q = receiveQuality(snaps);
  const count = streams ? `${q.streams} streams, ` : '';
  t.measure(label, `${count}jitter median ${fmt(median(q.jitterMs))} ms; lost ${q.lost} of ${q.lost + q.received}; slowest stream ${fmt(snaps.minRate)} packets/s`);
  for (const u of users) await u.leave();
  await expectEmpty(t);
}

/** After everyone left: choir holds no room, participant, transport or port. */
export async function expectEmpty(t) {
  return eventually('choir empty after everyone left', 5000, async () => {
    const h = await t.choir.health();
    for (const k of ['rooms', 'participants', 'transports', 'producers', 'consumers', 'boundPorts']) {
      check(h[k] === 0, `GET /api/voice/health says ${k}: ${h[k]}`, h);
    }
    return h;
  });
}

/** Both transports' selected pairs run between addresses of the namespace, over UDP. */
function expectNamespacePath(user, snap, rtcIp) {
  for (const side of ['send', 'recv']) {
    const s = snap[side];
    const transport = s?.transport?.[0];
    const pair = s?.pairs?.find((p) => p.id === transport?.selectedCandidatePairId) ?? s?.pairs?.find((p) => p.nominated && p.state === 'succeeded');
    const remote = s?.candidates?.[pair?.remote] ?? '';
    check(remote.startsWith(`remote-candidate udp ${rtcIp}:`), `${user.name}: ${side} transport's selected remote candidate is "${remote}", not choir's UDP ${rtcIp}`, s);
  }
}

const uris = (list) => list.map((e) => e.uri).sort();
const short = (list) => list.map((e) => `${e.uri.replace(/^.*[:/]/, '')}=${e.id}`).join(' ') || 'none';
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/**
 * choir's per-consumer narrowing: each consumer's extensions are exactly the router's that the
 * consuming browser receives (with the router's id) and that the producing browser sends, and
 * the browser's receiver negotiated exactly those. Firefox has no abs-send-time at all.
 * Returns a line per (browser kind, producer kind) for the report.
 */
async function expectNarrowing(users, kindOf) {
  const neg = new Map();
  for (const u of users) neg.set(u.name, await u.call(() => window.choir.negotiated(), null, 5000, 'negotiated()'));
  const seen = new Map();
  for (const u of users) {
    const n = neg.get(u.name);
    if (kindOf(u.name) === 'firefox') {
      check(!n.recvCaps.some((e) => e.uri === ABS_SEND_TIME), `${u.name} (Firefox) claims abs-send-time`, n.recvCaps);
      check(!n.producer.some((e) => e.uri === ABS_SEND_TIME), `${u.name} (Firefox) produces with abs-send-time`, n.producer);
    }
    for (const c of n.consumers) {
      const producer = neg.get(c.userId).producer;
      const expected = Object.entries(ROUTER_EXTENSIONS)
        .filter(([uri, id]) => n.recvCaps.some((e) => e.uri === uri && e.id === id) && producer.some((e) => e.uri === uri))
        .map(([uri]) => uri)
        .sort();
      check(same(uris(c.choir), expected), `${u.name}'s consumer of ${c.userId}: choir gave ${uris(c.choir)}, expected ${expected}`, { consumer: c, recvCaps: n.recvCaps, producer });
      for (const e of c.choir) check(ROUTER_EXTENSIONS[e.uri] === e.id, `${u.name}'s consumer of ${c.userId}: ${e.uri} with id ${e.id}`, c);
      check(same(uris(c.receiver), uris(c.choir)), `${u.name}'s receiver of ${c.userId} negotiated ${uris(c.receiver)}, choir gave ${uris(c.choir)}`, c);
      const key = `${kindOf(u.name)} receiving ${kindOf(c.userId)}`;
      seen.set(key, short(c.choir));
    }
    seen.set(`${kindOf(u.name)} receive caps`, short(n.recvCaps));
    seen.set(`${kindOf(u.name)} produces`, short(n.producer));
  }
  return [...seen].sort().map(([k, v]) => `${k}: ${v}`);
}

export const firefoxScenarios = [
  {
    name: 'firefox-three',
    description: 'three Firefox users (mediasoup-client, the plan\'s flow) hear each other, told apart by tone',
    netns: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 120000,
    async run(t) {
      const ff = await t.launch('firefox');
      const names = ['F0', 'F1', 'F2'];
      const tones = Object.fromEntries(names.map((n, i) => [n, toneOf(i)]));
      const users = [];
      for (const n of names) users.push(await ff.openUser(n));
      await joinAll(t, users.map((u) => [u, tones[u.name]]));
      await expectRoomAndLeave(t, users, tones, () => 'firefox', 'firefox-three receive');
    },
  },
  {
    name: 'mixed-room',
    description: 'two Chromium and two Firefox users (mediasoup-client) hear everyone both ways; each consumer carries only what its browser negotiated',
    netns: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 120000,
    async run(t) {
      const [chromium, firefox] = [await t.launch('chromium'), await t.launch('firefox')];
      const plan = [['C0', chromium], ['F0', firefox], ['C1', chromium], ['F1', firefox]];
      const tones = Object.fromEntries(plan.map(([n], i) => [n, toneOf(i)]));
      const users = [];
      for (const [n, b] of plan) users.push(await b.openUser(n));
      await joinAll(t, users.map((u) => [u, tones[u.name]]));
      await expectRoomAndLeave(t, users, tones, (n) => (n.startsWith('F') ? 'firefox' : 'chromium'), 'mixed-room receive', {
        streams: true,
      });
    },
  },
  {
    name: 'firefox-pause-rejoin',
    description: 'Firefox: A is paused and resumed (B, C stop and start hearing A), then C leaves and rejoins; A and B never lose each other',
    netns: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 120000,
    async run(t) {
      const ff = await t.launch('firefox');
      const names = ['A', 'B', 'C'];
      const tones = Object.fromEntries(names.map((n, i) => [n, toneOf(i)]));
      const [a, b, c] = [await ff.openUser('A'), await ff.openUser('B'), await ff.openUser('C')];
      await joinAll(t, [[a, tones.A], [b, tones.B], [c, tones.C]]);
      await expectAllHearAll([a, b, c], tones);

      // Pause: B and C stop hearing A, and only A; resume: A is back at its tone.
      const { producerId } = await a.state();
      const body = { channelId: t.channel, userId: 'A', producerId };
      let waits = [b, c].map((u) => u.waitLevel('A', false, { timeoutMs: 5000, holdMs: 200 }));
      await t.choir.post('/pause-producer', body);
      const silent = await Promise.all(waits);
      for (const [u, other] of [[b, 'C'], [c, 'B']]) {
        await eventually(`${u.name} getting producerPaused`, 3000, async () => {
          check((await u.state()).events.some((e) => e.type === 'producerPaused' && e.userId === 'A'), 'no producerPaused for A');
        });
        const heard = await u.listen(1000);
        check(heard.find((h) => h.userId === 'A')?.heardFraction === 0, `${u.name} still hears the paused A`, heard);
        const o = heard.find((h) => h.userId === other);
        check(o?.heardFraction >= HEARD_FRACTION && Math.abs(o.peakHz - tones[other]) <= HZ_TOLERANCE, `${u.name} stopped hearing ${other} while A is paused`, heard);
      }
      waits = [b, c].map((u) => u.waitLevel('A', true, { timeoutMs: 5000, holdMs: 100 }));
      await t.choir.post('/resume-producer', body);
      const back = await Promise.all(waits);
      await expectHears(b, { A: tones.A, C: tones.C });
      await expectHears(c, { A: tones.A, B: tones.B });
      t.measure('firefox pause-resume', `silent ${silent.map((x) => fmt(x, 0)).join('/')} ms after pause, back ${back.map((x) => fmt(x, 0)).join('/')} ms after resume`);
      await Promise.all([a.resetGaps(), b.resetGaps()]);

      // Leave and rejoin: A and B drop C's consumer, then hear the new C; C hears both.
      await c.leave();
      for (const u of [a, b]) {
        await eventually(`${u.name} dropping C's consumer after C left`, 5000, async () => {
          check(!(await u.state()).remotes.some((r) => r.userId === 'C'), 'still consuming C');
        });
      }
      await c.join({ api: t.choir.api, channelId: t.channel, userId: 'C', tone: tones.C });
      await expectAllHearAll([a, b, c], tones);
      for (const [u, other] of [[a, 'B'], [b, 'A']]) {
        const r = (await u.state()).remotes.find((x) => x.userId === other);
        check(r.maxGapMs < MAX_GAP_MS, `${u.name} lost ${other} for ${r.maxGapMs} ms while C came and went`, r);
        t.note(`${u.name} -> ${other}: longest silence ${r.maxGapMs} ms`);
      }
      for (const u of [a, b, c]) await u.leave();
      await expectEmpty(t);
    },
  },
];
