//! ICE-lite agent (RFC 8445 §2.5) with consent freshness (RFC 7675).
//!
//! A lite agent has only host candidates, never sends connectivity checks and is always the
//! controlled agent (RFC 8445 §6.1.1). Its whole job is to answer the full agent's Binding
//! requests (§7.3), pick the address the peer nominates (§7.3.1.5, §8.2) and notice when the
//! peer stops checking.
//!
//! Consent: the full agent keeps sending checks on the selected pair at least every few seconds
//! (RFC 7675 §5.1). We treat each authenticated Binding request as a refresh and declare the
//! session [`IceState::Disconnected`] once `consent_timeout` passes without one (RFC 7675 uses 30
//! seconds). Disconnected is final: later requests are dropped with [`StunDrop::ConsentExpired`]
//! and get no answer (the peer has to restart ICE; the daemon closes the transport), and
//! [`IceLite::selected`] is `None` so that no more media is sent (RFC 7675 §5.1).
//!
//! Everything is sans-IO: bytes in, bytes out into the caller's buffer, time passed as `now`.
//! Nothing on the request path allocates.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::stun::{
    attr, Class, IntegrityKey, Message, MessageWriter, StunError, METHOD_BINDING,
};

#[cfg(test)]
mod tests;

/// Connection state of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IceState {
    /// No valid check received yet.
    New,
    /// At least one valid check received and consent is fresh.
    Connected,
    /// Consent expired (RFC 7675 §5.1); final.
    Disconnected,
}

impl IceState {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            IceState::New => "new",
            IceState::Connected => "connected",
            IceState::Disconnected => "disconnected",
        }
    }
}

/// What [`IceLite::handle_stun`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StunOutcome {
    /// Send `out[..len]` back to the datagram's source. This is a success response (`valid`:
    /// the check validated its candidate pair) or an error response (400, 401, 420, 487);
    /// `selected_changed` is true only when a success response moved [`IceLite::selected`].
    Reply {
        len: usize,
        selected_changed: bool,
        valid: bool,
    },
    /// Nothing to send.
    Drop(StunDrop),
}

/// Why a STUN datagram got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StunDrop {
    /// Not STUN (no magic cookie or top bits set).
    NotStun,
    /// Shorter than the STUN header or than its announced length.
    Truncated,
    /// Length not a multiple of 4, or bytes after the message.
    BadLength,
    /// Attribute framing is broken.
    MalformedAttribute,
    /// `FINGERPRINT` present but wrong: silently discarded (RFC 8489 §7.3).
    BadFingerprint,
    /// A success or error response: a lite agent sends no requests (RFC 8445 §2.5).
    NotRequest,
    /// An indication (RFC 8489 §6.3.2): nothing to answer.
    Indication,
    /// A request for a method other than Binding.
    UnsupportedMethod,
    /// The reply does not fit in `out`.
    BufferTooSmall,
    /// Consent already expired; the agent is [`IceState::Disconnected`].
    ConsentExpired,
}

impl StunDrop {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            StunDrop::NotStun => "not_stun",
            StunDrop::Truncated => "truncated",
            StunDrop::BadLength => "bad_length",
            StunDrop::MalformedAttribute => "malformed_attribute",
            StunDrop::BadFingerprint => "bad_fingerprint",
            StunDrop::NotRequest => "not_request",
            StunDrop::Indication => "indication",
            StunDrop::UnsupportedMethod => "unsupported_method",
            StunDrop::BufferTooSmall => "buffer_too_small",
            StunDrop::ConsentExpired => "consent_expired",
        }
    }
}

impl From<StunError> for StunDrop {
    fn from(e: StunError) -> Self {
        match e {
            StunError::NotStun => StunDrop::NotStun,
            StunError::Truncated => StunDrop::Truncated,
            StunError::BadLength => StunDrop::BadLength,
            StunError::BadFingerprint => StunDrop::BadFingerprint,
            StunError::BufferTooSmall => StunDrop::BufferTooSmall,
            _ => StunDrop::MalformedAttribute,
        }
    }
}

