//! Cascading (issue 22): a room spans nodes. Each node holds one link per other node of the
//! room, a sealed UDP channel ([`crate::wire::relay`]) whose ids, keys and addresses the control
//! plane agrees on and hands to [`Sfu::add_link`].
//!
//! - **Out.** Every accepted packet of a *local* producer (not paused; after its statistics,
//!   gaps, history and speaking steps) goes once to each link of its room, as
//!   [`Payload::Media`] `{stream, rtp}`: `rtp` is the packet as the speaker sent it, after SRTP,
//!   `stream` the producer's number in this shard ([`RemoteProducer::stream`] of
//!   [`Sfu::relayed_producer`]: assigned at `produce`, never reused, the same on every link).
//!   It is sealed in the scratch buffer and sent through [`Egress::send_to`], from the link's
//!   local port to its peer address. Nothing allocates.
//! - **In.** [`Sfu::on_link_datagram`]: the link is found by the datagram's link id (chosen by
//!   this node, see [`LinkParams::receive_id`]), the datagram opened (authenticated, decrypted,
//!   replay-checked), and only then the peer's address latched if it moved. A media message's
//!   `stream` names a remote producer (added by [`Sfu::add_remote_producer`]); its packet takes
//!   the local packets' path from the statistics step on (speaking from its audio level,
//!   history for local listeners' NACKs and RED, the consumers' rewrite and SRTP), without SRTP,
//!   without upstream NACKs (its own node asks its speaker) and **never to a link again** (split
//!   horizon: one hop, so a full mesh cannot loop or duplicate). Each refusal is a counted
//!   `relay.*` drop: the wire's reasons (`short`, `kind`, `version`, `forged`, `replayed`,
//!   `too_old`), `unknown_link`, `wrong_port`, `unknown_stream` (a packet before its producer's
//!   signalling: dropped; the first one after it is delivered), the payload's errors, and the
//!   RTP header's.
//! - **Liveness.** Every [`KEEPALIVE_INTERVAL`] each link sends a keepalive (and one at once
//!   after its first authentic datagram); the peer echoes it at once, which gives the link's
//!   round-trip time. [`LinkInfo::last_received`] is the last
//!   authentic datagram of any kind: the control plane judges a dead link from it.
//! - **Remote producers** are producers without a transport: listed by `producers`, announced
//!   with `newProducer`, consumed with `consume`, paused, resumed and closed with the same events
//!   as local ones, and part of the room's speaking and dominant speaker. Their users are not
//!   participants of this node: `leave`, `produce`, `pause-producer` do not apply to them.
//! - **A room with links** stays until its links are removed, even without local participants,
//!   and the join deadline does not expire it: the control plane owns the links' lifetime. One
//!   whose last participant left closes with its last link.
//!
//! # Wiring
//!
//! The shell hands every datagram whose first octet is [`relay::KIND`] to
//! [`Sfu::on_link_datagram`] (with the port it arrived on and its source), implements
//! [`Egress::send_to`], and keeps calling [`Sfu::handle_timeout`] at [`Sfu::poll_timeout`]. The
//! control plane: [`Sfu::add_link`] on both ends (fresh keys, see [`LinkParams`]); announces each
//! local producer with [`Sfu::relayed_producer`] (all of a room's with
//! [`Sfu::relayed_producers`]) and the peer calls [`Sfu::add_remote_producer`]; carries the
//! origin's `producerPaused` / `producerResumed` / `producerClosed` / `participantLeft` to
//! [`Sfu::set_remote_paused`], [`Sfu::remove_remote_producer`] and
//! [`Sfu::remote_participant_left`]; watches [`Sfu::links`] (`last_received`, `rtt`, `lost`);
//! and calls [`Sfu::remove_link`] (with a reason such as "node_lost") when a peer leaves the
//! room or its link stays dead. A relayed packet is 35 octets longer than the RTP packet
//! (header 14, message 5, tag 16).

mod peers;
mod remote;

