//! A consumer that is not its transport's first waits `consumer_hold` before its first packet
//! (the browser applies its SDP meanwhile); the first consumer is never held.

#[path = "common/loopback.rs"]
mod loopback;

use std::time::Duration;

use loopback::{Loopback, Queue};

#[test]
fn later_consumers_wait_for_the_hold_the_first_does_not() {
    let hold = Duration::from_millis(200);
    let mut lb = Loopback::with_consumer_hold(hold);
    let a = lb.join("room", "a", true);
    let b = lb.join("room", "b", true);
    let listener = lb.join("room", "listener", false);
    lb.consume("room", listener, a);
    lb.settle();
    // The listener's transport is connected; its second consumer is created now.
    lb.consume("room", listener, b);
    let received_from = |lb: &mut Loopback, speaker: usize, seq: u16| {
        let mut buf = [0u8; 2048];
        let len = lb.rtp_packet(speaker, seq, &mut buf);
        let n = lb.members[speaker]
            .send
            .client
            .protect_rtp(&mut buf, len)
            .unwrap();
        let (key, path, now) = (
            lb.members[speaker].send.key,
            lb.members[speaker].send.path,
            lb.now,
        );
        let mut q = Queue::default();
        lb.sfu
            .handle_datagram(Some(key), path, &mut buf, n, now, &mut q);
        lb.deliver(q).iter().filter(|(m, _)| *m == listener).count()
    };
    assert_eq!(
        received_from(&mut lb, a, 1),
        1,
        "the first consumer is not held"
    );
    assert_eq!(received_from(&mut lb, b, 1), 0, "the second consumer waits");
    lb.now += hold - Duration::from_millis(1);
    assert_eq!(received_from(&mut lb, b, 2), 0);
    lb.now += Duration::from_millis(1);
    assert_eq!(
        received_from(&mut lb, b, 3),
        1,
        "after the hold, packets flow"
    );
    assert_eq!(lb.sfu.counters().rtp_held, 2);
}
