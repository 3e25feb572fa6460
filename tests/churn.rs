//! Churn against the real daemon, the short version of the churn soak (SOAK.md): a steady room
//! of four str0m peers, everyone speaking and hearing everyone, while participants keep joining
//! and leaving through the voice API, two joins a second for 40 s, in turn (of every four): two
//! that connect (str0m: ICE, DTLS, a producer, consumers of the room), stay 2 s and call
//! `leave`; one that connects, stays 2 s and then vanishes (answers nothing more: removed when
//! its consent expires, 6 s); one that creates its transports and never sends a datagram
//! (removed at the join deadline, 3 s). Every other churner of each kind joins the steady room, the others a room
//! of their own.
//!
//! The steady peers must lose nothing; each churner is removed the way its kind says (counted,
//! and pushed to the steady room as `participantLeft` with that reason); and at the end rooms,
//! participants, transports, producers, consumers, bound ports, open fds and RSS are back at
//! their baseline.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::net::{open_fds_but_connections, rss_kib, udp_drops};
use common::peer::{run, run_until, JoinOptions, Peer};
use common::{bound_udp_ports, Daemon};
use serde_json::{json, Value};

const STEADY: u8 = 4;
const RATE: f64 = 2.0;
const CHURN: Duration = Duration::from_secs(40);
const LIFE: Duration = Duration::from_secs(2);
/// choir's consent timeout in this test: str0m checks at least every 3 s.
const CONSENT: Duration = Duration::from_secs(6);
/// choir's join deadline in this test.
const JOIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leave,
    Vanish,
    Never,
}

impl Kind {
    /// The `participantLeft` reason choir pushes when it removes this kind.
    fn reason(self) -> &'static str {
        match self {
            Kind::Leave => "left",
            Kind::Vanish => "consent expired",
            Kind::Never => "join timeout",
        }
    }
}

const TURN: [Kind; 4] = [Kind::Leave, Kind::Vanish, Kind::Leave, Kind::Never];

/// A churner that connects, until it is gone.
struct Churner {
    n: usize,
    kind: Kind,
    peer: Peer,
    steady_room: bool,
    ends: Instant,
    /// Vanished: silent until then, then dropped (its sockets closed).
    silent_until: Option<Instant>,
}

/// The server's population, from /health.
fn population(d: &Daemon) -> Vec<(String, u64)> {
    let h = d.health();
    [
        "rooms",
        "participants",
        "transports",
        "producers",
        "consumers",
        "boundPorts",
    ]
    .iter()
    .map(|k| (k.to_string(), h[*k].as_u64().unwrap()))
    .collect()
}

fn counter(d: &Daemon, key: &str) -> u64 {
    d.stats()["total"][key].as_u64().unwrap_or(0)
}

