//! Building STUN messages in a caller-provided buffer (RFC 8489 §5, §14).

use std::net::{IpAddr, SocketAddr};

use super::{
    attr, fingerprint, message_type, padded, xor_in_place, xor_mask, Class, IntegrityKey,
    StunError, ATTR_HEADER_LEN, HEADER_LEN, INTEGRITY_LEN, MAGIC_COOKIE,
};

/// Writes one STUN message into a borrowed buffer, keeping the header length up to date after
/// every attribute.
///
/// Attributes are appended in call order; padding bytes are zero. `MESSAGE-INTEGRITY` and
/// `FINGERPRINT` are computed over what was written before them, so add them last, in that
/// order (RFC 8489 §14.5, §14.7).
pub struct MessageWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    transaction_id: [u8; 12],
}

impl<'a> MessageWriter<'a> {
    /// Starts a message with an empty body.
    pub fn new(
        buf: &'a mut [u8],
        method: u16,
        class: Class,
        transaction_id: &[u8; 12],
    ) -> Result<Self, StunError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        let mut h = [0u8; HEADER_LEN];
        h[..2].copy_from_slice(&message_type(method, class).to_be_bytes());
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        h[8..].copy_from_slice(transaction_id);
        header.copy_from_slice(&h);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            transaction_id: *transaction_id,
        })
    }

    /// Continues a message whose first `len` bytes (header and whole attributes) are already in
    /// `buf`; the header's length field is rewritten to match `len`.
    pub fn resume(buf: &'a mut [u8], len: usize) -> Result<Self, StunError> {
        if len < HEADER_LEN || !len.is_multiple_of(4) || len > buf.len() {
            return Err(StunError::BadLength);
        }
        let transaction_id = buf
            .get(8..HEADER_LEN)
            .and_then(|id| <[u8; 12]>::try_from(id).ok())
            .ok_or(StunError::Truncated)?;
        let mut writer = MessageWriter {
            buf,
            len,
            transaction_id,
        };
        writer.write_length()?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a message has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The message written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Ends the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }

    fn write_length(&mut self) -> Result<(), StunError> {
        let body = u16::try_from(self.len - HEADER_LEN).map_err(|_| StunError::BufferTooSmall)?;
        self.buf
            .get_mut(2..4)
            .ok_or(StunError::BufferTooSmall)?
            .copy_from_slice(&body.to_be_bytes());
        Ok(())
    }

    /// Appends an attribute header for a `value_len`-byte value, zeroes its value and padding and
    /// returns the value slot. Nothing changes when it does not fit.
    fn push(&mut self, typ: u16, value_len: usize) -> Result<&mut [u8], StunError> {
        let start = self.len;
        let value_len16 = u16::try_from(value_len).map_err(|_| StunError::BufferTooSmall)?;
        let end = start + ATTR_HEADER_LEN + padded(value_len);
        if end > self.buf.len() || end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(StunError::BufferTooSmall);
        }
        self.len = end;
        self.write_length()?;
        let slot = self
            .buf
            .get_mut(start..end)
            .ok_or(StunError::BufferTooSmall)?;
        let (header, value) = slot.split_at_mut(ATTR_HEADER_LEN);
        let [t0, t1] = typ.to_be_bytes();
        let [l0, l1] = value_len16.to_be_bytes();
        header.copy_from_slice(&[t0, t1, l0, l1]);
        value.fill(0);
        value.get_mut(..value_len).ok_or(StunError::BufferTooSmall)
    }

    /// Appends an attribute with an opaque value.
    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> Result<(), StunError> {
        self.push(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends a 32-bit attribute such as `PRIORITY` (RFC 8445 §16.1).
    pub fn attribute_u32(&mut self, typ: u16, value: u32) -> Result<(), StunError> {
        self.attribute(typ, &value.to_be_bytes())
    }

    /// Appends a 64-bit attribute such as `ICE-CONTROLLING` (RFC 8445 §16.1).
    pub fn attribute_u64(&mut self, typ: u16, value: u64) -> Result<(), StunError> {
        self.attribute(typ, &value.to_be_bytes())
    }

    /// Appends `XOR-MAPPED-ADDRESS` for `addr` (RFC 8489 §14.2), written as given: IPv4 as
    /// family 0x01, IPv6 (including IPv4-mapped) as family 0x02.
    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), StunError> {
        let mask = xor_mask(&self.transaction_id);
        let [p0, p1] = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
        match addr.ip() {
            IpAddr::V4(ip) => {
                let mut octets = ip.octets();
                xor_in_place(&mut octets, &mask);
                let [a, b, c, d] = octets;
                self.attribute(attr::XOR_MAPPED_ADDRESS, &[0, 0x01, p0, p1, a, b, c, d])
            }
            IpAddr::V6(ip) => {
                let mut value = [0u8; 20];
                value[1] = 0x02;
                value[2] = p0;
                value[3] = p1;
                value[4..].copy_from_slice(&ip.octets());
                xor_in_place(&mut value[4..], &mask);
                self.attribute(attr::XOR_MAPPED_ADDRESS, &value)
            }
        }
    }

    /// Appends `ERROR-CODE` (RFC 8489 §14.8): `code` in 300..=699 and a short reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), StunError> {
        let class = u8::try_from(code / 100).map_err(|_| StunError::BadLength)? & 0x07;
        let number = u8::try_from(code % 100).map_err(|_| StunError::BadLength)?;
        let value = self.push(attr::ERROR_CODE, 4 + reason.len())?;
        let (head, text) = value.split_at_mut(4);
        head.copy_from_slice(&[0, 0, class, number]);
        text.copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Appends `UNKNOWN-ATTRIBUTES` listing `types` (RFC 8489 §14.9).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> Result<(), StunError> {
        let value = self.push(attr::UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (slot, typ) in value.chunks_exact_mut(2).zip(types) {
            slot.copy_from_slice(&typ.to_be_bytes());
        }
        Ok(())
    }

    /// Appends `MESSAGE-INTEGRITY` (RFC 8489 §14.5): HMAC-SHA1 over the message so far, with the
    /// header length already counting this attribute.
    pub fn message_integrity(&mut self, key: &IntegrityKey) -> Result<(), StunError> {
        let start = self.len;
        self.push(attr::MESSAGE_INTEGRITY, INTEGRITY_LEN)?;
        let tag = key.sign(&[self.buf.get(..start).unwrap_or_default()]);
        let value_at = start + ATTR_HEADER_LEN;
        self.buf
            .get_mut(value_at..value_at + INTEGRITY_LEN)
            .ok_or(StunError::BufferTooSmall)?
            .copy_from_slice(&tag);
        Ok(())
    }

    /// Appends `FINGERPRINT` (RFC 8489 §14.7); it must be the last attribute.
    pub fn fingerprint(&mut self) -> Result<(), StunError> {
        let start = self.len;
        self.push(attr::FINGERPRINT, 4)?;
        let crc = fingerprint(self.buf.get(..start).unwrap_or_default());
        let value_at = start + ATTR_HEADER_LEN;
        self.buf
            .get_mut(value_at..value_at + 4)
            .ok_or(StunError::BufferTooSmall)?
            .copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}
