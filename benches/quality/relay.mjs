// An impairing UDP relay for browser calls (this kernel has no netem), seeded so that a run can
// be repeated: random loss, Gilbert–Elliott (bursty) loss, a one-way delay with jitter, in both
// directions. The same design as tests/common/impair.rs, in Node so that the browser driver
// (and a browser test) can start it in-process.
//
// A *bridge* is one relay socket between two endpoints: `target` (choir's candidate, or a P2P
// peer's host candidate) and a peer learned from the first datagram that does not come from the
// target (nor from an `exclude`d address: the target side's other candidates). The page puts the
// bridge's address in place of the target's candidate, so every datagram of that ICE pair goes
// through it, and both ends see the relay's address as the other's. Datagrams from any third
// address (the peer's other candidates) are dropped and counted (`strays`): a bridge carries
// exactly one ICE candidate pair, so media never lands on a socket the browser did not select. A bridge applies a *chain* of stages (one per network leg it stands for: the choir
// uplink or downlink leg, or both of them in series for a direct P2P call), each with its own
// impairment, in each direction.
//
// Determinism: the fate of an RTP packet is a function of (seed, stage, direction, the SSRC's
// order of appearance on the bridge, the packet's index from the first sequence number seen,
// how many times that sequence number was seen before) alone, so it does not depend on timing,
// and a retransmission (same sequence number) draws again. Gilbert–Elliott states are a chain
// over the packet index. Other datagrams (STUN, DTLS, RTCP) draw from a seeded stream per stage
// and direction, at the stage's mean loss.
import { createSocket } from 'node:dgram';

