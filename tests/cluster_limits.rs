//! Cluster mode's limits: what places a room and what only looks one up, the drain, and
//! node-to-node requests against the owner's per-client limits (issue 23).

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use harness::{
    call, channel_on, cluster, create_transport, get, listed, node, open_stream, post, until,
};
use redis_server::Redis;
use serde_json::json;

/// Rooms the directory counts on each node (`placedRooms` in `/cluster`).
fn placed(d: &common::Daemon) -> u64 {
    get(d, "cluster").body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["placedRooms"].as_u64().unwrap_or(0))
        .sum()
}

/// Finding 4: read-only requests for channels nobody opened placed rooms, filling every
/// node's directory count up to its room limit, so that real new rooms were refused.
#[test]
fn only_requests_that_create_a_room_place_it() {
    let redis = Redis::start();
    let nodes: Vec<_> = (1..=2)
        .map(|i| node(&redis, i, &["--max-rooms", "20"]))
        .collect();
    assert!(until(Duration::from_secs(10), || nodes
        .iter()
        .all(|d| listed(d).len() == 2)));
    for i in 0..60 {
        let d = &nodes[i % 2];
        let r = get(d, &format!("producers/nobody-{i}/u"));
        assert_eq!(r.status, 404, "{}", r.body);
        let r = get(d, &format!("events/nobody-{i}/u"));
        assert_eq!(r.status, 404, "{}", r.body);
        let r = post(
            d,
            "leave",
            &json!({"channelId": format!("nobody-{i}"), "userId": "u"}),
        );
        assert_eq!(r.status, 404, "{}", r.body);
        let r = post(
            d,
            "connect-transport",
            &json!({"channelId": format!("nobody-{i}"), "userId": "u", "transportId": "t",
                    "dtlsParameters": {"role": "client", "fingerprints": []}}),
        );
        assert!(
            r.status == 404 || r.status == 400,
            "{} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(placed(&nodes[0]), 0, "{}", get(&nodes[0], "cluster").body);
    // Real rooms are placed, up to the limit of both nodes.
    for i in 0..40 {
        let r = get(&nodes[i % 2], &format!("rtp-capabilities/real-{i}"));
        assert_eq!(r.status, 200, "room {i}: {}", r.body);
    }
    let r = create_transport(&nodes[0], "real-by-transport", "u");
    assert_eq!(r.status, 503, "both nodes are full: {}", r.body);
    assert_eq!(placed(&nodes[0]), 40);
}

/// Finding 7: requests for a draining node's emptied room (each a 404) held the drain open
/// for its whole timeout.
#[test]
fn a_drain_ends_when_the_last_room_empties_whatever_requests_still_arrive() {
    let (_redis, mut nodes) = cluster(2);
    let channel = channel_on(&nodes[1], "node-1", "drained");
    assert_eq!(create_transport(&nodes[1], &channel, "u").status, 200);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(nodes[0].pid() as i32, libc::SIGTERM) };
    assert!(until(Duration::from_secs(5), || get(&nodes[0], "health")
        .body["state"]
        == "draining"));
    let r = post(
        &nodes[1],
        "leave",
        &json!({"channelId": channel, "userId": "u"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let left = Instant::now();
    let n1 = nodes.remove(0);
    let pid = n1.pid();
    let mut exited = false;
    while left.elapsed() < Duration::from_secs(8) {
        // Mallory polls the room through both nodes (the draining one too, while it is up).
        let _ = get(&nodes[0], &format!("producers/{channel}/mallory"));
        // SAFETY: kill(2) with signal 0 only checks that our child still exists.
        if unsafe { libc::kill(pid as i32, 0) } != 0 || !alive(pid) {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        exited,
        "still draining {:?} after the last leave",
        left.elapsed()
    );
    let status = n1.wait_exit(Duration::from_secs(2)).expect("exited");
    assert!(status.success(), "{status:?}");
}

/// Whether process `pid` is running (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Findings 3 and 9: requests between nodes counted against the owner's per-address connection
/// cap (event streams relayed beyond it failed, and then every request through that node), and
/// a forged hop header skipped the rate limit for any client on a node's address. Now a signed
/// hop header exempts a registered node's requests; an unsigned or forged one is an ordinary
/// client's header.
#[test]
fn node_to_node_requests_are_exempt_from_the_owners_per_address_limits_forged_ones_are_not() {
    let redis = Redis::start();
    let owner = node(
        &redis,
        1,
        &[
            "--max-connections-per-ip",
            "12",
            "--rate-limit",
            "10",
            "--rate-burst",
            "10",
        ],
    );
    let relay = node(&redis, 2, &["--max-connections-per-ip", "0"]);
    assert!(until(Duration::from_secs(10), || listed(&relay).len() == 2
        && listed(&owner).len() == 2));
    let x = channel_on(&relay, "node-1", "limits");
    assert_eq!(create_transport(&relay, &x, "alice").status, 200);

    // A hop header without a valid signature is a client's: rate limited (one connection).
    let mut limited = 0;
    for forged in ["node-2", "node-2;192.0.2.1;1;00"] {
        for _ in 0..30 {
            let r = call(
                &owner,
                "GET",
                &format!("producers/{x}/alice"),
                None,
                &[("x-choir-hop", forged)],
            );
            limited += usize::from(r.status == 429);
        }
    }
    assert!(
        limited >= 30,
        "{limited} of 60 forged requests were rate limited"
    );

    // Forty relayed streams and fifty requests through node 2: none refused by the owner.
    let streams: Vec<_> = (0..40)
        .map(|i| open_stream(&relay.base, &format!("events/{x}/s{i}")))
        .collect();
    let statuses: Vec<u16> = streams.iter().map(|(s, _)| *s).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    for _ in 0..50 {
        let r = get(&relay, &format!("producers/{x}/alice"));
        assert_eq!(
            (r.status, r.node.as_deref()),
            (200, Some("node-1")),
            "{}",
            r.body
        );
    }
    let r = post(&relay, "leave", &json!({"channelId": x, "userId": "alice"}));
    assert_eq!(r.status, 200, "{}", r.body);
    drop(streams);
}

/// Finding 10: a relayed event stream held its per-user slot at the owner for seconds after
/// its client left, so that a fifth stream got 429.
#[test]
fn a_relayed_stream_frees_its_slot_when_its_client_leaves() {
    let (_redis, nodes) = cluster(2);
    let x = channel_on(&nodes[1], "node-1", "slots");
    assert_eq!(create_transport(&nodes[1], &x, "b").status, 200);
    let path = format!("events/{x}/b");
    let mut open: Vec<_> = (0..4).map(|_| open_stream(&nodes[1].base, &path)).collect();
    assert!(open.iter().all(|(s, _)| *s == 200));
    assert_eq!(
        open_stream(&nodes[1].base, &path).0,
        429,
        "the owner's limit of 4"
    );
    drop(open.pop());
    let left = Instant::now();
    let mut fifth = None;
    let freed = until(Duration::from_secs(1), || {
        let (status, s) = open_stream(&nodes[1].base, &path);
        fifth = Some(s);
        status == 200
    });
    assert!(
        freed,
        "slot still held {:?} after the client left",
        left.elapsed()
    );
}
