//! Cascading across several nodes (issue 22): one channel whose participants join through
//! nodes of two and of five regions (real redis-server, real choir processes, str0m peers).
//! Each region's participants share that region's room node; every consumer hears every
//! speaker with byte-identical payloads and no duplicate; each node relays each of its local
//! producers once to each other node of the room, whatever the number of listeners there, and
//! never relays a relayed packet again (so a full mesh of five cannot loop or duplicate).
//!
//! Relay counts (`/stats` totals and `/metrics`' per-peer `choir_relay_streams`,
//! `choir_relay_packets_total`, `choir_links`, `choir_link_missing_datagrams`) are compared
//! over a window between two quiescent moments (every speaker muted, what it sent arrived):
//! then they are exact, unlike a snapshot taken while packets are in flight.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/mesh.rs"]
mod mesh;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::net::udp_drops;
use common::peer::{run, run_until, JoinOptions, Peer};
use common::Daemon;
use harness::get;
use mesh::{
    check_clean, heard, hush, lives_on, regions, relay, room_nodes, unmute, until_listed, Relay,
    RelayMetrics,
};
use redis_server::Redis;
use serde_json::json;

/// How long each measured window lets the speakers speak.
const WINDOW: Duration = Duration::from_secs(2);

fn listener() -> JoinOptions {
    JoinOptions {
        produce: false,
        ..JoinOptions::default()
    }
}

/// Every node's counters, from a quiescent moment.
fn snapshot(nodes: &[Daemon]) -> Vec<Relay> {
    nodes.iter().map(relay).collect()
}

/// What a window measured: each node's counter deltas, the packets each peer wrote, and the
/// packets each peer received per sender.
struct Window {
    nodes: Vec<Relay>,
    /// Per peer: its packet numbers written in the window (`from..to`).
    from: Vec<u16>,
    to: Vec<u16>,
    /// Per peer: the packets (sender, number) it received in the window.
    got: Vec<Vec<(u8, u16)>>,
    /// The peers' indices, in the order of the vectors above.
    index: Vec<u8>,
    /// Each node's relay families at its start and at its end.
    m0: Vec<RelayMetrics>,
    m1: Vec<RelayMetrics>,
    /// Per node: datagrams its sockets' receive queues dropped in the window (the kernel's
    /// count; 0 on a machine with room to spare) and since it started.
    drops: Vec<u64>,
    drops_total: Vec<u64>,
}

impl Window {
    fn wrote(&self) -> Vec<u64> {
        self.from
            .iter()
            .zip(&self.to)
            .map(|(f, t)| u64::from(t.wrapping_sub(*f)))
            .collect()
    }

    /// Packets node number `i` relayed to (`out`) or received from (`in`) node `peer` in the
    /// window, per its `/metrics`.
    fn packets(&self, i: usize, peer: &str, direction: &str) -> u64 {
        self.m1[i].packets(peer, direction) - self.m0[i].packets(peer, direction)
    }
}

/// Lets `speakers` (indices into `peers`) speak for [`WINDOW`] between two quiescent moments.
fn window(nodes: &[Daemon], peers: &mut [Peer], speakers: &[usize]) -> Window {
    hush(peers);
    let drops0: Vec<u64> = nodes.iter().map(|d| udp_drops(d.pid())).collect();
    let before = snapshot(nodes);
    let m0 = nodes.iter().map(RelayMetrics::of).collect();
    let from: Vec<u16> = peers.iter().map(|p| p.written).collect();
    let had: Vec<BTreeMap<u32, usize>> = peers
        .iter()
        .map(|p| p.got.iter().map(|(k, v)| (*k, v.len())).collect())
        .collect();
    for &s in speakers {
        unmute(&mut peers[s..=s]);
    }
    run(peers, WINDOW);
    hush(peers);
    let after = snapshot(nodes);
    let m1 = nodes.iter().map(RelayMetrics::of).collect();
    let drops_total: Vec<u64> = nodes.iter().map(|d| udp_drops(d.pid())).collect();
    Window {
        drops: drops_total
            .iter()
            .zip(&drops0)
            .map(|(a, b)| a - b)
            .collect(),
        drops_total,
        nodes: after.iter().zip(&before).map(|(a, b)| *a - *b).collect(),
        from,
        to: peers.iter().map(|p| p.written).collect(),
        got: peers
            .iter()
            .zip(had)
            .map(|(p, had)| {
                p.got
                    .iter()
                    .flat_map(|(ssrc, v)| &v[had.get(ssrc).copied().unwrap_or(0)..])
                    .map(|g| (g.sender, g.n))
                    .collect()
            })
            .collect(),
        index: peers.iter().map(|p| p.index).collect(),
        m0,
        m1,
    }
}

