//! Faults against the real daemon: a shard that panics takes the process down (non-zero exit,
//! for systemd to restart it) after reporting itself; SIGTERM under media load drains cleanly.

mod common;

use std::time::{Duration, Instant};

use common::peer::{run, run_until, JoinOptions, Peer};
use common::Daemon;
use serde_json::json;

#[test]
fn a_panicking_shard_is_reported_and_the_process_exits_non_zero() {
    let d = Daemon::start_with(&[], &[("CHOIR_TEST_FAULTS", "1")]);
    assert_eq!(d.get("rtp-capabilities/x").0, 200);
    let started = Instant::now();
    let (status, v) = d.post("test/panic-shard/0", &json!({}));
    assert_eq!(status, 503, "{v}");
    // Health turns unhealthy at once, naming the shard.
    let (status, h) = d.get("health");
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "unhealthy");
    assert_eq!(h["failedShards"], json!([0]));
    // The scrape says so too.
    let text = ureq::get(&format!("{}/metrics", d.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("choir_shard_up{shard=\"0\"} 0"), "{text}");
    assert!(text.contains("choir_shard_up{shard=\"1\"} 1"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    let logs = d.logs();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits on its own");
    assert_eq!(
        status.code(),
        Some(1),
        "non-zero so that systemd restarts it"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        logs.iter()
            .any(|l| l.contains("ERROR") && l.contains("panic") && l.contains("test fault")),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("shard stopped unexpectedly")),
        "{logs:#?}"
    );
}

#[test]
fn the_fault_route_is_off_by_default() {
    let d = Daemon::start(&[]);
    let (status, _) = d.post("test/panic-shard/0", &json!({}));
    assert_eq!(status, 404);
    assert_eq!(d.health()["status"], "ok");
}

#[test]
fn sigterm_under_media_load_drains_and_exits_zero_within_5_s() {
    let d = Daemon::start(&[]);
    let mut peers: Vec<Peer> = (0..6u8)
        .map(|i| {
            let room = if i < 3 { "load-a" } else { "load-b" };
            Peer::join(&d, room, &format!("u{i}"), i + 1, JoinOptions::default())
        })
        .collect();
    for p in &mut peers {
        assert_eq!(p.consume_existing(&d), 2);
    }
    assert!(
        run_until(&mut peers, Duration::from_secs(15), |ps| ps
            .iter()
            .all(Peer::is_connected)),
        "peers connect"
    );
    assert!(
        run_until(&mut peers, Duration::from_secs(15), |ps| ps
            .iter()
            .all(|p| p.got.values().map(Vec::len).sum::<usize>() >= 25)),
        "media flows to everyone: {}",
        d.stats()["total"]
    );
    let sse = ureq::get(&d.url("events/load-a/u0")).call().unwrap();

    // Keep sending while choir stops.
    let pid = d.pid();
    let load = std::thread::spawn(move || {
        run(&mut peers, Duration::from_secs(3));
        peers
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = d
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert_eq!(status.code(), Some(0), "pid {pid}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = load.join();
    drop(sse);
}
