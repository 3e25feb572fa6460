// The scenarios of issue 3. Each gets `t` (see run.mjs): t.choir, t.user(name), t.channel,
// t.measure(name, text), t.options. Each asserts from the pages' getStats() and analysers.
import {
  expectHears,
  expectReceiving,
  receiveQuality,
  toneOf,
  waitHearing,
} from './lib/checks.mjs';
import { check, eventually, fmt, median, sleep } from './lib/util.mjs';

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
      await expectReceiving(a, ['B']);
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
];

/** `n` users in one room; every one must hear every other one at its frequency. */
async function manyUsers(t, n, { concurrent }) {
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
  await Promise.all(users.map((u) => waitHearing(u, names.filter((x) => x !== u.name), 20000)));
  await Promise.all(users.map((u) => expectHears(u, othersOf(names, u.name, tones), 2000)));
  const snaps = await Promise.all(users.map((u) => expectReceiving(u, names.filter((x) => x !== u.name))));
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
