//! The cluster secret: what nodes prove to each other that they are nodes of this cluster. It
//! signs the hop header of node-to-node requests ([`Secret::hop`]); other node-to-node links
//! (the cascade) sign their own messages with [`Secret::sign`] under a label of their own.
//!
//! Set it with `CHOIR_CLUSTER_SECRET` (or `_FILE`); without it a key is derived from the auth
//! secret (so one secret serves both), and without either node-to-node requests are ordinary
//! clients' requests (counted against per-client limits; a warning at start).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;

/// Shortest cluster secret accepted.
pub const MIN_LEN: usize = 32;
/// A signed hop header older (or newer) than this is refused: a replay is short-lived.
pub const HOP_MAX_AGE: Duration = Duration::from_secs(30);

/// The key, precomputed. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cluster::Secret(..)")
    }
}

/// A verified hop header: the node that sent the request, and the client it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub node: String,
    pub client: IpAddr,
}

impl Secret {
    /// A key from the secret's bytes (at least [`MIN_LEN`]).
    pub fn new(secret: &[u8]) -> Result<Secret, String> {
        if secret.len() < MIN_LEN {
            return Err(format!(
                "shorter than {MIN_LEN} bytes (make one with `openssl rand -hex 32`)"
            ));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The key derived from the auth secret (when no cluster secret is set): HMAC of a fixed
    /// label, so that the auth secret itself never signs node-to-node messages.
    pub fn derived_from_auth(auth: &[u8]) -> Secret {
        let key = hmac::Key::new(hmac::HMAC_SHA256, auth);
        let derived = hmac::sign(&key, b"choir cluster secret v1");
        Secret(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The MAC (hex) of `parts` under `label`, each part length-prefixed (no ambiguity).
    pub fn sign(&self, label: &str, parts: &[&[u8]]) -> String {
        hex(self.tag(label, parts).as_ref())
    }

    /// Whether `mac` (hex) is the MAC of `parts` under `label` (constant time).
    pub fn verify(&self, label: &str, parts: &[&[u8]], mac: &str) -> bool {
        let expected = hex(self.tag(label, parts).as_ref());
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), mac.as_bytes())
            .is_ok()
    }

    fn tag(&self, label: &str, parts: &[&[u8]]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in std::iter::once(label.as_bytes()).chain(parts.iter().copied()) {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign()
    }

    /// The hop header of a request `node` forwards for `client`:
    /// `<node>;<client>;<unix ms>;<mac over method, path and query, the three>`.
    pub fn hop(
        &self,
        node: &str,
        method: &str,
        path: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> String {
        let ms = unix_ms(now).to_string();
        let client = client.to_string();
        let parts: [&[u8]; 5] = [
            method.as_bytes(),
            path.as_bytes(),
            node.as_bytes(),
            client.as_bytes(),
            ms.as_bytes(),
        ];
        let mac = self.sign("hop", &parts);
        format!("{node};{client};{ms};{mac}")
    }

    /// Checks a hop header for the request's method and path and query: its MAC, and its age.
    pub fn check_hop(
        &self,
        value: &str,
        method: &str,
        path: &str,
        now: SystemTime,
    ) -> Result<Hop, &'static str> {
        let mut it = value.split(';');
        let (Some(node), Some(client), Some(ms), Some(mac), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err("not a signed hop header");
        };
        let parts: [&[u8]; 5] = [
            method.as_bytes(),
            path.as_bytes(),
            node.as_bytes(),
            client.as_bytes(),
            ms.as_bytes(),
        ];
        if !self.verify("hop", &parts, mac) {
            return Err("bad signature");
        }
        let at = ms.parse::<u64>().map_err(|_| "bad time")?;
        let now = unix_ms(now);
        if now.abs_diff(at) > HOP_MAX_AGE.as_millis() as u64 {
            return Err("stale");
        }
        let client = client.parse::<IpAddr>().map_err(|_| "bad client address")?;
        Ok(Hop {
            node: node.to_string(),
            client,
        })
    }

    /// A 32-octet key for `label` and `parts` (say, a cascade link's key for one direction:
    /// label `"cascade link"`, parts the sender's and receiver's node ids and incarnations and
    /// the link id). It is the length-prefixed `tag` of `label` and `parts` under
    /// a key of its own, HMAC-SHA256 of the cluster key over a fixed string: no MAC that
    /// [`sign`](Self::sign) or [`hop`](Self::hop) puts on the wire, whatever its label, is ever
    /// a derived key (their input starts with a length, this one with that string).
    pub fn derive_key(&self, label: &str, parts: &[&[u8]]) -> [u8; 32] {
        let root = hmac::sign(&self.0, b"choir cluster key derivation v1");
        let derived = Secret(hmac::Key::new(hmac::HMAC_SHA256, root.as_ref())).tag(label, parts);
        let mut key = [0u8; 32];
        key.copy_from_slice(derived.as_ref());
        key
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_headers_verify_only_unchanged_and_fresh() {
        let s = Secret::new(&[7u8; 32]).unwrap();
        let t0 = SystemTime::now();
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let h = s.hop("n1", "GET", "/api/voice/producers/c/u", client, t0);
        let ok = s
            .check_hop(&h, "GET", "/api/voice/producers/c/u", t0)
            .unwrap();
        assert_eq!(
            ok,
            Hop {
                node: "n1".into(),
                client
            }
        );
        assert_eq!(
            s.check_hop(&h, "POST", "/api/voice/producers/c/u", t0),
            Err("bad signature")
        );
        assert_eq!(
            s.check_hop(&h, "GET", "/api/voice/producers/c/v", t0),
            Err("bad signature")
        );
        let forged = h.replace("192.0.2.7", "192.0.2.8");
        assert_eq!(
            s.check_hop(&forged, "GET", "/api/voice/producers/c/u", t0),
            Err("bad signature")
        );
        let late = t0 + HOP_MAX_AGE + Duration::from_secs(1);
        assert_eq!(
            s.check_hop(&h, "GET", "/api/voice/producers/c/u", late),
            Err("stale")
        );
        assert_eq!(
            s.check_hop("n1", "GET", "/", t0),
            Err("not a signed hop header")
        );
        let other = Secret::new(&[8u8; 32]).unwrap();
        assert!(other
            .check_hop(&h, "GET", "/api/voice/producers/c/u", t0)
            .is_err());
        // The derived key is not the auth secret's own key.
        let d = Secret::derived_from_auth(&[7u8; 32]);
        assert!(d
            .check_hop(&h, "GET", "/api/voice/producers/c/u", t0)
            .is_err());
        assert!(Secret::new(b"short").is_err());
    }

    #[test]
    fn derived_keys_differ_by_secret_label_parts_and_from_macs() {
        let s = Secret::new(&[7u8; 32]).unwrap();
        let parts: [&[u8]; 3] = [b"node-a", b"node-b", &7u32.to_be_bytes()];
        let k = s.derive_key("cascade link", &parts);
        assert_eq!(k, s.derive_key("cascade link", &parts), "deterministic");
        assert_eq!(
            k,
            Secret::new(&[7u8; 32])
                .unwrap()
                .derive_key("cascade link", &parts),
            "the same on every node with the secret"
        );
        let differ = [
            Secret::new(&[8u8; 32])
                .unwrap()
                .derive_key("cascade link", &parts),
            s.derive_key("cascade linK", &parts),
            s.derive_key("cascade link", &[b"node-b", b"node-a", &7u32.to_be_bytes()]),
            s.derive_key("cascade link", &[b"node-a", b"node-b", &8u32.to_be_bytes()]),
            // Length prefixes: moving a boundary between parts changes the key.
            s.derive_key("cascade link", &[b"node-an", b"ode-b", &7u32.to_be_bytes()]),
            s.derive_key("cascade link", &parts[..2]),
        ];
        for (i, other) in differ.iter().enumerate() {
            assert_ne!(&k, other, "case {i}");
        }
        // Not the MAC that `sign` would publish for the same label and parts.
        assert_ne!(hex(&k), s.sign("cascade link", &parts));
        // HMAC-SHA256 under HMAC-SHA256(secret, fixed string), over length-prefixed input.
        let root = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]),
            b"choir cluster key derivation v1",
        );
        let mut input = Vec::new();
        for p in [&b"cascade link"[..]].into_iter().chain(parts) {
            input.extend_from_slice(&(p.len() as u64).to_be_bytes());
            input.extend_from_slice(p);
        }
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, root.as_ref()), &input);
        assert_eq!(&k[..], expected.as_ref());
    }
}
