//! RFC 5769 test vectors, cross-checks against `rtc-stun`, and adversarial inputs.

use super::*;

/// RFC 5769 §2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
/// "evtj:h6vY", MESSAGE-INTEGRITY and FINGERPRINT. Padding bytes are 0x20.
pub(crate) const RFC5769_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2: IPv4 success response, SOFTWARE "test vector", 192.0.2.1:32853.
const RFC5769_RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3: IPv6 success response, [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const RFC5769_RESPONSE_V6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

pub(crate) const RFC5769_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

fn key() -> IntegrityKey {
    IntegrityKey::new(RFC5769_PASSWORD.as_bytes())
}

/// Recomputes MESSAGE-INTEGRITY and FINGERPRINT over the vector's own bytes before
/// MESSAGE-INTEGRITY (at `integrity_at`) and expects the vector back, byte for byte.
fn rebuild_tail(vector: &[u8], integrity_at: usize) {
    let mut buf = [0u8; 256];
    buf[..integrity_at].copy_from_slice(&vector[..integrity_at]);
    let mut w = MessageWriter::resume(&mut buf, integrity_at).unwrap();
    w.message_integrity(&key()).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    assert_eq!(&buf[..len], vector);
}

#[test]
fn rfc5769_sample_request() {
    let msg = Message::parse(&RFC5769_REQUEST).unwrap();
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), METHOD_BINDING);
    assert_eq!(msg.transaction_id(), &RFC5769_TID);
    msg.check_fingerprint().unwrap();
    msg.check_integrity(&key()).unwrap();
    assert_eq!(
        msg.check_integrity(&IntegrityKey::new(b"wrong")),
        Err(StunError::BadIntegrity)
    );
    assert_eq!(msg.get(attr::USERNAME), Some(&b"evtj:h6vY"[..]));
    assert_eq!(msg.get(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert_eq!(msg.get(attr::PRIORITY), Some(&[0x6e, 0x00, 0x01, 0xff][..]));
    assert_eq!(
        msg.get(attr::ICE_CONTROLLED),
        Some(&0x932f_f9b1_5126_3b36u64.to_be_bytes()[..])
    );
    let types: Vec<u16> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME,
            attr::MESSAGE_INTEGRITY,
            attr::FINGERPRINT
        ]
    );
    assert_eq!(msg.body_attributes().count(), 4);
    rebuild_tail(&RFC5769_REQUEST, 76);
}

#[test]
fn rfc5769_sample_ipv4_response() {
    let msg = Message::parse(&RFC5769_RESPONSE_V4).unwrap();
    assert_eq!(msg.class(), Class::SuccessResponse);
    msg.check_fingerprint().unwrap();
    msg.check_integrity(&key()).unwrap();
    let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(msg.xor_mapped_address(), Some(Ok(addr)));
    let ok = parse_binding_success(&RFC5769_RESPONSE_V4, RFC5769_PASSWORD).unwrap();
    assert_eq!(ok.mapped, addr);
    assert_eq!(ok.transaction_id, RFC5769_TID);
    rebuild_tail(&RFC5769_RESPONSE_V4, 48);
    built_response_matches(&RFC5769_RESPONSE_V4, addr, 48);
}

#[test]
fn rfc5769_sample_ipv6_response() {
    let msg = Message::parse(&RFC5769_RESPONSE_V6).unwrap();
    msg.check_fingerprint().unwrap();
    msg.check_integrity(&key()).unwrap();
    let addr: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(msg.xor_mapped_address(), Some(Ok(addr)));
    assert_eq!(
        parse_binding_success(&RFC5769_RESPONSE_V6, RFC5769_PASSWORD)
            .unwrap()
            .mapped,
        addr
    );
    rebuild_tail(&RFC5769_RESPONSE_V6, 60);
    built_response_matches(&RFC5769_RESPONSE_V6, addr, 60);
}

/// Writes SOFTWARE + XOR-MAPPED-ADDRESS from scratch: identical to the vector except the
/// SOFTWARE padding byte (0x20 in the RFC, 0 from us); with that byte set the same, adding
/// integrity and fingerprint reproduces the vector.
fn built_response_matches(vector: &[u8], addr: SocketAddr, integrity_at: usize) {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        METHOD_BINDING,
        Class::SuccessResponse,
        &RFC5769_TID,
    )
    .unwrap();
    w.attribute(attr::SOFTWARE, b"test vector").unwrap();
    w.xor_mapped_address(addr).unwrap();
    let len = w.finish();
    assert_eq!(len, integrity_at);
    assert_eq!(buf[35], 0, "zero padding");
    buf[35] = 0x20;
    assert_eq!(&buf[4..len], &vector[4..integrity_at]);
    let mut w = MessageWriter::resume(&mut buf, len).unwrap();
    w.message_integrity(&key()).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    assert_eq!(&buf[..len], vector);
}

