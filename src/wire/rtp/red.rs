//! RTP payload for redundant audio data (RFC 2198), as WebRTC uses it for Opus (`audio/red`,
//! `fmtp 111/111`): a packet carries, before its own (primary) frame, copies of one or more
//! earlier frames, so a listener that lost a packet plays it from the next one.
//!
//! [`encode`] turns a plain packet into a RED packet in place (the caller gives the earlier
//! frames); [`blocks`] reads a RED payload. Nothing here allocates.

use std::fmt;

/// Largest redundant block: 10 length bits (RFC 2198 §3).
pub const MAX_BLOCK_LEN: usize = (1 << 10) - 1;
/// Largest timestamp offset of a redundant block: 14 bits (RFC 2198 §3).
pub const MAX_TIMESTAMP_OFFSET: u32 = (1 << 14) - 1;

/// Why a RED payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// The block headers run past the payload, or the blocks' lengths do.
    Truncated,
}

impl RedError {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Truncated => "red_truncated",
        }
    }
}

impl fmt::Display for RedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One block of a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// The block's payload type (the codec's, e.g. Opus).
    pub payload_type: u8,
    /// How far before the packet's timestamp this block's frame lies (0 for the primary).
    pub timestamp_offset: u32,
    pub data: &'a [u8],
}

/// Makes the packet `buf[..len]`, whose payload starts at `header_len` and holds a frame of
/// payload type `pt`, a RED payload: the block headers and `redundant` frames, oldest first
/// (`(timestamp offset, frame)`), are inserted before the frame; the rest of the packet
/// (padding included) moves behind them. The header's own payload type is the caller's to set
/// (the RED one). Frames that cannot be described (offset 0 or over 14 bits, longer than 10
/// bits) are left out. Returns the new length, or `None` if `buf` is too small.
pub fn encode(
    buf: &mut [u8],
    len: usize,
    header_len: usize,
    pt: u8,
    redundant: &[(u32, &[u8])],
) -> Option<usize> {
    let fits = |&&(offset, data): &&(u32, &[u8])| {
        (1..=MAX_TIMESTAMP_OFFSET).contains(&offset) && data.len() <= MAX_BLOCK_LEN
    };
    let count = redundant.iter().filter(fits).count();
    let data_len: usize = redundant.iter().filter(fits).map(|(_, d)| d.len()).sum();
    let inserted = 4 * count + 1 + data_len;
    if header_len > len || len + inserted > buf.len() {
        return None;
    }
    buf.copy_within(header_len..len, header_len + inserted);
    let mut at = header_len;
    for &(offset, data) in redundant.iter().filter(fits) {
        let word = (1u32 << 31) | (u32::from(pt & 0x7f) << 24) | (offset << 10) | data.len() as u32;
        buf[at..at + 4].copy_from_slice(&word.to_be_bytes());
        at += 4;
    }
    buf[at] = pt & 0x7f;
    at += 1;
    for &(_, data) in redundant.iter().filter(fits) {
        buf[at..at + data.len()].copy_from_slice(data);
        at += data.len();
    }
    Some(len + inserted)
}

/// The RTP fields of a packet [`unpack`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
}

/// Writes to `out` a plain packet carrying one block's frame (`data`) of the RED packet
/// `packet`, whose payload starts at `header_len`: the RED packet's header (CSRCs and header
/// extensions kept, padding flag cleared) with the fields of `fields`, then `data`. Returns its
/// length; `None` if the header is shorter than 12 bytes or `out` too small.
pub fn unpack(
    packet: &[u8],
    header_len: usize,
    data: &[u8],
    fields: Unpacked,
    out: &mut [u8],
) -> Option<usize> {
    let len = header_len + data.len();
    if header_len < 12 || header_len > packet.len() || len > out.len() {
        return None;
    }
    out[..header_len].copy_from_slice(&packet[..header_len]);
    out[header_len..len].copy_from_slice(data);
    out[0] &= !0x20;
    out[1] = (u8::from(fields.marker) << 7) | (fields.payload_type & 0x7f);
    out[2..4].copy_from_slice(&fields.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&fields.timestamp.to_be_bytes());
    Some(len)
}

/// The blocks of a RED payload, oldest first, the primary last.
pub fn blocks(payload: &[u8]) -> Result<Blocks<'_>, RedError> {
    // Validate the headers and lengths once, so that iterating cannot fail.
    let mut at = 0;
    let mut data_len = 0usize;
    loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        let word = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        data_len += usize::from(u16::from_be_bytes([word[2], word[3]]) & 0x3ff);
        at += 4;
    }
    if at + data_len > payload.len() {
        return Err(RedError::Truncated);
    }
    Ok(Blocks {
        payload,
        header: 0,
        data: at,
    })
}

