//! choir client ↔ choir server.

use super::*;

struct Pair {
    client: Choir,
    server: Choir,
    client_id: DtlsIdentity,
    server_id: DtlsIdentity,
    now: Instant,
}

impl Pair {
    /// Both sides know each other's fingerprint from the start.
    fn new() -> Self {
        let mut pair = Self::unverified();
        pair.client.expect(&pair.server_id);
        pair.server.expect(&pair.client_id);
        pair
    }

    /// No fingerprints set yet.
    fn unverified() -> Self {
        let (client_id, server_id) = (identity(), identity());
        let now = Instant::now();
        Pair {
            client: Choir::new(&client_id, DtlsRole::Client, now),
            server: Choir::new(&server_id, DtlsRole::Server, now),
            client_id,
            server_id,
            now,
        }
    }

    fn run(&mut self, drop: impl FnMut(usize, usize, &[u8]) -> bool) -> Transcript {
        let limit = self.now + DEADLINE * 2;
        run(
            &mut self.client,
            &mut self.server,
            &mut self.now,
            limit,
            drop,
        )
    }

    /// Exchange what is ready without letting the clock move.
    fn run_frozen(&mut self) -> Transcript {
        let limit = self.now;
        run(
            &mut self.client,
            &mut self.server,
            &mut self.now,
            limit,
            lossless,
        )
    }

    fn assert_connected_once(&self) {
        assert_eq!(self.client.connected_events, 1);
        assert_eq!(self.server.connected_events, 1);
        assert!(
            self.client.failures.is_empty(),
            "{:?}",
            self.client.failures
        );
        assert!(
            self.server.failures.is_empty(),
            "{:?}",
            self.server.failures
        );
        assert!(self.client.t.is_connected() && self.server.t.is_connected());
        let (c, s) = (self.client.keys.as_ref(), self.server.keys.as_ref());
        assert_mirrored(c.unwrap(), s.unwrap());
    }
}

#[test]
fn handshake_completes_and_keys_mirror() {
    let mut pair = Pair::new();
    let start = pair.now;
    assert_eq!(pair.client.t.role(), DtlsRole::Client);
    assert_eq!(pair.server.t.role(), DtlsRole::Server);
    let transcript = pair.run(lossless);
    pair.assert_connected_once();
    assert_eq!(pair.now, start, "no retransmission needed");
    // No cookie exchange: ClientHello, server flight, client flight, server Finished.
    let sizes: Vec<Vec<usize>> = transcript
        .sent
        .iter()
        .map(|side| side.iter().map(Vec::len).collect())
        .collect();
    println!("datagram sizes client, server: {sizes:?}");
    assert!(sizes.iter().flatten().all(|&n| n <= DTLS_MTU));

    // Connected is terminal-once: more polling yields nothing.
    let mut buf = [0u8; POLL_BUFFER_LEN];
    assert!(matches!(pair.server.t.poll(&mut buf), DtlsEvent::Idle));
    assert!(matches!(pair.client.t.poll(&mut buf), DtlsEvent::Idle));
}

#[test]
fn client_offers_all_three_profiles_and_gets_aes256_gcm() {
    let mut pair = Pair::new();
    let transcript = pair.run(lossless);
    let offered = offered_srtp_profiles(&transcript.sent[CLIENT][0]);
    println!("ClientHello use_srtp profiles: {offered:04x?}");
    let mut sorted = offered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0x0001, 0x0007, 0x0008]);
    pair.assert_connected_once();
    let profile = pair.client.keys.as_ref().unwrap().profile;
    assert_eq!(profile, SrtpProfile::AEAD_AES_256_GCM);
    assert_eq!(profile.id(), 0x0008);
}

#[test]
fn wrong_fingerprint_fails_and_releases_no_keys() {
    // The server expects someone else's certificate: it stops before its final flight.
    let mut pair = Pair::unverified();
    pair.client.expect(&pair.server_id);
    pair.server.expect(&identity());
    pair.run(lossless);
    assert_eq!(pair.server.failures, vec![DtlsFailure::FingerprintMismatch]);
    assert_eq!(pair.server.connected_events, 0);
    assert!(pair.server.keys.is_none() && !pair.server.t.is_connected());
    assert!(pair.server.t.is_failed());
    assert_eq!(
        pair.server.t.failure(),
        Some(DtlsFailure::FingerprintMismatch)
    );
    // Without the server's Finished the client cannot complete: it gives up.
    assert_eq!(pair.client.failures, vec![DtlsFailure::HandshakeTimeout]);
    assert_eq!(pair.client.connected_events, 0);

    // The client side checks too, before sending its own certificate flight.
    let mut pair = Pair::unverified();
    pair.client.expect(&identity());
    pair.server.expect(&pair.client_id);
    let transcript = pair.run(lossless);
    assert_eq!(pair.client.failures, vec![DtlsFailure::FingerprintMismatch]);
    assert_eq!(pair.client.connected_events, 0);
    assert_eq!(
        transcript.sent[CLIENT].len(),
        1,
        "only the ClientHello went out"
    );
    assert_eq!(pair.server.connected_events, 0);
}

