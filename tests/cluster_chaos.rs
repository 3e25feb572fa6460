//! The chaos soak of cluster mode (issue 23): three nodes on a real Redis, a room on every node
//! with two str0m peers sending to each other, and a seeded schedule of faults (Redis paused
//! 1–10 s, restarted, flushed; a node stalled for 1–3 s, killed and restarted, drained and
//! restarted) while invariants are checked every second:
//! - every node that is up routes each live room to its one owner (the node it was placed on),
//!   or answers 503 while a fault lasts; never a 404, never another node;
//! - the media of rooms whose node did not die loses no packet;
//! - after the schedule every participant of a live room leaves through any node, every node is
//!   listed and healthy, and the room of each killed or drained node opens again.
//!
//! `CHOIR_CHAOS_SECONDS` (default 60) and `CHOIR_CHAOS_SEED` (default: from the clock, printed);
//! `scripts/chaos.sh [seconds]` runs it longer.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use common::peer::{run, run_until, JoinOptions, Peer};
use common::Daemon;
use harness::{channel_on, cluster, gaps, get, listed, node, post, sigcont, sigkill, sigstop};
use serde_json::json;

/// splitmix64: the schedule from one printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A room placed on node `owner` (index), with its two peers while it lives.
struct Room {
    channel: String,
    owner: usize,
    peers: Option<[Peer; 2]>,
}

struct Chaos {
    redis: redis_server::Redis,
    nodes: Vec<Option<Daemon>>,
    /// Each node's API address (restarted nodes keep theirs).
    addrs: Vec<String>,
    rooms: Vec<Room>,
    /// The node stalled now, if any (not asked while stalled).
    stalled: Option<usize>,
    violations: Vec<String>,
    checks: usize,
    /// Rooms opened after restarts so far (names and peer indices).
    generation: u8,
}

