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

/// Reads until the peer closes (or the read timeout); returns what came and whether it closed.
fn read_to_close(stream: &mut std::net::TcpStream) -> (String, bool) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
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
    let (min, max) = common::port_range(common::RTC_PORTS);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args([
            "--listen",
            &addr,
            "--announced-ip",
            "127.0.0.1",
            "--rtc-listen-ip",
            "127.0.0.1",
        ])
        .args([
            "--rtc-min-port",
            &min.to_string(),
            "--rtc-max-port",
            &max.to_string(),
        ])
        .args(["--shards", "1", "--pin", "false", "--log", "off"])
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
    let (min, max) = common::port_range(common::RTC_PORTS);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--announced-ip",
            "127.0.0.1",
            "--rtc-listen-ip",
            "127.0.0.1",
        ])
        .args([
            "--rtc-min-port",
            &min.to_string(),
            "--rtc-max-port",
            &max.to_string(),
        ])
        .args([
            "--shards",
            "2",
            "--pin",
            "false",
            "--log",
            "choir=debug",
            "--rate-limit",
            "0",
        ])
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

// --- Bounded reads, idle and slow connections ---------------------------------------------

fn addr(d: &Daemon) -> std::net::SocketAddr {
    d.base.trim_start_matches("http://").parse().unwrap()
}

/// A raw connection to the API from `from` (any 127.0.0.0/8 address: each is its own client).
fn connect_from(d: &Daemon, from: [u8; 4]) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .unwrap();
    socket.connect(&addr(d).into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn a_body_declared_too_large_gets_413_at_once_and_the_connection_closes() {
    use std::io::Write;
    let d = Daemon::start(&[]);
    let mut s = connect_from(&d, [127, 0, 0, 1]);
    let started = Instant::now();
    s.write_all(
        b"POST /api/voice/create-transport HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"channelId\":",
    )
    .unwrap();
    let (reply, closed) = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(reply.contains("larger than 65536 bytes"), "{reply}");
    assert!(closed, "the connection closes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Found while reading (chunked, no length): refused as soon as it passes 64 KiB.
    let mut s = connect_from(&d, [127, 0, 0, 1]);
    s.write_all(
        b"POST /api/voice/produce HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let (reply, closed) = read_to_close(&mut s);
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(closed);
    // Forty clients that declare 100 MB and stall hold nothing: each is answered and closed.
    let mut stalled: Vec<_> = (0..40)
        .map(|_| {
            let mut s = connect_from(&d, [127, 0, 0, 1]);
            s.write_all(
                b"POST /api/voice/leave HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
            )
            .unwrap();
            s
        })
        .collect();
    for s in &mut stalled {
        let (reply, closed) = read_to_close(s);
        assert!(reply.starts_with("HTTP/1.1 413 ") && closed, "{reply}");
    }
    assert_eq!(d.health()["status"], "ok");
}

#[test]
fn clients_that_do_not_send_a_whole_request_head_in_time_are_closed() {
    use std::io::Write;
    let d = Daemon::start(&["--header-timeout", "1s"]);
    let started = Instant::now();
    let mut slow: Vec<_> = (0..5)
        .map(|_| {
            let mut s = connect_from(&d, [127, 0, 0, 1]);
            s.write_all(b"GET /api/voice/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // An idle connection (nothing sent) and a keep-alive one after its first exchange, too.
    let mut idle = connect_from(&d, [127, 0, 0, 1]);
    let mut kept = connect_from(&d, [127, 0, 0, 1]);
    kept.write_all(b"GET /api/voice/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Meanwhile, a client that sends its request gets its answer.
    assert_eq!(d.get("health").0, 200);
    for s in slow.iter_mut().chain([&mut idle]) {
        let (reply, closed) = read_to_close(s);
        assert!(closed && reply.is_empty(), "{reply:?}");
    }
    let (reply, closed) = read_to_close(&mut kept);
    assert!(closed && reply.starts_with("HTTP/1.1 200 "), "{reply:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let (_, text) = metrics(&d, None);
    assert_eq!(
        metric_sum(&text, "choir_http_header_timeouts_total"),
        7.0,
        "{text}"
    );
}

#[test]
fn api_connections_per_client_address_are_capped() {
    let d = Daemon::start(&["--max-connections-per-ip", "4"]);
    let held: Vec<_> = (0..4).map(|_| connect_from(&d, [127, 0, 0, 7])).collect();
    // The fifth from that address is closed at once; another address is served.
    let mut fifth = connect_from(&d, [127, 0, 0, 7]);
    let (reply, closed) = read_to_close(&mut fifth);
    assert!(closed && reply.is_empty(), "{reply:?}");
    assert_eq!(get_from(&d, [127, 0, 0, 8], "/api/voice/health").0, 200);
    let (_, text) = metrics(&d, None);
    assert_eq!(
        metric_sum(&text, "choir_http_connections_refused_total"),
        1.0,
        "{text}"
    );
    // Four held, plus the scrape's own connection while it is answered (once the server has
    // seen the earlier ones close).
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        metric_sum(&metrics(d, None).1, "choir_http_connections ") == 5.0
    }));
    drop(held);
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        get_from(d, [127, 0, 0, 7], "/api/voice/health").0 == 200
    }));
}

/// GET over a raw connection from `from`, `Connection: close` → (status, whole reply).
fn get_from(d: &Daemon, from: [u8; 4], path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = connect_from(d, from);
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (reply, _) = read_to_close(&mut s);
    let status = reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, reply)
}

#[test]
fn event_stream_refusals_carry_retry_after_and_a_closed_stream_frees_its_place() {
    let d = Daemon::start(&["--max-event-streams-per-user", "1"]);
    d.get("rtp-capabilities/e");
    let first = ureq::get(&d.url("events/e/alice")).call().unwrap();
    match ureq::get(&d.url("events/e/alice")).call() {
        Err(ureq::Error::Status(429, r)) => assert_eq!(r.header("retry-after"), Some("1")),
        other => panic!("second stream: {other:?}"),
    }
    drop(first);
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        ureq::get(&d.url("events/e/alice")).call().is_ok()
    }));
}