pub use peers::PeerStats;
pub(crate) use peers::Retired;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Egress, LinkKey, Origin, ProducerKey, Sfu};
use crate::sfu::api::ApiError;
use crate::sfu::ortc::RtpParameters;
use crate::wire::relay::{self, payload::Payload, Receiver, Sender, HEADER_LEN};
use crate::wire::rtp;

/// How often each link sends a keepalive.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// What [`Sfu::add_link`] needs: the ids, keys and addresses both ends agreed on. Its `Debug`
/// shows no key.
///
/// A link's sequence numbers (the AES-GCM nonces) start at 0 and its replay window empty, so a
/// key must never serve two links: one given again after [`Sfu::remove_link`] would reuse
/// nonces and let old datagrams replay. Derive fresh keys for every link (e.g. with a fresh
/// link id or incarnation in the derivation, see [`crate::wire::relay`]).
#[derive(Clone)]
pub struct LinkParams {
    pub channel_id: String,
    /// The peer node's id.
    pub peer: String,
    /// The peer node's region (shown with its producers: `node`, `region`).
    pub peer_region: String,
    /// This node's link id for the direction peer → us (unique in the shard): the peer's
    /// datagrams carry it.
    pub receive_id: u32,
    pub receive_key: [u8; relay::KEY_LEN],
    /// The peer's link id for the direction us → peer.
    pub send_id: u32,
    pub send_key: [u8; relay::KEY_LEN],
    /// Where the peer receives (its shard's address); replaced by the source address of an
    /// authentic datagram from the peer.
    pub peer_addr: SocketAddr,
    /// The shard's port the link sends from and receives on.
    pub local_port: u16,
}

impl std::fmt::Debug for LinkParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkParams")
            .field("channel_id", &self.channel_id)
            .field("peer", &self.peer)
            .field("receive_id", &self.receive_id)
            .field("send_id", &self.send_id)
            .field("peer_addr", &self.peer_addr)
            .field("local_port", &self.local_port)
            .finish_non_exhaustive()
    }
}

/// A producer of another node, as its node announces it ([`Sfu::relayed_producer`]) and this
/// node adds it ([`Sfu::add_remote_producer`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteProducer {
    /// Its number on the link (the `stream` of its media messages).
    pub stream: u32,
    pub producer_id: String,
    pub user_id: String,
    /// The `rtpParameters` its node got at `produce`.
    pub rtp_parameters: RtpParameters,
    pub paused: bool,
}

/// A link's state, for the control plane.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub key: LinkKey,
    pub channel_id: String,
    pub peer: String,
    pub receive_id: u32,
    pub send_id: u32,
    pub peer_addr: SocketAddr,
    pub local_port: u16,
    /// The last authentic datagram from the peer (media, keepalive or acknowledgement).
    #[serde(skip)]
    pub last_received: Option<Instant>,
    /// The latest round-trip time of a keepalive.
    pub rtt: Option<Duration>,
    /// Media messages sent and received (of remote producers known here).
    pub packets_out: u64,
    pub packets_in: u64,
    /// Authentic datagrams of any kind received, and the ones missing among them: sequence
    /// numbers from the lowest one received to the highest, not received (lost on the link, or
    /// still reordered within the replay window).
    pub datagrams_in: u64,
    pub lost: u64,
    /// Streams relayed to the peer (the room's local producers) and from it (its producers
    /// known here): one each, whatever the number of listeners.
    pub streams_out: usize,
    pub remote_producers: usize,
}

/// One room's link to one peer node.
pub(super) struct Link {
    pub(super) channel_id: String,
    pub(super) peer: String,
    pub(super) peer_region: String,
    local_port: u16,
    peer_addr: SocketAddr,
    sender: Sender,
    receiver: Receiver,
    /// The peer's stream numbers → its producers here.
    pub(super) streams: HashMap<u32, ProducerKey>,
    pub(super) next_keepalive: Instant,
    last_received: Option<Instant>,
    rtt: Option<Duration>,
    packets_out: u64,
    packets_in: u64,
    datagrams_in: u64,
    /// The lowest sequence number of an authentic datagram.
    first_seq: Option<u64>,
}

