//! SRTP and SRTCP (RFC 3711, RFC 7714), in place in the caller's packet buffer.
//!
//! An [`SrtpSession`] is one direction of one transport: one master key and salt, as exported
//! by DTLS-SRTP (RFC 5764 §4.2), and the per-SSRC state under them. Session keys are derived
//! once at construction (key derivation rate 0); per packet there is no allocation and no key
//! schedule, only the cipher work on the packet itself.
//!
//! Profiles: `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711, RFC 5764 §4.1.2), `SRTP_AEAD_AES_128_GCM`
//! and `SRTP_AEAD_AES_256_GCM` (RFC 7714). No MKI (RFC 5764 §4.1.2 leaves it out), SRTCP always
//! encrypted on output.
//!
//! Receiving follows RFC 3711 §3.3: estimate the packet index (Appendix A), check the replay
//! window, authenticate and decrypt, and only then advance the rollover counter and the
//! window. Any failure leaves the stream state as it was.
//!
//! ```
//! use choir::wire::srtp::{SrtpProfile, SrtpSession};
//!
//! let profile = SrtpProfile::AeadAes128Gcm;
//! let (key, salt) = ([7u8; 16], [9u8; 12]);
//! let mut tx = SrtpSession::new(profile, &key, &salt).unwrap();
//! let mut rx = SrtpSession::new(profile, &key, &salt).unwrap();
//!
//! let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42, 0xde, 0xad];
//! let mut buf = [0u8; 64];
//! buf[..rtp.len()].copy_from_slice(&rtp);
//! let n = tx.protect_rtp(&mut buf, rtp.len()).unwrap();
//! assert_eq!(n, rtp.len() + profile.rtp_overhead());
//! let m = rx.unprotect_rtp(&mut buf[..n]).unwrap();
//! assert_eq!(buf[..m], rtp);
//! ```

mod cm;
mod gcm;
mod header;
mod kdf;
mod replay;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;

pub use stream::MAX_STREAMS;

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711): AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Master key length in octets.
    pub const fn master_key_len(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 | Self::AeadAes128Gcm => 16,
            Self::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in octets.
    pub const fn master_salt_len(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 => cm::SALT_LEN,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => gcm::SALT_LEN,
        }
    }

    /// Octets [`SrtpSession::protect_rtp`] appends: the authentication tag.
    pub const fn rtp_overhead(self) -> usize {
        match self {
            Self::Aes128CmHmacSha1_80 => cm::TAG_LEN,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => gcm::TAG_LEN,
        }
    }

    /// Octets [`SrtpSession::protect_rtcp`] appends: the tag and the `E|SRTCP index` word.
    pub const fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + 4
    }

    /// The DTLS-SRTP protection profile identifier (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub const fn dtls_id(self) -> u16 {
        match self {
            Self::Aes128CmHmacSha1_80 => 0x0001,
            Self::AeadAes128Gcm => 0x0007,
            Self::AeadAes256Gcm => 0x0008,
        }
    }

    /// The profile with DTLS-SRTP identifier `id`, if supported.
    pub const fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Self::Aes128CmHmacSha1_80),
            0x0007 => Some(Self::AeadAes128Gcm),
            0x0008 => Some(Self::AeadAes256Gcm),
            _ => None,
        }
    }
}

/// Why a packet was not protected or unprotected, or a session not created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpError {
    /// Shorter than its fixed header plus the SRTP/SRTCP trailer.
    TooShort,
    /// RTP/RTCP version is not 2.
    BadVersion,
    /// The CSRC list or header extension runs past the packet.
    BadHeader,
    /// The output buffer has no room for the trailer (or `len` exceeds it).
    BufferTooSmall,
    /// The authentication tag did not verify.
    AuthFailed,
    /// The packet index was already received (RFC 3711 §3.3.2).
    Replayed,
    /// The packet index is behind the replay window.
    TooOld,
    /// A new SSRC would exceed [`MAX_STREAMS`].
    TooManyStreams,
    /// The packet index space is used up; the keys must be renewed (RFC 3711 §9.2).
    IndexExhausted,
    /// SRTCP with E = 0 under an AEAD profile (tagging-only form, RFC 7714 §9.3), not supported.
    UnencryptedRtcp,
    /// The master key length does not fit the profile.
    BadKeyLength,
    /// The master salt length does not fit the profile.
    BadSaltLength,
    /// The crypto library refused an operation it should not have.
    Crypto,
}

