//! Receive statistics of one incoming RTP stream (RFC 3550 A.1, A.3, A.8), for the report
//! blocks choir sends about producer streams.

use std::time::{Duration, Instant};

use super::report::ReportBlock;

/// Largest forward jump taken as loss rather than a restart (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// Largest backward distance taken as reordering rather than a restart (RFC 3550 A.1).
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: i64 = 1 << 16;

/// Sequence-number state (RFC 3550 A.1), with the counters of A.3.
#[derive(Debug, Clone, Copy)]
struct Sequence {
    max_seq: u16,
    /// Wrap-arounds seen, times 2^16.
    cycles: i64,
    /// Extended sequence number of the first packet (lowered by reordered earlier packets).
    base: i64,
    /// The sequence number that, if it comes next, confirms a restart.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    /// Relative transit time of the last in-order packet, in timestamp units (A.8).
    transit: u32,
}

impl Sequence {
    fn start(seq: u16, transit: u32) -> Self {
        Self {
            max_seq: seq,
            cycles: 0,
            base: i64::from(seq),
            bad_seq: None,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            transit,
        }
    }

    fn extended_max(&self) -> i64 {
        self.cycles + i64::from(self.max_seq)
    }

    fn expected(&self) -> i64 {
        self.extended_max() - self.base + 1
    }
}

/// RFC 3550 A.1/A.3/A.8 receive statistics for one incoming stream: loss, fraction lost,
/// extended highest sequence number, interarrival jitter and the LSR/DLSR echo.
///
/// Counting starts at the first packet (no probation: the stream is known from signaling and
/// authenticated by SRTP). As in A.1, a jump of more than 3000 ahead or 100 behind is ignored
/// unless the next packet follows it, which restarts the statistics. Duplicates count as
/// received, so cumulative loss may go negative (RFC 3550 §6.4.1). Jitter is updated from
/// packets that advance the highest sequence number only: late and duplicate packets would
/// measure reordering, not jitter.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    ssrc: u32,
    clock_rate: u32,
    seq: Option<Sequence>,
    /// Origin for arrival times in timestamp units.
    epoch: Option<Instant>,
    /// Jitter times 16 (A.8 integer form).
    jitter_x16: u64,
    /// Middle 32 bits of the NTP timestamp of the last sender report, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// Statistics for the stream `ssrc` with the given RTP clock rate.
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate,
            seq: None,
            epoch: None,
            jitter_x16: 0,
            last_sr: None,
        }
    }

    /// The SSRC reported on.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Accounts one received packet (RFC 3550 A.1 `update_seq`, A.8 jitter).
    pub fn on_packet(&mut self, seq: u16, rtp_timestamp: u32, arrival: Instant) {
        let epoch = *self.epoch.get_or_insert(arrival);
        let arrival_units = clock_units(arrival.saturating_duration_since(epoch), self.clock_rate);
        let transit = arrival_units.wrapping_sub(rtp_timestamp);
        let Some(s) = self.seq.as_mut() else {
            self.seq = Some(Sequence::start(seq, transit));
            return;
        };
        let udelta = seq.wrapping_sub(s.max_seq);
        if udelta == 0 {
            s.received += 1; // duplicate of the highest
        } else if udelta < MAX_DROPOUT {
            if seq < s.max_seq {
                s.cycles += SEQ_MOD;
            }
            s.max_seq = seq;
            s.bad_seq = None;
            s.received += 1;
            let d = u64::from((transit.wrapping_sub(s.transit) as i32).unsigned_abs());
            s.transit = transit;
            // J += (|D| - J) / 16, kept scaled by 16 (A.8).
            self.jitter_x16 = (self.jitter_x16 + d).saturating_sub((self.jitter_x16 + 8) >> 4);
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            if s.bad_seq == Some(seq) {
                // Two sequential packets after a big jump: the source restarted.
                *s = Sequence::start(seq, transit);
            } else {
                s.bad_seq = Some(seq.wrapping_add(1));
            }
        } else {
            // Late or duplicate; an earlier packet than the first lowers the base.
            let wrapped_back = if seq > s.max_seq { SEQ_MOD } else { 0 };
            let extended = s.cycles + i64::from(seq) - wrapped_back;
            s.base = s.base.min(extended);
            s.received += 1;
        }
    }

    /// Records a sender report from this source, for the LSR/DLSR fields (RFC 3550 §6.4.1).
    pub fn on_sender_report(&mut self, ntp: u64, arrival: Instant) {
        self.last_sr = Some((super::compact_ntp(ntp), arrival));
    }

    /// The report block for this stream as of `now`, starting a new interval for the
    /// fraction lost (RFC 3550 A.3). `None` before any packet.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let cumulative_lost = self.cumulative_lost();
        let s = self.seq.as_mut()?;
        let expected = s.expected();
        let expected_interval = expected - s.expected_prior;
        let received_interval =
            i64::try_from(s.received.saturating_sub(s.received_prior)).unwrap_or(i64::MAX);
        let lost_interval = expected_interval - received_interval;
        s.expected_prior = expected;
        s.received_prior = s.received;
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, delay_units(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            // 24-bit signed on the wire (RFC 3550 §6.4.1).
            cumulative_lost: cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1) as i32,
            // The low 32 bits: 16 of cycle count, 16 of sequence number.
            highest_sequence: s.extended_max() as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        })
    }

    /// Packets received since the first one (or since a restart), duplicates included.
    pub fn packets_received(&self) -> u64 {
        self.seq.map_or(0, |s| s.received)
    }

    /// Packets expected minus packets received (RFC 3550 A.3); negative with duplicates.
    pub fn cumulative_lost(&self) -> i64 {
        self.seq.map_or(0, |s| {
            s.expected() - i64::try_from(s.received).unwrap_or(i64::MAX)
        })
    }

    /// Interarrival jitter estimate in timestamp units (RFC 3550 §6.4.1, A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }
}

