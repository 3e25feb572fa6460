// The scenarios of issue 3. Each gets `t` (see run.mjs): t.choir, t.user(name), t.channel,
// t.measure(name, text), t.options. Each asserts from the pages' getStats() and analysers.
import {
  eachInbound,
  expectHears,
  expectReceiving,
  receiveQuality,
  toneOf,
  waitHearing,
} from './lib/checks.mjs';
import { check, eventually, fmt, median, sleep } from './lib/util.mjs';
import { speakingScenarios } from './speaking.mjs';

/** Opens one tab per name and joins them one after the other (tone i for the i-th name). */
async function joinInOrder(t, names, tones = {}) {
  const users = [];
  for (const [i, name] of names.entries()) {
    const user = await t.user(name);
    await user.join({ api: t.choir.api, channelId: t.channel, userId: name, tone: tones[name] ?? toneOf(i) });
    users.push(user);
  }
  return users;
}

/** {userId: Hz} of everyone in `names` but `self`. */
function othersOf(names, self, tones) {
  return Object.fromEntries(names.filter((n) => n !== self).map((n) => [n, tones[n]]));
}

async function leaveAll(users) {
  for (const u of users) if (!u.closed) await u.leave();
}

/** After everyone left: choir holds no room, participant, transport or port. */
async function expectEmpty(t) {
  return eventually('choir empty after everyone left', 5000, async () => {
    const h = await t.choir.health();
    for (const k of ['rooms', 'participants', 'transports', 'producers', 'consumers', 'boundPorts']) {
      check(h[k] === 0, `GET /api/voice/health says ${k}: ${h[k]}`, h);
    }
    return h;
  });
}

/** The longest silence allowed between two users who keep talking. */
const MAX_GAP_MS = 500;
/** choir's --consent-timeout in this suite (run.mjs). */
const CONSENT_TIMEOUT_MS = 5000;

function inboundFrom(stats, userId) {
  return stats.consumers.find((c) => c.userId === userId)?.inbound[0] ?? { packetsReceived: 0 };
}

function events(state, type, userId) {
  return state.events.filter((e) => e.type === type && (userId === undefined || e.userId === userId));
}