/** 32-bit mixing (murmur3's finalizer) of a list of integers: uniform in [0, 1). */
export function draw(...ints) {
  let h = 0x9e3779b9;
  for (const v of ints) {
    h = Math.imul(h ^ (v >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return (h >>> 0) / 4294967296;
}

/** A seeded stream of uniform numbers in [0, 1). */
function stream(...key) {
  let n = 0;
  return () => draw(...key, n++);
}

/**
 * What one network leg does to a datagram, each direction alike.
 * - `loss`: probability of a drop (independent), or, with `burst`, the mean loss;
 * - `burst`: `{ badLoss, badMeanPackets }`: a Gilbert–Elliott chain whose bad state loses
 *   `badLoss` of the packets and lasts `badMeanPackets` on average; the good state loses none;
 *   the chance to enter the bad state is derived so that the mean loss is `loss`;
 * - `delayMs` one-way, `jitterMs`: each datagram's delay is uniform in
 *   [delayMs - jitterMs, delayMs + jitterMs] (at least 0), but never earlier than the one sent
 *   before it in the same direction (a queue: no reordering) unless `reorder`.
 */
export function impairment({ loss = 0, burst = null, delayMs = 0, jitterMs = 0, reorder = false } = {}) {
  let ge = null;
  if (burst) {
    const r = 1 / burst.badMeanPackets; // bad → good
    const piBad = loss / burst.badLoss;
    if (!(piBad > 0 && piBad < 1)) throw new Error(`Gilbert–Elliott: mean loss ${loss} is not reachable with bad-state loss ${burst.badLoss}`);
    ge = { p: (r * piBad) / (1 - piBad), r, badLoss: burst.badLoss };
  }
  return { loss, ge, delayMs, jitterMs, reorder };
}

function classify(d) {
  const b0 = d[0];
  if (b0 >= 20 && b0 <= 63) return { kind: 'dtls' };
  if (b0 >= 128 && b0 <= 191 && d.length >= 12) {
    if (d[1] >= 192 && d[1] <= 223) return { kind: 'rtcp' };
    return { kind: 'rtp', seq: d.readUInt16BE(2), ssrc: d.readUInt32BE(8), pt: d[1] & 0x7f };
  }
  if (b0 < 2) return { kind: 'stun' };
  return { kind: 'other' };
}

/** Per bridge direction: packet indices by SSRC, and the stage's Gilbert–Elliott states. */
class RtpTrack {
  constructor(ordinal) {
    this.ordinal = ordinal;
    this.first = null;
    this.ext = null; // last extended sequence number
    this.seen = new Map(); // index -> times seen
  }

  /** Index of `seq` from the first sequence number, unwrapped around the last one seen. */
  index(seq) {
    if (this.first === null) {
      this.first = seq;
      this.ext = seq;
      return 0;
    }
    let delta = (seq - (this.ext & 0xffff) + 0x10000) & 0xffff;
    if (delta >= 0x8000) delta -= 0x10000;
    const ext = this.ext + delta;
    if (ext > this.ext) this.ext = ext;
    return ext - this.first;
  }
}

/** One relay socket; see the file's comment. */
class Bridge {
  constructor(relay, id, socket, target, chain, name, exclude = []) {
    this.relay = relay;
    this.id = id;
    this.socket = socket;
    this.target = target;
    this.chain = chain;
    this.name = name;
    this.peer = null;
    this.exclude = new Set(exclude.map((a) => `${a.ip}:${a.port}`));
    this.strays = 0;
    this.strayFrom = new Set();
    this.opened = performance.now();
    this.lastDue = [0, 0];
    this.tracks = [new Map(), new Map()];
    this.ge = chain.map(() => [new Map(), new Map()]); // stage -> dir -> ssrc ordinal -> states
    this.streams = chain.map((_, s) => [stream(relay.seed, id, s, 0), stream(relay.seed, id, s, 1)]);
    // rtpRepeats: RTP packets whose sequence number this direction carried before (a
    // retransmission), rtpRepeatsDropped: those of them that the legs dropped.
    this.tap = [0, 1].map(() => ({ datagrams: 0, dropped: 0, rtp: 0, rtpBytes: 0, rtpDropped: 0, rtpRepeats: 0, rtpRepeatsDropped: 0, rtpPadded: 0, stun: 0, stunDropped: 0, stunLog: [], streams: {}, delivered: 0, lateMs: 0, maxLateMs: 0, late5ms: 0 }));
    socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
  }

  get address() {
    const a = this.socket.address();
    return { ip: a.address, port: a.port };
  }

  onMessage(msg, rinfo) {
    const fromTarget = rinfo.address === this.target.ip && rinfo.port === this.target.port;
    let dir;
    let to;
    if (fromTarget) {
      if (!this.peer) return; // nothing to send it to yet
      dir = 1;
      to = this.peer;
    } else {
      if (!this.peer && !this.exclude.has(`${rinfo.address}:${rinfo.port}`)) this.peer = { ip: rinfo.address, port: rinfo.port };
      if (!this.peer || rinfo.address !== this.peer.ip || rinfo.port !== this.peer.port) {
        this.strays++;
        this.strayFrom.add(`${rinfo.address}:${rinfo.port}`);
        return;
      }
      dir = 0;
      to = this.target;
    }
    const tap = this.tap[dir];
    tap.datagrams++;
    const c = classify(msg);
    let track = null;
    let index = 0;
    let times = 0;
    if (c.kind === 'rtp') {
      tap.rtp++;
      tap.rtpBytes += msg.length;
      const k = `${c.ssrc}/${c.pt}`;
      tap.streams[k] = (tap.streams[k] ?? 0) + 1;
      if (msg[0] & 0x20) tap.rtpPadded++;
      let t = this.tracks[dir].get(c.ssrc);
      if (!t) this.tracks[dir].set(c.ssrc, (t = new RtpTrack(this.tracks[dir].size)));
      track = t;
      index = t.index(c.seq);
      times = t.seen.get(index) ?? 0;
      t.seen.set(index, times + 1);
      if (times > 0) tap.rtpRepeats++;
      if (t.seen.size > 4096) t.seen.delete(t.seen.keys().next().value);
    }
    if (c.kind === 'stun') tap.stun++;
    let delay = 0;
    for (let s = 0; s < this.chain.length; s++) {
      const imp = this.chain[s];
      if (this.drops(s, dir, imp, track, index, times)) {
        tap.dropped++;
        if (track) tap.rtpDropped++;
        if (track && times > 0) tap.rtpRepeatsDropped++;
        if (c.kind === 'stun') this.logStun(tap, msg, true);
        return;
      }
      const u = this.streams[s][dir]();
      delay += Math.max(0, imp.delayMs + (2 * u - 1) * imp.jitterMs);
    }
    if (c.kind === 'stun') this.logStun(tap, msg, false);
    const now = performance.now();
    let due = now + delay;
    if (!this.chain.some((imp) => imp.reorder)) due = Math.max(due, this.lastDue[dir]);
    this.lastDue[dir] = due;
    const send = () => {
      const late = performance.now() - due;
      if (late > 0) {
        tap.lateMs += late;
        tap.maxLateMs = Math.max(tap.maxLateMs, late);
        if (late > 5) tap.late5ms++;
      }
      if (this.closed) return;
      tap.delivered++;
      this.socket.send(msg, to.port, to.ip, (e) => {
        if (e) tap.sendErrors = (tap.sendErrors ?? 0) + 1;
      });
    };
    if (due <= now) send();
    else setTimeout(send, due - now);
  }

  /** The last STUN datagrams of a direction: when (ms since the bridge opened), type, fate. */
  logStun(tap, msg, dropped) {
    if (dropped) tap.stunDropped++;
    tap.stunLog.push({ ms: Math.round(performance.now() - this.opened), type: msg.readUInt16BE(0).toString(16), dropped });
    if (tap.stunLog.length > 64) tap.stunLog.shift();
  }

  drops(stage, dir, imp, track, index, times) {
    if (imp.loss <= 0) return false;
    if (!track) return this.streams[stage][dir]() < imp.loss;
    const key = [this.relay.seed, this.id, stage, dir, track.ordinal];
    if (!imp.ge) return draw(...key, index, times) < imp.loss;
    const states = this.ge[stage][dir];
    let chain = states.get(track.ordinal);
    if (!chain) states.set(track.ordinal, (chain = []));
    // The state of packet i follows from packet i-1's with a draw keyed on i.
    while (chain.length <= index) {
      const i = chain.length;
      const prevBad = i > 0 && chain[i - 1];
      const u = draw(...key, i, 0x6e);
      chain.push(prevBad ? u >= imp.ge.r : u < imp.ge.p);
    }
    return chain[index] && draw(...key, index, times) < imp.ge.badLoss;
  }

  close() {
    this.closed = true;
    return new Promise((resolve) => this.socket.close(resolve));
  }
}

/**
 * Starts a relay. `seed`: the run's seed; `ip`: the address its sockets bind; `ports`: a
 * function returning the next port to bind (outside the kernel's ephemeral range: see
 * tests/browser/lib/ports.mjs), or null for the kernel's choice.
 */
export function startRelay({ seed = 1, ip = '127.0.0.1', ports = null } = {}) {
  const bridges = [];
  const relay = {
    seed,
    ip,
    bridges,
    /**
     * A bridge to `target` ({ ip, port }) applying `chain` (a list of impairment()s, in series);
     * `exclude`: addresses that are never the peer. Resolves to the bridge (its `address` is
     * what the peer must send to).
     */
    async bridge(target, chain, name = `bridge${bridges.length}`, exclude = []) {
      for (let attempt = 0; ; attempt++) {
        const socket = createSocket('udp4');
        const port = ports ? ports() : 0;
        try {
          await new Promise((resolve, reject) => {
            socket.once('error', reject);
            socket.bind({ port, address: ip, exclusive: true }, resolve);
          });
        } catch (e) {
          socket.close();
          if (attempt < 20 && ports) continue;
          throw e;
        }
        const b = new Bridge(relay, bridges.length + 1, socket, target, chain, name, exclude);
        bridges.push(b);
        return b;
      }
    },
    /** What each bridge saw, per direction (0: peer → target, 1: target → peer). */
    taps() {
      return bridges.map((b) => ({ name: b.name, target: b.target, peer: b.peer, strays: b.strays, strayFrom: [...b.strayFrom], toTarget: structuredClone(b.tap[0]), fromTarget: structuredClone(b.tap[1]) }));
    },
    async close() {
      await Promise.all(bridges.map((b) => b.close()));
    },
  };
  return relay;
}
