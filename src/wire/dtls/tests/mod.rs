//! In-memory handshakes on a fake clock: choir ↔ choir, choir ↔ a raw dimpl peer, choir ↔
//! rtc-dtls (an independent implementation), plus loss, timeouts and adversarial input.

mod adversarial;
mod dimpl_peer;
mod pair;
mod rtc_peer;

use std::time::{Duration, Instant};

use super::*;

pub(super) const DEADLINE: Duration = Duration::from_secs(30);
pub(super) const CLIENT: usize = 0;
pub(super) const SERVER: usize = 1;

/// One side of an in-memory handshake.
pub(super) trait Endpoint {
    /// Collect the datagrams it wants to send (and record its events).
    fn drain(&mut self, out: &mut Vec<Vec<u8>>);
    fn receive(&mut self, datagram: &[u8], now: Instant);
    fn timeout(&mut self, now: Instant);
    fn next_timeout(&self) -> Option<Instant>;
    /// Connected with keys, or failed.
    fn is_done(&self) -> bool;
}

/// A choir transport and the events it produced.
pub(super) struct Choir {
    pub t: DtlsTransport,
    pub keys: Option<SrtpKeys>,
    pub connected_events: usize,
    pub failures: Vec<DtlsFailure>,
}

impl Choir {
    pub fn new(identity: &DtlsIdentity, role: DtlsRole, now: Instant) -> Self {
        Self::with_deadline(identity, role, DEADLINE, now)
    }

    pub fn with_deadline(
        identity: &DtlsIdentity,
        role: DtlsRole,
        deadline: Duration,
        now: Instant,
    ) -> Self {
        Choir {
            t: DtlsTransport::new(dtls_config(), identity, role, deadline, now),
            keys: None,
            connected_events: 0,
            failures: Vec::new(),
        }
    }

    /// Expect this peer certificate (SDP-style sha-256 fingerprint).
    pub fn expect(&mut self, peer: &DtlsIdentity) {
        self.t.set_remote_fingerprints(vec![sha256(peer)]);
    }
}

impl Endpoint for Choir {
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut buf = [0u8; POLL_BUFFER_LEN];
        loop {
            match self.t.poll(&mut buf) {
                DtlsEvent::Transmit(d) => out.push(d.to_vec()),
                DtlsEvent::Connected(keys) => {
                    self.connected_events += 1;
                    self.keys = Some(keys);
                }
                DtlsEvent::Failed(f) => self.failures.push(f),
                DtlsEvent::Idle => break,
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], now: Instant) {
        self.t.handle_packet(datagram, now);
    }

    fn timeout(&mut self, now: Instant) {
        self.t.handle_timeout(now);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.t.poll_timeout()
    }

    fn is_done(&self) -> bool {
        self.keys.is_some() || !self.failures.is_empty()
    }
}

pub(super) fn sha256(identity: &DtlsIdentity) -> Fingerprint {
    Fingerprint::new("sha-256", identity.fingerprint_sha256())
}

pub(super) fn identity() -> DtlsIdentity {
    DtlsIdentity::generate().expect("certificate")
}

/// What crossed the wire, per side (index [`CLIENT`] or [`SERVER`] of the `run` arguments).
#[derive(Default)]
pub(super) struct Transcript {
    pub sent: [Vec<Vec<u8>>; 2],
    pub dropped: [usize; 2],
}

/// Exchange datagrams between `a` (index 0) and `b` (index 1) until both are done or nothing
/// moves; when idle, advance the fake clock to the next timer, but never past `limit`.
/// `drop(side, n, datagram)` drops the `n`-th datagram sent by `side`.
pub(super) fn run(
    a: &mut dyn Endpoint,
    b: &mut dyn Endpoint,
    now: &mut Instant,
    limit: Instant,
    mut drop: impl FnMut(usize, usize, &[u8]) -> bool,
) -> Transcript {
    let mut transcript = Transcript::default();
    for _ in 0..10_000 {
        let mut moved = false;
        for side in [0, 1] {
            let (from, to): (&mut dyn Endpoint, &mut dyn Endpoint) = if side == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let mut out = Vec::new();
            from.drain(&mut out);
            for d in out {
                moved = true;
                let n = transcript.sent[side].len();
                if drop(side, n, &d) {
                    transcript.dropped[side] += 1;
                } else {
                    to.receive(&d, *now);
                }
                transcript.sent[side].push(d);
            }
        }
        if a.is_done() && b.is_done() {
            break;
        }
        if !moved {
            let next = [a.next_timeout(), b.next_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= limit => {
                    *now = (*now).max(t);
                    a.timeout(*now);
                    b.timeout(*now);
                }
                _ => break,
            }
        }
    }
    transcript
}

