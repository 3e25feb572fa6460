//! Auth, limits, metrics and logs, against the real daemon on loopback.

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, SystemTime};

use choir::control::auth::{claims, Secret};
use common::Daemon;
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

fn secret() -> Secret {
    Secret::new(SECRET.as_bytes()).unwrap()
}

fn token(channel: &str, user: &str) -> String {
    secret().mint(&claims(
        channel,
        user,
        Duration::from_secs(600),
        SystemTime::now(),
    ))
}

/// A request with an optional bearer token → (status, JSON body, WWW-Authenticate).
fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let url = if path.starts_with('/') {
        format!("{}{}", d.base, path)
    } else {
        d.url(path)
    };
    let mut req = ureq::request(method, &url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let www = resp.header("www-authenticate").map(String::from);
    let mut text = String::new();
    resp.into_reader()
        .take(1 << 20)
        .read_to_string(&mut text)
        .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        www,
    )
}

fn metrics(d: &Daemon) -> String {
    let (status, body, _) = call(d, "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    body.as_str().unwrap().to_string()
}

/// The value of the sample `line_prefix` (name and labels) in a metrics text.
fn sample(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
}

fn create(channel: &str, user: &str, direction: &str) -> Value {
    json!({"channelId": channel, "userId": user, "direction": direction})
}

#[test]
fn with_a_secret_every_voice_route_needs_a_token_for_its_room_and_user() {
    let d = Daemon::start_with(&[], &[("CHOIR_AUTH_SECRET", SECRET)]);
    let alice = token("room", "alice");

    // Health and metrics stay open.
    assert_eq!(call(&d, "GET", "health", None, None).0, 200);
    assert_eq!(call(&d, "GET", "/metrics", None, None).0, 200);

    // No token: 401 with a Bearer challenge, on every voice route.
    let (s, v, www) = call(&d, "GET", "rtp-capabilities/room", None, None);
    assert_eq!((s, www.as_deref()), (401, Some("Bearer")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("missing token"));
    for (method, path, body) in [
        (
            "POST",
            "create-transport",
            Some(create("room", "alice", "send")),
        ),
        (
            "POST",
            "leave",
            Some(json!({"channelId":"room","userId":"alice"})),
        ),
        ("GET", "producers/room/alice", None),
        ("GET", "events/room/alice", None),
    ] {
        let (s, v, _) = call(&d, method, path, None, body.as_ref());
        assert_eq!(s, 401, "{method} {path}: {v}");
    }

    // The right token: the plan's flow works.
    let (s, v, _) = call(&d, "GET", "rtp-capabilities/room", Some(&alice), None);
    assert_eq!(s, 200, "{v}");
    let body = create("room", "alice", "send");
    let (s, v, _) = call(&d, "POST", "create-transport", Some(&alice), Some(&body));
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = call(&d, "GET", "producers/room/alice", Some(&alice), None);
    assert_eq!(s, 200);

    // Another room or another user, in the path or the body: 403.
    let (s, v, _) = call(&d, "GET", "rtp-capabilities/other", Some(&alice), None);
    assert_eq!(s, 403, "{v}");
    let body = create("room", "bob", "send");
    let (s, v, _) = call(&d, "POST", "create-transport", Some(&alice), Some(&body));
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("userId"), "{v}");
    let body = create("other", "alice", "send");
    assert_eq!(
        call(&d, "POST", "create-transport", Some(&alice), Some(&body)).0,
        403
    );
    assert_eq!(
        call(&d, "GET", "producers/room/bob", Some(&alice), None).0,
        403
    );
    let body = json!({"channelId":"room","userId":"bob"});
    assert_eq!(call(&d, "POST", "leave", Some(&alice), Some(&body)).0, 403);

    // Forged (another secret), tampered, expired, other algorithm: 401.
    let forged = Secret::new(b"another secret that is 32 bytes long")
        .unwrap()
        .mint(&claims(
            "room",
            "alice",
            Duration::from_secs(600),
            SystemTime::now(),
        ));
    let expired = secret().mint(&claims(
        "room",
        "alice",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(3600),
    ));
    let mut tampered = alice.clone();
    tampered.pop();
    tampered.push(if alice.ends_with('A') { 'B' } else { 'A' });
    for (bad, why) in [
        (forged.as_str(), "signature"),
        (tampered.as_str(), "signature"),
        (expired.as_str(), "expired"),
        ("eyJhbGciOiJub25lIn0.e30.", "algorithm"),
        ("not-a-token", "malformed"),
    ] {
        let (s, v, _) = call(&d, "GET", "rtp-capabilities/room", Some(bad), None);
        assert_eq!(s, 401, "{why}: {v}");
    }

    // EventSource cannot send headers: the event stream takes ?token= too.
    let resp = ureq::get(&d.url(&format!("events/room/alice?token={alice}")))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("event stream with a query token");
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let err = ureq::get(&d.url(&format!("events/room/bob?token={alice}"))).call();
    assert!(matches!(err, Err(ureq::Error::Status(403, _))));
    // ... but only there.
    let (s, _, _) = call(
        &d,
        "GET",
        &format!("producers/room/alice?token={alice}"),
        None,
        None,
    );
    assert_eq!(s, 401);

    let text = metrics(&d);
    assert!(
        sample(&text, "choir_auth_refusals_total{reason=\"forbidden\"}").unwrap() >= 6.0,
        "{text}"
    );
    assert!(sample(&text, "choir_auth_refusals_total{reason=\"expired\"}").unwrap() >= 1.0);
    assert!(
        !d.logs().iter().any(|l| l.contains("NO AUTH")),
        "no open-API warning with a secret"
    );
    drop(resp);
}

#[test]
fn without_a_secret_choir_warns_that_the_api_is_open() {
    let d = Daemon::start(&[]);
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        let _ = d.health();
        true
    }));
    std::thread::sleep(Duration::from_millis(100));
    let logs = d.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("NO AUTH")),
        "{logs:#?}"
    );
}

