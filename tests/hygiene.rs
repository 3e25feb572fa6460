//! Nothing lingers: join deadlines, cleanup that is never refused, bounded reads, idle
//! connections, against the real daemon over real sockets on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{bound_udp_ports, Daemon};
use serde_json::{json, Value};

fn create(channel: &str, user: &str, direction: &str) -> Value {
    json!({"channelId": channel, "userId": user, "direction": direction})
}

fn total(d: &Daemon, counter: &str) -> u64 {
    d.stats()["total"][counter].as_u64().unwrap()
}

#[test]
fn participants_that_never_connect_are_removed_after_the_join_timeout() {
    let d = Daemon::start(&["--join-timeout", "2s"]);
    assert_eq!(d.get("rtp-capabilities/r").0, 200);
    d.ok("create-transport", &create("r", "keeper", "send"));
    let events = d.events("r", "keeper");
    for user in ["u1", "u2", "u3"] {
        d.ok("create-transport", &create("r", user, "send"));
    }
    assert_eq!(d.health()["boundPorts"], 4);
    assert_eq!(bound_udp_ports(d.pid()).len(), 4);

    // The keeper keeps calling the API (its deadline restarts each time); the others are
    // removed once their last call is 2 s old.
    let start = Instant::now();
    let mut left = Vec::new();
    while left.len() < 3 && start.elapsed() < Duration::from_secs(8) {
        assert_eq!(d.get("producers/r/keeper").0, 200);
        while let Some(ev) = events.next(Duration::from_millis(200)) {
            if ev["type"] == "participantLeft" {
                assert_eq!(ev["reason"], "join timeout", "{ev}");
                left.push(ev["userId"].as_str().unwrap().to_string());
            }
        }
    }
    left.sort();
    assert_eq!(left, ["u1", "u2", "u3"]);
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "not before the deadline"
    );
    let h = d.health();
    assert_eq!(
        (h["participants"].as_u64(), h["boundPorts"].as_u64()),
        (Some(1), Some(1)),
        "{h}"
    );
    assert_eq!(
        bound_udp_ports(d.pid()).len(),
        1,
        "their sockets are closed"
    );

    // Once the keeper stops calling, it goes too, and its room with it.
    assert!(d.wait_for(Duration::from_secs(6), |d| d.health()["rooms"] == 0));
    assert_eq!(d.health()["boundPorts"], 0);
    assert!(bound_udp_ports(d.pid()).is_empty());
    assert_eq!(total(&d, "joinTimeouts"), 4);
    let (_, text) = metrics(&d, None);
    assert_eq!(
        metric_sum(&text, "choir_join_timeouts_total{"),
        4.0,
        "{text}"
    );
}

#[test]
fn rooms_nobody_joins_are_removed_after_the_join_timeout() {
    let d = Daemon::start(&["--shards", "1", "--max-rooms", "2", "--join-timeout", "1s"]);
    assert_eq!(d.get("rtp-capabilities/a").0, 200);
    assert_eq!(d.get("rtp-capabilities/b").0, 200);
    let (s, v) = d.get("rtp-capabilities/c");
    assert_eq!(s, 503, "{v}");
    assert!(d.wait_for(Duration::from_secs(5), |d| d.health()["rooms"] == 0));
    assert_eq!(d.get("rtp-capabilities/c").0, 200);
    assert_eq!(total(&d, "roomsExpired"), 2);
}

/// `GET /metrics` with an optional Accept header → (content type, text).
fn metrics(d: &Daemon, accept: Option<&str>) -> (String, String) {
    let mut req = ureq::get(&format!("{}/metrics", d.base)).timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.set("Accept", a);
    }
    let resp = req.call().expect("metrics");
    let ty = resp.header("content-type").unwrap_or_default().to_string();
    (ty, resp.into_string().unwrap())
}

/// The sum of the samples whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_choir"));
    cmd.arg("--print-config").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run choir")
}

fn effective(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = print_config(args, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_join_timeout_is_a_setting() {
    assert_eq!(effective(&[], &[])["joinTimeoutMs"], 60_000);
    assert_eq!(
        effective(&[], &[("CHOIR_JOIN_TIMEOUT", "90s")])["joinTimeoutMs"],
        90_000
    );
    assert_eq!(
        effective(&["--join-timeout", "0"], &[("CHOIR_JOIN_TIMEOUT", "90s")])["joinTimeoutMs"],
        0,
        "the flag wins; 0 = never"
    );
    let out = print_config(&[], &[("CHOIR_JOIN_TIMEOUT", "soon")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CHOIR_JOIN_TIMEOUT \"soon\""), "{err}");
}
