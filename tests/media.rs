//! Media through choir with an independent WebRTC peer (str0m: its own ICE agent, DTLS and
//! SRTP) on loopback, everything set up through the real voice API.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::peer::{run, run_until, JoinOptions, Peer};
use common::{bound_udp_ports, Daemon};
use serde_json::{json, Value};

/// Joins `n` peers (indices from `first`) to `channel`, then has everyone consume everyone.
fn room(d: &Daemon, channel: &str, n: u8, first: u8) -> Vec<Peer> {
    let mut peers: Vec<Peer> = (0..n)
        .map(|i| {
            Peer::join(
                d,
                channel,
                &format!("user{}", first + i),
                first + i,
                JoinOptions::default(),
            )
        })
        .collect();
    for p in &mut peers {
        assert_eq!(p.consume_existing(d), usize::from(n) - 1);
    }
    peers
}

/// Waits until every transport is connected and audio flows, then forgets what arrived so far.
fn settle(peers: &mut [Peer]) {
    let connected = run_until(peers, Duration::from_secs(15), |ps| {
        ps.iter().all(Peer::is_connected)
    });
    assert!(connected, "all transports connect");
    run(peers, Duration::from_millis(300));
    for p in peers.iter_mut() {
        p.got.clear();
    }
}

/// Runs for `duration` and checks that every peer heard every other peer of `peers`: at least
/// `min` of the packets written meanwhile, payloads intact, the consumer's SSRC and payload
/// type, sequence numbers without gaps, the audio level extension remapped.
fn assert_everyone_hears_everyone(d: &Daemon, peers: &mut [Peer], duration: Duration, min: f64) {
    let written_before: Vec<u16> = peers.iter().map(|p| p.written).collect();
    run(peers, duration);
    // Stop writing and let what is in flight arrive.
    peers.iter_mut().for_each(|p| p.muted = true);
    run(peers, Duration::from_millis(400));
    peers.iter_mut().for_each(|p| p.muted = false);
    let written: HashMap<u8, usize> = peers
        .iter()
        .zip(&written_before)
        .map(|(p, before)| (p.index, usize::from(p.written.wrapping_sub(*before))))
        .collect();
    let producers: HashMap<String, u8> = peers
        .iter()
        .filter_map(|p| p.producer_id.clone().map(|id| (id, p.index)))
        .collect();
    for r in peers.iter() {
        let others = peers
            .iter()
            .filter(|s| s.index != r.index && s.channel == r.channel);
        assert!(
            r.got.values().flatten().all(|g| peers
                .iter()
                .any(|s| s.index == g.sender && s.channel == r.channel)),
            "no audio from another room"
        );
        for s in others {
            let got = r.received_from(s.index);
            let expected = written[&s.index];
            if (got.len() as f64) < min * expected as f64 {
                let have: std::collections::BTreeSet<u16> = got.iter().map(|g| g.n).collect();
                let first = s.written.wrapping_sub(expected as u16);
                let missing: Vec<u16> = (0..expected as u16)
                    .map(|i| first.wrapping_add(i))
                    .filter(|n| !have.contains(n))
                    .collect();
                eprintln!(
                    "missing from {}: {missing:?} (written up to {})",
                    s.user, s.written
                );
            }
            assert!(
                got.len() as f64 >= min * expected as f64,
                "{} heard {} of {} packets from {} ({})",
                r.user,
                got.len(),
                expected,
                s.user,
                d.stats()["total"]
            );
            let ssrc = got[0].ssrc;
            assert_eq!(
                producers[&r.consumers[&ssrc]], s.index,
                "the consumer SSRC is the one of {}'s consumer",
                s.user
            );
            let mut seqs = Vec::new();
            for g in &got {
                assert!(g.intact, "payload from {} arrives unchanged", s.user);
                assert_eq!(g.ssrc, ssrc);
                assert_eq!(g.pt, 100, "router payload type");
                assert_eq!(
                    g.audio_level,
                    Some(-(s.index as i8 % 100)),
                    "audio level moved from id 1 to id 10"
                );
                seqs.push(g.seq);
            }
            seqs.sort_unstable();
            seqs.dedup();
            let span = usize::from(seqs[seqs.len() - 1] - seqs[0]) + 1;
            if (seqs.len() as f64) < min * span as f64 {
                let holes: Vec<u16> = (seqs[0]..=seqs[seqs.len() - 1])
                    .filter(|q| seqs.binary_search(q).is_err())
                    .collect();
                eprintln!("{} from {}: sequence holes {holes:?}", r.user, s.user);
                for f in ["/proc/net/udp", "/proc/net/snmp"] {
                    let t = std::fs::read_to_string(f).unwrap_or_default();
                    for l in t.lines() {
                        let drops = l.split_whitespace().last().unwrap_or("0");
                        if f.ends_with("snmp") && l.starts_with("Udp:") || drops != "0" {
                            eprintln!("DIAG {f}: {l}");
                        }
                    }
                }
            }
            assert!(
                seqs.len() as f64 >= min * span as f64,
                "{} from {}: sequence numbers without gaps: {} of {span} ({})",
                r.user,
                s.user,
                seqs.len(),
                d.stats()["total"]
            );
        }
    }
}

