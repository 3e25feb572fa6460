//! The sealed node-to-node relay link of a cascade (issue 22): one UDP datagram per message,
//! encrypted and authenticated with AES-256-GCM, replay-protected, in the caller's buffer.
//!
//! A node relays each of its local producers once to each other node of a room. Both ends of a
//! link are choir nodes, so the link does not need ICE or DTLS: the cluster layer agrees on a
//! link id and derives one 32-octet key per link and direction from the cluster secret (for
//! example `Secret::derive_key("cascade link", &[sender id, sender incarnation, receiver id,
//! receiver incarnation, link id])`, an HMAC-SHA256 under the cluster secret; see
//! `cluster::secret`). This module only seals and opens datagrams; it knows nothing of nodes,
//! rooms or secrets.
//!
//! # Datagram
//!
//! ```text
//!  0        1        2                 6                                  14
//! +--------+--------+-----------------+----------------------------------+----------------+-----+
//! | kind=8 | ver=1  | link id (u32)   | sequence number (u64)            | ciphertext ... | tag |
//! +--------+--------+-----------------+----------------------------------+----------------+-----+
//! ```
//!
//! All integers are big-endian. The 14-octet header travels in clear and is the associated
//! data; the rest is the [`payload`] sealed with AES-256-GCM (16-octet tag). The 12-octet nonce
//! is `link id || sequence number`:
//!
//! - The **link id** is chosen by the *receiver* of the direction, like an IPsec SPI (RFC 4303
//!   §2.1): it finds the key and the replay window from it without trying keys.
//! - The **sequence number** counts the sender's datagrams on the link, from 0, strictly
//!   increasing and never reused: it is the nonce's counter (a key never sees a nonce twice,
//!   which AES-GCM requires), and the receiver's [`ReplayWindow`] rejects a datagram seen before
//!   (RFC 4303 §3.4.3). [`Sender`] hands them out and stops at the end of the space instead of
//!   wrapping; the link must be rekeyed long before.
//! - The **kind byte 8** lies in 4..=15, a first-octet range that the demultiplexing scheme of
//!   RFC 7983 §7 (updated by RFC 9443 §3) assigns to no protocol: a relay datagram that reaches a
//!   WebRTC port by mistake is classified as unknown ([`super::demux::classify`]) and dropped,
//!   never taken for STUN, DTLS, RTP or QUIC; and no WebRTC packet is taken for a relay one.
//!
//! # Receiving
//!
//! [`header`] reads the link id and sequence number without decrypting; the caller looks the
//! link id up (an unknown one is [`DropReason::UnknownLink`]) and hands the datagram to that
//! link's [`Receiver::open`], which checks the replay window, authenticates and decrypts in
//! place, and only then moves the window: a forged datagram can neither mark a sequence number
//! as seen nor push the window forward. Every refusal is a [`DropReason`], a metrics label.
//!
//! Nothing here allocates.
//!
//! ```
//! use choir::wire::relay::{payload::Payload, LinkKey, Receiver, Sender, HEADER_LEN, OVERHEAD};
//!
//! let key = [7u8; 32];
//! let mut tx = Sender::new(LinkKey::new(&key).unwrap(), 0x1234);
//! let mut rx = Receiver::new(LinkKey::new(&key).unwrap(), 0x1234);
//!
//! let rtp = [0x80, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42, 0xde, 0xad];
//! let mut buf = [0u8; 1500];
//! let n = Payload::Media { stream: 3, rtp: &rtp }.write(&mut buf[HEADER_LEN..]).unwrap();
//! let len = tx.seal_in_place(&mut buf, n).unwrap();
//! assert_eq!(len, n + OVERHEAD);
//!
//! let (header, plaintext) = rx.open(&mut buf[..len]).unwrap();
//! assert_eq!(header.seq, 0);
//! assert_eq!(Payload::parse(plaintext), Ok(Payload::Media { stream: 3, rtp: &rtp }));
//! ```

