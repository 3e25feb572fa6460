//! The few RTP and RTCP header fields SRTP needs (RFC 3550 §5.1, §6.4.1; RFC 3711 §3.1, §3.4).
//!
//! SRTP leaves the RTP header in the clear (CSRC list and header extension included, RFC 3711
//! §3.1) and encrypts from the payload on; SRTCP leaves the first eight octets in the clear
//! (RFC 3711 §3.4). These helpers find those boundaries and never read past the slice.

use super::SrtpError;

/// Fixed RTP header length (RFC 3550 §5.1).
const RTP_FIXED_LEN: usize = 12;

/// Clear-text prefix of an SRTCP packet: V/P/RC, PT, length, sender SSRC (RFC 3711 §3.4).
pub(crate) const RTCP_CLEAR_LEN: usize = 8;

/// The RTP header fields the SRTP transforms use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    /// Octets up to the payload: fixed header, CSRCs, header extension.
    pub(crate) len: usize,
    pub(crate) seq: u16,
    pub(crate) ssrc: u32,
}

/// Parses the RTP header at the start of `packet`, which must hold at least the whole header.
pub(crate) fn parse_rtp(packet: &[u8]) -> Result<RtpHeader, SrtpError> {
    let [b0, _, s0, s1, _, _, _, _, x0, x1, x2, x3, ..] = *packet else {
        return Err(SrtpError::TooShort);
    };
    if b0 >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let csrc_count = usize::from(b0 & 0x0f);
    let mut len = RTP_FIXED_LEN + 4 * csrc_count;
    if b0 & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile-defined field, 16-bit length in 32-bit words.
        let Some(&[_, _, l0, l1]) = packet.get(len..len + 4) else {
            return Err(SrtpError::BadHeader);
        };
        len += 4 + 4 * usize::from(u16::from_be_bytes([l0, l1]));
    }
    if len > packet.len() {
        return Err(SrtpError::BadHeader);
    }
    Ok(RtpHeader {
        len,
        seq: u16::from_be_bytes([s0, s1]),
        ssrc: u32::from_be_bytes([x0, x1, x2, x3]),
    })
}

/// The sender SSRC of the RTCP packet at the start of `packet` (RFC 3550 §6.4.1).
pub(crate) fn parse_rtcp(packet: &[u8]) -> Result<u32, SrtpError> {
    let [b0, _, _, _, x0, x1, x2, x3, ..] = *packet else {
        return Err(SrtpError::TooShort);
    };
    if b0 >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    Ok(u32::from_be_bytes([x0, x1, x2, x3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_header_lengths() {
        let mut p = [0u8; 40];
        p[0] = 0x80;
        p[2..4].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        let h = parse_rtp(&p).unwrap();
        assert_eq!((h.len, h.seq, h.ssrc), (12, 0x1234, 0xdead_beef));

        // Two CSRCs and a one-word extension: 12 + 8 + 4 + 4.
        p[0] = 0x92;
        p[22..24].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(parse_rtp(&p).unwrap().len, 28);
        assert_eq!(parse_rtp(&p[..28]).unwrap().len, 28);
        assert_eq!(parse_rtp(&p[..27]), Err(SrtpError::BadHeader));
        assert_eq!(parse_rtp(&p[..22]), Err(SrtpError::BadHeader));
        assert_eq!(parse_rtp(&p[..11]), Err(SrtpError::TooShort));

        p[0] = 0x40;
        assert_eq!(parse_rtp(&p), Err(SrtpError::BadVersion));
    }

    #[test]
    fn rtcp_sender_ssrc() {
        let p = [0x81, 200, 0, 6, 1, 2, 3, 4];
        assert_eq!(parse_rtcp(&p), Ok(0x0102_0304));
        assert_eq!(parse_rtcp(&p[..7]), Err(SrtpError::TooShort));
        assert_eq!(
            parse_rtcp(&[0, 200, 0, 6, 1, 2, 3, 4]),
            Err(SrtpError::BadVersion)
        );
    }
}
