//! Generic NACK (RFC 4585 §6.2.1) on both legs of a voice stream.
//!
//! **Listener → choir.** A consumer that negotiated `nack` asks for packets it lost on its own
//! leg; choir answers from its producer's [`PacketHistory`](super::history::PacketHistory)
//! with the packet rewritten exactly as it was first sent (same SSRC, sequence number,
//! timestamp: audio has no RTX stream) and protected again (`Transport::resend_rtp`). A per-consumer [`Budget`] caps retransmissions
//! at half the stream's own packet rate, so that a NACK storm cannot multiply choir's output.
//!
//! **choir → speaker.** When a producer negotiated `nack`, its [`Gaps`] note the sequence
//! numbers missing from its stream; choir asks the speaker for one as soon as a later packet
//! shows it missing ([`REORDER_WAIT`] is zero), again every [`RETRY`] up to [`TRIES`] times. The retransmission arrives as a late packet and is forwarded like any other (the
//! consumers' sequence mapping keeps late packets in place). Driven by the producer's own
//! packets: no timer, nothing allocated.

use std::time::{Duration, Instant};

use super::{Egress, Sfu, TransportKey};
use crate::sfu::ortc::OPUS_PAYLOAD_TYPE;
use crate::wire::rtcp::{self, NackItems};
use crate::wire::rtp;

/// Retransmissions a consumer may get per second, and in one burst.
const RETRANSMIT_RATE: u32 = 25;
const RETRANSMIT_BURST: u32 = 25;

/// How long a sequence number must be missing before choir asks for it: none. A repair is of
/// use only if it reaches the listener before its jitter buffer plays that frame, and these
/// checks run on the producer's packets, so any wait here delayed the request to the next
/// packet (20 ms): with 15 ms the voice benchmark's 5 % and 10 % cases concealed 2.6–4.9 % of
/// their samples, with none 0.4–1.9 % (BENCHMARKS.md, "NACK at once"). A packet that
/// was only reordered then comes twice, and the second copy is dropped as an SRTP replay, as
/// libwebrtc's NACK for video does by default.
pub const REORDER_WAIT: Duration = Duration::ZERO;
/// Interval between two requests for the same packet (about a round trip; libwebrtc assumes
/// 100 ms before it knows one).
pub const RETRY: Duration = Duration::from_millis(100);
/// Requests for one packet before choir gives up.
pub const TRIES: u8 = 3;
/// Missing packets followed at once per producer; older ones are given up first.
const TRACKED: usize = 16;

/// A token bucket of retransmissions for one consumer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    /// Millionths of a token: a microsecond refills [`RETRANSMIT_RATE`] of them, exactly.
    micro: u32,
    at: Option<Instant>,
}

/// One token in [`Budget`]'s unit.
const TOKEN: u32 = 1_000_000;

