//! Cascading (issue 22): one channel across regions. Nodes in regions `a` and `b` (real
//! redis-server, real choir processes); a speaker joins through node a, a listener through
//! node b: the nodes set up their link on their own (src/cluster/cascade.rs), the listener
//! consumes the speaker's producer on node b and hears it with byte-identical payloads, and the
//! relay carries exactly one copy of each packet. A SIGKILLed node's producers close on the
//! survivor within the registry TTL + 1 s.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use choir::cluster::secret::Secret;
use common::peer::{run, run_until, JoinOptions, Peer};
use harness::{listed, node, sigkill, until, CLUSTER_SECRET};
use redis_server::Redis;
use serde_json::json;

/// The registry's TTL (src/cluster/mod.rs).
const TTL: Duration = Duration::from_secs(6);

fn relay_counts(d: &common::Daemon) -> (u64, u64) {
    let s = d.stats();
    let t = &s["total"];
    (
        t["relayPacketsOut"].as_u64().unwrap_or(0),
        t["relayPacketsIn"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_listener_in_another_region_hears_a_speaker_over_one_link_and_loses_it_with_its_node() {
    let redis = Redis::start();
    let mut nodes = vec![
        node(&redis, 1, &["--region", "a"]),
        node(&redis, 2, &["--region", "b"]),
    ];
    for d in &nodes {
        assert!(
            until(Duration::from_secs(10), || listed(d).len() == 2),
            "{} lists {:?}",
            d.base,
            listed(d)
        );
    }
    let channel = "cascade-room";
    let (na, nb) = (&nodes[0], &nodes[1]);
    let speaker = Peer::join(na, channel, "speaker", 1, JoinOptions::default());
    // The room's node in region b (placed by its first request there), then the listener's
    // event stream on it.
    let placed = Instant::now();
    let (status, caps) = nb.get(&format!("rtp-capabilities/{channel}"));
    assert_eq!(status, 200, "{caps}");
    let events = nb.events(channel, "listener");
    let listener = Peer::join(
        nb,
        channel,
        "listener",
        2,
        JoinOptions {
            produce: false,
            ..JoinOptions::default()
        },
    );
    let pid = speaker.producer_id.clone().unwrap();
    let mut peers = [speaker, listener];

    // Node b lists the speaker's producer once the nodes linked (a heartbeat or two).
    let mut last_ask = Instant::now() - Duration::from_secs(1);
    let mut listed_there = false;
    let linked = run_until(&mut peers, Duration::from_secs(15), |_| {
        if last_ask.elapsed() >= Duration::from_millis(100) {
            last_ask = Instant::now();
            let (status, v) = nb.get(&format!("producers/{channel}/listener"));
            assert_eq!(status, 200, "{v}");
            listed_there = v["producers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["producerId"] == pid.as_str() && p["userId"] == "speaker");
        }
        listed_there
    });
    assert!(linked, "node b never listed {pid}: {}", nb.get("cluster").1);
    eprintln!(
        "node b lists the remote speaker {:?} after the room's placement there",
        placed.elapsed()
    );
    let announced = events
        .wait_for("newProducer", Duration::from_secs(5))
        .expect("newProducer of the remote speaker on node b");
    assert_eq!(announced["producerId"], pid.as_str(), "{announced}");
    // Where the remote speaker is (the try-it page shows it), and which node and region serve.
    assert_eq!(
        (&announced["node"], &announced["region"]),
        (&json!("node-1"), &json!("a"))
    );
    let (_, v) = nb.get(&format!("producers/{channel}/listener"));
    assert_eq!(
        (&v["producers"][0]["node"], &v["producers"][0]["region"]),
        (&json!("node-1"), &json!("a")),
        "{v}"
    );
    let served = harness::get(nb, &format!("producers/{channel}/listener"));
    assert_eq!(
        (served.node.as_deref(), served.region.as_deref()),
        (Some("node-2"), Some("b"))
    );
    let (_, v) = na.get(&format!("producers/{channel}/speaker"));
    assert_eq!(
        v["producers"],
        json!([]),
        "the speaker's own node lists no one: {v}"
    );

    peers[1].consume(nb, &pid);
    let heard = run_until(&mut peers, Duration::from_secs(15), |p| {
        p[1].received_from(1).len() >= 100
    });
    assert!(heard, "listener got {}", peers[1].received_from(1).len());

    // The speaker stops; what crossed the link settles.
    peers[0].muted = true;
    run(&mut peers, Duration::from_millis(500));
    let (out_a, in_a) = relay_counts(na);
    let (out_b, in_b) = relay_counts(nb);
    let written = u64::from(peers[0].written);
    let got = peers[1].received_from(1);
    let distinct: BTreeSet<u16> = got.iter().map(|g| g.n).collect();
    eprintln!(
        "speaker wrote {written}; node a relayed out {out_a} (in {in_a}); node b in {in_b} (out {out_b}); listener got {} ({} distinct)",
        got.len(),
        distinct.len()
    );
    assert!(got.iter().all(|g| g.intact), "a payload changed on the way");
    assert_eq!(
        distinct.len(),
        got.len(),
        "a duplicate reached the listener"
    );
    // One copy of each packet: no more out of a than the speaker sent, all of it in at b.
    assert!(
        out_a > 0 && out_a <= written,
        "out {out_a}, written {written}"
    );
    assert_eq!(out_a, in_b, "what a relayed is what b received");
    assert_eq!((in_a, out_b), (0, 0), "nothing relayed back");
    assert!(got.len() as u64 <= in_b);
    // The same in /metrics, per peer node: one stream each way it flows, its packets.
    let (_, ma) = na.metrics(None);
    let (_, mb) = nb.metrics(None);
    let m = |text: &str, family: &str, labels: &str| {
        common::metric_sum(text, &format!("{family}{{shard=\"0\",{labels}}} "))
    };
    assert_eq!(m(&ma, "choir_links", "peer=\"node-2\""), 1.0, "{ma}");
    let out = "peer=\"node-2\",direction=\"out\"";
    let inb = "peer=\"node-1\",direction=\"in\"";
    assert_eq!(m(&ma, "choir_relay_streams", out), 1.0, "{ma}");
    assert_eq!(m(&mb, "choir_relay_streams", inb), 1.0, "{mb}");
    assert_eq!(m(&ma, "choir_relay_packets_total", out), out_a as f64);
    assert_eq!(m(&mb, "choir_relay_packets_total", inb), in_b as f64);

    // Node a's signalling reaches node b's participants, in order: pause and resume, a new
    // producer on a link that exists, and a participant leaving.
    let ids = json!({"channelId": channel, "userId": "speaker", "producerId": pid});
    na.ok("pause-producer", &ids);
    let paused = events.wait_for("producerPaused", Duration::from_secs(3));
    assert_eq!(
        paused.expect("producerPaused on b")["producerId"],
        pid.as_str()
    );
    na.ok("resume-producer", &ids);
    let resumed = events.wait_for("producerResumed", Duration::from_secs(3));
    assert_eq!(
        resumed.expect("producerResumed on b")["producerId"],
        pid.as_str()
    );
    let other = Peer::join(na, channel, "other", 3, JoinOptions::default());
    let other_pid = other.producer_id.clone().unwrap();
    let new = events.wait_for("newProducer", Duration::from_secs(3));
    assert_eq!(
        new.expect("newProducer of other on b")["producerId"],
        other_pid.as_str()
    );
    let (status, v) = nb.get(&format!("producers/{channel}/listener"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["producers"].as_array().unwrap().len(), 2, "{v}");
    na.ok("leave", &json!({"channelId": channel, "userId": "other"}));
    let left = events.wait_for("participantLeft", Duration::from_secs(3));
    assert_eq!(
        left.expect("participantLeft of other on b")["userId"],
        "other"
    );
    let (status, v) = nb.get(&format!("producers/{channel}/listener"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["producers"].as_array().unwrap().len(), 1, "{v}");
    drop(other);

    // A listener (no producer) leaving node a: node b hears it once, and does not announce it
    // back (it used to bounce between the nodes).
    let applied_a = na.get("cluster").1["cascade"]["counters"]["applied"].clone();
    let quiet = Peer::join(
        na,
        channel,
        "quiet",
        4,
        JoinOptions {
            produce: false,
            ..JoinOptions::default()
        },
    );
    na.ok("leave", &json!({"channelId": channel, "userId": "quiet"}));
    let left = events.wait_for("participantLeft", Duration::from_secs(3));
    assert_eq!(
        left.expect("participantLeft of quiet on b")["userId"],
        "quiet"
    );
    drop(quiet);
    // Equal announcements back to back (pause, resume, pause) all arrive, in order.
    na.ok("pause-producer", &ids);
    na.ok("resume-producer", &ids);
    na.ok("pause-producer", &ids);
    for expected in ["producerPaused", "producerResumed", "producerPaused"] {
        let ev = events.next(Duration::from_secs(3));
        assert_eq!(
            ev.as_ref().map(|e| e["type"].clone()),
            Some(json!(expected)),
            "{ev:?}"
        );
    }
    na.ok("resume-producer", &ids);
    let resumed = events.wait_for("producerResumed", Duration::from_secs(3));
    assert!(resumed.is_some());
    assert!(
        events.next(Duration::from_millis(300)).is_none(),
        "a second participantLeft or another echo reached b"
    );
    let cluster_a = na.get("cluster").1;
    assert_eq!(
        cluster_a["cascade"]["counters"]["applied"], applied_a,
        "node b announced something back to a: {cluster_a}"
    );

    // Every SYNC (5 s) node a lists its producers to node b: b applies it, and with both
    // sides agreeing it changes nothing and emits no event.
    let cascade = |d: &common::Daemon| d.get("cluster").1["cascade"]["counters"].clone();
    let applied = cascade(nb)["applied"].as_u64().unwrap();
    assert!(
        until(Duration::from_secs(8), || cascade(nb)["applied"]
            .as_u64()
            .unwrap()
            > applied),
        "no resync reached node b: {}",
        cascade(nb)
    );
    assert_eq!(cascade(nb)["resynced"], 0, "{}", cascade(nb));
    assert!(events.next(Duration::from_millis(100)).is_none());

    // Node a dies: node b closes its producer within the TTL + 1 s.
    let killed = Instant::now();
    sigkill(nodes.remove(0));
    let (mut closed, mut left) = (None, None);
    while killed.elapsed() < TTL + Duration::from_secs(2) && (closed.is_none() || left.is_none()) {
        match events.next(Duration::from_millis(200)) {
            Some(v) if v["type"] == "producerClosed" && v["producerId"] == pid.as_str() => {
                closed = Some(killed.elapsed());
            }
            Some(v) if v["type"] == "participantLeft" && v["userId"] == "speaker" => {
                assert_eq!(v["reason"], "node_lost", "{v}");
                left = Some(killed.elapsed());
            }
            _ => {}
        }
    }
    let closed = closed.expect("producerClosed of the dead node's producer on node b");
    let left = left.expect("participantLeft {reason: node_lost} of the speaker on node b");
    eprintln!("producerClosed {closed:?}, participantLeft {left:?} after SIGKILL");
    assert!(closed <= TTL + Duration::from_secs(1), "{closed:?}");
    assert!(left <= TTL + Duration::from_secs(1), "{left:?}");
    let (status, v) = nodes[0].get(&format!("producers/{channel}/listener"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["producers"].as_array().unwrap().len(), 0, "{v}");
}

/// `POST /api/voice/_cascade/link` signed as `node` with `secret` at `ms` (the wire format of
/// src/cluster/cascade.rs: `<node>;<unix ms>;<mac over node, path, ms, body>`).
fn signed_link(d: &common::Daemon, secret: &Secret, node: &str, ms: u64, body: &[u8]) -> u16 {
    let path = "/api/voice/_cascade/link";
    let ms = ms.to_string();
    let mac = secret.sign(
        "cascade request v1",
        &[node.as_bytes(), path.as_bytes(), ms.as_bytes(), body],
    );
    link_with(d, &format!("{node};{ms};{mac}"), body)
}

fn link_with(d: &common::Daemon, header: &str, body: &[u8]) -> u16 {
    let mut req = ureq::post(&format!("{}/api/voice/_cascade/link", d.base))
        .timeout(Duration::from_secs(10))
        .set("Content-Type", "application/json");
    if !header.is_empty() {
        req = req.set("x-choir-cascade", header);
    }
    match req.send_bytes(body) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn link_requests_without_the_cluster_secret_or_from_unknown_nodes_are_refused_and_counted() {
    let redis = Redis::start();
    let nodes = [
        node(&redis, 1, &["--region", "a"]),
        node(&redis, 2, &["--region", "b"]),
    ];
    for d in &nodes {
        assert!(until(Duration::from_secs(10), || listed(d).len() == 2));
    }
    let nb = &nodes[1];
    let body = json!({"channel": "nowhere", "node": "node-1", "incarnation": "x", "receiveId": 7,
        "linkAddr": "127.0.0.1:9", "producers": []})
    .to_string();
    let body = body.as_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let right = Secret::new(CLUSTER_SECRET.as_bytes()).unwrap();
    let wrong = Secret::new(&[9u8; 40]).unwrap();
    assert_eq!(link_with(nb, "", body), 403, "unsigned");
    assert_eq!(signed_link(nb, &wrong, "node-1", now, body), 403, "forged");
    assert_eq!(
        signed_link(nb, &right, "node-9", now, body),
        403,
        "a node not in the registry"
    );
    assert_eq!(
        signed_link(nb, &right, "node-1", now - 60_000, body),
        403,
        "stale"
    );
    // Signed right: past the check, refused for the room (node b does not carry it)...
    assert_eq!(signed_link(nb, &right, "node-1", now, body), 409);
    // ...and the very same request again is a replay.
    assert_eq!(
        signed_link(nb, &right, "node-1", now, body),
        403,
        "replayed"
    );
    let (status, cluster) = nb.get("cluster");
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["cascade"]["counters"]["refused"], 5, "{cluster}");
    assert_eq!(cluster["cascade"]["links"], json!([]), "{cluster}");
}
