//! Cluster mode against a real `redis-server` and real choir processes on loopback: registry,
//! placement, proxying (API, event streams, media straight to the owner), node death, drain,
//! Redis restarts, and bad input.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::process::Command;
use std::time::{Duration, Instant};

use common::peer::{run_until, JoinOptions, Peer};
use common::Daemon;
use harness::{
    call, call_at, channel_on, choir_exit, cluster, create_transport, gaps, get, listed, node,
    ports_of, post, sigkill, token, until, SECRET,
};
use redis_server::Redis;
use serde_json::{json, Value};

/// The registry's TTL (src/cluster/mod.rs).
const TTL: Duration = Duration::from_secs(6);

#[test]
fn nodes_register_and_a_killed_node_disappears_within_the_ttl() {
    let (_redis, mut nodes) = cluster(3);
    let all = vec!["node-1", "node-2", "node-3"];
    for d in &nodes {
        assert_eq!(listed(d), all);
        let h = get(d, "health");
        assert_eq!(h.status, 200, "{}", h.body);
        assert_eq!(h.body["cluster"], "connected");
    }
    let r = get(&nodes[0], "cluster");
    assert_eq!(r.body["self"], "node-1");
    let entry = &r.body["nodes"][1];
    assert_eq!(entry["state"], "serving");
    assert!(entry["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    for field in ["region", "rooms", "participants", "consumers", "load"] {
        assert!(!entry[field].is_null(), "{field} in {entry}");
    }
    let metrics = ureq::get(&format!("{}/metrics", nodes[0].base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("choir_cluster_nodes 3"), "{metrics}");
    assert!(metrics.contains("choir_cluster_connected 1"), "{metrics}");

    let killed = Instant::now();
    sigkill(nodes.pop().unwrap());
    let gone = until(TTL + Duration::from_secs(1), || {
        listed(&nodes[0]) == ["node-1", "node-2"] && listed(&nodes[1]) == ["node-1", "node-2"]
    });
    assert!(gone, "still listed after {:?}", killed.elapsed());
}

#[test]
fn rooms_spread_over_the_nodes_and_concurrent_first_joins_agree_on_one_owner() {
    let (redis, nodes) = cluster(3);
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..30 {
        let r = get(&nodes[0], &format!("rtp-capabilities/spread-{i}"));
        assert_eq!(r.status, 200, "{}", r.body);
        *per_node.entry(r.node.expect("X-Choir-Node")).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|&n| n <= 18), "{per_node:?}");

    // Ten first joins of one channel at once, through all three nodes.
    let replies: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let base = nodes[i % 3].base.clone();
                s.spawn(move || {
                    let caps = call_at(&base, "GET", "rtp-capabilities/race", None, &[]);
                    let body = json!({"channelId": "race", "userId": format!("user-{i}"), "direction": "send"});
                    let t = call_at(&base, "POST", "create-transport", Some(&body), &[]);
                    assert_eq!(caps.node, t.node);
                    (t.status, t.node)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let owner = replies[0].1.clone().expect("owner");
    for (status, node) in &replies {
        assert_eq!(*status, 200);
        assert_eq!(node.as_deref(), Some(owner.as_str()), "{replies:?}");
    }
    assert_eq!(redis.owner("race").as_deref(), Some(owner.as_str()));
    // Exactly one room with the ten participants, on the owner.
    let participants: Vec<u64> = nodes
        .iter()
        .map(|d| get(d, "health").body["participants"].as_u64().unwrap())
        .collect();
    assert_eq!(participants.iter().sum::<u64>(), 10, "{participants:?}");
    assert!(participants.contains(&10), "{participants:?}");

    // The room's directory entry goes once the room empties (and the idle rooms' too).
    for i in 0..10 {
        let r = post(
            &nodes[i % 3],
            "leave",
            &json!({"channelId": "race", "userId": format!("user-{i}")}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        until(Duration::from_secs(10), || redis.owner("race").is_none()
            && redis.owner("spread-0").is_none()),
        "directory entries of empty rooms remain"
    );
}

#[test]
fn a_room_on_another_node_is_proxied_and_peers_on_different_nodes_hear_each_other() {
    let (_redis, nodes) = cluster(3);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let channel = channel_on(n1, "node-2", "fwd");

    // Through node 1: candidates in node 2's port range.
    let t = create_transport(n1, &channel, "probe");
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.node.as_deref(), Some("node-2"));
    for port in ports_of(&t.body) {
        assert!(
            (n2.rtc.0..=n2.rtc.1).contains(&port),
            "{port} not in {:?}",
            n2.rtc
        );
    }
    post(
        n1,
        "leave",
        &json!({"channelId": channel, "userId": "probe"}),
    );

    // An event stream opened on node 1 (not the owner), a peer through node 1 and one
    // through node 3.
    let events = n1.events(&channel, "b");
    let mut a = Peer::join(n1, &channel, "a", 1, JoinOptions::default());
    let produced = events
        .wait_for("newProducer", Duration::from_secs(10))
        .expect("newProducer on the stream proxied by node 1");
    assert_eq!(produced["userId"], "a");
    // The owner's limits apply to relayed streams (4 per user by default), refusals relayed.
    let more: Vec<_> = (0..3).map(|_| n1.events(&channel, "b")).collect();
    let r = get(n1, &format!("events/{channel}/b"));
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("event streams"));
    drop(more);
    let mut b = Peer::join(n3, &channel, "b", 2, JoinOptions::default());
    let (pa, pb) = (
        a.producer_id.clone().unwrap(),
        b.producer_id.clone().unwrap(),
    );
    a.consume(n1, &pb);
    b.consume(n3, &pa);
    let mut peers = [a, b];
    let heard = run_until(&mut peers, Duration::from_secs(15), |p| {
        p[0].received_from(2).len() >= 50 && p[1].received_from(1).len() >= 50
    });
    assert!(
        heard,
        "a got {} from b, b got {} from a",
        peers[0].received_from(2).len(),
        peers[1].received_from(1).len()
    );
    for (p, from) in [(&peers[0], 2), (&peers[1], 1)] {
        assert!(p.received_from(from).iter().all(|g| g.intact));
    }
    // Owners are cached: steady requests do not ask Redis again.
    let m = ureq::get(&format!("{}/metrics", n1.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let hits = m
        .lines()
        .find(|l| l.starts_with("choir_cluster_directory_lookups_total{result=\"hit\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(hits >= 4, "{m}");
}

#[test]
fn when_the_owner_dies_proxied_streams_get_room_closed_and_the_channel_moves() {
    let (_redis, mut nodes) = cluster(3);
    let channel = channel_on(&nodes[0], "node-2", "dies");
    let t = create_transport(&nodes[0], &channel, "u");
    assert_eq!(t.node.as_deref(), Some("node-2"));
    let events = nodes[0].events(&channel, "listener");
    std::thread::sleep(Duration::from_millis(100)); // the stream is open on node 2

    let killed = Instant::now();
    sigkill(nodes.remove(1));
    let closed = events
        .wait_for("roomClosed", TTL + Duration::from_secs(4))
        .unwrap_or_else(|| panic!("no roomClosed after {:?}", killed.elapsed()));
    assert_eq!(closed["reason"], "node_lost");
    assert!(
        events.next(Duration::from_secs(2)).is_none(),
        "stream ended"
    );

    // A new join of the channel works on a live node within TTL + 2 s of the death.
    let moved = until(TTL + Duration::from_secs(2) - killed.elapsed(), || {
        let caps = get(&nodes[0], &format!("rtp-capabilities/{channel}"));
        caps.status == 200 && create_transport(&nodes[0], &channel, "u2").status == 200
    });
    assert!(moved, "not placed again after {:?}", killed.elapsed());
    let t = create_transport(&nodes[1], &channel, "u3");
    assert_eq!(t.status, 200, "{}", t.body);
    let owner = t.node.unwrap();
    assert!(owner == "node-1" || owner == "node-3", "{owner}");
    let d = if owner == "node-1" {
        &nodes[0]
    } else {
        &nodes[1]
    };
    for port in ports_of(&t.body) {
        assert!((d.rtc.0..=d.rtc.1).contains(&port));
    }
}

#[test]
fn a_draining_node_takes_no_new_rooms_keeps_its_own_and_exits_when_they_empty() {
    let (_redis, mut nodes) = cluster(2);
    let channel = channel_on(&nodes[1], "node-1", "drain");
    assert_eq!(create_transport(&nodes[1], &channel, "u1").status, 200);

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(nodes[0].pid() as i32, libc::SIGTERM) };
    assert!(until(Duration::from_secs(5), || {
        let r = get(&nodes[1], "cluster");
        r.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "node-1" && n["state"] == "draining")
    }));
    for i in 0..10 {
        for d in &nodes {
            let r = get(d, &format!("rtp-capabilities/after-drain-{i}"));
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(
                r.node.as_deref(),
                Some("node-2"),
                "a new room on a draining node"
            );
        }
    }
    // Its room still takes joiners, through either node.
    let t = create_transport(&nodes[1], &channel, "u2");
    assert_eq!((t.status, t.node.as_deref()), (200, Some("node-1")));
    let t = create_transport(&nodes[0], &channel, "u3");
    assert_eq!((t.status, t.node.as_deref()), (200, Some("node-1")));
    std::thread::sleep(Duration::from_millis(500));
    assert!(get(&nodes[0], "health").status == 200, "still running");

    for u in ["u1", "u2", "u3"] {
        let r = post(
            &nodes[1],
            "leave",
            &json!({"channelId": channel, "userId": u}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let status = nodes
        .remove(0)
        .wait_exit(Duration::from_secs(10))
        .expect("the drained node exits");
    assert!(status.success(), "{status:?}");
    assert!(until(Duration::from_secs(2), || listed(&nodes[0]) == ["node-2"]));
}

#[test]
fn a_second_sigterm_stops_a_draining_node_at_once() {
    let redis = Redis::start();
    let nodes = vec![node(&redis, 1, &[])];
    let channel = "held";
    // A node is registered before it answers: its first request can place a room.
    let r = get(&nodes[0], &format!("rtp-capabilities/{channel}"));
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("node-1")),
        "{}",
        r.body
    );
    assert_eq!(create_transport(&nodes[0], channel, "u").status, 200);
    let pid = nodes[0].pid() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(until(Duration::from_secs(5), || get(&nodes[0], "health")
        .body["state"]
        == "draining"));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut nodes = nodes;
    let status = nodes.remove(0).wait_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn redis_down_keeps_rooms_forwarding_refuses_new_ones_and_recovers() {
    let (mut redis, nodes) = cluster(2);
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let channel = channel_on(n1, "node-2", "steady");
    let mut a = Peer::join(n1, &channel, "a", 1, JoinOptions::default());
    let mut b = Peer::join(n2, &channel, "b", 2, JoinOptions::default());
    let (pa, pb) = (
        a.producer_id.clone().unwrap(),
        b.producer_id.clone().unwrap(),
    );
    a.consume(n1, &pb);
    b.consume(n2, &pa);
    let mut peers = [a, b];
    assert!(run_until(&mut peers, Duration::from_secs(15), |p| {
        p[0].received_from(2).len() >= 25 && p[1].received_from(1).len() >= 25
    }));

    let before = peers[1].received_from(1).len();
    let down = Instant::now();
    redis.kill();
    assert!(run_until(&mut peers, Duration::from_secs(5), |_| {
        let h = get(n1, "health");
        h.status == 503 && h.body["cluster"] == "disconnected"
    }));
    let r = get(n1, "rtp-capabilities/new-while-down");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("directory"));
    // The placed room still answers, through the proxying node too.
    let r = get(n1, &format!("producers/{channel}/a"));
    assert_eq!(
        (r.status, r.node.as_deref()),
        (200, Some("node-2")),
        "{}",
        r.body
    );
    common::peer::run(&mut peers, Duration::from_secs(1));
    let (during, took) = (peers[1].received_from(1).len() - before, down.elapsed());
    assert!(
        during as f64 >= took.as_secs_f64() * 50.0 * 0.8,
        "{during} packets in the {took:?} Redis was down"
    );

    redis.restart();
    let back = Instant::now();
    let placed = run_until(&mut peers, Duration::from_secs(5), |_| {
        get(n1, "rtp-capabilities/new-after-restart").status == 200
    });
    assert!(
        placed,
        "no placement {:?} after Redis came back",
        back.elapsed()
    );
    assert!(run_until(&mut peers, Duration::from_secs(5), |_| {
        get(n1, "health").status == 200 && get(n2, "health").status == 200
    }));
    // The owner re-claimed its room.
    assert!(run_until(&mut peers, Duration::from_secs(5), |_| redis
        .owner(&channel)
        .as_deref()
        == Some("node-2")));
    common::peer::run(&mut peers, Duration::from_millis(500));
    for (p, from) in [(&peers[0], 2), (&peers[1], 1)] {
        assert_eq!(gaps(p, from), 0, "packets lost while Redis was down");
    }
}

#[test]
fn bad_cluster_settings_and_unusable_redis_refuse_to_start() {
    for (args, needle) in [
        (&["--redis-url", "http://127.0.0.1:6379"][..], "--redis-url"),
        (
            &["--redis-url", "redis://127.0.0.1:notaport"][..],
            "--redis-url",
        ),
        (&["--node-id", " "][..], "--node-id"),
        (&["--node-url", "ftp://x:1"][..], "--node-url"),
        (&["--node-url", "http://x:70000"][..], "--node-url"),
        (&["--drain-timeout", "soon"][..], "--drain-timeout"),
        (&["--region", "two words"][..], "--region"),
    ] {
        let (code, err, _) = choir_exit(&[&["--print-config"], args].concat(), &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    let (code, err, _) = choir_exit(&["--print-config"], &[("CHOIR_NODE_ID", "")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CHOIR_NODE_ID"), "{err}");

    // --print-config shows the cluster settings, the Redis password redacted.
    let out = Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--print-config", "--node-id", "n1", "--region", "eu"])
        .env("CHOIR_REDIS_URL", "redis://:s3cret-pw@10.0.0.2:6379/1")
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        config["cluster"]["redisUrl"],
        "redis://:***@10.0.0.2:6379/1"
    );
    assert_eq!(config["cluster"]["nodeId"], "n1");
    assert_eq!(config["cluster"]["region"], "eu");
    assert_eq!(config["cluster"]["drainTimeoutMs"], 1_800_000);

    // Unreachable Redis: a free port nothing listens on.
    let port = redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (code, err, took) = choir_exit(&["--redis-url", &url], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot reach Redis"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Wrong password: refused, and the password is not echoed.
    let redis = Redis::start();
    let url = format!("redis://:wrong-password@127.0.0.1:{}", redis.port);
    let (code, err, _) = choir_exit(&[], &[("CHOIR_REDIS_URL", &url)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
}

#[test]
fn an_owner_that_does_not_answer_gets_a_json_503_within_2_s() {
    let (_redis, nodes) = cluster(2);
    let channel = channel_on(&nodes[1], "node-1", "silent");
    harness::sigstop(&nodes[0]);
    let started = Instant::now();
    let r = get(&nodes[1], &format!("producers/{channel}/u"));
    let took = started.elapsed();
    harness::sigcont(&nodes[0]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(took < Duration::from_secs(2), "{took:?}");
    let msg = r.body["error"].as_str().expect("JSON error");
    assert!(
        msg.contains("node-1") && msg.contains("did not answer"),
        "{msg}"
    );
}

#[test]
fn the_hop_header_grants_nothing_and_tokens_pass_to_the_owner() {
    let redis = Redis::start();
    let env = [
        ("CHOIR_REDIS_URL", redis.url()),
        ("CHOIR_AUTH_SECRET", SECRET.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes: Vec<Daemon> = (1..=2)
        .map(|i| {
            let id = format!("node-{i}");
            Daemon::start_with(&["--node-id", &id, "--shards", "1"], &env)
        })
        .collect();
    let cluster_listed = |d: &Daemon| {
        get(d, "cluster").body["nodes"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    assert!(until(Duration::from_secs(10), || nodes
        .iter()
        .all(|d| cluster_listed(d) == 2)));

    for d in &nodes {
        let forged = call(
            d,
            "GET",
            "rtp-capabilities/hop",
            None,
            &[("x-choir-hop", "node-2")],
        );
        assert_eq!(forged.status, 401, "{}", forged.body);
    }
    // With tokens: rooms are proxied to their owner, which checks the token itself.
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..12 {
        let c = format!("authed-{i}");
        let auth = format!("Bearer {}", token(&c, "u"));
        let r = call(
            &nodes[0],
            "GET",
            &format!("rtp-capabilities/{c}"),
            None,
            &[("authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let owner = r.node.unwrap();
        if owner == "node-2" {
            // A token for another channel: 403, here and at the owner.
            let other = format!("Bearer {}", token("elsewhere", "u"));
            let r = call(
                &nodes[0],
                "GET",
                &format!("rtp-capabilities/{c}"),
                None,
                &[("authorization", &other)],
            );
            assert_eq!(r.status, 403, "{}", r.body);
            // A hop to a node that does not own the channel is refused, not proxied again.
            let r = call(
                &nodes[0],
                "GET",
                &format!("rtp-capabilities/{c}"),
                None,
                &[("authorization", &auth), ("x-choir-hop", "node-2")],
            );
            assert_eq!(r.status, 421, "{}", r.body);
            let r = call(
                &nodes[1],
                "GET",
                &format!("rtp-capabilities/{c}"),
                None,
                &[("authorization", &auth), ("x-choir-hop", "node-1")],
            );
            assert_eq!((r.status, r.node.as_deref()), (200, Some("node-2")));
        }
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 2, "{owners:?}");
}
