//! Cascading under faults (issue 22, "Failures"): a node SIGKILLed mid-call costs only its own
//! participants (the survivors lose no packet, its producers close within the TTL + 1 s, its
//! user joins again through the other node of its region and hears everyone), and Redis down
//! (killed and restarted empty, or stalled) leaves the existing cascades forwarding while new
//! rooms get 503. Real redis-server, real choir processes, str0m peers (tests/common/peer.rs).
//!
//! Loss is measured over a window between two quiescent moments (every speaker muted, what it
//! sent arrived) that spans the fault: of the packets a speaker wrote in the window, a consumer
//! on another node got every one but those the kernel dropped at a receiving socket on the way
//! (the survivors' and this process's sockets, `udp_drops`), each once.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/mesh.rs"]
mod mesh;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::net::udp_drops;
use common::peer::{run, run_until, JoinOptions, Peer};
use common::{Daemon, EventStream};
use harness::{call_at, get, sigkill_now};
use mesh::{check_clean, heard, hush, lives_on, regions, room_nodes, unmute, until_listed};
use redis_server::Redis;
use serde_json::Value;

/// The registry's TTL (src/cluster/mod.rs).
const TTL: Duration = Duration::from_secs(6);
/// A silent link is removed after this (src/cluster/cascade.rs).
const GRACE: Duration = Duration::from_secs(5);

/// Datagrams the kernel dropped at receiving sockets so far: `nodes`' and this process's (the
/// peers').
fn drops(nodes: &[&Daemon]) -> u64 {
    nodes.iter().map(|d| udp_drops(d.pid())).sum::<u64>() + udp_drops(std::process::id())
}

/// How many of speaker `s`'s packets `from..to` `p` received.
fn got_of(p: &Peer, s: u8, from: u16, to: u16) -> u64 {
    let n: BTreeSet<u16> = p
        .received_from(s)
        .iter()
        .map(|g| g.n)
        .filter(|n| (from..to).contains(n))
        .collect();
    n.len() as u64
}

/// Drives `peers` until `check` (asked every 100 ms) holds or `timeout` passes.
fn poll(peers: &mut [Peer], timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut held = false;
    run_until(peers, timeout, |_| {
        if last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            held = check();
        }
        held
    })
}

/// Peer `k` (on node `d`) consumes `pids` once `d` lists them all for it.
fn consume(peers: &mut [Peer], k: usize, d: &Daemon, pids: &[String]) {
    let (channel, user) = (peers[k].channel.clone(), peers[k].user.clone());
    assert!(
        until_listed(peers, d, &channel, &user, pids, Duration::from_secs(15)),
        "{} never listed {pids:?} for {user}: {}",
        d.base,
        d.get("cluster").1
    );
    for pid in pids {
        peers[k].consume(d, pid);
    }
}

/// The producer ids of `peers`.
fn producers(peers: &[Peer]) -> Vec<String> {
    peers
        .iter()
        .map(|p| p.producer_id.clone().unwrap())
        .collect()
}

/// Every peer (on `on[k]`) consumes every other one's producer.
fn consume_all(peers: &mut [Peer], on: &[&Daemon]) {
    let pids = producers(peers);
    for (k, d) in on.iter().enumerate() {
        let others: Vec<String> = (0..pids.len())
            .filter(|&j| j != k)
            .map(|j| pids[j].clone())
            .collect();
        consume(peers, k, d, &others);
    }
}

/// Whether every peer heard at least `n` packets of each other peer.
fn all_hear(peers: &[Peer], n: usize) -> bool {
    peers.iter().all(|p| {
        peers
            .iter()
            .all(|s| s.index == p.index || p.received_from(s.index).len() >= n)
    })
}

/// The `producerClosed` and `participantLeft` events waiting on `events`.
fn closing(events: &[EventStream]) -> Vec<(usize, Value)> {
    let mut out = Vec::new();
    for (k, e) in events.iter().enumerate() {
        while let Some(v) = e.next(Duration::ZERO) {
            if v["type"] == "producerClosed" || v["type"] == "participantLeft" {
                out.push((k, v));
            }
        }
    }
    out
}

/// Asserts that each directed pair of `peers` lost nothing of the window `from` (written
/// counts at its start) .. now but what the kernel dropped (`dropped`); returns the packets
/// each pair got.
fn lossless(peers: &[Peer], from: &[u16], dropped: u64) -> Vec<String> {
    let mut report = Vec::new();
    for (k, s) in peers.iter().enumerate() {
        let (lo, hi) = (from[k], s.written);
        let sent = u64::from(hi.wrapping_sub(lo));
        for p in peers.iter().filter(|p| p.index != s.index) {
            let got = got_of(p, s.index, lo, hi);
            assert!(
                got <= sent && sent - got <= dropped,
                "{} got {got} of the {sent} packets {} wrote in the window (sockets dropped {dropped})",
                p.user,
                s.user
            );
            report.push(format!("{}→{} {got}/{sent}", s.user, p.user));
        }
    }
    report
}