// --- /metrics content negotiation ----------------------------------------------------------

/// A structural lint of an exposition (what promtool's checks come down to for choir's
/// output): every sample's metric has `# HELP` and `# TYPE` lines before it, naming it exactly
/// (classic format) or its family (OpenMetrics: counters' samples end in `_total`, the family
/// does not), each family once and contiguous; OpenMetrics ends with `# EOF`.
fn lint(text: &str, open_metrics: bool) {
    let mut families: Vec<(String, String)> = Vec::new(); // (name, type)
    let mut helped = std::collections::HashSet::new();
    let mut ended = false;
    for line in text.lines() {
        assert!(!ended, "nothing after # EOF: {line}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP {name} twice");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "TYPE {name} without HELP");
            assert!(
                families.iter().all(|(n, _)| n != name),
                "family {name} twice"
            );
            if !open_metrics && ty == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "classic counter {name} names its samples"
                );
            }
            if open_metrics && ty == "counter" {
                assert!(
                    !name.ends_with("_total"),
                    "OpenMetrics counter family {name}"
                );
            }
            families.push((name.to_string(), ty.to_string()));
        } else if line == "# EOF" {
            assert!(open_metrics, "# EOF in the classic format");
            ended = true;
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, ty) = families.last().expect("a sample before any TYPE");
            let expected = if open_metrics && ty == "counter" {
                format!("{family}_total")
            } else {
                family.clone()
            };
            assert_eq!(name, expected, "sample outside its family: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "value of {line}");
        }
    }
    assert_eq!(ended, open_metrics, "# EOF ends OpenMetrics only");
    assert!(families.len() > 30, "{}", families.len());
}

