//! RFC 6464: the client-to-mixer audio level header extension
//! (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`), and the media time an Opus packet carries
//! (RFC 6716 §3.1), which speaking detection weighs each level by.
//!
//! The element is one byte in either RFC 8285 form: `V` (bit 7, "voice activity", set by
//! browsers from the encoder rather than a voice detector) and the level in −dBov (0..=127,
//! 0 the loudest, 127 digital silence). Nothing here allocates.

use super::RtpHeader;

/// Highest (quietest) level: digital silence (RFC 6464 §3).
pub const SILENCE: u8 = 127;

/// The audio level element was present but not one byte long (RFC 6464 §3, RFC 8285 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongLength;

/// The level (−dBov, 0..=127) in the audio level element `id` of `packet`, the V flag
/// ignored. `None` when the packet has no such element, `Err` when its length is not one byte.
#[inline]
pub fn audio_level(header: &RtpHeader, packet: &[u8], id: u8) -> Option<Result<u8, WrongLength>> {
    match header.extension(packet, id)? {
        &[byte] => Some(Ok(byte & 0x7f)),
        _ => Some(Err(WrongLength)),
    }
}

/// 48 kHz ticks of a 2.5 ms Opus frame, the shortest (RFC 6716 §2.1.4).
const TICKS_2_5_MS: u32 = 120;
/// The longest media an Opus packet may hold: 120 ms (RFC 6716 §3.2.5).
pub const MAX_OPUS_TICKS: u32 = 48 * 120;

/// The media time of the Opus packet `payload` in 48 kHz ticks, from its TOC byte
/// (RFC 6716 §3.1: the configuration gives the frame length, the code the frame count; code 3
/// counts them in the second byte). 0 for an empty or malformed payload.
#[inline]
pub fn opus_ticks(payload: &[u8]) -> u32 {
    let Some(&toc) = payload.first() else {
        return 0;
    };
    // Frame length by configuration, in 2.5 ms units: SILK 10/20/40/60 ms, Hybrid 10/20 ms,
    // CELT 2.5/5/10/20 ms.
    const UNITS: [u8; 32] = [
        4, 8, 16, 24, 4, 8, 16, 24, 4, 8, 16, 24, 4, 8, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
        1, 2, 4, 8,
    ];
    let units = u32::from(UNITS[usize::from(toc >> 3)]);
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => match payload.get(1) {
            Some(&count) => u32::from(count & 0x3f),
            None => 0,
        },
    };
    (units * TICKS_2_5_MS * frames).min(MAX_OPUS_TICKS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::parse;

    fn packet(ext_profile: u16, block: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        p.extend_from_slice(&ext_profile.to_be_bytes());
        p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(block);
        p.push(0xf8);
        p
    }

    #[test]
    fn both_forms_and_the_v_flag() {
        // One-byte form: id 1, L=0 (one byte): V set, level 33.
        let p = packet(0xBEDE, &[0x10, 0x80 | 33, 0, 0]);
        let h = parse(&p).unwrap();
        assert_eq!(audio_level(&h, &p, 1), Some(Ok(33)));
        assert_eq!(audio_level(&h, &p, 2), None);
        // Two-byte form: id 1, length 1, V clear, level 90; after a padding byte.
        let p = packet(0x1000, &[0, 1, 1, 90]);
        let h = parse(&p).unwrap();
        assert_eq!(audio_level(&h, &p, 1), Some(Ok(90)));
    }

    #[test]
    fn wrong_length_and_missing() {
        // One-byte form, L=1: two bytes.
        let p = packet(0xBEDE, &[0x11, 10, 10, 0]);
        let h = parse(&p).unwrap();
        assert_eq!(audio_level(&h, &p, 1), Some(Err(WrongLength)));
        // Two-byte form, length 0.
        let p = packet(0x1000, &[1, 0, 0, 0]);
        let h = parse(&p).unwrap();
        assert_eq!(audio_level(&h, &p, 1), Some(Err(WrongLength)));
        // No extension block at all.
        let p = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0xf8];
        let h = parse(&p).unwrap();
        assert_eq!(audio_level(&h, &p, 1), None);
    }

    /// `RtpHeader::extension` goes through the layout `parse` recorded; it must find what a
    /// walk over the bytes finds, in both forms, with padding, after an id-15 stop, and past the
    /// layout's capacity.
    #[test]
    fn layout_lookup_matches_the_walk() {
        let blocks: Vec<(u16, Vec<u8>)> = vec![
            (0xBEDE, vec![0x10, 7, 0, 0x21, 1, 2, 0, 0]),
            (0xBEDE, vec![0, 0, 0x30, 9, 0xf0, 0x10, 5, 0]),
            (
                0xBEDE,
                (1..=12u8)
                    .flat_map(|id| [id << 4, id])
                    .chain([0, 0, 0, 0])
                    .collect(),
            ),
            (0x1000, vec![1, 1, 5, 0, 2, 3, 1, 2, 3, 0, 0, 0]),
            (0x1000, vec![3, 0, 200, 2, 1, 2, 0, 0]),
            (0x1234, vec![0x10, 7, 0, 0]),
        ];
        for (profile, block) in blocks {
            let p = packet(profile, &block);
            let h = parse(&p).unwrap();
            for id in 0..=255u8 {
                let walked = h.extensions(&p).find(|&(i, _)| i == id).map(|(_, d)| d);
                assert_eq!(
                    h.extension(&p, id),
                    walked,
                    "{profile:#x} {block:?} id {id}"
                );
            }
        }
    }

    #[test]
    fn opus_toc_durations() {
        let ms = |t: u32| t as f64 / 48.0;
        // CELT FB 20 ms, one frame (what browsers send).
        assert_eq!(ms(opus_ticks(&[0xf8])), 20.0);
        // SILK WB 60 ms.
        assert_eq!(ms(opus_ticks(&[(11 << 3)])), 60.0);
        // Hybrid SWB 10 ms, two frames (code 1).
        assert_eq!(ms(opus_ticks(&[(12 << 3) | 1])), 20.0);
        // CELT 2.5 ms, code 3 with 6 frames.
        assert_eq!(ms(opus_ticks(&[(16 << 3) | 3, 6])), 15.0);
        // Code 3 claiming 63 frames of 60 ms: capped at 120 ms.
        assert_eq!(ms(opus_ticks(&[(3 << 3) | 3, 63])), 120.0);
        assert_eq!(opus_ticks(&[]), 0);
        assert_eq!(opus_ticks(&[(16 << 3) | 3]), 0);
    }
}
