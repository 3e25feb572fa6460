//! Zero-copy parsing of compound RTCP (RFC 3550 §6.1), including reduced-size packets
//! (RFC 5506) and the RFC 4585 feedback messages an SFU acts on.
//!
//! Each packet is validated when the iterator reaches it, so the views it returns
//! ([`ReportBlocks`], [`SdesChunks`], [`NackItems`], ...) iterate infallibly.

use super::report::{ReportBlock, REPORT_BLOCK_LEN};
use super::{RtcpError, PT_BYE, PT_PSFB, PT_RR, PT_RTPFB, PT_SDES, PT_SR};

/// Feedback message type of a generic NACK in an RTPFB packet (RFC 4585 §6.2.1).
pub const FMT_NACK: u8 = 1;
/// Feedback message type of a picture loss indication in a PSFB packet (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Sender report (RFC 3550 §6.4.1).
    SenderReport(SenderReport<'a>),
    /// Receiver report (RFC 3550 §6.4.2).
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (RFC 3550 §6.5).
    Sdes(Sdes<'a>),
    /// Goodbye (RFC 3550 §6.6).
    Bye(Bye<'a>),
    /// Generic NACK (RFC 4585 §6.2.1).
    Nack {
        /// SSRC of the packet's sender.
        sender_ssrc: u32,
        /// SSRC of the stream whose packets were lost.
        media_ssrc: u32,
        /// The lost packets.
        items: NackItems<'a>,
    },
    /// Picture loss indication (RFC 4585 §6.3.1).
    Pli {
        /// SSRC of the packet's sender.
        sender_ssrc: u32,
        /// SSRC of the stream to refresh.
        media_ssrc: u32,
    },
    /// Any other packet type or feedback format (APP, XR, transport-cc, REMB, ...), skipped.
    Other {
        /// The packet type (PT) field.
        packet_type: u8,
        /// The 5-bit count/format field.
        fmt: u8,
    },
}

/// Sender report (RFC 3550 §6.4.1). Profile-specific extensions are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// NTP timestamp of the report (RFC 3550 §4).
    pub ntp: u64,
    /// The same instant in the stream's RTP timestamp units.
    pub rtp_timestamp: u32,
    /// Packets sent since the stream started.
    pub packet_count: u32,
    /// Payload octets sent since the stream started.
    pub octet_count: u32,
    /// Reception report blocks.
    pub reports: ReportBlocks<'a>,
}

/// Receiver report (RFC 3550 §6.4.2). Profile-specific extensions are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// The reporter's SSRC.
    pub ssrc: u32,
    /// Reception report blocks.
    pub reports: ReportBlocks<'a>,
}

/// The report blocks of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    /// A whole number of 24-byte blocks.
    bytes: &'a [u8],
}

impl<'a> ReportBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.bytes.len() / REPORT_BLOCK_LEN
    }

    /// True when there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The blocks, in packet order.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.bytes
            .chunks_exact(REPORT_BLOCK_LEN)
            .filter_map(ReportBlock::read)
    }
}

/// Source description (RFC 3550 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Sdes<'a> {
    /// The chunks, one per source.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            body: self.body,
            pos: 0,
            remaining: self.count,
        }
    }
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    pos: usize,
    remaining: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        match sdes_chunk(self.body, self.pos) {
            Ok((chunk, next)) => {
                self.pos = next;
                Some(chunk)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The SSRC or CSRC described.
    pub ssrc: u32,
    /// Its items (terminator excluded).
    pub items: SdesItems<'a>,
}

impl<'a> SdesChunk<'a> {
    /// The CNAME item's value, if present.
    pub fn cname(&self) -> Option<&'a [u8]> {
        let mut items = self.items;
        items
            .find(|item| item.kind == SDES_CNAME)
            .map(|item| item.value)
    }
}

/// SDES item type of the canonical name (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;

