//! Tests of the whole session: RFC 7714 vectors, cross-checks against `rtc-srtp`, and
//! adversarial input. Unit tests of the parts (RFC 3711 B.2, B.3, replay, headers) sit next to
//! the code they test.

mod vectors;

use super::SrtpSession;

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
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}