#[test]
fn a_killed_node_costs_only_its_own_participants() {
    let redis = Redis::start();
    // Two nodes in region a (one carries the room, the other is left for the rejoin), one in b
    // and one in c: the room has three nodes, and the survivors of a kill still relay to each
    // other.
    let nodes = regions(&redis, &["a", "a", "b", "c"]);
    let channel = "fault-kill";
    let first = get(&nodes[0], &format!("rtp-capabilities/{channel}"));
    assert_eq!(first.status, 200, "{}", first.body);
    let ai = match first.node.as_deref() {
        Some("node-1") => 0,
        Some("node-2") => 1,
        other => panic!("region a's room placed on {other:?}"),
    };
    let (dead, spare) = (&nodes[ai], &nodes[1 - ai]);
    let spare_id = format!("node-{}", 2 - ai);
    let on = [dead, &nodes[2], &nodes[3]];
    let mut peers: Vec<Peer> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(k, u)| Peer::join(on[k], channel, u, k as u8 + 1, JoinOptions::default()))
        .collect();
    for (p, d) in peers.iter().zip(on) {
        lives_on(p, d);
    }
    let pid_a = peers[0].producer_id.clone().unwrap();
    consume_all(&mut peers, &on);
    let heard_all = run_until(&mut peers, Duration::from_secs(15), |p| all_hear(p, 100));
    let counts: Vec<_> = peers.iter().map(heard).collect();
    assert!(heard_all, "heard (sender → packets): {counts:?}");
    let events = [nodes[2].events(channel, "b"), nodes[3].events(channel, "c")];
    let survivors = [&nodes[2], &nodes[3]];

    // The window: everyone speaks, node a dies a second in, the survivors speak on until both
    // have closed a's producer, and a second more.
    hush(&mut peers);
    assert!(closing(&events).is_empty());
    let drops0 = drops(&survivors);
    let from: Vec<u16> = peers[1..].iter().map(|p| p.written).collect();
    unmute(&mut peers);
    run(&mut peers, Duration::from_secs(1));
    let killed = Instant::now();
    sigkill_now(dead);
    drop(peers.remove(0)); // its transports died with its node
    let mut seen: [[Option<Duration>; 2]; 2] = Default::default();
    let mut other = Vec::new();
    run_until(&mut peers, TTL + Duration::from_secs(2), |_| {
        for (k, v) in closing(&events) {
            if v["type"] == "producerClosed" && v["producerId"] == pid_a.as_str() {
                seen[k][0].get_or_insert(killed.elapsed());
            } else if v["type"] == "participantLeft" && v["userId"] == "a" {
                assert_eq!(v["reason"], "node_lost", "{v}");
                seen[k][1].get_or_insert(killed.elapsed());
            } else {
                other.push(v);
            }
        }
        seen.iter().flatten().all(Option::is_some)
    });
    run(&mut peers, Duration::from_secs(1));
    hush(&mut peers);
    let dropped = drops(&survivors) - drops0;
    eprintln!("after SIGKILL, [producerClosed, participantLeft] on b and c: {seen:?}");
    for (k, s) in seen.iter().enumerate() {
        for (what, t) in ["producerClosed", "participantLeft node_lost"]
            .iter()
            .zip(s)
        {
            let t = t.unwrap_or_else(|| panic!("no {what} of a on {}", survivors[k].base));
            assert!(t <= TTL + Duration::from_secs(1), "{what} after {t:?}");
        }
    }
    assert!(other.is_empty(), "other closings on b or c: {other:?}");
    // Between the survivors, across the kill: every packet but the kernel's drops.
    let window = lossless(&peers, &from, dropped);
    eprintln!(
        "window across the kill ({:?}): {window:?}, sockets dropped {dropped}",
        killed.elapsed()
    );
    for p in &peers {
        check_clean(p);
    }

    // a joins again through its region's other node: the room is placed there (region a has a
    // node left), linked to b and c, and everyone hears everyone.
    let mut placed = None;
    let replaced = poll(&mut peers, Duration::from_secs(10), || {
        let r = get(spare, &format!("rtp-capabilities/{channel}"));
        assert!(
            r.status == 200 || r.status == 503,
            "{} {}",
            r.status,
            r.body
        );
        placed = r.node.filter(|_| r.status == 200);
        placed.is_some()
    });
    assert!(replaced, "the room was not placed again in region a");
    assert_eq!(placed.as_deref(), Some(spare_id.as_str()));
    eprintln!(
        "region a placed again {:?} after the kill",
        killed.elapsed()
    );
    let mut a = Peer::join(spare, channel, "a", 4, JoinOptions::default());
    lives_on(&a, spare);
    a.muted = true;
    peers.push(a);
    let want: BTreeMap<String, String> =
        [("a", spare_id.as_str()), ("b", "node-3"), ("c", "node-4")]
            .iter()
            .map(|(r, n)| (r.to_string(), n.to_string()))
            .collect();
    for d in [spare, &nodes[2], &nodes[3]] {
        let linked = poll(&mut peers, Duration::from_secs(10), || {
            room_nodes(d, channel) == want
        });
        assert!(linked, "{}: {:?}", d.base, room_nodes(d, channel));
    }
    let pids = producers(&peers);
    consume(&mut peers, 0, &nodes[2], &pids[2..]);
    consume(&mut peers, 1, &nodes[3], &pids[2..]);
    consume(&mut peers, 2, spare, &pids[..2]);
    unmute(&mut peers);
    let rejoined = Instant::now();
    let heard_all = run_until(&mut peers, Duration::from_secs(15), |p| all_hear(p, 50));
    let counts: Vec<_> = peers.iter().map(heard).collect();
    assert!(heard_all, "heard (sender → packets): {counts:?}");
    eprintln!(
        "after the rejoin, all heard 50 packets in {:?}",
        rejoined.elapsed()
    );
    hush(&mut peers);
    for p in &peers {
        check_clean(p);
    }
    assert!(closing(&events).is_empty());
}

