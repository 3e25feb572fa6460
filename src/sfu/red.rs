//! RED (RFC 2198) both ways.
//!
//! **To listeners that negotiated it:** each packet to them carries, before its own frame, the
//! speaker's [`DISTANCE`] frames before it, taken from the producer's history
//! (`crate::sfu::history`), so that a listener that lost one or two packets in a row plays
//! them from the next one. Speech frames only: Opus DTX frames (1–2 bytes, sent while a speaker
//! is silent) are not repeated. Plain Opus for every other listener.
//!
//! **From a speaker that sends it** (choir's try-it client in Chromium): each RED packet is
//! unpacked on arrival into plain Opus packets, so that everything after it (history, NACK,
//! RED to listeners, cascade links, speaking) sees the plain stream: first the earlier frames
//! it repeats of packets choir never received (each *recovered* as the packet it was: its
//! sequence number is the RED packet's minus the block's timestamp offset in packets, the
//! packet duration read from the Opus TOC byte; a block whose offset is not a whole number of
//! packets is not used), then its primary. A packet that arrives after choir recovered it (a
//! late or retransmitted one) is a duplicate and dropped.

use std::time::Instant;

use super::history::PacketHistory;
use super::{Egress, Sfu};
use crate::sfu::ortc::OPUS_PAYLOAD_TYPE;
use crate::wire::rtp::{self, opus, red, RtpHeader};

/// Earlier frames each RED packet repeats (Chromium sends 1 by default; 2 keeps speech
/// intelligible through bursts of two losses, for three times the audio bitrate at most).
pub const DISTANCE: u16 = 2;
/// Frames shorter than this are DTX or comfort noise, not worth repeating.
const MIN_SPEECH_FRAME: usize = 3;
/// A RED packet stays within this many bytes (before SRTP's tag): earlier frames that would
/// take it over are left out, so that it fits any path's MTU as the plain packet did.
const MAX_PACKET: usize = 1200;

/// Makes the consumer's copy `buf[..len]` (already rewritten, RED payload type set) of the
/// packet `header` a RED packet with the earlier frames `history` holds. Returns the new length;
/// `None` when the buffer cannot hold even the primary's RED header.
pub(super) fn encode(
    buf: &mut [u8],
    len: usize,
    header: &RtpHeader,
    history: Option<&PacketHistory>,
    now: Instant,
) -> Option<usize> {
    let mut frames: [(u32, &[u8]); DISTANCE as usize] = [(0, &[]); DISTANCE as usize];
    let mut n = 0;
    let mut total = len + 1;
    if let Some(history) = history {
        // The frame just before first: it is the one a single loss needs.
        for back in 1..=DISTANCE {
            let Ok(packet) = history.get(header.sequence.wrapping_sub(back), now) else {
                continue;
            };
            let Ok(h) = rtp::parse(packet) else { continue };
            let frame = &packet[h.header_len..h.header_len + h.payload_len];
            let offset = header.timestamp.wrapping_sub(h.timestamp);
            if frame.len() >= MIN_SPEECH_FRAME
                && offset <= red::MAX_TIMESTAMP_OFFSET
                && total + 4 + frame.len() <= MAX_PACKET
            {
                frames[n] = (offset, frame);
                n += 1;
                total += 4 + frame.len();
            }
        }
    }
    // Oldest first on the wire.
    frames[..n].reverse();
    red::encode(buf, len, header.header_len, OPUS_PAYLOAD_TYPE, &frames[..n])
}

/// How many packets back a speaker's RED block may reach (Chromium repeats 1–2).
const MAX_RECOVER_BACK: u32 = 8;

/// Which of a RED speaker's last 64 sequence numbers choir passed on, from a primary or
/// recovered from a later packet's blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Received {
    highest: Option<u16>,
    /// Bit i: `highest - i` was passed on.
    seen: u64,
    /// The first sequence number, while it is within the window: nothing before it is missing
    /// (a RED block there repeats a packet of before the stream's start, or of no one).
    first: Option<u16>,
}

/// Where a sequence number stands against [`Received`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not passed on, within the window (or newer than anything so far).
    No,
    Yes,
    /// Older than the window (or nothing received yet): not known.
    Unknown,
}

impl Received {
    pub(super) fn get(&self, seq: u16) -> Seen {
        let Some(highest) = self.highest else {
            return Seen::Unknown;
        };
        if self
            .first
            .is_some_and(|f| (1..0x8000).contains(&f.wrapping_sub(seq)))
        {
            return Seen::Unknown;
        }
        let back = highest.wrapping_sub(seq);
        if back >= 0x8000 {
            Seen::No // newer than the highest
        } else if back >= 64 {
            Seen::Unknown
        } else if self.seen & (1 << back) != 0 {
            Seen::Yes
        } else {
            Seen::No
        }
    }

    pub(super) fn mark(&mut self, seq: u16) {
        let Some(highest) = self.highest else {
            (self.highest, self.first, self.seen) = (Some(seq), Some(seq), 1);
            return;
        };
        let back = highest.wrapping_sub(seq);
        if back >= 0x8000 {
            let ahead = seq.wrapping_sub(highest);
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead } | 1;
            self.highest = Some(seq);
            self.first = self.first.filter(|f| seq.wrapping_sub(*f) < 64);
        } else if back < 64 {
            self.seen |= 1 << back;
        }
    }
}

