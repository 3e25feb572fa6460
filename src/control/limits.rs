//! Limits on what clients may ask of choir (their flags are parsed in `crate::process::config`).
//!
//! - **Requests per second per client IP**: a token bucket per address on the control thread
//!   (the address of the TCP peer: behind a reverse proxy that is the proxy, so raise or
//!   disable the limit there and limit at the proxy). 429.
//! - **Event streams per user**: open `events` streams with the same userId. 429.
//! - **Rooms per process**: rooms live on shards, so each shard enforces its share,
//!   `ceil(max_rooms / shards)`; a room's shard is fixed by its channelId's hash, so a new room
//!   may be refused slightly before the process-wide total is reached. 503.
//! - **Participants per room**: enforced by the room's shard when a new user's first transport
//!   is created. 503.
//! - **API connections per client IP**: concurrent TCP connections to the API from one
//!   address; one over the cap is closed at once (counted in
//!   `choir_http_connections_refused_total`).
//! - **Request head deadline**: a connection that has not sent a whole request head within
//!   the header timeout (from its start, or from the end of its previous exchange: an idle
//!   keep-alive connection too) is closed (`choir_http_header_timeouts_total`).
//! - **Request bodies**: at most [`super::MAX_BODY`] bytes, checked against `Content-Length`
//!   before reading and while reading; 413 at once, and the connection closes.
//!
//! Each refused request is a JSON error and counts in `choir_limit_refusals_total{limit}`; every 429
//! carries `Retry-After`. Cleanup is never refused: `leave` is not rate limited (a refused
//! `leave` would leave the participant's ports bound until its consent or join deadline).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use crate::sfu::Limit;

/// Configured limits; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_rooms: u32,
    pub max_room_participants: u32,
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub max_event_streams_per_user: u32,
    pub max_connections_per_ip: u32,
    #[serde(serialize_with = "millis", rename = "headerTimeoutMs")]
    pub header_timeout: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms: 1000,
            max_room_participants: 100,
            rate_limit: 100,
            rate_burst: 200,
            max_event_streams_per_user: 4,
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a route's requests take a token from the client's rate bucket. Health checks and
/// scrapes come from the operator's tools; `leave` is cleanup, which is never refused;
/// `OPTIONS` preflights are answered without work.
pub fn rate_limited(route: &str, method: &hyper::Method) -> bool {
    // Cascade requests are signed by a node (checked before anything else is done).
    !matches!(route, "health" | "metrics" | "leave" | "_cascade")
        && method != hyper::Method::OPTIONS
}

impl Limits {
    /// A shard's share of the room limit (0 = none).
    pub fn rooms_per_shard(&self, shards: usize) -> u32 {
        let shards = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
        self.max_rooms.div_ceil(shards)
    }
}

/// Per-IP token buckets (requests per second, with a burst).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before idle (full) ones are pruned.
const PRUNE_ABOVE: usize = 4096;

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        RateLimiter {
            rate: f64::from(limits.rate_limit),
            burst: f64::from(limits.rate_burst.max(1)),
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    /// Takes one token for `ip` at `now`; false when its bucket is empty. Always true when
    /// the limit is off.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() > PRUNE_ABOVE
            && self
                .last_prune
                .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
        {
            self.prune(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled (their clients are idle).
    fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
        });
        self.last_prune = Some(now);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket() {
        let limits = Limits {
            rate_limit: 10,
            rate_burst: 3,
            ..Limits::default()
        };
        let mut r = RateLimiter::new(&limits);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0), "burst spent");
        assert!(r.allow(b, t0), "another client has its own bucket");
        assert!(!r.allow(a, t0 + Duration::from_millis(50)));
        assert!(
            r.allow(a, t0 + Duration::from_millis(100)),
            "refilled at 10/s"
        );
        let off = RateLimiter::new(&Limits {
            rate_limit: 0,
            ..Limits::default()
        });
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let mut r = RateLimiter::new(&Limits::default());
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE as u32 {
            r.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(r.tracked() > PRUNE_ABOVE);
        r.allow("192.0.2.1".parse().unwrap(), t0 + Duration::from_secs(10));
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn room_share_rounds_up() {
        let l = Limits {
            max_rooms: 5,
            ..Limits::default()
        };
        assert_eq!(l.rooms_per_shard(2), 3);
        assert_eq!(l.rooms_per_shard(1), 5);
        assert_eq!(Limits { max_rooms: 0, ..l }.rooms_per_shard(4), 0);
    }
}