/// `elapsed` in units of `clock_rate`, modulo 2^32 like RTP timestamps.
fn clock_units(elapsed: Duration, clock_rate: u32) -> u32 {
    (elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// `elapsed` in 1/65536 s, the DLSR unit, saturating.
fn delay_units(elapsed: Duration) -> u32 {
    u32::try_from((elapsed.as_nanos() << 16) / 1_000_000_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_stats_counts_loss_and_wraps() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(77, 48_000);
        assert_eq!(stats.report_block(t0), None);
        // 65530..=65535, 0..=9 with 3 and 65533 lost.
        let seqs: Vec<u16> = (65_530..=65_535)
            .chain(0..10)
            .filter(|&s| s != 3 && s != 65_533)
            .collect();
        for (i, &seq) in seqs.iter().enumerate() {
            stats.on_packet(
                seq,
                i as u32 * 960,
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        assert_eq!(stats.packets_received(), 14);
        assert_eq!(stats.cumulative_lost(), 2);
        let rb = stats.report_block(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(rb.ssrc, 77);
        assert_eq!(rb.highest_sequence, 0x0001_0009);
        assert_eq!(rb.cumulative_lost, 2);
        assert_eq!(rb.fraction_lost, (2 * 256 / 16) as u8);
        assert_eq!((rb.last_sr, rb.delay_since_last_sr), (0, 0));

        // Next interval: 10..=19 with 11, 13 and 15 lost; cumulative 5.
        for seq in [10u16, 12, 14, 16, 17, 18] {
            stats.on_packet(seq, 0, t0);
        }
        stats.on_packet(19, 0, t0);
        let rb = stats.report_block(t0).unwrap();
        assert_eq!((rb.fraction_lost, rb.cumulative_lost), (76, 5)); // 3 × 256 / 10
                                                                     // An interval with nothing new reports no loss.
        assert_eq!(stats.report_block(t0).unwrap().fraction_lost, 0);
    }

    #[test]
    fn receive_stats_reordering_and_duplicates() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(1, 48_000);
        for seq in [10u16, 9, 12, 11, 13, 13, 8] {
            stats.on_packet(seq, 0, t0);
        }
        // Expected 8..=13 (6), received 7 with a duplicate: loss -1 (RFC 3550 §6.4.1).
        assert_eq!(stats.packets_received(), 7);
        assert_eq!(stats.cumulative_lost(), -1);
        let rb = stats.report_block(t0).unwrap();
        assert_eq!(
            (rb.highest_sequence, rb.cumulative_lost, rb.fraction_lost),
            (13, -1, 0)
        );

        // A late packet from before a wrap extends the base into the previous cycle.
        let mut stats = ReceiveStats::new(1, 48_000);
        for seq in [0u16, 1, 65_535, 2] {
            stats.on_packet(seq, 0, t0);
        }
        assert_eq!(stats.cumulative_lost(), 0);
        assert_eq!(stats.report_block(t0).unwrap().highest_sequence, 2);
    }

    #[test]
    fn receive_stats_restarts_on_two_sequential_jumps() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(1, 48_000);
        for seq in 100..110u16 {
            stats.on_packet(seq, 0, t0);
        }
        stats.on_packet(30_000, 0, t0); // a stray: ignored
        stats.on_packet(110, 0, t0);
        assert_eq!((stats.packets_received(), stats.cumulative_lost()), (11, 0));
        stats.on_packet(50_000, 0, t0);
        stats.on_packet(50_001, 0, t0); // confirms the restart
        stats.on_packet(50_002, 0, t0);
        assert_eq!((stats.packets_received(), stats.cumulative_lost()), (2, 0));
        assert_eq!(stats.report_block(t0).unwrap().highest_sequence, 50_002);
    }

    #[test]
    fn receive_stats_jitter_follows_rfc_3550_a8() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(1, 48_000);
        // Perfectly paced: no jitter.
        for i in 0..50u32 {
            stats.on_packet(
                i as u16,
                1000 + i * 960,
                t0 + Duration::from_millis(20 * u64::from(i)),
            );
        }
        assert_eq!(stats.jitter(), 0);

        // Every other packet 5 ms (240 units) late: |D| = 240 each time.
        let mut reference = 0.0f64;
        for i in 50..250u32 {
            let late = if i % 2 == 0 { 5 } else { 0 };
            let at = t0 + Duration::from_millis(20 * u64::from(i) + late);
            stats.on_packet(i as u16, 1000 + i * 960, at);
            reference += (240.0 - reference) / 16.0;
        }
        assert!(
            (f64::from(stats.jitter()) - reference).abs() <= 1.0,
            "{} vs {reference}",
            stats.jitter()
        );
        assert!(stats.jitter() >= 235);
        // Reordered and duplicate packets leave it alone.
        let before = stats.jitter();
        stats.on_packet(200, 0, t0);
        stats.on_packet(249, 0, t0);
        assert_eq!(stats.jitter(), before);
        assert_eq!(stats.report_block(t0).unwrap().jitter, before);
    }

    #[test]
    fn receive_stats_echoes_last_sender_report() {
        let t0 = Instant::now();
        let mut stats = ReceiveStats::new(1, 48_000);
        stats.on_packet(1, 0, t0);
        stats.on_sender_report(0x0123_4567_89ab_cdef, t0);
        let rb = stats
            .report_block(t0 + Duration::from_millis(1_500))
            .unwrap();
        assert_eq!(rb.last_sr, 0x4567_89ab);
        assert_eq!(rb.delay_since_last_sr, 98_304); // 1.5 × 65536
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let t0 = Instant::now() + Duration::from_secs(1_000);
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for clock_rate in [0, 8_000, 48_000, u32::MAX] {
            let mut stats = ReceiveStats::new(1, clock_rate);
            for i in 0..20_000u64 {
                let r = next();
                let at = match r % 3 {
                    0 => t0 + Duration::from_nanos(r % 1_000_000_000_000),
                    1 => t0 - Duration::from_nanos(r % 1_000_000_000_000),
                    _ => t0 + Duration::from_millis(20 * i),
                };
                let seq = if r % 5 == 0 { r as u16 } else { i as u16 };
                stats.on_packet(seq, (r >> 16) as u32, at);
                if r % 97 == 0 {
                    stats.on_sender_report(next(), at);
                }
                if r % 13 == 0 {
                    let block = stats.report_block(at).unwrap();
                    assert!((-(1 << 23)..1 << 23).contains(&block.cumulative_lost));
                }
            }
        }
    }
}
