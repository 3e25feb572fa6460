//! What a relay datagram carries once opened: one message, a type octet and its fields.
//!
//! ```text
//! Media         | 1 | stream (u32) | RTP packet ...      |
//! Keepalive     | 2 | sent at, µs (u64)                  |
//! KeepaliveAck  | 3 | echoed (u64)                       |
//! ```
//!
//! Integers are big-endian. `stream` is the sender's number for one of its local producers on
//! this link (announced over the control channel); the RTP packet is the producer's, as it
//! arrived and was unprotected, header extensions (the RFC 6464 audio level) included, so that
//! the receiving node fans it out exactly like a local producer's packet. A keepalive carries the
//! sender's clock in microseconds; the peer echoes it at once, which gives the sender the link's
//! round-trip time and both ends the link's liveness.
//!
//! [`Payload::parse`] checks every field and never panics; nothing here allocates.

use std::fmt;

use crate::wire::rtp::FIXED_HEADER_LEN;

/// Type octet of [`Payload::Media`].
pub const TYPE_MEDIA: u8 = 1;
/// Type octet of [`Payload::Keepalive`].
pub const TYPE_KEEPALIVE: u8 = 2;
/// Type octet of [`Payload::KeepaliveAck`].
pub const TYPE_KEEPALIVE_ACK: u8 = 3;
/// Octets of a media message before the RTP packet: type and stream.
pub const MEDIA_HEADER_LEN: usize = 5;
/// Length of a keepalive or its acknowledgement.
pub const KEEPALIVE_LEN: usize = 9;

/// One message of the relay link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A producer's RTP packet.
    Media {
        /// The sender's number for the producer on this link.
        stream: u32,
        /// The whole RTP packet (at least its 12-octet fixed header).
        rtp: &'a [u8],
    },
    /// Liveness probe: the sender's clock, in microseconds.
    Keepalive { sent_at_micros: u64 },
    /// Answer to a [`Payload::Keepalive`]: its `sent_at_micros`, unchanged.
    KeepaliveAck { echoed: u64 },
}

/// Why a payload could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadError {
    /// No octet at all.
    Empty,
    /// The type octet is none of the known ones.
    UnknownType(u8),
    /// Shorter than the message type's fixed fields.
    Truncated,
    /// A keepalive (or acknowledgement) with octets after its field.
    TrailingBytes,
    /// A media message whose RTP packet is shorter than the RTP fixed header.
    ShortRtp,
}

