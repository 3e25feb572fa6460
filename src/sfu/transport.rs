//! A WebRTC transport (one UDP 5-tuple to one browser): RFC 7983 demultiplexing, ICE-lite,
//! DTLS-SRTP and the SRTP contexts of both directions.
//!
//! Life of a transport: created by `create-transport` (ICE credentials, no DTLS yet) →
//! ICE selects the browser's address on its first valid Binding request → DTLS starts once ICE
//! has an address and `connect-transport` has told the role and fingerprints (or, if a
//! ClientHello arrives first, as DTLS server) → the handshake exports SRTP keys → media.

use std::time::Instant;

use super::counters::Counters;
use super::{random_token, random_u32, ConsumerKey, Egress, Path, ProducerKey, Settings};
use crate::sfu::api::{self, ApiError, Direction, DtlsParameters, TransportOptions};
use crate::wire::demux::{self, PacketKind};
use crate::wire::dtls::{self, DtlsEvent, DtlsFailure, DtlsRole, DtlsTransport};
use crate::wire::ice::{IceLite, IceState, StunOutcome};
use crate::wire::srtp::{SrtpProfile, SrtpSession};

/// mediasoup's priority for a UDP host candidate; TCP candidates rank below every UDP one, and
/// each further announced address below the previous one (RFC 8445 §5.1.2: local preference).
const UDP_HOST_PRIORITY: u32 = 1_076_302_079;
const TCP_PENALTY: u32 = 1 << 16;
/// Validated paths a transport remembers.
const MAX_PATHS: usize = 4;
const ADDRESS_PENALTY: u32 = 1 << 8;

pub struct TransportParams {
    pub channel_id: String,
    pub user_id: String,
    pub direction: Direction,
    /// The local port: the transport's own (per-transport mode) or the shard's (single-port).
    pub port: u16,
}

/// Why a transport closed itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    ConsentExpired,
    Dtls(DtlsFailure),
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::ConsentExpired => "ice consent expired",
            CloseReason::Dtls(f) => f.as_str(),
        }
    }
}

/// What a datagram turned out to be, once the transport has handled its own part.
pub enum Received {
    /// Handled (STUN, DTLS) or dropped (and counted).
    Nothing,
    /// An RTP packet, decrypted in place: the first `len` bytes of the buffer.
    Rtp(usize),
    /// A compound RTCP packet, decrypted in place.
    Rtcp(usize),
    /// The transport failed and must be closed.
    Failed(CloseReason),
}

/// What a transport borrows from its shard for one call.
pub struct Io<'a, E: Egress> {
    pub now: Instant,
    pub settings: &'a Settings,
    /// Room for one outgoing datagram (STUN reply, DTLS flight).
    pub scratch: &'a mut [u8],
    pub out: &'a mut E,
    pub counters: &'a mut Counters,
}

pub struct Transport {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    pub direction: Direction,
    pub port: u16,
    ice: IceLite,
    /// The path ICE selected (the socket and remote address of the last nominated check):
    /// where we send.
    selected: Option<Path>,
    /// Paths validated by a check (newest last): DTLS and media are accepted on any of them
    /// (RFC 8445 §12.1), e.g. while the browser moves from one pair to another.
    validated: Vec<Path>,
    /// A path validated by the last datagram, and the one it evicted, for shared-socket routing.
    new_path: Option<(Path, Option<Path>)>,
    /// Role and fingerprints from `connect-transport`.
    remote: Option<(DtlsRole, Vec<dtls::Fingerprint>)>,
    dtls: Option<DtlsTransport>,
    /// (inbound, outbound) once DTLS has exported keys.
    srtp: Option<(SrtpSession, SrtpSession)>,
    pub producers: Vec<ProducerKey>,
    pub consumers: Vec<ConsumerKey>,
    /// Next consumer `mid` on this transport.
    pub next_mid: u32,
    /// Our SSRC as an RTCP reporter (Receiver Reports on a send transport).
    pub rtcp_ssrc: u32,
}

