//! Nothing lingers: join deadlines, cleanup that is never refused, a refused request that holds
//! nothing, the start-up checks (the API port, the announced address, a closed stderr), against
//! the real daemon over real sockets on loopback. Bounded reads and idle connections:
//! tests/hygiene_net.rs.

mod common;
#[path = "common/print_config.rs"]
mod print_config;

use std::time::{Duration, Instant};

use common::{bound_udp_ports, Daemon};
use print_config::{effective, print_config};
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
    let (_, text) = d.metrics(None);
    assert_eq!(
        common::metric_sum(&text, "choir_join_timeouts_total{"),
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

#[test]
fn the_http_limits_are_settings() {
    let limits = |args: &[&str], env: &[(&str, &str)]| effective(args, env)["limits"].clone();
    let l = limits(&[], &[]);
    assert_eq!(
        (
            l["maxConnectionsPerIp"].as_u64(),
            l["headerTimeoutMs"].as_u64()
        ),
        (Some(256), Some(30_000))
    );
    let env = [
        ("CHOIR_MAX_CONNECTIONS_PER_IP", "10"),
        ("CHOIR_HEADER_TIMEOUT", "5s"),
    ];
    let l = limits(&[], &env);
    assert_eq!(
        (
            l["maxConnectionsPerIp"].as_u64(),
            l["headerTimeoutMs"].as_u64()
        ),
        (Some(10), Some(5_000))
    );
    let l = limits(
        &["--max-connections-per-ip", "0", "--header-timeout", "500ms"],
        &env,
    );
    assert_eq!(
        (
            l["maxConnectionsPerIp"].as_u64(),
            l["headerTimeoutMs"].as_u64()
        ),
        (Some(0), Some(500))
    );
    for (env, named) in [
        (
            ("CHOIR_MAX_CONNECTIONS_PER_IP", "many"),
            "CHOIR_MAX_CONNECTIONS_PER_IP \"many\"",
        ),
        (("CHOIR_HEADER_TIMEOUT", "0"), "CHOIR_HEADER_TIMEOUT \"0\""),
    ] {
        let out = print_config(&[], &[env]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(named), "{err}");
    }
}

// --- Start-up: the API port, the announced address, a closed stderr -----------------------

#[test]
fn a_second_choir_on_the_same_api_port_exits_1_with_one_line() {
    let first = Daemon::start(&[]);
    let addr = first.base.trim_start_matches("http://").to_string();
    let out = common::choir_command(
        &["--listen", &addr, "--shards", "1", "--log", "off"],
        common::port_range(common::RTC_PORTS),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("choir: cannot listen on ") && err.contains("already in use"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "it never reported an address");
    // The first one still answers every request (no second listener shares the port).
    for _ in 0..20 {
        assert_eq!(first.get("health").0, 200);
    }
}

#[test]
fn announcing_loopback_while_binding_a_wildcard_address_warns() {
    let d = Daemon::start(&["--rtc-listen-ip", "0.0.0.0", "--announced-ip", "127.0.0.1"]);
    let _ = d.health();
    let logs = d.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("ANNOUNCED IP IS LOOPBACK")),
        "{logs:#?}"
    );
    drop(d);
    let d = Daemon::start(&[]);
    let _ = d.health();
    assert!(
        !d.logs()
            .iter()
            .any(|l| l.contains("ANNOUNCED IP IS LOOPBACK")),
        "not for 127.0.0.1 bound"
    );
}

#[test]
fn choir_survives_a_closed_stderr() {
    let mut child = common::choir_command(&[], common::port_range(common::RTC_PORTS))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stderr any more: every log line from now on meets EPIPE.
    drop(child.stderr.take());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("choir listening on ")
        .expect(&line)
        .to_string();
    for i in 0..20 {
        let channel = format!("c{i}");
        let r = ureq::get(&format!("{base}/api/voice/rtp-capabilities/{channel}")).call();
        assert!(r.is_ok(), "request {i}: {r:?}");
        let r = ureq::post(&format!("{base}/api/voice/create-transport"))
            .send_json(create(&channel, "u", "send"));
        assert!(r.is_ok(), "request {i}: {r:?}");
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "choir did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

// --- Cleanup is never refused; a refused request holds nothing ---------------------------

#[test]
fn leave_is_never_rate_limited_and_churn_leaves_nothing_behind() {
    // The default limits (100 requests/s, burst 200), one client address.
    let d = Daemon::start(&["--rate-limit", "100", "--rate-burst", "200"]);
    let fds = common::open_fds(d.pid());
    let (mut refused, mut with_retry_after, mut leaves) = (0, 0, 0);
    for i in 0..200 {
        let user = format!("u{i}");
        for (method, path, body) in [
            ("GET", "rtp-capabilities/churn".to_string(), None),
            (
                "POST",
                "create-transport".into(),
                Some(create("churn", &user, "send")),
            ),
            (
                "POST",
                "create-transport".into(),
                Some(create("churn", &user, "recv")),
            ),
        ] {
            let (status, retry_after) = request(&d, method, &path, body.as_ref());
            if status == 429 {
                refused += 1;
                with_retry_after +=
                    usize::from(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()));
            }
        }
        let (status, _) = request(
            &d,
            "POST",
            "leave",
            Some(&json!({"channelId": "churn", "userId": user})),
        );
        assert!(status == 200 || status == 404, "leave {i}: {status}");
        leaves += 1;
    }
    assert!(refused > 0, "the joins ran into the rate limit");
    assert_eq!(with_retry_after, refused, "every 429 carries Retry-After");
    assert_eq!(leaves, 200);
    let h = d.health();
    assert_eq!(
        (
            h["participants"].as_u64(),
            h["boundPorts"].as_u64(),
            h["transports"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{h}"
    );
    assert!(bound_udp_ports(d.pid()).is_empty());
    assert!(
        d.wait_for(Duration::from_secs(5), |d| common::open_fds(d.pid()) <= fds),
        "fds back to {fds}: {}",
        common::open_fds(d.pid())
    );
}

#[test]
fn a_create_transport_refused_mid_way_holds_nothing() {
    // One shard with two RTC ports: the third transport finds no port after its checks passed.
    let (min, max) = common::port_range(2);
    let (min, max) = (min.to_string(), max.to_string());
    let d = Daemon::start(&[
        "--shards",
        "1",
        "--rtc-min-port",
        &min,
        "--rtc-max-port",
        &max,
    ]);
    d.get("rtp-capabilities/r");
    d.ok("create-transport", &create("r", "a", "send"));
    d.ok("create-transport", &create("r", "b", "send"));
    let (s, v) = d.post("create-transport", &create("r", "c", "send"));
    assert_eq!(s, 503, "{v}");
    let h = d.health();
    assert_eq!(
        (h["participants"].as_u64(), h["boundPorts"].as_u64()),
        (Some(2), Some(2)),
        "{h}"
    );
    let (s, v) = d.post("leave", &json!({"channelId": "r", "userId": "c"}));
    assert_eq!(s, 404, "c was never made: {v}");
    d.ok("leave", &json!({"channelId": "r", "userId": "a"}));
    d.ok("create-transport", &create("r", "c", "send"));
    assert_eq!(bound_udp_ports(d.pid()).len(), 2);
}

/// A request through a fresh connection → (status, Retry-After).
fn request(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Option<String>) {
    let req = ureq::request(method, &d.url(path)).timeout(Duration::from_secs(10));
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            (r.status(), r.header("retry-after").map(String::from))
        }
        Err(e) => panic!("{method} {path}: {e}"),
    }
}
