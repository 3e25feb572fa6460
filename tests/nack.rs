//! Generic NACK over real sockets: a str0m speaker on a clean leg, two str0m listeners whose
//! legs from choir lose 10 % (the test's own relay, tests/common/impair.rs; a retransmission
//! draws its own fate). The listener that negotiated NACK gets its lost packets back, intact
//! and in place; the one that did not gets none; the speaker, whose own leg loses nothing,
//! hears in choir's Receiver Reports that its listeners lose packets (what turns its FEC on).
//!
//! `IMPAIR_SEED=<n>` replays the network with another seed (printed at the start).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::impair::{Dir, Impairment, Relay};
use common::peer::{run, run_until, JoinOptions, Peer};
use common::Daemon;

const SEQ0: u16 = 1000;
const LOSS: f64 = 0.10;

#[test]
fn a_nacking_listener_gets_its_lost_packets_back_and_the_speaker_hears_of_the_loss() {
    let seed = std::env::var("IMPAIR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("impaired network seed {seed} (IMPAIR_SEED=<n> to change)");
    let relay = Relay::start(seed, Impairment::default());
    let d = Daemon::start(&[]);
    // Legs in join order: send, then recv. Only the listeners' recv legs lose (choir → them).
    let lossy = [Impairment::default(), Impairment::loss(LOSS)];
    let join = |user: &str, index: u8, produce: bool, nack: bool| {
        let mut legs = 0;
        Peer::join_through(
            &d,
            "nack",
            user,
            index,
            JoinOptions {
                produce,
                nack,
                ..Default::default()
            },
            &mut |choir| {
                legs += 1;
                match (produce, legs) {
                    (false, 2) => relay.leg_with(choir, lossy),
                    _ => relay.leg(choir),
                }
            },
            true,
        )
    };
    let mut peers = vec![
        join("speaker", 0, true, false),
        join("nacking", 1, false, true),
        join("plain", 2, false, false),
    ];
    for p in &mut peers[1..] {
        assert_eq!(p.consume_existing(&d), 1);
    }
    assert!(
        run_until(&mut peers, Duration::from_secs(20), |ps| ps
            .iter()
            .all(Peer::is_connected)),
        "every transport connects"
    );
    // Past the consumer hold, then a measured window, then what is in flight arrives.
    run(&mut peers, Duration::from_millis(1000));
    let first = peers[0].written;
    run(&mut peers, Duration::from_secs(10));
    let last = peers[0].written;
    // What the speaker's stats say of choir's Receiver Reports while it speaks.
    let egress = peers[0].egress.clone().expect("choir's Receiver Reports");
    let loss = peers[0].egress_loss.expect("a fraction lost reported");
    eprintln!("the speaker's loss from choir's Receiver Reports: {loss}");
    peers[0].muted = true;
    run(&mut peers, Duration::from_millis(1500));
    assert!(relay.drain(Duration::from_secs(5)));

    let window: BTreeSet<u16> = (SEQ0 + first..SEQ0 + last).collect();
    let stats = d.stats();
    let total = &stats["total"];
    eprintln!("choir: {total}");
    let mut retransmitted_seen = 0;
    for (r, nacks) in [(&peers[1], true), (&peers[2], false)] {
        let (&csrc, _) = r.consumers.iter().next().expect("a consumer");
        let tap = relay.tap(r.recv.remote);
        let down = &tap[Dir::Down as usize];
        let emitted = &down.rtp_in[&csrc];
        let distinct: BTreeSet<u16> = emitted.iter().copied().collect();
        let copies = emitted.len() - distinct.len();
        let got = &r.got[&csrc];
        assert!(
            got.iter()
                .all(|g| g.intact && g.sender == 0 && g.seq == SEQ0 + g.n),
            "{}: every packet intact, in its place in the stream",
            r.user
        );
        let heard: BTreeSet<u16> = got.iter().map(|g| g.seq).collect();
        let heard_in = heard.intersection(&window).count();
        let delivered: BTreeSet<u16> = down.rtp_out[&csrc].iter().copied().collect();
        let never = window.difference(&delivered).count();
        eprintln!(
            "{}: heard {heard_in} of {} (copies choir sent again: {copies}; numbers the relay \
             never delivered: {never})",
            r.user,
            window.len()
        );
        if nacks {
            assert!(copies > 0, "{}: choir retransmitted", r.user);
            assert!(
                heard_in as f64 >= 0.98 * window.len() as f64,
                "{}: NACK repairs its leg's 10 % loss: heard {heard_in} of {}",
                r.user,
                window.len()
            );
            retransmitted_seen += copies;
        } else {
            assert_eq!(copies, 0, "{}: no retransmission without NACK", r.user);
            assert!(
                (heard_in as f64) < 0.95 * window.len() as f64,
                "{}: its leg loses 10 %: heard {heard_in} of {}",
                r.user,
                window.len()
            );
        }
    }
    let n = |k: &str| total[k].as_u64().unwrap_or(0);
    assert_eq!(
        n("rtpRetransmitted") as usize,
        retransmitted_seen,
        "every retransmission choir counted crossed the nacking listener's leg"
    );
    assert!(total["drops"]["nack.not_negotiated"].as_u64().unwrap_or(0) > 0);

    // The speaker's own leg lost nothing, yet choir's reports tell it of its listeners' loss.
    let remote = egress.remote.as_ref().unwrap();
    assert_eq!(remote.packets_lost, 0, "the speaker's own leg is clean");
    assert!(
        loss > 0.5 * LOSS as f32,
        "the speaker hears of its listeners' loss: {loss}"
    );
}
