//! AES_CM_128_HMAC_SHA1_80: AES in counter mode with an 80-bit HMAC-SHA1 tag (RFC 3711).
//!
//! SRTP packet (RFC 3711 §3.1): `header || AES-CM(payload) || tag`, where the tag is the
//! first 80 bits of `HMAC-SHA1(k_a, header || encrypted payload || ROC)` (§4.2).
//!
//! SRTCP packet (RFC 3711 §3.4): `first 8 octets || AES-CM(rest) || E|index || tag`, with the
//! tag over everything before it (§4.2). Packets with `E = 0` are authenticated only.
//!
//! The counter block is `(k_s * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16)` (§4.1.1). The
//! HMAC keyed state is computed once per session key and cloned per packet, so the hot path
//! does no allocation and no key schedule.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::iv::FixedLength;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::header::RTCP_CLEAR_LEN;
use super::kdf::{Label, Prf};
use super::SrtpError;

/// Authentication tag length: 80 bits (RFC 3711 §5.2).
pub(crate) const TAG_LEN: usize = 10;
/// Session salt length: 112 bits (RFC 3711 §8.2).
pub(crate) const SALT_LEN: usize = 14;
/// Session authentication key length: 160 bits (RFC 3711 §8.2).
const AUTH_KEY_LEN: usize = 20;
/// Session encryption key length.
const KEY_LEN: usize = 16;
/// Length of the E flag and SRTCP index word.
const ESRTCP_LEN: usize = 4;
/// The E flag in the E|SRTCP index word.
const E_FLAG: u32 = 0x8000_0000;

/// Session keys of one of SRTP or SRTCP.
pub(crate) struct CmKeys {
    aes: EncryptingKey,
    salt: [u8; SALT_LEN],
    mac: Hmac<Sha1>,
}

impl CmKeys {
    /// Builds the transform state from session keys.
    pub(crate) fn new(key: &[u8], salt: &[u8], auth_key: &[u8]) -> Result<Self, SrtpError> {
        let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| SrtpError::BadSaltLength)?;
        let key = UnboundCipherKey::new(&AES_128, key).map_err(|_| SrtpError::BadKeyLength)?;
        let aes = EncryptingKey::ctr(key).map_err(|_| SrtpError::Crypto)?;
        let mac = Hmac::<Sha1>::new_from_slice(auth_key).map_err(|_| SrtpError::BadKeyLength)?;
        Ok(Self { aes, salt, mac })
    }

    /// Derives the session keys for the given labels (RFC 3711 §4.3).
    fn derive(prf: &Prf, labels: [Label; 3]) -> Result<Self, SrtpError> {
        let [enc, auth, salt_label] = labels;
        let mut key = [0u8; KEY_LEN];
        let mut salt = [0u8; SALT_LEN];
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        prf.derive(enc, &mut key)?;
        prf.derive(auth, &mut auth_key)?;
        prf.derive(salt_label, &mut salt)?;
        Self::new(&key, &salt, &auth_key)
    }

    /// XORs `data` with the AES-CM keystream of packet `index` of `ssrc` (RFC 3711 §4.1.1).
    pub(crate) fn apply_keystream(
        &self,
        ssrc: u32,
        index: u64,
        data: &mut [u8],
    ) -> Result<(), SrtpError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, x) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= x;
        }
        // The 48-bit index, shifted left by 16: octets 8..14.
        for (b, x) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= x;
        }
        self.aes
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| SrtpError::Crypto)
    }
}

/// SRTP and SRTCP session keys of one AES_CM_128_HMAC_SHA1_80 session.
pub(crate) struct Cm {
    pub(crate) rtp: CmKeys,
    pub(crate) rtcp: CmKeys,
}

impl Cm {
    pub(crate) fn new(prf: &Prf) -> Result<Self, SrtpError> {
        Ok(Self {
            rtp: CmKeys::derive(
                prf,
                [
                    Label::RtpEncryption,
                    Label::RtpAuthentication,
                    Label::RtpSalt,
                ],
            )?,
            rtcp: CmKeys::derive(
                prf,
                [
                    Label::RtcpEncryption,
                    Label::RtcpAuthentication,
                    Label::RtcpSalt,
                ],
            )?,
        })
    }

