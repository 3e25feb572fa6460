//! RTCP (RFC 3550 §6): compound-packet parsing, report builders and receive statistics.
//!
//! [`packets`] walks an inbound (already SRTCP-decrypted) compound or reduced-size (RFC 5506)
//! packet without copying; [`write_sender_report`], [`write_receiver_report`] and
//! [`write_sdes_cname`] and [`write_nack`] write into a caller buffer; [`ReceiveStats`] keeps the RFC 3550
//! A.1/A.3/A.8 statistics of one incoming stream. Nothing here allocates.

mod packet;
mod report;
mod reported;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use packet::{
    packets, Bye, NackItems, Packets, ReceiverReport, ReportBlocks, RtcpPacket, Sdes, SdesChunk,
    SdesChunks, SdesItem, SdesItems, SenderReport, SsrcList, FMT_NACK, FMT_PLI, SDES_CNAME,
};
pub use report::{
    write_nack, write_receiver_report, write_sdes_cname, write_sender_report, ReportBlock,
    MAX_REPORT_BLOCKS, REPORT_BLOCK_LEN,
};
pub use reported::ReportedLoss;
pub use stats::ReceiveStats;

/// Packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Packet type of source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Packet type of goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Packet type of application-defined packets (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// Packet type of transport-layer feedback (RFC 4585 §6.2).
pub const PT_RTPFB: u8 = 205;
/// Packet type of payload-specific feedback (RFC 4585 §6.3).
pub const PT_PSFB: u8 = 206;
/// Packet type of extended reports (RFC 3611).
pub const PT_XR: u8 = 207;

/// Why an RTCP packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcpError {
    /// Fewer than 4 bytes left for a common header.
    TooShort,
    /// The version field is not 2.
    BadVersion,
    /// The length field runs past the end of the datagram.
    BadLength,
    /// The padding count is zero or larger than the packet body.
    BadPadding,
    /// An SR/RR shorter than its fixed part and the report blocks its count announces.
    BadReportCount,
    /// Malformed SDES chunks or items.
    BadSdes,
    /// Malformed BYE source list or reason.
    BadBye,
    /// A feedback packet too short for its SSRCs, or FCI not in 32-bit words.
    BadFeedback,
}

impl RtcpError {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooShort => "rtcp_too_short",
            Self::BadVersion => "rtcp_bad_version",
            Self::BadLength => "rtcp_bad_length",
            Self::BadPadding => "rtcp_bad_padding",
            Self::BadReportCount => "rtcp_bad_report_count",
            Self::BadSdes => "rtcp_bad_sdes",
            Self::BadBye => "rtcp_bad_bye",
            Self::BadFeedback => "rtcp_bad_feedback",
        }
    }
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RtcpError {}

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// NTP 64-bit timestamp (32.32 fixed-point seconds since 1900) for a wall-clock time, as
/// carried in sender reports (RFC 3550 §4). Seconds wrap in 2036, as the format does; times
/// before 1900 give 0.
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let since_1900 = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.saturating_add(Duration::from_secs(NTP_UNIX_OFFSET)),
        Err(before) => Duration::from_secs(NTP_UNIX_OFFSET).saturating_sub(before.duration()),
    };
    let seconds = since_1900.as_secs() & 0xffff_ffff;
    let fraction = (u64::from(since_1900.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp (16.16 seconds), the form used by the LSR and DLSR
/// fields of report blocks (RFC 3550 §6.4.1).
pub fn compact_ntp(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time from a report block about a stream we send, received when the wall clock
/// read `arrival_ntp` (RFC 3550 §6.4.1: arrival − LSR − DLSR). `None` when the block does not
/// refer to a sender report yet or the clocks disagree.
pub fn round_trip_time(block: &ReportBlock, arrival_ntp: u64) -> Option<Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = compact_ntp(arrival_ntp)
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    // A "negative" result (clock steps, bogus DLSR) shows up as a huge unsigned value.
    if rtt > 0x8000_0000 {
        return None;
    }
    Some(Duration::from_nanos((u64::from(rtt) * 1_000_000_000) >> 16))
}