impl Link {
    fn info(&self, key: LinkKey, streams_out: usize) -> LinkInfo {
        LinkInfo {
            key,
            channel_id: self.channel_id.clone(),
            peer: self.peer.clone(),
            receive_id: self.receiver.link_id(),
            send_id: self.sender.link_id(),
            peer_addr: self.peer_addr,
            local_port: self.local_port,
            last_received: self.last_received,
            rtt: self.rtt,
            packets_out: self.packets_out,
            packets_in: self.packets_in,
            datagrams_in: self.datagrams_in,
            lost: match (self.first_seq, self.receiver.highest_seq()) {
                (Some(first), Some(highest)) => {
                    (highest - first + 1).saturating_sub(self.datagrams_in)
                }
                _ => 0,
            },
            streams_out,
            remote_producers: self.streams.len(),
        }
    }

    /// Seals `message` in `scratch` and sends it to the peer.
    fn send(
        &mut self,
        message: Payload<'_>,
        scratch: &mut [u8],
        counters: &mut super::Counters,
        out: &mut impl Egress,
    ) -> bool {
        let Some(n) = scratch.get_mut(HEADER_LEN..).and_then(|b| message.write(b)) else {
            counters.drop("relay", "too_long");
            return false;
        };
        let Some(len) = self.sender.seal_in_place(scratch, n) else {
            // The sequence space is used up (2^64 datagrams): the link must be re-added.
            counters.drop("relay", "seal_failed");
            return false;
        };
        out.send_to(self.local_port, self.peer_addr, &scratch[..len]);
        true
    }
}

fn no_key() -> ApiError {
    ApiError::new(500, "the crypto library refused a link key")
}

impl Sfu {
    /// Adds the link of room `params.channel_id` to node `params.peer`. The room must exist
    /// (404). A room has at most one link per peer and a receive id names one link of the
    /// shard: a second `add_link` for the same peer or receive id is a 409 (to rekey, remove the
    /// link and add it again). The first keepalive goes out at the next timer tick.
    pub fn add_link(&mut self, params: LinkParams, now: Instant) -> Result<LinkKey, ApiError> {
        let room = self.room(&params.channel_id)?;
        if room
            .links
            .iter()
            .any(|&lk| self.links[lk].peer == params.peer)
        {
            return Err(ApiError::conflict(format!(
                "room {:?} already has a link to node {:?}",
                params.channel_id, params.peer
            )));
        }
        if self.link_ids.contains_key(&params.receive_id) {
            return Err(ApiError::conflict(format!(
                "link id {} is taken",
                params.receive_id
            )));
        }
        let send_key = relay::LinkKey::new(&params.send_key).ok_or_else(no_key)?;
        let receive_key = relay::LinkKey::new(&params.receive_key).ok_or_else(no_key)?;
        tracing::info!(channel = %params.channel_id, peer = %params.peer, addr = %params.peer_addr, "cascade link added");
        let link = Link {
            sender: Sender::new(send_key, params.send_id),
            receiver: Receiver::new(receive_key, params.receive_id),
            channel_id: params.channel_id,
            peer: params.peer,
            peer_region: params.peer_region,
            local_port: params.local_port,
            peer_addr: params.peer_addr,
            streams: HashMap::new(),
            next_keepalive: now,
            last_received: None,
            rtt: None,
            packets_out: 0,
            packets_in: 0,
            datagrams_in: 0,
            first_seq: None,
        };
        let channel_id = link.channel_id.clone();
        let key = self.links.insert(link);
        self.link_ids.insert(params.receive_id, key);
        if let Some(room) = self.rooms.get_mut(&channel_id) {
            room.links.push(key);
        }
        self.counters.links += 1;
        Ok(key)
    }

