//! Allocation-free STUN codec for ICE connectivity checks.
//!
//! Implements the parts of STUN ([RFC 8489], which obsoletes [RFC 5389]) that an ICE agent
//! ([RFC 8445]) needs with short-term credentials:
//!
//! - the message header and attribute framing (RFC 8489 §5, §14),
//! - `MESSAGE-INTEGRITY` as HMAC-SHA1 keyed with the ICE password (§14.5, §9.1),
//! - `FINGERPRINT` as CRC-32 XOR `0x5354554E` (§14.7),
//! - `XOR-MAPPED-ADDRESS` (§14.2), `ERROR-CODE` (§14.8), `UNKNOWN-ATTRIBUTES` (§14.9),
//! - the ICE attributes `PRIORITY`, `USE-CANDIDATE`, `ICE-CONTROLLED`, `ICE-CONTROLLING`
//!   (RFC 8445 §16.1).
//!
//! [`Message`] is a zero-copy view over a received datagram; [`MessageWriter`] builds a message in
//! the caller's buffer. Neither allocates; the HMAC key schedule is precomputed once in an
//! [`IntegrityKey`] and cloned per message.
//!
//! [RFC 8489]: https://www.rfc-editor.org/rfc/rfc8489
//! [RFC 5389]: https://www.rfc-editor.org/rfc/rfc5389
//! [RFC 8445]: https://www.rfc-editor.org/rfc/rfc8445

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

mod client;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

pub use client::{
    answer_check, parse_binding_success, parse_binding_success_with_key, write_binding_request,
    write_check, BindingSuccess, CheckRole,
};
pub use writer::MessageWriter;

/// Size of the fixed STUN header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// The magic cookie that every RFC 5389/8489 message carries (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The Binding method, the only one ICE uses (RFC 8489 §18.2).
pub const METHOD_BINDING: u16 = 0x001;
/// Size of an attribute's type + length header (RFC 8489 §14).
pub const ATTR_HEADER_LEN: usize = 4;
/// Length of the HMAC-SHA1 `MESSAGE-INTEGRITY` value (RFC 8489 §14.5).
pub const INTEGRITY_LEN: usize = 20;
/// `FINGERPRINT` is the CRC-32 of the message XOR this constant (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute type codes (RFC 8489 §18.3, RFC 8445 §16.1).
///
/// Types below `0x8000` are comprehension-required, the others comprehension-optional.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Whether an agent that does not understand `typ` must reject the message (RFC 8489 §14).
    pub const fn is_comprehension_required(typ: u16) -> bool {
        typ < 0x8000
    }
}

/// The message class encoded in the type field (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    const fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// Interleaves a 12-bit method and a class into the 14-bit message type (RFC 8489 §5, Figure 3).
pub const fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

const fn split_message_type(typ: u16) -> (u16, Class) {
    let method = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
    let class = ((typ >> 4) & 0b01) | ((typ >> 7) & 0b10);
    (method, Class::from_bits(class))
}

/// Why a STUN message could not be parsed, verified or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StunError {
    /// Not a STUN message: top bits set or no magic cookie (RFC 8489 §5).
    NotStun,
    /// Shorter than its header, or than the length its header announces.
    Truncated,
    /// Message length not a multiple of 4, or trailing bytes after the message.
    BadLength,
    /// An attribute overruns the message, has a wrong fixed size, or follows `FINGERPRINT`.
    MalformedAttribute,
    /// No `FINGERPRINT` where one is required.
    MissingFingerprint,
    /// `FINGERPRINT` does not match the message (RFC 8489 §14.7).
    BadFingerprint,
    /// No `MESSAGE-INTEGRITY` where one is required.
    MissingIntegrity,
    /// `MESSAGE-INTEGRITY` does not match under the given key (RFC 8489 §14.5).
    BadIntegrity,
    /// Not the method/class that was expected (e.g. not a Binding success response).
    UnexpectedMessage,
    /// A Binding error response with this code (RFC 8489 §14.8).
    ErrorResponse(u16),
    /// No `XOR-MAPPED-ADDRESS` in a success response.
    MissingAddress,
    /// An address attribute with an unknown family or a wrong length.
    BadAddress,
    /// The output buffer cannot hold the message.
    BufferTooSmall,
}