impl Transport {
    pub fn new(params: TransportParams, settings: &Settings, now: Instant) -> Self {
        let ufrag = random_token(16);
        let pwd = random_token(32);
        Transport {
            id: super::new_id(),
            channel_id: params.channel_id,
            user_id: params.user_id,
            direction: params.direction,
            port: params.port,
            ice: IceLite::new(&ufrag, &pwd, settings.consent_timeout, now),
            selected: None,
            validated: Vec::new(),
            new_path: None,
            remote: None,
            dtls: None,
            srtp: None,
            producers: Vec::new(),
            consumers: Vec::new(),
            next_mid: 0,
            rtcp_ssrc: random_u32(),
        }
    }

    /// The reply of `create-transport`: a UDP and/or a passive TCP host candidate per announced
    /// address, UDP preferred.
    pub fn options(&self, settings: &Settings) -> TransportOptions {
        let mut ice_candidates = Vec::new();
        for (i, a) in settings.announced.iter().enumerate() {
            let ip = a.ip.to_string();
            let base = UDP_HOST_PRIORITY - ADDRESS_PENALTY * i as u32;
            let candidate =
                |protocol: &str, priority: u32, tcp_type: Option<String>| api::IceCandidate {
                    foundation: format!("{protocol}candidate{i}"),
                    priority,
                    ip: ip.clone(),
                    address: ip.clone(),
                    protocol: protocol.into(),
                    port: self.port,
                    kind: "host".into(),
                    tcp_type,
                };
            if a.udp {
                ice_candidates.push(candidate("udp", base, None));
            }
            if a.tcp {
                ice_candidates.push(candidate("tcp", base - TCP_PENALTY, Some("passive".into())));
            }
        }
        TransportOptions {
            id: self.id.clone(),
            ice_parameters: api::IceParameters {
                username_fragment: self.ice.local_ufrag().to_string(),
                password: self.ice.local_pwd().to_string(),
                ice_lite: true,
            },
            ice_candidates,
            dtls_parameters: api::TransportDtlsParameters {
                role: api::DtlsRole::Auto,
                fingerprints: vec![api::Fingerprint {
                    algorithm: "sha-256".into(),
                    value: settings.identity.fingerprint_sha256().to_string(),
                }],
            },
        }
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// The path to the browser (ICE's selected candidate pair), once known.
    pub fn selected(&self) -> Option<Path> {
        self.selected
    }

    pub fn ufrag(&self) -> &str {
        self.ice.local_ufrag()
    }

    /// The paths this transport accepts datagrams on.
    pub fn validated(&self) -> &[Path] {
        &self.validated
    }

    /// A path the last datagram validated (and one it displaced), once.
    pub fn take_new_path(&mut self) -> Option<(Path, Option<Path>)> {
        self.new_path.take()
    }

    fn validate(&mut self, path: Path) {
        if self.validated.contains(&path) {
            return;
        }
        let evicted = (self.validated.len() == MAX_PATHS).then(|| self.validated.remove(0));
        self.validated.push(path);
        self.new_path = Some((path, evicted));
    }

    /// `connect-transport`. The peer's role decides ours: `client` → we are the DTLS server,
    /// `server` or `auto` → we are the client.
    pub fn connect<E: Egress>(
        &mut self,
        params: &DtlsParameters,
        io: &mut Io<'_, E>,
    ) -> Result<Option<CloseReason>, ApiError> {
        if self.remote.is_some() {
            return Err(ApiError::conflict(format!(
                "transport {:?} is already connected",
                self.id
            )));
        }
        let role = match params.role {
            Some(api::DtlsRole::Client) => DtlsRole::Server,
            Some(api::DtlsRole::Server) | Some(api::DtlsRole::Auto) | None => DtlsRole::Client,
        };
        let fingerprints: Vec<dtls::Fingerprint> = params
            .fingerprints
            .iter()
            .map(|f| dtls::Fingerprint {
                algorithm: f.algorithm.clone(),
                value: f.value.clone(),
            })
            .collect();
        if let Some(d) = &mut self.dtls {
            // A ClientHello arrived before connect-transport: we already are the server.
            if role != d.role() {
                return Err(ApiError::conflict(format!(
                    "transport {:?}: DTLS already started as server, the peer cannot be server too",
                    self.id
                )));
            }
            d.set_remote_fingerprints(fingerprints.clone());
        }
        self.remote = Some((role, fingerprints));
        if self.dtls.is_none() && self.selected.is_some() {
            self.start_dtls(role, io.settings, io.now);
        }
        Ok(self.drain_dtls(io))
    }

    fn start_dtls(&mut self, role: DtlsRole, settings: &Settings, now: Instant) {
        let mut d = DtlsTransport::new(
            settings.dtls_config.clone(),
            &settings.identity,
            role,
            settings.dtls_timeout,
            now,
        );
        if let Some((_, fps)) = &self.remote {
            d.set_remote_fingerprints(fps.clone());
        }
        self.dtls = Some(d);
    }

    /// Handles one datagram that came on `path`, in place in `buf[..len]`.
    pub fn handle_datagram<E: Egress>(
        &mut self,
        path: Path,
        buf: &mut [u8],
        len: usize,
        io: &mut Io<'_, E>,
    ) -> Received {
        let Some(datagram) = buf.get_mut(..len) else {
            io.counters.drop("datagram", "too_long");
            return Received::Nothing;
        };
        match demux::classify(datagram) {
            PacketKind::Stun => {
                match self
                    .ice
                    .handle_stun(datagram, path.remote, io.now, io.scratch)
                {
                    StunOutcome::Reply {
                        len,
                        selected_changed,
                        valid,
                    } => {
                        io.counters.stun_replies += 1;
                        io.out.send(path, &io.scratch[..len]);
                        if valid {
                            self.validate(path);
                        }
                        if selected_changed {
                            self.selected = Some(path);
                        }
                        if selected_changed && self.dtls.is_none() {
                            if let Some((role, _)) = self.remote {
                                self.start_dtls(role, io.settings, io.now);
                                if let Some(reason) = self.drain_dtls(io) {
                                    return Received::Failed(reason);
                                }
                            }
                        }
                    }
                    StunOutcome::Drop(reason) => io.counters.drop("stun", reason.as_str()),
                }
                Received::Nothing
            }
            PacketKind::Dtls => {
                if !self.validated.contains(&path) {
                    io.counters.drop("dtls", "unvalidated_path");
                    return Received::Nothing;
                }
                if self.dtls.is_none() {
                    // Undecided when ICE completed: the peer is the client, we are the server.
                    self.start_dtls(DtlsRole::Server, io.settings, io.now);
                }
                if let Some(d) = &mut self.dtls {
                    d.handle_packet(datagram, io.now);
                }
                match self.drain_dtls(io) {
                    Some(reason) => Received::Failed(reason),
                    None => Received::Nothing,
                }
            }
            kind @ (PacketKind::Rtp | PacketKind::Rtcp) => {
                if !self.validated.contains(&path) {
                    io.counters.drop("media", "unvalidated_path");
                    return Received::Nothing;
                }
                let Some((inbound, _)) = &mut self.srtp else {
                    io.counters.drop("media", "before_dtls");
                    return Received::Nothing;
                };
                let result = if kind == PacketKind::Rtp {
                    inbound.unprotect_rtp(datagram).map(Received::Rtp)
                } else {
                    inbound.unprotect_rtcp(datagram).map(Received::Rtcp)
                };
                result.unwrap_or_else(|e| {
                    io.counters.drop(
                        if kind == PacketKind::Rtp {
                            "srtp"
                        } else {
                            "srtcp"
                        },
                        e.as_str(),
                    );
                    Received::Nothing
                })
            }
            PacketKind::Unknown => {
                io.counters.drop("datagram", "not_webrtc");
                Received::Nothing
            }
        }
    }

    /// Sends what DTLS has to send; installs SRTP when it connects.
    fn drain_dtls<E: Egress>(&mut self, io: &mut Io<'_, E>) -> Option<CloseReason> {
        let d = self.dtls.as_mut()?;
        loop {
            match d.poll(io.scratch) {
                DtlsEvent::Transmit(bytes) => match self.selected {
                    Some(to) => io.out.send(to, bytes),
                    None => io.counters.drop("dtls", "no_address"),
                },
                DtlsEvent::Connected(keys) => {
                    let profile = srtp_profile(keys.profile);
                    let sessions = SrtpSession::new(profile, &keys.remote_key, &keys.remote_salt)
                        .and_then(|i| {
                            SrtpSession::new(profile, &keys.local_key, &keys.local_salt)
                                .map(|o| (i, o))
                        });
                    match sessions {
                        Ok(s) => {
                            io.counters.dtls_connected += 1;
                            tracing::info!(channel = %self.channel_id, user = %self.user_id, transport = %self.id, ?profile, "transport connected");
                            self.srtp = Some(s);
                        }
                        Err(e) => {
                            tracing::warn!(channel = %self.channel_id, user = %self.user_id, transport = %self.id, error = e.as_str(), "bad SRTP keys");
                            return Some(CloseReason::Dtls(DtlsFailure::Protocol));
                        }
                    }
                }
                DtlsEvent::Failed(f) => return Some(CloseReason::Dtls(f)),
                DtlsEvent::Idle => return None,
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        // Consent runs from the first valid request: a transport mediasoup-client has not
        // connected yet (a recv transport before its first consumer) waits indefinitely.
        let consent = (self.ice.state() != IceState::New)
            .then(|| self.ice.poll_timeout())
            .flatten();
        let dtls = self.dtls.as_ref().and_then(|d| d.poll_timeout());
        consent.into_iter().chain(dtls).min()
    }

    pub fn handle_timeout<E: Egress>(&mut self, io: &mut Io<'_, E>) -> Option<CloseReason> {
        if self.ice.state() != IceState::New && self.ice.handle_timeout(io.now) {
            return Some(CloseReason::ConsentExpired);
        }
        if let Some(d) = &mut self.dtls {
            if d.poll_timeout().is_some_and(|at| at <= io.now) {
                d.handle_timeout(io.now);
                return self.drain_dtls(io);
            }
        }
        None
    }

    /// Encrypts the RTP packet `buf[..len]` in place and sends it to the browser.
    pub fn send_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        out: &mut impl Egress,
        counters: &mut Counters,
    ) -> bool {
        self.protect_and_send(buf, len, out, counters, false)
    }

    /// [`send_rtp`](Self::send_rtp) for a retransmission of a packet this transport may have
    /// sent before: `buf[..len]` must be byte-identical to what it was then (see
    /// [`SrtpSession::protect_rtp_again`]). Failures count as `nack.*` drops.
    pub fn resend_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        out: &mut impl Egress,
        counters: &mut Counters,
    ) -> bool {
        self.protect_and_send(buf, len, out, counters, true)
    }

    fn protect_and_send(
        &mut self,
        buf: &mut [u8],
        len: usize,
        out: &mut impl Egress,
        counters: &mut Counters,
        again: bool,
    ) -> bool {
        let (Some((_, outbound)), Some(to)) = (&mut self.srtp, self.selected) else {
            counters.drop(
                if again { "nack" } else { "forward" },
                "consumer_not_connected",
            );
            return false;
        };
        let protected = match again {
            false => outbound.protect_rtp(buf, len),
            true => outbound.protect_rtp_again(buf, len),
        };
        match protected {
            Ok(n) => {
                out.send(to, &buf[..n]);
                true
            }
            Err(e) => {
                counters.drop(if again { "nack" } else { "srtp" }, e.as_str());
                false
            }
        }
    }

    /// Encrypts the compound RTCP packet `buf[..len]` in place and sends it.
    pub fn send_rtcp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        out: &mut impl Egress,
        counters: &mut Counters,
    ) {
        let (Some((_, outbound)), Some(to)) = (&mut self.srtp, self.selected) else {
            return;
        };
        match outbound.protect_rtcp(buf, len) {
            Ok(n) => {
                counters.rtcp_sent += 1;
                out.send(to, &buf[..n]);
            }
            Err(e) => counters.drop("srtcp", e.as_str()),
        }
    }
}

fn srtp_profile(p: dtls::SrtpProfile) -> SrtpProfile {
    match p {
        dtls::SrtpProfile::AEAD_AES_256_GCM => SrtpProfile::AeadAes256Gcm,
        dtls::SrtpProfile::AEAD_AES_128_GCM => SrtpProfile::AeadAes128Gcm,
        dtls::SrtpProfile::AES128_CM_HMAC_SHA1_80 => SrtpProfile::Aes128CmHmacSha1_80,
    }
}
