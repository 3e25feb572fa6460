//! Regions (`--region`): one node per room per region, the node of the region of the node that
//! received the request, placed atomically in Redis; a lost node frees only its own region's
//! entry. Placement only: media between a room's nodes of different regions is the cascade's
//! (not tested here; participants of different regions do not hear each other yet).

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::Daemon;
use harness::{choir_exit, create_transport, get, listed, node, ports_of, sigkill, until, Reply};
use redis_server::Redis;
use serde_json::Value;

/// The registry's TTL (src/cluster/mod.rs).
const TTL: Duration = Duration::from_secs(6);

/// Redis and nodes `node-1`... with these regions ("" = no `--region`), all registered.
fn regions(regions: &[&str]) -> (Redis, Vec<Daemon>) {
    let redis = Redis::start();
    let nodes: Vec<Daemon> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let extra: Vec<&str> = if r.is_empty() {
                vec![]
            } else {
                vec!["--region", r]
            };
            node(&redis, i + 1, &extra)
        })
        .collect();
    for d in &nodes {
        assert!(
            until(Duration::from_secs(10), || listed(d).len() == regions.len()),
            "{} lists {:?}",
            d.base,
            listed(d)
        );
    }
    (redis, nodes)
}

/// The room's nodes as `d`'s `GET /cluster` shows them: region → node id.
fn room_nodes(d: &Daemon, channel: &str) -> BTreeMap<String, String> {
    let r = get(d, "cluster");
    assert_eq!(r.status, 200, "{}", r.body);
    set_of(&r.body["roomNodes"][channel])
}

fn set_of(v: &Value) -> BTreeMap<String, String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["region"].as_str().unwrap().to_string(),
                        n["node"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The directory's hash of the room's nodes in the regions other than "".
fn regions_hash(redis: &Redis, channel: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("choir:regions:{channel}"))
        .query(&mut redis.client())
        .unwrap()
}