impl Budget {
    /// Takes one retransmission's token, refilling at [`RETRANSMIT_RATE`] per second up to
    /// [`RETRANSMIT_BURST`]; whether there was one.
    pub fn take(&mut self, now: Instant) -> bool {
        let full = RETRANSMIT_BURST * TOKEN;
        let refill = match self.at {
            None => full,
            Some(at) => {
                let us = now.saturating_duration_since(at).as_micros();
                u32::try_from(us * u128::from(RETRANSMIT_RATE)).unwrap_or(full)
            }
        };
        self.micro = self.micro.saturating_add(refill).min(full);
        self.at = Some(now);
        if self.micro >= TOKEN {
            self.micro -= TOKEN;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u16,
    /// When the request is due (first after [`REORDER_WAIT`], then every [`RETRY`]).
    due: Instant,
    tries: u8,
}

/// The sequence numbers missing from one incoming stream, for the NACKs choir sends upstream.
#[derive(Clone, Debug, Default)]
pub struct Gaps {
    highest: Option<u16>,
    missing: [Option<Missing>; TRACKED],
}

/// What [`Gaps::on_packet`] learnt from a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// In order, or late but never asked for.
    Plain,
    /// A packet choir had asked for: the speaker's retransmission.
    Repaired,
}

impl Gaps {
    /// Notes a received packet: a jump ahead marks the numbers in between missing, a late
    /// packet is missing no more.
    pub fn on_packet(&mut self, seq: u16, now: Instant) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return Arrival::Plain;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return Arrival::Plain;
        }
        if ahead < 0x8000 {
            self.highest = Some(seq);
            if usize::from(ahead) > 100 {
                // A restart or a long outage: nothing worth asking for.
                self.missing = [None; TRACKED];
                return Arrival::Plain;
            }
            // Only the newest TRACKED numbers of a long gap are worth asking for.
            let first = ahead.saturating_sub(TRACKED as u16).max(1);
            for d in first..ahead {
                self.track(highest.wrapping_add(d), now + REORDER_WAIT);
            }
            return Arrival::Plain;
        }
        match self
            .missing
            .iter_mut()
            .find(|m| m.is_some_and(|m| m.seq == seq))
        {
            Some(slot) => {
                let tries = slot.take().map_or(0, |m| m.tries);
                if tries > 0 {
                    Arrival::Repaired
                } else {
                    Arrival::Plain
                }
            }
            None => Arrival::Plain,
        }
    }

    fn track(&mut self, seq: u16, due: Instant) {
        let slot = match self.missing.iter_mut().find(|m| m.is_none()) {
            Some(free) => free,
            // Full: the oldest (the one furthest behind the highest) gives way.
            None => {
                let highest = self.highest.unwrap_or(seq);
                self.missing
                    .iter_mut()
                    .max_by_key(|m| m.map_or(0, |m| highest.wrapping_sub(m.seq)))
                    .expect("TRACKED > 0")
            }
        };
        *slot = Some(Missing { seq, due, tries: 0 });
    }

    /// The numbers to ask for now, ascending from the oldest; each is asked for again after
    /// [`RETRY`] and dropped after [`TRIES`] requests. Writes them into `out`; returns how many.
    pub fn due(&mut self, now: Instant, out: &mut [u16; TRACKED]) -> usize {
        let mut n = 0;
        for slot in &mut self.missing {
            let Some(m) = slot else { continue };
            if m.due > now {
                continue;
            }
            out[n] = m.seq;
            n += 1;
            m.tries += 1;
            m.due = now + RETRY;
            if m.tries >= TRIES {
                // Asked for the last time: a retransmission still counts as plain.
                *slot = None;
            }
        }
        let highest = self.highest.unwrap_or(0);
        out[..n].sort_unstable_by_key(|&s| std::cmp::Reverse(highest.wrapping_sub(s)));
        n
    }
}

impl Sfu {
    /// A listener's NACK about consumer SSRC `media_ssrc` on transport `key`: retransmits what
    /// the history still holds, within the consumer's budget; counts everything else.
    pub(super) fn on_nack(
        &mut self,
        key: TransportKey,
        media_ssrc: u32,
        items: NackItems<'_>,
        now: Instant,
        out: &mut impl Egress,
    ) {
        let Sfu {
            transports,
            producers,
            consumers,
            counters,
            scratch,
            ..
        } = self;
        let Some(t) = transports.get_mut(key) else {
            return;
        };
        let Some(&ck) = t
            .consumers
            .iter()
            .find(|&&ck| consumers[ck].ssrc == media_ssrc)
        else {
            return counters.drop("nack", "unknown_ssrc");
        };
        counters.nacks_received += 1;
        let c = &mut consumers[ck];
        if !c.nack {
            return counters.drop("nack", "not_negotiated");
        }
        for out_seq in items.lost() {
            counters.nacked_packets += 1;
            let Some(seq) = c.sequence.source(out_seq) else {
                // Ahead of what was sent: not received yet; else from an earlier run or too far
                // behind.
                let ahead = c
                    .sequence
                    .last_sequence()
                    .is_none_or(|last| out_seq.wrapping_sub(last).wrapping_sub(1) < 0x7fff);
                counters.drop("nack", if ahead { "not_received" } else { "too_old" });
                continue;
            };
            let Some(history) = producers[c.producer].history.as_deref() else {
                counters.drop("nack", "not_received");
                continue;
            };
            let packet = match history.get(seq, now) {
                Ok(p) => p,
                Err(miss) => {
                    counters.drop("nack", miss.as_str());
                    continue;
                }
            };
            if !c.budget.take(now) {
                counters.drop("nack", "rate_limited");
                continue;
            }
            let Ok(header) = rtp::parse(packet) else {
                continue;
            };
            let Some((sequence, timestamp)) = c.sequence.remap(seq, header.timestamp) else {
                continue;
            };
            let len = packet.len();
            scratch[..len].copy_from_slice(packet);
            if let Err(e) = rtp::rewrite(
                &mut scratch[..len],
                &header,
                c.ssrc,
                OPUS_PAYLOAD_TYPE,
                sequence,
                timestamp,
                &c.extensions,
            ) {
                counters.drop("nack", e.as_str());
                continue;
            }
            if t.resend_rtp(&mut scratch[..], len, out, counters) {
                counters.rtp_retransmitted += 1;
            }
        }
    }

