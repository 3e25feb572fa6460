//! Parse/rewrite tests, cross-checked against the independent `rtc-rtp` crate.

use super::*;
use bytes::Bytes;
use rtc_shared::marshal::{Marshal, Unmarshal};

/// A packet to build by hand. `ext` is `(profile, elements already encoded)`.
#[derive(Clone)]
struct Spec {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    csrcs: Vec<u32>,
    ext: Option<(u16, Vec<u8>)>,
    payload: Vec<u8>,
    padding: u8,
}

fn spec() -> Spec {
    Spec {
        marker: true,
        payload_type: 111,
        sequence: 0xfffe,
        timestamp: 0xdead_beef,
        ssrc: 0x1234_5678,
        csrcs: vec![],
        ext: None,
        payload: (0..40u8).collect(),
        padding: 0,
    }
}

fn build(s: &Spec) -> Vec<u8> {
    let mut out = vec![0x80 | s.csrcs.len() as u8];
    if s.padding > 0 {
        out[0] |= 0x20;
    }
    if s.ext.is_some() {
        out[0] |= 0x10;
    }
    out.push(u8::from(s.marker) << 7 | s.payload_type);
    out.extend(s.sequence.to_be_bytes());
    out.extend(s.timestamp.to_be_bytes());
    out.extend(s.ssrc.to_be_bytes());
    for csrc in &s.csrcs {
        out.extend(csrc.to_be_bytes());
    }
    if let Some((profile, elements)) = &s.ext {
        let words = elements.len().div_ceil(4);
        out.extend(profile.to_be_bytes());
        out.extend((words as u16).to_be_bytes());
        out.extend(elements);
        out.resize(out.len() + words * 4 - elements.len(), 0);
    }
    out.extend(&s.payload);
    if s.padding > 0 {
        out.resize(out.len() + usize::from(s.padding) - 1, 0);
        out.push(s.padding);
    }
    out
}

fn one_byte(elements: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut out = vec![];
    for (id, data) in elements {
        out.push(id << 4 | (data.len() as u8 - 1));
        out.extend(*data);
    }
    (0xBEDE, out)
}

fn two_byte(elements: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut out = vec![];
    for (id, data) in elements {
        out.push(*id);
        out.push(data.len() as u8);
        out.extend(*data);
    }
    (0x1000, out)
}

const AUDIO_LEVEL: &[u8] = &[0x8a];
const ABS_SEND_TIME: &[u8] = &[1, 2, 3];
const TWCC: &[u8] = &[0x12, 0x34];
const MID: &[u8] = b"audio0";

fn rtc(packet: &[u8]) -> rtc_rtp::Packet {
    rtc_rtp::Packet::unmarshal(&mut &packet[..]).expect("rtc-rtp accepts the packet")
}

fn rtc_extensions(packet: &rtc_rtp::Packet) -> Vec<(u8, Vec<u8>)> {
    let h = &packet.header;
    h.extensions
        .iter()
        .map(|e| (e.id, e.payload.to_vec()))
        .collect()
}

#[test]
fn parses_fixed_header_csrcs_and_padding() {
    let mut s = spec();
    s.csrcs = vec![1, 2, 3];
    s.padding = 7;
    let bytes = build(&s);
    let h = parse(&bytes).unwrap();
    assert!(h.marker);
    assert_eq!(
        (h.payload_type, h.sequence, h.timestamp, h.ssrc),
        (111, 0xfffe, 0xdead_beef, 0x1234_5678)
    );
    assert_eq!((h.header_len, h.payload_len, h.padding_len()), (24, 40, 7));
    assert_eq!(h.csrc_count(), 3);
    assert_eq!(h.extension_profile(), None);
    assert_eq!(h.payload(&bytes), Some(&s.payload[..]));
    assert_eq!(h.extension(&bytes, 1), None);
}

