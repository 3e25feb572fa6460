//! Per-consumer sequence-number and timestamp continuity (RFC 3550 §5.1, A.1).
//!
//! A consumer sees one outgoing stream although its source may pause, resume, or be replaced
//! by another producer with unrelated numbering. Packets are grouped in *runs*: within a run
//! the outgoing numbers are the incoming ones plus fixed offsets, so loss and reordering are
//! reproduced faithfully; a new run continues right after the highest packet sent so far.

use std::time::{Duration, Instant};

/// Largest forward jump still taken as loss within a run (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: i16 = 3000;
/// Largest backward distance from the highest packet still forwarded as a late packet
/// (RFC 3550 A.1 `MAX_MISORDER`); 2 s of 20 ms audio, too late for any jitter buffer.
const MAX_MISORDER: i16 = 100;

#[derive(Debug, Clone, Copy)]
struct Run {
    /// Incoming sequence number of the highest packet of the run.
    highest_seq: u16,
    /// How many sequence numbers the highest packet is past the run's first one.
    highest_index: u64,
    /// Outgoing minus incoming sequence number.
    seq_offset: u16,
    /// Outgoing minus incoming timestamp.
    ts_offset: u32,
    /// The consumer's first run: no number before its first packet was ever sent.
    first: bool,
}

/// The highest packet forwarded so far, in outgoing numbering.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    ts: u32,
    at: Instant,
}

/// Per-consumer sequence/timestamp continuity. [`map`](Self::map) returns the outgoing
/// `(seq, ts)` for an incoming `(seq, ts)`.
///
/// The first run is forwarded with the incoming numbers unchanged. A run ends when
/// [`resync`](Self::resync) is called (pause/resume, producer replaced), or by itself when the
/// source restarts its numbering: a packet more than 3000 ahead or 100 behind the highest is
/// dropped, and if the next packet follows it directly a new run starts there (the RFC 3550
/// A.1 rule for a restarted source).
#[derive(Debug, Clone)]
pub struct SequenceMapper {
    clock_rate: u32,
    run: Option<Run>,
    sent: Option<Sent>,
    resync_pending: bool,
    /// Sequence number that, arriving next, confirms a restart (RFC 3550 A.1 `bad_seq`).
    restart_probe: Option<u16>,
}

impl SequenceMapper {
    /// A mapper for a stream with the given RTP clock rate (48000 for Opus).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            run: None,
            sent: None,
            resync_pending: false,
            restart_probe: None,
        }
    }

    /// Maps an incoming packet. Returns `None` for a packet that must not be forwarded (count
    /// it as a drop): one from before the current run's first packet, whose outgoing number
    /// was already used by the previous run, or one outside the reorder window (more than 100
    /// behind or 3000 ahead of the run's highest packet).
    pub fn map(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        let run = match self.run {
            Some(run) if !self.resync_pending => run,
            _ => return Some(self.start_run(seq, ts, now)),
        };
        let delta = seq.wrapping_sub(run.highest_seq) as i16;
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            return self.out_of_window(seq, ts, now);
        }
        self.restart_probe = None;
        let out = (
            seq.wrapping_add(run.seq_offset),
            ts.wrapping_add(run.ts_offset),
        );
        // Negative index: the packet precedes the run's first packet (it was overtaken on the
        // way). In the first run its number is free; in a later one the previous run used it.
        let Some(index) = run.highest_index.checked_add_signed(i64::from(delta)) else {
            return run.first.then_some(out);
        };
        if delta > 0 {
            self.run = Some(Run {
                highest_seq: seq,
                highest_index: index,
                ..run
            });
            self.sent = Some(Sent {
                seq: out.0,
                ts: out.1,
                at: now,
            });
        }
        Some(out)
    }

    /// Makes the next packet start a new run: its sequence number is the highest sent plus 1,
    /// its timestamp the highest sent plus the wall-clock time elapsed since that packet was
    /// forwarded, in clock-rate units (at least 1). Call after a pause/resume or when the
    /// source stream changed.
    pub fn resync(&mut self) {
        self.resync_pending = true;
    }

    /// For a retransmission (RFC 4585 NACK): the incoming sequence number of the packet that
    /// went out as `out_seq` in the current run. `None` when `out_seq` is ahead of the run's
    /// highest packet, more than 100 behind it, or from an earlier run (whose numbering is not
    /// kept).
    pub fn source(&self, out_seq: u16) -> Option<u16> {
        let run = self.run?;
        let seq = out_seq.wrapping_sub(run.seq_offset);
        let delta = seq.wrapping_sub(run.highest_seq) as i16;
        let in_run = run
            .highest_index
            .checked_add_signed(i64::from(delta))
            .is_some();
        ((-MAX_MISORDER..=0).contains(&delta) && (in_run || run.first)).then_some(seq)
    }

    /// The outgoing `(seq, ts)` of an incoming packet of the current run, as [`map`](Self::map)
    /// gave them, without changing any state: a retransmission goes out byte-identical.
    pub fn remap(&self, seq: u16, ts: u32) -> Option<(u16, u32)> {
        let run = self.run?;
        Some((
            seq.wrapping_add(run.seq_offset),
            ts.wrapping_add(run.ts_offset),
        ))
    }

    /// Outgoing sequence number of the highest packet forwarded so far.
    pub fn last_sequence(&self) -> Option<u16> {
        self.sent.map(|sent| sent.seq)
    }

    /// Outgoing timestamp of the highest packet forwarded so far.
    pub fn last_timestamp(&self) -> Option<u32> {
        self.sent.map(|sent| sent.ts)
    }

    fn out_of_window(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        if self.restart_probe == Some(seq) {
            return Some(self.start_run(seq, ts, now));
        }
        self.restart_probe = Some(seq.wrapping_add(1));
        None
    }

    fn start_run(&mut self, seq: u16, ts: u32, now: Instant) -> (u16, u32) {
        let out = match self.sent {
            None => (seq, ts),
            Some(sent) => {
                let elapsed = now.saturating_duration_since(sent.at);
                let advance = clock_units(elapsed, self.clock_rate).max(1);
                (sent.seq.wrapping_add(1), sent.ts.wrapping_add(advance))
            }
        };
        self.run = Some(Run {
            highest_seq: seq,
            highest_index: 0,
            seq_offset: out.0.wrapping_sub(seq),
            ts_offset: out.1.wrapping_sub(ts),
            first: self.sent.is_none(),
        });
        self.sent = Some(Sent {
            seq: out.0,
            ts: out.1,
            at: now,
        });
        self.resync_pending = false;
        self.restart_probe = None;
        out
    }
}

