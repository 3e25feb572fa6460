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
