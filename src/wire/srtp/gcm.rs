//! AEAD_AES_128_GCM and AEAD_AES_256_GCM for SRTP and SRTCP (RFC 7714).
//!
//! SRTP (RFC 7714 §8): `header || AES-GCM(payload) || 16-octet tag`, with the whole RTP
//! header (CSRCs and header extension included) as associated data and the 12-octet IV
//! `(00 00 || SSRC || ROC || SEQ) XOR salt` (§8.1).
//!
//! SRTCP (RFC 7714 §9): `first 8 octets || AES-GCM(rest) || tag || E|index`, with the first
//! eight octets followed by the `E|SRTCP index` word as associated data (§9.2) and the IV
//! `(00 00 || SSRC || 00 00 || 0 || index) XOR salt` (§9.1). Only the encrypted form (E = 1)
//! is produced or accepted here.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::header::RTCP_CLEAR_LEN;
use super::kdf::{Label, Prf};
use super::SrtpError;

/// Authentication tag length (RFC 7714 §12: 16 octets for both key sizes).
pub(crate) const TAG_LEN: usize = 16;
/// Session salt length (RFC 7714 §12: 96 bits).
pub(crate) const SALT_LEN: usize = 12;
/// Length of the E flag and SRTCP index word.
const ESRTCP_LEN: usize = 4;
/// The E flag in the E|SRTCP index word.
const E_FLAG: u32 = 0x8000_0000;

