//! Reachability: ICE-TCP (RFC 6544 passive, RFC 4571 framing), IPv6 and several listen
//! addresses, with str0m peers on loopback.

mod common;

use std::time::Duration;

use common::peer::{run, run_until, JoinOptions, Peer, Via};
use common::Daemon;
use serde_json::json;

fn hear_each_other(d: &Daemon, peers: &mut [Peer]) {
    for p in peers.iter_mut() {
        p.consume_existing(d);
    }
    let connected = run_until(peers, Duration::from_secs(15), |ps| {
        ps.iter().all(Peer::is_connected)
    });
    assert!(connected, "all transports connect: {}", d.stats()["total"]);
    run(peers, Duration::from_millis(300));
    let before: Vec<u16> = peers.iter().map(|p| p.written).collect();
    peers.iter_mut().for_each(|p| p.got.clear());
    run(peers, Duration::from_secs(2));
    peers.iter_mut().for_each(|p| p.muted = true);
    run(peers, Duration::from_millis(400));
    for (r, receiver) in peers.iter().enumerate() {
        for (s, sender) in peers.iter().enumerate().filter(|(s, _)| *s != r) {
            let written = usize::from(sender.written.wrapping_sub(before[s]));
            let got = receiver.received_from(sender.index);
            assert!(
                got.len() * 100 >= written * 95,
                "{} heard {} of {written} from {} ({})",
                receiver.user,
                got.len(),
                sender.user,
                d.stats()["total"]
            );
            assert!(got.iter().all(|g| g.intact && g.pt == 100));
        }
    }
}

#[test]
fn transports_offer_udp_and_passive_tcp_candidates_udp_first() {
    let d = Daemon::start(&[]);
    d.get("rtp-capabilities/c");
    let t = d.ok(
        "create-transport",
        &json!({"channelId":"c","userId":"u","direction":"send"}),
    );
    let c = t["iceCandidates"].as_array().unwrap();
    assert_eq!(c.len(), 2, "{t}");
    assert_eq!(
        (c[0]["protocol"].as_str(), c[1]["protocol"].as_str()),
        (Some("udp"), Some("tcp"))
    );
    assert_eq!(c[1]["tcpType"], "passive");
    assert!(c[0].get("tcpType").is_none());
    assert!(
        c[0]["priority"].as_u64() > c[1]["priority"].as_u64(),
        "UDP preferred"
    );
    assert_ne!(c[0]["foundation"], c[1]["foundation"]);
    let d = Daemon::start(&["--enable-tcp", "false"]);
    d.get("rtp-capabilities/c");
    let t = d.ok(
        "create-transport",
        &json!({"channelId":"c","userId":"u","direction":"send"}),
    );
    assert_eq!(t["iceCandidates"].as_array().unwrap().len(), 1);
}

#[test]
fn a_tcp_only_peer_and_a_udp_peer_hear_each_other() {
    for mode in [&[][..], &["--port-mode", "single"][..]] {
        let d = Daemon::start(mode);
        let mut peers = vec![
            Peer::join(
                &d,
                "tcp",
                "alice",
                1,
                JoinOptions {
                    via: Via::Tcp,
                    ..Default::default()
                },
            ),
            Peer::join(&d, "tcp", "bob", 2, JoinOptions::default()),
        ];
        hear_each_other(&d, &mut peers);
        assert_eq!(peers[0].send.via, Via::Tcp);
    }
}

#[test]
fn tcp_in_both_dtls_roles() {
    let d = Daemon::start(&[]);
    let tcp = |dtls_client| JoinOptions {
        via: Via::Tcp,
        dtls_client,
        ..Default::default()
    };
    let mut peers = vec![
        Peer::join(&d, "roles", "a", 1, tcp(true)),
        Peer::join(&d, "roles", "b", 2, tcp(false)),
    ];
    hear_each_other(&d, &mut peers);
}

#[test]
fn ipv6_peers_on_loopback_hear_each_other_and_ipv4_peers() {
    let d = Daemon::start(&["--listen-ips", "127.0.0.1,::1"]);
    d.get("rtp-capabilities/v6");
    let t = d.ok(
        "create-transport",
        &json!({"channelId":"v6","userId":"probe","direction":"send"}),
    );
    let addrs: Vec<&str> = t["iceCandidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        ["127.0.0.1", "127.0.0.1", "::1", "::1"],
        "UDP and TCP per address"
    );
    d.ok("leave", &json!({"channelId":"v6","userId":"probe"}));
    let v6 = JoinOptions {
        ipv6: true,
        ..Default::default()
    };
    let mut peers = vec![
        Peer::join(&d, "v6", "a", 1, v6),
        Peer::join(&d, "v6", "b", 2, v6),
        Peer::join(&d, "v6", "c", 3, JoinOptions::default()),
        Peer::join(
            &d,
            "v6",
            "d",
            4,
            JoinOptions {
                via: Via::Tcp,
                ..v6
            },
        ),
    ];
    hear_each_other(&d, &mut peers);
}

#[test]
fn single_port_mode_uses_one_port_per_shard() {
    let d = Daemon::start(&["--port-mode", "single"]);
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..8 {
        let channel = format!("room{i}");
        d.get(&format!("rtp-capabilities/{channel}"));
        let t = d.ok(
            "create-transport",
            &json!({"channelId":channel,"userId":"u","direction":"send"}),
        );
        for c in t["iceCandidates"].as_array().unwrap() {
            ports.insert(c["port"].as_u64().unwrap() as u16);
        }
    }
    let expected: std::collections::BTreeSet<u16> = [d.rtc.0, d.rtc.0 + 1].into();
    assert_eq!(ports, expected, "shard i listens on RTC_MIN_PORT + i");
    assert_eq!(d.health()["boundPorts"], 0, "no port per transport");
}

#[test]
fn a_stalled_tcp_reader_does_not_stall_the_shard() {
    let d = Daemon::start(&["--shards", "1"]);
    let mut peers = vec![
        Peer::join(
            &d,
            "stall",
            "reader",
            1,
            JoinOptions {
                via: Via::Tcp,
                ..Default::default()
            },
        ),
        Peer::join(&d, "stall", "b", 2, JoinOptions::default()),
        Peer::join(&d, "stall", "c", 3, JoinOptions::default()),
    ];
    for p in peers.iter_mut() {
        p.consume_existing(&d);
    }
    assert!(run_until(&mut peers, Duration::from_secs(15), |ps| ps
        .iter()
        .all(Peer::is_connected)));
    // The TCP peer stops reading (and sending): its queue fills; the others go on.
    peers[0].silent = true;
    peers[0].stop_reading = true;
    let before: Vec<u16> = peers.iter().map(|p| p.written).collect();
    peers[1].got.clear();
    peers[2].got.clear();
    run(&mut peers[1..], Duration::from_secs(4));
    peers.iter_mut().for_each(|p| p.muted = true);
    run(&mut peers[1..], Duration::from_millis(400));
    for (r, s) in [(1usize, 2usize), (2, 1)] {
        let written = usize::from(peers[s].written.wrapping_sub(before[s]));
        let got = peers[r].received_from(peers[s].index).len();
        assert!(got * 100 >= written * 95, "{got} of {written}");
    }
    assert_eq!(d.health()["status"], "ok");
}