#[test]
fn fingerprints_set_after_the_flights_still_verify() {
    let mut pair = Pair::unverified();
    pair.client.expect(&pair.server_id);
    pair.run_frozen();
    // The server has sent its Finished (the client is done) but holds its keys back.
    assert_eq!(pair.client.connected_events, 1);
    assert_eq!(pair.server.connected_events, 0);
    assert!(!pair.server.t.is_connected() && !pair.server.t.is_failed());
    assert!(
        pair.server.t.poll_timeout().is_some(),
        "the deadline still runs"
    );

    // Signalled late, lowercase hex and an uppercase algorithm name.
    let fp = pair.client_id.fingerprint_sha256().to_lowercase();
    let late = Fingerprint::new("SHA-256", fp);
    pair.server.t.set_remote_fingerprints(vec![late]);
    assert!(pair.server.t.is_connected());
    pair.run_frozen();
    pair.assert_connected_once();
}

#[test]
fn late_wrong_fingerprint_fails() {
    let mut pair = Pair::unverified();
    pair.client.expect(&pair.server_id);
    pair.run_frozen();
    pair.server
        .t
        .set_remote_fingerprints(vec![sha256(&identity())]);
    pair.run_frozen();
    assert_eq!(pair.server.failures, vec![DtlsFailure::FingerprintMismatch]);
    assert_eq!(pair.server.connected_events, 0);
}

#[test]
fn missing_fingerprints_time_out() {
    let mut pair = Pair::unverified();
    pair.client.expect(&pair.server_id);
    pair.run(lossless);
    assert_eq!(pair.client.connected_events, 1);
    assert_eq!(pair.server.failures, vec![DtlsFailure::HandshakeTimeout]);
    assert_eq!(pair.server.connected_events, 0);
}

#[test]
fn every_hash_function_and_any_case_verifies() {
    use aws_lc_rs::digest;
    let algorithms: [(&str, &digest::Algorithm); 5] = [
        ("sha-1", &digest::SHA1_FOR_LEGACY_USE_ONLY),
        ("SHA-224", &digest::SHA224),
        ("Sha-256", &digest::SHA256),
        ("sha-384", &digest::SHA384),
        ("sha-512", &digest::SHA512),
    ];
    for (i, (name, algorithm)) in algorithms.into_iter().enumerate() {
        let mut pair = Pair::unverified();
        pair.client.expect(&pair.server_id);
        let hex = fingerprint::format_hex_pairs(
            digest::digest(algorithm, pair.client_id.certificate_der()).as_ref(),
        );
        let hex = if i % 2 == 0 { hex.to_lowercase() } else { hex };
        // Unusable entries around the right one are ignored.
        pair.server.t.set_remote_fingerprints(vec![
            Fingerprint::new("md5", "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF"),
            Fingerprint::new("sha-256", "zz"),
            Fingerprint::new(name, hex),
        ]);
        pair.run(lossless);
        pair.assert_connected_once();
    }
}

#[test]
fn only_unusable_fingerprints_fail() {
    for fingerprints in [
        vec![],
        vec![Fingerprint::new(
            "md5",
            "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF",
        )],
    ] {
        let mut pair = Pair::unverified();
        pair.client.expect(&pair.server_id);
        pair.server.t.set_remote_fingerprints(fingerprints);
        pair.run(lossless);
        assert_eq!(pair.server.failures, vec![DtlsFailure::FingerprintMismatch]);
    }
}

#[test]
fn lost_client_hello_is_retransmitted() {
    let mut pair = Pair::new();
    let start = pair.now;
    let transcript = pair.run(|side, n, _| side == CLIENT && n == 0);
    pair.assert_connected_once();
    assert_eq!(transcript.dropped, [1, 0]);
    // The same ClientHello in a record with the next sequence number (RFC 6347 §4.1).
    assert_eq!(
        transcript.sent[CLIENT][0][13..],
        transcript.sent[CLIENT][1][13..]
    );
    // RFC 6347 §4.2.4.1: initial timer 1 s (dimpl adds ±25 % jitter).
    let waited = pair.now - start;
    assert!(waited >= Duration::from_millis(750) && waited <= Duration::from_millis(1250));
}

