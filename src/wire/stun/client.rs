//! The ICE client side of a connectivity check (RFC 8445 §7.2.2, §7.2.5): writing a Binding
//! request and reading its success response, and answering a full agent's checks (§7.3). Used
//! by tests and load generators that play the browser against our ICE-lite agent, or against
//! a full agent (Janus) in the side-by-side benchmark.

use std::net::SocketAddr;

use super::{attr, Class, IntegrityKey, Message, MessageWriter, StunError, METHOD_BINDING};

/// Writes an ICE Binding request (RFC 8445 §7.1.1) into `out` and returns its length, or 0 when
/// `out` is too small.
///
/// The request carries `USERNAME` (`"<remote ufrag>:<local ufrag>"`, given whole), `PRIORITY`,
/// `ICE-CONTROLLING` with the tie-breaker, `USE-CANDIDATE` when nominating, then
/// `MESSAGE-INTEGRITY` keyed with the remote agent's `password` and `FINGERPRINT`.
///
/// This keys HMAC-SHA1 on every call; a sender of many requests should precompute an
/// [`IntegrityKey`] and use [`write_check`].
pub fn write_binding_request(
    out: &mut [u8],
    transaction_id: [u8; 12],
    username: &str,
    password: &str,
    priority: u32,
    use_candidate: bool,
    ice_controlling_tiebreaker: u64,
) -> usize {
    let key = IntegrityKey::new(password.as_bytes());
    let role = CheckRole::Controlling {
        tiebreaker: ice_controlling_tiebreaker,
        nominate: use_candidate,
    };
    write_check(out, &transaction_id, username, &key, priority, role).unwrap_or(0)
}

/// The sender's ICE role in a check (RFC 8445 §7.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckRole {
    /// `ICE-CONTROLLING`, with `USE-CANDIDATE` when nominating.
    Controlling { tiebreaker: u64, nominate: bool },
    /// `ICE-CONTROLLED`: the peer nominates.
    Controlled { tiebreaker: u64 },
}

/// A Binding request as [`write_binding_request`] writes it, for either role, with a
/// precomputed key.
pub fn write_check(
    out: &mut [u8],
    transaction_id: &[u8; 12],
    username: &str,
    key: &IntegrityKey,
    priority: u32,
    role: CheckRole,
) -> Result<usize, StunError> {
    let mut w = MessageWriter::new(out, METHOD_BINDING, Class::Request, transaction_id)?;
    w.attribute(attr::USERNAME, username.as_bytes())?;
    w.attribute_u32(attr::PRIORITY, priority)?;
    match role {
        CheckRole::Controlling {
            tiebreaker,
            nominate,
        } => {
            w.attribute_u64(attr::ICE_CONTROLLING, tiebreaker)?;
            if nominate {
                w.attribute(attr::USE_CANDIDATE, &[])?;
            }
        }
        CheckRole::Controlled { tiebreaker } => {
            w.attribute_u64(attr::ICE_CONTROLLED, tiebreaker)?;
        }
    }
    w.message_integrity(key)?;
    w.fingerprint()?;
    Ok(w.finish())
}

/// Answers a full agent's connectivity check sent to us (RFC 8445 §7.3): a Binding request with a
/// valid `FINGERPRINT`, `USERNAME` starting with `"<local_ufrag>:"` and `MESSAGE-INTEGRITY` under
/// our password (`key`) gets a success response with `from` as `XOR-MAPPED-ADDRESS`, written into
/// `out`; returns its length. Anything else is an error and gets no answer (a client keeps no
/// role-conflict state: the benchmark's peers agree on roles through SDP).
pub fn answer_check(
    packet: &[u8],
    local_ufrag: &str,
    key: &IntegrityKey,
    from: SocketAddr,
    out: &mut [u8],
) -> Result<usize, StunError> {
    let msg = Message::parse(packet)?;
    msg.check_fingerprint()?;
    if msg.method() != METHOD_BINDING || msg.class() != Class::Request {
        return Err(StunError::UnexpectedMessage);
    }
    let username = msg.get(attr::USERNAME).unwrap_or_default();
    let ours = local_ufrag.as_bytes();
    if !(username.starts_with(ours) && username.get(ours.len()) == Some(&b':')) {
        return Err(StunError::UnexpectedMessage);
    }
    msg.check_integrity(key)?;
    let mut w = MessageWriter::new(
        out,
        METHOD_BINDING,
        Class::SuccessResponse,
        msg.transaction_id(),
    )?;
    w.xor_mapped_address(from)?;
    w.message_integrity(key)?;
    w.fingerprint()?;
    Ok(w.finish())
}

/// A verified Binding success response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingSuccess {
    /// To match against the request's.
    pub transaction_id: [u8; 12],
    /// The request's source address as the responder saw it (`XOR-MAPPED-ADDRESS`).
    pub mapped: SocketAddr,
}

/// Checks a Binding response to our request (RFC 8445 §7.2.5): `FINGERPRINT` required and valid,
/// `MESSAGE-INTEGRITY` valid under the responder's `password`, then returns the
/// `XOR-MAPPED-ADDRESS`. An error response gives [`StunError::ErrorResponse`] with its code
/// (unauthenticated: error responses to bad requests carry no integrity).
pub fn parse_binding_success(packet: &[u8], password: &str) -> Result<BindingSuccess, StunError> {
    parse_binding_success_with_key(packet, &IntegrityKey::new(password.as_bytes()))
}

/// [`parse_binding_success`] with a precomputed key.
pub fn parse_binding_success_with_key(
    packet: &[u8],
    key: &IntegrityKey,
) -> Result<BindingSuccess, StunError> {
    let msg = Message::parse(packet)?;
    msg.check_fingerprint()?;
    if msg.method() != METHOD_BINDING {
        return Err(StunError::UnexpectedMessage);
    }
    match msg.class() {
        Class::SuccessResponse => {}
        Class::ErrorResponse => {
            return Err(StunError::ErrorResponse(msg.error_code().unwrap_or(0)));
        }
        Class::Request | Class::Indication => return Err(StunError::UnexpectedMessage),
    }
    msg.check_integrity(key)?;
    let mapped = msg
        .xor_mapped_address()
        .ok_or(StunError::MissingAddress)??;
    Ok(BindingSuccess {
        transaction_id: *msg.transaction_id(),
        mapped,
    })
}
