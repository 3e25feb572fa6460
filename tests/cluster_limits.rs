//! Cluster mode's limits: what places a room and what only looks one up, the drain, and
//! node-to-node requests against the owner's per-client limits (issue 23).

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use harness::{channel_on, cluster, create_transport, get, listed, node, post, until};
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