fn two_users_hear_each_other_in_both_dtls_roles(mode: &[&str]) {
    let d = Daemon::start(mode);
    // alice is the DTLS client (choir serves), bob the DTLS server (choir is the client).
    let mut peers = vec![
        Peer::join(&d, "duo", "alice", 1, JoinOptions::default()),
        Peer::join(
            &d,
            "duo",
            "bob",
            2,
            JoinOptions {
                dtls_client: false,
                ..Default::default()
            },
        ),
    ];
    for p in &mut peers {
        p.consume_existing(&d);
    }
    settle(&mut peers);
    assert_everyone_hears_everyone(&d, &mut peers, Duration::from_secs(3), 0.95);
    let total = &d.stats()["total"];
    assert_eq!(total["dtlsConnected"], 4);
    let drops = total["drops"].as_object().unwrap();
    assert!(
        drops.keys().all(|k| k.starts_with("rtcp.") && k.ends_with("_ignored")),
        "nothing dropped between honest peers (RTCP feedback choir does not use is only ignored): {drops:?}"
    );
    assert!(
        total["rtcpSent"].as_u64().unwrap() > 0,
        "choir sends RTCP reports"
    );
}

fn a_producer_without_signalled_ssrc_is_found_by_its_mid(mode: &[&str]) {
    let d = Daemon::start(mode);
    let mut peers = vec![
        Peer::join(
            &d,
            "mid",
            "alice",
            1,
            JoinOptions {
                signal_ssrc: false,
                ..Default::default()
            },
        ),
        Peer::join(&d, "mid", "bob", 2, JoinOptions::default()),
    ];
    for p in &mut peers {
        p.consume_existing(&d);
    }
    settle(&mut peers);
    assert_everyone_hears_everyone(&d, &mut peers, Duration::from_secs(2), 0.95);
}

fn five_and_ten_users_hear_everyone(mode: &[&str]) {
    let d = Daemon::start(mode);
    let mut peers = room(&d, "five", 5, 10);
    peers.extend(room(&d, "ten", 10, 20));
    settle(&mut peers);
    assert_everyone_hears_everyone(&d, &mut peers, Duration::from_secs(3), 0.95);
}

