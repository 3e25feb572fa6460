//! RTP header handling for fan-out: parse once, rewrite per consumer, in place.
//!
//! A packet received from a producer is parsed once with [`parse`] (RFC 3550 §5.1 fixed header,
//! CSRC list, §5.3.1 header extension, padding). For each consumer the packet bytes are copied
//! into a scratch buffer and [`rewrite`] patches SSRC, payload type, sequence number, timestamp
//! and the RFC 8285 header-extension ids there; the payload is never touched and nothing moves
//! except extension elements inside their own block. [`SequenceMapper`] gives each consumer a
//! continuous sequence/timestamp space across producer pause/resume and replacement.
//!
//! Nothing here allocates.

pub mod audio_level;
mod extension;
pub mod opus;
pub mod red;
mod sequence;
#[cfg(test)]
mod tests;

use std::fmt;

pub use audio_level::{audio_level, opus_ticks};
pub use extension::{
    ExtensionMap, Extensions, EXTENSION_MAP_HIGH_CAPACITY, PROFILE_ONE_BYTE, PROFILE_TWO_BYTE,
};
pub use sequence::SequenceMapper;

/// Length of the fixed RTP header (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;

/// Why an RTP packet could not be parsed or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// The CSRC list runs past the end of the packet.
    TruncatedCsrc,
    /// The header-extension header or block runs past the end of the packet.
    TruncatedExtension,
    /// An RFC 8285 extension element runs past the end of its block.
    BadExtensionElement,
    /// The padding count is zero or larger than the bytes after the header.
    BadPadding,
    /// [`rewrite`] was given a buffer that does not match the parsed header.
    HeaderMismatch,
    /// [`rewrite`] was asked for a payload type above 127.
    BadPayloadType,
}

impl RtpError {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooShort => "rtp_too_short",
            Self::BadVersion => "rtp_bad_version",
            Self::TruncatedCsrc => "rtp_truncated_csrc",
            Self::TruncatedExtension => "rtp_truncated_extension",
            Self::BadExtensionElement => "rtp_bad_extension_element",
            Self::BadPadding => "rtp_bad_padding",
            Self::HeaderMismatch => "rtp_header_mismatch",
            Self::BadPayloadType => "rtp_bad_payload_type",
        }
    }
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RtpError {}

/// Where the header-extension block (RFC 3550 §5.3.1) lies in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExtensionBlock {
    /// The 16-bit profile word: 0xBEDE (one-byte form), 0x100X (two-byte form) or other.
    profile: u16,
    /// Offset of the first byte after the 4-byte extension header.
    start: usize,
    /// Offset one past the block's last byte (the end of the RTP header).
    end: usize,
    /// Where the elements are, recorded once by [`parse`] for every consumer's [`rewrite`].
    layout: extension::Layout,
}

/// A parsed RTP header (RFC 3550 §5.1). It borrows nothing: methods that need the bytes take
/// the packet it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit (for audio: first packet of a talk spurt).
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The sequence number.
    pub sequence: u16,
    /// The media timestamp, in the codec's clock rate.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: u32,
    /// Fixed header, CSRC list and extension block: the offset of the payload.
    pub header_len: usize,
    /// Payload length, padding excluded.
    pub payload_len: usize,
    extension: Option<ExtensionBlock>,
    padding_len: u8,
}