#[test]
fn parses_what_rtc_rtp_marshals() {
    let mut header = rtc_rtp::Header {
        version: 2,
        padding: true,
        marker: true,
        payload_type: 111,
        sequence_number: 4242,
        timestamp: 96_000,
        ssrc: 0xcafe_babe,
        csrc: vec![7, 8],
        ..Default::default()
    };
    header
        .set_extension(1, Bytes::from_static(AUDIO_LEVEL))
        .unwrap();
    header.set_extension(3, Bytes::from_static(TWCC)).unwrap();
    let payload = Bytes::from_static(b"opus frame bytes");
    let packet = rtc_rtp::Packet { header, payload };
    let bytes = packet.marshal().unwrap();
    let h = parse(&bytes).unwrap();
    assert_eq!(
        (h.sequence, h.timestamp, h.ssrc),
        (4242, 96_000, 0xcafe_babe)
    );
    assert!(h.marker);
    assert_eq!(h.csrc_count(), 2);
    assert_eq!(h.payload(&bytes), Some(&b"opus frame bytes"[..]));
    assert!(h.padding_len() > 0);
    assert_eq!(h.extension_profile(), Some(0xBEDE));
    assert_eq!(h.extension(&bytes, 1), Some(AUDIO_LEVEL));
    assert_eq!(h.extension(&bytes, 3), Some(TWCC));
    assert_eq!(h.extension(&bytes, 2), None);
}

#[test]
fn finds_one_and_two_byte_extensions() {
    let mut s = spec();
    s.ext = Some(one_byte(&[(1, AUDIO_LEVEL), (3, ABS_SEND_TIME), (5, TWCC)]));
    let bytes = build(&s);
    let h = parse(&bytes).unwrap();
    assert_eq!(h.header_len, 12 + 4 + 12);
    assert_eq!(h.extension(&bytes, 3), Some(ABS_SEND_TIME));
    assert_eq!(h.extension(&bytes, 5), Some(TWCC));
    assert_eq!(h.extension(&bytes, 0), None);
    assert_eq!(h.extension(&bytes, 15), None);

    // Two-byte form: padding between elements, an empty element, ids above 14.
    let (profile, mut elements) = two_byte(&[(200, MID)]);
    elements.extend([0, 0]);
    elements.extend(two_byte(&[(7, &[]), (1, AUDIO_LEVEL)]).1);
    s.ext = Some((profile | 0x5, elements));
    let bytes = build(&s);
    let h = parse(&bytes).unwrap();
    assert_eq!(h.extension(&bytes, 200), Some(MID));
    assert_eq!(h.extension(&bytes, 7), Some(&[][..]));
    assert_eq!(h.extension(&bytes, 1), Some(AUDIO_LEVEL));
    let ids: Vec<u8> = h.extensions(&bytes).map(|(id, _)| id).collect();
    assert_eq!(ids, [200, 7, 1]);
}

#[test]
fn one_byte_id_15_ends_the_block() {
    let mut s = spec();
    let (profile, mut elements) = one_byte(&[(1, AUDIO_LEVEL)]);
    elements.extend([0xf3, 9, 9, 9, 9, 9]); // id 15: everything after it is ignored
    s.ext = Some((profile, elements));
    let bytes = build(&s);
    let h = parse(&bytes).unwrap();
    assert_eq!(h.extensions(&bytes).count(), 1);
    let mut out = bytes.clone();
    let mut map = ExtensionMap::new();
    map.set(1, 2);
    rewrite(&mut out, &h, 1, 111, 1, 1, &map).unwrap();
    let h2 = parse(&out).unwrap();
    assert_eq!(h2.extensions(&out).collect::<Vec<_>>(), [(2, AUDIO_LEVEL)]);
}