/// Iterator over the items of an SDES chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItems<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// One SDES item (RFC 3550 §6.5): type, and value (normally UTF-8 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItem<'a> {
    /// Item type: 1 CNAME, 2 NAME, ... 8 PRIV.
    pub kind: u8,
    /// The value bytes.
    pub value: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.bytes.get(self.pos)?;
        let len = usize::from(*self.bytes.get(self.pos + 1)?);
        let value = self.bytes.get(self.pos + 2..self.pos + 2 + len)?;
        self.pos += 2 + len;
        Some(SdesItem { kind, value })
    }
}

/// Parses the SDES chunk at `pos`; returns it with the offset of the next chunk.
fn sdes_chunk(body: &[u8], pos: usize) -> Result<(SdesChunk<'_>, usize), RtcpError> {
    let ssrc = read_u32(body, pos).ok_or(RtcpError::BadSdes)?;
    let items_start = pos + 4;
    let mut at = items_start;
    // Items until a null type octet (RFC 3550 §6.5), which must be present.
    while *body.get(at).ok_or(RtcpError::BadSdes)? != 0 {
        let len = body.get(at + 1).ok_or(RtcpError::BadSdes)?;
        at += 2 + usize::from(*len);
    }
    let items = body.get(items_start..at).ok_or(RtcpError::BadSdes)?;
    // The terminator and null octets up to the next 32-bit boundary; tolerate a last chunk
    // that stops short of it.
    let next = (at + 1).next_multiple_of(4).min(body.len());
    Ok((
        SdesChunk {
            ssrc,
            items: SdesItems {
                bytes: items,
                pos: 0,
            },
        },
        next,
    ))
}

/// Goodbye (RFC 3550 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    /// The sources leaving.
    pub sources: SsrcList<'a>,
    /// The reason for leaving (normally UTF-8 text), when given.
    pub reason: Option<&'a [u8]>,
}

/// A list of 32-bit SSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsrcList<'a> {
    bytes: &'a [u8],
}

impl<'a> SsrcList<'a> {
    /// Number of SSRCs.
    pub fn len(&self) -> usize {
        self.bytes.len() / 4
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The SSRCs, in packet order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.bytes.chunks_exact(4).filter_map(|b| read_u32(b, 0))
    }
}

/// The FCI entries of a generic NACK (RFC 4585 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackItems<'a> {
    bytes: &'a [u8],
}

impl<'a> NackItems<'a> {
    /// The raw `(PID, BLP)` pairs: PID is lost, and bit i of BLP means PID + i + 1 is lost.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.bytes.chunks_exact(4).filter_map(|b| {
            let word = read_u32(b, 0)?;
            Some(((word >> 16) as u16, word as u16))
        })
    }

    /// Every lost sequence number, expanded from the pairs.
    pub fn lost(&self) -> impl Iterator<Item = u16> + 'a {
        self.iter().flat_map(|(pid, blp)| {
            (0..17u16).filter_map(move |i| match i {
                0 => Some(pid),
                _ if blp & (1 << (i - 1)) != 0 => Some(pid.wrapping_add(i)),
                _ => None,
            })
        })
    }
}

/// Iterator over the packets of a compound RTCP datagram; see [`packets`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

/// Iterates a compound (or reduced-size, RFC 5506) RTCP datagram. Each item is a `Result`:
/// the first malformed packet yields its error and ends the iteration, since the packets
/// after it cannot be located.
pub fn packets(compound: &[u8]) -> Packets<'_> {
    Packets { rest: compound }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match next_packet(self.rest) {
            Ok((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            Err(error) => {
                self.rest = &[];
                Some(Err(error))
            }
        }
    }
}

