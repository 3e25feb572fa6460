//! Bounded reads and idle connections, against the real daemon over raw sockets on loopback:
//! request bodies, request-head deadlines and connections per client address on the API,
//! `/metrics` content negotiation, idle and excess ICE-TCP connections.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{json, Value};

fn create(channel: &str, user: &str, direction: &str) -> Value {
    json!({"channelId": channel, "userId": user, "direction": direction})
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
    let (_, text) = d.metrics(None);
    assert_eq!(
        common::metric_sum(&text, "choir_http_header_timeouts_total"),
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
    let (_, text) = d.metrics(None);
    assert_eq!(
        common::metric_sum(&text, "choir_http_connections_refused_total"),
        1.0,
        "{text}"
    );
    // Four held, plus the scrape's own connection while it is answered (once the server has
    // seen the earlier ones close).
    assert!(d.wait_for(Duration::from_secs(5), |d| {
        common::metric_sum(&d.metrics(None).1, "choir_http_connections ") == 5.0
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
        let (ty, text) = d.metrics(accept);
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
    let len = choir::wire::stun::write_binding_request(
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
    s.read_exact(&mut resp).is_ok()
        && choir::wire::stun::parse_binding_success(&resp, password).is_ok()
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
