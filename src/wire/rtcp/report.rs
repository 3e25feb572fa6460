//! RTCP builders: sender and receiver reports (RFC 3550 §6.4) and an SDES CNAME (§6.5.1).
//!
//! Each writes one packet at the start of a caller buffer and returns its length, or `None`
//! when the buffer is too small; concatenating the outputs gives a compound packet.

use super::{PT_RR, PT_SDES, PT_SR};

/// Length of a reception report block (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;
/// Most report blocks one SR/RR can carry (5-bit count).
pub const MAX_REPORT_BLOCKS: usize = 31;

/// A reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the start, 24-bit signed (negative with duplicates); clamped on
    /// writing.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles in the high 16 bits.
    pub highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from this source (0 if none).
    pub last_sr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

const MAX_CUMULATIVE_LOST: i32 = (1 << 23) - 1;
const MIN_CUMULATIVE_LOST: i32 = -(1 << 23);

impl ReportBlock {
    /// Decodes a 24-byte block; `None` when `bytes` is shorter.
    pub fn read(bytes: &[u8]) -> Option<Self> {
        let &[s0, s1, s2, s3, fraction_lost, c0, c1, c2, h0, h1, h2, h3, j0, j1, j2, j3, l0, l1, l2, l3, d0, d1, d2, d3] =
            bytes.first_chunk::<REPORT_BLOCK_LEN>()?;
        Some(Self {
            ssrc: u32::from_be_bytes([s0, s1, s2, s3]),
            fraction_lost,
            // Sign-extend the 24-bit field.
            cumulative_lost: i32::from_be_bytes([c0, c1, c2, 0]) >> 8,
            highest_sequence: u32::from_be_bytes([h0, h1, h2, h3]),
            jitter: u32::from_be_bytes([j0, j1, j2, j3]),
            last_sr: u32::from_be_bytes([l0, l1, l2, l3]),
            delay_since_last_sr: u32::from_be_bytes([d0, d1, d2, d3]),
        })
    }

    /// Encodes the block into `out[..24]`; `None` when `out` is shorter.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let out = out.first_chunk_mut::<REPORT_BLOCK_LEN>()?;
        let lost = self
            .cumulative_lost
            .clamp(MIN_CUMULATIVE_LOST, MAX_CUMULATIVE_LOST)
            .to_be_bytes();
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost[1..4]);
        out[8..12].copy_from_slice(&self.highest_sequence.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
        Some(())
    }
}

/// Writes the common header (RFC 3550 §6.4.1): V=2, no padding, `count`, `packet_type` and
/// the length in 32-bit words minus one. `len` must be a multiple of 4.
fn write_header(out: &mut [u8], count: usize, packet_type: u8, len: usize) -> Option<()> {
    let words = u16::try_from(len / 4 - 1).ok()?;
    let count = u8::try_from(count).ok().filter(|&c| c <= 31)?;
    let [w0, w1] = words.to_be_bytes();
    out.get_mut(..4)?
        .copy_from_slice(&[0x80 | count, packet_type, w0, w1]);
    Some(())
}

/// Copies `bytes` to `out[at..]`.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> Option<()> {
    out.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
    Some(())
}

/// Writes a sender report without report blocks (RFC 3550 §6.4.1): 28 bytes.
pub fn write_sender_report(
    out: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_timestamp: u32,
    packet_count: u32,
    octet_count: u32,
) -> Option<usize> {
    const LEN: usize = 28;
    let out = out.get_mut(..LEN)?;
    write_header(out, 0, PT_SR, LEN)?;
    put(out, 4, &ssrc.to_be_bytes())?;
    put(out, 8, &ntp.to_be_bytes())?;
    put(out, 16, &rtp_timestamp.to_be_bytes())?;
    put(out, 20, &packet_count.to_be_bytes())?;
    put(out, 24, &octet_count.to_be_bytes())?;
    Some(LEN)
}

/// Writes a receiver report from `reporter_ssrc` with up to 31 `blocks` (RFC 3550 §6.4.2):
/// 8 + 24 × blocks bytes. `None` when there are more blocks or `out` is too small.
pub fn write_receiver_report(
    out: &mut [u8],
    reporter_ssrc: u32,
    blocks: &[ReportBlock],
) -> Option<usize> {
    if blocks.len() > MAX_REPORT_BLOCKS {
        return None;
    }
    let len = 8 + blocks.len() * REPORT_BLOCK_LEN;
    let out = out.get_mut(..len)?;
    write_header(out, blocks.len(), PT_RR, len)?;
    put(out, 4, &reporter_ssrc.to_be_bytes())?;
    let block_bytes = out.get_mut(8..)?.chunks_exact_mut(REPORT_BLOCK_LEN);
    for (block, bytes) in blocks.iter().zip(block_bytes) {
        block.write(bytes)?;
    }
    Some(len)
}

/// Writes an SDES packet with one chunk holding a CNAME item (RFC 3550 §6.5.1). `None` when
/// the CNAME is longer than 255 bytes or `out` is too small.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &str) -> Option<usize> {
    let name_len = u8::try_from(cname.len()).ok()?;
    // Header, SSRC, item type and length, text, then at least one null octet up to the next
    // 32-bit boundary, which terminates the item list.
    let len = (4 + 4 + 2 + cname.len() + 1).next_multiple_of(4);
    let out = out.get_mut(..len)?;
    write_header(out, 1, PT_SDES, len)?;
    put(out, 4, &ssrc.to_be_bytes())?;
    put(out, 8, &[super::packet::SDES_CNAME, name_len])?;
    put(out, 10, cname.as_bytes())?;
    out.get_mut(10 + cname.len()..)?.fill(0);
    Some(len)
}

/// Writes a generic NACK (RFC 4585 §6.2.1) from `sender_ssrc` asking `media_ssrc` for the
/// sequence numbers in `lost` (ascending, modulo 2^16): each FCI entry is a PID and a bitmask
/// of the 16 numbers after it. 12 + 4 × entries bytes; `None` when `lost` is empty or `out`
/// cannot hold the header and every entry.
pub fn write_nack(
    out: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: impl IntoIterator<Item = u16>,
) -> Option<usize> {
    let mut len = 12;
    let mut entry: Option<(u16, u16)> = None;
    for seq in lost {
        if let Some((pid, blp)) = &mut entry {
            let d = seq.wrapping_sub(*pid);
            if (1..=16).contains(&d) {
                *blp |= 1 << (d - 1);
                continue;
            }
            put(
                out,
                len,
                &((u32::from(*pid) << 16) | u32::from(*blp)).to_be_bytes(),
            )?;
            len += 4;
        }
        entry = Some((seq, 0));
    }
    let (pid, blp) = entry?;
    put(
        out,
        len,
        &((u32::from(pid) << 16) | u32::from(blp)).to_be_bytes(),
    )?;
    len += 4;
    write_header(out, usize::from(super::FMT_NACK), super::PT_RTPFB, len)?;
    put(out, 4, &sender_ssrc.to_be_bytes())?;
    put(out, 8, &media_ssrc.to_be_bytes())?;
    Some(len)
}