impl StunError {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            StunError::NotStun => "not_stun",
            StunError::Truncated => "truncated",
            StunError::BadLength => "bad_length",
            StunError::MalformedAttribute => "malformed_attribute",
            StunError::MissingFingerprint => "missing_fingerprint",
            StunError::BadFingerprint => "bad_fingerprint",
            StunError::MissingIntegrity => "missing_integrity",
            StunError::BadIntegrity => "bad_integrity",
            StunError::UnexpectedMessage => "unexpected_message",
            StunError::ErrorResponse(_) => "error_response",
            StunError::MissingAddress => "missing_address",
            StunError::BadAddress => "bad_address",
            StunError::BufferTooSmall => "buffer_too_small",
        }
    }
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::ErrorResponse(code) => write!(f, "error_response ({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl std::error::Error for StunError {}

/// HMAC-SHA1 key for `MESSAGE-INTEGRITY` with short-term credentials (RFC 8489 §9.1.1: the key
/// is the password itself).
///
/// The inner/outer pad states are computed once here; each message clones them (a copy of two
/// SHA-1 states, no allocation) instead of re-keying.
#[derive(Clone)]
pub struct IntegrityKey {
    mac: Hmac<Sha1>,
}

impl IntegrityKey {
    /// Precomputes the HMAC state for `password` (used as raw bytes, RFC 8489 §9.1.1).
    pub fn new(password: &[u8]) -> Self {
        // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
        let mac = <Hmac<Sha1> as Mac>::new_from_slice(password)
            .expect("HMAC-SHA1 accepts keys of any length");
        IntegrityKey { mac }
    }

    /// HMAC-SHA1 over the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; INTEGRITY_LEN] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `tag` against the HMAC-SHA1 of `parts`.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

/// The `FINGERPRINT` value of `covered` (everything before the attribute), RFC 8489 §14.7.
pub fn fingerprint(covered: &[u8]) -> u32 {
    crc32fast::hash(covered) ^ FINGERPRINT_XOR
}

/// Attribute value length rounded up to the 4-byte boundary (RFC 8489 §14).
const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(b.try_into().ok()?))
}

/// One attribute of a [`Message`]: type, value (without padding) and the offset of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub typ: u16,
    pub value: &'a [u8],
    pub offset: usize,
}

/// Iterator over the attributes of a [`Message`], in wire order.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        if self.pos >= self.end {
            return None;
        }
        let offset = self.pos;
        let typ = read_u16(self.bytes, offset)?;
        let len = usize::from(read_u16(self.bytes, offset + 2)?);
        let start = offset + ATTR_HEADER_LEN;
        let value = self.bytes.get(start..start + len)?;
        self.pos = start + padded(len);
        Some(Attribute { typ, value, offset })
    }
}