#[test]
fn rejects_malformed_headers() {
    let ok = build(&spec());
    let mut bad = ok.clone();
    bad[0] = 0x40;
    assert_eq!(parse(&bad), Err(RtpError::BadVersion));
    assert_eq!(parse(&ok[..11]), Err(RtpError::TooShort));
    bad = ok[..20].to_vec();
    bad[0] = 0x83;
    assert_eq!(parse(&bad), Err(RtpError::TruncatedCsrc));
    bad = ok[..15].to_vec();
    bad[0] = 0x90;
    assert_eq!(parse(&bad), Err(RtpError::TruncatedExtension));

    let mut s = spec();
    s.ext = Some((0xBEDE, vec![0x13, 1])); // one-byte element claiming 2 data bytes, block has 3
    assert_eq!(parse(&build(&s)), Err(RtpError::BadExtensionElement));
    s.ext = Some((0x1000, vec![0, 0, 0, 5])); // two-byte element header cut by the block end
    assert_eq!(parse(&build(&s)), Err(RtpError::BadExtensionElement));
    s.ext = Some((0x1000, vec![9, 3, 0, 0])); // two-byte element of 3 bytes, 2 left
    assert_eq!(parse(&build(&s)), Err(RtpError::BadExtensionElement));
    s.ext = Some((0x1000, vec![0, 0, 0, 0])); // all padding is fine
    assert!(parse(&build(&s)).is_ok());

    let mut s = spec();
    s.padding = 4;
    let mut bytes = build(&s);
    *bytes.last_mut().unwrap() = 0;
    assert_eq!(parse(&bytes), Err(RtpError::BadPadding));
    *bytes.last_mut().unwrap() = 45; // 40 payload + 4 padding bytes: 45 is too many
    assert_eq!(parse(&bytes), Err(RtpError::BadPadding));
    *bytes.last_mut().unwrap() = 44; // padding may cover the whole payload
    assert_eq!(parse(&bytes).unwrap().payload_len, 0);
    let mut header_only = build(&spec())[..12].to_vec();
    header_only[0] |= 0x20;
    assert_eq!(parse(&header_only), Err(RtpError::BadPadding));
}

/// Rewrites `bytes` and checks the result with rtc-rtp: header fields replaced, marker, CSRCs,
/// padding and payload kept, extensions mapped in order.
fn rewrite_and_check(bytes: &[u8], map: &ExtensionMap, expected_ext: &[(u8, &[u8])]) -> Vec<u8> {
    let h = parse(bytes).unwrap();
    let mut out = bytes.to_vec();
    rewrite(&mut out, &h, 0xaabb_ccdd, 100, 7, 0x0102_0304, map).unwrap();
    assert_eq!(out.len(), bytes.len());
    assert_eq!(
        out[h.header_len..],
        bytes[h.header_len..],
        "payload untouched"
    );

    let before = rtc(bytes);
    let after = rtc(&out);
    assert_eq!(after.header.ssrc, 0xaabb_ccdd);
    assert_eq!(after.header.payload_type, 100);
    assert_eq!(after.header.sequence_number, 7);
    assert_eq!(after.header.timestamp, 0x0102_0304);
    assert_eq!(after.header.marker, before.header.marker);
    assert_eq!(after.header.padding, before.header.padding);
    assert_eq!(after.header.csrc, before.header.csrc);
    assert_eq!(after.payload, before.payload);
    let expected: Vec<(u8, Vec<u8>)> = expected_ext
        .iter()
        .map(|(id, data)| (*id, data.to_vec()))
        .collect();
    assert_eq!(rtc_extensions(&after), expected);

    // choir reads back what it wrote, with the same header length.
    let h2 = parse(&out).unwrap();
    assert_eq!(
        (h2.header_len, h2.payload_len),
        (h.header_len, h.payload_len)
    );
    let ours: Vec<(u8, Vec<u8>)> = h2.extensions(&out).map(|(i, d)| (i, d.to_vec())).collect();
    assert_eq!(ours, expected);
    out
}

fn rich_spec(ext: (u16, Vec<u8>)) -> Spec {
    let mut s = spec();
    s.csrcs = vec![0x1111_1111, 0x2222_2222];
    s.padding = 3;
    s.ext = Some(ext);
    s
}

#[test]
fn rewrites_fields_without_extensions() {
    for marker in [false, true] {
        let mut s = spec();
        s.marker = marker;
        s.csrcs = vec![5];
        rewrite_and_check(&build(&s), &ExtensionMap::new(), &[]);
    }
}