/// `elapsed` in units of `clock_rate`, modulo 2^32 like RTP timestamps.
fn clock_units(elapsed: Duration, clock_rate: u32) -> u32 {
    // as_nanos() < 2^94, so the product fits in u128.
    let units = elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    units as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u32 = 960; // 20 ms of Opus at 48 kHz

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_run_is_identity_across_wrap() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        assert_eq!(m.last_sequence(), None);
        let mut ts = u32::MAX - FRAME;
        for (i, seq) in (65_530..=65_535).chain(0..5).enumerate() {
            let at = t0 + ms(20 * i as u64);
            assert_eq!(m.map(seq, ts, at), Some((seq, ts)));
            ts = ts.wrapping_add(FRAME);
        }
        assert_eq!(m.last_sequence(), Some(4));
        assert_eq!(m.last_timestamp(), Some(ts.wrapping_sub(FRAME)));
    }

    #[test]
    fn reordering_and_loss_are_preserved_within_a_run() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        m.map(10, 0, t0);
        m.resync(); // shifts the numbering of the run started below
        let base = m.map(5000, 7, t0).unwrap();
        assert_eq!(base, (11, 1));
        assert_eq!(m.map(5002, 7 + 2 * FRAME, t0), Some((13, 1 + 2 * FRAME)));
        assert_eq!(m.map(5001, 7 + FRAME, t0), Some((12, 1 + FRAME)));
        assert_eq!(
            m.map(5001, 7 + FRAME, t0),
            Some((12, 1 + FRAME)),
            "duplicate"
        );
        assert_eq!(
            m.last_sequence(),
            Some(13),
            "late packets do not move the highest"
        );
        assert_eq!(m.map(5010, 7 + 10 * FRAME, t0), Some((21, 1 + 10 * FRAME)));
    }

    #[test]
    fn resync_continues_sequence_and_advances_timestamp_by_elapsed_time() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        for i in 0..5u16 {
            m.map(
                65_534u16.wrapping_add(i),
                1000 + u32::from(i) * FRAME,
                t0 + ms(20 * u64::from(i)),
            );
        }
        let (last_seq, last_ts) = (m.last_sequence().unwrap(), m.last_timestamp().unwrap());
        assert_eq!((last_seq, last_ts), (2, 1000 + 4 * FRAME));

        // Producer paused for 500 ms after the last packet (sent at 80 ms), then a new source.
        m.resync();
        let resumed = t0 + ms(80 + 500);
        assert_eq!(m.map(40_000, 5, resumed), Some((3, last_ts + 24_000)));
        assert_eq!(
            m.map(40_001, 5 + FRAME, resumed + ms(20)),
            Some((4, last_ts + 24_000 + FRAME))
        );

        // Resync with no time elapsed still moves the timestamp forward.
        m.resync();
        let at = resumed + ms(20);
        assert_eq!(m.map(9, 0, at), Some((5, last_ts + 24_000 + FRAME + 1)));
    }

    #[test]
    fn resync_before_any_packet_is_harmless() {
        let mut m = SequenceMapper::new(48_000);
        m.resync();
        assert_eq!(m.map(77, 88, Instant::now()), Some((77, 88)));
    }

    #[test]
    fn packets_overtaken_before_the_first_one_are_forwarded() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        // 1002 arrives first; 1000 and 1001 were overtaken on the way: their numbers are free.
        assert_eq!(m.map(1002, 2 * FRAME, t0), Some((1002, 2 * FRAME)));
        assert_eq!(m.map(1000, 0, t0), Some((1000, 0)));
        assert_eq!(m.map(1001, FRAME, t0), Some((1001, FRAME)));
        assert_eq!(
            m.last_sequence(),
            Some(1002),
            "late packets do not move the highest"
        );
        assert_eq!(m.map(1003, 3 * FRAME, t0), Some((1003, 3 * FRAME)));
        // Still bounded by the reorder window.
        assert_eq!(m.map(1003 - 101, 0, t0), None);
    }

    #[test]
    fn old_packets_are_rejected() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        for seq in 100..400u16 {
            m.map(seq, u32::from(seq) * FRAME, t0);
        }
        // More than the reorder window behind the highest (399).
        assert_eq!(m.map(250, 250 * FRAME, t0), None);
        assert_eq!(m.map(299, 299 * FRAME, t0), Some((299, 299 * FRAME)));

        // Before the first packet of the current run: its number was already used.
        m.resync();
        let resumed_ts = 399 * FRAME + 1;
        assert_eq!(m.map(1000, 0, t0), Some((400, resumed_ts)));
        assert_eq!(m.map(999, 0, t0), None);
        assert_eq!(m.map(1001, FRAME, t0), Some((401, resumed_ts + FRAME)));
    }

    #[test]
    fn a_restarted_source_starts_a_new_run_after_two_sequential_packets() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        m.map(20_000, 0, t0);
        m.map(20_001, FRAME, t0 + ms(20));
        // Numbering jumps back without a resync: the first packet is dropped, the second one
        // confirms the restart and continues the outgoing numbering.
        assert_eq!(m.map(3, 0, t0 + ms(40)), None);
        assert_eq!(m.map(4, FRAME, t0 + ms(60)), Some((20_002, FRAME + 1920)));
        assert_eq!(
            m.map(5, 2 * FRAME, t0 + ms(80)),
            Some((20_003, 2 * FRAME + 1920))
        );
        // A single stray packet far ahead is dropped and changes nothing.
        assert_eq!(m.map(30_000, 0, t0), None);
        assert_eq!(
            m.map(6, 3 * FRAME, t0 + ms(100)),
            Some((20_004, 3 * FRAME + 1920))
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let t0 = Instant::now() + Duration::from_secs(1_000);
        let mut state = 0x0bad_5eed_dead_beefu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for clock_rate in [0, 48_000, u32::MAX] {
            let mut m = SequenceMapper::new(clock_rate);
            let mut forwarded = 0;
            for i in 0..50_000u64 {
                let r = next();
                if r % 101 == 0 {
                    m.resync();
                }
                let at = match r % 4 {
                    0 => t0 - Duration::from_nanos(r % 1_000_000_000_000),
                    1 => t0 + Duration::from_secs(r % 1_000_000_000),
                    _ => t0 + Duration::from_millis(20 * i),
                };
                let seq = if r % 7 == 0 { r as u16 } else { i as u16 };
                forwarded += usize::from(m.map(seq, (r >> 8) as u32, at).is_some());
            }
            assert!(forwarded > 40_000, "{forwarded}");
        }
    }

    #[test]
    fn a_retransmission_finds_its_source_in_the_current_run_only() {
        let t0 = Instant::now();
        let mut m = SequenceMapper::new(48_000);
        assert_eq!(m.source(10), None);
        for seq in 10..20u16 {
            m.map(seq, u32::from(seq) * FRAME, t0);
        }
        // The first run is the identity.
        assert_eq!(m.source(15), Some(15));
        assert_eq!(m.remap(15, 15 * FRAME), Some((15, 15 * FRAME)));
        assert_eq!(m.source(20), None, "not sent yet");
        assert_eq!(
            m.source(8),
            Some(8),
            "overtaken before the first: still this run"
        );
        assert_eq!(m.source(65_000), None, "too far behind");
        // A new run: its numbers map back; the old run's do not.
        m.resync();
        let (out, _) = m.map(5000, 7, t0 + ms(100)).unwrap();
        assert_eq!(out, 20);
        for seq in 5001..5005u16 {
            m.map(seq, 7 + u32::from(seq - 5000) * FRAME, t0 + ms(100));
        }
        assert_eq!(m.source(22), Some(5002));
        assert_eq!(m.remap(5002, 7 + 2 * FRAME), m.map(5002, 7 + 2 * FRAME, t0));
        assert_eq!(m.source(19), None, "the previous run's");
        assert_eq!(m.source(25), None);
    }
}