/// `p` heard nearly all of the packets speaker `s` wrote in window `w` (loopback: a rare
/// drop at a socket is no relay fault), and nothing else of `s`'s.
fn heard_window(p: &Peer, w: &Window, s: u8) {
    let k = w.index.iter().position(|&i| i == p.index).unwrap();
    let ks = w.index.iter().position(|&i| i == s).unwrap();
    let (from, to) = (w.from[ks], w.to[ks]);
    let got: Vec<u16> = w.got[k].iter().filter(|g| g.0 == s).map(|g| g.1).collect();
    let inside = got.iter().filter(|&&n| (from..to).contains(&n)).count();
    let sent = usize::from(to - from);
    assert!(
        inside * 100 >= sent * 97 && got.len() == inside,
        "{} heard {inside} of speaker {s}'s {sent} packets of the window ({from}..{to}) and {} others",
        p.user,
        got.len() - inside
    );
}

/// `got` of the `sent` datagrams crossed a link to node `i`: all of them, but for those its
/// sockets dropped (the kernel's count), never more.
fn arrived(w: &Window, i: usize, sent: u64, got: u64, what: &str) {
    assert!(
        got <= sent && sent - got <= w.drops[i],
        "{what}: node-{} got {got} of {sent} (its sockets dropped {})",
        i + 1,
        w.drops[i]
    );
}

/// A node received nearly all of what its speakers wrote in a window (loopback; a rare drop
/// at the socket is no relay fault), and no more.
fn received_what_was_written(node: &str, rtp_in: u64, wrote: u64) {
    assert!(
        rtp_in <= wrote && rtp_in * 100 >= wrote * 98,
        "{node} received {rtp_in} of {wrote} packets its speakers wrote"
    );
}

