//! The voice API over real HTTP on loopback, against the real daemon.

mod common;
#[path = "common/contract.rs"]
mod contract;

use std::time::Duration;

use common::{bound_udp_ports, open_fds, Daemon};
use contract::{chrome_rtp_parameters, client_caps, dtls_client, join};
use serde_json::{json, Value};

#[test]
fn health_and_capabilities_have_the_contract_shape() {
    let d = Daemon::start(&[]);
    let h = d.health();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["shards"], 2);
    assert_eq!(h["rooms"], 0);
    let (s, v) = d.get("rtp-capabilities/test-channel");
    assert_eq!(s, 200);
    let caps = &v["rtpCapabilities"];
    let opus = &caps["codecs"][0];
    assert_eq!(opus["kind"], "audio");
    assert_eq!(opus["mimeType"], "audio/opus");
    assert_eq!(opus["preferredPayloadType"], 100);
    assert_eq!(opus["clockRate"], 48000);
    assert_eq!(opus["channels"], 2);
    // Generic NACK (answered from a short history), in-band FEC and DTX for the speakers'
    // encoders (mediasoup-client copies the parameters into its answer).
    assert_eq!(
        opus["rtcpFeedback"],
        json!([{"type": "nack", "parameter": ""}])
    );
    assert_eq!(opus["parameters"], json!({"useinbandfec": 1, "usedtx": 1}));
    for ext in caps["headerExtensions"].as_array().unwrap() {
        assert_eq!(ext["kind"], "audio");
        assert!(ext["preferredId"].as_u64().is_some());
        assert!(ext["uri"].as_str().is_some());
        assert_eq!(ext["direction"], "sendrecv");
    }
    assert_eq!(d.health()["rooms"], 1);
}

