//! What a shard counts: traffic, handshakes, and every dropped input by reason.

use std::collections::BTreeMap;

use serde::Serialize;

/// A shard's counters. Drops are keyed by a short reason (`srtp_auth_failed`,
/// `stun_bad_fingerprint`, `rtp_unknown_ssrc`, ...); a reason's entry is created on its first
/// occurrence, so steady-state counting does not allocate.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub stun_replies: u64,
    pub dtls_connected: u64,
    pub dtls_failures: u64,
    pub consent_timeouts: u64,
    pub rtp_received: u64,
    pub rtp_forwarded: u64,
    pub rtcp_received: u64,
    pub rtcp_receiver_reports: u64,
    pub rtcp_sent: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub fn drop(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_insert(0) += 1;
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// Adds another shard's counters (for process-wide totals).
    pub fn merge(&mut self, o: &Counters) {
        self.datagrams_in += o.datagrams_in;
        self.bytes_in += o.bytes_in;
        self.datagrams_out += o.datagrams_out;
        self.bytes_out += o.bytes_out;
        self.stun_replies += o.stun_replies;
        self.dtls_connected += o.dtls_connected;
        self.dtls_failures += o.dtls_failures;
        self.consent_timeouts += o.consent_timeouts;
        self.rtp_received += o.rtp_received;
        self.rtp_forwarded += o.rtp_forwarded;
        self.rtcp_received += o.rtcp_received;
        self.rtcp_receiver_reports += o.rtcp_receiver_reports;
        self.rtcp_sent += o.rtcp_sent;
        for (k, v) in &o.drops {
            *self.drops.entry(k).or_insert(0) += v;
        }
    }
}