impl Chaos {
    fn up(&self) -> impl Iterator<Item = (usize, &Daemon)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.stalled)
            .filter_map(|(i, d)| Some((i, d.as_ref()?)))
    }

    /// Drives the peers for `d`, checking the invariants every second.
    fn hold(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.drive(Duration::from_millis(700));
            self.check();
            if Instant::now() >= end {
                return;
            }
        }
    }

    fn drive(&mut self, d: Duration) {
        let with: Vec<usize> = (0..self.rooms.len())
            .filter(|&i| self.rooms[i].peers.is_some())
            .collect();
        let mut all: Vec<Peer> = with
            .iter()
            .flat_map(|&i| self.rooms[i].peers.take().unwrap())
            .collect();
        run(&mut all, d);
        let mut it = all.into_iter();
        for &i in &with {
            self.rooms[i].peers = Some([it.next().unwrap(), it.next().unwrap()]);
        }
    }

    /// Every node that is up routes each live room to its owner (or 503s while a fault lasts).
    fn check(&mut self) {
        self.checks += 1;
        let mut found = Vec::new();
        for room in self.rooms.iter().filter(|r| r.peers.is_some()) {
            let owner = format!("node-{}", room.owner + 1);
            for (i, d) in self.up() {
                let r = get(d, &format!("producers/{}/a", room.channel));
                let ok = r.status == 503 || (r.status == 200 && r.node.as_deref() == Some(&owner));
                if !ok {
                    found.push(format!(
                        "via node-{}: {} owned by {owner}: {} {:?} {}",
                        i + 1,
                        room.channel,
                        r.status,
                        r.node,
                        r.body
                    ));
                }
            }
        }
        for v in &found {
            eprintln!("VIOLATION {v}");
        }
        self.violations.extend(found);
    }

    /// Ends node `i`'s room for good (its node died or drained): its peers are dropped.
    fn bury(&mut self, i: usize) {
        for r in self.rooms.iter_mut().filter(|r| r.owner == i) {
            r.peers = None;
            r.owner = usize::MAX;
        }
    }

    /// Starts node `i` again on its address, and a new room on it with two new peers.
    fn restart(&mut self, i: usize) {
        let d = node(&self.redis, i + 1, &["--listen", &self.addrs[i]]);
        self.nodes[i] = Some(d);
        self.generation += 1;
        let d = self.nodes[i].as_ref().unwrap();
        let owner = format!("node-{}", i + 1);
        // A room placed on it (new rooms wait for the directory after a Redis fault: 503).
        let mut channel = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut k = 0;
        while channel.is_none() && Instant::now() < deadline {
            let c = format!("chaos{i}-{}-{k}", self.generation);
            k += 1;
            let r = get(d, &format!("rtp-capabilities/{c}"));
            match (r.status, r.node.as_deref()) {
                (200, Some(n)) if n == owner => channel = Some(c),
                (200, _) => {}
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let Some(channel) = channel else {
            self.violations
                .push(format!("no new room on {owner} after its restart"));
            return;
        };
        let index = 10 + 2 * self.generation;
        let peers = join_pair(&self.nodes, i, &channel, index);
        self.rooms.push(Room {
            channel,
            owner: i,
            peers: Some(peers),
        });
    }
}

fn join_pair(nodes: &[Option<Daemon>], via: usize, channel: &str, index: u8) -> [Peer; 2] {
    let d = nodes[via].as_ref().unwrap();
    let mut a = Peer::join(d, channel, "a", index, JoinOptions::default());
    let mut b = Peer::join(d, channel, "b", index + 1, JoinOptions::default());
    let (pa, pb) = (
        a.producer_id.clone().unwrap(),
        b.producer_id.clone().unwrap(),
    );
    a.consume(d, &pb);
    b.consume(d, &pa);
    [a, b]
}

#[test]
fn chaos() {
    let seconds: u64 = std::env::var("CHOIR_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("CHOIR_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: seed {seed}, {seconds} s (CHOIR_CHAOS_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let (redis, nodes) = cluster(3);
    let addrs: Vec<String> = nodes
        .iter()
        .map(|d| d.base.trim_start_matches("http://").to_string())
        .collect();
    let mut rooms = Vec::new();
    for i in 0..3 {
        let channel = channel_on(
            &nodes[(i + 1) % 3],
            &format!("node-{}", i + 1),
            &format!("chaos{i}"),
        );
        rooms.push(Room {
            channel,
            owner: i,
            peers: None,
        });
    }
    let nodes: Vec<Option<Daemon>> = nodes.into_iter().map(Some).collect();
    for (i, room) in rooms.iter_mut().enumerate() {
        room.peers = Some(join_pair(
            &nodes,
            (i + 2) % 3,
            &room.channel,
            2 * i as u8 + 1,
        ));
    }
    let mut c = Chaos {
        redis,
        nodes,
        addrs,
        rooms,
        stalled: None,
        violations: Vec::new(),
        checks: 0,
        generation: 0,
    };
    // Media flows in every room before the first fault.
    let mut all: Vec<Peer> = c
        .rooms
        .iter_mut()
        .flat_map(|r| r.peers.take().unwrap())
        .collect();
    let flowing = run_until(&mut all, Duration::from_secs(15), |p| {
        p.chunks(2).all(|pair| {
            pair[0].received_from(pair[1].index).len() >= 25
                && pair[1].received_from(pair[0].index).len() >= 25
        })
    });
    assert!(flowing, "media did not flow in every room");
    let mut it = all.into_iter();
    for r in &mut c.rooms {
        r.peers = Some([it.next().unwrap(), it.next().unwrap()]);
    }

    let started = Instant::now();
    let mut faults = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        let kind = rng.below(6);
        let target = rng.below(3) as usize;
        let alive = c.nodes[target].is_some();
        let fault = match kind {
            0 => {
                let d = Duration::from_secs(1 + rng.below(10));
                c.redis.pause();
                c.hold(d);
                c.redis.resume();
                format!("Redis paused {d:?}")
            }
            1 => {
                c.redis.restart();
                "Redis restarted".to_string()
            }
            2 => {
                c.redis.flushall();
                "Redis FLUSHALL".to_string()
            }
            3 if alive => {
                let d = Duration::from_millis(1000 + rng.below(2000));
                sigstop(c.nodes[target].as_ref().unwrap());
                c.stalled = Some(target);
                c.hold(d);
                sigcont(c.nodes[target].as_ref().unwrap());
                c.stalled = None;
                format!("node-{} stalled {d:?}", target + 1)
            }
            4 if alive => {
                sigkill(c.nodes[target].take().unwrap());
                c.bury(target);
                c.restart(target);
                format!("node-{} killed and restarted", target + 1)
            }
            5 if alive => {
                let d = c.nodes[target].take().unwrap();
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
                // Its room's participants leave through another node; then it exits.
                let via = c.up().find(|(i, _)| *i != target).map(|(i, _)| i).unwrap();
                for r in c.rooms.iter().filter(|r| r.owner == target) {
                    for u in ["a", "b"] {
                        let body = json!({"channelId": r.channel, "userId": u});
                        let l = post(c.nodes[via].as_ref().unwrap(), "leave", &body);
                        if l.status != 200 {
                            c.violations
                                .push(format!("drain: leave {u}: {} {}", l.status, l.body));
                        }
                    }
                }
                c.bury(target);
                let status = d.wait_exit(Duration::from_secs(15));
                if !status.is_some_and(|s| s.success()) {
                    c.violations
                        .push(format!("node-{} did not drain: {status:?}", target + 1));
                }
                c.restart(target);
                format!("node-{} drained and restarted", target + 1)
            }
            _ => continue,
        };
        eprintln!("chaos {:>5.1}s: {fault}", started.elapsed().as_secs_f64());
        faults.push(fault);
        c.hold(Duration::from_secs(2 + rng.below(3)));
    }

    // After the schedule: back at the baseline.
    c.hold(Duration::from_secs(3));
    for (_, d) in c.up() {
        let ids = listed(d);
        assert_eq!(ids, ["node-1", "node-2", "node-3"], "{}", d.base);
        assert_eq!(get(d, "health").status, 200);
    }
    for room in &c.rooms {
        if let Some(peers) = &room.peers {
            for (p, other) in [(&peers[0], &peers[1]), (&peers[1], &peers[0])] {
                let got = p.received_from(other.index).len();
                let lost = gaps(p, other.index);
                if lost > 0 || got < 50 {
                    c.violations.push(format!(
                        "{}: {} got {got}, lost {lost}",
                        room.channel, p.user
                    ));
                }
            }
        }
    }
    let live: Vec<(String, usize)> = c
        .rooms
        .iter()
        .filter(|r| r.peers.is_some())
        .map(|r| (r.channel.clone(), r.owner))
        .collect();
    for (k, (channel, owner)) in live.iter().enumerate() {
        for (j, u) in ["a", "b"].iter().enumerate() {
            let via = c.nodes[(k + j + owner + 1) % 3].as_ref().unwrap();
            let r = post(via, "leave", &json!({"channelId": channel, "userId": u}));
            if r.status != 200 {
                c.violations
                    .push(format!("leave {channel}/{u}: {} {}", r.status, r.body));
            }
        }
    }
    for room in c.rooms.iter().filter(|r| r.peers.is_none()) {
        let d = c.nodes[0].as_ref().unwrap();
        let r = get(d, &format!("rtp-capabilities/{}", room.channel));
        if r.status != 200 {
            c.violations
                .push(format!("{} did not open again: {}", room.channel, r.body));
        }
    }
    eprintln!(
        "chaos: seed {seed}: {} faults, {} checks, {} violations: {faults:?}",
        faults.len(),
        c.checks,
        c.violations.len()
    );
    assert!(c.violations.is_empty(), "seed {seed}: {:#?}", c.violations);
}
