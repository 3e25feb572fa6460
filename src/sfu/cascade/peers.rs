//! The cascade's figures per peer node (for `/metrics`): the live links' figures summed over
//! the rooms, plus what links removed since the start had counted, so that the packet counters
//! never go back when a link goes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Link;
use crate::sfu::{LinkKey, Sfu};

/// One peer node's links on this shard.
#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerStats {
    pub peer: String,
    /// Gauges: live links (one per room the peer shares), streams relayed to the peer (the
    /// rooms' local producers, one each whatever the number of listeners there) and from it
    /// (its producers known here), the largest latest round-trip time of its links (µs, 0
    /// before a sample).
    pub links: u64,
    pub streams_out: u64,
    pub streams_in: u64,
    pub rtt_max_us: u64,
    /// Counters: media messages sent and received, authentic datagrams received.
    pub packets_out: u64,
    pub packets_in: u64,
    pub datagrams_in: u64,
    /// Datagrams missing between the lowest and highest sequence numbers received (lost, or
    /// still reordered: it can fall back by the few a late datagram fills in).
    pub missing: u64,
}

/// What removed links had counted, per peer.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Retired {
    packets_out: u64,
    packets_in: u64,
    datagrams_in: u64,
    missing: u64,
}

impl Sfu {
    /// Per peer node, sorted by its id.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let mut peers: BTreeMap<&str, PeerStats> = BTreeMap::new();
        for (peer, r) in &self.retired_links {
            let s = peers.entry(peer).or_default();
            s.packets_out += r.packets_out;
            s.packets_in += r.packets_in;
            s.datagrams_in += r.datagrams_in;
            s.missing += r.missing;
        }
        for (k, link) in self.links.iter() {
            let info = link.info(k, self.local_producers(&link.channel_id));
            let s = peers.entry(&link.peer).or_default();
            s.links += 1;
            s.streams_out += info.streams_out as u64;
            s.streams_in += info.remote_producers as u64;
            s.rtt_max_us = s
                .rtt_max_us
                .max(info.rtt.map_or(0, |r| r.as_micros() as u64));
            s.packets_out += info.packets_out;
            s.packets_in += info.packets_in;
            s.datagrams_in += info.datagrams_in;
            s.missing += info.lost;
        }
        peers
            .into_iter()
            .map(|(peer, s)| PeerStats {
                peer: peer.to_string(),
                ..s
            })
            .collect()
    }

    /// Keeps what the link `lk` (about to be removed) counted.
    pub(super) fn retire_link(&mut self, lk: LinkKey) {
        let link: &Link = &self.links[lk];
        let info = link.info(lk, 0);
        let r = self.retired_links.entry(link.peer.clone()).or_default();
        r.packets_out += info.packets_out;
        r.packets_in += info.packets_in;
        r.datagrams_in += info.datagrams_in;
        r.missing += info.lost;
    }
}
