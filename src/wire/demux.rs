//! Demultiplexing of the protocols sharing one WebRTC UDP 5-tuple.
//!
//! [RFC 7983] §7 (updated by [RFC 9443]) tells STUN, DTLS and RTP/RTCP apart by the first byte;
//! [RFC 5761] §4 then separates RTCP from RTP on the same port by the second byte: RTCP packet
//! types 192..=223 (SR, RR, SDES, BYE, APP, RTPFB, PSFB, ...) are exactly the RTP bytes "marker
//! set + payload type 64..=95", which RFC 5761 keeps out of RTP payload-type use.
//!
//! Only the leading bytes are looked at; each protocol's parser validates the rest.
//!
//! [RFC 7983]: https://www.rfc-editor.org/rfc/rfc7983
//! [RFC 9443]: https://www.rfc-editor.org/rfc/rfc9443
//! [RFC 5761]: https://www.rfc-editor.org/rfc/rfc5761

/// Which protocol a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Empty, ZRTP (16..=19), TURN channel data (64..=79), QUIC, or anything unassigned.
    Unknown,
}

impl PacketKind {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            PacketKind::Stun => "stun",
            PacketKind::Dtls => "dtls",
            PacketKind::Rtp => "rtp",
            PacketKind::Rtcp => "rtcp",
            PacketKind::Unknown => "unknown",
        }
    }
}

/// Classifies a received datagram (RFC 7983 §7, RFC 5761 §4).
///
/// RTP and RTCP need their second byte, so a one-byte datagram in 128..=191 is `Unknown`.
pub fn classify(datagram: &[u8]) -> PacketKind {
    match datagram {
        [0..=3, ..] => PacketKind::Stun,
        [20..=63, ..] => PacketKind::Dtls,
        [128..=191, 192..=223, ..] => PacketKind::Rtcp,
        [128..=191, _, ..] => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges() {
        for b in 0u8..=255 {
            let expected = match b {
                0..=3 => PacketKind::Stun,
                20..=63 => PacketKind::Dtls,
                128..=191 => PacketKind::Rtp,
                _ => PacketKind::Unknown,
            };
            // Second byte 0x00 = RTP payload type 0, marker clear.
            assert_eq!(classify(&[b, 0x00, 0, 0]), expected, "first byte {b}");
        }
    }

    #[test]
    fn rtcp_split_on_second_byte() {
        for pt in 0u8..=255 {
            let expected = if (192..=223).contains(&pt) {
                PacketKind::Rtcp
            } else {
                PacketKind::Rtp
            };
            assert_eq!(classify(&[0x80, pt, 0, 1]), expected, "second byte {pt}");
        }
        // RTCP sender report (PT 200) and receiver report (201) with RC bits set.
        assert_eq!(classify(&[0x81, 200, 0, 12]), PacketKind::Rtcp);
        assert_eq!(classify(&[0xA1, 201, 0, 7]), PacketKind::Rtcp);
        // Opus (PT 111), with and without the marker bit.
        assert_eq!(classify(&[0x80, 111]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 111]), PacketKind::Rtp);
        // Marker + PT 72 is RTCP's 200 on the wire (RFC 5761 §4).
        assert_eq!(classify(&[0x80, 0x80 | 72]), PacketKind::Rtcp);
    }

    #[test]
    fn short_and_empty() {
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
        assert_eq!(classify(&[0x00]), PacketKind::Stun);
        assert_eq!(classify(&[22]), PacketKind::Dtls);
    }

    #[test]
    fn real_headers() {
        // STUN Binding request header (RFC 5769 §2.1).
        assert_eq!(
            classify(&[0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42]),
            PacketKind::Stun
        );
        // DTLS 1.2 handshake record (content type 22, version 0xFEFD).
        assert_eq!(classify(&[22, 0xFE, 0xFD, 0, 0]), PacketKind::Dtls);
        // TURN ChannelData (channel 0x4000).
        assert_eq!(classify(&[0x40, 0x00, 0, 4]), PacketKind::Unknown);
    }
}
