//! The Opus packet's table-of-contents byte (RFC 6716 §3.1), read only for a packet's
//! duration: choir needs it to tell which earlier packet a RED block repeats.

/// Duration of one Opus packet in 48 kHz samples (RTP's Opus clock, RFC 7587 §4.1), from its
/// TOC byte and, for code 3, the frame count byte. `None` for an empty or malformed packet,
/// or one longer than RFC 6716's 120 ms.
pub fn packet_duration(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: 2.5, 5, 10, 20, 40, 60 ms.
    let frame = match config {
        // SILK-only (NB, MB, WB): 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid (SWB, FB): 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only (NB, WB, SWB, FB): 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::packet_duration;

    #[test]
    fn durations_from_the_toc_byte() {
        // Config 31 (CELT FB 20 ms), one frame: what WebRTC's Opus sends in music/fullband mode.
        assert_eq!(packet_duration(&[0xf8, 0xff]), Some(960));
        // Config 9 (SILK WB 20 ms) and 15 (hybrid FB 20 ms): WebRTC speech.
        assert_eq!(packet_duration(&[0x48, 1, 2]), Some(960));
        assert_eq!(packet_duration(&[0x78]), Some(960));
        // Config 12 (hybrid SWB 10 ms), code 1: two frames.
        assert_eq!(packet_duration(&[0x61, 0, 0]), Some(960));
        // Config 3 (SILK NB 60 ms) and 16 (CELT NB 2.5 ms).
        assert_eq!(packet_duration(&[0x18]), Some(2880));
        assert_eq!(packet_duration(&[0x80]), Some(120));
        // Code 3: the count byte; 6 × 20 ms is RFC 6716's maximum of 120 ms.
        assert_eq!(packet_duration(&[0xfb, 0x06]), Some(5760));
        assert_eq!(packet_duration(&[0xfb, 0x03]), Some(2880));
    }

    #[test]
    fn malformed_packets_have_no_duration() {
        assert_eq!(packet_duration(&[]), None);
        // Code 3 without its count byte, with 0 frames, with more than 120 ms.
        assert_eq!(packet_duration(&[0xfb]), None);
        assert_eq!(packet_duration(&[0xfb, 0x00]), None);
        assert_eq!(packet_duration(&[0xfb, 0x07]), None);
        assert_eq!(packet_duration(&[0x1b, 0x03]), None);
    }
}
