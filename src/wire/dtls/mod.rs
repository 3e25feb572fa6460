//! DTLS 1.2 for DTLS-SRTP: the handshake that yields SRTP master keys.
//!
//! - RFC 6347: DTLS 1.2, including retransmission (§4.2.4) driven here by the caller's clock.
//! - RFC 5764: DTLS-SRTP; the `use_srtp` extension (§4.1.2) and the keying material split into
//!   the client's and the server's master key and salt (§4.2).
//! - RFC 8842 §5: the DTLS role follows the SDP `setup` / mediasoup `role` negotiation; the
//!   certificate is authenticated by the fingerprint the peer signalled (RFC 8122 §5).
//!
//! The protocol itself is [dimpl](https://docs.rs/dimpl), a sans-IO DTLS implementation.
//! [`DtlsTransport`] wraps one dimpl instance with what choir needs around it: one handshake
//! deadline, the fingerprint check that gates the release of the keys, and a small event
//! stream ([`DtlsEvent`]) in which every error is a terminal [`DtlsFailure`].
//!
//! Handshakes are rare (one per WebRTC transport), so allocating during one is fine; after
//! [`DtlsEvent::Connected`] the transport only answers the peer's retransmitted flights and
//! alerts, and SRTP runs elsewhere with the released [`SrtpKeys`].

mod fingerprint;
mod identity;
mod keying;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, Output};

use fingerprint::ExpectedFingerprint;
pub use fingerprint::Fingerprint;
pub use identity::{dtls_config, try_dtls_config, DtlsError, DtlsIdentity, DTLS_MTU};
pub use keying::{SrtpKeys, SrtpProfile};

/// Suggested size of the buffer passed to [`DtlsTransport::poll`]: any datagram (≤ [`DTLS_MTU`])
/// fits.
pub const POLL_BUFFER_LEN: usize = 2048;

/// The largest single output (the peer's certificate, surfaced whole) accepted through the
/// internal overflow buffer when it does not fit the caller's buffer.
const MAX_OVERSIZED_OUTPUT: usize = 64 * 1024;

/// dimpl reports "no timer" as an instant ten years away; timers beyond this are treated as
/// none.
const IDLE_HORIZON: Duration = Duration::from_secs(24 * 60 * 60);

/// Which side of the handshake we are (RFC 8842 §5: `setup:active` is the DTLS client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// Sends the ClientHello (`setup:active`, mediasoup `role: "client"`).
    Client,
    /// Waits for the ClientHello (`setup:passive`, mediasoup `role: "server"`).
    Server,
}

/// Why a transport stopped. Terminal: the transport emits nothing afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsFailure {
    /// The peer's certificate matches none of the signalled fingerprints (RFC 8122 §5).
    FingerprintMismatch,
    /// No completed, verified handshake by the deadline, or a flight's retransmissions ran out.
    HandshakeTimeout,
    /// The peer violated the protocol or a cryptographic check failed (dimpl error).
    Protocol,
    /// The peer sent a `close_notify` alert.
    Closed,
    /// The handshake completed without a `use_srtp` profile, so there are no SRTP keys.
    SrtpNotNegotiated,
    /// The buffer given to [`DtlsTransport::poll`] was smaller than a datagram.
    BufferTooSmall,
}

impl DtlsFailure {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DtlsFailure::FingerprintMismatch => "fingerprint_mismatch",
            DtlsFailure::HandshakeTimeout => "handshake_timeout",
            DtlsFailure::Protocol => "protocol",
            DtlsFailure::Closed => "closed",
            DtlsFailure::SrtpNotNegotiated => "srtp_not_negotiated",
            DtlsFailure::BufferTooSmall => "buffer_too_small",
        }
    }

    fn from_dimpl(error: &dimpl::Error) -> Self {
        match error {
            dimpl::Error::Timeout(_) => DtlsFailure::HandshakeTimeout,
            dimpl::Error::ConnectionClosed => DtlsFailure::Closed,
            _ => DtlsFailure::Protocol,
        }
    }
}

impl fmt::Display for DtlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DtlsFailure {}

