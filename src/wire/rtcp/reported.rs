//! The loss a receiver reports about a stream we send, smoothed over about a second of packets.
//!
//! A report block's own fraction lost covers whatever interval the receiver chose since its
//! previous report (RFC 3550 §6.4.1): a few hundred milliseconds for some peers, 5 s for an
//! audio receiver in libwebrtc; over short intervals it jumps between 0 and several times the
//! real rate. [`ReportedLoss`] takes the rate between consecutive reports from their cumulative
//! loss and extended highest sequence numbers, and averages it, each report weighing by the
//! packets it covers: over about [`SPAN_PACKETS`], 5 s of 20 ms audio (the loss of a second of
//! packets at 10 % random loss swings between 4 and 20 %). The speaker's encoder smooths what
//! it is told over 10 s more (libwebrtc).

use std::time::{Duration, Instant};

use super::report::ReportBlock;

/// Packets a report must cover to replace the average: 5 s of 20 ms audio.
pub const SPAN_PACKETS: i64 = 250;
/// A receiver's last report counts this long. Receivers report every 5 s or so (RFC 3550
/// §6.2: a 5 s minimum, randomized between 0.5 and 1.5 times: up to 7.5 s; Firefox's were seen
/// 4.6 and 11 s apart), and a report crosses the very leg whose loss it tells, so some are lost:
/// a figure must survive three missing reports. At 10 s the loss of one Firefox listener fell
/// to 0 between its reports, and its speaker's encoder stopped sending FEC for it.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A receiver's loss about one stream we send, from its report blocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportedLoss {
    /// The last report: when, its extended highest sequence number and cumulative loss.
    last: Option<(Instant, u32, i32)>,
    /// The average loss rate, in 1/256 (the report blocks' unit) × 256.
    average: Option<i64>,
}

impl ReportedLoss {
    /// Notes a report block about the stream, received at `now`.
    pub fn on_report(&mut self, block: &ReportBlock, now: Instant) {
        let (highest, lost) = (block.highest_sequence, block.cumulative_lost);
        let rate = match self.last {
            // The first report: its own fraction, as if it covered a second.
            None => Some((i64::from(block.fraction_lost) << 8, SPAN_PACKETS)),
            Some((_, h, l)) => {
                let expected = i64::from(highest.wrapping_sub(h));
                // Nothing new (or the numbers went back): no sample.
                (expected > 0 && expected < 1 << 31).then(|| {
                    let lost = (i64::from(lost) - i64::from(l)).clamp(0, expected);
                    ((lost << 16) / expected, expected)
                })
            }
        };
        if let Some((rate, packets)) = rate {
            let weight = packets.min(SPAN_PACKETS);
            let average = self.average.unwrap_or(rate);
            self.average = Some(average + (rate - average) * weight / SPAN_PACKETS);
        }
        self.last = Some((now, highest, lost));
    }

    /// The average fraction lost (in 1/256); `None` without a report in the last
    /// [`MAX_AGE`].
    pub fn fraction(&self, now: Instant) -> Option<u8> {
        let (at, _, _) = self.last?;
        if now.saturating_duration_since(at) > MAX_AGE {
            return None;
        }
        let average = self.average.unwrap_or(0);
        Some(u8::try_from((average + 128) >> 8).unwrap_or(u8::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(highest: u32, lost: i32, fraction: u8) -> ReportBlock {
        ReportBlock {
            ssrc: 1,
            fraction_lost: fraction,
            cumulative_lost: lost,
            highest_sequence: highest,
            jitter: 0,
            last_sr: 0,
            delay_since_last_sr: 0,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn short_report_intervals_average_to_the_rate() {
        let t0 = Instant::now();
        let mut r = ReportedLoss::default();
        assert_eq!(r.fraction(t0), None);
        r.on_report(&block(100, 0, 0), t0);
        assert_eq!(r.fraction(t0), Some(0), "one report: its own fraction");
        // Every 400 ms, 20 packets: 0 or 4 lost in turn (10 %), the fractions jump 0 ↔ 51; the
        // average settles at 10 % within a point.
        let mut lost = 0;
        for i in 1..=100u32 {
            let fraction = if i % 2 == 0 { 51 } else { 0 };
            if i % 2 == 0 {
                lost += 4;
            }
            let at = t0 + ms(400 * u64::from(i));
            r.on_report(&block(100 + 20 * i, lost, fraction), at);
            if i >= 60 {
                let f = r.fraction(at).unwrap();
                assert!((23..=29).contains(&f), "{i}: {f}");
            }
        }
        // Reports lost on the way (or a receiver reporting every 7.5 s): the figure stays.
        let last = r.fraction(t0 + ms(40_000));
        assert_eq!(r.fraction(t0 + ms(40_000) + ms(25_000)), last);
        // No new report for too long: no figure.
        assert_eq!(r.fraction(t0 + ms(40_000) + MAX_AGE + ms(1)), None);
    }

    #[test]
    fn reports_five_seconds_apart_each_replace_the_average() {
        let t0 = Instant::now();
        let mut r = ReportedLoss::default();
        r.on_report(&block(1000, 10, 0), t0);
        r.on_report(&block(1250, 35, 25), t0 + ms(5000));
        assert_eq!(r.fraction(t0 + ms(5000)), Some(26), "25 of 250");
        // No packets since: the rate stays what it was; fewer lost (duplicates): none lost.
        r.on_report(&block(1250, 35, 0), t0 + ms(10_000));
        assert_eq!(r.fraction(t0 + ms(10_000)), Some(26));
        r.on_report(&block(1500, 30, 0), t0 + ms(15_000));
        assert_eq!(r.fraction(t0 + ms(15_000)), Some(0));
        // Across the wrap of the extended sequence number.
        let mut r = ReportedLoss::default();
        r.on_report(&block(u32::MAX - 149, 0, 0), t0);
        r.on_report(&block(100, 25, 0), t0 + ms(5000));
        assert_eq!(r.fraction(t0 + ms(5000)), Some(26), "25 of 250");
    }
}