export const scenarios = [
  {
    name: 'two-users',
    description: 'A joins, then B: both hear each other (A through the push channel)',
    timeoutMs: 60000,
    async run(t) {
      const tones = { A: toneOf(0), B: toneOf(1) };
      const [a] = await joinInOrder(t, ['A'], tones);
      const alone = await a.state();
      check(alone.remotes.length === 0, 'A, alone, consumes something', alone);
      const [b] = await joinInOrder(t, ['B'], tones);

      const sa = await waitHearing(a, ['B']);
      const sb = await waitHearing(b, ['A']);
      check(sa.remotes[0].source === 'push', `A consumed B via ${sa.remotes[0].source}, not the push channel`);
      check(sb.remotes[0].source === 'list', `B consumed A via ${sb.remotes[0].source}, not GET /producers`);
      check(events(sa, 'newProducer', 'B').length === 1, 'A got no newProducer event for B', sa.events);

      await expectHears(a, { B: tones.B }, 1500);
      await expectHears(b, { A: tones.A }, 1500);
      const stats = [await expectReceiving(a, ['B']), await expectReceiving(b, ['A'])];
      for (const [u, s] of [[a, stats[0]], [b, stats[1]]]) {
        check(s.send?.transport[0]?.dtlsState === 'connected', `${u.name}: send transport DTLS ${s.send?.transport[0]?.dtlsState}`, s.send);
        check(s.recv?.transport[0]?.dtlsState === 'connected', `${u.name}: recv transport DTLS ${s.recv?.transport[0]?.dtlsState}`, s.recv);
      }
      const q = receiveQuality(stats);
      t.measure('two-users receive', `jitter ${q.jitterMs.map((x) => fmt(x)).join(' / ')} ms, lost ${q.lost} of ${q.received + q.lost} (${fmt(q.lossPct, 2)}%)`);
      const counters = await t.choir.stats();
      t.measure('two-users choir counters', JSON.stringify(counters.total));

      await leaveAll([a, b]);
      await expectEmpty(t);
    },
  },
  {
    name: 'fake-mic',
    description: "B publishes getUserMedia's microphone (Chromium's fake capture: a WAV tone), as the plan's rtcService does",
    timeoutMs: 60000,
    async run(t) {
      const hz = t.options.fakeMicHz;
      const a = await t.user('A');
      await a.join({ api: t.choir.api, channelId: t.channel, userId: 'A', tone: toneOf(0) });
      const b = await t.user('B');
      await b.join({ api: t.choir.api, channelId: t.channel, userId: 'B', mic: true });
      await waitHearing(a, ['B']);
      await waitHearing(b, ['A']);
      // The fake device loops a 1 kHz WAV; a wrong path would give a live track of zeros.
      await expectHears(a, { B: hz }, 1500);
      await expectHears(b, { A: toneOf(0) }, 1500);
      // The router's Opus has usedtx=1: once the microphone's noise suppression has taken the
      // steady tone away, B's encoder sends DTX (~5 packets/s), so only a rise is required.
      await eachInbound(a, ['B'], 1000, (id, x, y) => {
        check(x.packetsReceived > y.packetsReceived, `A: inbound-rtp from ${id} did not rise in 1000 ms`, { before: y, after: x });
      });
      await leaveAll([a, b]);
      await expectEmpty(t);
    },
  },
  {
    name: 'five-users',
    description: 'five users join one after the other: each hears the four others, told apart by frequency',
    timeoutMs: 90000,
    async run(t) {
      await manyUsers(t, 5, { concurrent: false });
    },
  },
  {
    name: 'ten-users',
    description: 'ten users join at once: each hears the nine others, told apart by frequency',
    timeoutMs: 150000,
    async run(t) {
      await manyUsers(t, 10, { concurrent: true });
    },
  },
  {
    name: 'tcp-only',
    description: 'UDP blocked (choir offers only passive TCP candidates): three users hear each other over ICE-TCP',
    choirArgs: ['--enable-udp', 'false'],
    timeoutMs: 90000,
    async run(t) {
      await manyUsers(t, 3, { concurrent: false, protocol: 'tcp' });
    },
  },
  {
    name: 'single-port',
    description: 'choir in single-port mode (one UDP and one TCP port per shard): four users hear each other',
    choirArgs: ['--port-mode', 'single'],
    timeoutMs: 90000,
    async run(t) {
      await manyUsers(t, 4, { concurrent: true, protocol: 'udp' });
    },
  },
  {
    name: 'rejoin',
    description: 'C leaves and rejoins 10 times while A and B keep talking; A and B never lose each other',
    timeoutMs: 180000,
    async run(t) {
      const tones = { A: toneOf(0), B: toneOf(1), C: toneOf(2) };
      const [a, b] = await joinInOrder(t, ['A', 'B'], tones);
      await waitHearing(a, ['B']);
      await waitHearing(b, ['A']);
      await Promise.all([a.resetGaps(), b.resetGaps()]);
      const c = await t.user('C');
      const rounds = 10;
      const heardAfter = [];
      for (let i = 1; i <= rounds; i++) {
        await c.join({ api: t.choir.api, channelId: t.channel, userId: 'C', tone: tones.C });
        await waitHearing(c, ['A', 'B']);
        for (const u of [a, b]) {
          const s = await waitHearing(u, ['C']);
          heardAfter.push(s.remotes.find((r) => r.userId === 'C').heardAfterAddMs);
        }
        await expectHears(c, { A: tones.A, B: tones.B }, 500);
        await c.leave();
        for (const u of [a, b]) {
          await eventually(`${u.name} dropping C's consumer after C left (round ${i})`, 5000, async () => {
            const s = await u.state();
            check(!s.remotes.some((r) => r.userId === 'C'), 'still consuming C');
          });
        }
        const h = await t.choir.health();
        check(h.participants === 2, `round ${i}: GET /health says ${h.participants} participants after C left`, h);
      }
      for (const [u, other] of [[a, 'B'], [b, 'A']]) {
        const s = await u.state();
        const r = s.remotes.find((x) => x.userId === other);
        check(r, `${u.name} lost its consumer of ${other}`, s);
        const gap = Math.max(r.maxGapMs, r.silentForMs ?? Infinity);
        check(gap < MAX_GAP_MS, `${u.name} lost ${other} for ${gap} ms while C came and went`, r);
        const cs = s.closed.filter((x) => x.userId === 'C');
        check(cs.length === rounds, `${u.name} consumed C ${cs.length} times, expected ${rounds}`, s.closed);
        check(!s.errors.length, `${u.name} logged errors: ${s.errors.join('; ')}`);
        t.note(`${u.name} -> ${other}: longest silence ${r.maxGapMs} ms over ${rounds} rounds`);
      }
      t.measure('rejoin', `A/B heard the rejoining C ${fmt(median(heardAfter), 0)} ms (median) after consuming it`);
      await expectHears(a, { B: tones.B });
      await expectHears(b, { A: tones.A });
      await leaveAll([a, b]);
      await expectEmpty(t);
    },
  },
  {
    name: 'pause-resume',
    description: "POST /pause-producer and /resume-producer: the receivers' audio of A stops and comes back",
    timeoutMs: 90000,
    async run(t) {
      const names = ['A', 'B', 'C'];
      const tones = { A: toneOf(0), B: toneOf(1), C: toneOf(2) };
      const [a, b, c] = await joinInOrder(t, names, tones);
      for (const u of [a, b, c]) await waitHearing(u, names.filter((n) => n !== u.name));
      const { producerId } = await a.state();
      const body = { channelId: t.channel, userId: 'A', producerId };
      const timings = { silent: [], back: [] };
      for (let round = 1; round <= 2; round++) {
        // Pause: B and C stop hearing A (and only A); A's browser keeps sending.
        let waits = [b, c].map((u) => u.waitLevel('A', false, { timeoutMs: 5000, holdMs: 200 }));
        await t.choir.post('/pause-producer', body);
        timings.silent.push(...(await Promise.all(waits)));
        for (const u of [b, c]) {
          await eventually(`${u.name} getting producerPaused`, 3000, async () => {
            const n = events(await u.state(), 'producerPaused', 'A').length;
            check(n === round, `${n} producerPaused events for A`);
          });
        }
        const before = await Promise.all([a.stats(), b.stats(), c.stats()]);
        const heard = await Promise.all([b.listen(1000), c.listen(1000)]);
        const after = await Promise.all([a.stats(), b.stats(), c.stats()]);
        for (const [i, u] of [[0, b], [1, c]]) {
          const h = heard[i].find((x) => x.userId === 'A');
          check(h && h.heardFraction === 0, `${u.name} still hears the paused A (level up to ${h?.maxLevel})`, heard[i]);
          const other = u === b ? 'C' : 'B';
          const o = heard[i].find((x) => x.userId === other);
          check(o?.heardFraction >= 0.9 && Math.abs(o.peakHz - tones[other]) <= 15, `${u.name} stopped hearing ${other} while A is paused`, heard[i]);
          const rise = inboundFrom(after[i + 1], 'A').packetsReceived - inboundFrom(before[i + 1], 'A').packetsReceived;
          check(rise <= 2, `${u.name} received ${rise} packets from the paused A`);
        }
        const sent = after[0].producer.outbound[0].packetsSent - before[0].producer.outbound[0].packetsSent;
        check(sent >= 40, `A's browser sent only ${sent} packets while paused: the pause must be choir's`);

        // Resume: A is back, at its frequency.
        waits = [b, c].map((u) => u.waitLevel('A', true, { timeoutMs: 5000, holdMs: 100 }));
        await t.choir.post('/resume-producer', body);
        timings.back.push(...(await Promise.all(waits)));
        for (const u of [b, c]) {
          await eventually(`${u.name} getting producerResumed`, 3000, async () => {
            const n = events(await u.state(), 'producerResumed', 'A').length;
            check(n === round, `${n} producerResumed events for A`);
          });
        }
        await expectHears(b, { A: tones.A, C: tones.C });
        await expectHears(c, { A: tones.A, B: tones.B });
        await expectReceiving(b, ['A']);
      }
      t.measure('pause-resume', `silent ${timings.silent.map((x) => fmt(x, 0)).join('/')} ms after pause, audio back ${timings.back.map((x) => fmt(x, 0)).join('/')} ms after resume`);
      await leaveAll([a, b, c]);
      await expectEmpty(t);
    },
  },
  {
    name: 'tab-close',
    description: 'C closes its tab without leaving: choir drops C after the consent timeout, the others get participantLeft',
    timeoutMs: 60000,
    async run(t) {
      const names = ['A', 'B', 'C'];
      const tones = { A: toneOf(0), B: toneOf(1), C: toneOf(2) };
      const [a, b, c] = await joinInOrder(t, names, tones);
      for (const u of [a, b, c]) await waitHearing(u, names.filter((n) => n !== u.name));
      const h0 = await t.choir.health();
      check(h0.participants === 3 && h0.subscribers === 3, 'GET /health before the tab closes', h0);
      const closedAt = Date.now();
      await c.closeTab();
      const seen = [];
      for (const u of [a, b]) {
        const ev = await eventually(`${u.name} getting participantLeft for C`, CONSENT_TIMEOUT_MS + 10000, async () => {
          const e = events(await u.state(), 'participantLeft', 'C');
          check(e.length === 1, `${e.length} participantLeft events for C`);
          return e[0];
        }, 100);
        seen.push({ user: u.name, ms: Date.now() - closedAt, reason: ev.reason });
        const s = await u.state();
        check(!s.remotes.some((r) => r.userId === 'C'), `${u.name} still consumes C`);
      }
      const h = await eventually('choir dropping C', 3000, async () => {
        const x = await t.choir.health();
        check(x.participants === 2 && x.transports === 4 && x.consumers === 2 && x.subscribers === 2, 'GET /health after C was dropped', x);
        return x;
      });
      t.measure('tab-close', `participantLeft ${seen.map((x) => `at ${x.user} after ${fmt(x.ms / 1000, 1)} s (reason "${x.reason}")`).join(', ')}; consent timeout ${CONSENT_TIMEOUT_MS / 1000} s`);
      t.note(`health after: ${JSON.stringify(h)}`);
      await expectHears(a, { B: tones.B });
      await expectHears(b, { A: tones.A });
      await leaveAll([a, b]);
      await expectEmpty(t);
    },
  },
  {
    name: 'first-audio',
    description: 'time from the first API call to the first audio at the receiver, 10 joins (median)',
    timeoutMs: 120000,
    async run(t) {
      const a = await t.user('A');
      const b = await t.user('B');
      const firstAudio = [];
      const joins = [];
      for (let i = 0; i < 10; i++) {
        const channelId = `${t.channel}-${i}`;
        await a.join({ api: t.choir.api, channelId, userId: 'A', tone: toneOf(0) });
        const j = await b.join({ api: t.choir.api, channelId, userId: 'B', tone: toneOf(1) });
        const s = await waitHearing(b, ['A']);
        firstAudio.push(s.remotes[0].firstHeardMs);
        joins.push(j.joinMs);
        await waitHearing(a, ['B']);
        await b.leave();
        await a.leave();
      }
      t.measure(
        'first audio (B joins, hears A)',
        `median ${fmt(median(firstAudio), 0)} ms, min ${fmt(Math.min(...firstAudio), 0)}, max ${fmt(Math.max(...firstAudio), 0)} (join flow alone: median ${fmt(median(joins), 0)} ms)`,
      );
      await expectEmpty(t);
    },
  },
  ...speakingScenarios,
];

