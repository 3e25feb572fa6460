//! The local DTLS certificate and the shared dimpl configuration.
//!
//! WebRTC endpoints authenticate DTLS with self-signed certificates whose fingerprints are
//! exchanged out of band (RFC 8122 §5, RFC 8842 §5). choir makes one ECDSA P-256 certificate
//! per shard (or process) at start and announces its SHA-256 fingerprint.

use std::fmt;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest;
use dimpl::DtlsCertificate;

use super::fingerprint::format_hex_pairs;

/// The largest datagram dimpl produces (its default; it leaves room for IPv6 + UDP + TURN
/// framing under a 1280-byte path MTU).
pub const DTLS_MTU: usize = 1150;

/// Errors while setting up DTLS (not per packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsError {
    /// The self-signed certificate or its key could not be generated.
    CertificateGeneration,
    /// dimpl rejected the configuration or its crypto provider failed the self-test.
    Config,
}

impl DtlsError {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DtlsError::CertificateGeneration => "certificate_generation",
            DtlsError::Config => "config",
        }
    }
}

impl fmt::Display for DtlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DtlsError {}

/// The shard's (or process's) DTLS certificate: ECDSA P-256 self-signed, made once at start.
///
/// Cloning is cheap (shared); every [`super::DtlsTransport`] copies the DER into its own dimpl
/// instance, which is a per-handshake allocation.
#[derive(Clone)]
pub struct DtlsIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    certificate: DtlsCertificate,
    fingerprint_sha256: String,
}

impl DtlsIdentity {
    /// Generate a fresh self-signed ECDSA P-256 certificate (≈ 2 ms) with a random serial
    /// number (Firefox rejects reused serials).
    pub fn generate() -> Result<Self, DtlsError> {
        let certificate = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| DtlsError::CertificateGeneration)?;
        let fingerprint_sha256 =
            format_hex_pairs(digest::digest(&digest::SHA256, &certificate.certificate).as_ref());
        Ok(DtlsIdentity {
            inner: Arc::new(IdentityInner {
                certificate,
                fingerprint_sha256,
            }),
        })
    }

    /// "sha-256" fingerprint of the certificate DER, uppercase hex pairs separated by ':'
    /// (as in SDP `a=fingerprint`, RFC 8122 §5).
    pub fn fingerprint_sha256(&self) -> &str {
        &self.inner.fingerprint_sha256
    }

    /// The certificate, DER encoded.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.certificate.certificate
    }

    pub(crate) fn dimpl_certificate(&self) -> DtlsCertificate {
        self.inner.certificate.clone()
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint_sha256", &self.inner.fingerprint_sha256)
            .finish_non_exhaustive()
    }
}

/// The dimpl configuration shared by every transport, built on first use.
///
/// Building it runs the crypto provider's self-test (≈ 1 ms), so it is done once per process.
/// Settings:
/// - DTLS 1.2 with ECDHE-ECDSA AEAD suites and extended master secret (dimpl's defaults);
///   `use_srtp` offering / accepting AEAD_AES_256_GCM, AEAD_AES_128_GCM and
///   AES128_CM_HMAC_SHA1_80 (always on in dimpl; a dimpl server picks in that order).
/// - The server requires a client certificate: WebRTC authenticates both sides by
///   fingerprint (RFC 8842 §5).
/// - No HelloVerifyRequest cookie exchange: ICE connectivity checks have already proven the
///   peer answers on its address, the case where RFC 6347 §4.2.1 lets a server skip the
///   cookie; it saves a round trip.
/// - Retransmission: 1 s initial timer, doubling, 4 retries (RFC 6347 §4.2.4.1); dimpl's own
///   40 s handshake limit stays as a backstop behind each transport's deadline.
pub fn try_dtls_config() -> Result<Arc<dimpl::Config>, DtlsError> {
    static CONFIG: OnceLock<Result<Arc<dimpl::Config>, DtlsError>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            dimpl::Config::builder()
                .mtu(DTLS_MTU)
                .require_client_certificate(true)
                .use_server_cookie(false)
                .build()
                .map(Arc::new)
                .map_err(|_| DtlsError::Config)
        })
        .clone()
}

/// The dimpl Config, built once per process (≈ 1 ms self-test) and shared.
///
/// # Panics
///
/// If the crypto provider fails its self-test: no DTLS is possible in this process at all.
/// Use [`try_dtls_config`] to handle that at start-up instead.
pub fn dtls_config() -> Arc<dimpl::Config> {
    try_dtls_config().expect("dimpl config: the crypto provider failed its self-test")
}
