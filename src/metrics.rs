//! `GET /metrics`: Prometheus/OpenMetrics text.
//!
//! Nothing is shared across threads for this: at each scrape the control server asks every
//! shard for its [`ShardStats`] (a `Stats` command, as `/stats` does) and renders that
//! snapshot together with its own counters ([`ControlCounters`]). Shard values are labelled
//! `shard="i"`; drops carry `layer` and `reason` (the `as_str` names of the drop enums).
//!
//! The encoding is `prometheus-client`'s (the Prometheus project's Rust client): a
//! [`Collector`] renders constant values taken from the snapshot, and the crate takes care of
//! names (`_total` on counters), escaping and the `# EOF` trailer.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::control::limits::Limit;
use crate::shard::ShardStats;

/// The content type of the reply.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The control plane's own counters (kept on the control thread).
#[derive(Debug, Clone, Default)]
pub struct ControlCounters {
    /// Replies by (route, HTTP status).
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Refusals by limit.
    pub refusals: BTreeMap<Limit, u64>,
    /// Requests refused for their token (401) by reason, and "forbidden" (403).
    pub auth_refusals: BTreeMap<&'static str, u64>,
}

impl ControlCounters {
    pub fn request(&mut self, route: &'static str, status: u16) {
        *self.requests.entry((route, status)).or_insert(0) += 1;
    }

    pub fn refused(&mut self, limit: Limit) {
        *self.refusals.entry(limit).or_insert(0) += 1;
    }

    pub fn auth_refused(&mut self, reason: &'static str) {
        *self.auth_refusals.entry(reason).or_insert(0) += 1;
    }
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Stats of the shards that answered.
    pub shards: Vec<ShardStats>,
    /// Shards that did not answer (stopped).
    pub failed_shards: Vec<usize>,
    pub control: ControlCounters,
    /// Open event streams (SSE).
    pub event_streams: u64,
    pub events_delivered: u64,
    pub event_overflows: u64,
    pub rate_limited_clients: u64,
    pub uptime_seconds: u64,
}

/// Renders a snapshot as OpenMetrics text.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!("metrics encoding failed: {e}");
    }
    out
}

type Result = std::result::Result<(), std::fmt::Error>;

