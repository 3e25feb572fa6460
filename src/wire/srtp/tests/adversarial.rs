//! Bad input: replays, tampering, truncation, random bytes, state that must survive them,
//! and the argument checks of the protect side.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::{master, pair, protect_rtcp, protect_rtp, rtcp, rtp, PROFILES};
use crate::wire::srtp::kdf::{Label, Prf};
use crate::wire::srtp::{SrtpError, SrtpProfile, SrtpSession, MAX_STREAMS};

const SSRC: u32 = 0x1122_3344;

fn voice(seq: u16) -> Vec<u8> {
    rtp(seq, SSRC, &[0xabcd_ef01], true, &[0x5a; 80])
}

/// A small xorshift generator: deterministic, no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn replayed_and_too_old() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let first = protect_rtp(&mut tx, &voice(1000));
        assert!(rx.unprotect_rtp(&mut first.clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtp(&mut first.clone()),
            Err(SrtpError::Replayed)
        );
        for seq in 1001..1300 {
            let p = protect_rtp(&mut tx, &voice(seq));
            rx.unprotect_rtp(&mut p.clone()).unwrap();
        }
        assert_eq!(rx.unprotect_rtp(&mut first.clone()), Err(SrtpError::TooOld));

        let report = protect_rtcp(&mut tx, &rtcp(SSRC, 1));
        assert!(rx.unprotect_rtcp(&mut report.clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtcp(&mut report.clone()),
            Err(SrtpError::Replayed)
        );
    }
}

#[test]
fn reordering_across_the_wrap() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let packets: Vec<(u16, Vec<u8>)> = [65533, 65534, 65535, 0, 1, 2]
            .into_iter()
            .map(|seq| (seq, protect_rtp(&mut tx, &voice(seq))))
            .collect();
        for i in [0, 1, 3, 2, 5, 4] {
            let (seq, packet) = &packets[i];
            let mut buf = packet.clone();
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(buf[..n], voice(*seq)[..], "{profile:?} seq {seq}");
        }
        assert_eq!(rx.roc(SSRC), Some(1));
        // The sender refuses to reuse an index (and so a keystream or nonce).
        let mut again = voice(65535);
        again.resize(again.len() + profile.rtp_overhead(), 0);
        let len = voice(65535).len();
        assert_eq!(tx.protect_rtp(&mut again, len), Err(SrtpError::Replayed));
    }
}

#[test]
fn a_retransmission_is_the_ciphertext_already_sent() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let sent: Vec<Vec<u8>> = (100..260u16)
            .map(|seq| protect_rtp(&mut tx, &voice(seq)))
            .collect();
        // 200 was lost on the way; the receiver asks for it, the sender protects it again.
        let len = voice(200).len();
        let mut again = voice(200);
        again.resize(len + profile.rtp_overhead(), 0);
        let n = tx.protect_rtp_again(&mut again, len).unwrap();
        assert_eq!(again[..n], sent[100][..], "{profile:?}: byte-identical");
        for (i, p) in sent.iter().enumerate().filter(|(i, _)| *i != 100) {
            let mut buf = p.clone();
            rx.unprotect_rtp(&mut buf)
                .unwrap_or_else(|e| panic!("{i}: {e:?}"));
        }
        let mut buf = again[..n].to_vec();
        let m = rx.unprotect_rtp(&mut buf).unwrap();
        assert_eq!(buf[..m], voice(200)[..]);
        // Beyond the window it cannot be told whether the index was used: refused.
        let mut old = voice(100);
        old.resize(voice(100).len() + profile.rtp_overhead(), 0);
        assert_eq!(
            tx.protect_rtp_again(&mut old, voice(100).len()),
            Err(SrtpError::TooOld)
        );
        // A new index through the retransmission path is an ordinary first protection.
        let mut new = voice(300);
        new.resize(voice(300).len() + profile.rtp_overhead(), 0);
        assert!(tx.protect_rtp_again(&mut new, voice(300).len()).is_ok());
        assert_eq!(
            tx.protect_rtp(&mut new, voice(300).len()),
            Err(SrtpError::Replayed)
        );
    }
}

/// Octets of a [`voice`] packet that shape the header: version, CSRC count and extension bit (0), and
/// the extension length (18, 19). Flipping them may fail parsing before authentication.
const VOICE_LAYOUT: [usize; 3] = [0, 18, 19];

/// The error for a flipped octet `i`: authentication failure, or a parse error for an octet
/// in `layout`.
fn assert_tampered(got: Result<usize, SrtpError>, layout: &[usize], i: usize, what: &str) {
    if layout.contains(&i) {
        assert!(
            matches!(
                got,
                Err(SrtpError::AuthFailed | SrtpError::BadVersion | SrtpError::BadHeader)
            ),
            "{what}: {got:?}"
        );
    } else {
        assert_eq!(got, Err(SrtpError::AuthFailed), "{what}");
    }
}

