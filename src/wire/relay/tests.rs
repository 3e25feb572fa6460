//! Sealing and opening relay datagrams: a known-answer vector, tampering, truncation, wrong
//! keys and links, replay through a [`Receiver`], the end of the sequence space.

use super::payload::Payload;
use super::*;

const KEY: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
const LINK: u32 = 0x0a0b_0c0d;
const RTP: [u8; 16] = [
    0x90, 111, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 0xbe, 0xde, 0, 1,
];

/// `Keepalive { sent_at_micros: 0x1122334455667788 }` sealed under [`KEY`], link
/// 0x0a0b0c0d, sequence 2^32 + 2, computed independently (Python `cryptography`'s AESGCM with
/// nonce `link id || seq` and the 14-octet header as associated data).
const VECTOR: [u8; 39] = [
    0x08, 0x01, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x41, 0x03,
    0xd4, 0x11, 0x5e, 0x59, 0x06, 0xbc, 0x88, 0xd6, 0x4c, 0x5d, 0xba, 0xd4, 0x90, 0x6a, 0x53, 0x31,
    0x3a, 0x8c, 0x57, 0x52, 0x62, 0x64, 0x33,
];
const VECTOR_SEQ: u64 = (1 << 32) + 2;
const VECTOR_PLAINTEXT: [u8; 9] = [2, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];

fn key() -> LinkKey {
    LinkKey::new(&KEY).unwrap()
}

