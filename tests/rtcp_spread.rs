//! RTCP reports are spread over the report interval: a shard with many consumers sends each
//! consumer's Sender Report about once a second, but never all of them in one timer call (a
//! burst of thousands of SRTCP sends would stall every packet queued behind it; measured in
//! BENCHMARKS.md).

#[path = "common/loopback.rs"]
mod loopback;

use std::time::Duration;

use loopback::{Loopback, Queue};

#[test]
fn reports_are_spread_over_the_interval() {
    const LISTENERS: usize = 100;
    let mut lb = Loopback::new();
    let speaker = lb.join("room", "speaker", true);
    let listeners: Vec<usize> = (0..LISTENERS)
        .map(|i| lb.join("room", &format!("l{i}"), false))
        .collect();
    for &l in &listeners {
        lb.consume("room", l, speaker);
    }
    lb.settle();

    // One packet to every consumer, so each has something to report.
    let key = Some(lb.members[speaker].send.key);
    let path = lb.members[speaker].send.path;
    let mut datagram = [0u8; 2048];
    let len = lb.rtp_packet(speaker, 1, &mut datagram);
    let n = lb.members[speaker]
        .send
        .client
        .protect_rtp(&mut datagram, len)
        .unwrap();
    let mut q = Queue::default();
    let now = lb.now;
    lb.sfu
        .handle_datagram(key, path, &mut datagram, n, now, &mut q);
    assert_eq!(lb.deliver(q).len(), LISTENERS);

    // Two seconds of 20 ms timer calls: every call sends a few reports, none sends them all.
    let mut per_call = Vec::new();
    for _ in 0..100 {
        let before = lb.sfu.counters().rtcp_sent;
        lb.now += Duration::from_millis(20);
        let mut q = Queue::default();
        let now = lb.now;
        lb.sfu.handle_timeout(now, &mut q);
        per_call.push(lb.sfu.counters().rtcp_sent - before);
    }
    let total: u64 = per_call.iter().sum();
    let max = per_call.iter().copied().max().unwrap_or(0);
    // 100 Sender Reports + 1 Receiver Report (about the speaker) per second, for 2 s.
    assert!(
        (2 * (LISTENERS as u64 + 1) - 4..=2 * (LISTENERS as u64 + 1) + 4).contains(&total),
        "about one report per stream per second: {total}"
    );
    assert!(
        max <= 6,
        "no burst: at most {max} reports in one timer call"
    );

    // A late timer call catches up on the slices it missed, without repeating any.
    let before = lb.sfu.counters().rtcp_sent;
    lb.now += Duration::from_secs(3);
    let mut q = Queue::default();
    let now = lb.now;
    lb.sfu.handle_timeout(now, &mut q);
    let caught_up = lb.sfu.counters().rtcp_sent - before;
    assert!(
        (LISTENERS as u64 - 4..=LISTENERS as u64 + 4).contains(&caught_up),
        "one interval's worth after a 3 s gap: {caught_up}"
    );
}
