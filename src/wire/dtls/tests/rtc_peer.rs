//! choir ↔ rtc-dtls 0.21 (webrtc-rs's sans-IO DTLS on ring and rustls): an implementation
//! independent of dimpl, in both roles and for each SRTP profile.

use std::net::SocketAddr;

use bytes::BytesMut;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider as rtc_crypto;
use rtc_dtls::endpoint::{Endpoint as RtcEndpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile as RtcProfile;

use super::*;

const CHOIR_ADDR: &str = "10.0.0.1:40000";
const RTC_ADDR: &str = "10.0.0.2:50000";

struct RtcPeer {
    endpoint: RtcEndpoint,
    /// choir's address, as rtc-dtls keys its associations by peer.
    remote: SocketAddr,
    certificate_der: Vec<u8>,
    complete: bool,
    error: Option<String>,
}

impl RtcPeer {
    /// An rtc-dtls endpoint offering (client) or accepting (server) `profiles`. It checks no
    /// chain (WebRTC certificates are self-signed); the test compares the certificate it saw.
    fn new(client: bool, profiles: Vec<RtcProfile>, now: Instant) -> Self {
        let provider = rtc_crypto::default_provider().expect("ring provider");
        let certificate = Certificate::generate_self_signed(vec![], provider.crypto())
            .expect("rtc-dtls certificate");
        let certificate_der = certificate.certificate[0].to_vec();
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![certificate])
            .with_srtp_protection_profiles(profiles)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true);
        let remote: SocketAddr = CHOIR_ADDR.parse().unwrap();
        let local: SocketAddr = RTC_ADDR.parse().unwrap();
        let config = Arc::new(config.build(client, Some(remote)).expect("rtc-dtls config"));
        let mut endpoint = if client {
            RtcEndpoint::new(local, Default::default(), None)
        } else {
            RtcEndpoint::new(local, Default::default(), Some(config.clone()))
        };
        if client {
            endpoint
                .connect(now, remote, config, None)
                .expect("connect");
        }
        RtcPeer {
            endpoint,
            remote,
            certificate_der,
            complete: false,
            error: None,
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        use aws_lc_rs::digest;
        let sha256 = digest::digest(&digest::SHA256, &self.certificate_der);
        Fingerprint::new("sha-256", fingerprint::format_hex_pairs(sha256.as_ref()))
    }

    /// The negotiated profile id and the RFC 5764 keying material rtc-dtls exports.
    fn exported(&self, profile: SrtpProfile) -> (u16, Vec<u8>, Vec<u8>) {
        let state = self.endpoint.get_connection_state(self.remote).unwrap();
        let len = 2 * (profile.key_len() + profile.salt_len());
        let material = state
            .export_keying_material("EXTRACTOR-dtls_srtp", &[], len)
            .unwrap();
        let peer_cert = state.peer_certificates.first().cloned().unwrap_or_default();
        (
            state.srtp_protection_profile() as u16,
            material.as_ref().to_vec(),
            peer_cert,
        )
    }
}

impl Endpoint for RtcPeer {
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            out.push(transmit.message.to_vec());
        }
    }

    fn receive(&mut self, datagram: &[u8], now: Instant) {
        match self
            .endpoint
            .read(now, self.remote, None, BytesMut::from(datagram))
        {
            Ok(events) => {
                for event in events {
                    if let EndpointEvent::HandshakeComplete = event {
                        self.complete = true;
                    }
                }
            }
            Err(e) => {
                self.error.get_or_insert(e.to_string());
            }
        }
    }

    fn timeout(&mut self, now: Instant) {
        if self.endpoint.get_connection_state(self.remote).is_none() {
            return;
        }
        if let Err(e) = self.endpoint.handle_timeout(self.remote, now) {
            self.error.get_or_insert(e.to_string());
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&self.remote)
    }

    fn is_done(&self) -> bool {
        self.complete || self.error.is_some()
    }
}

/// Handshake choir in `role` with rtc-dtls using `profiles`; check both sides' view.
fn handshake(role: DtlsRole, profiles: &[RtcProfile]) -> SrtpProfile {
    let ours = identity();
    let mut now = Instant::now();
    let mut choir = Choir::new(&ours, role, now);
    let mut rtc = RtcPeer::new(role == DtlsRole::Server, profiles.to_vec(), now);
    choir.t.set_remote_fingerprints(vec![rtc.fingerprint()]);
    let limit = now + DEADLINE;
    match role {
        DtlsRole::Client => run(&mut choir, &mut rtc, &mut now, limit, lossless),
        DtlsRole::Server => run(&mut rtc, &mut choir, &mut now, limit, lossless),
    };
    assert!(
        rtc.error.is_none(),
        "{role:?} {profiles:?}: {:?}",
        rtc.error
    );
    assert!(choir.failures.is_empty(), "{:?}", choir.failures);
    assert!(rtc.complete);
    assert_eq!(choir.connected_events, 1);

    let keys = choir.keys.as_ref().unwrap();
    let (profile_id, material, peer_cert) = rtc.exported(keys.profile);
    assert_eq!(profile_id, keys.profile.id());
    assert_matches_material(keys, &material, role == DtlsRole::Client);
    assert_eq!(peer_cert, ours.certificate_der());
    keys.profile
}

#[test]
fn each_profile_with_rtc_dtls_in_both_roles() {
    let each = [
        (
            RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            SrtpProfile::AES128_CM_HMAC_SHA1_80,
        ),
        (
            RtcProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProfile::AEAD_AES_128_GCM,
        ),
        (
            RtcProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProfile::AEAD_AES_256_GCM,
        ),
    ];
    for role in [DtlsRole::Client, DtlsRole::Server] {
        for (theirs, ours) in each {
            assert_eq!(handshake(role, &[theirs]), ours, "{role:?}");
        }
    }
}

#[test]
fn choir_server_prefers_aes256_gcm_from_rtc_dtls_client() {
    // The client lists AEAD_AES_256_GCM last; the dimpl server still picks it.
    let offer = [
        RtcProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        RtcProfile::Srtp_Aead_Aes_128_Gcm,
        RtcProfile::Srtp_Aead_Aes_256_Gcm,
    ];
    let chosen = handshake(DtlsRole::Server, &offer);
    assert_eq!(chosen, SrtpProfile::AEAD_AES_256_GCM);
    // And as client, against an rtc-dtls server supporting all three.
    let chosen = handshake(DtlsRole::Client, &offer);
    println!("rtc-dtls server chose {chosen:?} from choir's offer");
}

#[test]
fn rtc_dtls_with_the_wrong_fingerprint_is_rejected() {
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let mut now = Instant::now();
        let mut choir = Choir::new(&identity(), role, now);
        let mut rtc = RtcPeer::new(
            role == DtlsRole::Server,
            vec![RtcProfile::Srtp_Aead_Aes_128_Gcm],
            now,
        );
        choir.expect(&identity());
        let limit = now + DEADLINE;
        match role {
            DtlsRole::Client => run(&mut choir, &mut rtc, &mut now, limit, lossless),
            DtlsRole::Server => run(&mut rtc, &mut choir, &mut now, limit, lossless),
        };
        assert_eq!(choir.failures, vec![DtlsFailure::FingerprintMismatch]);
        assert_eq!(choir.connected_events, 0);
        assert!(!rtc.complete, "{role:?}: the peer must not complete either");
    }
}