pub mod payload;
mod replay;
#[cfg(test)]
mod tests;

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

pub use replay::{ReplayWindow, WINDOW};

/// First octet of every relay datagram (unassigned in RFC 7983 §7 and RFC 9443 §3).
pub const KIND: u8 = 8;
/// The datagram format's version, second octet.
pub const VERSION: u8 = 1;
/// Clear header: kind, version, link id, sequence number.
pub const HEADER_LEN: usize = 14;
/// AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// Octets a datagram adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Link key length (AES-256).
pub const KEY_LEN: usize = 32;

/// Why a datagram was refused. Each is counted under [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the header plus the tag.
    Short,
    /// The first octet is not [`KIND`]: not a relay datagram.
    Kind,
    /// The version octet is not [`VERSION`].
    Version,
    /// No link of this node has the datagram's link id (decided by the caller, or a
    /// [`Receiver`] given another link's datagram).
    UnknownLink,
    /// The tag did not verify: wrong key, or altered on the way.
    Forged,
    /// The sequence number was already received (RFC 4303 §3.4.3).
    Replayed,
    /// The sequence number is behind the replay window.
    TooOld,
}

impl DropReason {
    /// Short snake_case name, usable as a metrics label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Kind => "kind",
            Self::Version => "version",
            Self::UnknownLink => "unknown_link",
            Self::Forged => "forged",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DropReason {}

/// The clear part of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The receiver's id for the link.
    pub link_id: u32,
    /// The sender's sequence number on the link (and direction).
    pub seq: u64,
}

impl Header {
    /// The header's 14 octets, the datagram's associated data.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = KIND;
        b[1] = VERSION;
        b[2..6].copy_from_slice(&self.link_id.to_be_bytes());
        b[6..14].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// The nonce: `link id || sequence number` (12 octets).
    fn nonce(self) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.link_id.to_be_bytes());
        n[4..].copy_from_slice(&self.seq.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }
}

/// An AES-256-GCM key of one link and direction. Its `Debug` does not show it.
pub struct LinkKey(LessSafeKey);

impl LinkKey {
    /// The key schedule of a 32-octet key. `None` only if the crypto library refuses it (it
    /// takes any 32 octets; a failure would be its own, say out of memory).
    pub fn new(key: &[u8; KEY_LEN]) -> Option<LinkKey> {
        let key = UnboundKey::new(&AES_256_GCM, key).ok()?;
        Some(LinkKey(LessSafeKey::new(key)))
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// Reads the clear header of `datagram` without authenticating it: which link (and so which
/// key and window) it claims to belong to. Checks the kind, version and minimum length.
pub fn header(datagram: &[u8]) -> Result<Header, DropReason> {
    if datagram.len() < OVERHEAD {
        return Err(DropReason::Short);
    }
    if datagram[0] != KIND {
        return Err(DropReason::Kind);
    }
    if datagram[1] != VERSION {
        return Err(DropReason::Version);
    }
    let mut link_id = [0u8; 4];
    link_id.copy_from_slice(&datagram[2..6]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&datagram[6..14]);
    Ok(Header {
        link_id: u32::from_be_bytes(link_id),
        seq: u64::from_be_bytes(seq),
    })
}

/// `buf[HEADER_LEN..HEADER_LEN + len]` is the plaintext; writes the header for `header`,
/// encrypts in place and appends the tag. Returns the datagram's length, or `None` if `buf`
/// has no room for the tag.
///
/// The caller must never seal two datagrams with the same key and header (nonce reuse breaks
/// AES-GCM); [`Sender`] takes care of it.
pub fn seal_in_place(key: &LinkKey, header: Header, buf: &mut [u8], len: usize) -> Option<usize> {
    let total = len.checked_add(OVERHEAD)?;
    let datagram = buf.get_mut(..total)?;
    let (head, rest) = datagram.split_at_mut(HEADER_LEN);
    let (body, tag_out) = rest.split_at_mut(len);
    let aad = header.to_bytes();
    head.copy_from_slice(&aad);
    let tag = key
        .0
        .seal_in_place_separate_tag(header.nonce(), Aad::from(aad), body)
        .ok()?;
    tag_out.copy_from_slice(tag.as_ref());
    Some(total)
}

/// [`seal_in_place`] of `plaintext` copied into `out`.
pub fn seal(key: &LinkKey, header: Header, plaintext: &[u8], out: &mut [u8]) -> Option<usize> {
    let end = HEADER_LEN.checked_add(plaintext.len())?;
    out.get_mut(HEADER_LEN..end)?.copy_from_slice(plaintext);
    seal_in_place(key, header, out, plaintext.len())
}

/// Authenticates and decrypts `datagram` in place; returns its header and plaintext. No replay
/// check: that is [`Receiver::open`]'s. On error the contents of `datagram` are unspecified.
pub fn open<'a>(key: &LinkKey, datagram: &'a mut [u8]) -> Result<(Header, &'a [u8]), DropReason> {
    let header = header(datagram)?;
    let (head, sealed) = datagram.split_at_mut(HEADER_LEN);
    let plaintext = key
        .0
        .open_in_place(header.nonce(), Aad::from(&*head), sealed)
        .map_err(|_| DropReason::Forged)?;
    Ok((header, plaintext))
}

/// The sending end of one link direction: its key, the receiver's link id and the next
/// sequence number.
#[derive(Debug)]
pub struct Sender {
    key: LinkKey,
    link_id: u32,
    /// `None` once the sequence space is used up.
    next: Option<u64>,
}

impl Sender {
    /// A sender whose first datagram has sequence number 0.
    pub fn new(key: LinkKey, link_id: u32) -> Sender {
        Sender {
            key,
            link_id,
            next: Some(0),
        }
    }

