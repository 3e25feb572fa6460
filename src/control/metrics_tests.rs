//! Tests of the `/metrics` encoding (src/control/metrics.rs).

use super::*;
use crate::sfu::api::Counts;
use crate::sfu::Counters;

#[test]
fn renders_labelled_families() {
    let mut counters = Counters {
        rtp_forwarded: 42,
        speaking_started: 2,
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
            loop_turns: 0,
            loop_parks: 0,
            loop_yields: 0,
            loop_unheard: 0,
            transport_states: Default::default(),
            link_port: 0,
            peers: vec![crate::sfu::cascade::PeerStats {
                peer: "node-2".into(),
                links: 1,
                streams_out: 1,
                streams_in: 2,
                packets_out: 7,
                rtt_max_us: 40_000,
                ..Default::default()
            }],
        }],
        failed_shards: vec![0],
        control,
        ..Snapshot::default()
    });
    for line in [
        "choir_rooms{shard=\"1\"} 3.0",
        "choir_rtp_forwarded_total{shard=\"1\"} 42",
        "choir_speaking_transitions_total{shard=\"1\",to=\"on\"} 2",
        "choir_dominant_speaker_changes_total{shard=\"1\"} 0",
        "choir_drops_total{shard=\"1\",layer=\"srtp\",reason=\"auth_failed\"} 1",
        "choir_event_loop_lag_seconds{shard=\"1\"} 0.0015",
        "choir_shard_up{shard=\"0\"} 0.0",
        "choir_http_requests_total{route=\"produce\",status=\"200\"} 1",
        "choir_limit_refusals_total{limit=\"request_rate\"} 1",
        "choir_limit_refusals_total{limit=\"rooms\"} 0",
        "choir_transports{shard=\"1\",state=\"connected\"} 0.0",
        "# TYPE choir_drops counter",
        "choir_links{shard=\"1\",peer=\"node-2\"} 1.0",
        "choir_relay_streams{shard=\"1\",peer=\"node-2\",direction=\"out\"} 1.0",
        "choir_relay_streams{shard=\"1\",peer=\"node-2\",direction=\"in\"} 2.0",
        "choir_relay_packets_total{shard=\"1\",peer=\"node-2\",direction=\"out\"} 7",
        "choir_link_rtt_seconds{shard=\"1\",peer=\"node-2\"} 0.04",
        "choir_link_missing_datagrams{shard=\"1\",peer=\"node-2\"} 0.0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("\nchoir_event_streams 0.0\n"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn the_classic_format_names_counters_with_their_suffix_and_has_no_trailer() {
    let mut control = ControlCounters::default();
    control.request("produce", 200);
    let snapshot = Snapshot {
        control,
        ..Snapshot::default()
    };
    let text = render_as(snapshot.clone(), Format::Text);
    assert!(text.contains("# HELP choir_http_requests_total API requests"));
    assert!(text.contains("# TYPE choir_http_requests_total counter\n"));
    assert!(text.contains("choir_http_requests_total{route=\"produce\",status=\"200\"} 1\n"));
    assert!(text.contains("# TYPE choir_event_streams gauge\n"));
    assert!(!text.contains("# EOF"));
    let open_metrics = render_as(snapshot, Format::OpenMetrics);
    assert!(open_metrics.contains("# TYPE choir_http_requests counter\n"));
    assert!(open_metrics.ends_with("# EOF\n"));
}

#[test]
fn accept_header_negotiation() {
    let format = |accept: &[&str]| {
        let mut headers = hyper::HeaderMap::new();
        for a in accept {
            headers.append(hyper::header::ACCEPT, a.parse().unwrap());
        }
        Format::negotiate(&headers)
    };
    assert_eq!(format(&[]), Format::Text);
    assert_eq!(format(&["*/*"]), Format::Text);
    assert_eq!(format(&["text/plain; version=0.0.4"]), Format::Text);
    assert_eq!(
        format(&["application/openmetrics-text"]),
        Format::OpenMetrics
    );
    assert_eq!(
        format(&["APPLICATION/OpenMetrics-Text; q=0.3"]),
        Format::OpenMetrics
    );
    assert_eq!(format(&["application/openmetrics-text;q=0"]), Format::Text);
    assert_eq!(
        format(&["text/plain;q=0.9", "application/openmetrics-text;q=0.5"]),
        Format::Text
    );
    assert_eq!(
        format(&["application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"]),
        Format::OpenMetrics
    );
}