/// A transport made through `via` lives on `on`: the reply names it and its candidates are in
/// its port range.
fn transport_on(via: &Daemon, channel: &str, user: &str, on: &Daemon, on_id: &str) -> Reply {
    let r = get(via, &format!("rtp-capabilities/{channel}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.node.as_deref(), Some(on_id), "{}", r.body);
    let r = create_transport(via, channel, user);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.node.as_deref(), Some(on_id), "{}", r.body);
    for port in ports_of(&r.body) {
        assert!(
            (on.rtc.0..=on.rtc.1).contains(&port),
            "port {port} outside {:?}",
            on.rtc
        );
    }
    r
}

#[test]
fn the_region_setting_is_a_short_token() {
    for bad in ["EU", "eu_west", "eu west", "eu:1", &"a".repeat(33)] {
        let (code, err, _) = choir_exit(&["--print-config", "--region", bad], &[]);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--region"), "{err}");
    }
    let (code, err, _) = choir_exit(&["--print-config"], &[("CHOIR_REGION", "Frankfurt")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CHOIR_REGION"), "{err}");
    for good in ["eu-west-1", &"a".repeat(32), ""] {
        let (code, err, _) = choir_exit(&["--print-config", "--region", good], &[]);
        assert_eq!(code, Some(0), "{good:?}: {err}");
    }
}

#[test]
fn a_room_has_one_node_per_region_and_the_cluster_lists_them() {
    let (redis, nodes) = regions(&["a", "a", "b"]);
    for d in &nodes {
        let r = get(d, "cluster");
        let by_id: BTreeMap<&str, &str> = r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_str().unwrap(), n["region"].as_str().unwrap()))
            .collect();
        assert_eq!(
            by_id,
            BTreeMap::from([("node-1", "a"), ("node-2", "a"), ("node-3", "b")])
        );
    }
    // Region a's first request places the room on one of its nodes; the other a-node routes
    // there; region b's request places it on the b node.
    let first = get(&nodes[1], "rtp-capabilities/span");
    assert_eq!(first.status, 200, "{}", first.body);
    let a_owner = first.node.clone().unwrap();
    let a = match a_owner.as_str() {
        "node-1" => &nodes[0],
        "node-2" => &nodes[1],
        other => panic!("region a's room placed on {other}"),
    };
    transport_on(&nodes[0], "span", "ann", a, &a_owner);
    transport_on(&nodes[1], "span", "abe", a, &a_owner);
    transport_on(&nodes[2], "span", "bob", &nodes[2], "node-3");
    transport_on(&nodes[0], "span", "amy", a, &a_owner);

    let both = map(&[("a", &a_owner), ("b", "node-3")]);
    assert_eq!(room_nodes(&nodes[2], "span"), both);
    assert_eq!(room_nodes(a, "span"), both);
    assert_eq!(
        regions_hash(&redis, "span"),
        both,
        "a cluster of regions writes only the regions hash"
    );
    assert_eq!(redis.owner("span"), None);
    // `/health` shows the same, as of the last heartbeat.
    assert!(until(Duration::from_secs(5), || {
        let h = get(&nodes[2], "health");
        h.body["region"] == "b" && set_of(&h.body["roomNodes"]["span"]) == both
    }));

    // A room only region a has: requests that do not place it answer 404 in region b.
    let r = get(&nodes[0], "rtp-capabilities/only-a");
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["producers/only-a/u", "events/only-a/u"] {
        let r = get(&nodes[2], path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains("only-a"),
            "{}",
            r.body
        );
    }
    assert_eq!(regions_hash(&redis, "only-a").len(), 1);
}

#[test]
fn simultaneous_first_joins_through_both_nodes_of_a_region_agree_on_one_owner() {
    let (_redis, nodes) = regions(&["a", "a", "b"]);
    let bases: Vec<String> = nodes.iter().map(|d| d.base.clone()).collect();
    for round in 0..10 {
        let channel = format!("race-{round}");
        // Six first requests at once, two through each node.
        let replies: Vec<(usize, u16, Option<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let base = bases[i % 3].clone();
                    let channel = channel.clone();
                    s.spawn(move || {
                        let r = harness::call_at(
                            &base,
                            "GET",
                            &format!("rtp-capabilities/{channel}"),
                            None,
                            &[],
                        );
                        (i % 3, r.status, r.node)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut a_owners = BTreeSet::new();
        for (via, status, node) in replies {
            assert_eq!(status, 200, "{channel} through node {}", via + 1);
            let node = node.unwrap();
            if via == 2 {
                assert_eq!(node, "node-3", "{channel}");
            } else {
                a_owners.insert(node);
            }
        }
        assert_eq!(a_owners.len(), 1, "{channel}: {a_owners:?}");
        assert!(
            ["node-1", "node-2"].contains(&a_owners.first().unwrap().as_str()),
            "{a_owners:?}"
        );
    }
}

#[test]
fn a_lost_node_frees_only_its_regions_entry_and_no_region_is_a_region_of_its_own() {
    let (redis, mut nodes) = regions(&["a", "b", ""]);
    transport_on(&nodes[0], "lose", "ann", &nodes[0], "node-1");
    transport_on(&nodes[1], "lose", "bob", &nodes[1], "node-2");
    // The node without a region: the room's node in region "", under the key of a cluster
    // without regions.
    transport_on(&nodes[2], "lose", "ned", &nodes[2], "node-3");
    assert_eq!(redis.owner("lose").as_deref(), Some("node-3"));
    let all = map(&[("", "node-3"), ("a", "node-1"), ("b", "node-2")]);
    assert_eq!(room_nodes(&nodes[0], "lose"), all);

    let b = nodes.remove(1);
    let killed = Instant::now();
    sigkill(b);
    let rest = map(&[("", "node-3"), ("a", "node-1")]);
    assert!(
        until(TTL + Duration::from_secs(1), || room_nodes(
            &nodes[0], "lose"
        ) == rest
            && regions_hash(&redis, "lose") == map(&[("a", "node-1")])),
        "after {:?}: {:?}",
        killed.elapsed(),
        room_nodes(&nodes[0], "lose")
    );
    // Region a's room and region ""'s are untouched: their participants are still there.
    let r = get(&nodes[0], "producers/lose/ann");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&nodes[1], "producers/lose/ned");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(redis.owner("lose").as_deref(), Some("node-3"));

    // A new node of region b places the room there again.
    let redis_ref = &redis;
    let b2 = node(redis_ref, 4, &["--region", "b"]);
    assert!(until(Duration::from_secs(10), || listed(&b2).len() == 3));
    transport_on(&b2, "lose", "bea", &b2, "node-4");
    assert_eq!(
        room_nodes(&nodes[0], "lose"),
        map(&[("", "node-3"), ("a", "node-1"), ("b", "node-4")])
    );
}

#[test]
fn after_a_redis_flush_each_regions_node_reclaims_its_entry_and_nothing_is_placed_again() {
    let (redis, nodes) = regions(&["a", "a", "b"]);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let x = harness::channel_on(n2, "node-1", "flush");
    transport_on(n2, &x, "alice", n1, "node-1");
    transport_on(n3, &x, "bob", n3, "node-3");
    let both = map(&[("a", "node-1"), ("b", "node-3")]);
    assert_eq!(regions_hash(&redis, &x), both);

    // The a-owner stalls while Redis forgets everything: region a's other node neither places
    // the room on itself nor answers 404.
    harness::sigstop(n1);
    redis.flushall();
    assert!(
        until(Duration::from_secs(5), || redis.has_node("node-2")
            && redis.has_node("node-3")),
        "nodes 2 and 3 did not register again"
    );
    for path in [
        format!("rtp-capabilities/{x}"),
        format!("producers/{x}/alice"),
    ] {
        let r = get(n2, &path);
        assert_eq!(r.status, 503, "{path}: {}", r.body);
    }
    harness::sigcont(n1);
    assert!(
        until(Duration::from_secs(5), || regions_hash(&redis, &x) == both),
        "{:?}",
        regions_hash(&redis, &x)
    );
    let r = get(n2, &format!("producers/{x}/alice"));
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("node-1")),
        "{}",
        r.body
    );
    let r = get(n3, &format!("producers/{x}/bob"));
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("node-3")),
        "{}",
        r.body
    );
}

