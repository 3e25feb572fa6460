//! choir over an impaired network: three str0m peers reach choir through a relay of the test's
//! own (tests/common/impair.rs: 5 % loss, 40 ms ± 10 ms, 1 % reordering, 0.5 % duplicates, both
//! directions, and the first DTLS datagram of every leg dropped both ways). ICE, DTLS and media
//! must come up anyway; choir must forward exactly what reached it, once, with consumers'
//! sequence numbers mirroring the producer's (a gap stays a gap of the same size); its Receiver
//! Reports must show the loss the relay applied; and it must drop nothing itself but the
//! duplicates, which SRTP's replay check rejects.
//!
//! `IMPAIR_SEED=<n>` replays the network with another seed (printed at the start).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::impair::{Dir, Impairment, Relay, Tap};
use common::net::udp_drops;
use common::peer::{run, run_until, JoinOptions, Peer};
use common::Daemon;

const PEERS: u8 = 3;
/// First RTP sequence number of a test peer's stream (tests/common/peer.rs writes 1000 + n).
const SEQ0: u16 = 1000;
/// Measured packets at each end of the window that are not compared (in flight at its edges).
const EDGE: u16 = 10;

fn up(t: &[Tap; 2]) -> &Tap {
    &t[Dir::Up as usize]
}

fn down(t: &[Tap; 2]) -> &Tap {
    &t[Dir::Down as usize]
}

