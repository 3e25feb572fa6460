// Assertions on what a page hears, from its analysers and its own getStats().
import { check, eventually, sleep } from './util.mjs';

/** Largest distance (Hz) between a sender's tone and the FFT peak heard. */
export const HZ_TOLERANCE = 15;
/** Share of the samples in which each expected remote track must be above the level threshold. */
export const HEARD_FRACTION = 0.9;

/** The tone of the i-th user: 400, 530, 660, ... Hz (no two within 2x the tolerance). */
export const toneOf = (i) => 400 + 130 * i;

/**
 * `user` hears exactly the users of `expected` ({userId: Hz}), each most of the time and at its
 * frequency, over `ms`.
 */
export async function expectHears(user, expected, ms = 1000) {
  const heard = await user.listen(ms);
  const byUser = new Map(heard.map((h) => [h.userId, h]));
  for (const [userId, hz] of Object.entries(expected)) {
    const h = byUser.get(userId);
    check(h, `${user.name} has no track from ${userId}`, { heard });
    check(
      h.heardFraction >= HEARD_FRACTION,
      `${user.name} hears ${userId} only ${(h.heardFraction * 100).toFixed(0)}% of the time (level ${h.minLevel}..${h.maxLevel})`,
      { heard },
    );
    check(
      Math.abs(h.peakHz - hz) <= HZ_TOLERANCE,
      `${user.name} hears ${userId} at ${h.peakHz} Hz, expected ${hz} Hz`,
      { heard },
    );
  }
  const extra = heard.filter((h) => !(h.userId in expected));
  check(!extra.length, `${user.name} has unexpected tracks from ${extra.map((h) => h.userId)}`, { heard });
  return heard;
}

/** Waits until `user` has a track from each of `userIds` and has heard each one. */
export async function waitHearing(user, userIds, ms = 10000) {
  return eventually(`${user.name} hearing ${userIds.join(', ')}`, ms, async () => {
    const s = await user.state();
    for (const id of userIds) {
      const r = s.remotes.find((x) => x.userId === id);
      check(r, `no consumer for ${id} (errors: ${s.errors.join('; ') || 'none'})`);
      check(r.firstHeardMs !== null, `consumer for ${id} is silent (level ${r.level})`);
    }
    return s;
  });
}

/**
 * From `user`'s getStats(): each consumer's inbound-rtp packetsReceived rises over `ms` and its
 * audioLevel is above zero. Returns the later snapshot.
 */
export async function expectReceiving(user, userIds, ms = 1000) {
  return eachInbound(user, userIds, ms, (id, a, b) => {
    const rise = a.packetsReceived - b.packetsReceived;
    check(rise >= (ms / 20) * 0.8, `${user.name}: inbound-rtp from ${id} rose by ${rise} packets in ${ms} ms`, { before: b, after: a });
  });
}

/**
 * Takes `user`'s getStats() twice, `ms` apart; for each of `userIds` (in order) checks that its
 * consumer has inbound-rtp stats in both, calls `inspect(id, after, before)` with them, and
 * checks that the later audioLevel is above zero. Returns the later snapshot.
 */
export async function eachInbound(user, userIds, ms, inspect) {
  const before = await user.stats();
  await sleep(ms);
  const after = await user.stats();
  for (const id of userIds) {
    const a = after.consumers.find((c) => c.userId === id)?.inbound[0];
    const b = before.consumers.find((c) => c.userId === id)?.inbound[0];
    check(a && b, `${user.name}: no inbound-rtp stats for ${id}`, { after });
    inspect(id, a, b);
    check(a.audioLevel > 0, `${user.name}: inbound-rtp audioLevel from ${id} is ${a.audioLevel}`, { after: a });
  }
  return after;
}

/** Jitter (ms) and loss of every inbound stream in the given stats snapshots. */
export function receiveQuality(snapshots) {
  const jitterMs = [];
  let lost = 0;
  let received = 0;
  for (const snap of snapshots) {
    for (const c of snap.consumers) {
      for (const s of c.inbound) {
        jitterMs.push(s.jitter * 1000);
        lost += Math.max(0, s.packetsLost);
        received += s.packetsReceived;
      }
    }
  }
  return { streams: jitterMs.length, jitterMs, lost, received, lossPct: (100 * lost) / Math.max(1, lost + received) };
}
