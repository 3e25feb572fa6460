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

use common::peer::{run, run_until, JoinOptions, Peer};
use harness::{listed, node, sigkill, until};
use redis_server::Redis;

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
    let announced = events
        .wait_for("newProducer", Duration::from_secs(5))
        .expect("newProducer of the remote speaker on node b");
    assert_eq!(announced["producerId"], pid.as_str(), "{announced}");

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

    // Node a dies: node b closes its producer within the TTL + 1 s.
    let killed = Instant::now();
    sigkill(nodes.remove(0));
    let mut closed = None;
    while killed.elapsed() < TTL + Duration::from_secs(2) {
        match events.next(Duration::from_millis(200)) {
            Some(v) if v["type"] == "producerClosed" && v["producerId"] == pid.as_str() => {
                closed = Some(killed.elapsed());
                break;
            }
            _ => {}
        }
    }
    let closed = closed.expect("producerClosed of the dead node's producer on node b");
    eprintln!("producerClosed {closed:?} after SIGKILL");
    assert!(closed <= TTL + Duration::from_secs(1), "{closed:?}");
    let (status, v) = nodes[0].get(&format!("producers/{channel}/listener"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["producers"].as_array().unwrap().len(), 0, "{v}");
}