#[test]
fn media_survives_loss_delay_reordering_and_duplicates() {
    let seed = std::env::var("IMPAIR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    eprintln!("impaired network seed {seed} (IMPAIR_SEED=<n> to change)");
    let imp = Impairment::lossy();
    let relay = Relay::start(seed, imp);
    let d = Daemon::start(&[]);
    let mut peers: Vec<Peer> = (0..PEERS)
        .map(|i| {
            Peer::join_through(
                &d,
                "impaired",
                &format!("user{i}"),
                i,
                JoinOptions::default(),
                &mut |choir| relay.leg(choir),
                true,
            )
        })
        .collect();
    for p in &mut peers {
        assert_eq!(p.consume_existing(&d), usize::from(PEERS) - 1);
    }
    let t0 = Instant::now();
    let connected = run_until(&mut peers, Duration::from_secs(30), |ps| {
        ps.iter().all(Peer::is_connected)
    });
    assert!(
        connected,
        "ICE and DTLS come up through the impaired relay within 30 s: {:?}",
        relay
            .taps()
            .iter()
            .map(|t| (
                up(t).datagrams,
                up(t).dropped,
                down(t).datagrams,
                down(t).dropped
            ))
            .collect::<Vec<_>>()
    );
    eprintln!("every transport connected in {:?}", t0.elapsed());
    for p in &peers {
        for leg in [&p.send, &p.recv] {
            let t = relay.tap(leg.remote);
            assert!(
                up(&t).dtls_dropped >= 1 && down(&t).dtls_dropped >= 1,
                "{}: the handshake went through retransmissions both ways",
                p.user
            );
        }
    }

    // Past choir's consumer hold, then a measured window, then the senders stop and what is in
    // flight (≤ 50 ms each way) arrives.
    run(&mut peers, Duration::from_millis(1500));
    let first: Vec<u16> = peers.iter().map(|p| p.written).collect();
    run(&mut peers, Duration::from_secs(15));
    let last: Vec<u16> = peers.iter().map(|p| p.written).collect();
    peers.iter_mut().for_each(|p| p.muted = true);
    run(&mut peers, Duration::from_millis(800));
    assert!(
        relay.drain(Duration::from_secs(5)),
        "the relay delivers what it queued"
    );
    // Every RTP packet has reached choir. A Receiver Report sent while packets were still on
    // their way counts those as lost (RFC 3550 A.3: expected minus received, then); a peer
    // that fell behind writes a burst, which the relay's jitter reorders, so such a report
    // may be off by several packets. Compare choir's count with a report sent after the last
    // packet arrived: drive the (muted) peers until each has one about its final packet.
    let last_sent: Vec<u16> = peers
        .iter()
        .map(|p| {
            *up(&relay.tap(p.send.remote)).rtp_out[&p.ssrc]
                .iter()
                .max()
                .unwrap()
        })
        .collect();
    peers.iter_mut().for_each(|p| p.egress = None);
    assert!(
        run_until(&mut peers, Duration::from_secs(10), |ps| ps
            .iter()
            .zip(&last_sent)
            .all(|(p, &last)| p
                .egress
                .as_ref()
                .is_some_and(|e| e.remote.as_ref().is_some_and(
                    |r| *r.maximum_sequence_number as u16 == last
                )))),
        "choir reports on every stream's last packet within 10 s"
    );
    // From here on the peers are not driven: they send nothing more; what the relay still
    // holds is delivered.
    assert!(
        relay.drain(Duration::from_secs(5)),
        "the relay delivers what it queued"
    );

    // What the relay delivered to choir twice, over every leg (consumers send RTCP too).
    let taps = relay.taps();
    let up_rtp_dups: u64 = taps.iter().map(|t| up(t).rtp_duplicated).sum();
    let up_rtcp_dups: u64 = taps.iter().map(|t| up(t).rtcp_duplicated).sum();
    let mut up_rtp = 0u64;
    let mut applied = (0usize, 0usize);
    let mut unforwarded = 0u64;
    for (si, s) in peers.iter().enumerate() {
        let send_tap = relay.tap(s.send.remote);
        let sent: Vec<u16> = up(&send_tap).rtp_in[&s.ssrc].clone();
        let arrived: BTreeSet<u16> = up(&send_tap).rtp_out[&s.ssrc].iter().copied().collect();
        up_rtp += up(&send_tap).rtp_out[&s.ssrc].len() as u64;
        let window = SEQ0 + first[si] + EDGE..SEQ0 + last[si] - EDGE;
        let sent_in: BTreeSet<u16> = sent
            .iter()
            .copied()
            .filter(|q| window.contains(q))
            .collect();
        let arrived_in: BTreeSet<u16> = arrived
            .iter()
            .copied()
            .filter(|q| window.contains(q))
            .collect();
        assert_eq!(sent_in.len(), window.len(), "{} sent every packet", s.user);
        applied.0 += sent_in.len() - arrived_in.len();
        applied.1 += sent_in.len();

        for r in peers.iter().filter(|r| r.index != s.index) {
            let who = format!("{} → {}", s.user, r.user);
            let csrc = *r
                .consumers
                .iter()
                .find(|(_, pid)| Some(*pid) == s.producer_id.as_ref())
                .map(|(ssrc, _)| ssrc)
                .expect("a consumer of every other producer");
            let recv_tap = relay.tap(r.recv.remote);
            let emitted = &down(&recv_tap).rtp_in[&csrc];
            let distinct: BTreeSet<u16> = emitted.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                emitted.len(),
                "{who}: choir forwarded no packet twice (the relay duplicated {} into choir)",
                up(&send_tap).rtp_duplicated
            );
            let got = &r.got[&csrc];
            let offsets: BTreeSet<u16> =
                got.iter().map(|g| g.seq.wrapping_sub(SEQ0 + g.n)).collect();
            assert_eq!(
                offsets.len(),
                1,
                "{who}: the consumer's sequence numbers are the producer's plus one offset, \
                 across every gap and reordering: {offsets:?}"
            );
            let offset = *offsets.first().unwrap();
            assert!(
                got.iter().all(|g| g.intact && g.sender == s.index),
                "{who}: payloads intact"
            );
            let forwarded_in: BTreeSet<u16> = distinct
                .iter()
                .map(|q| q.wrapping_sub(offset))
                .filter(|q| window.contains(q))
                .collect();
            assert_eq!(
                forwarded_in, arrived_in,
                "{who}: choir forwarded exactly the packets that reached it"
            );
            // Over the whole run: choir forwarded nothing that did not reach it, and what it did
            // not forward reached it before this consumer's transport was connected.
            let forwarded: BTreeSet<u16> =
                distinct.iter().map(|q| q.wrapping_sub(offset)).collect();
            assert!(forwarded.is_subset(&arrived), "{who}: nothing made up");
            let early: Vec<u16> = arrived.difference(&forwarded).copied().collect();
            assert!(
                early.iter().all(|&q| q < window.start),
                "{who}: packets that reached choir but were not forwarded: {early:?}"
            );
            unforwarded += early.len() as u64;
            let heard: BTreeSet<u16> = got
                .iter()
                .map(|g| SEQ0 + g.n)
                .filter(|q| window.contains(q))
                .collect();
            assert!(heard.is_subset(&forwarded_in));
            assert!(
                heard.len() as f64 >= 0.85 * forwarded_in.len() as f64,
                "{who}: heard {} of the {} packets choir forwarded (5 % loss on the way back)",
                heard.len(),
                forwarded_in.len()
            );
        }

        // choir's Receiver Report about this producer, sent after its last packet arrived.
        let egress = s.egress.as_ref().expect("choir sent Receiver Reports");
        let remote = egress.remote.as_ref().unwrap();
        let highest = *remote.maximum_sequence_number as u16;
        let base = *arrived.first().unwrap();
        let expected = usize::from(highest - base) + 1;
        let received = arrived.range(base..=highest).count();
        let actual_lost = (expected - received) as i64;
        let reported = remote.packets_lost as i64;
        let fraction = reported as f64 / expected as f64;
        eprintln!(
            "{}: choir reports {reported} of {expected} lost ({:.2} %), the relay dropped {actual_lost}",
            s.user,
            100.0 * fraction
        );
        assert!(
            reported == actual_lost,
            "{}: choir's Receiver Report counts exactly the packets the relay dropped: \
             {reported} vs {actual_lost} (base {base}, highest {highest}; choir: {})",
            s.user,
            d.stats()["total"]
        );
        assert!(
            (fraction - imp.loss).abs() <= 0.025,
            "{}: the reported loss is the applied 5 % within a few points: {:.2} %",
            s.user,
            100.0 * fraction
        );
    }
    let applied_pct = 100.0 * applied.0 as f64 / applied.1 as f64;
    eprintln!(
        "relay dropped {} of {} producer packets in the windows ({applied_pct:.2} %)",
        applied.0, applied.1
    );

    // choir itself dropped nothing but the duplicates (SRTP/SRTCP replay check) and the packets
    // for consumers whose transport was still connecting. (Its counters catch up with the last
    // datagrams delivered within moments.)
    let replays = |d: &Daemon| {
        let drops = &d.stats()["total"]["drops"];
        let n = |k: &str| drops[k].as_u64().unwrap_or(0);
        (n("srtp.replayed"), n("srtcp.replayed"))
    };
    d.wait_for(Duration::from_secs(3), |d| {
        replays(d) == (up_rtp_dups, up_rtcp_dups)
    });
    let stats = d.stats();
    let total = &stats["total"];
    eprintln!("choir: {total}");
    let drops = total["drops"].as_object().unwrap();
    for (key, n) in drops {
        let n = n.as_u64().unwrap();
        match key.as_str() {
            "srtp.replayed" => {
                assert_eq!(n, up_rtp_dups, "one replay drop per duplicated RTP packet")
            }
            "srtcp.replayed" => assert_eq!(
                n, up_rtcp_dups,
                "one replay drop per duplicated RTCP packet"
            ),
            "forward.consumer_not_connected" => assert_eq!(n, unforwarded),
            // str0m's NACKs (these consumers did not negotiate NACK: tests/nack.rs has those
            // that do) and transport-wide feedback, which choir does not use.
            "rtcp.other_ignored" | "nack.not_negotiated" => {}
            _ => panic!("choir dropped {n} datagrams as {key}: {total}"),
        }
    }
    assert_eq!(
        drops
            .get("srtp.replayed")
            .and_then(|v| v.as_u64())
            .unwrap_or(0),
        up_rtp_dups
    );
    assert!(total["rtpReceived"].as_u64().unwrap() >= up_rtp - up_rtp_dups);
    assert_eq!(udp_drops(d.pid()), 0, "no kernel drop at choir's sockets");
}