fn fifty_users_in_ten_rooms_on_two_shards_then_all_leave(mode: &[&str]) {
    let d = Daemon::start(mode);
    let mut rooms: Vec<Vec<Peer>> = (0..10)
        .map(|r| room(&d, &format!("r{r}"), 5, r * 5 + 1))
        .collect();
    let mut all: Vec<Peer> = rooms.drain(..).flatten().collect();
    settle(&mut all);
    assert_everyone_hears_everyone(&d, &mut all, Duration::from_secs(2), 0.9);
    let stats = d.stats();
    for shard in stats["shards"].as_array().unwrap() {
        assert!(
            shard["counters"]["rtpForwarded"].as_u64().unwrap() > 0,
            "both shards forward: {shard}"
        );
    }
    for p in &all {
        d.ok("leave", &json!({"channelId": p.channel, "userId": p.user}));
    }
    let h = d.health();
    assert_eq!(
        (h["rooms"].as_u64(), h["participants"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
    assert_eq!(
        (h["transports"].as_u64(), h["boundPorts"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
    // Only the shards' own ports stay bound in single-port mode.
    let single = mode.contains(&"single");
    let shard_port = |p: &u16| single && (d.rtc.0..=d.rtc.0 + 1).contains(p);
    assert!(
        bound_udp_ports(d.pid())
            .iter()
            .all(|p| !(d.rtc.0..=d.rtc.1).contains(p) || shard_port(p)),
        "no transport port stays bound"
    );
}

fn churn_does_not_disturb_the_others(mode: &[&str]) {
    let d = Daemon::start(mode);
    let mut steady = room(&d, "churn", 2, 1);
    settle(&mut steady);
    let written_before: Vec<u16> = steady.iter().map(|p| p.written).collect();
    for round in 0..20u8 {
        let mut guest = Peer::join(&d, "churn", "guest", 50 + round, JoinOptions::default());
        guest.consume_existing(&d);
        let producer = guest.producer_id.clone().unwrap();
        for s in &mut steady {
            s.consume(&d, &producer);
        }
        let mut everyone = std::mem::take(&mut steady);
        everyone.push(guest);
        run(&mut everyone, Duration::from_millis(250));
        let guest = everyone.pop().unwrap();
        steady = everyone;
        d.ok("leave", &json!({"channelId": "churn", "userId": "guest"}));
        drop(guest);
    }
    run(&mut steady, Duration::from_millis(200));
    for (r, s) in [(0, 1), (1, 0)] {
        let sender = &steady[s];
        let written = usize::from(sender.written.wrapping_sub(written_before[s]));
        let got = steady[r].received_from(sender.index);
        assert!(
            got.len() as f64 >= 0.95 * written as f64,
            "{} heard {} of {written} during the churn",
            steady[r].user,
            got.len()
        );
        assert!(got.iter().all(|g| g.intact));
    }
    let h = d.health();
    assert_eq!(
        (h["participants"].as_u64(), h["consumers"].as_u64()),
        (Some(2), Some(2)),
        "{h}"
    );
}

fn a_silent_peer_is_removed_after_the_consent_timeout(mode: &[&str]) {
    let d = Daemon::start(&[mode, &["--consent-timeout", "6s"]].concat());
    let mut peers = room(&d, "quiet", 2, 1);
    let events = d.events("quiet", "user1");
    settle(&mut peers);
    peers[1].silent = true;
    let started = Instant::now();
    let left = run_until(&mut peers[..1], Duration::from_secs(15), |_| {
        d.health()["participants"] == 1
    });
    assert!(left, "the silent participant is removed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "not before the consent timeout ({waited:?})"
    );
    let ev = events
        .wait_for("participantLeft", Duration::from_secs(5))
        .expect("participantLeft pushed");
    assert_eq!(
        ev,
        json!({"type":"participantLeft","userId":"user2","reason":"consent expired"})
    );
    assert_eq!(d.stats()["total"]["consentTimeouts"], 1);
    // The remaining peer is still connected (its own consent is refreshed).
    run(&mut peers[..1], Duration::from_secs(1));
    assert_eq!(d.health()["participants"], 1);
}

fn a_wrong_fingerprint_fails_the_transport(mode: &[&str]) {
    let d = Daemon::start(mode);
    d.get("rtp-capabilities/fp");
    let events = d.events("fp", "mallory");
    let mut peers = vec![Peer::join(
        &d,
        "fp",
        "mallory",
        1,
        JoinOptions {
            wrong_fingerprint: true,
            ..Default::default()
        },
    )];
    let mut ev = None;
    run_until(&mut peers, Duration::from_secs(10), |_| {
        ev = ev
            .take()
            .or_else(|| events.wait_for("transportClosed", Duration::from_millis(5)));
        ev.is_some()
    });
    run(&mut peers, Duration::from_millis(200));
    let ev = ev.expect("the failure is pushed to the transport's owner");
    assert_eq!(ev["transportId"], peers[0].send.transport_id.as_str());
    assert_eq!(ev["reason"], "fingerprint_mismatch");
    assert!(
        !peers[0].send.connected,
        "no SRTP keys for the peer with a wrong certificate"
    );
    let total = &d.stats()["total"];
    assert_eq!(total["dtlsFailures"], 1);
    assert_eq!(total["rtpForwarded"], 0);
    let h = d.health();
    assert_eq!(
        (h["transports"].as_u64(), h["producers"].as_u64()),
        (Some(1), Some(0)),
        "send transport and its producer closed: {h}"
    );
}

fn garbage_truncated_and_replayed_packets_are_dropped_and_counted(mode: &[&str]) {
    let d = Daemon::start(&[mode, &["--shards", "1"]].concat());
    let mut peers = room(&d, "noise", 2, 1);
    settle(&mut peers);
    run(&mut peers, Duration::from_secs(1));
    let target = peers[0].send.remote;
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut kinds: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 40],
        vec![0x00, 0x01, 0x00, 0x08], // truncated STUN
        vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0], // truncated DTLS record
        vec![0x80, 111, 0, 1],        // truncated RTP
        vec![0x80, 200, 0, 1],        // truncated RTCP
        vec![0x80; 1600],             // oversized
    ];
    kinds.push({
        let mut stun = vec![0u8; 20];
        stun[1] = 0x01;
        stun[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        stun
    });
    // Real SRTP/SRTCP/STUN/DTLS datagrams the peer sent, to replay and to truncate.
    let sent = peers[0].send.sent.clone();
    let rtp: Vec<&Vec<u8>> = sent
        .iter()
        .filter(|p| p.len() > 12 && p[0] >> 6 == 2 && !(192..=223).contains(&p[1]))
        .collect();
    let rtcp: Vec<&Vec<u8>> = sent
        .iter()
        .filter(|p| p.len() > 8 && p[0] >> 6 == 2 && (192..=223).contains(&p[1]))
        .collect();
    assert!(
        !rtp.is_empty() && !rtcp.is_empty(),
        "the peer sent SRTP and SRTCP"
    );
    // A real packet moved to a sequence number not seen yet: authentication must fail.
    let mut tampered = rtp[rtp.len() - 1].clone();
    let seq = u16::from_be_bytes([tampered[2], tampered[3]]).wrapping_add(3000);
    tampered[2..4].copy_from_slice(&seq.to_be_bytes());
    for round in 0..20 {
        for k in &kinds {
            let _ = stranger.send_to(k, target);
            peers[0].send.send_raw(k);
        }
        // From the selected address: replays, tampering, truncations of real packets.
        peers[0].send.send_raw(rtp[round % rtp.len()]);
        peers[0].send.send_raw(rtcp[round % rtcp.len()]);
        peers[0].send.send_raw(&tampered);
        let real = rtp[rtp.len() - 1 - round % rtp.len().min(5)];
        for cut in [1, 2, 11, 12, 13, real.len() / 2, real.len() - 1] {
            peers[0].send.send_raw(&real[..cut]);
        }
        // A real-looking RTP packet from a stranger.
        let _ = stranger.send_to(real, target);
        run(&mut peers, Duration::from_millis(20));
    }
    let stats = d.stats();
    let drops = &stats["total"]["drops"];
    // On a shared port, a stranger's datagrams cannot even be routed to a transport.
    let mut expected = vec![
        "srtp.replayed",
        "srtcp.replayed",
        "srtp.auth_failed",
        "srtp.too_short",
        "datagram.not_webrtc",
        "datagram.too_long",
    ];
    if mode.contains(&"single") {
        expected.extend(["route.unknown_sender", "route.truncated"]);
    } else {
        expected.extend([
            "media.unvalidated_path",
            "dtls.unvalidated_path",
            "stun.truncated",
        ]);
    }
    for key in expected {
        assert!(
            drops[key].as_u64().unwrap_or(0) > 0,
            "{key} counted: {drops}"
        );
    }
    assert_eq!(d.health()["status"], "ok");
    // The honest peers did not notice.
    for p in &mut peers {
        p.got.clear();
    }
    assert_everyone_hears_everyone(&d, &mut peers, Duration::from_secs(2), 0.95);
}

fn pause_and_resume_keep_the_consumer_sequence_continuous(mode: &[&str]) {
    let d = Daemon::start(mode);
    let mut peers = room(&d, "mute", 2, 1);
    settle(&mut peers);
    let body: Value =
        json!({"channelId":"mute","userId":"user1","producerId":peers[0].producer_id});
    run(&mut peers, Duration::from_millis(500));
    d.ok("pause-producer", &body);
    run(&mut peers, Duration::from_millis(100));
    let before = peers[1].received_from(1).len();
    let last_before = peers[1]
        .received_from(1)
        .iter()
        .map(|g| g.seq)
        .max()
        .unwrap();
    run(&mut peers, Duration::from_secs(1));
    assert_eq!(
        peers[1].received_from(1).len(),
        before,
        "nothing forwarded while paused"
    );
    assert!(
        d.stats()["total"]["drops"]["rtp.producer_paused"]
            .as_u64()
            .unwrap()
            > 30
    );
    d.ok("resume-producer", &body);
    run(&mut peers, Duration::from_secs(1));
    let after: Vec<u16> = peers[1]
        .received_from(1)
        .iter()
        .skip(before)
        .map(|g| g.seq)
        .collect();
    assert!(after.len() > 40, "audio is back after resume");
    assert_eq!(
        after.iter().min().copied(),
        Some(last_before.wrapping_add(1)),
        "sequence continues without a gap"
    );
}

/// The same suite with one port per transport and with one port per shard.
macro_rules! suite {
    ($name:ident, $args:expr) => {
        mod $name {
            #[test]
            fn two_users_hear_each_other_in_both_dtls_roles() {
                super::two_users_hear_each_other_in_both_dtls_roles($args)
            }
            #[test]
            fn a_producer_without_signalled_ssrc_is_found_by_its_mid() {
                super::a_producer_without_signalled_ssrc_is_found_by_its_mid($args)
            }
            #[test]
            fn five_and_ten_users_hear_everyone() {
                super::five_and_ten_users_hear_everyone($args)
            }
            #[test]
            fn fifty_users_in_ten_rooms_on_two_shards_then_all_leave() {
                super::fifty_users_in_ten_rooms_on_two_shards_then_all_leave($args)
            }
            #[test]
            fn churn_does_not_disturb_the_others() {
                super::churn_does_not_disturb_the_others($args)
            }
            #[test]
            fn a_silent_peer_is_removed_after_the_consent_timeout() {
                super::a_silent_peer_is_removed_after_the_consent_timeout($args)
            }
            #[test]
            fn a_wrong_fingerprint_fails_the_transport() {
                super::a_wrong_fingerprint_fails_the_transport($args)
            }
            #[test]
            fn garbage_truncated_and_replayed_packets_are_dropped_and_counted() {
                super::garbage_truncated_and_replayed_packets_are_dropped_and_counted($args)
            }
            #[test]
            fn pause_and_resume_keep_the_consumer_sequence_continuous() {
                super::pause_and_resume_keep_the_consumer_sequence_continuous($args)
            }
        }
    };
}

suite!(per_transport, &[]);
suite!(single_port, &["--port-mode", "single"]);