#[test]
fn full_flow_with_contract_bodies() {
    let d = Daemon::start(&[]);
    let (send, recv, producer_a) = join(&d, "c1", "alice", 1111);
    // TransportOptions as mediasoup-client reads them.
    for t in [&send, &recv] {
        assert!(t["id"].as_str().unwrap().len() >= 32);
        let ice = &t["iceParameters"];
        assert!(ice["usernameFragment"].as_str().unwrap().len() >= 16);
        assert!(ice["password"].as_str().unwrap().len() >= 32);
        assert_eq!(ice["iceLite"], true);
        let cand = &t["iceCandidates"][0];
        assert_eq!(cand["protocol"], "udp");
        assert_eq!(cand["type"], "host");
        assert_eq!(cand["ip"], "127.0.0.1");
        assert_eq!(cand["address"], "127.0.0.1");
        assert!(cand["priority"].as_u64().unwrap() > 0);
        assert!(cand["foundation"].as_str().is_some());
        let fp = &t["dtlsParameters"]["fingerprints"][0];
        assert_eq!(t["dtlsParameters"]["role"], "auto");
        assert_eq!(fp["algorithm"], "sha-256");
        assert_eq!(fp["value"].as_str().unwrap().len(), 32 * 3 - 1);
    }
    let (_, bob_recv, producer_b) = join(&d, "c1", "bob", 2222);
    // Others' producers only.
    let (s, v) = d.get("producers/c1/bob");
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"producers":[{"userId":"alice","producerId":producer_a,"kind":"audio","speaking":false,"paused":false}]})
    );
    let (_, v) = d.get("producers/c1/alice");
    assert_eq!(v["producers"][0]["producerId"], producer_b.as_str());

    d.ok(
        "connect-transport",
        &json!({"channelId":"c1","userId":"bob","transportId":bob_recv["id"],"dtlsParameters":dtls_client()}),
    );
    let c = d.ok("consume", &json!({"channelId":"c1","userId":"bob","producerId":producer_a,"rtpCapabilities":client_caps()}));
    assert!(c["id"].as_str().is_some());
    assert_eq!(c["producerId"], producer_a.as_str());
    assert_eq!(c["kind"], "audio");
    let rtp = &c["rtpParameters"];
    assert_eq!(rtp["mid"], "0");
    assert_eq!(rtp["codecs"][0]["payloadType"], 100);
    assert_eq!(rtp["codecs"][0]["mimeType"], "audio/opus");
    assert_eq!(rtp["codecs"][0]["channels"], 2);
    assert_eq!(
        rtp["codecs"][0]["parameters"],
        json!({"minptime":10,"useinbandfec":1})
    );
    assert_eq!(
        rtp["headerExtensions"],
        json!([{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":10,"encrypt":false,"parameters":{}}])
    );
    assert!(rtp["encodings"][0]["ssrc"].as_u64().unwrap() > 0);
    assert_eq!(
        rtp["rtcp"],
        json!({"cname":"UvVHyckjW26uo8T8","reducedSize":true})
    );

    let h = d.health();
    assert_eq!(
        (
            h["rooms"].as_u64(),
            h["participants"].as_u64(),
            h["transports"].as_u64()
        ),
        (Some(1), Some(2), Some(4))
    );
    assert_eq!(
        (h["producers"].as_u64(), h["consumers"].as_u64()),
        (Some(2), Some(1))
    );

    d.ok(
        "pause-producer",
        &json!({"channelId":"c1","userId":"alice","producerId":producer_a}),
    );
    d.ok(
        "resume-producer",
        &json!({"channelId":"c1","userId":"alice","producerId":producer_a}),
    );

    assert_eq!(
        d.ok("leave", &json!({"channelId":"c1","userId":"alice"})),
        json!({"success":true})
    );
    let h = d.health();
    assert_eq!(
        (
            h["participants"].as_u64(),
            h["producers"].as_u64(),
            h["consumers"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    d.ok("leave", &json!({"channelId":"c1","userId":"bob"}));
    let h = d.health();
    assert_eq!(
        (
            h["rooms"].as_u64(),
            h["transports"].as_u64(),
            h["boundPorts"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}

#[test]
fn second_consumer_gets_next_mid() {
    let d = Daemon::start(&[]);
    let (_, _, pa) = join(&d, "m", "a", 1);
    let (_, _, pb) = join(&d, "m", "b", 2);
    join(&d, "m", "c", 3);
    let c1 = d.ok(
        "consume",
        &json!({"channelId":"m","userId":"c","producerId":pa,"rtpCapabilities":client_caps()}),
    );
    let c2 = d.ok(
        "consume",
        &json!({"channelId":"m","userId":"c","producerId":pb,"rtpCapabilities":client_caps()}),
    );
    assert_eq!(
        (
            c1["rtpParameters"]["mid"].as_str(),
            c2["rtpParameters"]["mid"].as_str()
        ),
        (Some("0"), Some("1"))
    );
    assert_ne!(
        c1["rtpParameters"]["encodings"][0]["ssrc"],
        c2["rtpParameters"]["encodings"][0]["ssrc"]
    );
}

fn assert_error(d: &Daemon, (status, body): (u16, Value), want: u16, contains: &str) {
    assert_eq!(status, want, "{body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(
        msg.contains(contains),
        "{msg:?} should contain {contains:?}"
    );
    assert_eq!(d.health()["status"], "ok", "the daemon stays up");
}

#[test]
fn every_error_class() {
    let d = Daemon::start(&[]);
    // 404: routes, rooms, users, transports, producers.
    assert_error(&d, d.get("nope"), 404, "no route");
    assert_error(
        &d,
        response_of(ureq::get(&format!("{}/other", d.base)).call()),
        404,
        "no route",
    );
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"none","userId":"u","direction":"send"}),
        ),
        404,
        "room",
    );
    d.get("rtp-capabilities/e");
    assert_error(&d, d.get("producers/e/ghost"), 404, "ghost");
    assert_error(
        &d,
        d.post("leave", &json!({"channelId":"e","userId":"ghost"})),
        404,
        "ghost",
    );
    let (_, recv, producer) = join(&d, "e", "u", 5);
    assert_error(
        &d,
        d.post("connect-transport", &json!({"channelId":"e","userId":"u","transportId":"nope","dtlsParameters":dtls_client()})),
        404,
        "transport",
    );
    assert_error(
        &d,
        d.post("consume", &json!({"channelId":"e","userId":"u","producerId":"nope","rtpCapabilities":client_caps()})),
        404,
        "producer",
    );
    // 405: wrong method on a known route.
    assert_error(&d, d.get("produce"), 405, "POST");
    // 400: malformed JSON, missing and mistyped fields, bad values.
    assert_error(
        &d,
        d.post_raw("create-transport", b"{not json"),
        400,
        "malformed JSON",
    );
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"e","direction":"send"}),
        ),
        400,
        "userId",
    );
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"e","userId":5,"direction":"send"}),
        ),
        400,
        "userId",
    );
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"e","userId":"u","direction":"up"}),
        ),
        400,
        "direction",
    );
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"","userId":"u","direction":"send"}),
        ),
        400,
        "channelId",
    );
    let mut bad = chrome_rtp_parameters(9);
    bad["codecs"][0]["payloadType"] = json!("x");
    assert_error(
        &d,
        d.post(
            "produce",
            &json!({"channelId":"e","userId":"v","kind":"audio","rtpParameters":bad}),
        ),
        400,
        "rtpParameters.codecs[0].payloadType",
    );
    assert_error(
        &d,
        d.post("connect-transport", &json!({"channelId":"e","userId":"u","transportId":recv["id"],"dtlsParameters":{"role":"client","fingerprints":[]}})),
        400,
        "fingerprints",
    );
    // 409: state conflicts.
    assert_error(
        &d,
        d.post(
            "create-transport",
            &json!({"channelId":"e","userId":"u","direction":"send"}),
        ),
        409,
        "already has a send",
    );
    assert_error(
        &d,
        d.post("produce", &json!({"channelId":"e","userId":"u","kind":"audio","rtpParameters":chrome_rtp_parameters(6)})),
        409,
        "already produces",
    );
    d.ok(
        "create-transport",
        &json!({"channelId":"e","userId":"w","direction":"recv"}),
    );
    assert_error(
        &d,
        d.post("produce", &json!({"channelId":"e","userId":"w","kind":"audio","rtpParameters":chrome_rtp_parameters(7)})),
        409,
        "no send transport",
    );
    d.ok("connect-transport", &json!({"channelId":"e","userId":"u","transportId":recv["id"],"dtlsParameters":dtls_client()}));
    assert_error(
        &d,
        d.post("connect-transport", &json!({"channelId":"e","userId":"u","transportId":recv["id"],"dtlsParameters":dtls_client()})),
        409,
        "already connected",
    );
    let mut mono = client_caps();
    mono["codecs"][0]["channels"] = json!(1);
    assert_error(
        &d,
        d.post(
            "consume",
            &json!({"channelId":"e","userId":"u","producerId":producer,"rtpCapabilities":mono}),
        ),
        409,
        "cannot consume",
    );
    d.ok("consume", &json!({"channelId":"e","userId":"u","producerId":producer,"rtpCapabilities":client_caps()}));
    assert_error(
        &d,
        d.post("consume", &json!({"channelId":"e","userId":"u","producerId":producer,"rtpCapabilities":client_caps()})),
        409,
        "already consumes",
    );
    // 413: body over 64 KiB.
    let big = format!(
        "{{\"channelId\":\"e\",\"userId\":\"{}\",\"direction\":\"send\"}}",
        "x".repeat(70_000)
    );
    assert_error(
        &d,
        d.post_raw("create-transport", big.as_bytes()),
        413,
        "larger than",
    );
}