/// The cascade part of `d`'s `GET /cluster`: its links and counters.
fn cascade(d: &Daemon) -> Value {
    let r = get(d, "cluster");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["cascade"].clone()
}

/// Packets `p` received from `s` in each second from `start` on (`n` seconds).
fn per_second(p: &Peer, s: u8, start: Instant, n: u32) -> Vec<usize> {
    let mut bins = vec![0; n as usize];
    for g in p.received_from(s) {
        if let Some(i) = g.at.checked_duration_since(start).map(|d| d.as_secs()) {
            if let Some(b) = bins.get_mut(i as usize) {
                *b += 1;
            }
        }
    }
    bins
}

#[test]
fn redis_down_keeps_existing_cascades_forwarding() {
    let mut redis = Redis::start();
    let nodes = regions(&redis, &["a", "b"]);
    let channel = "fault-redis";
    let on = [&nodes[0], &nodes[1]];
    let mut peers: Vec<Peer> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(k, u)| Peer::join(on[k], channel, u, k as u8 + 1, JoinOptions::default()))
        .collect();
    for (p, d) in peers.iter().zip(on) {
        lives_on(p, d);
    }
    consume_all(&mut peers, &on);
    let heard_all = run_until(&mut peers, Duration::from_secs(15), |p| all_hear(p, 100));
    let counts: Vec<_> = peers.iter().map(heard).collect();
    assert!(heard_all, "heard (sender → packets): {counts:?}");
    let events = [nodes[0].events(channel, "a"), nodes[1].events(channel, "b")];
    let before: Vec<Value> = nodes.iter().map(cascade).collect();
    for c in &before {
        assert_eq!(c["links"].as_array().map(Vec::len), Some(1), "{c}");
        assert_eq!(c["links"][0]["ready"], true, "{c}");
    }
    // Redis dies and comes back empty (a restart without persistence: the nodes re-claim their
    // rooms, the first one back before its peers), then stalls (SIGSTOP: connections stay
    // open, nothing is answered).
    for fault in [Fault::Restart, Fault::Stall] {
        outage(&mut redis, &nodes, &mut peers, &events, &before, fault);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Stall,
    Restart,
}

