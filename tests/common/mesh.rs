//! Helpers of tests/cluster_mesh.rs: nodes in regions, the relay counters of `/stats` and the
//! relay families of `/metrics`, and the checks every consumer's packets must pass.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::peer::{run, run_until, Peer};
use crate::common::Daemon;
use crate::harness::{get, listed, node, until};
use crate::redis_server::Redis;

/// Redis-backed nodes `node-1`... in these regions, all registered (each lists them all).
pub fn regions(redis: &Redis, regions: &[&str]) -> Vec<Daemon> {
    let nodes: Vec<Daemon> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| node(redis, i + 1, &["--region", r]))
        .collect();
    for d in &nodes {
        assert!(
            until(Duration::from_secs(15), || listed(d).len() == regions.len()),
            "{} lists {:?}",
            d.base,
            listed(d)
        );
    }
    nodes
}

/// The room's nodes as `d`'s `GET /cluster` lists them: region → node id.
pub fn room_nodes(d: &Daemon, channel: &str) -> BTreeMap<String, String> {
    let r = get(d, "cluster");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["roomNodes"][channel]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let s = |k: &str| n[k].as_str().unwrap().to_string();
                    (s("region"), s("node"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Both of `p`'s transports are on `on` (choir's candidates are in its port range).
pub fn lives_on(p: &Peer, on: &Daemon) {
    for leg in [&p.send, &p.recv] {
        let port = leg.remote.port();
        assert!(
            (on.rtc.0..=on.rtc.1).contains(&port),
            "{}'s transport is on port {port}, not in {} ({:?})",
            p.user,
            on.base,
            on.rtc
        );
    }
}

/// A node's media counters (its `/stats` total): client RTP received (its local producers'
/// packets), relay packets sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relay {
    pub rtp_in: u64,
    pub out: u64,
    pub inn: u64,
}

impl std::ops::Sub for Relay {
    type Output = Relay;
    fn sub(self, o: Relay) -> Relay {
        Relay {
            rtp_in: self.rtp_in - o.rtp_in,
            out: self.out - o.out,
            inn: self.inn - o.inn,
        }
    }
}

pub fn relay(d: &Daemon) -> Relay {
    let s = d.stats();
    let t = &s["total"];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("no total.{k} in {s}"))
    };
    Relay {
        rtp_in: n("rtpReceived"),
        out: n("relayPacketsOut"),
        inn: n("relayPacketsIn"),
    }
}

/// One sample of a metrics text: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

/// The samples of metric `name` (exactly that name, labels parsed) in a Prometheus or
/// OpenMetrics text.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue, // another metric whose name starts with `name`
            },
        };
        let Ok(value) = value.split(' ').next().unwrap_or_default().parse::<f64>() else {
            continue;
        };
        let mut map = BTreeMap::new();
        // Label values here are node ids, shard numbers and directions: no escaped quotes.
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            map.insert(k.to_string(), v.trim_matches('"').to_string());
        }
        out.push((map, value));
    }
    out
}

/// The sum of metric `name`'s samples whose labels include all of `want`.
pub fn sum_where(samples: &[Sample], want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The cascade's families of a node's `/metrics`, per peer node (summed over its shards).
pub struct RelayMetrics {
    pub streams: Vec<Sample>,
    pub packets: Vec<Sample>,
    pub links: Vec<Sample>,
    pub missing: Vec<Sample>,
}

impl RelayMetrics {
    pub fn of(d: &Daemon) -> RelayMetrics {
        let (_, text) = d.metrics(None);
        let family = |name: &str| {
            assert!(
                text.contains(&format!("# TYPE {name}")),
                "{}/metrics has no {name}",
                d.base
            );
            samples(&text, name)
        };
        RelayMetrics {
            streams: family("choir_relay_streams"),
            packets: samples(&text, "choir_relay_packets_total"),
            links: family("choir_links"),
            missing: family("choir_link_missing_datagrams"),
        }
    }

    /// Streams relayed to (`out`) or from (`in`) node `peer`.
    pub fn streams(&self, peer: &str, direction: &str) -> u64 {
        sum_where(&self.streams, &[("peer", peer), ("direction", direction)]) as u64
    }

    /// Packets relayed to (`out`) or from (`in`) node `peer`.
    pub fn packets(&self, peer: &str, direction: &str) -> u64 {
        sum_where(&self.packets, &[("peer", peer), ("direction", direction)]) as u64
    }

    /// Link datagrams from any peer missing on arrival.
    pub fn missing(&self) -> u64 {
        sum_where(&self.missing, &[]) as u64
    }

    /// The peers the node has live links to.
    pub fn peers(&self) -> BTreeSet<String> {
        self.links
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .filter_map(|(l, _)| l.get("peer").cloned())
            .collect()
    }
}

/// Drives `peers` until `d` lists every producer of `pids` for `user` in `channel`, polling
/// every 100 ms.
pub fn until_listed(
    peers: &mut [Peer],
    d: &Daemon,
    channel: &str,
    user: &str,
    pids: &[String],
    timeout: Duration,
) -> bool {
    let mut last_ask = Instant::now() - Duration::from_secs(1);
    let mut all = false;
    run_until(peers, timeout, |_| {
        if last_ask.elapsed() >= Duration::from_millis(100) {
            last_ask = Instant::now();
            let (status, v) = d.get(&format!("producers/{channel}/{user}"));
            assert_eq!(status, 200, "{v}");
            let have: BTreeSet<&str> = v["producers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["producerId"].as_str())
                .collect();
            all = pids.iter().all(|p| have.contains(p.as_str()));
        }
        all
    })
}

/// Mutes every speaker of `peers`, has str0m send what it still holds, and drives them until
/// what they sent has arrived: counters read after this are quiescent.
pub fn hush(peers: &mut [Peer]) {
    for p in peers.iter_mut() {
        p.muted = true;
        p.poll_soon();
    }
    run(peers, Duration::from_millis(400));
}

pub fn unmute(peers: &mut [Peer]) {
    for p in peers.iter_mut() {
        p.muted = false;
    }
}

/// How many packets of each sender `p` received (over all its consumers).
pub fn heard(p: &Peer) -> BTreeMap<u8, usize> {
    let mut m = BTreeMap::new();
    for g in p.got.values().flatten() {
        *m.entry(g.sender).or_insert(0) += 1;
    }
    m
}

/// Every packet `p` received is byte-identical to what its sender wrote, no consumer got a
/// sequence number twice, and no sender's packet arrived twice.
pub fn check_clean(p: &Peer) {
    for (ssrc, got) in &p.got {
        assert!(
            got.iter().all(|g| g.intact),
            "{}: a payload of consumer {ssrc:#x} changed on the way",
            p.user
        );
        let seqs: BTreeSet<u16> = got.iter().map(|g| g.seq).collect();
        assert_eq!(
            seqs.len(),
            got.len(),
            "{}: consumer {ssrc:#x} got a sequence number twice",
            p.user
        );
    }
    let packets: BTreeSet<(u8, u16)> = p.got.values().flatten().map(|g| (g.sender, g.n)).collect();
    assert_eq!(
        packets.len(),
        p.got.values().map(Vec::len).sum::<usize>(),
        "{}: a packet arrived twice",
        p.user
    );
}
