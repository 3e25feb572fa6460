//! RTCP reports choir sends about once a second (RFC 3550 §6.4): a Sender Report (+ SDES CNAME)
//! per consumer stream, a Receiver Report (+ SDES CNAME) about each producer stream. The
//! Receiver Report's cumulative loss is the speaker's own leg's; its fraction lost is the worse
//! of that leg's and its listeners' ([`downstream_loss`]): libwebrtc feeds the fraction to the
//! Opus encoder, which sends in-band FEC only while it is above zero (RFC 6716 §2.1.7).

use std::time::Instant;

use super::{Egress, Sfu};
use crate::sfu::ortc::OPUS_CLOCK_RATE;
use crate::wire::rtcp;

/// CNAME choir uses as an RTCP reporter.
const REPORTER_CNAME: &str = "choir";

/// The loss choir reports to a speaker for its listeners' legs: the 90th percentile (nearest
/// rank) of their loss (each averaged over about a second of their reports:
/// [`crate::wire::rtcp::ReportedLoss`]), so that one listener on a hopeless network does not
/// make every speaker spend bits on FEC for it; with fewer than ten listeners, the worst.
/// 0 without listeners. Fractions are in 1/256 (RFC 3550 §6.4.1). Allocates nothing.
pub(super) fn downstream_loss(losses: impl Iterator<Item = u8>) -> u8 {
    let mut histogram = [0u32; 256];
    let mut n = 0u32;
    for loss in losses {
        histogram[usize::from(loss)] += 1;
        n += 1;
    }
    let rank = (n * 9).div_ceil(10);
    let mut seen = 0;
    for (loss, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank && n > 0 {
            return loss as u8;
        }
    }
    0
}

impl Sfu {
    /// Sends the reports of slice `slice` (of [`super::RTCP_SLICES`]): consumers and transports
    /// whose key falls in it.
    pub(super) fn send_reports(&mut self, now: Instant, slice: usize, out: &mut impl Egress) {
        let ntp = rtcp::ntp_timestamp(self.wall_clock(now));
        let mine = |key: usize| key % super::RTCP_SLICES == slice;
        for (_, c) in self.consumers.iter_mut().filter(|(k, _)| mine(*k)) {
            let (Some(last_ts), Some(sent_at)) = (c.sequence.last_timestamp(), c.last_sent_at)
            else {
                continue;
            };
            // The RTP time of "now" on the consumer's timeline.
            let elapsed = now.saturating_duration_since(sent_at);
            let ticks =
                (elapsed.as_micros() as u64 * u64::from(OPUS_CLOCK_RATE) / 1_000_000) as u32;
            let rtp_ts = last_ts.wrapping_add(ticks);
            let buf = &mut self.scratch[..];
            let Some(n) = rtcp::write_sender_report(buf, c.ssrc, ntp, rtp_ts, c.packets, c.octets)
            else {
                continue;
            };
            let Some(m) = rtcp::write_sdes_cname(&mut buf[n..], c.ssrc, &c.cname) else {
                continue;
            };
            if let Some(t) = self.transports.get_mut(c.transport) {
                t.send_rtcp(buf, n + m, out, &mut self.counters);
            }
        }
        for (_, t) in self.transports.iter_mut().filter(|(k, _)| mine(*k)) {
            for i in 0..t.producers.len() {
                let pk = t.producers[i];
                let p = &mut self.producers[pk];
                let Some(mut block) = p.stats.as_mut().and_then(|s| s.report_block(now)) else {
                    continue;
                };
                // The speaker's encoder sizes its FEC by this figure: its listeners' legs count.
                let listeners = p
                    .consumers
                    .iter()
                    .filter_map(|&ck| self.consumers[ck].reported_loss.fraction(now));
                block.fraction_lost = block.fraction_lost.max(downstream_loss(listeners));
                let buf = &mut self.scratch[..];
                let Some(n) = rtcp::write_receiver_report(buf, t.rtcp_ssrc, &[block]) else {
                    continue;
                };
                let Some(m) = rtcp::write_sdes_cname(&mut buf[n..], t.rtcp_ssrc, REPORTER_CNAME)
                else {
                    continue;
                };
                t.send_rtcp(buf, n + m, out, &mut self.counters);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::downstream_loss;

    #[test]
    fn the_downstream_loss_is_the_ninetieth_percentile_of_the_listeners() {
        assert_eq!(downstream_loss([].into_iter()), 0);
        assert_eq!(downstream_loss([26].into_iter()), 26);
        assert_eq!(
            downstream_loss([0, 51, 3].into_iter()),
            51,
            "few: the worst"
        );
        // Ten listeners: the worst one alone does not decide.
        let ten = [0, 0, 5, 5, 10, 10, 10, 12, 20, 255];
        assert_eq!(downstream_loss(ten.into_iter()), 20);
        // Twenty: the two worst do not.
        let twenty = (0..18).map(|_| 13).chain([200, 255]);
        assert_eq!(downstream_loss(twenty), 13);
        let mut twenty = vec![13u8; 17];
        twenty.extend([100, 200, 255]);
        assert_eq!(downstream_loss(twenty.into_iter()), 100);
    }
}