/// One Redis outage of `fault` past the link's grace and the registry's TTL, while `peers`
/// (one per node of `nodes`, each consuming the other) speak: nothing of the cascade notices.
fn outage(
    redis: &mut Redis,
    nodes: &[Daemon],
    peers: &mut [Peer],
    events: &[EventStream],
    before: &[Value],
    fault: Fault,
) {
    let on = [&nodes[0], &nodes[1]];
    let channel = "fault-redis";
    // The window: both speak, Redis goes a second in for longer than the link's grace and the
    // registry's TTL, then comes back; they speak on for a TTL more.
    hush(peers);
    assert!(closing(events).is_empty());
    let drops0 = drops(&on);
    let from: Vec<u16> = peers.iter().map(|p| p.written).collect();
    unmute(peers);
    run(peers, Duration::from_secs(1));
    let outage = TTL + Duration::from_secs(2);
    assert!(outage > GRACE);
    match fault {
        Fault::Stall => redis.pause(),
        Fault::Restart => redis.kill(),
    }
    let paused = Instant::now();
    // Requests during the outage go from a thread per node: the peers keep running meanwhile.
    // A placing request (a new room) 1 s in and past the TTL, and one that does not place (the
    // existing room, on its node).
    let askers: Vec<_> = nodes
        .iter()
        .zip(["a", "b"])
        .enumerate()
        .map(|(k, (d, user))| {
            let base = d.base.clone();
            std::thread::spawn(move || {
                let mut replies = Vec::new();
                for (round, at) in [Duration::from_secs(1), TTL].into_iter().enumerate() {
                    std::thread::sleep(at.saturating_sub(paused.elapsed()));
                    let new = format!("rtp-capabilities/fresh-{fault:?}-{round}-{k}");
                    let listed = format!("producers/fault-redis/{user}");
                    for path in [new, listed] {
                        let r = call_at(&base, "GET", &path, None, &[]);
                        replies.push((k, path, paused.elapsed(), r));
                    }
                }
                // Redis back (the main thread resumes it at `outage`): a new room is placed
                // again, within 5 s.
                std::thread::sleep(outage.saturating_sub(paused.elapsed()));
                let path = format!("rtp-capabilities/fresh-{fault:?}-after-{k}");
                let placed = loop {
                    let r = call_at(&base, "GET", &path, None, &[]);
                    let since = paused.elapsed() - outage;
                    if r.status == 200 || since > Duration::from_secs(5) {
                        break (r.status, since);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                (replies, placed)
            })
        })
        .collect();
    let mut bad = Vec::new();
    run_until(peers, outage, |_| {
        bad.extend(closing(events));
        false
    });
    match fault {
        Fault::Stall => redis.resume(),
        Fault::Restart => redis.restart(),
    }
    run_until(peers, TTL + Duration::from_secs(1), |_| {
        bad.extend(closing(events));
        false
    });
    hush(peers);
    let dropped = drops(&on) - drops0;
    bad.extend(closing(events));
    let removed: Vec<String> = nodes
        .iter()
        .flat_map(|d| d.logs())
        .filter(|l| l.contains("cascade link removed") || l.contains("lost its data"))
        .collect();
    assert!(
        bad.is_empty(),
        "{fault:?}: closings during or after the outage: {bad:?}; {removed:#?}"
    );
    let window = lossless(peers, &from, dropped);
    let secs = outage.as_secs() as u32;
    let bins: Vec<Vec<usize>> = [(0, 2u8), (1, 1)]
        .iter()
        .map(|&(k, s)| per_second(&peers[k], s, paused, secs))
        .collect();
    eprintln!(
        "{fault:?}: window across the outage: {window:?}, sockets dropped {dropped}; packets per second of the outage (b→a, a→b): {bins:?}"
    );
    // 50 packets a second each way: none of the outage's seconds went quiet (a margin for a
    // stall of this process).
    for b in &bins {
        assert!(b.iter().all(|&n| n >= 25), "{bins:?}");
    }
    for p in peers.iter() {
        check_clean(p);
    }

    // During the outage: a new room is refused (503, JSON), the existing one is served.
    let (replies, placed): (Vec<_>, Vec<_>) = askers.into_iter().map(|a| a.join().unwrap()).unzip();
    for (k, path, at, r) in replies.into_iter().flatten() {
        eprintln!("node-{} {path} at {at:?}: {} {}", k + 1, r.status, r.body);
        assert!(at < outage, "{path} answered after the outage ({at:?})");
        if path.starts_with("rtp-capabilities") {
            assert_eq!(r.status, 503, "{path}: {}", r.body);
            assert!(r.body["error"].is_string(), "{path}: {}", r.body);
            assert!(r.retry_after.is_some(), "{path}: no Retry-After");
        } else {
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            assert_eq!(
                r.body["producers"].as_array().map(Vec::len),
                Some(1),
                "{path}: {}",
                r.body
            );
        }
    }

    // Redis back: new rooms are placed again, and the room's link is the one it had.
    eprintln!("after Redis came back, a new room placed through node-1, node-2: {placed:?}");
    for (k, (status, _)) in placed.iter().enumerate() {
        assert_eq!(*status, 200, "no new room placed through node-{}", k + 1);
    }
    let both: BTreeMap<String, String> = [("a", "node-1"), ("b", "node-2")]
        .iter()
        .map(|(r, n)| (r.to_string(), n.to_string()))
        .collect();
    for d in nodes {
        assert!(
            poll(peers, Duration::from_secs(5), || room_nodes(d, channel)
                == both),
            "{fault:?}, {}: {:?}",
            d.base,
            room_nodes(d, channel)
        );
    }
    for (d, was) in nodes.iter().zip(before) {
        let now = cascade(d);
        assert_eq!(now["links"], was["links"], "{}", d.base);
        for counter in ["linksSetUp", "linksRemoved", "setUpFailed", "refused"] {
            assert_eq!(
                now["counters"][counter], was["counters"][counter],
                "{counter} on {}: {now} (was {was})",
                d.base
            );
        }
    }
    assert!(closing(events).is_empty());
}
