//! RED (RFC 2198) for listeners that negotiated it: each packet to them carries, before its
//! own frame, the speaker's [`DISTANCE`] frames before it, taken from the producer's history
//! (`crate::sfu::history`), so that a listener that lost one or two packets in a row plays
//! them from the next one. Speech frames only: Opus DTX frames (1–2 bytes, sent while a speaker
//! is silent) are not repeated. Plain Opus for every other listener.

use std::time::Instant;

use super::history::PacketHistory;
use crate::sfu::ortc::OPUS_PAYLOAD_TYPE;
use crate::wire::rtp::{self, red, RtpHeader};

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