#[test]
fn a_draining_node_takes_no_new_placements_of_its_region_and_keeps_its_rooms() {
    let (_redis, nodes) = regions(&["a", "a", "b"]);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let keep = harness::channel_on(n2, "node-1", "keep");
    transport_on(n2, &keep, "alice", n1, "node-1");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(n1.pid() as i32, libc::SIGTERM) };
    assert!(until(Duration::from_secs(5), || {
        get(n2, "cluster").body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "node-1" && n["state"] == "draining")
    }));
    for i in 0..6 {
        let via = &nodes[i % 2];
        let r = get(via, &format!("rtp-capabilities/new-{i}"));
        assert_eq!(
            (r.status, r.node.as_deref()),
            (200, Some("node-2")),
            "{}",
            r.body
        );
    }
    // Its own room still takes joiners of its region.
    transport_on(n2, &keep, "amy", n1, "node-1");
}

#[test]
fn a_split_in_one_region_is_settled_toward_the_participants_and_leaves_the_others_alone() {
    let (redis, nodes) = regions(&["a", "a", "b"]);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let x = harness::channel_on(n2, "node-1", "split");
    transport_on(n2, &x, "alice", n1, "node-1");
    transport_on(n3, &x, "bob", n3, "node-3");

    // The a-owner stalls past the TTL: region a's entry is freed and placed again on node 2;
    // region b's stays.
    harness::sigstop(n1);
    let placed = until(TTL + Duration::from_secs(4), || {
        let r = get(n2, &format!("rtp-capabilities/{x}"));
        r.status == 200 && r.node.as_deref() == Some("node-2")
    });
    let during = regions_hash(&redis, &x);
    harness::sigcont(n1);
    assert!(placed, "the stalled owner's room was not placed again");
    assert_eq!(during, map(&[("a", "node-2"), ("b", "node-3")]));

    // Node 1 comes back with alice: region a's entry goes back to it.
    let both = map(&[("a", "node-1"), ("b", "node-3")]);
    assert!(
        until(Duration::from_secs(6), || regions_hash(&redis, &x) == both),
        "{:?}",
        regions_hash(&redis, &x)
    );
    assert!(until(Duration::from_secs(4), || {
        let r = get(n2, &format!("producers/{x}/alice"));
        (r.status, r.node.as_deref()) == (200, Some("node-1"))
    }));
    let r = get(n3, &format!("producers/{x}/bob"));
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("node-3")),
        "{}",
        r.body
    );
}