    fn find_link(&self, channel_id: &str, peer: &str) -> Result<LinkKey, ApiError> {
        self.room(channel_id)?
            .links
            .iter()
            .copied()
            .find(|&lk| self.links[lk].peer == peer)
            .ok_or_else(|| {
                ApiError::not_found(format!("room {channel_id:?} has no link to node {peer:?}"))
            })
    }

    /// Removes the link of `channel_id` to `peer`: its remote producers close
    /// (`producerClosed`; with a `reason`, also `participantLeft {reason}` for each of their
    /// users that is not a participant here, e.g. "node_lost").
    pub fn remove_link(
        &mut self,
        channel_id: &str,
        peer: &str,
        reason: Option<&str>,
    ) -> Result<(), ApiError> {
        let lk = self.find_link(channel_id, peer)?;
        let mut streams: Vec<(u32, ProducerKey)> = self.links[lk]
            .streams
            .iter()
            .map(|(&s, &k)| (s, k))
            .collect();
        streams.sort_unstable();
        for (_, pk) in streams {
            self.close_remote(pk, reason);
        }
        self.retire_link(lk);
        let link = self.links.remove(lk);
        self.link_ids.remove(&link.receiver.link_id());
        if let Some(room) = self.rooms.get_mut(channel_id) {
            room.links.retain(|&k| k != lk);
            // Its participants left while links kept it: it closes with its last link, as a
            // room without links does at its last leave.
            if room.vacated && room.links.is_empty() && room.participants.is_empty() {
                self.rooms.remove(channel_id);
                tracing::info!(channel = %channel_id, "room closed");
            }
        }
        self.counters.links = self.counters.links.saturating_sub(1);
        self.update_rtt_gauge();
        tracing::info!(channel = %channel_id, peer = %peer, "cascade link removed");
        Ok(())
    }

    fn local_producers(&self, channel_id: &str) -> usize {
        self.rooms.get(channel_id).map_or(0, |r| {
            r.participants
                .values()
                .filter(|p| p.producer.is_some())
                .count()
        })
    }

