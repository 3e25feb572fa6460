//! `GET /metrics`: Prometheus text (format 0.0.4), or OpenMetrics 1.0 when the scraper's
//! `Accept` header asks for it (as Prometheus does: `application/openmetrics-text` ranked above
//! `text/plain`).
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
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::control::limits::Limit;
use crate::http::exposition::{counter, gauge};
use crate::shard::ShardStats;

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when `application/openmetrics-text`
    /// is acceptable (q > 0) and ranked at least as high as `text/plain` and `*/*`; otherwise
    /// the classic text format.
    pub fn negotiate(headers: &hyper::HeaderMap) -> Format {
        let (mut open_metrics, mut text) = (0.0f32, 0.0f32);
        let values = headers.get_all(hyper::header::ACCEPT);
        let ranges = values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open_metrics = open_metrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The control plane's own counters (kept on the control thread).
#[derive(Debug, Clone, Default)]
pub struct ControlCounters {
    /// Replies by (route, HTTP status).
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Refusals by limit.
    pub refusals: BTreeMap<Limit, u64>,
    /// Requests refused for their token (401) by reason, and "forbidden" (403).
    pub auth_refusals: BTreeMap<&'static str, u64>,
    /// API connections closed at once: their address already held its cap.
    pub connections_refused: u64,
    /// API connections closed for not sending a whole request head in time.
    pub header_timeouts: u64,
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
    /// Open API connections.
    pub http_connections: u64,
    pub uptime_seconds: u64,
    /// Cluster mode's counters.
    pub cluster: Option<crate::cluster::Metrics>,
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

/// Renders a snapshot in `format`.
pub fn render_as(snapshot: Snapshot, format: Format) -> String {
    let open_metrics = render(snapshot);
    match format {
        Format::OpenMetrics => open_metrics,
        Format::Text => to_text_format(&open_metrics),
    }
}

/// OpenMetrics text → Prometheus text 0.0.4. They differ, for what choir writes, in three
/// ways: a counter family is named without its `_total` suffix in OpenMetrics (`# TYPE
/// choir_drops counter`, samples `choir_drops_total`) but with it in the classic format (where
/// the metadata must name the samples' metric); `# UNIT` lines; and the `# EOF` trailer.
/// Samples, label escaping and values are the same.
fn to_text_format(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

type Result = std::result::Result<(), std::fmt::Error>;

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

impl Snapshot {
    /// The cascade's families, per shard and peer node (relay drops are `choir_drops` with
    /// layer "relay").
    fn encode_links(&self, e: &mut DescriptorEncoder<'_>) -> Result {
        use crate::sfu::cascade::PeerStats;
        let peers = || {
            self.shards
                .iter()
                .flat_map(|s| s.peers.iter().map(move |p| (s.shard.to_string(), p)))
        };
        let labels = |shard: &String, p: &PeerStats| {
            vec![("shard", shard.clone()), ("peer", p.peer.clone())]
        };
        let with = |shard: &String, p: &PeerStats, dir: &str| {
            let mut l = labels(shard, p);
            l.push(("direction", dir.to_string()));
            l
        };
        gauge(
            e,
            "choir_links",
            "Cascade links to a peer node (one per room they share)",
            peers().map(|(s, p)| (labels(&s, p), p.links as f64)),
        )?;
        gauge(
            e,
            "choir_relay_streams",
            "Streams relayed to a peer node (out: local producers, one each whatever the number of listeners there) and from it (in)",
            peers().flat_map(|(s, p)| {
                [("out", p.streams_out), ("in", p.streams_in)]
                    .map(|(d, n)| (with(&s, p, d), n as f64))
            }),
        )?;
        counter(
            e,
            "choir_relay_packets",
            "Media packets relayed to a peer node (out) and received from it (in)",
            peers().flat_map(|(s, p)| {
                [("out", p.packets_out), ("in", p.packets_in)].map(|(d, n)| (with(&s, p, d), n))
            }),
        )?;
        gauge(
            e,
            "choir_link_rtt_seconds",
            "Largest latest keepalive round-trip time of the links to a peer node (0 before a sample)",
            peers().map(|(s, p)| (labels(&s, p), p.rtt_max_us as f64 / 1e6)),
        )?;
        counter(
            e,
            "choir_link_datagrams_received",
            "Authentic datagrams received from a peer node's links",
            peers().map(|(s, p)| (labels(&s, p), p.datagrams_in)),
        )?;
        gauge(
            e,
            "choir_link_missing_datagrams",
            "Datagrams of a peer node's links missing between the lowest and highest sequence numbers received (lost, or still reordered)",
            peers().map(|(s, p)| (labels(&s, p), p.missing as f64)),
        )
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
        // Generic NACK (RFC 4585) on both legs; misses are drops with layer "nack".
        type Field = fn(&crate::sfu::Counters) -> u64;
        let nack: [(&str, &str, Field); 6] = [
            (
                "choir_nacks_received",
                "NACKs received from listeners",
                |c| c.nacks_received,
            ),
            (
                "choir_nacked_packets",
                "Packets listeners asked for in NACKs",
                |c| c.nacked_packets,
            ),
            (
                "choir_rtp_retransmitted",
                "RTP packets retransmitted to listeners",
                |c| c.rtp_retransmitted,
            ),
            ("choir_nacks_sent", "NACKs sent to speakers", |c| {
                c.nacks_sent
            }),
            (
                "choir_rtp_repaired",
                "RTP packets a speaker retransmitted after a NACK from choir",
                |c| c.rtp_repaired,
            ),
            (
                "choir_rtp_recovered",
                "RTP packets recovered from a RED speaker's redundancy",
                |c| c.rtp_recovered,
            ),
        ];
        for (name, help, field) in nack {
            counter(&mut e, name, help, self.per_shard(|s| field(&s.counters)))?;
        }
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
        let speaking = self.shards.iter().flat_map(|s| {
            [
                ("on", s.counters.speaking_started),
                ("off", s.counters.speaking_stopped),
            ]
            .map(|(to, n)| {
                (
                    vec![("shard", s.shard.to_string()), ("to", to.to_string())],
                    n,
                )
            })
        });
        counter(
            &mut e,
            "choir_speaking_transitions",
            "Producers that started (to=on) or stopped (to=off) speaking",
            speaking,
        )?;
        counter(
            &mut e,
            "choir_dominant_speaker_changes",
            "Changes of a room's dominant speaker",
            self.per_shard(|s| s.counters.dominant_changes),
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
        self.encode_links(&mut e)?;
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
            "choir_http_connections",
            "Open API connections",
            [(vec![], self.http_connections as f64)],
        )?;
        counter(
            &mut e,
            "choir_http_connections_refused",
            "API connections closed at once: their client address held its connection cap",
            [(vec![], self.control.connections_refused)],
        )?;
        counter(
            &mut e,
            "choir_http_header_timeouts",
            "API connections closed for not sending a whole request head within the header timeout",
            [(vec![], self.control.header_timeouts)],
        )?;
        gauge(
            &mut e,
            "choir_uptime_seconds",
            "Seconds since start",
            [(vec![], self.uptime_seconds as f64)],
        )?;
        if let Some(cluster) = &self.cluster {
            cluster.encode(&mut e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