/// What [`DtlsTransport::poll`] hands out.
#[derive(Debug)]
pub enum DtlsEvent<'a> {
    /// Send this datagram to the peer (it borrows the poll buffer).
    Transmit(&'a [u8]),
    /// Handshake complete and the peer's fingerprint verified: the SRTP keys. Emitted once.
    Connected(SrtpKeys),
    /// The transport failed; emitted once, after which it is inert.
    Failed(DtlsFailure),
    /// Nothing more to do until the next packet or [`DtlsTransport::poll_timeout`].
    Idle,
}

#[derive(Debug)]
enum State {
    /// Handshaking, or handshake done but keys held back until the fingerprint verifies.
    Handshaking,
    /// Keys ready; [`DtlsEvent::Connected`] not yet polled.
    KeysReady(SrtpKeys),
    /// Connected event delivered; only retransmissions and alerts from here on.
    Connected,
    /// Failed event not yet polled.
    Failing(DtlsFailure),
    /// Failed event delivered; inert.
    Failed(DtlsFailure),
}

/// One DTLS-SRTP association over one ICE transport.
///
/// Drive it with [`handle_packet`](Self::handle_packet) (DTLS records only: the caller
/// demultiplexes by first byte, RFC 7983 §7), [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout), and drain [`poll`](Self::poll) until
/// [`DtlsEvent::Idle`] after each of them.
pub struct DtlsTransport {
    dtls: Dtls,
    role: DtlsRole,
    state: State,
    /// The whole handshake must complete (and verify) by then.
    deadline: Instant,
    /// The latest time seen (dimpl requires a monotonic clock).
    now: Instant,
    /// dimpl's next timer, from its last poll cycle.
    dimpl_timeout: Option<Instant>,
    /// Signalled fingerprints; `None` until set.
    remote_fingerprints: Option<Vec<ExpectedFingerprint>>,
    /// The peer's leaf certificate (DER), once dimpl surfaced it.
    peer_certificate: Option<Vec<u8>>,
    /// dimpl finished the handshake.
    handshake_done: bool,
    /// The exported keys, held until the fingerprint check passes.
    keys: Option<SrtpKeys>,
    /// Application data records received (WebRTC audio has no DTLS data channel here).
    application_data_dropped: u64,
}

impl DtlsTransport {
    /// A transport in `role`; the handshake must complete by `now + handshake_timeout`
    /// (30 s in the daemon). The deadline counts from creation in both roles, so create the
    /// transport when the handshake is expected to start (connect-transport, or the first
    /// DTLS datagram from the peer), not when a transport that may stay unused is set up.
    ///
    /// A client's ClientHello is ready at the first [`poll`](Self::poll).
    pub fn new(
        config: Arc<dimpl::Config>,
        identity: &DtlsIdentity,
        role: DtlsRole,
        handshake_timeout: Duration,
        now: Instant,
    ) -> Self {
        let mut dtls = Dtls::new_12(config, identity.dimpl_certificate(), now);
        if role == DtlsRole::Client {
            dtls.set_active(true);
        }
        let mut transport = DtlsTransport {
            dtls,
            role,
            state: State::Handshaking,
            deadline: now.checked_add(handshake_timeout).unwrap_or(now),
            now,
            dimpl_timeout: None,
            remote_fingerprints: None,
            peer_certificate: None,
            handshake_done: false,
            keys: None,
            application_data_dropped: 0,
        };
        // A dimpl client builds its ClientHello on its first timeout; a server just takes the
        // clock.
        if let Err(e) = transport.dtls.handle_timeout(now) {
            transport.fail_with(&e);
        }
        transport
    }

    /// Our role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Fingerprints signalled by the peer. May be set after the handshake started (server
    /// role): keys are only released ([`DtlsEvent::Connected`]) once the peer certificate's
    /// fingerprint matches one of them; a mismatch fails with
    /// [`DtlsFailure::FingerprintMismatch`]. Entries with an unsupported hash function or a
    /// malformed value never match; an empty list therefore fails verification. Calling it
    /// again replaces the list while the handshake is still unverified.
    pub fn set_remote_fingerprints(&mut self, fingerprints: Vec<Fingerprint>) {
        if !matches!(self.state, State::Handshaking) {
            return;
        }
        let parsed = fingerprints
            .iter()
            .filter_map(ExpectedFingerprint::parse)
            .collect();
        self.remote_fingerprints = Some(parsed);
        self.verify_and_release();
    }