#[test]
fn message_type_encoding() {
    assert_eq!(message_type(METHOD_BINDING, Class::Request), 0x0001);
    assert_eq!(message_type(METHOD_BINDING, Class::Indication), 0x0011);
    assert_eq!(message_type(METHOD_BINDING, Class::SuccessResponse), 0x0101);
    assert_eq!(message_type(METHOD_BINDING, Class::ErrorResponse), 0x0111);
    for method in [0x001u16, 0x003, 0x00A, 0x0FF, 0xFFF] {
        for class in [
            Class::Request,
            Class::Indication,
            Class::SuccessResponse,
            Class::ErrorResponse,
        ] {
            assert_eq!(
                split_message_type(message_type(method, class)),
                (method, class)
            );
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    for vector in [
        &RFC5769_REQUEST[..],
        &RFC5769_RESPONSE_V4[..],
        &RFC5769_RESPONSE_V6[..],
    ] {
        for len in 0..vector.len() {
            assert!(Message::parse(&vector[..len]).is_err(), "prefix {len}");
            assert!(parse_binding_success(&vector[..len], RFC5769_PASSWORD).is_err());
        }
    }
    assert_eq!(Message::parse(&[]).unwrap_err(), StunError::Truncated);
    assert_eq!(Message::parse(&[0x80]).unwrap_err(), StunError::NotStun);
    let mut long = RFC5769_REQUEST.to_vec();
    long.push(0);
    assert_eq!(Message::parse(&long).unwrap_err(), StunError::BadLength);
}

#[test]
fn every_byte_flip_is_detected() {
    for i in 0..RFC5769_REQUEST.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut m = RFC5769_REQUEST;
            m[i] ^= flip;
            let verdict = Message::parse(&m)
                .and_then(|msg| msg.check_fingerprint().map(|_| msg))
                .and_then(|msg| msg.check_integrity(&key()));
            assert!(verdict.is_err(), "flip {flip:#x} at {i} went unnoticed");
        }
    }
}

#[test]
fn framing_errors() {
    // FINGERPRINT not last.
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, METHOD_BINDING, Class::Request, &[7; 12]).unwrap();
    w.fingerprint().unwrap();
    w.attribute(attr::SOFTWARE, b"x").unwrap();
    let len = w.finish();
    assert_eq!(
        Message::parse(&buf[..len]).unwrap_err(),
        StunError::MalformedAttribute
    );
    // Attribute length running past the message.
    let mut m = RFC5769_REQUEST;
    m[23] = 0xF0;
    assert_eq!(
        Message::parse(&m).unwrap_err(),
        StunError::MalformedAttribute
    );
    // Length not a multiple of 4, bad cookie, top bits set.
    let mut m = RFC5769_REQUEST;
    m[3] = 0x57;
    assert_eq!(Message::parse(&m).unwrap_err(), StunError::BadLength);
    let mut m = RFC5769_REQUEST;
    m[4] = 0x22;
    assert_eq!(Message::parse(&m).unwrap_err(), StunError::NotStun);
    let mut m = RFC5769_REQUEST;
    m[0] = 0x40;
    assert_eq!(Message::parse(&m).unwrap_err(), StunError::NotStun);
    // Address attribute with a bad family or length.
    assert_eq!(
        decode_xor_address(&[0, 3, 0, 0, 1, 2, 3, 4], &[0; 12]),
        Err(StunError::BadAddress)
    );
    assert_eq!(
        decode_xor_address(&[0, 1, 0, 0, 1, 2, 3], &[0; 12]),
        Err(StunError::BadAddress)
    );
    assert_eq!(
        decode_xor_address(&[0, 1], &[0; 12]),
        Err(StunError::BadAddress)
    );
}

/// xorshift64*: deterministic pseudo-random bytes for fuzz-style tests.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut buf = [0u8; 160];
    for round in 0..50_000 {
        let len = (rng.next() % buf.len() as u64) as usize;
        rng.fill(&mut buf[..len]);
        if round % 2 == 0 && len >= HEADER_LEN {
            // A plausible header so the attribute walk runs.
            buf[0] &= 0x3F;
            buf[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        }
        if let Ok(msg) = Message::parse(&buf[..len]) {
            let _ = msg.check_fingerprint();
            let _ = msg.check_integrity(&key());
            let _ = msg.error_code();
            let _ = msg.xor_mapped_address();
            assert!(msg.attributes().count() <= len / 4);
        }
        let _ = parse_binding_success(&buf[..len], RFC5769_PASSWORD);
    }
}