#[test]
fn lost_server_flights_are_retransmitted() {
    // Drop the server's first flight (one datagram here).
    let mut pair = Pair::new();
    let transcript = pair.run(|side, n, _| side == SERVER && n == 0);
    assert_eq!(transcript.dropped, [0, 1]);
    // Resent with fresh record sequence numbers.
    assert_eq!(
        transcript.sent[SERVER][0].len(),
        transcript.sent[SERVER][1].len()
    );
    pair.assert_connected_once();

    // Drop the server's final flight (ChangeCipherSpec + Finished) once: the server is
    // already connected, the client retransmits its flight and the server answers again
    // (RFC 6347 §4.2.4) without a second Connected event.
    let mut pair = Pair::new();
    let mut dropped_final = false;
    let transcript = pair.run(|side, _, d| {
        let is_final = side == SERVER && (d.first() == Some(&20) || epoch(d) == 1);
        if is_final && !dropped_final {
            dropped_final = true;
            return true;
        }
        false
    });
    assert_eq!(transcript.dropped, [0, 1]);
    assert!(
        transcript.sent[CLIENT].len() > 2,
        "client retransmitted its flight"
    );
    pair.assert_connected_once();
}

fn epoch(datagram: &[u8]) -> u16 {
    datagram
        .get(3..5)
        .map_or(u16::MAX, |e| u16::from_be_bytes([e[0], e[1]]))
}

#[test]
fn handshake_timeout_fires_once_and_goes_inert() {
    let id = identity();
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let start = Instant::now();
        let mut now = start;
        let mut t = Choir::with_deadline(&id, role, Duration::from_secs(5), now);
        let mut sent = Vec::new();
        t.drain(&mut sent);
        while let Some(at) = t.next_timeout() {
            assert!(at >= now);
            now = at;
            t.timeout(now);
            t.drain(&mut sent);
        }
        assert_eq!(t.failures, vec![DtlsFailure::HandshakeTimeout]);
        assert_eq!(now - start, Duration::from_secs(5));
        if role == DtlsRole::Client {
            // ClientHello at 0 s, resent at ≈ 1 s and ≈ 3 s; the next would be at ≈ 7 s.
            assert_eq!(sent.len(), 3);
        } else {
            assert!(sent.is_empty());
        }
        // Inert: nothing more comes out, whatever goes in.
        let hello = {
            let mut c = Choir::new(&id, DtlsRole::Client, now);
            let mut out = Vec::new();
            c.drain(&mut out);
            out.remove(0)
        };
        t.receive(&hello, now);
        t.timeout(now + DEADLINE);
        t.t.set_remote_fingerprints(vec![sha256(&id)]);
        let mut buf = [0u8; POLL_BUFFER_LEN];
        assert!(matches!(t.t.poll(&mut buf), DtlsEvent::Idle));
        assert_eq!(t.t.poll_timeout(), None);
        assert!(t.t.is_failed() && !t.t.is_connected());
    }
}

#[test]
fn retries_run_out_before_a_long_deadline() {
    // dimpl's retry budget (4 retries from 1 s, doubling: ≈ 31 s) ends the handshake first.
    let id = identity();
    let start = Instant::now();
    let mut now = start;
    let mut t = Choir::with_deadline(&id, DtlsRole::Client, Duration::from_secs(120), now);
    let mut sent = Vec::new();
    t.drain(&mut sent);
    while let Some(at) = t.next_timeout() {
        now = at;
        t.timeout(now);
        t.drain(&mut sent);
    }
    assert_eq!(t.failures, vec![DtlsFailure::HandshakeTimeout]);
    assert_eq!(sent.len(), 5);
    assert!(now - start < Duration::from_secs(60), "{:?}", now - start);
}

#[test]
fn small_poll_buffer_fails_cleanly() {
    let id = identity();
    let mut t = DtlsTransport::new(
        dtls_config(),
        &id,
        DtlsRole::Client,
        DEADLINE,
        Instant::now(),
    );
    let mut small = [0u8; 64];
    assert!(matches!(
        t.poll(&mut small),
        DtlsEvent::Failed(DtlsFailure::BufferTooSmall)
    ));
    assert!(matches!(t.poll(&mut small), DtlsEvent::Idle));
}
