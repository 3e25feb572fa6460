//! The browser's side of a choir transport, sans-IO: ICE connectivity checks as the
//! controlling agent (RFC 8445 §7.2, nominating at once) or, against a full agent that offered,
//! the controlled one; answers to the peer's own checks (a full agent such as Janus checks us
//! too); DTLS once ICE answers, SRTP once DTLS exports keys. Used by the load generator and the
//! in-memory tests and benches; browsers and str0m are the independent clients of the real
//! tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::demux::{self, PacketKind};
use crate::wire::dtls::{self, DtlsEvent, DtlsIdentity, DtlsRole, DtlsTransport};
use crate::wire::srtp::{SrtpProfile, SrtpSession};
use crate::wire::stun::{self, IntegrityKey};

/// How often a connected client repeats its check (consent freshness, RFC 7675 §5.1).
const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// How often an unanswered check is repeated.
const CHECK_RETRY: Duration = Duration::from_millis(100);

/// What the server announced in `create-transport`.
pub struct ServerParams {
    pub address: SocketAddr,
    pub ufrag: String,
    pub password: String,
    /// The server's sha-256 certificate fingerprint ("AB:CD:...").
    pub fingerprint: String,
}

/// What a datagram from the server was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientReceived {
    /// Handled (STUN, DTLS) or not for us.
    Nothing,
    /// A decrypted RTP packet: the first `len` bytes of the buffer.
    Rtp(usize),
    /// A decrypted compound RTCP packet.
    Rtcp(usize),
}

pub struct ClientTransport {
    server: ServerParams,
    /// "<server ufrag>:<our ufrag>".
    username: String,
    key: IntegrityKey,
    local_ufrag: String,
    /// Keys the answers to the peer's checks (our ICE password).
    local_key: IntegrityKey,
    controlling: bool,
    /// An answer to the peer's check, sent before anything else.
    reply: Box<[u8; 256]>,
    reply_len: usize,
    tiebreaker: u64,
    role: DtlsRole,
    config: Arc<dimpl::Config>,
    identity: DtlsIdentity,
    next_check: Instant,
    checks: u64,
    ice_connected: bool,
    dtls: Option<DtlsTransport>,
    /// (inbound, outbound).
    srtp: Option<(SrtpSession, SrtpSession)>,
    failed: bool,
}

impl ClientTransport {
    /// `role`: our DTLS role (signal the matching `role` in connect-transport, see
    /// [`ClientTransport::signalled_role`]).
    pub fn new(
        server: ServerParams,
        role: DtlsRole,
        config: Arc<dimpl::Config>,
        identity: DtlsIdentity,
        now: Instant,
    ) -> Self {
        let seed = u64::from_be_bytes(random::<8>());
        let local_ufrag = format!("{:016x}", seed);
        let local_password = format!("{:032x}", u128::from_be_bytes(random::<16>()));
        ClientTransport {
            username: format!("{}:{}", server.ufrag, local_ufrag),
            key: IntegrityKey::new(server.password.as_bytes()),
            local_key: IntegrityKey::new(local_password.as_bytes()),
            local_ufrag,
            controlling: true,
            reply: Box::new([0; 256]),
            reply_len: 0,
            tiebreaker: seed.rotate_left(17),
            server,
            role,
            config,
            identity,
            next_check: now,
            checks: 0,
            ice_connected: false,
            dtls: None,
            srtp: None,
            failed: false,
        }
    }

    /// Uses these ICE credentials (signalled in our SDP) instead of random ones.
    pub fn with_local_credentials(mut self, ufrag: &str, password: &str) -> Self {
        self.username = format!("{}:{}", self.server.ufrag, ufrag);
        self.local_key = IntegrityKey::new(password.as_bytes());
        self.local_ufrag = ufrag.to_string();
        self
    }

    /// Takes the controlled role (RFC 8445 §6.1.1: we answered a full agent's offer): our checks
    /// carry `ICE-CONTROLLED` and never nominate.
    pub fn controlled(mut self) -> Self {
        self.controlling = false;
        self
    }