#[test]
fn rewrites_one_byte_extensions() {
    let elements = [(1, AUDIO_LEVEL), (3, ABS_SEND_TIME), (5, TWCC), (9, MID)];
    let bytes = build(&rich_spec(one_byte(&elements)));

    let mut map = ExtensionMap::new();
    for (from, to) in [(1, 10), (3, 2), (5, 14), (9, 1)] {
        map.set(from, to);
    }
    rewrite_and_check(
        &bytes,
        &map,
        &[(10, AUDIO_LEVEL), (2, ABS_SEND_TIME), (14, TWCC), (1, MID)],
    );

    // Dropped elements are compacted away and the block tail zeroed.
    let mut map = ExtensionMap::new();
    map.set(3, 4);
    map.set(9, 9);
    let out = rewrite_and_check(&bytes, &map, &[(4, ABS_SEND_TIME), (9, MID)]);
    let block = &out[12 + 8 + 4..parse(&out).unwrap().header_len];
    assert_eq!(
        block[..11],
        [0x42, 1, 2, 3, 0x95, b'a', b'u', b'd', b'i', b'o', b'0']
    );
    assert!(block[11..].iter().all(|&b| b == 0));

    // Everything dropped: the block stays, all padding.
    let out = rewrite_and_check(&bytes, &ExtensionMap::new(), &[]);
    assert!(out[24..parse(&out).unwrap().header_len]
        .iter()
        .all(|&b| b == 0));

    // The one-byte form cannot carry ids above 14: such a mapping drops the element.
    let mut map = ExtensionMap::new();
    map.set(1, 15);
    map.set(5, 200);
    map.set(3, 3);
    rewrite_and_check(&bytes, &map, &[(3, ABS_SEND_TIME)]);
}

#[test]
fn rewrites_two_byte_extensions() {
    let long = [0x5a; 40];
    let elements = [(1, AUDIO_LEVEL), (20, &long[..]), (3, TWCC), (255, MID)];
    let bytes = build(&rich_spec(two_byte(&elements)));
    let mut map = ExtensionMap::new();
    for (from, to) in [(1, 100), (20, 2), (3, 3), (255, 17)] {
        map.set(from, to);
    }
    rewrite_and_check(
        &bytes,
        &map,
        &[(100, AUDIO_LEVEL), (2, &long[..]), (3, TWCC), (17, MID)],
    );
    map.set(1, 0);
    map.set(20, 0);
    rewrite_and_check(&bytes, &map, &[(3, TWCC), (17, MID)]);
    rewrite_and_check(&bytes, &ExtensionMap::new(), &[]);
}

#[test]
fn rewrites_blocks_too_big_for_the_recorded_layout() {
    // More elements than the layout records: rewrite walks the bytes instead.
    let data: Vec<[u8; 2]> = (1..=12u8).map(|i| [i, i]).collect();
    let elements: Vec<(u8, &[u8])> = (1..=12u8).zip(&data).map(|(i, d)| (i, &d[..])).collect();
    let bytes = build(&rich_spec(one_byte(&elements)));
    let mut map = ExtensionMap::new();
    for id in (1..=12u8).filter(|id| id % 3 != 0) {
        map.set(id, 13 - id);
    }
    let expected: Vec<(u8, &[u8])> = elements
        .iter()
        .filter(|(id, _)| id % 3 != 0)
        .map(|&(id, d)| (13 - id, d))
        .collect();
    rewrite_and_check(&bytes, &map, &expected);

    // Elements beyond offset 255.
    let long = [[1u8; 200], [2; 200], [3; 200]];
    let bytes = build(&rich_spec(two_byte(&[
        (1, &long[0][..]),
        (2, &long[1][..]),
        (3, &long[2][..]),
    ])));
    let mut map = ExtensionMap::new();
    map.set(1, 40);
    map.set(3, 30);
    rewrite_and_check(&bytes, &map, &[(40, &long[0][..]), (30, &long[2][..])]);
}

#[test]
fn blanks_unknown_extension_profiles() {
    let bytes = build(&rich_spec((0xABCD, vec![1, 2, 3, 4, 5, 6, 7, 8])));
    let h = parse(&bytes).unwrap();
    assert_eq!(h.extension_profile(), Some(0xABCD));
    assert_eq!(h.extensions(&bytes).count(), 0);
    let out = rewrite_and_check(&bytes, &ExtensionMap::new(), &[]);
    assert_eq!(parse(&out).unwrap().extension_profile(), Some(0xBEDE));
}