#[test]
fn writer_reports_small_buffers() {
    let mut buf = [0u8; 256];
    let full = write_binding_request(&mut buf, [1; 12], "abcd:efgh", "password", 1, true, 2);
    assert!(full > 0);
    for size in 0..full {
        let mut small = vec![0u8; size];
        assert_eq!(
            write_binding_request(&mut small, [1; 12], "abcd:efgh", "password", 1, true, 2),
            0
        );
    }
    assert_eq!(
        MessageWriter::new(&mut [0u8; 19], METHOD_BINDING, Class::Request, &[0; 12]).err(),
        Some(StunError::BufferTooSmall)
    );
}

// ---- cross-checks against rtc-stun (independent implementation) ----

pub(crate) mod rtc {
    use rtc_stun::attributes::{
        ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
    };
    use rtc_stun::crypto::{default_provider, RTCCryptoProvider};
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::integrity::MessageIntegrity;
    use rtc_stun::message::{Getter, Message, Setter, TransactionId, BINDING_REQUEST};
    use rtc_stun::textattrs::TextAttribute;
    use rtc_stun::xoraddr::XorMappedAddress;
    use std::net::SocketAddr;
    use std::sync::Arc;

    pub fn provider() -> Arc<dyn RTCCryptoProvider> {
        default_provider().unwrap()
    }

    /// An ICE check as a full controlling agent would send it, built by rtc-stun.
    pub fn binding_request(
        tid: [u8; 12],
        username: &str,
        password: &str,
        priority: u32,
        use_candidate: bool,
        tiebreaker: u64,
    ) -> Vec<u8> {
        let p = provider();
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId(tid)),
            Box::new(BINDING_REQUEST),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ])
        .unwrap();
        m.add(ATTR_PRIORITY, &priority.to_be_bytes());
        m.add(ATTR_ICE_CONTROLLING, &tiebreaker.to_be_bytes());
        if use_candidate {
            m.add(ATTR_USE_CANDIDATE, &[]);
        }
        MessageIntegrity::new_short_term_integrity_with_provider(password.to_owned(), p.crypto())
            .add_to(&mut m)
            .unwrap();
        FINGERPRINT.add_to(&mut m).unwrap();
        m.raw
    }

    /// Decodes `bytes` with rtc-stun, checks integrity under `password` and the fingerprint.
    pub fn decode_verified(bytes: &[u8], password: &str) -> Message {
        let p = provider();
        let mut m = Message::new();
        m.raw = bytes.to_vec();
        m.decode().unwrap();
        MessageIntegrity::check(&mut m, password.as_bytes(), p.crypto()).unwrap();
        FINGERPRINT.check(&m).unwrap();
        m
    }

    pub fn xor_mapped_address(m: &Message) -> SocketAddr {
        let mut xor = XorMappedAddress::default();
        xor.get_from(m).unwrap();
        SocketAddr::new(xor.ip, xor.port)
    }

    pub fn get(m: &Message, typ: u16) -> Option<Vec<u8>> {
        m.get(rtc_stun::attributes::AttrType(typ)).ok()
    }
}

#[test]
fn our_request_verifies_in_rtc_stun() {
    let mut buf = [0u8; 256];
    let len = write_binding_request(
        &mut buf,
        [9; 12],
        "remoteufrag:localufrag",
        "the-remote-password-0123456789ab",
        0x6e00_01ff,
        true,
        0xdead_beef_0000_0001,
    );
    let m = rtc::decode_verified(&buf[..len], "the-remote-password-0123456789ab");
    assert_eq!(m.typ, rtc_stun::message::BINDING_REQUEST);
    assert_eq!(m.transaction_id.0, [9; 12]);
    assert_eq!(
        rtc::get(&m, attr::USERNAME).unwrap(),
        b"remoteufrag:localufrag"
    );
    assert_eq!(
        rtc::get(&m, attr::PRIORITY).unwrap(),
        0x6e00_01ffu32.to_be_bytes()
    );
    assert_eq!(
        rtc::get(&m, attr::ICE_CONTROLLING).unwrap(),
        0xdead_beef_0000_0001u64.to_be_bytes()
    );
    assert_eq!(rtc::get(&m, attr::USE_CANDIDATE).unwrap(), b"");
}

#[test]
fn rtc_stun_request_verifies_here() {
    for use_candidate in [false, true] {
        let raw = rtc::binding_request([3; 12], "ab:cd", "pw-pw-pw", 77, use_candidate, 5);
        let msg = Message::parse(&raw).unwrap();
        msg.check_fingerprint().unwrap();
        msg.check_integrity(&IntegrityKey::new(b"pw-pw-pw"))
            .unwrap();
        assert_eq!(msg.get(attr::USERNAME), Some(&b"ab:cd"[..]));
        assert_eq!(msg.get(attr::PRIORITY), Some(&77u32.to_be_bytes()[..]));
        assert_eq!(msg.get(attr::USE_CANDIDATE).is_some(), use_candidate);
    }
}
