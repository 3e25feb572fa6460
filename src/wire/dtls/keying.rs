//! DTLS-SRTP keying material (RFC 5764 §4.1.2, §4.2; RFC 7714 §14.2).

use std::fmt;

/// The SRTP protection profiles negotiated through the DTLS `use_srtp` extension.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764 §4.1.2): 128-bit key, 112-bit salt.
    AES128_CM_HMAC_SHA1_80,
    /// SRTP_AEAD_AES_128_GCM (RFC 7714 §14.2): 128-bit key, 96-bit salt.
    AEAD_AES_128_GCM,
    /// SRTP_AEAD_AES_256_GCM (RFC 7714 §14.2): 256-bit key, 96-bit salt.
    AEAD_AES_256_GCM,
}

impl SrtpProfile {
    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfile::AES128_CM_HMAC_SHA1_80 | SrtpProfile::AEAD_AES_128_GCM => 16,
            SrtpProfile::AEAD_AES_256_GCM => 32,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::AES128_CM_HMAC_SHA1_80 => 14,
            SrtpProfile::AEAD_AES_128_GCM | SrtpProfile::AEAD_AES_256_GCM => 12,
        }
    }

    /// The profile's `use_srtp` identifier (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub const fn id(self) -> u16 {
        match self {
            SrtpProfile::AES128_CM_HMAC_SHA1_80 => 0x0001,
            SrtpProfile::AEAD_AES_128_GCM => 0x0007,
            SrtpProfile::AEAD_AES_256_GCM => 0x0008,
        }
    }

    /// The profile's registered name, e.g. `"SRTP_AEAD_AES_256_GCM"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SrtpProfile::AES128_CM_HMAC_SHA1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
            SrtpProfile::AEAD_AES_128_GCM => "SRTP_AEAD_AES_128_GCM",
            SrtpProfile::AEAD_AES_256_GCM => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// dimpl's profile; `None` for one it may add later and choir does not implement.
    pub(crate) fn from_dimpl(profile: dimpl::SrtpProfile) -> Option<Self> {
        match profile {
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_HMAC_SHA1_80),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
            _ => None,
        }
    }
}

/// SRTP keying material split per RFC 5764 §4.2 into our (local) and the peer's (remote)
/// master key + salt. Local keys protect what we send; remote keys unprotect what we receive.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// Our master key (`profile.key_len()` bytes).
    pub local_key: Vec<u8>,
    /// Our master salt (`profile.salt_len()` bytes).
    pub local_salt: Vec<u8>,
    /// The peer's master key.
    pub remote_key: Vec<u8>,
    /// The peer's master salt.
    pub remote_salt: Vec<u8>,
}

impl SrtpKeys {
    /// Split the exported keying material, laid out as (RFC 5764 §4.2)
    /// `client_write_SRTP_master_key | server_write_SRTP_master_key |
    ///  client_write_SRTP_master_salt | server_write_SRTP_master_salt`.
    /// `None` if its length does not fit the profile.
    pub fn split(profile: SrtpProfile, material: &[u8], we_are_client: bool) -> Option<Self> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() != 2 * (k + s) {
            return None;
        }
        let (client_key, rest) = material.split_at(k);
        let (server_key, rest) = rest.split_at(k);
        let (client_salt, server_salt) = rest.split_at(s);
        let (local, remote) = if we_are_client {
            ((client_key, client_salt), (server_key, server_salt))
        } else {
            ((server_key, server_salt), (client_key, client_salt))
        };
        Some(SrtpKeys {
            profile,
            local_key: local.0.to_vec(),
            local_salt: local.1.to_vec(),
            remote_key: remote.0.to_vec(),
            remote_salt: remote.1.to_vec(),
        })
    }
}

impl fmt::Debug for SrtpKeys {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_rfc5764_layout() {
        for profile in [
            SrtpProfile::AES128_CM_HMAC_SHA1_80,
            SrtpProfile::AEAD_AES_128_GCM,
            SrtpProfile::AEAD_AES_256_GCM,
        ] {
            let (k, s) = (profile.key_len(), profile.salt_len());
            // Label every byte with its field: 1 client key, 2 server key, 3 client salt, 4 server salt.
            let material: Vec<u8> = [(1u8, k), (2, k), (3, s), (4, s)]
                .iter()
                .flat_map(|&(tag, n)| std::iter::repeat_n(tag, n))
                .collect();
            let client = SrtpKeys::split(profile, &material, true).unwrap();
            assert_eq!(client.local_key, vec![1; k]);
            assert_eq!(client.remote_key, vec![2; k]);
            assert_eq!(client.local_salt, vec![3; s]);
            assert_eq!(client.remote_salt, vec![4; s]);
            let server = SrtpKeys::split(profile, &material, false).unwrap();
            assert_eq!(server.local_key, client.remote_key);
            assert_eq!(server.local_salt, client.remote_salt);
            assert_eq!(server.remote_key, client.local_key);
            assert_eq!(server.remote_salt, client.local_salt);
            assert!(SrtpKeys::split(profile, &material[1..], true).is_none());
            assert!(
                !format!("{client:?}").contains('['),
                "Debug must not print keys"
            );
        }
    }
}
