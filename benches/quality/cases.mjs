// The benchmark's cases: which system (P2P, or a choir build), what each leg does, which browser
// listens. Every leg has the same base delay (a one-way 30 ms, i.e. 120 ms round trip through
// both legs); "both legs" means the uplink (speaker ↔ SFU) and the downlink (SFU ↔ listener) each
// lose that share, so end to end about 1 - (1 - p)² is lost before any repair. P2P runs on the
// same two legs in series.

/** One-way delay of each leg (ms). */
export const LEG_DELAY_MS = 30;

const leg = (loss = 0, extra = {}) => ({ loss, delayMs: LEG_DELAY_MS, ...extra });
const bursty = (loss) => leg(loss, { burst: { badLoss: 0.75, badMeanPackets: 4 } });

/** Network conditions: name → { up, down, label }. */
export const NETWORKS = {
  loss0: { label: '0 %', up: leg(0), down: leg(0) },
  loss5: { label: '5 %', up: leg(0.05), down: leg(0.05) },
  loss10: { label: '10 %', up: leg(0.1), down: leg(0.1) },
  loss20: { label: '20 %', up: leg(0.2), down: leg(0.2) },
  bursty10: { label: 'bursty 10 %', up: bursty(0.1), down: bursty(0.1) },
  jitter30: { label: 'jitter ±30 ms', up: leg(0, { jitterMs: 30 }), down: leg(0, { jitterMs: 30 }) },
  up10: { label: 'uplink 10 %', up: leg(0.1), down: leg(0) },
  down10: { label: 'downlink 10 %', up: leg(0), down: leg(0.1) },
};

/**
 * The matrix: `systems` is [{ name: 'p2p', p2p: true, nack? } | { name: 'choir-before', bin, redSpeaker? }]
 * (`redSpeaker`: the speaker on choir's try-it client, sending RED, instead of the plan's flow); quick: a few
 * cases only. A P2P call has no uplink/downlink distinction (both legs in series), so it runs
 * one of the two one-leg cases.
 */
export function matrix(systems, { quick = false, firefox = true } = {}) {
  const cases = [];
  const nets = quick ? ['loss0', 'loss10'] : Object.keys(NETWORKS);
  for (const s of systems) {
    for (const net of nets) {
      if (s.p2p && net === 'down10') continue;
      cases.push(makeCase(s, net, 'chromium'));
    }
  }
  // Firefox never NACKs audio: no P2P+NACK case for it.
  if (firefox) for (const s of systems) if (!s.nack) cases.push(makeCase(s, 'loss10', 'firefox'));
  return cases;
}

export function makeCase(system, net, listener = 'chromium', extra = {}) {
  const n = NETWORKS[net];
  return {
    name: `${system.name}/${net}${listener === 'firefox' ? '/firefox' : ''}`,
    system: system.p2p ? 'p2p' : 'choir',
    p2pNack: system.nack ?? false,
    systemName: system.name,
    bin: system.bin,
    redSpeaker: system.redSpeaker ?? false,
    net,
    netLabel: n.label,
    up: n.up,
    down: n.down,
    listener,
    ...extra,
  };
}