/// Iterator over the blocks of a validated RED payload; see [`blocks`].
#[derive(Debug, Clone)]
pub struct Blocks<'a> {
    payload: &'a [u8],
    /// Offset of the next block header, or past the end once the primary was returned.
    header: usize,
    /// Offset of the next block's data.
    data: usize,
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Block<'a>;

    fn next(&mut self) -> Option<Block<'a>> {
        let first = *self.payload.get(self.header)?;
        if first & 0x80 == 0 {
            self.header = self.payload.len() + 1;
            return Some(Block {
                payload_type: first,
                timestamp_offset: 0,
                data: self.payload.get(self.data..)?,
            });
        }
        let word = self.payload.get(self.header..self.header + 4)?;
        let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        let len = (word & 0x3ff) as usize;
        let data = self.payload.get(self.data..self.data + len)?;
        self.header += 4;
        self.data += len;
        Some(Block {
            payload_type: ((word >> 24) & 0x7f) as u8,
            timestamp_offset: (word >> 10) & MAX_TIMESTAMP_OFFSET,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 12-byte header and `payload`, in a roomy buffer.
    fn packet(payload: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = vec![0u8; 256];
        buf[0] = 0x80;
        buf[12..12 + payload.len()].copy_from_slice(payload);
        (buf, 12 + payload.len())
    }

    #[test]
    fn one_and_two_earlier_frames_round_trip() {
        let (mut buf, len) = packet(b"primary");
        let n = encode(&mut buf, len, 12, 100, &[(1920, b"older"), (960, b"prev")]).unwrap();
        assert_eq!(n, len + 4 + 4 + 1 + 5 + 4);
        // RFC 2198 §3: F=1, PT, 14-bit offset, 10-bit length; then F=0, PT.
        assert_eq!(
            buf[12..16],
            [
                0x80 | 100,
                (1920u32 >> 6) as u8,
                ((1920u32 & 0x3f) << 2) as u8,
                5
            ]
        );
        assert_eq!(buf[20], 100);
        let got: Vec<Block> = blocks(&buf[12..n]).unwrap().collect();
        assert_eq!(
            got,
            [
                Block {
                    payload_type: 100,
                    timestamp_offset: 1920,
                    data: b"older"
                },
                Block {
                    payload_type: 100,
                    timestamp_offset: 960,
                    data: b"prev"
                },
                Block {
                    payload_type: 100,
                    timestamp_offset: 0,
                    data: b"primary"
                },
            ]
        );
        // Primary only.
        let (mut buf, len) = packet(b"alone");
        let n = encode(&mut buf, len, 12, 111, &[]).unwrap();
        assert_eq!(&buf[12..n], b"\x6falone");
    }

    #[test]
    fn frames_that_do_not_fit_the_header_fields_are_left_out() {
        let big = [7u8; MAX_BLOCK_LEN + 1];
        let (mut buf, len) = packet(b"p");
        let mut roomy = vec![0u8; 4096];
        roomy[..buf.len()].copy_from_slice(&buf);
        let n = encode(
            &mut roomy,
            len,
            12,
            100,
            &[(20_000, b"far"), (0, b"same"), (960, &big)],
        )
        .unwrap();
        assert_eq!(&roomy[12..n], b"\x64p");
        assert_eq!(
            encode(&mut buf[..len + 5], len, 12, 100, &[(960, b"prev")]),
            None
        );
    }

    #[test]
    fn a_block_unpacks_to_a_plain_packet_with_the_red_packets_header() {
        // Version 2, padding, one CSRC; marker, payload type 63; a RED payload; 2 bytes of padding.
        let mut red = vec![
            0xa1,
            0x80 | 63,
            0x12,
            0x34,
            0,
            0,
            0x10,
            0,
            1,
            2,
            3,
            4,
            9,
            9,
            9,
            9,
        ];
        red.extend_from_slice(&[0x80 | 111, 0x0f, 0x00, 2, 111, 0xaa, 0xbb, 0xcc, 0, 2]);
        let h = crate::wire::rtp::parse(&red).unwrap();
        let blocks: Vec<Block> = blocks(&red[h.header_len..h.header_len + h.payload_len])
            .unwrap()
            .collect();
        assert_eq!(blocks[0].data, [0xaa, 0xbb]);
        let mut out = [0u8; 64];
        let fields = Unpacked {
            marker: false,
            payload_type: 111,
            sequence: 0x1233,
            timestamp: 0x1000 - 960,
        };
        let n = unpack(&red, h.header_len, blocks[0].data, fields, &mut out).unwrap();
        let p = crate::wire::rtp::parse(&out[..n]).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (false, 111, 0x1233, 0x1000 - 960, h.ssrc)
        );
        assert_eq!(&out[p.header_len..n], [0xaa, 0xbb], "no padding left");
        assert_eq!(out[12..16], [9, 9, 9, 9], "the CSRC kept");
        assert_eq!(unpack(&red, h.header_len, &[0; 60], fields, &mut out), None);
        assert_eq!(unpack(&red[..8], 8, &[], fields, &mut out), None);
    }

    #[test]
    fn truncated_red_payloads_are_errors() {
        let (mut buf, len) = packet(b"primary");
        let n = encode(&mut buf, len, 12, 100, &[(960, b"prev")]).unwrap();
        let red = &buf[12..n];
        for cut in 0..red.len() {
            if cut < 4 + 1 + 4 {
                assert_eq!(
                    blocks(&red[..cut]).err(),
                    Some(RedError::Truncated),
                    "{cut}"
                );
            }
        }
        assert_eq!(blocks(&[]).err(), Some(RedError::Truncated));
        assert_eq!(blocks(&[0x80, 0, 0]).err(), Some(RedError::Truncated));
        // An empty primary is allowed.
        assert_eq!(blocks(&[100]).unwrap().count(), 1);
    }
}