#[test]
fn churn_leaves_nothing_behind_and_steady_peers_lose_nothing() {
    let (consent, join) = (format!("{CONSENT:?}"), format!("{JOIN:?}"));
    let d = Daemon::start(&["--consent-timeout", &consent, "--join-timeout", &join]);
    let pid = d.pid();
    let mut steady: Vec<Peer> = (0..STEADY)
        .map(|i| {
            Peer::join(
                &d,
                "steady",
                &format!("steady{i}"),
                i,
                JoinOptions::default(),
            )
        })
        .collect();
    for p in &mut steady {
        assert_eq!(p.consume_existing(&d), usize::from(STEADY) - 1);
    }
    assert!(
        run_until(&mut steady, Duration::from_secs(15), |ps| ps
            .iter()
            .all(Peer::is_connected)),
        "the steady room connects"
    );
    run(&mut steady, Duration::from_millis(1000));
    let events = d.events("steady", "steady0");
    // Baseline.
    let base = population(&d);
    let ports0 = bound_udp_ports(pid);
    let fds0 = open_fds_but_connections(pid);
    let rss0 = rss_kib(pid);
    let (consent0, join0) = (counter(&d, "consentTimeouts"), counter(&d, "joinTimeouts"));
    let drops0 = (udp_drops(pid), udp_drops(std::process::id()));
    let written0: Vec<u16> = steady.iter().map(|p| p.written).collect();
    for p in &mut steady {
        p.got.clear();
    }
    eprintln!(
        "baseline: {base:?}, {} UDP ports, {fds0} fds, RSS {rss0} KiB",
        ports0.len()
    );

    let mut live: Vec<Churner> = Vec::new();
    let mut kinds: HashMap<String, Kind> = HashMap::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        let now = Instant::now();
        let churning = now < start + CHURN;
        if churning && now >= start + Duration::from_secs_f64(n as f64 / RATE) {
            let kind = TURN[n % 4];
            let steady_room = (n / 4).is_multiple_of(2);
            let room = if steady_room {
                "steady".to_string()
            } else {
                format!("churn-{n}")
            };
            let user = format!("churner{n}");
            kinds.insert(user.clone(), kind);
            *tally.entry(kind.reason()).or_default() += 1;
            if kind == Kind::Never {
                assert_eq!(d.get(&format!("rtp-capabilities/{room}")).0, 200);
                let t = d.ok(
                    "create-transport",
                    &json!({"channelId":room,"userId":user,"direction":"send"}),
                );
                let fp = json!([{"algorithm":"sha-256","value":vec!["AB"; 32].join(":")}]);
                d.ok(
                    "connect-transport",
                    &json!({"channelId":room,"userId":user,"transportId":t["id"],
                        "dtlsParameters":{"role":"client","fingerprints":fp}}),
                );
                d.ok(
                    "create-transport",
                    &json!({"channelId":room,"userId":user,"direction":"recv"}),
                );
            } else {
                let index = 10 + (n % 200) as u8;
                let mut peer = Peer::join(&d, &room, &user, index, JoinOptions::default());
                peer.consume_existing(&d);
                live.push(Churner {
                    n,
                    kind,
                    peer,
                    steady_room,
                    ends: Instant::now() + LIFE,
                    silent_until: None,
                });
            }
            n += 1;
        }
        let now = Instant::now();
        for p in &mut steady {
            p.tick(now);
        }
        let mut i = 0;
        while i < live.len() {
            let c = &mut live[i];
            c.peer.tick(now);
            let gone = match c.silent_until {
                Some(until) => now >= until,
                None if now >= c.ends => {
                    assert!(
                        c.peer.is_connected(),
                        "churner {} ({:?}) connected within {LIFE:?}",
                        c.n,
                        c.kind
                    );
                    if c.steady_room {
                        assert!(
                            c.peer.got.values().any(|g| !g.is_empty()),
                            "churner {} heard the steady room: consumers {:?}, got {:?}, {}",
                            c.n,
                            c.peer.consumers,
                            c.peer
                                .got
                                .iter()
                                .map(|(k, v)| (*k, v.len()))
                                .collect::<Vec<_>>(),
                            d.stats()["total"]
                        );
                    }
                    if c.kind == Kind::Leave {
                        d.ok(
                            "leave",
                            &json!({"channelId":c.peer.channel,"userId":c.peer.user}),
                        );
                        true
                    } else {
                        c.peer.silent = true;
                        c.silent_until = Some(now + CONSENT + Duration::from_secs(2));
                        false
                    }
                }
                None => false,
            };
            if gone {
                live.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if !churning && live.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("{n} churners in {:?}: {tally:?}", start.elapsed());

    // The steady peers heard every packet written meanwhile.
    steady.iter_mut().for_each(|p| p.muted = true);
    run(&mut steady, Duration::from_millis(500));
    let mut lost = 0usize;
    let mut expected = 0usize;
    for r in &steady {
        for (s, w0) in steady.iter().zip(&written0) {
            if s.index == r.index {
                continue;
            }
            let count = s.written.wrapping_sub(*w0);
            let heard: BTreeSet<u16> = r
                .received_from(s.index)
                .iter()
                .map(|g| g.n.wrapping_sub(*w0))
                .filter(|k| *k < count)
                .collect();
            expected += usize::from(count);
            lost += usize::from(count) - heard.len();
        }
    }
    let choir_drops = udp_drops(pid) - drops0.0;
    let own_drops = udp_drops(std::process::id()) - drops0.1;
    eprintln!(
        "steady: {lost} of {expected} lost; kernel drops at choir {choir_drops}, here {own_drops}"
    );
    assert!(
        expected > 4 * 3 * 40 * 45,
        "the steady room spoke throughout: {expected}"
    );
    assert_eq!(choir_drops, 0, "no kernel drop at choir's sockets");
    // This test's thread drives every peer: if it stalls, its own sockets overflow and the
    // kernel counts it. Any other loss is choir's.
    assert!(
        lost as u64 <= own_drops,
        "the steady peers lost {lost} packets (the kernel dropped {own_drops} at this test's sockets)"
    );

    // Every churner is removed, the way its kind says, and the server is back at its baseline.
    let settled = Instant::now();
    let back = d.wait_for(Duration::from_secs(10), |d| population(d) == base);
    assert!(
        back,
        "population back at the baseline: {:?} vs {base:?}",
        population(&d)
    );
    eprintln!(
        "population back at the baseline {:?} after the last churner",
        settled.elapsed()
    );
    assert_eq!(bound_udp_ports(pid), ports0, "the same UDP ports bound");
    let fds_back = d.wait_for(Duration::from_secs(5), |_| {
        open_fds_but_connections(pid) == fds0
    });
    assert!(
        fds_back,
        "fds back at {fds0}: {}",
        open_fds_but_connections(pid)
    );
    let rss = rss_kib(pid);
    eprintln!("RSS {rss0} KiB before, {rss} KiB after");
    assert!(
        rss <= rss0 + rss0 / 10,
        "RSS back near the baseline: {rss} KiB vs {rss0} KiB"
    );
    assert_eq!(
        counter(&d, "consentTimeouts") - consent0,
        tally["consent expired"] as u64,
        "one consent timeout per vanished churner"
    );
    assert_eq!(
        counter(&d, "joinTimeouts") - join0,
        tally["join timeout"] as u64,
        "one join timeout per churner that never connected"
    );
    // The steady room was told about each of its churners, with the reason.
    let mut told: HashMap<String, String> = HashMap::new();
    while let Some(e) = events.next(Duration::from_millis(200)) {
        if e["type"] == "participantLeft" {
            told.insert(
                e["userId"].as_str().unwrap().into(),
                e["reason"].as_str().unwrap().into(),
            );
        }
    }
    let in_steady: Vec<(String, Kind)> = kinds
        .iter()
        .filter(|(u, _)| {
            let k: usize = u.trim_start_matches("churner").parse().unwrap();
            (k / 4).is_multiple_of(2)
        })
        .map(|(u, k)| (u.clone(), *k))
        .collect();
    for (user, kind) in &in_steady {
        assert_eq!(
            told.get(user).map(String::as_str),
            Some(kind.reason()),
            "participantLeft for {user} ({kind:?}); told: {told:?}"
        );
    }
    let stats: Value = d.stats();
    eprintln!("choir: {}", stats["total"]);
    assert!(
        steady.iter().all(Peer::is_connected),
        "the steady peers stayed connected"
    );
}
