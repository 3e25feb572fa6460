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
];
