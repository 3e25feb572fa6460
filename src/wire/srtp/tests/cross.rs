//! Cross-checks against the independent `rtc-srtp` implementation, for all three profiles,
//! both directions, SRTP and SRTCP, from the master key on (so the key derivation, including
//! the AES-256 PRF and the 96-bit salts of the AEAD profiles, is covered too).

use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

use super::{master, protect_rtcp, protect_rtp, rtcp, rtp, PROFILES};
use crate::wire::srtp::{SrtpProfile, SrtpSession};

fn rtc_context(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Context {
    let rtc_profile = match profile {
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    };
    let provider = rtc_srtp::crypto::default_provider().unwrap();
    Context::new(key, salt, rtc_profile, None, None, provider.crypto()).unwrap()
}

/// Four endpoints on one master key: choir and rtc-srtp, each sending and receiving.
struct Peers {
    choir_tx: SrtpSession,
    choir_rx: SrtpSession,
    rtc_tx: Context,
    rtc_rx: Context,
}

fn peers(profile: SrtpProfile, seed: u8) -> Peers {
    let (key, salt) = master(profile, seed);
    Peers {
        choir_tx: SrtpSession::new(profile, &key, &salt).unwrap(),
        choir_rx: SrtpSession::new(profile, &key, &salt).unwrap(),
        rtc_tx: rtc_context(profile, &key, &salt),
        rtc_rx: rtc_context(profile, &key, &salt),
    }
}

/// SRTP both ways across a sequence number wrap (ROC 0 → 1), with CSRCs and header
/// extensions in the authenticated header, two SSRCs interleaved.
#[test]
fn srtp_both_ways_across_the_rollover() {
    for profile in PROFILES {
        let mut p = peers(profile, 3);
        let seqs = (65520..=65535).chain(0..20);
        for (i, seq) in seqs.enumerate() {
            for ssrc in [0x1234_5678, 0xcafe_f00d] {
                let csrcs = [0x0101_0101, 0x0202_0202];
                let payload: Vec<u8> = (0..20 + i * 7).map(|b| (b * 3 + i) as u8).collect();
                let plain = rtp(seq, ssrc, &csrcs[..i % 3], i % 2 == 0, &payload);

                let ours = protect_rtp(&mut p.choir_tx, &plain);
                let theirs = p.rtc_tx.encrypt_rtp(&plain).unwrap();
                assert_eq!(
                    ours[..],
                    theirs[..],
                    "{profile:?} seq {seq}: same keys, same bytes"
                );

                let decrypted = p.rtc_rx.decrypt_rtp(&ours).unwrap();
                assert_eq!(
                    decrypted[..],
                    plain[..],
                    "{profile:?} seq {seq}: rtc-srtp reads ours"
                );

                let mut buf = theirs.to_vec();
                let n = p.choir_rx.unprotect_rtp(&mut buf).unwrap();
                assert_eq!(
                    buf[..n],
                    plain[..],
                    "{profile:?} seq {seq}: we read rtc-srtp's"
                );
            }
        }
        for ssrc in [0x1234_5678, 0xcafe_f00d] {
            assert_eq!(p.choir_tx.roc(ssrc), Some(1), "{profile:?}");
            assert_eq!(p.choir_rx.roc(ssrc), Some(1), "{profile:?}");
        }
    }
}

/// SRTCP both ways. rtc-srtp numbers its first SRTCP packet 1 and choir 0 (RFC 3711 §3.4), so
/// with the same plaintext choir's packet `k + 1` must equal rtc-srtp's packet `k` byte for byte.
#[test]
fn srtcp_both_ways() {
    for profile in PROFILES {
        let mut p = peers(profile, 4);
        let ssrc = 0x0bad_cafe;
        let plain = rtcp(ssrc, 7);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..6 {
            ours.push(protect_rtcp(&mut p.choir_tx, &plain));
            theirs.push(p.rtc_tx.encrypt_rtcp(&plain).unwrap().to_vec());
        }
        for (k, packet) in theirs.iter().enumerate().take(5) {
            assert_eq!(ours[k + 1], *packet, "{profile:?} index {}", k + 1);
        }
        for packet in &ours {
            let decrypted = p.rtc_rx.decrypt_rtcp(packet).unwrap();
            assert_eq!(decrypted[..], plain[..], "{profile:?}: rtc-srtp reads ours");
        }
        for packet in &theirs {
            let mut buf = packet.clone();
            let n = p.choir_rx.unprotect_rtcp(&mut buf).unwrap();
            assert_eq!(buf[..n], plain[..], "{profile:?}: we read rtc-srtp's");
        }
    }
}

/// Varied SRTCP packets (different lengths and senders) from rtc-srtp, and ours to it.
#[test]
fn srtcp_varied_packets() {
    for profile in PROFILES {
        let mut p = peers(profile, 5);
        for n in 0..20u32 {
            let ssrc = 0x1000 + n % 3;
            let mut plain = rtcp(ssrc, n);
            // A receiver report block count of zero, then some extra RR packets.
            for _ in 0..n % 4 {
                plain.extend_from_slice(&[0x80, 201, 0, 1]);
                plain.extend_from_slice(&ssrc.to_be_bytes());
            }
            let ours = protect_rtcp(&mut p.choir_tx, &plain);
            assert_eq!(p.rtc_rx.decrypt_rtcp(&ours).unwrap()[..], plain[..]);

            let mut buf = p.rtc_tx.encrypt_rtcp(&plain).unwrap().to_vec();
            let len = p.choir_rx.unprotect_rtcp(&mut buf).unwrap();
            assert_eq!(buf[..len], plain[..], "{profile:?} packet {n}");
        }
    }
}