#[test]
fn rewrite_rejects_mismatched_input() {
    let bytes = build(&rich_spec(one_byte(&[(1, AUDIO_LEVEL)])));
    let h = parse(&bytes).unwrap();
    let map = ExtensionMap::new();
    let mut out = bytes.clone();
    assert_eq!(
        rewrite(&mut out, &h, 1, 128, 1, 1, &map),
        Err(RtpError::BadPayloadType)
    );
    assert_eq!(
        rewrite(&mut out[..20], &h, 1, 1, 1, 1, &map),
        Err(RtpError::HeaderMismatch)
    );
    out.push(0);
    assert_eq!(
        rewrite(&mut out, &h, 1, 1, 1, 1, &map),
        Err(RtpError::HeaderMismatch)
    );
}

#[test]
fn extension_map_covers_all_ids() {
    let mut map = ExtensionMap::new();
    assert_eq!(std::mem::size_of::<ExtensionMap>(), 48);
    assert!((0..=255).all(|id| map.get(id) == 0));
    map.set(0, 5);
    assert_eq!(map.get(0), 0);
    map.set(14, 1);
    map.set(15, 2);
    map.set(255, 3);
    assert_eq!((map.get(14), map.get(15), map.get(255)), (1, 2, 3));
    map.set(15, 0);
    assert_eq!((map.get(15), map.get(255)), (0, 3));
    for id in 100..100 + extension::EXTENSION_MAP_HIGH_CAPACITY as u8 - 1 {
        assert!(map.try_set(id, id));
    }
    assert!(!map.try_set(250, 1), "full");
    assert!(map.try_set(100, 7), "updating an existing id still works");
    assert!(map.try_set(250, 0), "dropping an absent id is a no-op");
    assert_eq!((map.get(100), map.get(250), map.get(255)), (7, 0, 3));
}

/// Tiny deterministic generator for the adversarial tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parses, and when that succeeds, walks and rewrites: none of it may panic.
fn exercise(bytes: &[u8], map: &ExtensionMap) {
    if let Ok(h) = parse(bytes) {
        assert!(h.header_len + h.payload_len + h.padding_len() == bytes.len());
        for id in [1, 5, 14, 15, 200] {
            let _ = h.extension(bytes, id);
        }
        let _ = h.extensions(bytes).count();
        let mut out = bytes.to_vec();
        rewrite(&mut out, &h, 1, 2, 3, 4, map).unwrap();
        let h2 = parse(&out).unwrap();
        assert_eq!(h2.header_len, h.header_len);
    }
}

#[test]
fn truncations_and_garbage_never_panic() {
    let mut map = ExtensionMap::new();
    map.set(1, 3);
    map.set(20, 4);
    let valid = [
        build(&rich_spec(one_byte(&[
            (1, AUDIO_LEVEL),
            (3, ABS_SEND_TIME),
        ]))),
        build(&rich_spec(two_byte(&[(20, MID), (1, AUDIO_LEVEL)]))),
        build(&rich_spec((0x0001, vec![0; 8]))),
        build(&rich_spec(one_byte(&[(1, TWCC); 10]))),
    ];
    for bytes in &valid {
        let header_len = parse(bytes).unwrap().header_len;
        for len in 0..bytes.len() {
            let result = parse(&bytes[..len]);
            if len < header_len {
                assert!(result.is_err(), "truncated to {len}");
            }
            exercise(&bytes[..len], &map);
        }
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut bytes = valid[round % valid.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] = rng.next() as u8;
        }
        exercise(&bytes, &map);
        let len = (rng.next() % 80) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = noise.first_mut() {
            *first = 0x80 | (*first & 0x3f); // get past the version check
        }
        exercise(&noise, &map);

        // A header applied to other bytes of the same length (a caller bug) must not panic.
        let source = &valid[round % valid.len()];
        let header = parse(source).unwrap();
        let mut other: Vec<u8> = (0..source.len()).map(|_| rng.next() as u8).collect();
        let _ = rewrite(&mut other, &header, 1, 2, 3, 4, &map);
    }
}