/** The protocol ("udp", "tcp") of a candidate pair's remote candidate. */
function pairProtocol(stats, pair) {
  return stats?.candidates?.[pair?.remote]?.split(' ')[1];
}

/** The protocol ("udp", "tcp") of the remote candidate of a transport's selected pair. */
function selectedProtocol(stats) {
  const transport = stats?.transport?.[0];
  return pairProtocol(stats, stats?.pairs?.find((p) => p.id === transport?.selectedCandidatePairId));
}

/** `n` users in one room; every one must hear every other one at its frequency. */
async function manyUsers(t, n, { concurrent, protocol }) {
  const names = Array.from({ length: n }, (_, i) => `U${i}`);
  const tones = Object.fromEntries(names.map((name, i) => [name, toneOf(i)]));
  let users;
  if (concurrent) {
    users = [];
    for (const name of names) users.push(await t.user(name));
    const started = Date.now();
    await Promise.all(users.map((u) => u.join({ api: t.choir.api, channelId: t.channel, userId: u.name, tone: tones[u.name] }, 40000)));
    t.note(`${n} concurrent joins took ${Date.now() - started} ms`);
  } else {
    users = await joinInOrder(t, names, tones);
  }
  // Ten Chromium renderers with nine decoders each saturate a 2-core machine: give the slowest
  // page time to catch up (it is polled; a page that hears everyone passes at once).
  await Promise.all(users.map((u) => waitHearing(u, names.filter((x) => x !== u.name), Math.max(20000, 4000 * n))));
  await Promise.all(users.map((u) => expectHears(u, othersOf(names, u.name, tones), 2000)));
  const snaps = await Promise.all(users.map((u) => expectReceiving(u, names.filter((x) => x !== u.name))));
  if (protocol) {
    // Chromium picks the pair and choir follows its latest nomination. In 3 of 7 full suite
    // runs on the 2-core machine (2026-12-01) a page selected its TCP pair although its UDP pair
    // had succeeded (and in one, been nominated) too; why is not yet known (a page starved of
    // CPU missing Chromium's receiving timeout is a guess). What choir controls is checked:
    // every transport has a pair over `protocol` that choir answered; a selection elsewhere is
    // noted.
    for (const [u, s] of users.map((u, i) => [u, snaps[i]])) {
      for (const side of ['send', 'recv']) {
        const got = selectedProtocol(s[side]);
        if (got === protocol) continue;
        const answered = s[side]?.pairs?.some(
          (p) => p.state === 'succeeded' && p.responsesReceived > 0 && pairProtocol(s[side], p) === protocol,
        );
        check(answered, `${u.name}: ${side} transport has no succeeded ${protocol} pair (selected: ${got})`, s[side]);
        t.note(`${u.name}: ${side} transport selected its ${got} pair; its ${protocol} pair succeeded too`);
      }
    }
  }
  const q = receiveQuality(snaps);
  t.measure(
    `${n}-user receive (${q.streams} streams)`,
    `jitter median ${fmt(median(q.jitterMs))} ms, max ${fmt(Math.max(...q.jitterMs))} ms; lost ${q.lost} of ${q.lost + q.received} (${fmt(q.lossPct, 2)}%)`,
  );
  for (const u of users) {
    const s = await u.state();
    check(!s.errors.length, `${u.name} logged errors: ${s.errors.join('; ')}`);
  }
  await leaveAll(users);
  await expectEmpty(t);
}