    /// The `dtlsParameters.role` to send in connect-transport.
    pub fn signalled_role(&self) -> &'static str {
        match self.role {
            DtlsRole::Client => "client",
            DtlsRole::Server => "server",
        }
    }

    /// Our certificate's sha-256 fingerprint, for connect-transport.
    pub fn fingerprint(&self) -> &str {
        self.identity.fingerprint_sha256()
    }

    pub fn server(&self) -> SocketAddr {
        self.server.address
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The next datagram to send to the server, written into `out` (≥ 2048 bytes): a due
    /// connectivity check, else a DTLS record. `None` when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.failed {
            return None;
        }
        if self.reply_len > 0 {
            let len = std::mem::take(&mut self.reply_len);
            out.get_mut(..len)?.copy_from_slice(&self.reply[..len]);
            return Some(len);
        }
        if now >= self.next_check {
            self.checks += 1;
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&self.checks.to_be_bytes());
            tid[8..].copy_from_slice(&(self.tiebreaker as u32).to_be_bytes());
            let role = if self.controlling {
                stun::CheckRole::Controlling {
                    tiebreaker: self.tiebreaker,
                    nominate: true,
                }
            } else {
                stun::CheckRole::Controlled {
                    tiebreaker: self.tiebreaker,
                }
            };
            let len =
                stun::write_check(out, &tid, &self.username, &self.key, 0x6e00_1eff, role).ok()?;
            self.next_check = now
                + if self.ice_connected {
                    CONSENT_INTERVAL
                } else {
                    CHECK_RETRY
                };
            return Some(len);
        }
        let d = self.dtls.as_mut()?;
        if d.poll_timeout().is_some_and(|at| at <= now) {
            d.handle_timeout(now);
        }
        loop {
            match d.poll(out) {
                DtlsEvent::Transmit(bytes) => return Some(bytes.len()),
                DtlsEvent::Connected(keys) => {
                    let profile = match keys.profile {
                        dtls::SrtpProfile::AEAD_AES_256_GCM => SrtpProfile::AeadAes256Gcm,
                        dtls::SrtpProfile::AEAD_AES_128_GCM => SrtpProfile::AeadAes128Gcm,
                        dtls::SrtpProfile::AES128_CM_HMAC_SHA1_80 => {
                            SrtpProfile::Aes128CmHmacSha1_80
                        }
                    };
                    let sessions = SrtpSession::new(profile, &keys.remote_key, &keys.remote_salt)
                        .and_then(|i| {
                            SrtpSession::new(profile, &keys.local_key, &keys.local_salt)
                                .map(|o| (i, o))
                        });
                    match sessions {
                        Ok(s) => self.srtp = Some(s),
                        Err(_) => self.failed = true,
                    }
                }
                DtlsEvent::Failed(_) => {
                    self.failed = true;
                    return None;
                }
                DtlsEvent::Idle => return None,
            }
        }
    }

    /// When [`ClientTransport::poll_transmit`] has something to send next.
    pub fn poll_timeout(&self) -> Instant {
        if self.reply_len > 0 {
            return Instant::now();
        }
        let dtls = self.dtls.as_ref().and_then(|d| d.poll_timeout());
        dtls.map_or(self.next_check, |d| d.min(self.next_check))
    }

    /// Handles a datagram from the server, in place.
    pub fn handle_datagram(&mut self, buf: &mut [u8], now: Instant) -> ClientReceived {
        match demux::classify(buf) {
            PacketKind::Stun => {
                let answered = stun::answer_check(
                    buf,
                    &self.local_ufrag,
                    &self.local_key,
                    self.server.address,
                    &mut self.reply[..],
                );
                let reachable = match answered {
                    Ok(len) => {
                        self.reply_len = len;
                        true
                    }
                    Err(_) => stun::parse_binding_success_with_key(buf, &self.key).is_ok(),
                };
                if reachable && !self.ice_connected {
                    self.ice_connected = true;
                    self.next_check = now + CONSENT_INTERVAL;
                    let mut d = DtlsTransport::new(
                        self.config.clone(),
                        &self.identity,
                        self.role,
                        Duration::from_secs(30),
                        now,
                    );
                    d.set_remote_fingerprints(vec![dtls::Fingerprint {
                        algorithm: "sha-256".into(),
                        value: self.server.fingerprint.clone(),
                    }]);
                    self.dtls = Some(d);
                }
                ClientReceived::Nothing
            }
            PacketKind::Dtls => {
                if let Some(d) = &mut self.dtls {
                    d.handle_packet(buf, now);
                }
                ClientReceived::Nothing
            }
            PacketKind::Rtp => match &mut self.srtp {
                Some((inbound, _)) => inbound
                    .unprotect_rtp(buf)
                    .map_or(ClientReceived::Nothing, ClientReceived::Rtp),
                None => ClientReceived::Nothing,
            },
            PacketKind::Rtcp => match &mut self.srtp {
                Some((inbound, _)) => inbound
                    .unprotect_rtcp(buf)
                    .map_or(ClientReceived::Nothing, ClientReceived::Rtcp),
                None => ClientReceived::Nothing,
            },
            PacketKind::Unknown => ClientReceived::Nothing,
        }
    }

    /// Encrypts the RTP packet `buf[..len]` in place; returns the datagram length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        self.srtp.as_mut()?.1.protect_rtp(buf, len).ok()
    }

    /// Encrypts the compound RTCP packet `buf[..len]` in place; returns the datagram length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        self.srtp.as_mut()?.1.protect_rtcp(buf, len).ok()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ice::IceLite;

    /// A client completes ICE and DTLS against choir's own ICE-lite agent and DTLS server.
    #[test]
    fn connects_to_an_ice_lite_dtls_server() {
        let now = Instant::now();
        let config = dtls::dtls_config();
        let server_id = DtlsIdentity::generate().unwrap();
        let client_id = DtlsIdentity::generate().unwrap();
        let server_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let client_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let (ufrag, pwd) = ("serverufrag0123456", "serverpassword0123456789abcdefghij");
        let mut ice = IceLite::new(ufrag, pwd, Duration::from_secs(30), now);
        let mut server = DtlsTransport::new(
            config.clone(),
            &server_id,
            DtlsRole::Server,
            Duration::from_secs(30),
            now,
        );
        server.set_remote_fingerprints(vec![dtls::Fingerprint {
            algorithm: "sha-256".into(),
            value: client_id.fingerprint_sha256().into(),
        }]);
        let params = ServerParams {
            address: server_addr,
            ufrag: ufrag.into(),
            password: pwd.into(),
            fingerprint: server_id.fingerprint_sha256().into(),
        };
        let mut client = ClientTransport::new(params, DtlsRole::Client, config, client_id, now);
        let mut buf = [0u8; 2048];
        let mut reply = [0u8; 2048];
        let mut server_keys = false;
        for step in 0..50u64 {
            let t = now + Duration::from_millis(step * 10);
            while let Some(n) = client.poll_transmit(t, &mut buf) {
                match demux::classify(&buf[..n]) {
                    PacketKind::Stun => {
                        if let crate::wire::ice::StunOutcome::Reply { len, .. } =
                            ice.handle_stun(&buf[..n], client_addr, t, &mut reply)
                        {
                            let mut r = reply;
                            client.handle_datagram(&mut r[..len], t);
                        }
                    }
                    _ => server.handle_packet(&buf[..n], t),
                }
                loop {
                    match server.poll(&mut reply) {
                        DtlsEvent::Transmit(b) => {
                            let mut r = [0u8; 2048];
                            r[..b.len()].copy_from_slice(b);
                            let len = b.len();
                            client.handle_datagram(&mut r[..len], t);
                        }
                        DtlsEvent::Connected(_) => server_keys = true,
                        DtlsEvent::Failed(f) => panic!("server failed: {f:?}"),
                        DtlsEvent::Idle => break,
                    }
                }
            }
        }
        assert!(ice.selected() == Some(client_addr));
        assert!(
            server_keys && client.is_connected(),
            "DTLS-SRTP established on both sides"
        );
    }

    /// A full agent's check to the client is answered with a success response that the agent
    /// can verify under the client's password, before the client's own next check; the
    /// controlled client's checks carry ICE-CONTROLLED and no USE-CANDIDATE.
    #[test]
    fn answers_a_full_agents_check_and_checks_as_controlled() {
        let now = Instant::now();
        let agent: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        let params = ServerParams {
            address: agent,
            ufrag: "janus".into(),
            password: "januspassword0123456789".into(),
            fingerprint: "AB".into(),
        };
        let mut client = ClientTransport::new(
            params,
            DtlsRole::Client,
            dtls::dtls_config(),
            DtlsIdentity::generate().unwrap(),
            now,
        )
        .with_local_credentials("clientufrag", "clientpassword0123456789abcdef")
        .controlled();
        let mut out = [0u8; 2048];
        let n = client.poll_transmit(now, &mut out).expect("a check");
        let check = stun::Message::parse(&out[..n]).unwrap();
        assert_eq!(
            check.get(stun::attr::USERNAME),
            Some(&b"janus:clientufrag"[..])
        );
        assert!(check.get(stun::attr::ICE_CONTROLLED).is_some());
        assert!(check.get(stun::attr::ICE_CONTROLLING).is_none());
        assert!(check.get(stun::attr::USE_CANDIDATE).is_none());
        check
            .check_integrity(&IntegrityKey::new(b"januspassword0123456789"))
            .unwrap();

        // The agent's check, as it would send it: USERNAME "<client ufrag>:<agent ufrag>".
        let mut req = [0u8; 512];
        let len = stun::write_binding_request(
            &mut req,
            [7; 12],
            "clientufrag:janus",
            "clientpassword0123456789abcdef",
            1,
            true,
            42,
        );
        assert_eq!(
            client.handle_datagram(&mut req[..len], now),
            ClientReceived::Nothing
        );
        let n = client.poll_transmit(now, &mut out).expect("the answer");
        let ok = stun::parse_binding_success(&out[..n], "clientpassword0123456789abcdef")
            .expect("a verifiable success response");
        assert_eq!(ok.transaction_id, [7; 12]);
        assert_eq!(ok.mapped, agent);

        // A check under the wrong password is not answered.
        let len = stun::write_binding_request(
            &mut req,
            [8; 12],
            "clientufrag:janus",
            "wrong",
            1,
            true,
            42,
        );
        client.handle_datagram(&mut req[..len], now);
        let next = client.poll_transmit(now, &mut out);
        assert!(next.is_none_or(|n| stun::parse_binding_success(
            &out[..n],
            "clientpassword0123456789abcdef"
        )
        .is_err()));
    }
}