    /// The link id datagrams are sent under.
    pub fn link_id(&self) -> u32 {
        self.link_id
    }

    /// The sequence number the next datagram gets (`None`: used up, rekey).
    pub fn next_seq(&self) -> Option<u64> {
        self.next
    }

    /// [`seal_in_place`] under the next sequence number. `None` if `buf` is too small (the
    /// sequence number is then not used) or the sequence space is used up.
    pub fn seal_in_place(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let header = Header {
            link_id: self.link_id,
            seq: self.next?,
        };
        let n = seal_in_place(&self.key, header, buf, len)?;
        self.next = header.seq.checked_add(1);
        Some(n)
    }

    /// [`Sender::seal_in_place`] of `plaintext` copied into `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Option<usize> {
        let end = HEADER_LEN.checked_add(plaintext.len())?;
        out.get_mut(HEADER_LEN..end)?.copy_from_slice(plaintext);
        self.seal_in_place(out, plaintext.len())
    }
}

/// The receiving end of one link direction: its key, its link id and its replay window.
#[derive(Debug)]
pub struct Receiver {
    key: LinkKey,
    link_id: u32,
    window: ReplayWindow,
}

impl Receiver {
    /// A receiver for `link_id` that has seen nothing yet.
    pub fn new(key: LinkKey, link_id: u32) -> Receiver {
        Receiver {
            key,
            link_id,
            window: ReplayWindow::default(),
        }
    }

    /// The link id this receiver answers to.
    pub fn link_id(&self) -> u32 {
        self.link_id
    }

    /// The highest sequence number accepted so far.
    pub fn highest_seq(&self) -> Option<u64> {
        self.window.highest()
    }

    /// Checks the header and the replay window, authenticates and decrypts in place, and only
    /// then records the sequence number. On error the window is as it was and the contents of
    /// `datagram` are unspecified.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<(Header, &'a [u8]), DropReason> {
        let h = header(datagram)?;
        if h.link_id != self.link_id {
            return Err(DropReason::UnknownLink);
        }
        self.window.check(h.seq)?;
        let opened = open(&self.key, datagram)?;
        self.window.accept(h.seq);
        Ok(opened)
    }
}
