//! What a shard counts: traffic, handshakes, and every dropped input by reason.

use std::collections::BTreeMap;

use serde::Serialize;

/// A shard's counters. Drops are keyed by layer and reason (`srtp.auth_failed`,
/// `stun.bad_fingerprint`, `rtp.unknown_ssrc`, ...); a reason's entry is created on its first
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
    /// Transports the browser closed with a DTLS close_notify.
    pub dtls_closed: u64,
    pub consent_timeouts: u64,
    /// Participants removed without a connected transport by the join deadline.
    pub join_timeouts: u64,
    /// Rooms removed for having had no participant within the join deadline.
    pub rooms_expired: u64,
    pub rtp_received: u64,
    pub rtp_forwarded: u64,
    /// Packets not forwarded to a consumer yet (its hold after creation).
    pub rtp_held: u64,
    pub rtcp_received: u64,
    pub rtcp_receiver_reports: u64,
    pub rtcp_sent: u64,
    /// Generic NACKs (RFC 4585) from listeners, the packets they asked for, and the packets
    /// choir retransmitted (each miss is a `nack.*` drop).
    pub nacks_received: u64,
    pub nacked_packets: u64,
    pub rtp_retransmitted: u64,
    /// NACKs choir sent to speakers, and the packets that came back after one.
    pub nacks_sent: u64,
    pub rtp_repaired: u64,
    /// Packets recovered from a RED speaker's redundancy (`crate::sfu::red`).
    pub rtp_recovered: u64,
    /// Speaking transitions (`speakingChanged` true / false) and dominant speaker changes.
    pub speaking_started: u64,
    pub speaking_stopped: u64,
    pub dominant_changes: u64,
    /// Cascade (`crate::sfu::cascade`): local producers' packets sealed and sent on links (one
    /// per packet per link), remote producers' packets received and opened on links, and the
    /// times a link's peer address changed (latched after an authentic datagram). Link drops
    /// are `relay.*` drops.
    pub relay_packets_out: u64,
    pub relay_packets_in: u64,
    pub relay_peer_moves: u64,
    /// Gauges: cascade links, remote producers, and the largest latest round-trip time of the
    /// links, in microseconds (0 before any sample).
    pub links: u64,
    pub remote_producers: u64,
    pub link_rtt_max_us: u64,
    #[serde(serialize_with = "dotted")]
    pub drops: BTreeMap<(&'static str, &'static str), u64>,
}

/// Serializes drop keys as "layer.reason".
fn dotted<S: serde::Serializer>(
    drops: &BTreeMap<(&str, &str), u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(
        drops
            .iter()
            .map(|((layer, reason), n)| (format!("{layer}.{reason}"), n)),
    )
}

impl Counters {
    /// Counts one dropped input of `layer` ("srtp", "stun", "rtp"...) for `reason`.
    pub fn drop(&mut self, layer: &'static str, reason: &'static str) {
        self.drop_n(layer, reason, 1);
    }

    pub fn drop_n(&mut self, layer: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            *self.drops.entry((layer, reason)).or_insert(0) += n;
        }
    }

    pub fn dropped(&self, layer: &str, reason: &str) -> u64 {
        self.drops
            .iter()
            .filter(|((l, r), _)| *l == layer && *r == reason)
            .map(|(_, n)| n)
            .sum()
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
        self.dtls_closed += o.dtls_closed;
        self.consent_timeouts += o.consent_timeouts;
        self.join_timeouts += o.join_timeouts;
        self.rooms_expired += o.rooms_expired;
        self.rtp_received += o.rtp_received;
        self.rtp_forwarded += o.rtp_forwarded;
        self.rtp_held += o.rtp_held;
        self.rtcp_received += o.rtcp_received;
        self.rtcp_receiver_reports += o.rtcp_receiver_reports;
        self.rtcp_sent += o.rtcp_sent;
        self.nacks_received += o.nacks_received;
        self.nacked_packets += o.nacked_packets;
        self.rtp_retransmitted += o.rtp_retransmitted;
        self.nacks_sent += o.nacks_sent;
        self.rtp_repaired += o.rtp_repaired;
        self.rtp_recovered += o.rtp_recovered;
        self.speaking_started += o.speaking_started;
        self.speaking_stopped += o.speaking_stopped;
        self.dominant_changes += o.dominant_changes;
        self.relay_packets_out += o.relay_packets_out;
        self.relay_packets_in += o.relay_packets_in;
        self.relay_peer_moves += o.relay_peer_moves;
        self.links += o.links;
        self.remote_producers += o.remote_producers;
        self.link_rtt_max_us = self.link_rtt_max_us.max(o.link_rtt_max_us);
        for (k, v) in &o.drops {
            *self.drops.entry(*k).or_insert(0) += v;
        }
    }
}