#[test]
fn metrics_speak_the_classic_text_format_unless_openmetrics_is_asked_for() {
    let d = Daemon::start(&[]);
    d.get("rtp-capabilities/m");
    d.ok("create-transport", &create("m", "alice", "send"));
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for (accept, open_metrics) in [
        (None, false),
        (Some("*/*"), false),
        (Some("text/plain;version=0.0.4"), false),
        (
            Some("text/plain;q=1, application/openmetrics-text;q=0.5"),
            false,
        ),
        (Some("application/openmetrics-text;q=0"), false),
        (Some("application/openmetrics-text; version=1.0.0"), true),
        (Some(prometheus), true),
    ] {
        let (ty, text) = metrics(&d, accept);
        if open_metrics {
            assert_eq!(
                ty, "application/openmetrics-text; version=1.0.0; charset=utf-8",
                "{accept:?}"
            );
            assert!(text.contains("# TYPE choir_drops counter\n"), "{text}");
        } else {
            assert_eq!(ty, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
            assert!(
                text.contains("# TYPE choir_drops_total counter\n"),
                "{text}"
            );
            assert!(text.contains("# HELP choir_drops_total "), "{text}");
        }
        lint(&text, open_metrics);
        assert!(text.contains("choir_participants{shard="), "{text}");
        assert!(text.contains("\nchoir_http_connections "), "{text}");
    }
}

// --- ICE-TCP: idle and excess connections ------------------------------------------------

/// A transport's passive TCP candidate port and ICE credentials.
fn tcp_transport(d: &Daemon, user: &str) -> (u16, String, String) {
    d.get("rtp-capabilities/t");
    let t = d.ok("create-transport", &create("t", user, "send"));
    let c = t["iceCandidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "tcp")
        .unwrap()
        .clone();
    let ice = &t["iceParameters"];
    (
        c["port"].as_u64().unwrap() as u16,
        ice["usernameFragment"].as_str().unwrap().to_string(),
        ice["password"].as_str().unwrap().to_string(),
    )
}

/// Sends a valid Binding request (RFC 4571 framed) and reads its framed success response.
fn check(s: &mut std::net::TcpStream, ufrag: &str, password: &str, n: u8) -> bool {
    use std::io::{Read, Write};
    let mut req = [0u8; 512];
    let len = choir::stun::write_binding_request(
        &mut req,
        [n; 12],
        &format!("{ufrag}:client{n}"),
        password,
        1_845_501_695,
        false,
        u64::from(n),
    );
    let mut framed = (len as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req[..len]);
    if s.write_all(&framed).is_err() {
        return false;
    }
    let mut head = [0u8; 2];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let mut resp = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut resp).is_ok() && choir::stun::parse_binding_success(&resp, password).is_ok()
}

fn drops(d: &Daemon, key: &str) -> u64 {
    d.stats()["total"]["drops"][key].as_u64().unwrap_or(0)
}

#[test]
fn ice_tcp_connections_without_a_valid_stun_request_are_closed() {
    let d = Daemon::start(&[]);
    let (port, ufrag, password) = tcp_transport(&d, "alice");
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let started = Instant::now();
    // A browser's connection: its first check is valid; it is kept past the deadline.
    let mut good = connect();
    assert!(check(&mut good, &ufrag, &password, 1));
    // Twenty that send nothing: sixteen wait (the listener's cap of unvalidated ones), four
    // are closed at once.
    let mut idle: Vec<_> = (0..20).map(|_| connect()).collect();
    assert!(
        d.wait_for(Duration::from_secs(3), |d| drops(d, "tcp.too_many_pending")
            == 4)
    );
    // Each is watched on its own thread: when did it close?
    let watchers: Vec<_> = idle
        .drain(..)
        .map(|mut s| {
            std::thread::spawn(move || {
                let (got, closed) = read_to_close(&mut s);
                assert!(closed && got.is_empty(), "{got}");
                started.elapsed()
            })
        })
        .collect();
    let mut closed_at: Vec<Duration> = watchers.into_iter().map(|w| w.join().unwrap()).collect();
    closed_at.sort();
    let early = closed_at
        .iter()
        .filter(|t| **t < Duration::from_secs(3))
        .count();
    assert_eq!(early, 4, "four closed at once: {closed_at:?}");
    assert!(
        closed_at[4..]
            .iter()
            .all(|t| *t >= Duration::from_millis(4500) && *t < Duration::from_secs(9)),
        "sixteen after the 5 s deadline: {closed_at:?}"
    );
    assert_eq!(drops(&d, "tcp.stun_timeout"), 16);
    assert!(
        check(&mut good, &ufrag, &password, 2),
        "the valid connection is still served"
    );
}

#[test]
fn ice_tcp_connections_per_transport_are_capped() {
    let d = Daemon::start(&[]);
    let (port, ufrag, password) = tcp_transport(&d, "bob");
    let mut kept = Vec::new();
    for n in 0..8 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(check(&mut s, &ufrag, &password, n), "connection {n}");
        kept.push(s);
    }
    // The ninth validates (it gets its answer) and is closed as one too many.
    let mut ninth = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    check(&mut ninth, &ufrag, &password, 9);
    let (_, closed) = read_to_close(&mut ninth);
    assert!(closed);
    assert_eq!(drops(&d, "tcp.too_many_connections"), 1);
    // Closing one frees a place.
    drop(kept.pop());
    assert!(d.wait_for(Duration::from_secs(5), |_| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        check(&mut s, &ufrag, &password, 10) && {
            std::thread::sleep(Duration::from_millis(100));
            check(&mut s, &ufrag, &password, 11)
        }
    }));
}
