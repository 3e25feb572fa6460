//! RFC 7714 §16 (SRTP) and §17 (SRTCP) test vectors for AEAD_AES_128_GCM and
//! AEAD_AES_256_GCM. The RFC gives session keys and salts, not master keys, so the sessions
//! here are built from session keys directly. (The tagging-only SRTCP vectors of §17 are not
//! used: that form is not accepted, see [`SrtpError::UnencryptedRtcp`].)
//!
//! RFC 3711 Appendix B.2 and B.3 vectors are in `cm.rs` and `kdf.rs`.

use super::hex;
use crate::wire::srtp::gcm::{Gcm, GcmKeys};
use crate::wire::srtp::{SrtpError, SrtpProfile, SrtpSession, Transform};

const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_256: &str = "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo".
const SALT: &str = "517569642070726f2071756f";

/// §16: header 8040f17b 8041f8d3 5501a0b2 (SEQ 0xf17b, ROC 0), payload
/// "Gallia est omnis divisa in partes tres".
const RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                   20646976 69736120 696e2070 61727465 73207472 6573";

/// §16.1.1 / §16.1.2.
const SRTP_128: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                        be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                        6a9152cf 765ee439 0cce";

/// §16.2.1 / §16.2.2.
const SRTP_256: &str = "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa
                        b1801238 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff
                        d6b0f9bb 7878d7a7 6c13";

/// §17: sender SSRC "Mars", SRTCP index 0x5d4.
const RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                    4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const RTCP_INDEX: u32 = 0x5d4;

/// §17.1 encrypted and tagged packet.
const SRTCP_128: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                         6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                         96cf4d2f c5abf872 45d9eade 800005d4";

/// §17.2 encrypted and tagged packet.
const SRTCP_256: &str = "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d
                         bffe0a50 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c
                         4446839f 57ff6f6c b26ac3be 800005d4";

/// A session keyed with the RFC's session key and salt for both SRTP and SRTCP.
fn session(profile: SrtpProfile) -> SrtpSession {
    let key = hex(if profile == SrtpProfile::AeadAes256Gcm {
        KEY_256
    } else {
        KEY_128
    });
    let gcm = Gcm {
        rtp: GcmKeys::new(&key, &hex(SALT)).unwrap(),
        rtcp: GcmKeys::new(&key, &hex(SALT)).unwrap(),
    };
    SrtpSession::with_transform(profile, Transform::Gcm(gcm))
}

fn cases() -> [(SrtpProfile, &'static str, &'static str); 2] {
    [
        (SrtpProfile::AeadAes128Gcm, SRTP_128, SRTCP_128),
        (SrtpProfile::AeadAes256Gcm, SRTP_256, SRTCP_256),
    ]
}

/// §16.1.1 and §16.2.1: encryption.
#[test]
fn rfc7714_srtp_encrypt() {
    for (profile, srtp, _) in cases() {
        let plain = hex(RTP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 16, 0);
        let n = session(profile).protect_rtp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..n], hex(srtp)[..], "{profile:?}");
    }
}

/// §16.1.2 and §16.2.2: decryption, then the same packet again is a replay.
#[test]
fn rfc7714_srtp_decrypt() {
    for (profile, srtp, _) in cases() {
        let mut rx = session(profile);
        let mut buf = hex(srtp);
        let n = rx.unprotect_rtp(&mut buf).unwrap();
        assert_eq!(buf[..n], hex(RTP)[..], "{profile:?}");
        assert_eq!(rx.roc(0x5501_a0b2), Some(0));
        assert_eq!(rx.unprotect_rtp(&mut hex(srtp)), Err(SrtpError::Replayed));
    }
}

/// §17.1 and §17.2: encryption with SRTCP index 0x5d4.
#[test]
fn rfc7714_srtcp_encrypt() {
    for (profile, _, srtcp) in cases() {
        let Transform::Gcm(gcm) = &session(profile).transform else {
            unreachable!()
        };
        let plain = hex(RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 20, 0);
        let n = gcm
            .protect_rtcp(&mut buf, plain.len(), 0x4d61_7273, RTCP_INDEX)
            .unwrap();
        assert_eq!(buf[..n], hex(srtcp)[..], "{profile:?}");
    }
}

/// §17.1 and §17.2 in the receiving direction, through the session.
#[test]
fn rfc7714_srtcp_decrypt() {
    for (profile, _, srtcp) in cases() {
        let mut rx = session(profile);
        let mut buf = hex(srtcp);
        let n = rx.unprotect_rtcp(&mut buf).unwrap();
        assert_eq!(buf[..n], hex(RTCP)[..], "{profile:?}");
        assert_eq!(rx.unprotect_rtcp(&mut hex(srtcp)), Err(SrtpError::Replayed));
    }
}

/// §16 and §17 give the IVs: 51753c6580c2726f20718414 for SRTP, 517524055203726f207170bb for
/// SRTCP.
#[test]
fn rfc7714_ivs() {
    let keys = GcmKeys::new(&hex(KEY_128), &hex(SALT)).unwrap();
    let srtp_iv = keys.nonce(0x5501_a0b2, 0xf17b);
    assert_eq!(srtp_iv.as_ref()[..], hex("51753c6580c2726f20718414")[..]);
    let srtcp_iv = keys.nonce(0x4d61_7273, u64::from(RTCP_INDEX));
    assert_eq!(srtcp_iv.as_ref()[..], hex("517524055203726f207170bb")[..]);
}