    /// Asks the speaker of producer `pk` for the packets its stream is missing, if any is due.
    pub(super) fn nack_upstream(&mut self, pk: usize, now: Instant, out: &mut impl Egress) {
        let p = &mut self.producers[pk];
        // A remote producer has no gaps: its own node asks its speaker.
        let (Some(gaps), Some(ssrc), super::Origin::Local(transport)) =
            (p.gaps.as_deref_mut(), p.ssrc, p.origin)
        else {
            return;
        };
        let mut due = [0u16; TRACKED];
        let n = gaps.due(now, &mut due);
        if n == 0 {
            return;
        }
        let Some(t) = self.transports.get_mut(transport) else {
            return;
        };
        let buf = &mut self.scratch[..];
        let Some(len) = rtcp::write_nack(buf, t.rtcp_ssrc, ssrc, due[..n].iter().copied()) else {
            return;
        };
        self.counters.nacks_sent += 1;
        t.send_rtcp(buf, len, out, &mut self.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_budget_refills_at_half_the_packet_rate() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, RETRANSMIT_BURST as usize);
        assert!(!b.take(t0));
        // One more every 40 ms, however often it is asked.
        for us in (0..40_000).step_by(300) {
            assert!(!b.take(t0 + Duration::from_micros(us)), "{us} µs");
        }
        assert!(b.take(t0 + ms(40)));
        // A storm over 10 s gets at most the rate.
        let mut sent = 0;
        for i in 0..10_000u64 {
            if b.take(t0 + ms(40 + i)) {
                sent += 1;
            }
        }
        assert!((249..=251).contains(&sent), "{sent}");
    }

    #[test]
    fn gaps_are_asked_for_at_once_then_retried_then_given_up() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        let mut due = [0u16; TRACKED];
        for seq in [100u16, 101, 104] {
            assert_eq!(g.on_packet(seq, t0), Arrival::Plain);
        }
        assert_eq!(REORDER_WAIT, Duration::ZERO);
        assert_eq!(g.due(t0, &mut due), 2);
        assert_eq!(due[..2], [102, 103]);
        // 102 comes back: repaired. 103 is asked for twice more, then given up.
        assert_eq!(g.on_packet(102, t0 + ms(30)), Arrival::Repaired);
        assert_eq!(g.due(t0 + ms(50), &mut due), 0);
        assert_eq!(g.due(t0 + REORDER_WAIT + RETRY, &mut due), 1);
        assert_eq!(due[0], 103);
        assert_eq!(g.due(t0 + REORDER_WAIT + 2 * RETRY, &mut due), 1);
        assert_eq!(g.due(t0 + REORDER_WAIT + 9 * RETRY, &mut due), 0);
        assert_eq!(g.on_packet(103, t0 + ms(500)), Arrival::Plain);
    }

    #[test]
    fn a_packet_back_before_its_request_is_not_asked_for_and_wraps_are_gaps_too() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        let mut due = [0u16; TRACKED];
        g.on_packet(65_534, t0);
        g.on_packet(1, t0);
        assert_eq!(g.on_packet(65_535, t0 + ms(5)), Arrival::Plain);
        assert_eq!(g.due(t0 + ms(100), &mut due), 1);
        assert_eq!(due[0], 0);
    }

    #[test]
    fn a_long_gap_tracks_its_newest_numbers_and_a_restart_none() {
        let t0 = Instant::now();
        let mut g = Gaps::default();
        let mut due = [0u16; TRACKED];
        g.on_packet(10, t0);
        g.on_packet(60, t0);
        assert_eq!(g.due(t0 + ms(20), &mut due), TRACKED);
        assert_eq!(due, std::array::from_fn(|i| 44 + i as u16));
        g.on_packet(5000, t0);
        assert_eq!(g.due(t0 + ms(500), &mut due), 0);
    }
}
