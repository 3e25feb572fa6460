//! RTCP reports choir sends about once a second (RFC 3550 §6.4): a Sender Report (+ SDES CNAME)
//! per consumer stream, a Receiver Report (+ SDES CNAME) about each producer stream.

use std::time::Instant;

use super::{Egress, Sfu};
use crate::sfu::ortc::OPUS_CLOCK_RATE;
use crate::wire::rtcp;

/// CNAME choir uses as an RTCP reporter.
const REPORTER_CNAME: &str = "choir";

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
                let Some(block) = self.producers[pk]
                    .stats
                    .as_mut()
                    .and_then(|s| s.report_block(now))
                else {
                    continue;
                };
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