/// Splits off and parses the first packet of `buf` (RFC 3550 §6.4.1 common header).
fn next_packet(buf: &[u8]) -> Result<(RtcpPacket<'_>, &[u8]), RtcpError> {
    let &[b0, packet_type, l0, l1] = buf.first_chunk::<4>().ok_or(RtcpError::TooShort)?;
    if b0 >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let count = b0 & 0x1f;
    let total = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let (packet, rest) = buf.split_at_checked(total).ok_or(RtcpError::BadLength)?;
    let mut body = packet.get(4..).ok_or(RtcpError::BadLength)?;
    if b0 & 0x20 != 0 {
        // The last octet counts the padding octets, itself included (RFC 3550 §6.4.1).
        let pad = usize::from(*body.last().ok_or(RtcpError::BadPadding)?);
        body = body
            .len()
            .checked_sub(pad)
            .filter(|_| pad != 0)
            .and_then(|len| body.get(..len))
            .ok_or(RtcpError::BadPadding)?;
    }
    let parsed = match packet_type {
        PT_SR => RtcpPacket::SenderReport(SenderReport {
            ssrc: read_u32(body, 0).ok_or(RtcpError::BadReportCount)?,
            ntp: read_u64(body, 4).ok_or(RtcpError::BadReportCount)?,
            rtp_timestamp: read_u32(body, 12).ok_or(RtcpError::BadReportCount)?,
            packet_count: read_u32(body, 16).ok_or(RtcpError::BadReportCount)?,
            octet_count: read_u32(body, 20).ok_or(RtcpError::BadReportCount)?,
            reports: report_blocks(body, 24, count)?,
        }),
        PT_RR => RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: read_u32(body, 0).ok_or(RtcpError::BadReportCount)?,
            reports: report_blocks(body, 4, count)?,
        }),
        PT_SDES => {
            let mut pos = 0;
            for _ in 0..count {
                pos = sdes_chunk(body, pos)?.1;
            }
            RtcpPacket::Sdes(Sdes { count, body })
        }
        PT_BYE => RtcpPacket::Bye(bye(body, count)?),
        PT_RTPFB if count == FMT_NACK => {
            let (sender_ssrc, media_ssrc) = feedback_ssrcs(body)?;
            let fci = body.get(8..).ok_or(RtcpError::BadFeedback)?;
            if fci.len() % 4 != 0 {
                return Err(RtcpError::BadFeedback);
            }
            RtcpPacket::Nack {
                sender_ssrc,
                media_ssrc,
                items: NackItems { bytes: fci },
            }
        }
        PT_PSFB if count == FMT_PLI => {
            let (sender_ssrc, media_ssrc) = feedback_ssrcs(body)?;
            RtcpPacket::Pli {
                sender_ssrc,
                media_ssrc,
            }
        }
        _ => RtcpPacket::Other {
            packet_type,
            fmt: count,
        },
    };
    Ok((parsed, rest))
}

/// The sender and media SSRCs that start every feedback message (RFC 4585 §6.1).
fn feedback_ssrcs(body: &[u8]) -> Result<(u32, u32), RtcpError> {
    match (read_u32(body, 0), read_u32(body, 4)) {
        (Some(sender), Some(media)) => Ok((sender, media)),
        _ => Err(RtcpError::BadFeedback),
    }
}

fn report_blocks(body: &[u8], start: usize, count: u8) -> Result<ReportBlocks<'_>, RtcpError> {
    let end = start + usize::from(count) * REPORT_BLOCK_LEN;
    let bytes = body.get(start..end).ok_or(RtcpError::BadReportCount)?;
    Ok(ReportBlocks { bytes })
}

fn bye(body: &[u8], count: u8) -> Result<Bye<'_>, RtcpError> {
    let (list, rest) = body
        .split_at_checked(usize::from(count) * 4)
        .ok_or(RtcpError::BadBye)?;
    // Optional reason: a length octet and that many octets (RFC 3550 §6.6).
    let reason = match rest.first() {
        None | Some(0) => None,
        Some(&len) => Some(rest.get(1..1 + usize::from(len)).ok_or(RtcpError::BadBye)?),
    };
    Ok(Bye {
        sources: SsrcList { bytes: list },
        reason,
    })
}

pub(super) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..)?
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..)?
        .first_chunk::<8>()
        .map(|b| u64::from_be_bytes(*b))
}