impl PayloadError {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Empty => "payload_empty",
            Self::UnknownType(_) => "payload_unknown_type",
            Self::Truncated => "payload_truncated",
            Self::TrailingBytes => "payload_trailing_bytes",
            Self::ShortRtp => "payload_short_rtp",
        }
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(t) => write!(f, "{} ({t})", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl std::error::Error for PayloadError {}

/// The `u64` of an exactly 9-octet keepalive message.
fn keepalive_field(data: &[u8]) -> Result<u64, PayloadError> {
    match data.len() {
        n if n < KEEPALIVE_LEN => Err(PayloadError::Truncated),
        n if n > KEEPALIVE_LEN => Err(PayloadError::TrailingBytes),
        _ => {
            let mut field = [0u8; 8];
            field.copy_from_slice(&data[1..KEEPALIVE_LEN]);
            Ok(u64::from_be_bytes(field))
        }
    }
}

impl<'a> Payload<'a> {
    /// Parses an opened datagram's plaintext.
    pub fn parse(data: &'a [u8]) -> Result<Payload<'a>, PayloadError> {
        let Some(&kind) = data.first() else {
            return Err(PayloadError::Empty);
        };
        match kind {
            TYPE_MEDIA => {
                if data.len() < MEDIA_HEADER_LEN {
                    return Err(PayloadError::Truncated);
                }
                let mut stream = [0u8; 4];
                stream.copy_from_slice(&data[1..MEDIA_HEADER_LEN]);
                let rtp = &data[MEDIA_HEADER_LEN..];
                if rtp.len() < FIXED_HEADER_LEN {
                    return Err(PayloadError::ShortRtp);
                }
                Ok(Payload::Media {
                    stream: u32::from_be_bytes(stream),
                    rtp,
                })
            }
            TYPE_KEEPALIVE => Ok(Payload::Keepalive {
                sent_at_micros: keepalive_field(data)?,
            }),
            TYPE_KEEPALIVE_ACK => Ok(Payload::KeepaliveAck {
                echoed: keepalive_field(data)?,
            }),
            other => Err(PayloadError::UnknownType(other)),
        }
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        match self {
            Payload::Media { rtp, .. } => MEDIA_HEADER_LEN + rtp.len(),
            Payload::Keepalive { .. } | Payload::KeepaliveAck { .. } => KEEPALIVE_LEN,
        }
    }

    /// Never empty: every message has at least its type octet.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message at the start of `out`; returns its length, or `None` if `out` is too
    /// short. To seal it without another copy, write into `&mut buf[HEADER_LEN..]` and pass the
    /// length to [`seal_in_place`](super::seal_in_place).
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.len();
        let out = out.get_mut(..len)?;
        match *self {
            Payload::Media { stream, rtp } => {
                out[0] = TYPE_MEDIA;
                out[1..MEDIA_HEADER_LEN].copy_from_slice(&stream.to_be_bytes());
                out[MEDIA_HEADER_LEN..].copy_from_slice(rtp);
            }
            Payload::Keepalive { sent_at_micros } => {
                out[0] = TYPE_KEEPALIVE;
                out[1..].copy_from_slice(&sent_at_micros.to_be_bytes());
            }
            Payload::KeepaliveAck { echoed } => {
                out[0] = TYPE_KEEPALIVE_ACK;
                out[1..].copy_from_slice(&echoed.to_be_bytes());
            }
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTP: [u8; 14] = [0x80, 111, 0, 7, 0, 0, 3, 192, 0, 0, 0, 9, 0xfc, 0xff];

    #[test]
    fn messages_round_trip_with_their_exact_bytes() {
        let cases: [(Payload, &[u8]); 3] = [
            (
                Payload::Media {
                    stream: 0x0102_0304,
                    rtp: &RTP,
                },
                &[1, 1, 2, 3, 4],
            ),
            (
                Payload::Keepalive {
                    sent_at_micros: 0x1122_3344_5566_7788,
                },
                &[2, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            ),
            (
                Payload::KeepaliveAck { echoed: u64::MAX },
                &[3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ];
        for (message, prefix) in cases {
            let mut buf = [0u8; 64];
            let n = message.write(&mut buf).unwrap();
            assert_eq!(n, message.len());
            assert_eq!(&buf[..prefix.len()], prefix);
            assert_eq!(Payload::parse(&buf[..n]), Ok(message));
            // One octet short of room: refused, nothing written past it.
            assert_eq!(message.write(&mut buf[..n - 1]), None);
        }
        let mut buf = [0u8; 64];
        let n = Payload::Media {
            stream: 1,
            rtp: &RTP,
        }
        .write(&mut buf)
        .unwrap();
        assert_eq!(&buf[MEDIA_HEADER_LEN..n], &RTP);
    }

    #[test]
    fn each_bad_input_has_its_error() {
        assert_eq!(Payload::parse(&[]), Err(PayloadError::Empty));
        for t in [0u8, 4, 0x80, 0xff] {
            assert_eq!(
                Payload::parse(&[t, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(PayloadError::UnknownType(t))
            );
        }
        assert_eq!(Payload::parse(&[1, 0, 0, 0]), Err(PayloadError::Truncated));
        assert_eq!(
            Payload::parse(&[1, 0, 0, 0, 1]),
            Err(PayloadError::ShortRtp)
        );
        let mut media = [0u8; MEDIA_HEADER_LEN + FIXED_HEADER_LEN];
        media[0] = TYPE_MEDIA;
        assert_eq!(
            Payload::parse(&media[..media.len() - 1]),
            Err(PayloadError::ShortRtp)
        );
        assert!(Payload::parse(&media).is_ok());
        for t in [TYPE_KEEPALIVE, TYPE_KEEPALIVE_ACK] {
            assert_eq!(Payload::parse(&[t]), Err(PayloadError::Truncated));
            assert_eq!(
                Payload::parse(&[t, 0, 0, 0, 0, 0, 0, 0]),
                Err(PayloadError::Truncated)
            );
            assert_eq!(
                Payload::parse(&[t, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(PayloadError::TrailingBytes)
            );
        }
        assert_eq!(
            PayloadError::UnknownType(9).to_string(),
            "payload_unknown_type (9)"
        );
    }

    #[test]
    fn every_short_input_parses_or_fails_without_panic() {
        // Every length up to 32 of every type octet, with varied contents.
        for t in 0..=255u8 {
            for len in 0..32usize {
                let data: Vec<u8> = std::iter::once(t)
                    .chain((0..len as u8).map(|i| i.wrapping_mul(37)))
                    .take(len)
                    .collect();
                if let Ok(p) = Payload::parse(&data) {
                    assert_eq!(p.len(), data.len());
                }
            }
        }
    }
}