/// No loss.
pub(super) fn lossless(_side: usize, _n: usize, _d: &[u8]) -> bool {
    false
}

/// Assert that two sides' keys mirror each other (our local = the peer's remote).
pub(super) fn assert_mirrored(ours: &SrtpKeys, theirs: &SrtpKeys) {
    assert_eq!(ours.profile, theirs.profile);
    assert_eq!(ours.local_key, theirs.remote_key);
    assert_eq!(ours.local_salt, theirs.remote_salt);
    assert_eq!(ours.remote_key, theirs.local_key);
    assert_eq!(ours.remote_salt, theirs.local_salt);
    assert_ne!(ours.local_key, ours.remote_key);
    assert_eq!(ours.local_key.len(), ours.profile.key_len());
    assert_eq!(ours.local_salt.len(), ours.profile.salt_len());
}

/// Check choir's keys against a peer's raw exported material (RFC 5764 §4.2 layout:
/// client key | server key | client salt | server salt).
pub(super) fn assert_matches_material(ours: &SrtpKeys, material: &[u8], we_are_client: bool) {
    let (k, s) = (ours.profile.key_len(), ours.profile.salt_len());
    assert_eq!(material.len(), 2 * (k + s));
    let client_key = &material[..k];
    let server_key = &material[k..2 * k];
    let client_salt = &material[2 * k..2 * k + s];
    let server_salt = &material[2 * k + s..];
    let (local, remote) = if we_are_client {
        ((client_key, client_salt), (server_key, server_salt))
    } else {
        ((server_key, server_salt), (client_key, client_salt))
    };
    assert_eq!((&ours.local_key[..], &ours.local_salt[..]), local);
    assert_eq!((&ours.remote_key[..], &ours.remote_salt[..]), remote);
}

/// The SRTP protection profile ids a ClientHello datagram offers in `use_srtp` (RFC 5764
/// §4.1.1), parsed independently of dimpl. Test helper: panics on anything unexpected.
pub(super) fn offered_srtp_profiles(datagram: &[u8]) -> Vec<u16> {
    let u16_at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]) as usize;
    // DTLS record header (13) then handshake header (12): RFC 6347 §4.1, §4.2.2.
    assert_eq!(datagram[0], 22, "handshake record");
    let record = &datagram[13..13 + u16_at(datagram, 11)];
    assert_eq!(record[0], 1, "ClientHello");
    let body = &record[12..];
    let mut i = 2 + 32; // client_version, random
    i += 1 + body[i] as usize; // session_id
    i += 1 + body[i] as usize; // cookie (RFC 6347 §4.2.1)
    i += 2 + u16_at(body, i); // cipher_suites
    i += 1 + body[i] as usize; // compression_methods
    let end = i + 2 + u16_at(body, i);
    i += 2;
    while i < end {
        let (ty, len) = (u16_at(body, i), u16_at(body, i + 2));
        let data = &body[i + 4..i + 4 + len];
        if ty == 0x000e {
            let n = u16_at(data, 0);
            return data[2..2 + n]
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
        }
        i += 4 + len;
    }
    panic!("no use_srtp extension");
}

#[test]
fn identity_fingerprint_is_sdp_sha256() {
    use aws_lc_rs::digest;
    let id = identity();
    let fp = id.fingerprint_sha256();
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert_eq!(fp, fp.to_uppercase());
    let expected = fingerprint::format_hex_pairs(
        digest::digest(&digest::SHA256, id.certificate_der()).as_ref(),
    );
    assert_eq!(fp, expected);
    assert_ne!(
        identity().fingerprint_sha256(),
        fp,
        "fresh key per identity"
    );
    assert!(
        Arc::ptr_eq(&dtls_config(), &dtls_config()),
        "config built once"
    );
}