    /// Feed one received DTLS datagram. Malformed records are dropped by dimpl; anything fatal
    /// becomes a [`DtlsEvent::Failed`] at the next poll.
    pub fn handle_packet(&mut self, datagram: &[u8], now: Instant) {
        // Advance the clock (and check the deadline) first, as dimpl requires.
        self.handle_timeout(now);
        if self.is_inert() {
            return;
        }
        if let Err(e) = self.dtls.handle_packet(datagram) {
            self.fail_with(&e);
        }
    }

    /// Advance the clock: retransmit a flight whose timer expired (RFC 6347 §4.2.4), or fail
    /// with [`DtlsFailure::HandshakeTimeout`] once the deadline has passed unverified.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_inert() {
            return;
        }
        self.now = self.now.max(now);
        if matches!(self.state, State::Handshaking) && self.now >= self.deadline {
            tracing::debug!(role = ?self.role, "DTLS handshake deadline passed");
            self.fail(DtlsFailure::HandshakeTimeout);
            return;
        }
        if let Err(e) = self.dtls.handle_timeout(self.now) {
            self.fail_with(&e);
        }
    }

    /// Drain outputs: call repeatedly until [`DtlsEvent::Idle`]. `Transmit` borrows `buf`.
    ///
    /// `buf` must hold a whole datagram (≥ [`DTLS_MTU`]; [`POLL_BUFFER_LEN`] is suggested),
    /// otherwise the transport fails with [`DtlsFailure::BufferTooSmall`]. Larger non-packet
    /// outputs (a big peer certificate) go through an internal buffer.
    pub fn poll<'a>(&mut self, buf: &'a mut [u8]) -> DtlsEvent<'a> {
        if let Some(event) = self.take_terminal_event() {
            return event;
        }
        if self.is_inert() {
            return DtlsEvent::Idle;
        }
        // dimpl writes packets into `buf`. The range is carried out of the loop instead of the
        // slice itself, so that `buf` is only borrowed for 'a on the returning path.
        let base = buf.as_ptr() as usize;
        let packet = loop {
            match self.dtls.poll_output(&mut *buf) {
                Output::Packet(p) => {
                    let start = (p.as_ptr() as usize).wrapping_sub(base);
                    break Some(start..start.saturating_add(p.len()));
                }
                Output::Timeout(at) => {
                    self.dimpl_timeout = Some(at);
                    break None;
                }
                Output::BufferTooSmall { needed } => {
                    if !self.poll_oversized(needed) {
                        break None;
                    }
                }
                other => {
                    if !self.on_output(other) {
                        break None;
                    }
                }
            }
        };
        if let Some(range) = packet {
            let buf: &'a [u8] = buf;
            return match buf.get(range) {
                Some(datagram) => DtlsEvent::Transmit(datagram),
                None => {
                    self.fail(DtlsFailure::Protocol);
                    self.take_terminal_event().unwrap_or(DtlsEvent::Idle)
                }
            };
        }
        self.verify_and_release();
        self.take_terminal_event().unwrap_or(DtlsEvent::Idle)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the next retransmission or
    /// the handshake deadline. `None` once failed, or connected with no timer pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failing(_) | State::Failed(_) => None,
            State::Handshaking => Some(match self.dimpl_timeout {
                Some(t) => t.min(self.deadline),
                None => self.deadline,
            }),
            State::KeysReady(_) | State::Connected => self
                .dimpl_timeout
                .filter(|t| t.saturating_duration_since(self.now) < IDLE_HORIZON),
        }
    }

    /// The handshake completed and the peer's fingerprint verified (the keys may still be
    /// waiting to be polled).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::KeysReady(_) | State::Connected)
    }

    /// The transport failed (whether or not the Failed event was polled yet).
    pub fn is_failed(&self) -> bool {
        self.failure().is_some()
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<DtlsFailure> {
        match self.state {
            State::Failing(f) | State::Failed(f) => Some(f),
            _ => None,
        }
    }

    /// Application data records received and dropped.
    pub fn application_data_dropped(&self) -> u64 {
        self.application_data_dropped
    }

    fn is_inert(&self) -> bool {
        self.is_failed()
    }

    /// Record one non-packet dimpl output; `false` stops the poll cycle.
    fn on_output(&mut self, output: Output<'_>) -> bool {
        match output {
            Output::Connected => self.handshake_done = true,
            Output::PeerCert(der) => self.peer_certificate = Some(der.to_vec()),
            Output::KeyingMaterial(material, profile) => {
                let keys = SrtpProfile::from_dimpl(profile).and_then(|profile| {
                    SrtpKeys::split(profile, &material, self.role == DtlsRole::Client)
                });
                match keys {
                    Some(keys) => self.keys = Some(keys),
                    None => {
                        self.fail(DtlsFailure::SrtpNotNegotiated);
                        return false;
                    }
                }
            }
            Output::ApplicationData(_) => {
                self.application_data_dropped = self.application_data_dropped.saturating_add(1);
            }
            Output::CloseNotify => {
                self.fail(DtlsFailure::Closed);
                return false;
            }
            // Packet and Timeout are handled by the caller; anything dimpl adds later is
            // not needed for DTLS-SRTP.
            _ => {}
        }
        // Check as soon as the certificate is known: a mismatch must stop our next flight.
        // (Releasing the keys waits for the end of the cycle: dimpl reports Connected before
        // the keying material.)
        self.check_fingerprint();
        !self.is_failed()
    }

    /// dimpl's next output does not fit the caller's buffer: take it through a temporary one.
    /// A datagram cannot be handed out from there (the caller's buffer is too small for it).
    fn poll_oversized(&mut self, needed: usize) -> bool {
        if needed > MAX_OVERSIZED_OUTPUT {
            self.fail(DtlsFailure::Protocol);
            return false;
        }
        let mut scratch = vec![0; needed];
        match self.dtls.poll_output(&mut scratch) {
            Output::Packet(_) | Output::BufferTooSmall { .. } => {
                self.fail(DtlsFailure::BufferTooSmall);
                false
            }
            Output::Timeout(at) => {
                self.dimpl_timeout = Some(at);
                false
            }
            other => self.on_output(other),
        }
    }

    /// Release the keys once dimpl finished, the keys are exported and the peer's certificate
    /// matches a signalled fingerprint; fail on a mismatch.
    /// Only called between dimpl poll cycles, when its outputs for a step are all seen.
    fn verify_and_release(&mut self) {
        self.check_fingerprint();
        if !matches!(self.state, State::Handshaking) {
            return;
        }
        if !self.handshake_done || self.remote_fingerprints.is_none() {
            return;
        }
        if self.peer_certificate.is_none() {
            // Both sides authenticate with certificates; dimpl surfaces the peer's before it
            // completes, so this is a broken handshake.
            self.fail(DtlsFailure::Protocol);
            return;
        }
        match self.keys.take() {
            Some(keys) => {
                tracing::debug!(role = ?self.role, profile = keys.profile.as_str(), "DTLS connected");
                self.state = State::KeysReady(keys);
            }
            None => self.fail(DtlsFailure::SrtpNotNegotiated),
        }
    }

    /// Fail if the peer's certificate and the signalled fingerprints are both known and do not
    /// match (RFC 8122 §5).
    fn check_fingerprint(&mut self) {
        if !matches!(self.state, State::Handshaking) {
            return;
        }
        if let (Some(expected), Some(der)) = (&self.remote_fingerprints, &self.peer_certificate) {
            if !expected.iter().any(|f| f.matches(der)) {
                tracing::debug!(role = ?self.role, "DTLS peer certificate fingerprint mismatch");
                self.fail(DtlsFailure::FingerprintMismatch);
            }
        }
    }

    /// The Connected or Failed event, once.
    fn take_terminal_event<'a>(&mut self) -> Option<DtlsEvent<'a>> {
        match std::mem::replace(&mut self.state, State::Handshaking) {
            State::KeysReady(keys) => {
                self.state = State::Connected;
                Some(DtlsEvent::Connected(keys))
            }
            State::Failing(f) => {
                self.state = State::Failed(f);
                Some(DtlsEvent::Failed(f))
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    fn fail_with(&mut self, error: &dimpl::Error) {
        tracing::debug!(role = ?self.role, %error, "DTLS failed");
        self.fail(DtlsFailure::from_dimpl(error));
    }

    /// Enter the terminal state (the first failure wins); drop anything not yet delivered.
    fn fail(&mut self, failure: DtlsFailure) {
        if !self.is_failed() {
            self.state = State::Failing(failure);
            self.keys = None;
        }
    }
}

impl fmt::Debug for DtlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsTransport")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("dtls", &self.dtls)
            .finish_non_exhaustive()
    }
}