/// A validated, zero-copy view of one STUN message.
///
/// [`Message::parse`] checks the header and that every attribute fits (RFC 8489 §6.3), so the
/// accessors never fail on framing. `MESSAGE-INTEGRITY` and `FINGERPRINT` are located but not
/// checked: call [`Message::check_fingerprint`] and [`Message::check_integrity`].
#[derive(Clone, Debug)]
pub struct Message<'a> {
    bytes: &'a [u8],
    method: u16,
    class: Class,
    transaction_id: [u8; 12],
    /// Offset of the first `MESSAGE-INTEGRITY` attribute header.
    integrity_at: Option<usize>,
    /// Offset of the `FINGERPRINT` attribute header (always the last attribute).
    fingerprint_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses the STUN message that makes up `datagram` (RFC 8489 §5, §6.3, §14).
    ///
    /// The datagram must hold exactly one message: its length must match the header's. An
    /// attribute after `FINGERPRINT`, or a `MESSAGE-INTEGRITY`/`FINGERPRINT` of the wrong size,
    /// makes the message malformed.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, StunError> {
        let Some(header) = datagram.get(..HEADER_LEN) else {
            return Err(short_datagram_error(datagram));
        };
        let header: [u8; HEADER_LEN] = header.try_into().map_err(|_| StunError::Truncated)?;
        let [t0, t1, l0, l1, c0, c1, c2, c3, transaction_id @ ..] = header;
        if t0 & 0xC0 != 0 || u32::from_be_bytes([c0, c1, c2, c3]) != MAGIC_COOKIE {
            return Err(StunError::NotStun);
        }
        let body_len = usize::from(u16::from_be_bytes([l0, l1]));
        if body_len % 4 != 0 {
            return Err(StunError::BadLength);
        }
        let total = HEADER_LEN + body_len;
        if datagram.len() < total {
            return Err(StunError::Truncated);
        }
        if datagram.len() > total {
            return Err(StunError::BadLength);
        }
        let (method, class) = split_message_type(u16::from_be_bytes([t0, t1]));

        let mut integrity_at = None;
        let mut fingerprint_at = None;
        let mut pos = HEADER_LEN;
        while pos < total {
            if fingerprint_at.is_some() {
                // FINGERPRINT must be the last attribute (RFC 8489 §14.7).
                return Err(StunError::MalformedAttribute);
            }
            let typ = read_u16(datagram, pos).ok_or(StunError::MalformedAttribute)?;
            let len =
                usize::from(read_u16(datagram, pos + 2).ok_or(StunError::MalformedAttribute)?);
            let end = pos + ATTR_HEADER_LEN + padded(len);
            if end > total {
                return Err(StunError::MalformedAttribute);
            }
            match typ {
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() => {
                    if len != INTEGRITY_LEN {
                        return Err(StunError::MalformedAttribute);
                    }
                    integrity_at = Some(pos);
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(StunError::MalformedAttribute);
                    }
                    fingerprint_at = Some(pos);
                }
                _ => {}
            }
            pos = end;
        }

        Ok(Message {
            bytes: datagram,
            method,
            class,
            transaction_id,
            integrity_at,
            fingerprint_at,
        })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The 12-bit method (e.g. [`METHOD_BINDING`]).
    pub fn method(&self) -> u16 {
        self.method
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn transaction_id(&self) -> &[u8; 12] {
        &self.transaction_id
    }

    /// Every attribute, in wire order, including `MESSAGE-INTEGRITY`, `FINGERPRINT` and
    /// anything between them.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            bytes: self.bytes,
            pos: HEADER_LEN,
            end: self.bytes.len(),
        }
    }

    /// The attributes an agent acts on: those before `MESSAGE-INTEGRITY` (or before
    /// `FINGERPRINT` when there is no integrity). RFC 8489 §14.5: attributes following
    /// `MESSAGE-INTEGRITY` (other than `FINGERPRINT`) are not protected and must be ignored.
    pub fn body_attributes(&self) -> Attributes<'a> {
        let end = self
            .integrity_at
            .or(self.fingerprint_at)
            .unwrap_or(self.bytes.len());
        Attributes {
            bytes: self.bytes,
            pos: HEADER_LEN,
            end,
        }
    }

    /// The value of the first body attribute of type `typ` (see [`Message::body_attributes`]).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.body_attributes()
            .find(|a| a.typ == typ)
            .map(|a| a.value)
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_at.is_some()
    }

    /// Verifies `FINGERPRINT` (RFC 8489 §14.7): CRC-32 of everything before it, XOR
    /// [`FINGERPRINT_XOR`].
    pub fn check_fingerprint(&self) -> Result<(), StunError> {
        let at = self.fingerprint_at.ok_or(StunError::MissingFingerprint)?;
        let covered = self.bytes.get(..at).ok_or(StunError::MalformedAttribute)?;
        let value = self
            .bytes
            .get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + 4)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .ok_or(StunError::MalformedAttribute)?;
        if fingerprint(covered) == u32::from_be_bytes(value) {
            Ok(())
        } else {
            Err(StunError::BadFingerprint)
        }
    }

    /// Verifies `MESSAGE-INTEGRITY` under `key` (RFC 8489 §14.5): the HMAC covers the message up
    /// to the attribute, with the header length rewritten to end just after it.
    pub fn check_integrity(&self, key: &IntegrityKey) -> Result<(), StunError> {
        let at = self.integrity_at.ok_or(StunError::MissingIntegrity)?;
        let value_at = at + ATTR_HEADER_LEN;
        let tag = self
            .bytes
            .get(value_at..value_at + INTEGRITY_LEN)
            .ok_or(StunError::MalformedAttribute)?;
        let length = u16::try_from(value_at + INTEGRITY_LEN - HEADER_LEN)
            .map_err(|_| StunError::MalformedAttribute)?;
        let message_type = self.bytes.get(..2).ok_or(StunError::Truncated)?;
        let rest = self.bytes.get(4..at).ok_or(StunError::Truncated)?;
        if key.verify(&[message_type, &length.to_be_bytes(), rest], tag) {
            Ok(())
        } else {
            Err(StunError::BadIntegrity)
        }
    }

    /// The code of an `ERROR-CODE` attribute (RFC 8489 §14.8), if present and well formed.
    pub fn error_code(&self) -> Option<u16> {
        match self.get(attr::ERROR_CODE)? {
            [_, _, class, number, ..] => Some(u16::from(class & 0x07) * 100 + u16::from(*number)),
            _ => None,
        }
    }

    /// The decoded `XOR-MAPPED-ADDRESS` (RFC 8489 §14.2), if present.
    pub fn xor_mapped_address(&self) -> Option<Result<SocketAddr, StunError>> {
        self.get(attr::XOR_MAPPED_ADDRESS)
            .map(|value| decode_xor_address(value, &self.transaction_id))
    }
}

fn short_datagram_error(datagram: &[u8]) -> StunError {
    match datagram.first() {
        Some(b) if b & 0xC0 != 0 => StunError::NotStun,
        _ => StunError::Truncated,
    }
}

/// The 16-byte XOR mask of address attributes: magic cookie then transaction id (RFC 8489
/// §14.2). IPv4 addresses use only its first 4 bytes.
fn xor_mask(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    let (cookie, id) = mask.split_at_mut(4);
    cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    id.copy_from_slice(transaction_id);
    mask
}

fn xor_in_place(bytes: &mut [u8], mask: &[u8]) {
    for (b, m) in bytes.iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Decodes an `XOR-MAPPED-ADDRESS` value (RFC 8489 §14.2).
pub fn decode_xor_address(
    value: &[u8],
    transaction_id: &[u8; 12],
) -> Result<SocketAddr, StunError> {
    let [_, family, p0, p1, address @ ..] = value else {
        return Err(StunError::BadAddress);
    };
    let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mask = xor_mask(transaction_id);
    let ip = match family {
        0x01 => {
            let mut octets: [u8; 4] = address.try_into().map_err(|_| StunError::BadAddress)?;
            xor_in_place(&mut octets, &mask);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        0x02 => {
            let mut octets: [u8; 16] = address.try_into().map_err(|_| StunError::BadAddress)?;
            xor_in_place(&mut octets, &mask);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return Err(StunError::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}