/// Error responses a lite agent sends (RFC 8489 §14.8, RFC 8445 §7.3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    BadRequest,
    Unauthorized,
    UnknownAttribute,
    RoleConflict,
}

impl Reject {
    fn code(self) -> u16 {
        match self {
            Reject::BadRequest => 400,
            Reject::Unauthorized => 401,
            Reject::UnknownAttribute => 420,
            Reject::RoleConflict => 487,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Reject::BadRequest => "Bad Request",
            Reject::Unauthorized => "Unauthorized",
            Reject::UnknownAttribute => "Unknown Attribute",
            Reject::RoleConflict => "Role Conflict",
        }
    }
}

/// At most this many unknown attribute types are echoed in `UNKNOWN-ATTRIBUTES`.
const MAX_UNKNOWN: usize = 8;

/// The ICE attributes of a Binding request, gathered in one pass over its body.
struct CheckAttributes<'a> {
    username: Option<&'a [u8]>,
    priority: Option<u32>,
    use_candidate: bool,
    ice_controlled: bool,
    /// A known attribute with a wrong-size value.
    malformed: bool,
    unknown: [u16; MAX_UNKNOWN],
    unknown_len: usize,
}

impl<'a> CheckAttributes<'a> {
    fn gather(msg: &Message<'a>) -> Self {
        let mut c = CheckAttributes {
            username: None,
            priority: None,
            use_candidate: false,
            ice_controlled: false,
            malformed: false,
            unknown: [0; MAX_UNKNOWN],
            unknown_len: 0,
        };
        for a in msg.body_attributes() {
            match a.typ {
                attr::USERNAME => {
                    c.username.get_or_insert(a.value);
                }
                attr::PRIORITY => match <[u8; 4]>::try_from(a.value) {
                    Ok(v) => {
                        c.priority.get_or_insert(u32::from_be_bytes(v));
                    }
                    Err(_) => c.malformed = true,
                },
                attr::USE_CANDIDATE => c.use_candidate = true,
                attr::ICE_CONTROLLED | attr::ICE_CONTROLLING => {
                    if a.value.len() != 8 {
                        c.malformed = true;
                    }
                    c.ice_controlled |= a.typ == attr::ICE_CONTROLLED;
                }
                // Understood in a request, though unused.
                attr::XOR_MAPPED_ADDRESS | attr::MAPPED_ADDRESS => {}
                typ if attr::is_comprehension_required(typ) => {
                    if let Some(slot) = c.unknown.get_mut(c.unknown_len) {
                        *slot = typ;
                        c.unknown_len += 1;
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn unknown(&self) -> &[u16] {
        self.unknown.get(..self.unknown_len).unwrap_or_default()
    }
}

/// The ICE-lite agent of one transport: answers checks, tracks the selected address and consent.
pub struct IceLite {
    ufrag: String,
    pwd: String,
    key: IntegrityKey,
    consent_timeout: Duration,
    /// Last valid request, or creation time.
    last_consent: Instant,
    state: IceState,
    selected: Option<SocketAddr>,
    nominated: bool,
}

impl std::fmt::Debug for IceLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceLite")
            .field("ufrag", &self.ufrag)
            .field("state", &self.state)
            .field("selected", &self.selected)
            .field("nominated", &self.nominated)
            .finish_non_exhaustive()
    }
}

impl IceLite {
    /// Creates the agent with our credentials (RFC 8445 §5.3: `local_ufrag` at least 16
    /// characters here, `local_pwd` at least 32, both ice-chars, generated by the caller).
    /// The consent timer starts at `now`.
    pub fn new(
        local_ufrag: &str,
        local_pwd: &str,
        consent_timeout: Duration,
        now: Instant,
    ) -> Self {
        debug_assert!(local_ufrag.len() >= 16, "ICE ufrag too short");
        debug_assert!(local_pwd.len() >= 32, "ICE password too short");
        debug_assert!(!local_ufrag.contains(':'), "ICE ufrag contains ':'");
        IceLite {
            ufrag: local_ufrag.to_owned(),
            pwd: local_pwd.to_owned(),
            key: IntegrityKey::new(local_pwd.as_bytes()),
            consent_timeout,
            last_consent: now,
            state: IceState::New,
            selected: None,
            nominated: false,
        }
    }

    pub fn local_ufrag(&self) -> &str {
        &self.ufrag
    }

    pub fn local_pwd(&self) -> &str {
        &self.pwd
    }

    /// Where to send media: the nominated address, else the source of the last valid check.
    /// `None` before the first valid check and once consent has expired.
    pub fn selected(&self) -> Option<SocketAddr> {
        match self.state {
            IceState::Disconnected => None,
            _ => self.selected,
        }
    }

    /// Whether the peer has nominated (sent `USE-CANDIDATE` on) the selected address.
    pub fn nominated(&self) -> bool {
        self.nominated
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    /// When consent expires unless a valid check arrives first; `None` once Disconnected.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            IceState::Disconnected => None,
            _ => Some(self.consent_deadline()),
        }
    }

    /// Expires consent when `now` has reached [`IceLite::poll_timeout`]. Returns true exactly
    /// once, on the transition to [`IceState::Disconnected`].
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.state == IceState::Disconnected || now < self.consent_deadline() {
            return false;
        }
        self.state = IceState::Disconnected;
        true
    }

    fn consent_deadline(&self) -> Instant {
        self.last_consent
            .checked_add(self.consent_timeout)
            .unwrap_or(self.last_consent)
    }

    /// Handles one STUN datagram received from `from` (RFC 8445 §7.3, RFC 8489 §6.3).
    ///
    /// Valid Binding requests get a success response with `XOR-MAPPED-ADDRESS`,
    /// `MESSAGE-INTEGRITY` and `FINGERPRINT` and refresh consent. Requests that fail checks get
    /// an error response like any agent would send: 400 (missing `USERNAME`,
    /// `MESSAGE-INTEGRITY`, `FINGERPRINT` or `PRIORITY`, or a malformed ICE attribute), 401
    /// (wrong ufrag or integrity), 420 (unknown comprehension-required attributes) or 487
    /// (`ICE-CONTROLLED`: the peer also claims the controlled role). Error responses carry
    /// `MESSAGE-INTEGRITY` only when the request authenticated (RFC 8489 §9.1.3).
    /// Everything else — garbage, bad `FINGERPRINT`, responses, indications, other methods — is
    /// dropped without a reply.
    pub fn handle_stun(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        out: &mut [u8],
    ) -> StunOutcome {
        match self.check(packet, from, now, out) {
            Ok(outcome) => outcome,
            Err(drop) => StunOutcome::Drop(drop),
        }
    }

    fn check(
        &mut self,
        packet: &[u8],
        from: SocketAddr,
        now: Instant,
        out: &mut [u8],
    ) -> Result<StunOutcome, StunDrop> {
        if self.state == IceState::Disconnected {
            return Err(StunDrop::ConsentExpired);
        }
        let msg = Message::parse(packet)?;
        // RFC 8489 §7.3: a FINGERPRINT that does not match means "not STUN": discard silently.
        if msg.has_fingerprint() {
            msg.check_fingerprint()?;
        }
        match msg.class() {
            Class::Request => {}
            Class::Indication => return Err(StunDrop::Indication),
            Class::SuccessResponse | Class::ErrorResponse => return Err(StunDrop::NotRequest),
        }
        if msg.method() != METHOD_BINDING {
            return Err(StunDrop::UnsupportedMethod);
        }

        let attrs = CheckAttributes::gather(&msg);
        // RFC 8489 §9.1.3: authentication first; failures are answered without integrity.
        let Some(username) = attrs.username else {
            return self.reject(&msg, Reject::BadRequest, false, &[], out);
        };
        if !msg.has_integrity() {
            return self.reject(&msg, Reject::BadRequest, false, &[], out);
        }
        if !self.username_is_ours(username) || msg.check_integrity(&self.key).is_err() {
            return self.reject(&msg, Reject::Unauthorized, false, &[], out);
        }
        // Authenticated from here: error responses carry MESSAGE-INTEGRITY.
        if !msg.has_fingerprint() || attrs.priority.is_none() || attrs.malformed {
            // RFC 8445 §7.1: checks carry PRIORITY and FINGERPRINT.
            return self.reject(&msg, Reject::BadRequest, true, &[], out);
        }
        if !attrs.unknown().is_empty() {
            // RFC 8489 §6.3.1.1, §14.9.
            return self.reject(&msg, Reject::UnknownAttribute, true, attrs.unknown(), out);
        }
        if attrs.ice_controlled {
            // RFC 8445 §7.3.1.1: both sides controlled. A lite agent cannot switch to
            // controlling, so it always answers 487 and lets the full agent switch.
            return self.reject(&msg, Reject::RoleConflict, true, &[], out);
        }

        // The peer sees its address as we do; IPv4 arriving on a dual-stack socket as
        // ::ffff:a.b.c.d is reported as IPv4 (RFC 8489 §14.2 family follows the address).
        let mapped = SocketAddr::new(from.ip().to_canonical(), from.port());
        let len = self.write_success(&msg, mapped, out)?;
        let selected_changed = self.accept(from, attrs.use_candidate, now);
        Ok(StunOutcome::Reply {
            len,
            selected_changed,
            valid: true,
        })
    }

    /// `USERNAME` of a check sent to us is `"<our ufrag>:<their ufrag>"` (RFC 8445 §7.2.2).
    fn username_is_ours(&self, username: &[u8]) -> bool {
        let ours = self.ufrag.as_bytes();
        username.len() > ours.len()
            && username.starts_with(ours)
            && username.get(ours.len()) == Some(&b':')
    }

    /// Records a valid check: refresh consent, then apply nomination (RFC 8445 §7.3.1.5, §8.2).
    fn accept(&mut self, from: SocketAddr, use_candidate: bool, now: Instant) -> bool {
        self.last_consent = now;
        self.state = IceState::Connected;
        let before = self.selected;
        if use_candidate {
            self.nominated = true;
            self.selected = Some(from);
        } else if !self.nominated {
            self.selected = Some(from);
        }
        self.selected != before
    }

    fn write_success(
        &self,
        req: &Message<'_>,
        mapped: SocketAddr,
        out: &mut [u8],
    ) -> Result<usize, StunDrop> {
        let mut w = MessageWriter::new(
            out,
            METHOD_BINDING,
            Class::SuccessResponse,
            req.transaction_id(),
        )?;
        w.xor_mapped_address(mapped)?;
        w.message_integrity(&self.key)?;
        w.fingerprint()?;
        Ok(w.finish())
    }

    fn reject(
        &self,
        req: &Message<'_>,
        reject: Reject,
        authenticated: bool,
        unknown: &[u16],
        out: &mut [u8],
    ) -> Result<StunOutcome, StunDrop> {
        let mut w = MessageWriter::new(
            out,
            METHOD_BINDING,
            Class::ErrorResponse,
            req.transaction_id(),
        )?;
        w.error_code(reject.code(), reject.reason())?;
        if !unknown.is_empty() {
            w.unknown_attributes(unknown)?;
        }
        if authenticated {
            w.message_integrity(&self.key)?;
        }
        w.fingerprint()?;
        Ok(StunOutcome::Reply {
            len: w.finish(),
            selected_changed: false,
            valid: false,
        })
    }
}