/// Session key and salt of one of SRTP or SRTCP.
pub(crate) struct GcmKeys {
    aead: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl GcmKeys {
    /// Builds the transform state from a 16- or 32-octet session key and a 12-octet salt.
    pub(crate) fn new(key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            _ => return Err(SrtpError::BadKeyLength),
        };
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| SrtpError::BadSaltLength)?;
        let key = UnboundKey::new(algorithm, key).map_err(|_| SrtpError::BadKeyLength)?;
        Ok(Self {
            aead: LessSafeKey::new(key),
            salt,
        })
    }

    /// Derives the session key (as long as the master key) and salt (RFC 7714 §11).
    fn derive(prf: &Prf, key_len: usize, enc: Label, salt: Label) -> Result<Self, SrtpError> {
        let mut key = [0u8; 32];
        let key = key.get_mut(..key_len).ok_or(SrtpError::BadKeyLength)?;
        let mut session_salt = [0u8; SALT_LEN];
        prf.derive(enc, key)?;
        prf.derive(salt, &mut session_salt)?;
        Self::new(key, &session_salt)
    }

    /// `(00 00 || SSRC || tail) XOR salt`, `tail` being the six low octets of `tail_value`:
    /// `ROC || SEQ` for SRTP (§8.1), `00 00 || 0 || index` for SRTCP (§9.1).
    pub(crate) fn nonce(&self, ssrc: u32, tail_value: u64) -> Nonce {
        let mut iv = self.salt;
        for (b, x) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= x;
        }
        for (b, x) in iv[6..12].iter_mut().zip(&tail_value.to_be_bytes()[2..]) {
            *b ^= x;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

/// SRTP and SRTCP session keys of one AEAD_AES_*_GCM session.
pub(crate) struct Gcm {
    pub(crate) rtp: GcmKeys,
    pub(crate) rtcp: GcmKeys,
}

impl Gcm {
    pub(crate) fn new(prf: &Prf, key_len: usize) -> Result<Self, SrtpError> {
        Ok(Self {
            rtp: GcmKeys::derive(prf, key_len, Label::RtpEncryption, Label::RtpSalt)?,
            rtcp: GcmKeys::derive(prf, key_len, Label::RtcpEncryption, Label::RtcpSalt)?,
        })
    }

    /// Encrypts the RTP packet `buf[..len]` whose header is `header_len` long and writes the
    /// tag after it. Returns the SRTP length.
    pub(crate) fn protect_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let out_len = len + TAG_LEN;
        let packet = buf.get_mut(..out_len).ok_or(SrtpError::BufferTooSmall)?;
        let (body, tag) = packet.split_at_mut(len);
        if header_len > body.len() {
            return Err(SrtpError::BadHeader);
        }
        let (header, payload) = body.split_at_mut(header_len);
        self.rtp
            .aead
            .seal_in_place_scatter(
                self.rtp.nonce(ssrc, index),
                Aad::from(&*header),
                payload,
                &[],
                tag,
            )
            .map_err(|_| SrtpError::Crypto)?;
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTP packet `buf`. Returns the RTP length.
    pub(crate) fn unprotect_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let len = buf.len().checked_sub(TAG_LEN).ok_or(SrtpError::TooShort)?;
        let (body, tag) = buf.split_at_mut(len);
        if header_len > body.len() {
            return Err(SrtpError::BadHeader);
        }
        let (header, payload) = body.split_at_mut(header_len);
        self.rtp
            .aead
            .open_in_place_separate_tag(
                self.rtp.nonce(ssrc, index),
                Aad::from(&*header),
                tag,
                payload,
            )
            .map_err(|_| SrtpError::AuthFailed)?;
        Ok(len)
    }

    /// Encrypts the RTCP packet `buf[..len]` and appends the tag and `E=1|index`.
    /// Returns the SRTCP length.
    pub(crate) fn protect_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let out_len = len + TAG_LEN + ESRTCP_LEN;
        let packet = buf.get_mut(..out_len).ok_or(SrtpError::BufferTooSmall)?;
        let (sealed, esrtcp) = packet.split_at_mut(len + TAG_LEN);
        let (rtcp, tag) = sealed.split_at_mut(len);
        if rtcp.len() < RTCP_CLEAR_LEN {
            return Err(SrtpError::TooShort);
        }
        let (clear, payload) = rtcp.split_at_mut(RTCP_CLEAR_LEN);
        let word = (E_FLAG | index).to_be_bytes();
        esrtcp.copy_from_slice(&word);
        let aad = srtcp_aad(clear, word);
        self.rtcp
            .aead
            .seal_in_place_scatter(
                self.rtcp.nonce(ssrc, u64::from(index)),
                Aad::from(aad),
                payload,
                &[],
                tag,
            )
            .map_err(|_| SrtpError::Crypto)?;
        Ok(out_len)
    }

    /// The `E|SRTCP index` word of the SRTCP packet `buf`.
    pub(crate) fn srtcp_word(buf: &[u8]) -> Result<u32, SrtpError> {
        let start = buf
            .len()
            .checked_sub(ESRTCP_LEN)
            .ok_or(SrtpError::TooShort)?;
        let word: [u8; 4] = buf
            .get(start..)
            .and_then(|w| w.try_into().ok())
            .ok_or(SrtpError::TooShort)?;
        Ok(u32::from_be_bytes(word))
    }

    /// Authenticates and decrypts the SRTCP packet `buf`. Returns the RTCP length.
    pub(crate) fn unprotect_rtcp(&self, buf: &mut [u8], ssrc: u32) -> Result<usize, SrtpError> {
        let word = Self::srtcp_word(buf)?;
        if word & E_FLAG == 0 {
            // RFC 7714 §9.3 tagging-only SRTCP: not produced by WebRTC peers, not accepted.
            return Err(SrtpError::UnencryptedRtcp);
        }
        let len = buf
            .len()
            .checked_sub(TAG_LEN + ESRTCP_LEN)
            .filter(|&len| len >= RTCP_CLEAR_LEN)
            .ok_or(SrtpError::TooShort)?;
        let (sealed, _) = buf.split_at_mut(len + TAG_LEN);
        let (rtcp, tag) = sealed.split_at_mut(len);
        let (clear, payload) = rtcp.split_at_mut(RTCP_CLEAR_LEN);
        let aad = srtcp_aad(clear, word.to_be_bytes());
        self.rtcp
            .aead
            .open_in_place_separate_tag(
                self.rtcp.nonce(ssrc, u64::from(word & !E_FLAG)),
                Aad::from(aad),
                tag,
                payload,
            )
            .map_err(|_| SrtpError::AuthFailed)?;
        Ok(len)
    }
}

/// SRTCP associated data (RFC 7714 §9.2): the eight clear octets, then `E|SRTCP index`.
fn srtcp_aad(clear: &[u8], word: [u8; 4]) -> [u8; RTCP_CLEAR_LEN + ESRTCP_LEN] {
    let mut aad = [0u8; RTCP_CLEAR_LEN + ESRTCP_LEN];
    aad[..RTCP_CLEAR_LEN].copy_from_slice(clear);
    aad[RTCP_CLEAR_LEN..].copy_from_slice(&word);
    aad
}