fn media(seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = Payload::Media {
        stream: 7,
        rtp: &RTP,
    }
    .write(&mut buf[HEADER_LEN..])
    .unwrap();
    let header = Header { link_id: LINK, seq };
    let len = seal_in_place(&key(), header, &mut buf, n).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn known_answer_vector() {
    let header = Header {
        link_id: LINK,
        seq: VECTOR_SEQ,
    };
    let mut out = [0u8; 64];
    let n = seal(&key(), header, &VECTOR_PLAINTEXT, &mut out).unwrap();
    assert_eq!(out[..n], VECTOR);

    let mut d = VECTOR;
    assert_eq!(super::header(&d), Ok(header));
    let (h, plaintext) = open(&key(), &mut d).unwrap();
    assert_eq!(h, header);
    assert_eq!(plaintext, VECTOR_PLAINTEXT);
    assert_eq!(
        Payload::parse(plaintext),
        Ok(Payload::Keepalive {
            sent_at_micros: 0x1122_3344_5566_7788
        })
    );
}

#[test]
fn round_trip_through_sender_and_receiver() {
    let mut tx = Sender::new(key(), LINK);
    let mut rx = Receiver::new(key(), LINK);
    assert_eq!((tx.link_id(), rx.link_id()), (LINK, LINK));
    assert_eq!(rx.highest_seq(), None);
    let mut buf = [0u8; 1500];
    for seq in 0..5u64 {
        assert_eq!(tx.next_seq(), Some(seq));
        let ping = Payload::Keepalive {
            sent_at_micros: seq * 20_000,
        };
        let mut plain = [0u8; 16];
        let p = ping.write(&mut plain).unwrap();
        let n = tx.seal(&plain[..p], &mut buf).unwrap();
        assert_eq!(n, p + OVERHEAD);
        assert_eq!(&buf[..2], &[KIND, VERSION]);
        // The plaintext does not appear in clear.
        assert_ne!(&buf[HEADER_LEN..HEADER_LEN + p], &plain[..p]);
        let (h, opened) = rx.open(&mut buf[..n]).unwrap();
        assert_eq!(h, Header { link_id: LINK, seq });
        assert_eq!(Payload::parse(opened), Ok(ping));
    }
    assert_eq!(rx.highest_seq(), Some(4));
    // The RTP packet crosses byte for byte.
    let mut d = media(5);
    let (_, opened) = rx.open(&mut d).unwrap();
    assert_eq!(
        Payload::parse(opened),
        Ok(Payload::Media {
            stream: 7,
            rtp: &RTP
        })
    );
}

#[test]
fn an_empty_plaintext_is_sealed_too() {
    let mut buf = [0u8; OVERHEAD];
    let header = Header { link_id: 1, seq: 0 };
    assert_eq!(seal_in_place(&key(), header, &mut buf, 0), Some(OVERHEAD));
    assert_eq!(open(&key(), &mut buf).map(|(_, p)| p.len()), Ok(0));
}

#[test]
fn a_flipped_bit_anywhere_is_forged_or_refused() {
    let good = media(9);
    for at in 0..good.len() {
        for bit in 0..8 {
            let mut d = good.clone();
            d[at] ^= 1 << bit;
            let expected = match at {
                0 => DropReason::Kind,
                1 => DropReason::Version,
                _ => DropReason::Forged,
            };
            assert_eq!(
                open(&key(), &mut d).err(),
                Some(expected),
                "octet {at} bit {bit}"
            );
            // Through a receiver: a changed link id is another link's datagram.
            let mut rx = Receiver::new(key(), LINK);
            let mut d = good.clone();
            d[at] ^= 1 << bit;
            let expected = match at {
                2..=5 => DropReason::UnknownLink,
                _ => expected,
            };
            assert_eq!(
                rx.open(&mut d).err(),
                Some(expected),
                "octet {at} bit {bit}"
            );
            // A forged datagram did not move the window: the genuine one still opens.
            let mut d = good.clone();
            assert!(rx.open(&mut d).is_ok(), "octet {at} bit {bit}");
        }
    }
}

#[test]
fn a_wrong_key_is_forged() {
    let mut other = KEY;
    other[31] ^= 0x80;
    let mut d = media(1);
    assert_eq!(
        open(&LinkKey::new(&other).unwrap(), &mut d).err(),
        Some(DropReason::Forged)
    );
    let mut rx = Receiver::new(LinkKey::new(&[0u8; 32]).unwrap(), LINK);
    let mut d = media(1);
    assert_eq!(rx.open(&mut d).err(), Some(DropReason::Forged));
    assert_eq!(rx.highest_seq(), None);
}

#[test]
fn a_datagram_moved_to_another_sequence_number_is_forged() {
    // The sequence number is in both the nonce and the associated data: rewriting it (to get
    // past the replay window) breaks the tag.
    let mut d = media(100);
    d[6..14].copy_from_slice(&101u64.to_be_bytes());
    let mut rx = Receiver::new(key(), LINK);
    assert_eq!(rx.open(&mut d).err(), Some(DropReason::Forged));
}

#[test]
fn truncation_at_every_length_is_short_or_forged() {
    let good = media(3);
    for len in 0..good.len() {
        let mut d = good[..len].to_vec();
        let expected = if len < OVERHEAD {
            DropReason::Short
        } else {
            DropReason::Forged
        };
        if len < OVERHEAD {
            assert_eq!(header(&d), Err(DropReason::Short), "length {len}");
        }
        assert_eq!(open(&key(), &mut d).err(), Some(expected), "length {len}");
        let mut rx = Receiver::new(key(), LINK);
        assert_eq!(rx.open(&mut d).err(), Some(expected), "length {len}");
    }
    // Appended octets break the tag too.
    let mut d = good.clone();
    d.push(0);
    assert_eq!(open(&key(), &mut d).err(), Some(DropReason::Forged));
}

#[test]
fn seal_refuses_a_short_buffer_and_keeps_the_sequence_number() {
    let mut tx = Sender::new(key(), LINK);
    let plain = [1u8; 20];
    let mut small = [0u8; 20 + OVERHEAD - 1];
    assert_eq!(tx.seal(&plain, &mut small), None);
    assert_eq!(tx.seal_in_place(&mut small, 20), None);
    assert_eq!(tx.seal_in_place(&mut small, usize::MAX), None);
    assert_eq!(tx.next_seq(), Some(0));
    let mut fits = [0u8; 20 + OVERHEAD];
    assert_eq!(tx.seal(&plain, &mut fits), Some(fits.len()));
    assert_eq!(tx.next_seq(), Some(1));
    let header = Header { link_id: 1, seq: 0 };
    assert_eq!(seal(&key(), header, &plain, &mut small), None);
    assert_eq!(seal_in_place(&key(), header, &mut small, usize::MAX), None);
}

#[test]
fn receiver_rejects_replays_and_takes_reordering_once() {
    let mut rx = Receiver::new(key(), LINK);
    let datagrams: Vec<Vec<u8>> = (0..3000u64).map(media).collect();
    let open_seq = |rx: &mut Receiver, seq: u64| {
        let mut d = datagrams[seq as usize].clone();
        rx.open(&mut d).map(|(h, _)| h.seq)
    };
    // 1500, then 1499 down to 1500 - 1023 (reordered, inside the window), then a replay of each.
    assert_eq!(open_seq(&mut rx, 1500), Ok(1500));
    for seq in (1500 - (WINDOW - 1)..1500).rev() {
        assert_eq!(open_seq(&mut rx, seq), Ok(seq));
    }
    for seq in 1500 - (WINDOW - 1)..=1500 {
        assert_eq!(open_seq(&mut rx, seq), Err(DropReason::Replayed), "{seq}");
    }
    // Nothing older than the window, even genuine.
    assert_eq!(open_seq(&mut rx, 1500 - WINDOW), Err(DropReason::TooOld));
    // A jump of more than the window forgets everything before it.
    assert_eq!(open_seq(&mut rx, 2999), Ok(2999));
    assert_eq!(open_seq(&mut rx, 1500), Err(DropReason::TooOld));
    assert_eq!(
        open_seq(&mut rx, 2999 - (WINDOW - 1)),
        Ok(2999 - (WINDOW - 1))
    );
    assert_eq!(open_seq(&mut rx, 2998), Ok(2998));
    assert_eq!(rx.highest_seq(), Some(2999));
}

#[test]
fn the_sender_stops_at_the_end_of_the_sequence_space() {
    let mut tx = Sender::new(key(), LINK);
    tx.next = Some(u64::MAX - 1);
    let mut rx = Receiver::new(key(), LINK);
    let mut buf = [0u8; 64];
    for seq in [u64::MAX - 1, u64::MAX] {
        let n = tx.seal(&[2, 0, 0, 0, 0, 0, 0, 0, 1], &mut buf).unwrap();
        let (h, _) = rx.open(&mut buf[..n]).unwrap();
        assert_eq!(h.seq, seq);
    }
    assert_eq!(tx.next_seq(), None);
    assert_eq!(tx.seal(&[1], &mut buf), None);
    assert_eq!(rx.highest_seq(), Some(u64::MAX));
}

#[test]
fn header_checks_kind_version_and_length() {
    let d = media(0x0102_0304_0506_0708);
    assert_eq!(
        header(&d),
        Ok(Header {
            link_id: LINK,
            seq: 0x0102_0304_0506_0708
        })
    );
    assert_eq!(
        &d[..HEADER_LEN],
        &Header {
            link_id: LINK,
            seq: 0x0102_0304_0506_0708
        }
        .to_bytes()
    );
    let mut other = d.clone();
    other[0] = 0x80; // an RTP packet
    assert_eq!(header(&other), Err(DropReason::Kind));
    other[0] = KIND;
    other[1] = 2;
    assert_eq!(header(&other), Err(DropReason::Version));
    assert_eq!(header(&d[..OVERHEAD - 1]), Err(DropReason::Short));
    assert_eq!(header(&d[..OVERHEAD]).map(|h| h.link_id), Ok(LINK));
    // Not taken for any WebRTC protocol by the RTC ports' demultiplexer.
    assert_eq!(
        crate::wire::demux::classify(&d),
        crate::wire::demux::PacketKind::Unknown
    );
}

#[test]
fn drop_reasons_are_metric_labels() {
    let all = [
        DropReason::Short,
        DropReason::Kind,
        DropReason::Version,
        DropReason::UnknownLink,
        DropReason::Forged,
        DropReason::Replayed,
        DropReason::TooOld,
    ];
    let names: Vec<&str> = all.iter().map(DropReason::as_str).collect();
    assert_eq!(
        names,
        [
            "short",
            "kind",
            "version",
            "unknown_link",
            "forged",
            "replayed",
            "too_old"
        ]
    );
    assert_eq!(DropReason::Forged.to_string(), "forged");
    assert_eq!(format!("{:?}", key()), "LinkKey(..)");
}