#[test]
fn the_secret_can_come_from_a_file_and_a_short_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("choir-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let d = Daemon::start(&["--auth-secret-file", file.to_str().unwrap()]);
    let t = token("f", "u");
    assert_eq!(call(&d, "GET", "rtp-capabilities/f", Some(&t), None).0, 200);
    assert_eq!(call(&d, "GET", "rtp-capabilities/f", None, None).0, 401);
    drop(d);

    let out = Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--auth-secret", "too-short", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth-secret") && err.contains("32 bytes"),
        "{err}"
    );
    assert!(
        !err.contains("too-short"),
        "the secret is not echoed: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn choir_token_mints_a_token_the_daemon_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["token", "--channel", "c1", "--user", "u1", "--ttl", "10m"])
        .env("CHOIR_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let c = secret().verify(&token, SystemTime::now()).unwrap();
    assert_eq!((c.channel_id.as_str(), c.user_id.as_str()), ("c1", "u1"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 610).contains(&c.exp));

    let out = Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["token", "--channel", "c1", "--user", "u1"])
        .env_remove("CHOIR_AUTH_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn metrics_token_guards_metrics_and_stats() {
    let d = Daemon::start(&["--metrics-token", "scrape-me"]);
    let (s, _, www) = call(&d, "GET", "/metrics", None, None);
    assert_eq!((s, www.as_deref()), (401, Some("Bearer")));
    assert_eq!(call(&d, "GET", "stats", None, None).0, 401);
    assert_eq!(call(&d, "GET", "/metrics", Some("wrong"), None).0, 401);
    assert_eq!(call(&d, "GET", "/metrics", Some("scrape-me"), None).0, 200);
    assert_eq!(call(&d, "GET", "stats", Some("scrape-me"), None).0, 200);
    assert_eq!(call(&d, "GET", "health", None, None).0, 200);
}

#[test]
fn the_request_rate_per_client_address_is_limited() {
    let d = Daemon::start(&["--rate-limit", "2", "--rate-burst", "5"]);
    let statuses: Vec<u16> = (0..8)
        .map(|_| call(&d, "GET", "rtp-capabilities/r", None, None).0)
        .collect();
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    let (s, v, _) = call(&d, "GET", "rtp-capabilities/r", None, None);
    assert_eq!(s, 429, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too many requests"));
    // Health and metrics are not limited.
    assert_eq!(call(&d, "GET", "health", None, None).0, 200);
    let text = metrics(&d);
    assert!(sample(&text, "choir_limit_refusals_total{limit=\"request_rate\"}").unwrap() >= 3.0);
    assert!(
        sample(
            &text,
            "choir_http_requests_total{route=\"rtp-capabilities\",status=\"429\"}"
        )
        .unwrap()
            >= 3.0,
        "{text}"
    );
    // The bucket refills (2/s).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(call(&d, "GET", "rtp-capabilities/r", None, None).0, 200);
}

#[test]
fn rooms_participants_and_event_streams_are_limited() {
    let d = Daemon::start(&[
        "--shards",
        "1",
        "--max-rooms",
        "2",
        "--max-room-participants",
        "2",
        "--max-event-streams-per-user",
        "2",
    ]);
    assert_eq!(d.get("rtp-capabilities/a").0, 200);
    assert_eq!(d.get("rtp-capabilities/b").0, 200);
    assert_eq!(
        d.get("rtp-capabilities/a").0,
        200,
        "an existing room is fine"
    );
    let (s, v) = d.get("rtp-capabilities/c");
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("room limit"), "{v}");

    d.ok("create-transport", &create("a", "alice", "send"));
    d.ok("create-transport", &create("a", "bob", "send"));
    let (s, v) = d.post("create-transport", &create("a", "carol", "send"));
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("full"), "{v}");
    // A participant already in the room gets its second transport.
    d.ok("create-transport", &create("a", "alice", "recv"));
    // Once someone leaves, there is room again.
    d.ok("leave", &json!({"channelId":"a","userId":"bob"}));
    d.ok("create-transport", &create("a", "carol", "send"));

    let s1 = ureq::get(&d.url("events/a/alice")).call().unwrap();
    let s2 = ureq::get(&d.url("events/b/alice")).call().unwrap();
    let third = ureq::get(&d.url("events/a/alice")).call();
    match third {
        Err(ureq::Error::Status(429, r)) => {
            let v: Value = r.into_json().unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("event streams"),
                "{v}"
            );
        }
        other => panic!("third stream: {other:?}"),
    }
    assert!(ureq::get(&d.url("events/a/carol")).call().is_ok());

    let text = metrics(&d);
    for (limit, n) in [
        ("rooms", 1.0),
        ("room_participants", 1.0),
        ("event_streams", 1.0),
        ("request_rate", 0.0),
    ] {
        assert_eq!(
            sample(
                &text,
                &format!("choir_limit_refusals_total{{limit=\"{limit}\"}}")
            ),
            Some(n),
            "{limit}"
        );
    }
    drop((s1, s2));
}

