//! Certificate fingerprints (RFC 8122 §5, RFC 8842 §5).
//!
//! WebRTC peers use self-signed certificates; the binding between the signalling channel and
//! the DTLS handshake is the fingerprint (a hash of the certificate DER) each side signals.
//! A handshake's keys are only usable once the peer's certificate matches one of them.

use std::fmt::Write as _;

use aws_lc_rs::digest;

/// A fingerprint as signalled by the peer, e.g. mediasoup's `dtlsParameters.fingerprints[]` or
/// SDP `a=fingerprint:sha-256 AB:CD:…` (RFC 8122 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function name from the IANA "Hash Function Textual Names" registry: `sha-1`,
    /// `sha-224`, `sha-256`, `sha-384` or `sha-512` are supported (case-insensitive).
    pub algorithm: String,
    /// Hex pairs separated by ':' (case-insensitive).
    pub value: String,
}

impl Fingerprint {
    /// A fingerprint from its algorithm name and value.
    pub fn new(algorithm: impl Into<String>, value: impl Into<String>) -> Self {
        Fingerprint {
            algorithm: algorithm.into(),
            value: value.into(),
        }
    }
}

/// A signalled fingerprint, parsed once: the hash to apply and the digest to expect.
#[derive(Debug)]
pub(crate) struct ExpectedFingerprint {
    algorithm: &'static digest::Algorithm,
    digest: Vec<u8>,
}

impl ExpectedFingerprint {
    /// Parse a signalled fingerprint; `None` when its hash function is unsupported or its
    /// value is not well-formed hex pairs of the hash's length (it can then never match).
    pub(crate) fn parse(fingerprint: &Fingerprint) -> Option<Self> {
        let algorithm = hash_function(fingerprint.algorithm.trim())?;
        let digest = parse_hex_pairs(fingerprint.value.trim())?;
        (digest.len() == algorithm.output_len())
            .then_some(ExpectedFingerprint { algorithm, digest })
    }

    /// Does the certificate (DER) hash to this fingerprint?
    pub(crate) fn matches(&self, certificate_der: &[u8]) -> bool {
        digest::digest(self.algorithm, certificate_der).as_ref() == self.digest.as_slice()
    }
}

/// The hash functions of RFC 8122 §5 that a certificate fingerprint may use (MD2 and MD5 are
/// not accepted).
fn hash_function(name: &str) -> Option<&'static digest::Algorithm> {
    const NAMES: [(&str, &digest::Algorithm); 5] = [
        ("sha-1", &digest::SHA1_FOR_LEGACY_USE_ONLY),
        ("sha-224", &digest::SHA224),
        ("sha-256", &digest::SHA256),
        ("sha-384", &digest::SHA384),
        ("sha-512", &digest::SHA512),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, algorithm)| *algorithm)
}

/// `"0A:bc:…"` → bytes; every element must be exactly two hex digits.
fn parse_hex_pairs(value: &str) -> Option<Vec<u8>> {
    value
        .split(':')
        .map(|pair| match *pair.as_bytes() {
            [hi, lo] => Some((hex_digit(hi)? << 4) | hex_digit(lo)?),
            _ => None,
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Bytes → `"0A:BC:…"`, uppercase as RFC 8122 §5 writes fingerprints.
pub(crate) fn format_hex_pairs(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_pairs_round_trip_and_reject_malformed() {
        assert_eq!(parse_hex_pairs("0a:Bc:FF"), Some(vec![0x0a, 0xbc, 0xff]));
        assert_eq!(format_hex_pairs(&[0x0a, 0xbc, 0xff]), "0A:BC:FF");
        for bad in [
            "", "0", "0a:", ":0a", "0a::bc", "0abc", "0g", "0a:b", "é0", "0a:bc:",
        ] {
            assert_eq!(parse_hex_pairs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_checks_algorithm_and_length() {
        let der = b"not really a certificate";
        let sha256 = format_hex_pairs(digest::digest(&digest::SHA256, der).as_ref());
        let ok = ExpectedFingerprint::parse(&Fingerprint::new("SHA-256", sha256.to_lowercase()));
        assert!(ok.is_some_and(|f| f.matches(der)));
        // Right digest under the wrong algorithm name: the length does not fit sha-384.
        assert!(ExpectedFingerprint::parse(&Fingerprint::new("sha-384", &sha256)).is_none());
        assert!(ExpectedFingerprint::parse(&Fingerprint::new("md5", "00:11")).is_none());
        assert!(ExpectedFingerprint::parse(&Fingerprint::new("sha-1", "00:11")).is_none());
    }
}