/// Flipping any bit of a packet (header, payload, tag, SRTCP index) fails authentication.
#[test]
fn tampering_fails_authentication() {
    for profile in PROFILES {
        let (mut tx, _) = pair(profile);
        let good = protect_rtp(&mut tx, &voice(7));
        for i in 0..good.len() {
            for bit in [0x01, 0x10, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let (_, mut rx) = pair(profile);
                let what = format!("{profile:?} SRTP octet {i} bit {bit:#x}");
                assert_tampered(rx.unprotect_rtp(&mut bad), &VOICE_LAYOUT, i, &what);
                assert_eq!(rx.stream_count(), 0, "no state from a forged packet");
            }
        }
        let good = protect_rtcp(&mut tx, &rtcp(SSRC, 3));
        let aead = profile != SrtpProfile::Aes128CmHmacSha1_80;
        let e_flag_octet = good.len() - if aead { 4 } else { 14 };
        for i in 0..good.len() {
            for bit in [0x01, 0x10, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let (_, mut rx) = pair(profile);
                let got = rx.unprotect_rtcp(&mut bad);
                let what = format!("{profile:?} SRTCP octet {i} bit {bit:#x}");
                if aead && i == e_flag_octet && bit == 0x80 {
                    assert_eq!(got, Err(SrtpError::UnencryptedRtcp), "{what}");
                } else {
                    assert_tampered(got, &[0], i, &what);
                }
                assert_eq!(rx.stream_count(), 0);
            }
        }
    }
}

/// Every truncation of a valid packet is an error, and none of them disturbs the stream.
#[test]
fn truncations_are_errors() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let srtp = protect_rtp(&mut tx, &voice(5));
        let srtcp = protect_rtcp(&mut tx, &rtcp(SSRC, 5));
        for len in 0..srtp.len() {
            assert!(
                rx.unprotect_rtp(&mut srtp[..len].to_vec()).is_err(),
                "{profile:?} {len}"
            );
        }
        for len in 0..srtcp.len() {
            assert!(
                rx.unprotect_rtcp(&mut srtcp[..len].to_vec()).is_err(),
                "{profile:?} {len}"
            );
        }
        assert_eq!(rx.stream_count(), 0);
        assert!(rx.unprotect_rtp(&mut srtp.clone()).is_ok());
        assert!(rx.unprotect_rtcp(&mut srtcp.clone()).is_ok());
    }
}

/// Random bytes (half of them with a valid version) are errors and leave the stream intact.
#[test]
fn random_bytes_are_errors() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let first = protect_rtp(&mut tx, &voice(40000));
        rx.unprotect_rtp(&mut first.clone()).unwrap();
        for round in 0..5000 {
            let len = (rng.next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if round % 2 == 0 && len > 0 {
                buf[0] = 0x80 | (buf[0] & 0x3f);
            }
            if round % 4 == 0 && len >= 12 {
                buf[8..12].copy_from_slice(&SSRC.to_be_bytes());
            }
            assert!(rx.unprotect_rtp(&mut buf.clone()).is_err());
            assert!(rx.unprotect_rtcp(&mut buf).is_err());
        }
        assert_eq!(rx.roc(SSRC), Some(0));
        let next = protect_rtp(&mut tx, &voice(40001));
        let mut buf = next.clone();
        let n = rx.unprotect_rtp(&mut buf).unwrap();
        assert_eq!(buf[..n], voice(40001)[..]);
    }
}

/// A forged packet whose sequence number would move the ROC changes nothing.
#[test]
fn forged_packets_do_not_move_the_roc() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        for seq in 65530..=65535 {
            rx.unprotect_rtp(&mut protect_rtp(&mut tx, &voice(seq)))
                .unwrap();
        }
        // Forge "seq 3" (would be ROC 1) from a genuine packet of a fresh sender.
        let (mut other_tx, _) = pair(profile);
        let mut forged = protect_rtp(&mut other_tx, &voice(3));
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        assert_eq!(rx.unprotect_rtp(&mut forged), Err(SrtpError::AuthFailed));
        assert_eq!(rx.roc(SSRC), Some(0));
        // The genuine continuation still decrypts, in the right ROC.
        for seq in [0u16, 1, 2, 3] {
            let mut buf = protect_rtp(&mut tx, &voice(seq));
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(buf[..n], voice(seq)[..]);
        }
        assert_eq!(rx.roc(SSRC), Some(1));
    }
}

