//! The media path: a datagram from a socket → its transport (ICE / DTLS / SRTP) → the producer
//! its SSRC names → statistics, pause, gaps, history, speaking ([`Sfu::accept_rtp`]) → once to
//! each cascade link of the room (`cascade`) → for every consumer: header rewrite, SRTP, send
//! ([`Sfu::fan_out`]). A remote producer's packet, from a link, joins at `accept_rtp`. The packet
//! is decrypted once; each consumer works on a copy in the shard's scratch buffer. Nothing here
//! allocates.

use std::time::Instant;

use super::transport::{Io, Received};
use super::{nack, red, Egress, Path, Sfu, TransportKey};
use crate::sfu::ortc::{OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE};
use crate::wire::demux::{self, PacketKind};
use crate::wire::rtcp::{self, RtcpPacket};
use crate::wire::rtp;
use crate::wire::stun;

impl Sfu {
    /// Handles one datagram that arrived on `path`. `buf[..len]` holds it and `buf` has room
    /// for [`super::BUFFER_SIZE`] bytes. `owner` is the transport that owns the socket (a
    /// per-transport port); on a shared socket (single-port mode) it is `None` and the datagram
    /// is routed: STUN by its USERNAME's local ufrag, everything else by the path ICE selected.
    pub fn handle_datagram(
        &mut self,
        owner: Option<TransportKey>,
        path: Path,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        out: &mut impl Egress,
    ) {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += len as u64;
        let Some(datagram) = buf.get(..len) else {
            return self.counters.drop("datagram", "too_long");
        };
        let key = match owner {
            Some(key) => key,
            None => match self.route(path, datagram) {
                Ok(key) => key,
                Err(reason) => return self.counters.drop("route", reason),
            },
        };
        let Some(t) = self.transports.get_mut(key) else {
            return self.counters.drop("datagram", "transport_closed");
        };
        let mut io = Io {
            now,
            settings: &self.settings,
            scratch: &mut self.scratch[..],
            out,
            counters: &mut self.counters,
        };
        let received = t.handle_datagram(path, buf, len, &mut io);
        if let Some((new, evicted)) = t.take_new_path() {
            if owner.is_none() {
                // The transport now owns this path on the shared socket.
                self.routes.insert(new, key);
                if let Some(old) = evicted.filter(|old| self.routes.get(old) == Some(&key)) {
                    self.routes.remove(&old);
                }
            }
        }
        match received {
            Received::Nothing => {}
            Received::Rtp(n) => self.forward_rtp(key, &buf[..n], now, out),
            Received::Rtcp(n) => self.receive_rtcp(key, &buf[..n], now, out),
            Received::Failed(reason) => self.transport_failed(key, reason),
        }
    }