fn response_of(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    (resp.status(), resp.into_json().unwrap_or(Value::Null))
}

#[test]
fn cors_headers_and_preflight() {
    let d = Daemon::start(&["--cors-origin", "http://localhost:5173"]);
    let resp = ureq::request("OPTIONS", &d.url("create-transport"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert!(resp
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Content-Type"));
    let resp = ureq::get(&d.url("health")).call().unwrap();
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
}

#[test]
fn ports_are_bound_inside_the_shard_slice_and_rooms_spread_over_shards() {
    let d = Daemon::start(&[]);
    let (min, max) = d.rtc;
    let half = min + common::RTC_PORTS / 2; // two equal slices
    let stats = d.stats();
    let slices: Vec<(u64, u64)> = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["ports"][0].as_u64().unwrap(),
                s["ports"][1].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        slices,
        vec![
            (u64::from(min), u64::from(half - 1)),
            (u64::from(half), u64::from(max))
        ]
    );
    let mut shards_seen = std::collections::HashSet::new();
    for i in 0..8 {
        let channel = format!("room-{i}");
        d.get(&format!("rtp-capabilities/{channel}"));
        let t = d.ok(
            "create-transport",
            &json!({"channelId":channel,"userId":"u","direction":"send"}),
        );
        let port = t["iceCandidates"][0]["port"].as_u64().unwrap() as u16;
        assert!(
            bound_udp_ports(d.pid()).contains(&port),
            "port {port} is really bound"
        );
        let shard = usize::from(port >= half);
        assert_eq!(
            shard,
            choir::shard::shard_for(&channel, 2),
            "room {channel} lives on its hash's shard"
        );
        shards_seen.insert(shard);
    }
    assert_eq!(shards_seen.len(), 2, "rooms land on both shards");
}

#[test]
fn slice_exhaustion_is_503() {
    let (min, max) = common::port_range(10);
    let d = Daemon::start(&[
        "--shards",
        "1",
        "--rtc-min-port",
        &min.to_string(),
        "--rtc-max-port",
        &max.to_string(),
    ]);
    d.get("rtp-capabilities/full");
    let mut ok = 0;
    let mut last = (0, Value::Null);
    for i in 0..6 {
        let r = d.post(
            "create-transport",
            &json!({"channelId":"full","userId":format!("u{i}"),"direction":"send"}),
        );
        if r.0 == 200 {
            ok += 1;
        } else {
            last = r;
            break;
        }
        let r = d.post(
            "create-transport",
            &json!({"channelId":"full","userId":format!("u{i}"),"direction":"recv"}),
        );
        if r.0 == 200 {
            ok += 1;
        } else {
            last = r;
            break;
        }
    }
    assert!(ok <= 10);
    assert_error(&d, last, 503, "no free RTC port");
}

#[test]
fn two_hundred_join_leave_cycles_leave_nothing_behind() {
    let d = Daemon::start(&[]);
    // Warm up once so lazily created fds (io_uring, eventfds) exist before counting.
    join(&d, "warm", "w", 1);
    d.ok("leave", &json!({"channelId":"warm","userId":"w"}));
    let fds_before = open_fds(d.pid());
    for i in 0..200 {
        let channel = format!("cycle-{}", i % 7);
        let (_, _, pa) = join(&d, &channel, "a", 10);
        let (_, _, _pb) = join(&d, &channel, "b", 20);
        d.ok("consume", &json!({"channelId":channel,"userId":"b","producerId":pa,"rtpCapabilities":client_caps()}));
        d.ok("leave", &json!({"channelId":channel,"userId":"a"}));
        d.ok("leave", &json!({"channelId":channel,"userId":"b"}));
    }
    let h = d.health();
    assert_eq!(
        (h["rooms"].as_u64(), h["participants"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
    assert_eq!(
        (h["transports"].as_u64(), h["boundPorts"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
    assert!(
        bound_udp_ports(d.pid())
            .iter()
            .all(|p| !(d.rtc.0..=d.rtc.1).contains(p)),
        "no RTC port stays bound"
    );
    assert_eq!(
        open_fds(d.pid()),
        fds_before,
        "file descriptors are released"
    );
}

#[test]
fn sigterm_exits_zero_quickly_with_open_rooms_and_event_streams() {
    let d = Daemon::start(&[]);
    join(&d, "s", "a", 1);
    // An open SSE stream must not hold the shutdown.
    let sse = ureq::get(&d.url("events/s/b")).call().unwrap();
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let started = std::time::Instant::now();
    let status = d
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(sse);
}

#[test]
fn events_stream_pushes_new_producers_and_departures() {
    use std::io::{BufRead, BufReader};
    let d = Daemon::start(&[]);
    d.get("rtp-capabilities/ev");
    let resp = ureq::get(&d.url("events/ev/a"))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap();
    let mut lines = BufReader::new(resp.into_reader())
        .lines()
        .map_while(Result::ok);
    join(&d, "ev", "a", 1);
    let (_, _, pb) = join(&d, "ev", "b", 2);
    d.ok("leave", &json!({"channelId":"ev","userId":"b"}));
    let mut data = Vec::new();
    for line in lines.by_ref() {
        if let Some(json) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(json).unwrap());
            if data.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(
        data[0],
        json!({"type":"newProducer","userId":"b","producerId":pb,"kind":"audio"})
    );
    assert_eq!(
        data[1],
        json!({"type":"producerClosed","userId":"b","producerId":pb})
    );
    assert_eq!(
        data[2],
        json!({"type":"participantLeft","userId":"b","reason":"left"})
    );
}