    /// The shard's links.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.links
            .iter()
            .map(|(k, l)| l.info(k, self.local_producers(&l.channel_id)))
            .collect()
    }

    /// The link of `channel_id` to `peer`.
    pub fn link(&self, channel_id: &str, peer: &str) -> Option<LinkInfo> {
        let lk = self.find_link(channel_id, peer).ok()?;
        Some(self.links[lk].info(lk, self.local_producers(channel_id)))
    }

    /// Sends an accepted packet of producer `pk` once on each link of its room, if it is a
    /// local one (split horizon). Allocates nothing.
    pub(super) fn relay(&mut self, pk: ProducerKey, packet: &[u8], out: &mut impl Egress) {
        if self.links.is_empty() {
            return;
        }
        let Sfu {
            producers,
            rooms,
            links,
            scratch,
            counters,
            ..
        } = self;
        let p = &producers[pk];
        if !matches!(p.origin, Origin::Local(_)) {
            return;
        }
        let Some(room) = rooms.get(&p.channel_id) else {
            return;
        };
        let message = Payload::Media {
            stream: p.stream,
            rtp: packet,
        };
        for &lk in &room.links {
            let link = &mut links[lk];
            if link.send(message, &mut scratch[..], counters, out) {
                link.packets_out += 1;
                counters.relay_packets_out += 1;
            }
        }
    }

    /// Handles one datagram that arrived on the shard's port `local_port` from `from` and is a
    /// relay datagram (first octet [`relay::KIND`]; the shell demultiplexes on it, since
    /// [`crate::wire::demux::classify`] calls it unknown). It is decrypted in place and counted
    /// in `datagramsIn` / `bytesIn` like a client's.
    pub fn on_link_datagram(
        &mut self,
        local_port: u16,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
        out: &mut impl Egress,
    ) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let header = match relay::header(datagram) {
            Ok(h) => h,
            Err(reason) => return self.counters.drop("relay", reason.as_str()),
        };
        let Some(&lk) = self.link_ids.get(&header.link_id) else {
            return self.counters.drop("relay", "unknown_link");
        };
        let clock = self.keepalive_clock(now);
        let Sfu {
            links,
            scratch,
            counters,
            ..
        } = self;
        let link = &mut links[lk];
        if link.local_port != local_port {
            return counters.drop("relay", "wrong_port");
        }
        let plaintext = match link.receiver.open(datagram) {
            Ok((header, plaintext)) => {
                let first = link.first_seq.map_or(header.seq, |f| f.min(header.seq));
                link.first_seq = Some(first);
                plaintext
            }
            Err(reason) => return counters.drop("relay", reason.as_str()),
        };
        link.datagrams_in += 1;
        // The first datagram of a new link: a keepalive back at once, so that the peer, which
        // waits for the link to carry datagrams before it uses it, learns it does in one round
        // trip rather than at our next keepalive (a second away).
        if link.last_received.replace(now).is_none() {
            link.next_keepalive = now;
        }
        if from != link.peer_addr {
            tracing::info!(channel = %link.channel_id, peer = %link.peer, from = %link.peer_addr, to = %from, "cascade peer address changed");
            link.peer_addr = from;
            counters.relay_peer_moves += 1;
        }
        match Payload::parse(plaintext) {
            Err(e) => counters.drop("relay", e.as_str()),
            Ok(Payload::Media { stream, rtp }) => {
                let Some(&pk) = link.streams.get(&stream) else {
                    return counters.drop("relay", "unknown_stream");
                };
                link.packets_in += 1;
                counters.relay_packets_in += 1;
                self.forward_remote(pk, rtp, now, out);
            }
            Ok(Payload::Keepalive { sent_at_micros }) => {
                let ack = Payload::KeepaliveAck {
                    echoed: sent_at_micros,
                };
                link.send(ack, &mut scratch[..], counters, out);
            }
            Ok(Payload::KeepaliveAck { echoed }) => {
                if echoed > clock {
                    return counters.drop("relay", "ack_from_the_future");
                }
                link.rtt = Some(Duration::from_micros(clock - echoed));
                self.update_rtt_gauge();
            }
        }
    }

    /// A remote producer's packet: the local path from the statistics step on, to local
    /// consumers only.
    fn forward_remote(
        &mut self,
        pk: ProducerKey,
        packet: &[u8],
        now: Instant,
        out: &mut impl Egress,
    ) {
        let header = match rtp::parse(packet) {
            Ok(h) => h,
            Err(e) => return self.counters.drop("relay", e.as_str()),
        };
        let p = &mut self.producers[pk];
        if p.ssrc != Some(header.ssrc) {
            // The first packet (the origin may have learnt the SSRC from the MID), or a new
            // SSRC: statistics and consumers' sequences start over, as for a local producer.
            p.ssrc = Some(header.ssrc);
            p.stats = None;
            for &ck in &p.consumers {
                self.consumers[ck].sequence.resync();
            }
        }
        if self.accept_rtp(pk, packet, &header, now) {
            self.fan_out(pk, packet, &header, now, out);
        }
    }

    /// Sends the keepalives that are due (timer tick).
    pub(super) fn send_keepalives(&mut self, now: Instant, out: &mut impl Egress) {
        let clock = self.keepalive_clock(now);
        let Sfu {
            links,
            scratch,
            counters,
            ..
        } = self;
        for (_, link) in links.iter_mut() {
            if link.next_keepalive > now {
                continue;
            }
            link.next_keepalive = now + KEEPALIVE_INTERVAL;
            let probe = Payload::Keepalive {
                sent_at_micros: clock,
            };
            link.send(probe, &mut scratch[..], counters, out);
        }
    }

    /// The keepalive clock: microseconds since the core started.
    fn keepalive_clock(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch.0).as_micros() as u64
    }

    fn update_rtt_gauge(&mut self) {
        self.counters.link_rtt_max_us = self
            .links
            .iter()
            .filter_map(|(_, l)| l.rtt)
            .map(|rtt| rtt.as_micros() as u64)
            .max()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests;