    /// The transport a datagram on a shared socket is for.
    fn route(&self, path: Path, datagram: &[u8]) -> Result<TransportKey, &'static str> {
        if demux::classify(datagram) != PacketKind::Stun {
            return self.routes.get(&path).copied().ok_or("unknown_sender");
        }
        let msg = stun::Message::parse(datagram).map_err(|e| e.as_str())?;
        let username = msg
            .get(stun::attr::USERNAME)
            .ok_or("stun_without_username")?;
        let local = username.split(|&b| b == b':').next().unwrap_or_default();
        let local = std::str::from_utf8(local).map_err(|_| "unknown_ufrag")?;
        self.ufrags.get(local).copied().ok_or("unknown_ufrag")
    }

    /// Finds the producer of a decrypted RTP packet and fans it out to its consumers.
    pub(super) fn forward_rtp(
        &mut self,
        key: TransportKey,
        packet: &[u8],
        now: Instant,
        out: &mut impl Egress,
    ) {
        self.counters.rtp_received += 1;
        let header = match rtp::parse(packet) {
            Ok(h) => h,
            Err(e) => return self.counters.drop("rtp", e.as_str()),
        };
        let Some(pk) = self.find_producer(key, packet, &header) else {
            return self.counters.drop("rtp", "unknown_ssrc");
        };
        if self.producers[pk].rtp.red_payload_type == Some(header.payload_type) {
            self.forward_red(pk, packet, &header, now, out);
        } else {
            self.forward_plain(pk, packet, &header, now, out);
        }
        self.nack_upstream(pk, now, out);
    }

    /// A local producer's plain Opus packet: accepted, relayed once to each other node of the
    /// room, fanned out.
    pub(super) fn forward_plain(
        &mut self,
        pk: usize,
        packet: &[u8],
        header: &rtp::RtpHeader,
        now: Instant,
        out: &mut impl Egress,
    ) {
        if self.accept_rtp(pk, packet, header, now) {
            self.relay(pk, packet, out);
            self.fan_out(pk, packet, header, now, out);
        }
    }

    /// The steps between "which producer" and the fan-out, for a local or a remote producer's
    /// packet: payload type, receive statistics, pause, gaps (local producers that negotiated
    /// NACK), history, speaking. Returns whether the packet is to be forwarded.
    pub(super) fn accept_rtp(
        &mut self,
        pk: usize,
        packet: &[u8],
        header: &rtp::RtpHeader,
        now: Instant,
    ) -> bool {
        let producer = &mut self.producers[pk];
        if header.payload_type != producer.rtp.payload_type {
            self.counters.drop("rtp", "unknown_payload_type");
            return false;
        }
        let stats = producer.stats.get_or_insert_with(|| {
            crate::wire::rtcp::ReceiveStats::new(header.ssrc, crate::sfu::ortc::OPUS_CLOCK_RATE)
        });
        stats.on_packet(header.sequence, header.timestamp, now);
        if producer.paused {
            self.counters.drop("rtp", "producer_paused");
            return false;
        }
        if let Some(gaps) = producer.gaps.as_deref_mut() {
            if gaps.on_packet(header.sequence, now) == nack::Arrival::Repaired {
                self.counters.rtp_repaired += 1;
            }
        }
        if let Some(history) = producer.history.as_deref_mut() {
            history.store(header.sequence, packet, now);
        }
        producer
            .speaker
            .on_packet(header, packet, &mut self.counters);
        true
    }

    /// Sends an accepted packet of producer `pk` to each of its consumers: header rewrite (and
    /// RED), SRTP, send.
    pub(super) fn fan_out(
        &mut self,
        pk: usize,
        packet: &[u8],
        header: &rtp::RtpHeader,
        now: Instant,
        out: &mut impl Egress,
    ) {
        let producer = &self.producers[pk];
        let len = packet.len();
        let payload_len = header.payload_len as u32;
        for &ck in &producer.consumers {
            let c = &mut self.consumers[ck];
            if let Some(until) = c.hold_until {
                if now < until {
                    self.counters.rtp_held += 1;
                    continue;
                }
                c.hold_until = None;
            }
            let Some((sequence, timestamp)) =
                c.sequence.map(header.sequence, header.timestamp, now)
            else {
                self.counters.drop("rtp", "too_old");
                continue;
            };
            let scratch = &mut self.scratch[..];
            scratch[..len].copy_from_slice(packet);
            let payload_type = if c.red {
                RED_PAYLOAD_TYPE
            } else {
                OPUS_PAYLOAD_TYPE
            };
            if let Err(e) = rtp::rewrite(
                &mut scratch[..len],
                header,
                c.ssrc,
                payload_type,
                sequence,
                timestamp,
                &c.extensions,
            ) {
                self.counters.drop("rtp", e.as_str());
                continue;
            }
            // RED: the same packet with earlier frames inserted before its own.
            let sent = match c.red {
                false => len,
                true => match red::encode(scratch, len, header, producer.history.as_deref(), now) {
                    Some(n) => n,
                    None => {
                        self.counters.drop("rtp", "red_too_long");
                        continue;
                    }
                },
            };
            let Some(t) = self.transports.get_mut(c.transport) else {
                continue;
            };
            if t.send_rtp(scratch, sent, out, &mut self.counters) {
                c.packets = c.packets.wrapping_add(1);
                c.octets = c.octets.wrapping_add(payload_len + (sent - len) as u32);
                c.last_sent_at = Some(now);
                self.counters.rtp_forwarded += 1;
            }
        }
    }

    /// The producer on transport `key` that sent this packet: by SSRC, else by the MID header
    /// extension (then its SSRC is learnt, and consumers start a new sequence run).
    fn find_producer(
        &mut self,
        key: TransportKey,
        packet: &[u8],
        header: &rtp::RtpHeader,
    ) -> Option<usize> {
        let t = &self.transports[key];
        if let Some(&pk) = t
            .producers
            .iter()
            .find(|&&pk| self.producers[pk].ssrc == Some(header.ssrc))
        {
            return Some(pk);
        }
        let pk = t.producers.iter().copied().find(|&pk| {
            let p = &self.producers[pk];
            match (p.rtp.mid_extension_id, &p.rtp.mid) {
                (Some(id), Some(mid)) => {
                    p.rtp.ssrc.is_none() && header.extension(packet, id) == Some(mid.as_bytes())
                }
                _ => false,
            }
        })?;
        let p = &mut self.producers[pk];
        tracing::debug!(producer = %p.id, ssrc = header.ssrc, "producer SSRC learnt from MID");
        p.ssrc = Some(header.ssrc);
        p.stats = None;
        for &ck in &p.consumers {
            self.consumers[ck].sequence.resync();
        }
        Some(pk)
    }

    /// Inbound compound RTCP: Sender Reports feed the receive statistics of our Receiver
    /// Reports, a listener's Receiver Reports the loss choir reports upstream (see
    /// `rtcp_reports`), NACKs are answered (see [`nack`]); everything else is accepted and
    /// counted.
    fn receive_rtcp(
        &mut self,
        key: TransportKey,
        compound: &[u8],
        now: Instant,
        out: &mut impl Egress,
    ) {
        self.counters.rtcp_received += 1;
        for packet in rtcp::packets(compound) {
            match packet {
                Ok(RtcpPacket::SenderReport(sr)) => {
                    let t = &self.transports[key];
                    match t
                        .producers
                        .iter()
                        .find(|&&pk| self.producers[pk].ssrc == Some(sr.ssrc))
                    {
                        // Before the stream's first packet there are no statistics to feed yet.
                        Some(&pk) => {
                            if let Some(stats) = self.producers[pk].stats.as_mut() {
                                stats.on_sender_report(sr.ntp, now);
                            }
                        }
                        None => self.counters.drop("rtcp", "sr_unknown_ssrc"),
                    }
                }
                Ok(RtcpPacket::ReceiverReport(rr)) => {
                    self.counters.rtcp_receiver_reports += 1;
                    let t = &self.transports[key];
                    for block in rr.reports.iter() {
                        match t
                            .consumers
                            .iter()
                            .find(|&&ck| self.consumers[ck].ssrc == block.ssrc)
                        {
                            Some(&ck) => self.consumers[ck].reported_loss.on_report(&block, now),
                            None => self.counters.drop("rtcp", "rr_unknown_ssrc"),
                        }
                    }
                }
                Ok(RtcpPacket::Sdes(..)) | Ok(RtcpPacket::Bye(..)) => {}
                Ok(RtcpPacket::Nack {
                    media_ssrc, items, ..
                }) => self.on_nack(key, media_ssrc, items, now, out),
                Ok(RtcpPacket::Pli { .. }) => self.counters.drop("rtcp", "pli_ignored"),
                Ok(RtcpPacket::Other { .. }) => self.counters.drop("rtcp", "other_ignored"),
                Err(e) => {
                    self.counters.drop("rtcp", e.as_str());
                    break;
                }
            }
        }
    }
}