impl SrtpError {
    /// Short snake_case name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadVersion => "bad_version",
            Self::BadHeader => "bad_header",
            Self::BufferTooSmall => "buffer_too_small",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::TooManyStreams => "too_many_streams",
            Self::IndexExhausted => "index_exhausted",
            Self::UnencryptedRtcp => "unencrypted_rtcp",
            Self::BadKeyLength => "bad_key_length",
            Self::BadSaltLength => "bad_salt_length",
            Self::Crypto => "crypto",
        }
    }
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for SrtpError {}

/// The session keys of one profile family. The AES-CM state (two AES key schedules, two
/// keyed HMACs) is boxed to keep the enum small; it is allocated once, at construction.
enum Transform {
    Cm(Box<cm::Cm>),
    Gcm(gcm::Gcm),
}

/// One direction of one transport (one master key + salt); holds per-SSRC state
/// (ROC, highest sequence number, replay windows, SRTCP index).
pub struct SrtpSession {
    profile: SrtpProfile,
    transform: Transform,
    streams: stream::Streams,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("profile", &self.profile)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Derives the SRTP and SRTCP session keys from a master key and salt (RFC 3711 §4.3).
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        if master_key.len() != profile.master_key_len() {
            return Err(SrtpError::BadKeyLength);
        }
        if master_salt.len() != profile.master_salt_len() {
            return Err(SrtpError::BadSaltLength);
        }
        let prf = kdf::Prf::new(master_key, master_salt)?;
        let transform = match profile {
            SrtpProfile::Aes128CmHmacSha1_80 => Transform::Cm(Box::new(cm::Cm::new(&prf)?)),
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                Transform::Gcm(gcm::Gcm::new(&prf, profile.master_key_len())?)
            }
        };
        Ok(Self::with_transform(profile, transform))
    }

    fn with_transform(profile: SrtpProfile, transform: Transform) -> Self {
        Self {
            profile,
            transform,
            streams: stream::Streams::new(),
        }
    }

    /// The session's protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// `buf[..len]` is a plaintext RTP packet; `buf.len() >= len + rtp_overhead`. Encrypts in
    /// place and appends the tag; returns the protected length (RFC 3711 §3.3, RFC 7714 §8).
    ///
    /// The packet index follows the sequence number across wraps (RFC 3711 Appendix A), and an
    /// index is never protected twice: a repeat gives [`SrtpError::Replayed`] rather than
    /// reusing a keystream or GCM nonce.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.protect_rtp_inner(buf, len, false)
    }

    /// [`protect_rtp`](Self::protect_rtp) for a retransmission (RFC 4585 NACK, audio: same SSRC,
    /// same sequence number): the packet's index may have been protected before. The caller
    /// must pass the **same plaintext** as then (choir rewrites the kept packet with the same
    /// numbers): the same keystream or GCM nonce then encrypts the same bytes into the
    /// ciphertext already sent, which reveals nothing new. An index older than the replay
    /// window is refused ([`SrtpError::TooOld`]): whether it was used cannot be told.
    pub fn protect_rtp_again(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.protect_rtp_inner(buf, len, true)
    }

    fn protect_rtp_inner(
        &mut self,
        buf: &mut [u8],
        len: usize,
        again: bool,
    ) -> Result<usize, SrtpError> {
        let out_len = checked_out_len(buf, len, self.profile.rtp_overhead())?;
        let header = header::parse_rtp(&buf[..len])?;
        let window = &mut self.streams.get_or_insert(header.ssrc)?.rtp;
        let index = window.estimate_srtp_index(header.seq)?;
        match window.check(index) {
            Err(SrtpError::Replayed) if again => {}
            checked => checked?,
        }
        let buf = &mut buf[..out_len];
        match &self.transform {
            Transform::Cm(t) => t.protect_rtp(buf, header.len, len, header.ssrc, index),
            Transform::Gcm(t) => t.protect_rtp(buf, header.len, len, header.ssrc, index),
        }?;
        window.accept(index);
        Ok(out_len)
    }

    /// `buf` is a whole SRTP packet; authenticates, checks replay, decrypts in place and
    /// returns the plaintext RTP length (RFC 3711 §3.3, RFC 7714 §8).
    ///
    /// On error the stream state is unchanged; the contents of `buf` are unspecified (a failed
    /// GCM open may have written to it) and the packet is to be dropped.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_overhead();
        let body_len = buf.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let header = header::parse_rtp(&buf[..body_len])?;
        let index = match self.streams.get(header.ssrc) {
            Some(stream) => {
                let index = stream.rtp.estimate_srtp_index(header.seq)?;
                stream.rtp.check(index)?;
                index
            }
            None => {
                self.streams.ensure_room(header.ssrc)?;
                u64::from(header.seq)
            }
        };
        let len = match &self.transform {
            Transform::Cm(t) => t.unprotect_rtp(buf, header.len, header.ssrc, index),
            Transform::Gcm(t) => t.unprotect_rtp(buf, header.len, header.ssrc, index),
        }?;
        self.streams.get_or_insert(header.ssrc)?.rtp.accept(index);
        Ok(len)
    }

    /// `buf[..len]` is a plaintext (compound) RTCP packet; `buf.len() >= len +
    /// rtcp_overhead`. Encrypts in place (E = 1), appends the tag and the `E|SRTCP index`
    /// word; returns the protected length (RFC 3711 §3.4, RFC 7714 §9).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let out_len = checked_out_len(buf, len, self.profile.rtcp_overhead())?;
        let ssrc = header::parse_rtcp(&buf[..len])?;
        let window = &mut self.streams.get_or_insert(ssrc)?.rtcp;
        let index = window.next_srtcp_index()?;
        let index32 = u32::try_from(index).map_err(|_| SrtpError::IndexExhausted)?;
        let buf = &mut buf[..out_len];
        match &self.transform {
            Transform::Cm(t) => t.protect_rtcp(buf, len, ssrc, index32),
            Transform::Gcm(t) => t.protect_rtcp(buf, len, ssrc, index32),
        }?;
        window.accept(index);
        Ok(out_len)
    }

    /// `buf` is a whole SRTCP packet; authenticates, checks replay, decrypts in place and
    /// returns the plaintext RTCP length (RFC 3711 §3.4, RFC 7714 §9). Under
    /// AES_CM_128_HMAC_SHA1_80 an authenticated-only packet (E = 0) is accepted as is.
    ///
    /// On error the stream state is unchanged and the contents of `buf` are unspecified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        let body_len = buf.len().checked_sub(overhead).ok_or(SrtpError::TooShort)?;
        let ssrc = header::parse_rtcp(&buf[..body_len])?;
        let word = match self.transform {
            Transform::Cm(_) => cm::Cm::srtcp_word(buf),
            Transform::Gcm(_) => gcm::Gcm::srtcp_word(buf),
        }?;
        let index = u64::from(word & 0x7fff_ffff);
        match self.streams.get(ssrc) {
            Some(stream) => stream.rtcp.check(index)?,
            None => self.streams.ensure_room(ssrc)?,
        }
        let len = match &self.transform {
            Transform::Cm(t) => t.unprotect_rtcp(buf, ssrc),
            Transform::Gcm(t) => t.unprotect_rtcp(buf, ssrc),
        }?;
        self.streams.get_or_insert(ssrc)?.rtcp.accept(index);
        Ok(len)
    }

    /// The rollover counter of `ssrc`'s SRTP stream, once a packet of it went through.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.streams.get(ssrc)?.rtp.roc()
    }

    /// Number of SSRCs with state in this session.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Forgets the state of `ssrc` (say, when its producer closes); returns whether it existed.
    pub fn remove_stream(&mut self, ssrc: u32) -> bool {
        self.streams.remove(ssrc)
    }
}

/// `len + overhead`, if `buf` holds that much.
fn checked_out_len(buf: &[u8], len: usize, overhead: usize) -> Result<usize, SrtpError> {
    len.checked_add(overhead)
        .filter(|&out_len| out_len <= buf.len())
        .ok_or(SrtpError::BufferTooSmall)
}
