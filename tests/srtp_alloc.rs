//! The SRTP hot path makes no heap allocation: after warm-up, 10,000 protect + unprotect round
//! trips of SRTP and SRTCP per profile allocate nothing (counted by a wrapping global allocator,
//! on this thread only so the test harness does not interfere).

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use choir::wire::srtp::{SrtpProfile, SrtpSession};

const ROUND_TRIPS: u16 = 10_000;
const SSRCS: [u32; 4] = [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444];

/// One voice packet: 12-octet header, 100 octets of payload.
fn write_rtp(buf: &mut [u8], seq: u16, ssrc: u32) -> usize {
    buf[..12].copy_from_slice(&[0x80, 111, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..112].fill(seq as u8);
    112
}

/// One receiver report with no report blocks plus 20 octets of payload.
fn write_rtcp(buf: &mut [u8], ssrc: u32) -> usize {
    buf[..8].copy_from_slice(&[0x80, 201, 0, 6, 0, 0, 0, 0]);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    buf[8..28].fill(0x77);
    28
}

/// Protects and unprotects SRTP packets `seqs` and one SRTCP packet per SSRC every tenth.
fn round_trips(tx: &mut SrtpSession, rx: &mut SrtpSession, seqs: std::ops::Range<u16>) {
    let mut buf = [0u8; 1500];
    for seq in seqs {
        for ssrc in SSRCS {
            let len = write_rtp(&mut buf, seq, ssrc);
            let n = tx.protect_rtp(&mut buf, len).expect("protect");
            let m = rx.unprotect_rtp(&mut buf[..n]).expect("unprotect");
            assert_eq!(m, len);
            if seq % 10 == 0 {
                let len = write_rtcp(&mut buf, ssrc);
                let n = tx.protect_rtcp(&mut buf, len).expect("protect rtcp");
                let m = rx.unprotect_rtcp(&mut buf[..n]).expect("unprotect rtcp");
                assert_eq!(m, len);
            }
        }
    }
}

#[test]
fn no_allocation_per_packet() {
    for profile in [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ] {
        let key = vec![0x42; profile.master_key_len()];
        let salt = vec![0x24; profile.master_salt_len()];
        let mut tx = SrtpSession::new(profile, &key, &salt).unwrap();
        let mut rx = SrtpSession::new(profile, &key, &salt).unwrap();

        // Warm-up creates the streams; the sequence numbers then run across a wrap.
        let start = 60_000;
        round_trips(&mut tx, &mut rx, start..start + 10);
        let ((), counted) = allocations_in(|| {
            round_trips(&mut tx, &mut rx, start + 10..u16::MAX);
            round_trips(&mut tx, &mut rx, 0..ROUND_TRIPS - (u16::MAX - start - 10));
        });
        assert_eq!(counted, 0, "{profile:?}: heap allocations in steady state");
        assert_eq!(rx.roc(SSRCS[0]), Some(1));
    }
}
