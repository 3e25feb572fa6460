//! What the control server checks before a route runs: the client's connections and request
//! rate, its token (and that the request stays within the token's channel and user), the
//! metrics token; the headers its refusals carry; and the counters of what it refused.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use hyper::header::{self, HeaderValue};
use hyper::HeaderMap;

use super::limits::{Limit, Limits, RateLimiter};
use crate::control::auth::{Claims, Secret, TokenError};
use crate::control::metrics::ControlCounters;
use crate::sfu::api::ApiError;

/// The control server's guard (one per server, on its thread).
pub struct Guard {
    pub auth: Option<Secret>,
    pub metrics_token: Option<String>,
    pub limits: Limits,
    pub test_faults: bool,
    rate: RefCell<RateLimiter>,
    /// Open API connections per client address.
    connections: RefCell<HashMap<IpAddr, u32>>,
    pub counters: RefCell<ControlCounters>,
}

impl Guard {
    pub fn new(
        auth: Option<Secret>,
        metrics_token: Option<String>,
        limits: Limits,
        test_faults: bool,
    ) -> Guard {
        Guard {
            auth,
            metrics_token,
            rate: RefCell::new(RateLimiter::new(&limits)),
            limits,
            test_faults,
            connections: Default::default(),
            counters: Default::default(),
        }
    }

    /// No auth, no metrics token, no limits (tests of the routes themselves).
    pub fn open() -> Guard {
        let limits = Limits {
            max_rooms: 0,
            max_room_participants: 0,
            rate_limit: 0,
            rate_burst: 1,
            max_event_streams_per_user: 0,
            max_connections_per_ip: 0,
            ..Limits::default()
        };
        Guard::new(None, None, limits, false)
    }

    /// Takes one request from `ip`'s bucket, or refuses with 429.
    pub fn check_rate(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.rate.borrow_mut().allow(ip, Instant::now()) {
            Ok(())
        } else {
            Err(Limit::RequestRate.refuse(format!(
                "too many requests: at most {} per second (burst {}) per client address",
                self.limits.rate_limit, self.limits.rate_burst
            )))
        }
    }

    pub fn rate_limited_clients(&self) -> usize {
        self.rate.borrow().tracked()
    }

    /// A new API connection from `ip`: `None` (counted) when that address already holds
    /// `max_connections_per_ip`, unless `may_be_node` (a cluster node's address): then
    /// `Some(false)`, admitted uncounted, for signed node-to-node requests only. `Some(true)`:
    /// counted, to give back with [`Guard::disconnected`].
    pub fn admit(&self, ip: IpAddr, may_be_node: bool) -> Option<bool> {
        let max = self.limits.max_connections_per_ip;
        let mut open = self.connections.borrow_mut();
        let n = open.entry(ip).or_insert(0);
        if max > 0 && *n >= max {
            if may_be_node {
                return Some(false);
            }
            self.counters.borrow_mut().connections_refused += 1;
            tracing::debug!(%ip, max, "API connection refused: too many from this address");
            return None;
        }
        *n += 1;
        Some(true)
    }

    pub fn disconnected(&self, ip: IpAddr) {
        let mut open = self.connections.borrow_mut();
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    /// Open API connections (all addresses).
    pub fn open_connections(&self) -> u64 {
        self.connections
            .borrow()
            .values()
            .map(|&n| u64::from(n))
            .sum()
    }

    /// The headers a refusal carries: `WWW-Authenticate` on 401, `Retry-After` on every 429
    /// and 503, `Connection: close` on 413 (the rest of the body is not read).
    pub fn refusal_headers(e: &ApiError, headers: &mut HeaderMap) {
        match e.status {
            401 => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            413 => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // A bucket refills at least one token a second; an event stream slot frees when
            // the client's older stream closes; a 503 (the cluster directory rebuilt, an owner
            // not answering, no room left) is worth a retry.
            429 | 503 => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
    }

    /// Checks the request's token when auth is on: `None` when it is off, the claims when the
    /// token is valid, 401 otherwise. `allow_query` accepts `?token=` (event streams).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Claims>, ApiError> {
        let Some(secret) = &self.auth else {
            return Ok(None);
        };
        let token = bearer(headers).or_else(|| query_param(query?, "token"));
        let result = match token {
            None => Err(TokenError::Missing),
            Some(t) => secret.verify(&t, SystemTime::now()),
        };
        result.map(Some).map_err(|e| {
            self.counters.borrow_mut().auth_refused(e.as_str());
            tracing::debug!(reason = e.as_str(), "token refused");
            ApiError::new(401, e.message())
        })
    }

    /// 403 unless the token (if any) is for `channel_id` and, when given, `user_id`.
    pub fn authorize(
        &self,
        claims: &Option<Claims>,
        channel_id: &str,
        user_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(c) = claims else {
            return Ok(());
        };
        let refuse = |what: &str| {
            self.counters.borrow_mut().auth_refused("forbidden");
            tracing::info!(channel = %channel_id, user = ?user_id, token_channel = %c.channel_id, token_user = %c.user_id, "request outside its token refused");
            Err(ApiError::new(
                403,
                format!("the token does not grant this {what}"),
            ))
        };
        if c.channel_id != channel_id {
            return refuse("channelId");
        }
        if user_id.is_some_and(|u| u != c.user_id) {
            return refuse("userId");
        }
        Ok(())
    }

    /// The metrics token check (`/metrics`, `/stats`): 401 unless it is off or matches.
    pub fn check_metrics_token(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.metrics_token else {
            return Ok(());
        };
        let given = bearer(headers).unwrap_or_default();
        let ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            given.as_bytes(),
            expected.as_bytes(),
        )
        .is_ok();
        if ok {
            Ok(())
        } else {
            self.counters.borrow_mut().auth_refused("metrics_token");
            Err(ApiError::new(401, "metrics token required"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The value of `name` in a query string (`+` and percent-escapes decoded).
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| super::input::percent_decode(&v.replace('+', " ")).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token() {
        assert_eq!(
            query_param("a=1&token=x.y%2Dz", "token").as_deref(),
            Some("x.y-z")
        );
        assert_eq!(query_param("tokens=1", "token"), None);
        assert_eq!(query_param("", "token"), None);
    }

    #[test]
    fn bearer_header() {
        let req = hyper::Request::builder()
            .header("Authorization", "Bearer  abc ")
            .body(())
            .unwrap();
        assert_eq!(bearer(req.headers()).as_deref(), Some("abc"));
        let req = hyper::Request::builder()
            .header("Authorization", "Basic abc")
            .body(())
            .unwrap();
        assert_eq!(bearer(req.headers()), None);
    }
}