/// One metric family: a name, help, and (labels, value) samples.
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in samples {
        if labels.is_empty() {
            // An unlabelled metric has one sample.
            return ConstCounter::new(value).encode(family);
        }
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
) -> Result {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0f64).metric_type())?;
    for (labels, value) in samples {
        if labels.is_empty() {
            // An unlabelled metric has one sample.
            return ConstGauge::new(value).encode(family);
        }
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn shard_label(s: &ShardStats) -> Vec<(&'static str, String)> {
    vec![("shard", s.shard.to_string())]
}

impl Snapshot {
    fn per_shard(&self, f: impl Fn(&ShardStats) -> u64) -> Vec<(Vec<(&'static str, String)>, u64)> {
        self.shards.iter().map(|s| (shard_label(s), f(s))).collect()
    }

    fn per_shard_gauge(
        &self,
        f: impl Fn(&ShardStats) -> f64,
    ) -> Vec<(Vec<(&'static str, String)>, f64)> {
        self.shards.iter().map(|s| (shard_label(s), f(s))).collect()
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result {
        let up = self.shards.iter().map(|s| (shard_label(s), 1.0)).chain(
            self.failed_shards
                .iter()
                .map(|i| (vec![("shard", i.to_string())], 0.0)),
        );
        gauge(&mut e, "choir_shard_up", "1 while the shard answers", up)?;
        gauge(
            &mut e,
            "choir_rooms",
            "Rooms",
            self.per_shard_gauge(|s| s.counts.rooms as f64),
        )?;
        gauge(
            &mut e,
            "choir_participants",
            "Participants",
            self.per_shard_gauge(|s| s.counts.participants as f64),
        )?;
        let states = self.shards.iter().flat_map(|s| {
            let t = s.transport_states;
            [
                ("new", t.new),
                ("connecting", t.connecting),
                ("connected", t.connected),
            ]
            .map(|(state, n)| {
                (
                    vec![("shard", s.shard.to_string()), ("state", state.to_string())],
                    n as f64,
                )
            })
        });
        gauge(
            &mut e,
            "choir_transports",
            "Transports by state: new (no ICE check yet), connecting (ICE, DTLS pending), connected (SRTP keys)",
            states,
        )?;
        gauge(
            &mut e,
            "choir_producers",
            "Producers",
            self.per_shard_gauge(|s| s.counts.producers as f64),
        )?;
        gauge(
            &mut e,
            "choir_consumers",
            "Consumers",
            self.per_shard_gauge(|s| s.counts.consumers as f64),
        )?;
        gauge(
            &mut e,
            "choir_bound_ports",
            "RTC UDP ports bound",
            self.per_shard_gauge(|s| s.counts.bound_ports as f64),
        )?;
        gauge(
            &mut e,
            "choir_event_loop_lag_seconds",
            "How late the shard's last timer tick ran",
            self.per_shard_gauge(|s| s.loop_lag_us as f64 / 1e6),
        )?;
        counter(
            &mut e,
            "choir_datagrams_received",
            "UDP datagrams received",
            self.per_shard(|s| s.counters.datagrams_in),
        )?;
        counter(
            &mut e,
            "choir_datagrams_sent",
            "UDP datagrams sent",
            self.per_shard(|s| s.counters.datagrams_out),
        )?;
        counter(
            &mut e,
            "choir_received_bytes",
            "UDP payload bytes received",
            self.per_shard(|s| s.counters.bytes_in),
        )?;
        counter(
            &mut e,
            "choir_sent_bytes",
            "UDP payload bytes sent",
            self.per_shard(|s| s.counters.bytes_out),
        )?;
        counter(
            &mut e,
            "choir_rtp_received",
            "RTP packets received and decrypted",
            self.per_shard(|s| s.counters.rtp_received),
        )?;
        counter(
            &mut e,
            "choir_rtp_forwarded",
            "RTP packets forwarded (one per consumer copy)",
            self.per_shard(|s| s.counters.rtp_forwarded),
        )?;
        counter(
            &mut e,
            "choir_rtcp_received",
            "RTCP packets received",
            self.per_shard(|s| s.counters.rtcp_received),
        )?;
        counter(
            &mut e,
            "choir_rtcp_sent",
            "RTCP packets sent",
            self.per_shard(|s| s.counters.rtcp_sent),
        )?;
        counter(
            &mut e,
            "choir_stun_replies",
            "STUN responses sent",
            self.per_shard(|s| s.counters.stun_replies),
        )?;
        counter(
            &mut e,
            "choir_dtls_connected",
            "DTLS handshakes completed",
            self.per_shard(|s| s.counters.dtls_connected),
        )?;
        counter(
            &mut e,
            "choir_dtls_failures",
            "DTLS handshakes failed (timeout, fingerprint mismatch, protocol)",
            self.per_shard(|s| s.counters.dtls_failures),
        )?;
        counter(
            &mut e,
            "choir_consent_timeouts",
            "Transports closed by ICE consent expiry",
            self.per_shard(|s| s.counters.consent_timeouts),
        )?;
        counter(
            &mut e,
            "choir_join_timeouts",
            "Participants removed for having no connected transport within the join timeout",
            self.per_shard(|s| s.counters.join_timeouts),
        )?;
        counter(
            &mut e,
            "choir_rooms_expired",
            "Rooms removed for having had no participant within the join timeout",
            self.per_shard(|s| s.counters.rooms_expired),
        )?;
        let drops = self.shards.iter().flat_map(|s| {
            s.counters.drops.iter().map(|((layer, reason), n)| {
                (
                    vec![
                        ("shard", s.shard.to_string()),
                        ("layer", (*layer).to_string()),
                        ("reason", (*reason).to_string()),
                    ],
                    *n,
                )
            })
        });
        counter(
            &mut e,
            "choir_drops",
            "Inputs dropped, by layer and reason",
            drops,
        )?;
        let requests = self.control.requests.iter().map(|((route, status), n)| {
            (
                vec![
                    ("route", (*route).to_string()),
                    ("status", status.to_string()),
                ],
                *n,
            )
        });
        counter(
            &mut e,
            "choir_http_requests",
            "API requests by route and status",
            requests,
        )?;
        let refusals = Limit::ALL.iter().map(|l| {
            (
                vec![("limit", l.as_str().to_string())],
                self.control.refusals.get(l).copied().unwrap_or(0),
            )
        });
        counter(
            &mut e,
            "choir_limit_refusals",
            "Requests refused by a limit",
            refusals,
        )?;
        let auth = self
            .control
            .auth_refusals
            .iter()
            .map(|(reason, n)| (vec![("reason", (*reason).to_string())], *n));
        counter(
            &mut e,
            "choir_auth_refusals",
            "Requests refused for their token (401 by reason, 403 forbidden)",
            auth,
        )?;
        gauge(
            &mut e,
            "choir_event_streams",
            "Open event streams (SSE)",
            [(vec![], self.event_streams as f64)],
        )?;
        counter(
            &mut e,
            "choir_events_delivered",
            "Events queued to event streams",
            [(vec![], self.events_delivered)],
        )?;
        counter(
            &mut e,
            "choir_event_overflows",
            "Event streams cut off for not reading",
            [(vec![], self.event_overflows)],
        )?;
        gauge(
            &mut e,
            "choir_rate_limited_clients",
            "Client addresses with a rate-limit bucket",
            [(vec![], self.rate_limited_clients as f64)],
        )?;
        gauge(
            &mut e,
            "choir_uptime_seconds",
            "Seconds since start",
            [(vec![], self.uptime_seconds as f64)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Counts;
    use crate::sfu::Counters;

    #[test]
    fn renders_labelled_families() {
        let mut counters = Counters {
            rtp_forwarded: 42,
            ..Counters::default()
        };
        counters.drop("srtp", "auth_failed");
        let mut control = ControlCounters::default();
        control.request("produce", 200);
        control.refused(Limit::RequestRate);
        let text = render(Snapshot {
            shards: vec![ShardStats {
                shard: 1,
                ports: (1, 2),
                counts: Counts {
                    rooms: 3,
                    ..Counts::default()
                },
                counters,
                loop_lag_us: 1500,
                transport_states: Default::default(),
            }],
            failed_shards: vec![0],
            control,
            ..Snapshot::default()
        });
        for line in [
            "choir_rooms{shard=\"1\"} 3.0",
            "choir_rtp_forwarded_total{shard=\"1\"} 42",
            "choir_drops_total{shard=\"1\",layer=\"srtp\",reason=\"auth_failed\"} 1",
            "choir_event_loop_lag_seconds{shard=\"1\"} 0.0015",
            "choir_shard_up{shard=\"0\"} 0.0",
            "choir_http_requests_total{route=\"produce\",status=\"200\"} 1",
            "choir_limit_refusals_total{limit=\"request_rate\"} 1",
            "choir_limit_refusals_total{limit=\"rooms\"} 0",
            "choir_transports{shard=\"1\",state=\"connected\"} 0.0",
            "# TYPE choir_drops counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("\nchoir_event_streams 0.0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
