//! choir ↔ a raw dimpl peer, driven directly through dimpl's API with its default config
//! (so a dimpl server also exercises the HelloVerifyRequest cookie exchange).

use dimpl::{Dtls, Output};

use super::*;

struct RawDimpl {
    dtls: Dtls,
    material: Option<(Vec<u8>, dimpl::SrtpProfile)>,
    peer_cert: Option<Vec<u8>>,
    connected: bool,
    error: Option<String>,
    timeout: Option<Instant>,
}

impl RawDimpl {
    fn new(identity: &DtlsIdentity, client: bool, now: Instant) -> Self {
        let config = Arc::new(dimpl::Config::default());
        let mut dtls = Dtls::new_12(config, identity.dimpl_certificate(), now);
        dtls.set_active(client);
        dtls.handle_timeout(now).unwrap();
        RawDimpl {
            dtls,
            material: None,
            peer_cert: None,
            connected: false,
            error: None,
            timeout: None,
        }
    }
}

impl Endpoint for RawDimpl {
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 4096];
        loop {
            match self.dtls.poll_output(&mut buf) {
                Output::Packet(p) => out.push(p.to_vec()),
                Output::Timeout(t) => {
                    self.timeout = Some(t);
                    break;
                }
                Output::Connected => self.connected = true,
                Output::PeerCert(c) => self.peer_cert = Some(c.to_vec()),
                Output::KeyingMaterial(m, p) => self.material = Some((m.to_vec(), p)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn receive(&mut self, datagram: &[u8], now: Instant) {
        self.timeout(now);
        if let Err(e) = self.dtls.handle_packet(datagram) {
            self.error.get_or_insert(e.to_string());
        }
    }

    fn timeout(&mut self, now: Instant) {
        if let Err(e) = self.dtls.handle_timeout(now) {
            self.error.get_or_insert(e.to_string());
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.timeout
    }

    fn is_done(&self) -> bool {
        (self.connected && self.material.is_some()) || self.error.is_some()
    }
}

/// Handshake choir (in `role`) against a raw dimpl peer; returns both, connected.
fn connect(role: DtlsRole) -> (Choir, RawDimpl, DtlsIdentity, Instant) {
    let (ours, theirs) = (identity(), identity());
    let mut now = Instant::now();
    let mut choir = Choir::new(&ours, role, now);
    choir.expect(&theirs);
    let mut peer = RawDimpl::new(&theirs, role == DtlsRole::Server, now);
    let limit = now + DEADLINE;
    match role {
        DtlsRole::Client => run(&mut choir, &mut peer, &mut now, limit, lossless),
        DtlsRole::Server => run(&mut peer, &mut choir, &mut now, limit, lossless),
    };
    assert!(peer.error.is_none(), "{:?}", peer.error);
    assert!(choir.failures.is_empty(), "{:?}", choir.failures);
    assert_eq!(choir.connected_events, 1);
    assert!(peer.connected);
    // The peer saw our certificate, we verified theirs.
    assert_eq!(peer.peer_cert.as_deref(), Some(ours.certificate_der()));
    (choir, peer, ours, now)
}

#[test]
fn keys_match_a_raw_dimpl_peer_in_both_roles() {
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let (choir, peer, _, _) = connect(role);
        let keys = choir.keys.as_ref().unwrap();
        let (material, profile) = peer.material.as_ref().unwrap();
        assert_eq!(SrtpProfile::from_dimpl(*profile), Some(keys.profile));
        assert_eq!(keys.profile, SrtpProfile::AEAD_AES_256_GCM);
        assert_matches_material(keys, material, role == DtlsRole::Client);
    }
}

#[test]
fn application_data_is_dropped() {
    let (mut choir, mut peer, _, now) = connect(DtlsRole::Server);
    peer.dtls.send_application_data(b"hello").unwrap();
    peer.dtls.send_application_data(b"again").unwrap();
    let mut out = Vec::new();
    peer.drain(&mut out);
    assert!(!out.is_empty());
    for d in &out {
        choir.receive(d, now);
    }
    let mut replies = Vec::new();
    choir.drain(&mut replies);
    assert!(replies.is_empty());
    assert_eq!(choir.t.application_data_dropped(), 2);
    assert_eq!(choir.connected_events, 1);
    assert!(choir.failures.is_empty());
}

#[test]
fn close_notify_fails_closed_then_inert() {
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let (mut choir, mut peer, _, now) = connect(role);
        peer.dtls.close().unwrap();
        let mut out = Vec::new();
        peer.drain(&mut out);
        assert!(!out.is_empty());
        for d in &out {
            choir.receive(d, now);
        }
        let mut replies = Vec::new();
        choir.drain(&mut replies);
        assert_eq!(choir.failures, vec![DtlsFailure::Closed]);
        assert!(choir.t.is_failed());
        // Inert afterwards.
        for d in &out {
            choir.receive(d, now);
        }
        choir.timeout(now + DEADLINE);
        let before = replies.len();
        choir.drain(&mut replies);
        assert_eq!(replies.len(), before);
        assert_eq!(choir.failures.len(), 1);
        assert_eq!(choir.t.poll_timeout(), None);
    }
}