/// RFC 3711 §3.4: under AES_CM_128_HMAC_SHA1_80 an SRTCP packet may be authenticated only.
/// The tag is computed here with an independent HMAC over the RFC 3711 derived key.
#[test]
fn unencrypted_srtcp() {
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let (key, salt) = master(profile, 1);
    let mut auth_key = [0u8; 20];
    Prf::new(&key, &salt)
        .unwrap()
        .derive(Label::RtcpAuthentication, &mut auth_key)
        .unwrap();
    let plain = rtcp(SSRC, 9);
    let mut packet = plain.clone();
    packet.extend_from_slice(&42u32.to_be_bytes()); // E = 0, index 42
    let mut mac = Hmac::<Sha1>::new_from_slice(&auth_key).unwrap();
    mac.update(&packet);
    packet.extend_from_slice(&mac.finalize().into_bytes()[..10]);

    let (_, mut rx) = pair(profile);
    let mut buf = packet.clone();
    let n = rx.unprotect_rtcp(&mut buf).unwrap();
    assert_eq!(buf[..n], plain[..]);
    assert_eq!(
        rx.unprotect_rtcp(&mut packet.clone()),
        Err(SrtpError::Replayed)
    );
    let last = packet.len() - 1;
    packet[last] ^= 1;
    let (_, mut fresh) = pair(profile);
    assert_eq!(
        fresh.unprotect_rtcp(&mut packet),
        Err(SrtpError::AuthFailed)
    );
}

#[test]
fn protect_argument_checks() {
    for profile in PROFILES {
        let (mut tx, _) = pair(profile);
        let plain = voice(1);
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtp_overhead() - 1, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            tx.protect_rtp(&mut buf, usize::MAX),
            Err(SrtpError::BufferTooSmall)
        );
        let mut buf = vec![0x80; 64];
        assert_eq!(tx.protect_rtp(&mut buf, 11), Err(SrtpError::TooShort));
        assert_eq!(tx.protect_rtcp(&mut buf, 7), Err(SrtpError::TooShort));
        buf[0] = 0x40;
        assert_eq!(tx.protect_rtp(&mut buf, 20), Err(SrtpError::BadVersion));
        assert_eq!(tx.protect_rtcp(&mut buf, 20), Err(SrtpError::BadVersion));
        buf[0] = 0x8f; // 15 CSRCs do not fit in 20 octets
        assert_eq!(tx.protect_rtp(&mut buf, 20), Err(SrtpError::BadHeader));
        assert_eq!(tx.stream_count(), 0);
        // A header-only packet and an 8-octet RTCP packet are fine.
        let mut buf = vec![0x80; 64];
        assert_eq!(
            tx.protect_rtp(&mut buf, 12),
            Ok(12 + profile.rtp_overhead())
        );
        assert_eq!(
            tx.protect_rtcp(&mut buf, 8),
            Ok(8 + profile.rtcp_overhead())
        );
    }
}

#[test]
fn stream_cap_and_removal() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let packet =
            |tx: &mut SrtpSession, ssrc| protect_rtp(tx, &rtp(1, ssrc, &[], false, &[1, 2, 3]));
        for ssrc in 0..MAX_STREAMS as u32 {
            rx.unprotect_rtp(&mut packet(&mut tx, ssrc)).unwrap();
        }
        let extra = MAX_STREAMS as u32;
        let mut buf = rtp(1, extra, &[], false, &[1, 2, 3]);
        let len = buf.len();
        buf.resize(len + profile.rtp_overhead(), 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, len),
            Err(SrtpError::TooManyStreams)
        );

        let (mut other_tx, _) = pair(profile);
        let last = packet(&mut other_tx, extra);
        assert_eq!(
            rx.unprotect_rtp(&mut last.clone()),
            Err(SrtpError::TooManyStreams)
        );
        assert!(rx.remove_stream(0));
        assert_eq!(rx.stream_count(), MAX_STREAMS - 1);
        assert!(rx.unprotect_rtp(&mut last.clone()).is_ok());
        assert_eq!(rx.stream_count(), MAX_STREAMS);
    }
}

#[test]
fn session_argument_checks() {
    for profile in PROFILES {
        let (key, salt) = master(profile, 2);
        assert!(SrtpSession::new(profile, &key, &salt).is_ok());
        assert_eq!(
            SrtpSession::new(profile, &key[1..], &salt).err(),
            Some(SrtpError::BadKeyLength)
        );
        assert_eq!(
            SrtpSession::new(profile, &key, &salt[1..]).err(),
            Some(SrtpError::BadSaltLength)
        );
        assert_eq!(SrtpProfile::from_dtls_id(profile.dtls_id()), Some(profile));
    }
}

#[test]
fn error_labels_are_distinct_snake_case() {
    use SrtpError::*;
    let all = [
        TooShort,
        BadVersion,
        BadHeader,
        BufferTooSmall,
        AuthFailed,
        Replayed,
        TooOld,
        TooManyStreams,
        IndexExhausted,
        UnencryptedRtcp,
        BadKeyLength,
        BadSaltLength,
        Crypto,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(SrtpError::as_str).collect();
    assert_eq!(labels.len(), all.len());
    assert!(labels
        .iter()
        .all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
}
