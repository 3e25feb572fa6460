//! API tokens: JWT (RFC 7519) signed with HMAC-SHA256 (`alg: HS256`, RFC 7518 §3.2), compact
//! serialization (RFC 7515 §7.1).
//!
//! The app's backend, which knows who its users are, mints a token per (channel, user) with a
//! short expiry; the browser sends it as `Authorization: Bearer <token>` (or `?token=` on the
//! event stream, which `EventSource` cannot give headers). choir checks the signature and
//! `exp`, then that the request names the token's `channelId` and `userId`.
//!
//! Why not a JWT crate: choir accepts exactly one algorithm with one shared key, which is ~100
//! lines on top of crates already in the build (aws-lc-rs for the HMAC and its constant-time
//! verification, base64, serde_json). `jsonwebtoken` would add its own crypto backend choice,
//! PEM/ASN.1 parsing and the algorithm-negotiation surface that HS256-only code does not need.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Shortest accepted secret: HS256 wants a key of at least the hash size (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;
/// Longest accepted token (bytes); anything longer is refused before decoding.
const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// What a token grants: acting as `user_id` in `channel_id` until `exp` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub channel_id: String,
    pub user_id: String,
    pub exp: u64,
}

/// Why a token was refused (all answered 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    Algorithm,
    Signature,
    Expired,
}

impl TokenError {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
        }
    }

    /// The message of the 401 reply.
    pub fn message(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing token: send Authorization: Bearer <token>",
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token algorithm must be HS256",
            TokenError::Signature => "invalid token signature",
            TokenError::Expired => "token expired",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// The shared secret, as a precomputed HMAC key. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A key from the secret's bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(secret: &[u8]) -> Result<Secret, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "shorter than {MIN_SECRET_LEN} bytes (make one with `openssl rand -hex 32`)"
            ));
        }
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// Mints a token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "HS256".into(),
            typ: Some("JWT".into()),
        };
        let mut token = encode_json(&header);
        token.push('.');
        token.push_str(&encode_json(claims));
        let tag = hmac::sign(&self.0, token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        token
    }

    /// Checks signature, algorithm and expiry at `now`; returns the claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let signed_len = header_len(token).ok_or(TokenError::Malformed)?;
        let signed = token.get(..signed_len).ok_or(TokenError::Malformed)?;
        hmac::verify(&self.0, signed.as_bytes(), &signature).map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_json(payload)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if claims.exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Length of `header.payload` (what the signature covers).
fn header_len(token: &str) -> Option<usize> {
    token.rfind('.')
}

fn encode_json<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Claims for `channel_id`/`user_id` valid for `ttl` from `now`.
pub fn claims(channel_id: &str, user_id: &str, ttl: Duration, now: SystemTime) -> Claims {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Claims {
        channel_id: channel_id.into(),
        user_id: user_id.into(),
        exp: (now + ttl).as_secs(),
    }
}

/// choir's subcommands (the daemon runs when none is given).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Subcommand {
    /// Mint an API token (for testing: the app's backend mints its own, see the README).
    Token(TokenArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The secret the daemon uses (at least 32 bytes).
    #[arg(long, env = "CHOIR_AUTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the secret.
    #[arg(long, env = "CHOIR_AUTH_SECRET_FILE", value_name = "PATH")]
    pub secret_file: Option<String>,
    /// The channelId the token grants.
    #[arg(long)]
    pub channel: String,
    /// The userId the token grants.
    #[arg(long)]
    pub user: String,
    /// How long the token is valid: "90s", "10m", "2h" (at most a week).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

/// Runs `choir token`: prints a token on stdout; errors go to stderr with exit status 2.
pub fn token_command(args: &TokenArgs) -> Result<String, String> {
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), _) if !s.trim().is_empty() => s.trim().to_string(),
        (_, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {path}: {e}"))?
            .trim()
            .to_string(),
        _ => return Err("no secret: pass --secret, --secret-file or set CHOIR_AUTH_SECRET".into()),
    };
    let secret = Secret::new(secret.as_bytes()).map_err(|e| format!("invalid secret: {e}"))?;
    let ttl = parse_ttl(&args.ttl).ok_or_else(|| {
        format!(
            "invalid --ttl {:?}: a duration such as 90s, 10m, 2h (at most 7 days)",
            args.ttl
        )
    })?;
    if args.channel.is_empty() || args.user.is_empty() {
        return Err("--channel and --user must not be empty".into());
    }
    Ok(secret.mint(&claims(&args.channel, &args.user, ttl, SystemTime::now())))
}

/// "90", "90s", "10m", "2h", "1d"; positive and at most 7 days.
fn parse_ttl(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = num.parse().ok()?;
    let secs = n.checked_mul(match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    })?;
    (1..=7 * 86_400)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn mint_then_verify() {
        let now = SystemTime::now();
        let c = claims("room", "alice", Duration::from_secs(60), now);
        let token = secret().mint(&c);
        assert_eq!(secret().verify(&token, now), Ok(c));
    }

    /// A token made by another implementation (Python's hmac/hashlib/base64, as in the
    /// README's Node example) verifies.
    #[test]
    fn verifies_a_token_made_elsewhere() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjaGFubmVsSWQiOiJyb29tIiwidXNlcklkIjoiYWxpY2UiLCJleHAiOjQxMDI0NDQ4MDB9.spu9ZzjimRErJhNbe207j5DyyYrt5aiF9tz-cqE5umY";
        let c = secret().verify(token, SystemTime::now()).unwrap();
        assert_eq!(
            (c.channel_id.as_str(), c.user_id.as_str(), c.exp),
            ("room", "alice", 4_102_444_800)
        );
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("0s"), None);
        assert_eq!(parse_ttl("8d"), None);
        assert_eq!(parse_ttl("1x"), None);
        assert_eq!(parse_ttl("99999999999999999999h"), None);
    }

    #[test]
    fn refusals() {
        let now = SystemTime::now();
        let s = secret();
        let token = s.mint(&claims("room", "alice", Duration::from_secs(60), now));
        let other = Secret::new(b"another secret, also 32 bytes long").unwrap();
        assert_eq!(other.verify(&token, now), Err(TokenError::Signature));
        let later = now + Duration::from_secs(120);
        assert_eq!(s.verify(&token, later), Err(TokenError::Expired));
        assert_eq!(s.verify("", now), Err(TokenError::Missing));
        assert_eq!(s.verify("a.b", now), Err(TokenError::Malformed));
        assert_eq!(s.verify("a.b.c.d", now), Err(TokenError::Malformed));
        // A tampered payload (another user) with the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = encode_json(&claims("room", "mallory", Duration::from_secs(60), now));
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(s.verify(&forged, now), Err(TokenError::Signature));
        // alg "none" with an empty signature.
        let none = format!(
            "{}.{}.",
            encode_json(&Header {
                alg: "none".into(),
                typ: None
            }),
            parts[1]
        );
        assert_eq!(s.verify(&none, now), Err(TokenError::Algorithm));
        assert!(Secret::new(b"short").is_err());
        assert_eq!(
            s.verify(&"x".repeat(MAX_TOKEN_LEN + 1), now),
            Err(TokenError::Malformed)
        );
    }
}
