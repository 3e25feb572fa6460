//! SRTP key derivation: the AES-CM PRF of RFC 3711 §4.3.
//!
//! With DTLS-SRTP the key derivation rate is zero (RFC 5764 §4.1.2), so every session key is
//! derived once, from the master key and salt, with `r = 0` (RFC 3711 §4.3.1):
//!
//! ```text
//! key_id = label || r                (r = 0, 48 bits)
//! x      = key_id XOR master_salt    (key_id right-aligned in 112 bits)
//! out    = AES-CM(master_key, IV = x * 2^16), keystream truncated to the wanted length
//! ```
//!
//! AEAD_AES_256_GCM uses the same PRF keyed with AES-256 (RFC 7714 §11, RFC 6188 §7.2). The
//! 96-bit master salt of the AEAD profiles fills the first 12 octets of `x`, the last two
//! staying zero, as libsrtp and the other deployed stacks do.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;

use super::SrtpError;

/// Key derivation labels, RFC 3711 §4.3.1 (SRTP) and §4.3.2 (SRTCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0x00,
    RtpAuthentication = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuthentication = 0x04,
    RtcpSalt = 0x05,
}

/// The longest master salt any profile uses (RFC 3711 §8.2: 112 bits).
const MAX_SALT_LEN: usize = 14;

/// The AES-CM pseudo-random function keyed with one master key and salt.
pub(crate) struct Prf {
    aes: EncryptingKey,
    salt: [u8; MAX_SALT_LEN],
}

impl Prf {
    /// Keys the PRF: AES-128 for a 16-octet master key, AES-256 for a 32-octet one.
    pub(crate) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let algorithm = match master_key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(SrtpError::BadKeyLength),
        };
        let mut salt = [0u8; MAX_SALT_LEN];
        salt.get_mut(..master_salt.len())
            .ok_or(SrtpError::BadSaltLength)?
            .copy_from_slice(master_salt);
        let key = UnboundCipherKey::new(algorithm, master_key).map_err(|_| SrtpError::Crypto)?;
        let aes = EncryptingKey::ctr(key).map_err(|_| SrtpError::Crypto)?;
        Ok(Self { aes, salt })
    }

    /// Fills `out` with the session key, salt or authentication key for `label`
    /// (RFC 3711 §4.3.1 with `r = 0`).
    pub(crate) fn derive(&self, label: Label, out: &mut [u8]) -> Result<(), SrtpError> {
        let mut iv = [0u8; 16];
        iv[..MAX_SALT_LEN].copy_from_slice(&self.salt);
        // key_id = label || 0^48, right-aligned in the 112-bit salt: the label lands on octet 7.
        iv[7] ^= label as u8;
        out.fill(0);
        self.aes
            .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| SrtpError::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::srtp::tests::hex;

    /// RFC 3711 Appendix B.3: the three SRTP session keys of one master key and salt.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let prf = Prf::new(
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();

        let mut key = [0u8; 16];
        prf.derive(Label::RtpEncryption, &mut key).unwrap();
        assert_eq!(key[..], hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);

        let mut salt = [0u8; 14];
        prf.derive(Label::RtpSalt, &mut salt).unwrap();
        assert_eq!(salt[..], hex("30CBBC08863D8C85D49DB34A9AE1")[..]);

        // B.3 lists 94 octets of authentication key material; HMAC-SHA1 uses the first 20.
        let mut auth = [0u8; 94];
        prf.derive(Label::RtpAuthentication, &mut auth).unwrap();
        let expected = hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
        );
        assert_eq!(auth[..], expected[..]);
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(
            Prf::new(&[0; 24], &[0; 14]).err(),
            Some(SrtpError::BadKeyLength)
        );
        assert_eq!(
            Prf::new(&[0; 16], &[0; 15]).err(),
            Some(SrtpError::BadSaltLength)
        );
    }
}