impl Sfu {
    /// A RED packet of producer `pk`: the packets it recovers, then its primary, each as plain
    /// Opus through [`Sfu::forward_plain`] (see the module's comment).
    pub(super) fn forward_red(
        &mut self,
        pk: usize,
        packet: &[u8],
        header: &RtpHeader,
        now: Instant,
        out: &mut impl Egress,
    ) {
        let opus_pt = self.producers[pk].rtp.payload_type;
        if header.payload_len == 0 {
            // Padding only (a browser's bandwidth probe): passed on as it is, under Opus' payload
            // type, like a plain speaker's, so listeners see no gap in the sequence numbers.
            return self.forward_padding(pk, packet, opus_pt, now, out);
        }
        let payload = &packet[header.header_len..header.header_len + header.payload_len];
        let blocks = match red::blocks(payload) {
            Ok(b) => b,
            Err(e) => return self.counters.drop("rtp", e.as_str()),
        };
        let Some(primary) = blocks.clone().last().filter(|b| b.payload_type == opus_pt) else {
            return self.counters.drop("rtp", "red_primary_not_opus");
        };
        if self.producers[pk].red.get(header.sequence) == Seen::Yes {
            return self.counters.drop("rtp", "red_duplicate");
        }
        let Some(mut buf) = self.unred.take() else {
            return;
        };
        // Only packets known to be missing are recovered (`Seen::No`: none before the first).
        if let Some(duration) = opus::packet_duration(primary.data) {
            for b in blocks.filter(|b| b.timestamp_offset > 0) {
                let back = b.timestamp_offset / duration;
                if b.payload_type != opus_pt
                    || b.timestamp_offset % duration != 0
                    || back > MAX_RECOVER_BACK
                {
                    continue;
                }
                let sequence = header.sequence.wrapping_sub(back as u16);
                if self.producers[pk].red.get(sequence) != Seen::No {
                    continue;
                }
                let fields = red::Unpacked {
                    marker: false,
                    payload_type: opus_pt,
                    sequence,
                    timestamp: header.timestamp.wrapping_sub(b.timestamp_offset),
                };
                if let Some(n) =
                    red::unpack(packet, header.header_len, b.data, fields, &mut buf[..])
                {
                    self.producers[pk].red.mark(sequence);
                    self.counters.rtp_recovered += 1;
                    self.forward_unpacked(pk, &buf[..n], now, out);
                }
            }
        }
        let fields = red::Unpacked {
            marker: header.marker,
            payload_type: opus_pt,
            sequence: header.sequence,
            timestamp: header.timestamp,
        };
        if let Some(n) = red::unpack(
            packet,
            header.header_len,
            primary.data,
            fields,
            &mut buf[..],
        ) {
            self.producers[pk].red.mark(header.sequence);
            self.forward_unpacked(pk, &buf[..n], now, out);
        }
        self.unred = Some(buf);
    }

    fn forward_padding(
        &mut self,
        pk: usize,
        packet: &[u8],
        opus_pt: u8,
        now: Instant,
        out: &mut impl Egress,
    ) {
        let Some(mut buf) = self.unred.take() else {
            return;
        };
        if let Some(copy) = buf.get_mut(..packet.len()) {
            copy.copy_from_slice(packet);
            copy[1] = (copy[1] & 0x80) | opus_pt;
            self.producers[pk]
                .red
                .mark(u16::from_be_bytes([copy[2], copy[3]]));
            self.forward_unpacked(pk, copy, now, out);
        }
        self.unred = Some(buf);
    }

    fn forward_unpacked(&mut self, pk: usize, packet: &[u8], now: Instant, out: &mut impl Egress) {
        match rtp::parse(packet) {
            Ok(h) => self.forward_plain(pk, packet, &h, now, out),
            Err(e) => self.counters.drop("rtp", e.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Received, Seen};

    #[test]
    fn received_tracks_the_last_64_sequence_numbers_across_the_wrap() {
        let mut r = Received::default();
        assert_eq!(r.get(7), Seen::Unknown);
        r.mark(65534);
        assert_eq!((r.get(65534), r.get(65535)), (Seen::Yes, Seen::No));
        assert_eq!(r.get(65533), Seen::Unknown, "before the first");
        r.mark(1); // 65535 and 0 missing
        let got = (r.get(65535), r.get(0), r.get(1), r.get(65534));
        assert_eq!(got, (Seen::No, Seen::No, Seen::Yes, Seen::Yes));
        r.mark(0);
        assert_eq!(r.get(0), Seen::Yes);
        r.mark(70);
        assert_eq!(
            r.get(69),
            Seen::No,
            "the first left the window: all is known"
        );
        assert_eq!(r.get(7), Seen::No);
        assert_eq!(r.get(6), Seen::Unknown, "older than the window");
        r.mark(1); // too old to record: nothing changes
        assert_eq!((r.get(1), r.get(70)), (Seen::Unknown, Seen::Yes));
        r.mark(200); // a jump past the window forgets everything before
        let got = (r.get(200), r.get(199), r.get(70), r.get(137));
        assert_eq!(got, (Seen::Yes, Seen::No, Seen::Unknown, Seen::No));
        r.mark(263);
        assert_eq!((r.get(200), r.get(263)), (Seen::Yes, Seen::Yes));
        r.mark(264);
        assert_eq!(r.get(200), Seen::Unknown);
    }
}
