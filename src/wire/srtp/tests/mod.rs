//! Tests of the whole session: RFC 7714 vectors, cross-checks against `rtc-srtp`, and
//! adversarial input. Unit tests of the parts (RFC 3711 B.2, B.3, replay, headers) sit next to
//! the code they test.

mod adversarial;
mod cross;
mod vectors;

use super::{SrtpProfile, SrtpSession};

pub(crate) const PROFILES: [SrtpProfile; 3] = [
    SrtpProfile::Aes128CmHmacSha1_80,
    SrtpProfile::AeadAes128Gcm,
    SrtpProfile::AeadAes256Gcm,
];

/// Sessions are built on one thread and may be handed to the shard that owns the transport.
#[test]
fn session_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SrtpSession>();
}

/// Decodes hex, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("not hex: {}", b as char),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// Deterministic master key and salt for `profile`.
pub(crate) fn master(profile: SrtpProfile, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let key = (0..profile.master_key_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
        .collect();
    let salt = (0..profile.master_salt_len())
        .map(|i| seed.wrapping_add(0x5a).wrapping_add(i as u8 * 13))
        .collect();
    (key, salt)
}

/// A sender and a receiver session on the same master key.
pub(crate) fn pair(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
    let (key, salt) = master(profile, 1);
    (
        SrtpSession::new(profile, &key, &salt).unwrap(),
        SrtpSession::new(profile, &key, &salt).unwrap(),
    )
}

/// An RTP packet: 12-octet header, optional CSRCs and RFC 8285 one-byte extension, payload.
pub(crate) fn rtp(seq: u16, ssrc: u32, csrcs: &[u32], extension: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80 | csrcs.len() as u8, 111];
    if extension {
        p[0] |= 0x10;
    }
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        p.extend_from_slice(&c.to_be_bytes());
    }
    if extension {
        // 0xBEDE, one word: element id 1 (audio level), one octet, then padding.
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x85, 0x00, 0x00]);
    }
    p.extend_from_slice(payload);
    p
}

/// A compound RTCP packet: sender report `n` (no report blocks) and an SDES CNAME.
pub(crate) fn rtcp(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0x00, 0x06];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&(0x1122_3344_5566_7788u64 + u64::from(n)).to_be_bytes());
    p.extend_from_slice(&(n * 960).to_be_bytes());
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&(n * 100).to_be_bytes());
    // SDES with one CNAME item: header, SSRC, "cname" item, end + padding.
    p.extend_from_slice(&[0x81, 202, 0x00, 0x03]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 5, b'c', b'h', b'o', b'i', b'r', 0]);
    p
}

/// Protects `plain` with `tx` in a fresh buffer; returns the protected packet.
pub(crate) fn protect_rtp(tx: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + tx.profile().rtp_overhead(), 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(n, buf.len());
    buf
}

pub(crate) fn protect_rtcp(tx: &mut SrtpSession, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + tx.profile().rtcp_overhead(), 0);
    let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(n, buf.len());
    buf
}