#[test]
fn metrics_report_rooms_transports_traffic_drops_and_requests() {
    let d = Daemon::start(&[]);
    d.get("rtp-capabilities/m");
    let t = d.ok("create-transport", &create("m", "alice", "send"));
    d.ok("create-transport", &create("m", "alice", "recv"));
    // Garbage to the transport's port: counted as a drop.
    let port = t["iceCandidates"][0]["port"].as_u64().unwrap() as u16;
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        udp.send_to(&[0xff; 40], ("127.0.0.1", port)).unwrap();
    }
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        d.stats()["total"]["drops"]["datagram.not_webrtc"] == 3
    }));
    let text = metrics(&d);
    let total = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(total("choir_rooms{"), 1.0, "{text}");
    assert_eq!(total("choir_participants{"), 1.0);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("choir_transports{") && l.contains("state=\"new\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>(),
        2.0,
        "{text}"
    );
    assert_eq!(total("choir_datagrams_received_total{"), 3.0);
    assert_eq!(total("choir_received_bytes_total{"), 120.0);
    assert_eq!(total("choir_drops_total{"), 3.0);
    assert!(
        text.contains("layer=\"datagram\",reason=\"not_webrtc\"} 3"),
        "{text}"
    );
    for name in [
        "choir_shard_up{shard=\"0\"} 1",
        "choir_shard_up{shard=\"1\"} 1",
        "choir_event_loop_lag_seconds{shard=\"0\"}",
        "choir_event_loop_lag_seconds{shard=\"1\"}",
        "choir_sent_bytes_total{",
        "choir_rtp_forwarded_total{",
        "choir_dtls_failures_total{",
        "choir_consent_timeouts_total{",
        "choir_http_requests_total{route=\"create-transport\",status=\"200\"} 2",
        "choir_limit_refusals_total{limit=\"rooms\"} 0",
        "choir_event_streams 0",
        // The classic text format (no Accept header; OpenMetrics: tests/hygiene.rs).
        "# TYPE choir_drops_total counter",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
    // Unknown paths are one label, not the client's text.
    call(&d, "GET", "no-such-route-42", None, None);
    assert!(metrics(&d).contains("choir_http_requests_total{route=\"unknown\",status=\"404\"} 1"));
}

#[test]
fn json_logs_carry_room_and_user_fields() {
    let d = Daemon::start(&["--log-format", "json"]);
    d.get("rtp-capabilities/logs");
    d.ok("create-transport", &create("logs", "alice", "send"));
    std::thread::sleep(Duration::from_millis(200));
    let lines: Vec<Value> = d
        .logs()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines
        .iter()
        .any(|v| v["message"] == "choir ready" && v["level"] == "INFO"));
    assert!(
        lines.iter().any(|v| v["message"] == "room created"
            && v["channel"] == "logs"
            && v["span"]["name"] == "shard"
            && v["span"]["index"].is_u64()),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|v| v["message"] == "participant joined"
        && v["channel"] == "logs"
        && v["user"] == "alice"));
    assert!(lines
        .iter()
        .any(|v| v["message"] == "transport created" && v["transport"].is_string()));
}