/// Parses and validates an RTP header: version 2, the CSRC list, the extension block and,
/// for the RFC 8285 forms, every extension element, and the padding count (RFC 3550 §5.1).
/// All lengths are checked against `packet`; nothing is copied.
pub fn parse(packet: &[u8]) -> Result<RtpHeader, RtpError> {
    let fixed = packet
        .first_chunk::<FIXED_HEADER_LEN>()
        .ok_or(RtpError::TooShort)?;
    let [b0, b1, s0, s1, t0, t1, t2, t3, i0, i1, i2, i3] = *fixed;
    if b0 >> 6 != 2 {
        return Err(RtpError::BadVersion);
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let csrc_count = usize::from(b0 & 0x0f);

    let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
    if packet.len() < header_len {
        return Err(RtpError::TruncatedCsrc);
    }

    let extension = if has_extension {
        let ext_header = packet
            .get(header_len..)
            .and_then(|rest| rest.first_chunk::<4>())
            .ok_or(RtpError::TruncatedExtension)?;
        let [p0, p1, l0, l1] = *ext_header;
        let start = header_len + 4;
        let end = start + 4 * usize::from(u16::from_be_bytes([l0, l1]));
        let block = packet.get(start..end).ok_or(RtpError::TruncatedExtension)?;
        let profile = u16::from_be_bytes([p0, p1]);
        let layout = extension::scan(profile, block)?;
        header_len = end;
        Some(ExtensionBlock {
            profile,
            start,
            end,
            layout,
        })
    } else {
        None
    };

    // RFC 3550 §5.1: the last octet of the padding counts the padding octets, itself included.
    let after_header = packet.len() - header_len;
    let padding_len = match (has_padding, packet.last()) {
        (false, _) => 0,
        (true, Some(&count)) if count != 0 && usize::from(count) <= after_header => count,
        (true, _) => return Err(RtpError::BadPadding),
    };

    Ok(RtpHeader {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7f,
        sequence: u16::from_be_bytes([s0, s1]),
        timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
        ssrc: u32::from_be_bytes([i0, i1, i2, i3]),
        header_len,
        payload_len: after_header - usize::from(padding_len),
        extension,
        padding_len,
    })
}

impl RtpHeader {
    /// Number of contributing sources, as recorded in the header length.
    pub fn csrc_count(&self) -> usize {
        let end = self.extension.map_or(self.header_len, |ext| ext.start - 4);
        (end - FIXED_HEADER_LEN) / 4
    }

    /// Number of padding octets after the payload (0 when the P bit is clear).
    pub fn padding_len(&self) -> usize {
        usize::from(self.padding_len)
    }

    /// The extension profile word, when the X bit is set: 0xBEDE for the RFC 8285 one-byte
    /// form, 0x1000..=0x100F for the two-byte form.
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension.map(|ext| ext.profile)
    }

    /// The payload of `packet` (the packet this header was parsed from), padding excluded.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> Option<&'a [u8]> {
        packet.get(self.header_len..self.header_len.checked_add(self.payload_len)?)
    }

    /// The data of the RFC 8285 extension element `id` in `packet`, in either the one-byte
    /// (§4.2, ids 1..=14) or the two-byte form (§4.3, ids 1..=255). `None` when absent or when
    /// the block uses another profile.
    pub fn extension<'a>(&self, packet: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let ext = self.extension.as_ref()?;
        let block = packet.get(ext.start..ext.end)?;
        if let Some(found) = extension::find(ext.profile, block, &ext.layout, id) {
            return found;
        }
        self.extensions(packet)
            .find(|&(element_id, _)| element_id == id)
            .map(|(_, data)| data)
    }

    /// Iterates the RFC 8285 extension elements of `packet` as `(id, data)`, padding skipped.
    /// Empty when there is no extension block or it uses another profile.
    pub fn extensions<'a>(&self, packet: &'a [u8]) -> Extensions<'a> {
        match self.extension {
            Some(ext) => Extensions::new(ext.profile, packet.get(ext.start..ext.end)),
            None => Extensions::new(0, None),
        }
    }
}

/// Rewrites the header of `packet` in place for one consumer: SSRC, payload type, sequence
/// number and timestamp are replaced; the marker bit, CSRCs, payload and padding are kept.
///
/// RFC 8285 extension ids are mapped through `extensions`; elements mapped to 0 are dropped by
/// compacting the block and zero-filling its tail (zero bytes are padding, §4.2/§4.3), so the
/// length word and everything after the block stay where they are. In the one-byte form an id
/// mapped above 14 cannot be expressed and is dropped too. A block with any other profile is
/// opaque and was not negotiated: it becomes an all-padding one-byte block.
///
/// `packet` must hold the bytes `header` was parsed from, normally a fresh copy per consumer:
/// a buffer of another length is rejected with [`RtpError::HeaderMismatch`], and other bytes
/// give a wrong (but memory-safe, panic-free) result.
pub fn rewrite(
    packet: &mut [u8],
    header: &RtpHeader,
    ssrc: u32,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    extensions: &ExtensionMap,
) -> Result<(), RtpError> {
    if payload_type > 0x7f {
        return Err(RtpError::BadPayloadType);
    }
    let expected_len = header.header_len + header.payload_len + header.padding_len();
    if packet.len() != expected_len {
        return Err(RtpError::HeaderMismatch);
    }
    let fixed = packet
        .first_chunk_mut::<FIXED_HEADER_LEN>()
        .ok_or(RtpError::HeaderMismatch)?;
    fixed[1] = (fixed[1] & 0x80) | payload_type;
    fixed[2..4].copy_from_slice(&sequence.to_be_bytes());
    fixed[4..8].copy_from_slice(&timestamp.to_be_bytes());
    fixed[8..12].copy_from_slice(&ssrc.to_be_bytes());

    if let Some(ext) = header.extension {
        extension::rewrite(packet, &ext, extensions)?;
    }
    Ok(())
}