    /// Protects the RTP packet `buf[..len]` whose header is `header_len` long, writing the tag
    /// after it. Returns the SRTP length.
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
        let (authenticated, tag) = packet.split_at_mut(len);
        let payload = authenticated
            .get_mut(header_len..)
            .ok_or(SrtpError::BadHeader)?;
        self.rtp.apply_keystream(ssrc, index, payload)?;
        let mut mac = self.rtp.mac.clone();
        mac.update(authenticated);
        mac.update(&roc_of(index).to_be_bytes());
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
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
        let (authenticated, tag) = buf.split_at_mut(len);
        let mut mac = self.rtp.mac.clone();
        mac.update(authenticated);
        mac.update(&roc_of(index).to_be_bytes());
        mac.verify_truncated_left(tag)
            .map_err(|_| SrtpError::AuthFailed)?;
        let payload = authenticated
            .get_mut(header_len..)
            .ok_or(SrtpError::BadHeader)?;
        self.rtp.apply_keystream(ssrc, index, payload)?;
        Ok(len)
    }

    /// Encrypts the RTCP packet `buf[..len]` and appends `E=1|index` and the tag.
    /// Returns the SRTCP length.
    pub(crate) fn protect_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let authenticated_len = len + ESRTCP_LEN;
        let out_len = authenticated_len + TAG_LEN;
        let packet = buf.get_mut(..out_len).ok_or(SrtpError::BufferTooSmall)?;
        let (authenticated, tag) = packet.split_at_mut(authenticated_len);
        let (rtcp, esrtcp) = authenticated.split_at_mut(len);
        let payload = rtcp.get_mut(RTCP_CLEAR_LEN..).ok_or(SrtpError::TooShort)?;
        self.rtcp.apply_keystream(ssrc, u64::from(index), payload)?;
        esrtcp.copy_from_slice(&(E_FLAG | index).to_be_bytes());
        let mut mac = self.rtcp.mac.clone();
        mac.update(authenticated);
        tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        Ok(out_len)
    }

    /// The `E|SRTCP index` word of the SRTCP packet `buf`.
    pub(crate) fn srtcp_word(buf: &[u8]) -> Result<u32, SrtpError> {
        let end = buf.len().checked_sub(TAG_LEN).ok_or(SrtpError::TooShort)?;
        let start = end.checked_sub(ESRTCP_LEN).ok_or(SrtpError::TooShort)?;
        let word = buf.get(start..end).ok_or(SrtpError::TooShort)?;
        let word: [u8; 4] = word.try_into().map_err(|_| SrtpError::TooShort)?;
        Ok(u32::from_be_bytes(word))
    }

    /// Authenticates the SRTCP packet `buf` and, if its E flag is set, decrypts it.
    /// Returns the RTCP length.
    pub(crate) fn unprotect_rtcp(&self, buf: &mut [u8], ssrc: u32) -> Result<usize, SrtpError> {
        let word = Self::srtcp_word(buf)?;
        let authenticated_len = buf.len() - TAG_LEN; // srtcp_word checked the length
        let len = authenticated_len - ESRTCP_LEN;
        if len < RTCP_CLEAR_LEN {
            return Err(SrtpError::TooShort);
        }
        let (authenticated, tag) = buf.split_at_mut(authenticated_len);
        let mut mac = self.rtcp.mac.clone();
        mac.update(authenticated);
        mac.verify_truncated_left(tag)
            .map_err(|_| SrtpError::AuthFailed)?;
        if word & E_FLAG != 0 {
            let payload = &mut authenticated[RTCP_CLEAR_LEN..len];
            self.rtcp
                .apply_keystream(ssrc, u64::from(word & !E_FLAG), payload)?;
        }
        Ok(len)
    }
}

/// The rollover counter part of an SRTP packet index.
fn roc_of(index: u64) -> u32 {
    (index >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srtp::tests::hex;

    /// RFC 3711 Appendix B.2: the AES-CM keystream for SSRC 0, index 0, over 65282 blocks.
    #[test]
    fn rfc3711_b2_keystream() {
        let keys = CmKeys::new(
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
            &[0; AUTH_KEY_LEN],
        )
        .unwrap();
        let mut stream = vec![0u8; 1_044_512];
        keys.apply_keystream(0, 0, &mut stream).unwrap();
        let head = hex("E03EAD0935C95E80E166B16DD92B4EB4
             D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0");
        let tail = hex("EC8CDF7398607CB0F2D21675EA9EA1E4
             362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44");
        assert_eq!(stream[..48], head[..]);
        assert_eq!(stream[stream.len() - 48..], tail[..]);
    }
}