#[test]
fn three_nodes_two_regions_one_room_node_per_region() {
    let redis = Redis::start();
    let nodes = regions(&redis, &["a", "a", "b"]);
    let channel = "mesh-three";

    // Region a's first request places the room on one of its nodes; the other a-node routes
    // there; region b's request places it on node 3.
    let first = get(&nodes[0], &format!("rtp-capabilities/{channel}"));
    assert_eq!(first.status, 200, "{}", first.body);
    let a_owner = first.node.clone().expect("X-Choir-Node");
    let ai = match a_owner.as_str() {
        "node-1" => 0,
        "node-2" => 1,
        other => panic!("region a's room placed on {other}"),
    };
    let other_a = 1 - ai;
    for (via, on) in [(1, a_owner.as_str()), (2, "node-3")] {
        let r = get(&nodes[via], &format!("rtp-capabilities/{channel}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.node.as_deref(), Some(on), "through node {}", via + 1);
    }

    let mut peers = vec![
        Peer::join(&nodes[0], channel, "a1", 1, JoinOptions::default()),
        Peer::join(&nodes[1], channel, "a2", 2, JoinOptions::default()),
        Peer::join(&nodes[2], channel, "b3", 3, JoinOptions::default()),
    ];
    lives_on(&peers[0], &nodes[ai]);
    lives_on(&peers[1], &nodes[ai]);
    lives_on(&peers[2], &nodes[2]);
    let both: BTreeMap<String, String> = [("a", a_owner.as_str()), ("b", "node-3")]
        .iter()
        .map(|(r, n)| (r.to_string(), n.to_string()))
        .collect();
    // The room's nodes list each other (the routing a-node holds no room).
    for d in [&nodes[ai], &nodes[2]] {
        assert_eq!(room_nodes(d, channel), both, "{}", d.base);
    }

    // Each speaker consumes the two others, through the node it joined.
    let pids: Vec<String> = peers
        .iter()
        .map(|p| p.producer_id.clone().unwrap())
        .collect();
    for i in 0..3 {
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| pids[j].clone())
            .collect();
        let user = peers[i].user.clone();
        assert!(
            until_listed(
                &mut peers,
                &nodes[i],
                channel,
                &user,
                &others,
                Duration::from_secs(15)
            ),
            "node {} never listed {others:?} for {user}: {}",
            i + 1,
            nodes[i].get("cluster").1
        );
        for pid in &others {
            peers[i].consume(&nodes[i], pid);
        }
    }
    let all_heard = run_until(&mut peers, Duration::from_secs(15), |p| {
        (0..3).all(|i| (0..3).all(|j| i == j || p[i].received_from(p[j].index).len() >= 100))
    });
    let counts: Vec<_> = peers.iter().map(heard).collect();
    assert!(all_heard, "heard (sender → packets): {counts:?}");

    // One window: each room node relays its local producers' packets once to the other.
    let w = window(&nodes, &mut peers, &[0, 1, 2]);
    let (d, wrote) = (&w.nodes, &w.wrote());
    eprintln!("three nodes, window: {d:?}, written {wrote:?}");
    let (a, b) = (d[ai], d[2]);
    received_what_was_written(&a_owner, a.rtp_in, wrote[0] + wrote[1]);
    received_what_was_written("node-3", b.rtp_in, wrote[2]);
    assert!(a.rtp_in >= 150, "{a:?}");
    assert_eq!(a.out, a.rtp_in, "region a's node relays each packet once");
    assert_eq!(b.out, b.rtp_in, "node 3 relays each packet once");
    arrived(&w, 2, a.out, b.inn, "a → b");
    arrived(&w, ai, b.out, a.inn, "b → a");
    assert_eq!(
        d[other_a],
        Relay::default(),
        "the routing a-node carries no media"
    );
    let (ta, tb) = (relay(&nodes[ai]), relay(&nodes[2]));
    assert!(
        ta.out <= ta.rtp_in && tb.out <= tb.rtp_in,
        "since the start: {ta:?} {tb:?}"
    );
    for p in &peers {
        for s in (1..=3u8).filter(|&s| s != p.index) {
            heard_window(p, &w, s);
        }
        check_clean(p);
    }
    // The same per peer node in /metrics: one stream per producer each way, its packets.
    let (ma, mb) = (&w.m1[ai], &w.m1[2]);
    assert_eq!(ma.peers(), BTreeSet::from(["node-3".to_string()]));
    assert_eq!(mb.peers(), BTreeSet::from([a_owner.clone()]));
    assert!(w.m1[other_a].peers().is_empty());
    assert_eq!(ma.streams("node-3", "out"), 2);
    assert_eq!(ma.streams("node-3", "in"), 1);
    assert_eq!(mb.streams(&a_owner, "out"), 1);
    assert_eq!(mb.streams(&a_owner, "in"), 2);
    assert_eq!(w.packets(ai, "node-3", "out"), a.rtp_in);
    arrived(&w, 2, a.rtp_in, w.packets(2, &a_owner, "in"), "a → b");
    assert_eq!(w.packets(2, &a_owner, "out"), b.rtp_in);
    arrived(&w, ai, b.rtp_in, w.packets(ai, "node-3", "in"), "b → a");
    assert!(
        ma.missing() <= w.drops_total[ai] && mb.missing() <= w.drops_total[2],
        "link datagrams missing: {} {} (sockets dropped {:?})",
        ma.missing(),
        mb.missing(),
        w.drops_total
    );

    // One speaker in region a, 20 listeners on node 3: the link carries one stream, and node
    // 3 fans it out locally.
    nodes[1].ok("leave", &json!({"channelId": channel, "userId": "a2"}));
    let gone = run_until(&mut peers, Duration::from_secs(5), |_| {
        let (status, v) = nodes[2].get(&format!("producers/{channel}/b3"));
        assert_eq!(status, 200, "{v}");
        v["producers"].as_array().unwrap().len() == 1
    });
    assert!(gone, "node 3 still lists a2's producer");
    peers.remove(1);
    for i in 0..20u8 {
        let mut l = Peer::join(&nodes[2], channel, &format!("l{i}"), 10 + i, listener());
        lives_on(&l, &nodes[2]);
        l.consume(&nodes[2], &pids[0]);
        peers.push(l);
    }
    unmute(&mut peers[0..1]);
    let fanned = run_until(&mut peers, Duration::from_secs(20), |p| {
        p[2..].iter().all(|l| l.received_from(1).len() >= 50)
    });
    let counts: Vec<usize> = peers[2..]
        .iter()
        .map(|l| l.received_from(1).len())
        .collect();
    assert!(fanned, "listeners heard a1: {counts:?}");
    let w = window(&nodes, &mut peers, &[0]);
    let (d, wrote) = (&w.nodes, &w.wrote());
    eprintln!(
        "1 speaker, 20 listeners, window: {d:?}, a1 wrote {}",
        wrote[0]
    );
    let (a, b) = (d[ai], d[2]);
    received_what_was_written(&a_owner, a.rtp_in, wrote[0]);
    assert!(a.rtp_in >= 75, "{a:?}");
    assert_eq!(a.out, a.rtp_in, "one copy per packet, not one per listener");
    arrived(&w, 2, a.out, b.inn, "a → b");
    assert_eq!((a.inn, b.out), (0, 0), "b3 is muted: nothing relayed back");
    for (l, got) in peers[2..].iter().zip(&w.got[2..]) {
        let got = got.len() as u64;
        assert!(
            got <= b.inn && got * 100 >= b.inn * 98,
            "{} heard {got} of the {} relayed packets",
            l.user,
            b.inn
        );
        heard_window(l, &w, 1);
        check_clean(l);
    }
    let (ma, mb) = (&w.m1[ai], &w.m1[2]);
    assert_eq!(ma.streams("node-3", "out"), 1, "1 relayed stream, not 20");
    assert_eq!(mb.streams(&a_owner, "in"), 1, "1 relayed stream, not 20");
    assert_eq!(w.packets(ai, "node-3", "out"), a.rtp_in);
    arrived(&w, 2, a.rtp_in, w.packets(2, &a_owner, "in"), "a → b");
}

#[test]
fn five_regions_full_mesh_two_speakers_each() {
    let redis = Redis::start();
    let names = ["r1", "r2", "r3", "r4", "r5"];
    let nodes = regions(&redis, &names);
    let channel = "mesh-five";
    // Node i (one per region) gets speakers 2i+1 and 2i+2 and listener 20+i.
    let mut peers = Vec::new();
    for (i, d) in nodes.iter().enumerate() {
        for s in 1..=2u8 {
            let index = 2 * i as u8 + s;
            let p = Peer::join(
                d,
                channel,
                &format!("s{index}"),
                index,
                JoinOptions::default(),
            );
            lives_on(&p, d);
            peers.push(p);
        }
    }
    for (i, d) in nodes.iter().enumerate() {
        let l = Peer::join(d, channel, &format!("l{i}"), 20 + i as u8, listener());
        lives_on(&l, d);
        peers.push(l);
    }
    let pids: Vec<String> = peers[..10]
        .iter()
        .map(|p| p.producer_id.clone().unwrap())
        .collect();
    // Every peer consumes every speaker but itself, through its own node.
    let node_of = |k: usize| if k < 10 { k / 2 } else { k - 10 };
    for k in 0..15 {
        let d = &nodes[node_of(k)];
        let others: Vec<String> = pids
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .map(|(_, p)| p.clone())
            .collect();
        let user = peers[k].user.clone();
        assert!(
            until_listed(
                &mut peers,
                d,
                channel,
                &user,
                &others,
                Duration::from_secs(20)
            ),
            "{} never listed all producers for {user}: {}",
            d.base,
            d.get("cluster").1
        );
        for pid in &others {
            peers[k].consume(d, pid);
        }
    }
    let hears_all = |p: &Peer, at_least: usize| {
        (1..=10u8).all(|s| s == p.index || p.received_from(s).len() >= at_least)
    };
    let all_heard = run_until(&mut peers, Duration::from_secs(20), |p| {
        p.iter().all(|p| hears_all(p, 50))
    });
    let counts: Vec<_> = peers.iter().map(heard).collect();
    assert!(all_heard, "heard (sender → packets): {counts:?}");
    for d in &nodes {
        let r = get(d, "cluster");
        assert_eq!(
            r.body["roomNodes"][channel].as_array().map(Vec::len),
            Some(5),
            "{}",
            r.body
        );
    }

    let speakers: Vec<usize> = (0..10).collect();
    let w = window(&nodes, &mut peers, &speakers);
    let (d, wrote) = (&w.nodes, &w.wrote());
    eprintln!("five regions, window: {d:?}, written {wrote:?}");
    let total_in: u64 = d.iter().map(|r| r.inn).sum();
    let total_out: u64 = d.iter().map(|r| r.out).sum();
    let drops: u64 = w.drops.iter().sum();
    assert!(
        total_in <= total_out && total_out - total_in <= drops,
        "every relayed packet arrived once: {total_in} of {total_out} (sockets dropped {drops})"
    );
    for (i, r) in d.iter().enumerate() {
        let node = format!("node-{}", i + 1);
        received_what_was_written(&node, r.rtp_in, wrote[2 * i] + wrote[2 * i + 1]);
        assert!(r.rtp_in >= 150, "{node}: {r:?}");
        // Its own producers' packets, once to each of 4 peers; nothing relayed on.
        assert_eq!(r.out, 4 * r.rtp_in, "{node}: {r:?}");
        let others: u64 = (0..5).filter(|&j| j != i).map(|j| d[j].rtp_in).sum();
        arrived(&w, i, others, r.inn, "each other node's packets, once");
    }
    // Since the start, links set up meanwhile included: never more than one copy per peer.
    let totals = snapshot(&nodes);
    for (i, t) in totals.iter().enumerate() {
        let others: u64 = (0..5).filter(|&j| j != i).map(|j| totals[j].rtp_in).sum();
        assert!(
            t.out <= 4 * t.rtp_in && t.inn <= others,
            "node-{}: {t:?}",
            i + 1
        );
    }
    // Each peer heard each other speaker's window, every packet once.
    for p in &peers {
        for s in (1..=10u8).filter(|&s| s != p.index) {
            heard_window(p, &w, s);
        }
        check_clean(p);
    }

    // Per peer node (/metrics): two streams each way on each of the 4 links, each of a node's
    // packets once to each peer, and what one sent to a peer is what that peer got from it.
    for (i, r) in d.iter().enumerate() {
        let me = format!("node-{}", i + 1);
        let others: BTreeSet<String> = (0..5)
            .filter(|&j| j != i)
            .map(|j| format!("node-{}", j + 1))
            .collect();
        assert_eq!(w.m1[i].peers(), others, "{me}");
        assert!(
            w.m1[i].missing() <= w.drops_total[i],
            "{me}: link datagrams missing: {} (sockets dropped {})",
            w.m1[i].missing(),
            w.drops_total[i]
        );
        for j in (0..5).filter(|&j| j != i) {
            let peer = format!("node-{}", j + 1);
            assert_eq!(w.m1[i].streams(&peer, "out"), 2, "{me} → {peer}");
            assert_eq!(w.m1[i].streams(&peer, "in"), 2, "{me} ← {peer}");
            let sent = w.packets(i, &peer, "out");
            assert_eq!(sent, r.rtp_in, "{me} → {peer}");
            arrived(
                &w,
                j,
                sent,
                w.packets(j, &me, "in"),
                &format!("{me} → {peer}"),
            );
        }
    }
}
